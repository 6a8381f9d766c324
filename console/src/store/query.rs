//! Reads behind the pages and the JSON API. Each function returns exactly what
//! one chart or table needs, serialisable as its JSON answer.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Row, SqlitePool};

use super::rollup::{summarize, Summary, ANY_POINT};
use crate::segment::Segment;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Flow {
    pub id: i64,
    pub tx_host: String,
    pub rx_host: String,
    pub class: String,
    pub ssrc: Option<i64>,
    pub tuple: String,
    pub relays: String,
    pub first_ns: i64,
    pub last_ns: i64,
    pub packets: i64,
}

impl Flow {
    pub fn label(&self) -> String {
        match self.ssrc {
            Some(ssrc) => format!("{} ssrc {ssrc:08x}", self.class),
            None => format!("{} {}", self.class, self.tuple),
        }
    }

    pub fn via(&self) -> String {
        if self.relays.is_empty() {
            "direct".into()
        } else {
            self.relays.replace(',', " → ")
        }
    }
}

const FLOW_COLS: &str =
    "id, tx_host, rx_host, class, ssrc, tuple, relays, first_ns, last_ns, packets";

pub async fn flow(db: &SqlitePool, id: i64) -> Result<Option<Flow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {FLOW_COLS} FROM flows WHERE id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Flows seen since `since_ns`, busiest first.
pub async fn flows_since(db: &SqlitePool, since_ns: i64) -> Result<Vec<Flow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {FLOW_COLS} FROM flows WHERE last_ns >= ? ORDER BY tx_host, rx_host, packets DESC"
    ))
    .bind(since_ns)
    .fetch_all(db)
    .await
}

/// One packet's segment values, in `Segment::ALL` order.
struct SegValues {
    ts_ns: i64,
    vals: Vec<Option<i64>>,
    err_app_ns: Option<i64>,
    unsynced: bool,
}

/// Per-segment values of one flow's packets in `[from, to)`.
async fn segment_values(
    db: &SqlitePool,
    flow: i64,
    from: i64,
    to: i64,
) -> Result<Vec<SegValues>, sqlx::Error> {
    let cols: Vec<&str> = Segment::ALL.iter().map(|s| s.column()).collect();
    let sql = format!(
        "SELECT ts_ns, err_app_ns, unsynced, {} FROM packets
         WHERE flow_id = ? AND ts_ns >= ? AND ts_ns < ? ORDER BY ts_ns",
        cols.join(", ")
    );
    let rows = sqlx::query(&sql)
        .bind(flow)
        .bind(from)
        .bind(to)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SegValues {
                ts_ns: r.try_get(0)?,
                err_app_ns: r.try_get(1)?,
                unsynced: r.try_get(2)?,
                vals: (3..3 + cols.len())
                    .map(|i| r.try_get(i))
                    .collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

/// A flow's state over the last interval: App-to-App and the dominant segment.
#[derive(Debug, Clone, Serialize)]
pub struct FlowNow {
    pub flow: Flow,
    #[serde(flatten)]
    pub summary: FlowSummary,
    /// Median of each stacked segment present, in path order.
    pub stack: Vec<(Segment, i64)>,
    /// The stacked segment with the largest median.
    pub dominant: Option<(Segment, i64)>,
}

/// Summaries of a flow's segments over a range.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSummary {
    pub segments: Vec<(Segment, Summary)>,
    pub packets: i64,
    /// Largest App-to-App clock-error bound.
    pub app_err_ns: Option<i64>,
    /// Packets with a cross-host segment whose end was not synchronised.
    pub unsynced: i64,
}

impl FlowSummary {
    pub fn get(&self, s: Segment) -> Option<&Summary> {
        self.segments.iter().find(|(x, _)| *x == s).map(|(_, m)| m)
    }
}

pub async fn segment_summaries(
    db: &SqlitePool,
    flow: i64,
    from: i64,
    to: i64,
) -> Result<FlowSummary, sqlx::Error> {
    let rows = segment_values(db, flow, from, to).await?;
    let segments = Segment::ALL
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| {
            let mut v: Vec<i64> = rows.iter().filter_map(|r| r.vals[i]).collect();
            summarize(&mut v).map(|m| (s, m))
        })
        .collect();
    Ok(FlowSummary {
        segments,
        packets: rows.len() as i64,
        app_err_ns: rows.iter().filter_map(|r| r.err_app_ns).max(),
        unsynced: rows.iter().filter(|r| r.unsynced).count() as i64,
    })
}

