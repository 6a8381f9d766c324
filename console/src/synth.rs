//! A synthetic call with known delays, as the probes would report it: the
//! input of the integration tests, the browser test and the benchmark.
//! Deterministic (fixed-seed jitter), so tests can assert exact outcomes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use demarc_proto::ingest::{
    batch_id, Batch, ClockMode, ClockState, Health, HookStatus, PointCounters, ProbeInfo,
    ProbeKind, ProgramStats, Record, SpoolStats,
};
use demarc_proto::{packet_key, Class, Framing, Point};

const MS: f64 = 1e6;

/// What the call looks like. Delays in ms.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub start_ns: u64,
    pub seconds: u32,
    /// RTP packets per second in each direction.
    pub pps: u32,
    /// Relay host names in path order from a to b (empty: direct).
    pub relays: Vec<String>,
    /// Network one-way delay a → b and b → a (split evenly over the hops).
    pub ab_ms: f64,
    pub ba_ms: f64,
    /// From this second on, a → b takes `step_ms` more (the "AWS asymmetry").
    pub step_at_s: Option<u32>,
    pub step_ms: f64,
    /// Every probe's clock maxerror (ns).
    pub maxerror_ns: u64,
    /// Every nth packet is missing at b's app_recv (coverage); 0: none.
    pub drop_every: u32,
}

impl Scenario {
    pub fn new(start_ns: u64, seconds: u32) -> Self {
        Scenario {
            start_ns,
            seconds,
            pps: 50,
            relays: vec!["relay".into()],
            ab_ms: 20.0,
            ba_ms: 20.0,
            step_at_s: None,
            step_ms: 0.0,
            maxerror_ns: 16_000,
            drop_every: 0,
        }
    }

    fn hosts(&self) -> Vec<(&str, ProbeKind)> {
        let mut h = vec![("a", ProbeKind::Endpoint), ("b", ProbeKind::Endpoint)];
        h.extend(self.relays.iter().map(|r| (r.as_str(), ProbeKind::Relay)));
        h
    }

