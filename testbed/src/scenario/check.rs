//! Measured against ground truth: the probes' records (JSONL) joined by
//! packet key, per direction, against the delay line's per-packet holds;
//! App-to-App against the sum of the segments; steps found where they were
//! scheduled; RTT/2 against the one-way delays. Pure functions over records,
//! so the rules are unit-tested without namespaces.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use demarc_proto::ingest::Record;
use demarc_proto::{Class, Framing, Point};

use super::services::http_get;
use crate::delayline::log::HoldRecord;
use crate::topology::{Host, Leg};
use crate::{Error, Result};

/// The delay line's log plus veth hops and forwarding outside it: a
/// measured network segment may exceed its holds by this much at p99
/// (docs/testbed.md measured 0.1–0.3 ms at p50 for the transit alone;
/// the issue allows 200 µs beyond it).
pub const NETWORK_P99_LIMIT_NS: i64 = 500_000;
/// Measured is never shorter than the holds inside it (one kernel clock).
pub const EARLY_LIMIT_NS: i64 = -50_000;
/// A step must show within this of its scheduled time.
pub const STEP_WINDOW_NS: u64 = 1_000_000_000;
/// STUN binding request and success response (RFC 8489).
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

/// A probe's records with the host it ran on.
pub struct Probe {
    pub host: &'static str,
    pub records: Vec<Record>,
}

/// Reads a probe's JSONL output.
pub fn read_probe(host: &'static str, path: &Path) -> Result<Probe> {
    let what = || format!("reading {}", path.display());
    let text = std::fs::read_to_string(path).map_err(Error::io(what()))?;
    let records = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| Error::io(what())(e.into())))
        .collect::<Result<_>>()?;
    Ok(Probe { host, records })
}

/// One way through the lab.
#[derive(Debug, Clone, Copy)]
pub struct Direction {
    pub from: Host,
    pub to: Host,
    /// The legs it crosses, in order: client → relay, relay → peer.
    pub legs: [Leg; 2],
}

pub const DIRECTIONS: [Direction; 2] = [
    Direction {
        from: Host::A,
        to: Host::B,
        legs: [Leg::AToRelay, Leg::RelayToB],
    },
    Direction {
        from: Host::B,
        to: Host::A,
        legs: [Leg::BToRelay, Leg::RelayToA],
    },
];

/// A segment between two (host, point) ends and the legs whose holds are its
/// ground truth (none: a host or relay segment, not checked against the line).
struct SegmentDef {
    name: &'static str,
    from: (&'static str, Point),
    to: (&'static str, Point),
    legs: Vec<Leg>,
    /// Part of the chain whose sum App-to-App must equal.
    chained: bool,
}

fn segment_defs(dir: Direction, relay: bool) -> Vec<SegmentDef> {
    let (a, b) = (dir.from.name(), dir.to.name());
    let seg = |name, from, to, legs: &[Leg]| SegmentDef {
        name,
        from,
        to,
        legs: legs.to_vec(),
        chained: match name {
            "app" => false,
            "wire" => !relay,
            _ => true,
        },
    };
    let mut defs = vec![seg("tx_host", (a, Point::AppSend), (a, Point::TxWire), &[])];
    if relay {
        defs.extend([
            seg(
                "net_up",
                (a, Point::TxWire),
                (Host::Relay.name(), Point::RelayIn),
                &dir.legs[..1],
            ),
            seg(
                "dwell",
                (Host::Relay.name(), Point::RelayIn),
                (Host::Relay.name(), Point::RelayOut),
                &[],
            ),
            seg(
                "net_down",
                (Host::Relay.name(), Point::RelayOut),
                (b, Point::RxWire),
                &dir.legs[1..],
            ),
        ]);
    }
    defs.extend([
        // Wire to wire: what ICE RTT spans; without a relay probe it is the
        // network segment and holds the relay's dwell too.
        seg("wire", (a, Point::TxWire), (b, Point::RxWire), &dir.legs),
        seg("rx_host", (b, Point::RxWire), (b, Point::AppRecv), &[]),
        seg("app", (a, Point::AppSend), (b, Point::AppRecv), &[]),
    ]);
    defs
}

/// Timestamps by (host, point) and key; keys seen more than once at a point
/// (identical payloads, e.g. retransmissions) are ambiguous and left out.
struct Index<'a> {
    at: HashMap<(&'a str, Point), HashMap<u64, Option<&'a Record>>>,
    holds: HashMap<Leg, HashMap<u64, Option<&'a HoldRecord>>>,
}

impl<'a> Index<'a> {
    fn new(probes: &'a [Probe], holds: &'a [HoldRecord]) -> Index<'a> {
        let mut at: HashMap<_, HashMap<_, _>> = HashMap::new();
        for p in probes {
            for r in &p.records {
                at.entry((p.host, r.point))
                    .or_default()
                    .entry(r.key)
                    .and_modify(|e| *e = None)
                    .or_insert(Some(r));
            }
        }
        let mut by_leg: HashMap<_, HashMap<_, _>> = HashMap::new();
        for h in holds {
            if let Some(key) = h.key {
                by_leg
                    .entry(h.leg)
                    .or_default()
                    .entry(key)
                    .and_modify(|e| *e = None)
                    .or_insert(Some(h));
            }
        }
        Index { at, holds: by_leg }
    }

    fn get(&self, end: (&str, Point), key: u64) -> Option<&'a Record> {
        self.at.get(&end)?.get(&key).copied().flatten()
    }