pub async fn flow_now(
    db: &SqlitePool,
    flow: Flow,
    from: i64,
    to: i64,
) -> Result<FlowNow, sqlx::Error> {
    let summary = segment_summaries(db, flow.id, from, to).await?;
    let stack: Vec<(Segment, i64)> = summary
        .segments
        .iter()
        .filter(|(s, _)| Segment::STACK.contains(s))
        .map(|(s, m)| (*s, m.p50_ns))
        .collect();
    let dominant = stack.iter().copied().max_by_key(|&(_, p50)| p50);
    Ok(FlowNow {
        flow,
        summary,
        stack,
        dominant,
    })
}

fn median(v: &mut [i64]) -> Option<i64> {
    summarize(v).map(|s| s.p50_ns)
}

/// Bucket start times `from, from+step, …` and the bucket index of `ts`.
fn buckets(from: i64, to: i64, step: i64) -> (Vec<i64>, impl Fn(i64) -> Option<usize>) {
    let n = ((to - from + step - 1) / step).max(0) as usize;
    let t = (0..n as i64).map(|i| from + i * step).collect();
    (t, move |ts: i64| {
        let i = (ts - from).div_euclid(step);
        (0..n as i64).contains(&i).then_some(i as usize)
    })
}

/// Stacked segments over time: the median of each segment per bucket.
#[derive(Debug, Clone, Serialize)]
pub struct FlowSeries {
    pub t_ns: Vec<i64>,
    /// Segment name → median per bucket (ns), `null` where no packet had it.
    pub segments: BTreeMap<&'static str, Vec<Option<i64>>>,
    pub app_p99: Vec<Option<i64>>,
    pub app_err: Vec<Option<i64>>,
    pub packets: Vec<i64>,
}