    /// Batches of every probe, each probe's in sequence, at most `per_batch`
    /// records or one second of records each.
    pub fn batches(&self, per_batch: usize) -> Vec<Batch> {
        let mut recs: BTreeMap<&str, Vec<Record>> = BTreeMap::new();
        let mut rng = Lcg(0x5eed);
        let hosts = ["a", "b"];
        for second in 0..self.seconds {
            for i in 0..self.pps {
                let t = self.start_ns as f64 + (second as f64 + i as f64 / self.pps as f64) * 1e9;
                for (dir, (src, dst)) in [(0u32, (0, 1)), (1, (1, 0))] {
                    let seq = (second * self.pps + i) as u16;
                    let ssrc = 0x1000_0000 + dir;
                    let mut payload = [0u8; 172];
                    payload[0] = 0x80;
                    payload[1] = 111;
                    payload[2..4].copy_from_slice(&seq.to_be_bytes());
                    payload[4..8].copy_from_slice(&(t as u64 / 125_000).to_le_bytes()[..4]);
                    payload[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    let net = self.net_at(dir, second);
                    let p = Pkt {
                        key: packet_key(&payload),
                        class: Class::Rtp,
                        ssrc: Some(ssrc),
                        seq: Some(seq),
                        stun: None,
                        len: payload.len() as u32,
                    };
                    let drop_recv =
                        self.drop_every > 0 && dir == 0 && (i + 1) % self.drop_every == 0;
                    self.path(
                        &mut recs, &mut rng, &p, hosts[src], hosts[dst], t, net, drop_recv,
                    );
                }
            }
            // ICE: a binding request each second from a, answered by b.
            let t = self.start_ns as f64 + second as f64 * 1e9 + 3.0 * MS;
            let txid = [
                second as u8,
                (second >> 8) as u8,
                0xa5,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
            ];
            let req = stun_pkt(0x0001, txid);
            let arrive = self.path(
                &mut recs,
                &mut rng,
                &req,
                "a",
                "b",
                t,
                self.net_at(0, second),
                false,
            );
            let resp = stun_pkt(0x0101, txid);
            self.path(
                &mut recs,
                &mut rng,
                &resp,
                "b",
                "a",
                arrive + 0.2 * MS,
                self.net_at(1, second),
                false,
            );
        }
        let mut out = Vec::new();
        for (host, kind) in self.hosts() {
            let mut list = recs.remove(host).unwrap_or_default();
            list.sort_by_key(|r| r.ts_ns);
            let id = format!(
                "{:016x}",
                0xd0d0_0000_u64 + host.bytes().map(u64::from).sum::<u64>()
            );
            let mut seq = 0;
            let mut start = 0;
            while start < list.len() {
                let first = list[start].ts_ns;
                let end = (start..list.len().min(start + per_batch))
                    .find(|&k| list[k].ts_ns >= first + 1_000_000_000)
                    .unwrap_or(list.len().min(start + per_batch));
                seq += 1;
                out.push(self.batch(&id, host, kind, seq, list[start..end].to_vec()));
                start = end;
            }
        }
        out
    }

    fn net_at(&self, dir: u32, second: u32) -> f64 {
        let step = dir == 0 && self.step_at_s.is_some_and(|s| second >= s);
        let base = if dir == 0 { self.ab_ms } else { self.ba_ms };
        base + if step { self.step_ms } else { 0.0 }
    }

    /// Adds the packet's records along its path; returns its rx_wire time.
    #[allow(clippy::too_many_arguments)]
    fn path<'h>(
        &'h self,
        recs: &mut BTreeMap<&'h str, Vec<Record>>,
        rng: &mut Lcg,
        p: &Pkt,
        src: &'h str,
        dst: &'h str,
        t: f64,
        net_ms: f64,
        drop_recv: bool,
    ) -> f64 {
        let relays: Vec<&str> = if src == "a" {
            self.relays.iter().map(String::as_str).collect()
        } else {
            self.relays.iter().rev().map(String::as_str).collect()
        };
        let hop = net_ms * MS / (relays.len() + 1) as f64;
        // The hosts in path order; each hop's 5-tuple is (host i → host i+1),
        // from the relay's relayed port when it leaves a relay.
        let hops: Vec<&str> = std::iter::once(src)
            .chain(relays.iter().copied())
            .chain([dst])
            .collect();
        let tuple = |i: usize| {
            let sport = if i == 0 { 40000 } else { 49152 + i as u16 };
            let dport = if i + 2 == hops.len() { 40000 } else { 3478 };
            (
                SocketAddr::new(addr(hops[i]), sport),
                SocketAddr::new(addr(hops[i + 1]), dport),
            )
        };
        let mut add = |host: &'h str, point: Point, ts: f64, hop: usize| {
            recs.entry(host)
                .or_default()
                .push(record(p, point, ts as u64, tuple(hop)));
        };
        add(src, Point::AppSend, t, 0);
        let mut now = t + 40e3 + rng.jitter(10e3);
        add(src, Point::TxWire, now, 0);
        for (i, r) in relays.iter().enumerate() {
            now += hop + rng.jitter(0.05 * MS);
            add(r, Point::RelayIn, now, i);
            now += 60e3 + rng.jitter(20e3);
            add(r, Point::RelayOut, now, i + 1);
        }
        now += hop + rng.jitter(0.05 * MS);
        let rx = now;
        let last = hops.len() - 2;
        add(dst, Point::RxWire, now, last);
        if !drop_recv {
            add(dst, Point::AppRecv, now + 150e3 + rng.jitter(50e3), last);
        }
        rx
    }

    fn batch(
        &self,
        id: &str,
        host: &str,
        kind: ProbeKind,
        seq: u64,
        records: Vec<Record>,
    ) -> Batch {
        let points: &[Point] = match kind {
            ProbeKind::Endpoint => &[Point::AppSend, Point::TxWire, Point::RxWire, Point::AppRecv],
            ProbeKind::Relay => &[Point::RelayIn, Point::RelayOut],
        };
        let n = records.len() as u64;
        Batch {
            version: demarc_proto::ingest::API_VERSION,
            batch_id: batch_id(id, seq),
            probe: ProbeInfo {
                id: id.into(),
                name: host.into(),
                kind,
                version: "0.1.0".into(),
                netns: 4026531840,
            },
            sent_at_ns: records.last().map_or(self.start_ns, |r| r.ts_ns),
            clock: ClockState {
                mode: ClockMode::Tai,
                synchronized: true,
                esterror_ns: self.maxerror_ns / 4,
                maxerror_ns: self.maxerror_ns,
                source: Some("adjtimex".into()),
                kernel_id: None,
            },
            health: Health {
                hooks: points
                    .iter()
                    .map(|&p| HookStatus {
                        point: p,
                        hook: hook_of(p).into(),
                        target: "eth0".into(),
                        mode: if hook_of(p) == "xdp" {
                            "skb".into()
                        } else {
                            String::new()
                        },
                        attached: true,
                        note: String::new(),
                    })
                    .collect(),
                fallbacks: vec!["fentry unavailable: using syscall tracepoints".into()],
                points: points
                    .iter()
                    .map(|&p| {
                        (
                            p,
                            PointCounters {
                                seen: seq * n,
                                media: seq * n,
                                recorded: seq * n,
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
                programs: vec![ProgramStats {
                    name: "demarc_tc_egress".into(),
                    run_count: seq * n,
                    run_time_ns: seq * n * 180,
                    recursion_misses: 0,
                }],
                spool: SpoolStats::default(),
            },
            records,
        }
    }
}

fn hook_of(p: Point) -> &'static str {
    match p {
        Point::AppSend | Point::AppRecv => "tracepoint",
        Point::TxWire | Point::RelayOut => "tcx",
        Point::RxWire | Point::RelayIn => "xdp",
    }
}

struct Pkt {
    key: u64,
    class: Class,
    ssrc: Option<u32>,
    seq: Option<u16>,
    stun: Option<(u16, [u8; 12])>,
    len: u32,
}

fn stun_pkt(ty: u16, txid: [u8; 12]) -> Pkt {
    let mut payload = [0u8; 20];
    payload[0..2].copy_from_slice(&ty.to_be_bytes());
    payload[4..8].copy_from_slice(&0x2112_a442_u32.to_be_bytes());
    payload[8..20].copy_from_slice(&txid);
    Pkt {
        key: packet_key(&payload),
        class: Class::Stun,
        ssrc: None,
        seq: None,
        stun: Some((ty, txid)),
        len: 20,
    }
}

/// a is 10.0.0.2, b 10.0.2.2, relays 10.0.1.x.
fn addr(host: &str) -> IpAddr {
    match host {
        "a" => [10, 0, 0, 2].into(),
        "b" => [10, 0, 2, 2].into(),
        relay => [
            10,
            0,
            1,
            1 + relay.bytes().fold(0u8, |h, b| h.wrapping_add(b)) % 200,
        ]
        .into(),
    }
}

fn record(p: &Pkt, point: Point, ts_ns: u64, (src, dst): (SocketAddr, SocketAddr)) -> Record {
    let wire = matches!(
        point,
        Point::TxWire | Point::RxWire | Point::RelayIn | Point::RelayOut
    );
    Record {
        key: p.key,
        point,
        ts_ns,
        payload_len: p.len,
        wire_len: p.len + 4,
        framing: Framing::ChannelData,
        class: p.class,
        channel: Some(0x4000),
        ssrc: p.ssrc,
        seq: p.seq,
        stun_type: p.stun.map(|s| s.0),
        stun_txid: p.stun.map(|s| s.1),
        family: 4,
        src_ip: src.ip(),
        src_port: src.port(),
        dst_ip: dst.ip(),
        dst_port: dst.port(),
        ifindex: if wire { 2 } else { 0 },
        netns: 4026531840,
        tgid: if wire { 0 } else { 1234 },
    }
}

/// Small deterministic generator for jitter.
struct Lcg(u64);

impl Lcg {
    /// Uniform in `[-amp, amp]`.
    fn jitter(&mut self, amp: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
    }
}