    fn ts(&self, end: (&str, Point), key: u64) -> Option<u64> {
        self.get(end, key).map(|r| r.ts_ns)
    }

    fn hold(&self, leg: Leg, key: u64) -> Option<u64> {
        self.holds
            .get(&leg)?
            .get(&key)
            .copied()
            .flatten()
            .map(|h| h.hold_ns)
    }

    /// Keys of packets that left `host` on the wire.
    fn sent_by(&self, host: &str) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .at
            .get(&(host, Point::TxWire))
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r.is_some())
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }
}

/// The console's view of the same packets: the newest packets of every flow
/// (up to 200 each, from its JSON API) must carry on their stored path the
/// very timestamps the probes wrote, and their App-to-App must be the
/// difference of that path's ends. Returns how many packets were compared
/// and what disagreed.
pub fn console_agrees(console: SocketAddr, probes: &[Probe]) -> Result<(usize, Vec<String>)> {
    let get = |path: &str| -> Result<serde_json::Value> {
        let (status, body) = http_get(console, path).map_err(Error::io(format!(
            "asking the console at {console} for {path}"
        )))?;
        if status != 200 {
            return Err(Error::io(format!("console {path}"))(std::io::Error::other(
                format!("HTTP {status}"),
            )));
        }
        serde_json::from_str(&body).map_err(|e| Error::io(format!("console {path}"))(e.into()))
    };
    let index = Index::new(probes, &[]);
    let (mut compared, mut wrong) = (0, Vec::new());
    let flows = get("/api/v1/flows")?;
    for flow in flows.as_array().into_iter().flatten() {
        let id = flow["id"].as_i64().unwrap_or_default();
        let packets = get(&format!("/api/v1/flows/{id}/packets?n=200"))?;
        for packet in packets.as_array().into_iter().flatten() {
            let Some(key) = packet["key"]
                .as_str()
                .and_then(|k| u64::from_str_radix(k, 16).ok())
            else {
                continue;
            };
            compared += 1;
            let mut ends = HashMap::new();
            for hop in packet["path"].as_array().into_iter().flatten() {
                let (Some(point), Some(host), Some(ts)) = (
                    hop[0].as_str().and_then(|p| p.parse::<Point>().ok()),
                    hop[1].as_str(),
                    hop[2].as_i64(),
                ) else {
                    continue;
                };
                ends.insert(point, ts);
                if let Some(own) = index.ts((host, point), key) {
                    if own as i64 != ts {
                        wrong.push(format!(
                            "console flow {id} key {key:016x}: {point}@{host} {ts}, probe {own}"
                        ));
                    }
                }
            }
            let app = packet["app_ns"].as_i64();
            let span = ends
                .get(&Point::AppRecv)
                .zip(ends.get(&Point::AppSend))
                .map(|(r, s)| r - s);
            if app.is_some() && app != span {
                wrong.push(format!(
                    "console flow {id} key {key:016x}: App-to-App {app:?}, path ends {span:?}"
                ));
            }
        }
    }
    Ok((compared, wrong))
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[derive(Debug, Clone, Default)]
pub struct SegmentStats {
    pub name: &'static str,
    /// Measured, ns, sorted.
    pub measured: Vec<i64>,
    /// Sum of the legs' holds, ns, sorted; empty when not checked.
    pub truth: Vec<i64>,
    /// Measured minus truth per packet, ns, sorted.
    pub error: Vec<i64>,
    /// (time at the segment's start, measured ns) per packet, in time order.
    pub series: Vec<(u64, i64)>,
}

/// One direction's result.
#[derive(Debug, Clone)]
pub struct DirectionReport {
    pub dir: Direction,
    pub segments: Vec<SegmentStats>,
    /// Packets with App-to-App and every segment, and how many of them had
    /// App-to-App equal to the sum (exactly, in ns).
    pub app_complete: usize,
    pub app_equal: usize,
}

impl DirectionReport {
    pub fn segment(&self, name: &str) -> Option<&SegmentStats> {
        self.segments.iter().find(|s| s.name == name)
    }
}

/// Joins every packet sent in `dir` across the probes and the line's log.
pub fn direction(
    probes: &[Probe],
    holds: &[HoldRecord],
    dir: Direction,
    relay: bool,
) -> DirectionReport {
    let index = Index::new(probes, holds);
    let defs = segment_defs(dir, relay);
    let mut segments: Vec<SegmentStats> = defs
        .iter()
        .map(|d| SegmentStats {
            name: d.name,
            ..Default::default()
        })
        .collect();
    let (mut app_complete, mut app_equal) = (0, 0);
    for key in index.sent_by(dir.from.name()) {
        let mut values = Vec::with_capacity(defs.len());
        for (def, stats) in defs.iter().zip(&mut segments) {
            let ends = (index.ts(def.from, key), index.ts(def.to, key));
            let value = match ends {
                (Some(from), Some(to)) => Some(to as i64 - from as i64),
                _ => None,
            };
            values.push(value);
            let (Some(v), (Some(from), _)) = (value, ends) else {
                continue;
            };
            stats.measured.push(v);
            stats.series.push((from, v));
            if def.legs.is_empty() {
                continue;
            }
            let truth: Option<u64> = def.legs.iter().map(|l| index.hold(*l, key)).sum();
            if let Some(t) = truth {
                stats.truth.push(t as i64);
                stats.error.push(v - t as i64);
            }
        }
        // App-to-App against the chain of segments that make it up.
        let chain: Option<i64> = defs
            .iter()
            .zip(&values)
            .filter(|(d, _)| d.chained)
            .map(|(_, v)| *v)
            .sum();
        let app = values.last().copied().flatten();
        if let (Some(app), Some(chain)) = (app, chain) {
            app_complete += 1;
            app_equal += usize::from(app == chain);
        }
    }
    for s in &mut segments {
        s.measured.sort_unstable();
        s.truth.sort_unstable();
        s.error.sort_unstable();
        s.series.sort_unstable();
    }
    DirectionReport {
        dir,
        segments,
        app_complete,
        app_equal,
    }
}

/// Passive ICE RTTs measured at `host`: a binding request that left on the
/// wire towards a peer (TURN-framed, so not the relay's own STUN) and its
/// success response arriving, same transaction id; ns, sorted.
pub fn ice_rtts(probe: &Probe) -> Vec<i64> {
    let stun = |point: Point, typ: u16| {
        probe
            .records
            .iter()
            .filter(move |r| {
                r.point == point
                    && r.class == Class::Stun
                    && r.framing != Framing::Bare
                    && r.stun_type == Some(typ)
            })
            .filter_map(|r| Some((r.stun_txid?, r.ts_ns)))
    };
    let requests: HashMap<[u8; 12], u64> = stun(Point::TxWire, BINDING_REQUEST).collect();
    let mut rtts: Vec<i64> = stun(Point::RxWire, BINDING_SUCCESS)
        .filter_map(|(txid, at)| Some(at as i64 - *requests.get(&txid)? as i64))
        .filter(|rtt| *rtt > 0)
        .collect();
    rtts.sort_unstable();
    rtts
}

/// Where a scheduled step showed in a series of (time, delay): the first
/// packet after which the level stays at least half the step away from the
/// level before it. `None` when the level never moved.
pub fn find_step(series: &[(u64, i64)], at_ns: u64, step_ns: i64) -> Option<u64> {
    /// Packets that must agree (~75 ms of a call), so a stalled packet or
    /// a short burst of them is not a step.
    const RUN: usize = 10;
    let window = 5 * STEP_WINDOW_NS;
    let mut before: Vec<i64> = series
        .iter()
        .filter(|(t, _)| *t + window >= at_ns && *t + STEP_WINDOW_NS < at_ns)
        .map(|(_, v)| *v)
        .collect();
    before.sort_unstable();
    let level = percentile(&before, 50.0)?;
    let moved = |v: i64| (v - level) * step_ns.signum() > step_ns.abs() / 2;
    let from = series.partition_point(|(t, _)| *t + STEP_WINDOW_NS < at_ns);
    let candidates = &series[from..];
    (0..candidates.len().saturating_sub(RUN))
        .find(|&i| candidates[i..i + RUN].iter().all(|(_, v)| moved(*v)))
        .map(|i| candidates[i].0)
}

/// Median level of a series in [from, to).
pub fn level(series: &[(u64, i64)], from: u64, to: u64) -> Option<i64> {
    let mut v: Vec<i64> = series
        .iter()
        .filter(|(t, _)| (from..to).contains(t))
        .map(|(_, v)| *v)
        .collect();
    v.sort_unstable();
    percentile(&v, 50.0)
}

pub fn ms(ns: i64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

pub fn us(ns: i64) -> String {
    format!("{:+.0}", ns as f64 / 1e3)
}

/// The per-direction table.
pub fn table(report: &DirectionReport, configured: &str) -> String {
    let mut s = String::new();
    let d = report.dir;
    let _ = writeln!(
        s,
        "{} → {}   configured {configured} ({} then {})",
        d.from, d.to, d.legs[0], d.legs[1]
    );
    let _ = writeln!(
        s,
        "  {:<9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "segment", "packets", "p50 ms", "p99 ms", "truth p50", "truth p99", "err p50", "err p99"
    );
    for seg in &report.segments {
        let p = |v: &[i64], q| percentile(v, q).map(ms).unwrap_or_else(|| "-".into());
        let e = |q| {
            percentile(&seg.error, q)
                .map(|v| format!("{} µs", us(v)))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            s,
            "  {:<9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9}",
            seg.name,
            seg.measured.len(),
            p(&seg.measured, 50.0),
            p(&seg.measured, 99.0),
            p(&seg.truth, 50.0),
            p(&seg.truth, 99.0),
            e(50.0),
            e(99.0),
        );
    }
    let _ = writeln!(
        s,
        "  App-to-App = sum of segments on {}/{} complete packets",
        report.app_equal, report.app_complete
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 1.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    fn series(step_at: u64, step: i64) -> Vec<(u64, i64)> {
        (0..2000u64)
            .map(|i| {
                let t = i * 10_000_000;
                let jitter = (i % 7) as i64 * 20_000;
                (t, 15_000_000 + jitter + if t >= step_at { step } else { 0 })
            })
            .collect()
    }

    #[test]
    fn a_step_is_found_at_its_time_and_only_where_it_is() {
        let at = 10_000_000_000;
        let s = series(at, 2_000_000);
        assert_eq!(find_step(&s, at, 2_000_000), Some(at));
        assert_eq!(find_step(&series(at, 0), at, 2_000_000), None);
        // A downward step is found as such, an upward one not mistaken for it.
        assert_eq!(find_step(&series(at, -2_000_000), at, -2_000_000), Some(at));
        assert_eq!(find_step(&s, at, -2_000_000), None);
    }

    #[test]
    fn one_stalled_packet_is_not_a_step() {
        let at = 10_000_000_000;
        let mut s = series(u64::MAX, 0);
        s[900].1 += 5_000_000;
        assert_eq!(find_step(&s, at, 2_000_000), None);
    }
}