pub async fn flow_series(
    db: &SqlitePool,
    flow: i64,
    from: i64,
    to: i64,
    step: i64,
) -> Result<FlowSeries, sqlx::Error> {
    let rows = segment_values(db, flow, from, to).await?;
    let (t_ns, index) = buckets(from, to, step);
    let mut per: Vec<Vec<Vec<i64>>> = vec![vec![Vec::new(); t_ns.len()]; Segment::ALL.len()];
    let mut errs = vec![None; t_ns.len()];
    let mut packets = vec![0; t_ns.len()];
    for SegValues {
        ts_ns: ts,
        vals,
        err_app_ns: err,
        ..
    } in &rows
    {
        let Some(b) = index(*ts) else { continue };
        packets[b] += 1;
        errs[b] = errs[b].max(*err);
        for (s, v) in vals.iter().enumerate() {
            if let Some(v) = v {
                per[s][b].push(*v);
            }
        }
    }
    let app_i = Segment::ALL.len() - 1;
    let app_p99 = per[app_i]
        .iter_mut()
        .map(|v| summarize(v).map(|s| s.p99_ns))
        .collect();
    let segments = Segment::ALL
        .iter()
        .zip(per.iter_mut())
        .map(|(s, bs)| (s.name(), bs.iter_mut().map(|v| median(v)).collect()))
        .collect();
    Ok(FlowSeries {
        t_ns,
        segments,
        app_p99,
        app_err: errs,
        packets,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct PointCoverage {
    pub point: String,
    pub host: String,
    pub packets: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Packets of the flow in the range (seen at any point).
    pub packets: i64,
    /// Along the path: app_send, tx_wire, relays, rx_wire, app_recv.
    pub points: Vec<PointCoverage>,
}

fn point_rank(point: &str) -> u8 {
    match point {
        "app_send" => 0,
        "tx_wire" => 1,
        "relay_in" => 2,
        "relay_out" => 3,
        "rx_wire" => 4,
        "app_recv" => 5,
        _ => 6,
    }
}

pub async fn coverage(
    db: &SqlitePool,
    flow: i64,
    from: i64,
    to: i64,
) -> Result<Coverage, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT point, host, SUM(packets) FROM coverage
         WHERE flow_id = ? AND minute_ns >= ? AND minute_ns < ? GROUP BY point, host",
    )
    .bind(flow)
    .bind(super::minute_of(from))
    .bind(to)
    .fetch_all(db)
    .await?;
    let (any, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.0 == ANY_POINT);
    let packets = any.first().map_or(0, |r| r.2);
    let mut points: Vec<PointCoverage> = rows
        .into_iter()
        .map(|(point, host, packets)| PointCoverage {
            point,
            host,
            packets,
        })
        .collect();
    // Relays in path order need time; host name is a stable tie-break.
    points.sort_by(|a, b| (point_rank(&a.point), &a.host).cmp(&(point_rank(&b.point), &b.host)));
    Ok(Coverage { packets, points })
}

#[derive(Debug, Clone, Serialize)]
pub struct PacketRow {
    pub key: String,
    pub ts_ns: i64,
    pub seq: Option<i64>,
    pub app_ns: Option<i64>,
    pub err_app_ns: Option<i64>,
    pub unsynced: bool,
    /// (point, host, ts_ns) along the path.
    pub path: Vec<(String, String, i64)>,
}

/// The `n` packets of a flow nearest to `at_ns`, in time order (the waterfall).
pub async fn packets_around(
    db: &SqlitePool,
    flow: i64,
    at_ns: i64,
    n: i64,
) -> Result<Vec<PacketRow>, sqlx::Error> {
    // Two index range scans (before and from `at`), then the nearest n of both.
    let cols = "key, ts_ns, seq, app_ns, err_app_ns, unsynced, path_json";
    let mut rows = sqlx::query(&format!(
        "SELECT {cols} FROM packets WHERE flow_id = ?1 AND ts_ns >= ?2 ORDER BY ts_ns LIMIT ?3"
    ))
    .bind(flow)
    .bind(at_ns)
    .bind(n)
    .fetch_all(db)
    .await?;
    rows.extend(
        sqlx::query(&format!(
            "SELECT {cols} FROM packets WHERE flow_id = ?1 AND ts_ns < ?2 ORDER BY ts_ns DESC LIMIT ?3"
        ))
        .bind(flow)
        .bind(at_ns)
        .bind(n)
        .fetch_all(db)
        .await?,
    );
    rows.sort_by_key(|r| {
        r.try_get::<i64, _>("ts_ns")
            .map_or(0, |t| (t - at_ns).abs())
    });
    rows.truncate(n as usize);
    let mut out = rows
        .iter()
        .map(|r| {
            let path: String = r.try_get("path_json")?;
            Ok(PacketRow {
                key: format!("{:016x}", r.try_get::<i64, _>("key")? as u64),
                ts_ns: r.try_get("ts_ns")?,
                seq: r.try_get("seq")?,
                app_ns: r.try_get("app_ns")?,
                err_app_ns: r.try_get("err_app_ns")?,
                unsynced: r.try_get("unsynced")?,
                path: serde_json::from_str(&path).unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    out.sort_by_key(|p| p.ts_ns);
    Ok(out)
}

/// Per-minute rollup rows of a flow.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RollupRow {
    pub minute_ns: i64,
    pub segment: String,
    pub count: i64,
    pub p50_ns: i64,
    pub p90_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
    pub err_max_ns: Option<i64>,
}

pub async fn rollups(
    db: &SqlitePool,
    flow: i64,
    from: i64,
    to: i64,
) -> Result<Vec<RollupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT minute_ns, segment, count, p50_ns, p90_ns, p99_ns, max_ns, err_max_ns FROM rollups
         WHERE flow_id = ? AND minute_ns >= ? AND minute_ns < ? ORDER BY minute_ns, segment",
    )
    .bind(flow)
    .bind(super::minute_of(from))
    .bind(to)
    .fetch_all(db)
    .await
}

/// Unordered host pairs that have flows, as (a, b) with a < b.
pub async fn host_pairs(db: &SqlitePool) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT min(tx_host, rx_host), max(tx_host, rx_host) FROM flows
         WHERE tx_host <> '?' AND rx_host <> '?' AND tx_host <> rx_host ORDER BY 1, 2",
    )
    .fetch_all(db)
    .await
}

/// One-way delays of a host pair against RTT/2.
#[derive(Debug, Clone, Serialize)]
pub struct Direction {
    pub t_ns: Vec<i64>,
    /// Median wire-to-wire one-way delay a→b and b→a per bucket.
    pub ab: Vec<Option<i64>>,
    pub ba: Vec<Option<i64>>,
    /// Clock-error bound of the one-way delays (largest in the bucket).
    pub ab_err: Vec<Option<i64>>,
    pub ba_err: Vec<Option<i64>>,
    /// Half the median passive ICE RTT (both hosts' measurements).
    pub rtt_half_ice: Vec<Option<i64>>,
    /// Half the sum of both one-way delays.
    pub rtt_half_sum: Vec<Option<i64>>,
    /// RTT/2 (ICE) minus the true one-way delay, per direction.
    pub ab_error_ice: Vec<Option<i64>>,
    pub ba_error_ice: Vec<Option<i64>>,
    pub rtt_samples: i64,
}

pub async fn direction(
    db: &SqlitePool,
    a: &str,
    b: &str,
    from: i64,
    to: i64,
    step: i64,
) -> Result<Direction, sqlx::Error> {
    let (t_ns, index) = buckets(from, to, step);
    let n = t_ns.len();
    let one_way = |tx: &str, rx: &str| {
        sqlx::query_as::<_, (i64, i64, Option<i64>)>(
            "SELECT p.ts_ns, p.wire_ns, p.err_wire_ns FROM packets p JOIN flows f ON f.id = p.flow_id
             WHERE f.tx_host = ? AND f.rx_host = ? AND p.ts_ns >= ? AND p.ts_ns < ?
               AND p.wire_ns IS NOT NULL",
        )
        .bind(tx.to_owned())
        .bind(rx.to_owned())
        .bind(from)
        .bind(to)
        .fetch_all(db)
    };
    let per_bucket = |rows: Vec<(i64, i64, Option<i64>)>| {
        let mut v = vec![Vec::new(); n];
        let mut e = vec![None; n];
        for (ts, val, err) in rows {
            if let Some(i) = index(ts) {
                v[i].push(val);
                e[i] = e[i].max(err);
            }
        }
        (v.iter_mut().map(|x| median(x)).collect::<Vec<_>>(), e)
    };
    let (ab, ab_err) = per_bucket(one_way(a, b).await?);
    let (ba, ba_err) = per_bucket(one_way(b, a).await?);
    let rtts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT ts_ns, rtt_ns FROM rtts WHERE ((host = ?1 AND peer_host = ?2) OR (host = ?2 AND peer_host = ?1))
           AND ts_ns >= ?3 AND ts_ns < ?4",
    )
    .bind(a)
    .bind(b)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let rtt_samples = rtts.len() as i64;
    let mut rv = vec![Vec::new(); n];
    for (ts, rtt) in rtts {
        if let Some(i) = index(ts) {
            rv[i].push(rtt);
        }
    }
    let rtt_half_ice: Vec<Option<i64>> = rv.iter_mut().map(|v| median(v).map(|r| r / 2)).collect();
    let zip = |x: &[Option<i64>], y: &[Option<i64>], f: fn(i64, i64) -> i64| {
        x.iter()
            .zip(y)
            .map(|(x, y)| x.zip(*y).map(|(x, y)| f(x, y)))
            .collect::<Vec<_>>()
    };
    Ok(Direction {
        rtt_half_sum: zip(&ab, &ba, |x, y| (x + y) / 2),
        ab_error_ice: zip(&rtt_half_ice, &ab, |h, d| h - d),
        ba_error_ice: zip(&rtt_half_ice, &ba, |h, d| h - d),
        t_ns,
        ab,
        ba,
        ab_err,
        ba_err,
        rtt_half_ice,
        rtt_samples,
    })
}

/// Distinct relay hosts seen in dwell rows.
pub async fn relays(db: &SqlitePool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT relay_host FROM dwells ORDER BY 1")
        .fetch_all(db)
        .await
}

#[derive(Debug, Clone, Serialize)]
pub struct DwellDirection {
    pub tx_host: String,
    pub rx_host: String,
    pub summary: Summary,
    /// Histogram bucket upper edges (µs) and counts.
    pub edges_us: Vec<f64>,
    pub counts: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayFlow {
    pub flow_id: i64,
    pub tx_host: String,
    pub rx_host: String,
    pub label: String,
    pub in_tuple: String,
    pub out_tuple: String,
    pub packets: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelayDwell {
    pub relay: String,
    pub directions: Vec<DwellDirection>,
    pub flows: Vec<RelayFlow>,
}

/// Upper edges of the dwell histogram, µs: 20 per decade from 1 µs to 1 s,
/// fine enough to show a shape at tens of µs and wide enough for stalls.
pub fn dwell_edges_us() -> Vec<f64> {
    (0..=120)
        .map(|i| {
            let e = 10f64.powf(f64::from(i) / 20.0);
            // Two significant digits, so labels read "56" rather than "56.23".
            let scale = 10f64.powi(e.log10().floor() as i32 - 1);
            (e / scale).round() * scale
        })
        .collect()
}

pub async fn relay_dwell(
    db: &SqlitePool,
    relay: &str,
    from: i64,
    to: i64,
) -> Result<RelayDwell, sqlx::Error> {
    let rows: Vec<(i64, i64, String, String)> = sqlx::query_as(
        "SELECT d.flow_id, d.dwell_ns, d.in_tuple, d.out_tuple FROM dwells d
         WHERE d.relay_host = ? AND d.ts_ns >= ? AND d.ts_ns < ?",
    )
    .bind(relay)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let mut by_flow: BTreeMap<i64, (Vec<i64>, String, String)> = BTreeMap::new();
    for (flow, dwell, i, o) in rows {
        let e = by_flow.entry(flow).or_default();
        e.0.push(dwell);
        (e.1, e.2) = (i, o);
    }
    let mut dirs: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut flows = Vec::new();
    for (id, (dwells, in_tuple, out_tuple)) in by_flow {
        let Some(f) = flow(db, id).await? else {
            continue;
        };
        flows.push(RelayFlow {
            flow_id: id,
            label: f.label(),
            tx_host: f.tx_host.clone(),
            rx_host: f.rx_host.clone(),
            in_tuple,
            out_tuple,
            packets: dwells.len() as i64,
        });
        dirs.entry((f.tx_host, f.rx_host))
            .or_default()
            .extend(dwells);
    }
    let edges_us = dwell_edges_us();
    let directions = dirs
        .into_iter()
        .filter_map(|((tx_host, rx_host), mut v)| {
            let mut counts = vec![0; edges_us.len()];
            for &d in &v {
                let us = d as f64 / 1e3;
                let i = edges_us
                    .iter()
                    .position(|&e| us <= e)
                    .unwrap_or(edges_us.len() - 1);
                counts[i] += 1;
            }
            Some(DwellDirection {
                summary: summarize(&mut v)?,
                tx_host,
                rx_host,
                edges_us: edges_us.clone(),
                counts,
            })
        })
        .collect();
    Ok(RelayDwell {
        relay: relay.into(),
        directions,
        flows,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub version: String,
    pub netns: i64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    pub batches: i64,
    pub records: i64,
    pub clock_mode: String,
    pub clock_synced: bool,
    pub clock_esterror_ns: i64,
    pub clock_maxerror_ns: i64,
    pub clock_source: String,
    pub health: Option<demarc_proto::ingest::Health>,
    /// (at_ns, synced, maxerror_ns), newest last.
    pub clock_history: Vec<(i64, bool, i64)>,
    /// Per point: increase of seen, media, recorded, parse_fail, ringbuf_full,
    /// map_full, read_fail over the last `RECENT_COUNTERS_NS` of reports.
    pub recent: BTreeMap<String, [u64; 7]>,
}

/// How far back the probes page looks for counter increases.
pub const RECENT_COUNTERS_NS: i64 = 600_000_000_000;

/// Increase of cumulative counters over a series of samples; a decrease is a
/// probe restart, after which the new value is all increase (as Prometheus'
/// `increase()` treats resets).
pub fn increase(samples: &[[u64; 7]]) -> [u64; 7] {
    let mut out = [0; 7];
    for w in samples.windows(2) {
        for i in 0..7 {
            out[i] += if w[1][i] >= w[0][i] {
                w[1][i] - w[0][i]
            } else {
                w[1][i]
            };
        }
    }
    out
}

async fn recent_counters(
    db: &SqlitePool,
    probe: &str,
) -> Result<BTreeMap<String, [u64; 7]>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Sample {
        point: String,
        seen: i64,
        media: i64,
        recorded: i64,
        parse_fail: i64,
        ringbuf_full: i64,
        map_full: i64,
        read_fail: i64,
    }
    let rows: Vec<Sample> = sqlx::query_as(
        "SELECT point, seen, media, recorded, parse_fail, ringbuf_full, map_full, read_fail
         FROM point_counters WHERE probe_id = ?1
           AND at_ns >= (SELECT MAX(at_ns) FROM point_counters WHERE probe_id = ?1) - ?2
         ORDER BY at_ns",
    )
    .bind(probe)
    .bind(RECENT_COUNTERS_NS)
    .fetch_all(db)
    .await?;
    let mut per: BTreeMap<String, Vec<[u64; 7]>> = BTreeMap::new();
    for r in rows {
        let v = [
            r.seen,
            r.media,
            r.recorded,
            r.parse_fail,
            r.ringbuf_full,
            r.map_full,
            r.read_fail,
        ];
        per.entry(r.point)
            .or_default()
            .push(v.map(|v| v.max(0) as u64));
    }
    Ok(per.into_iter().map(|(p, v)| (p, increase(&v))).collect())
}

pub async fn probes(db: &SqlitePool) -> Result<Vec<ProbeRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, kind, version, netns, first_seen_ns, last_seen_ns, batches, records,
            clock_mode, clock_synced, clock_esterror_ns, clock_maxerror_ns, clock_source, health_json
         FROM probes ORDER BY kind, name",
    )
    .fetch_all(db)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id")?;
        let clock_history = sqlx::query_as(
            "SELECT at_ns, synced, maxerror_ns FROM (SELECT * FROM clock_history WHERE probe_id = ?
             ORDER BY at_ns DESC LIMIT 20) ORDER BY at_ns",
        )
        .bind(&id)
        .fetch_all(db)
        .await?;
        let health: String = r.try_get("health_json")?;
        let recent = recent_counters(db, &id).await?;
        out.push(ProbeRow {
            recent,
            id,
            name: r.try_get("name")?,
            kind: r.try_get("kind")?,
            version: r.try_get("version")?,
            netns: r.try_get("netns")?,
            first_seen_ns: r.try_get("first_seen_ns")?,
            last_seen_ns: r.try_get("last_seen_ns")?,
            batches: r.try_get("batches")?,
            records: r.try_get("records")?,
            clock_mode: r.try_get("clock_mode")?,
            clock_synced: r.try_get("clock_synced")?,
            clock_esterror_ns: r.try_get("clock_esterror_ns")?,
            clock_maxerror_ns: r.try_get("clock_maxerror_ns")?,
            clock_source: r.try_get("clock_source")?,
            health: serde_json::from_str(&health).ok(),
            clock_history,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_increase_survives_a_probe_restart() {
        let s = |v: u64| [v, 0, 0, 0, 0, 0, v / 10];
        assert_eq!(increase(&[s(100)]), [0; 7]);
        assert_eq!(increase(&[s(100), s(150), s(400)]), s(300));
        // Restart after 150: the counters start again from 0 and reach 30.
        assert_eq!(increase(&[s(100), s(150), s(30)]), [80, 0, 0, 0, 0, 0, 8]);
    }
}
