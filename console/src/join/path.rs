//! One packet's points ordered along its path, and the segments between them.

use std::net::IpAddr;
use std::sync::Arc;

use demarc_proto::{Class, Point};

/// A probe's clock state as it applies to one timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockBound {
    pub maxerror_ns: u64,
    pub synced: bool,
    /// Hash of the kernel's boot id, 0 when the probe did not say.
    pub kernel: u64,
}

impl ClockBound {
    /// Both stamps come from one kernel clock (namespaces of one host).
    pub fn same_kernel(&self, other: &ClockBound) -> bool {
        self.kernel != 0 && self.kernel == other.kernel
    }
}

/// The sender's view of the packet's 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sa = std::net::SocketAddr::new(self.src_ip, self.src_port);
        let da = std::net::SocketAddr::new(self.dst_ip, self.dst_port);
        write!(f, "{sa}→{da}")
    }
}

/// One record as the join needs it: which host saw the packet where and when.
#[derive(Debug, Clone)]
pub struct Obs {
    pub key: u64,
    pub point: Point,
    pub host: Arc<str>,
    pub ts_ns: i64,
    pub clock: ClockBound,
    pub class: Class,
    pub ssrc: Option<u32>,
    pub seq: Option<u16>,
    pub stun_type: Option<u16>,
    pub stun_txid: Option<[u8; 12]>,
    pub tuple: Tuple,
}

impl Obs {
    pub fn from_record(
        r: &demarc_proto::ingest::Record,
        host: &Arc<str>,
        clock: ClockBound,
    ) -> Self {
        Obs {
            key: r.key,
            point: r.point,
            host: host.clone(),
            // Timestamps are validated to lie within an hour of now, far below i64::MAX.
            ts_ns: r.ts_ns as i64,
            clock,
            class: r.class,
            ssrc: r.ssrc,
            seq: r.seq,
            stun_type: r.stun_type,
            stun_txid: r.stun_txid,
            tuple: Tuple {
                src_ip: r.src_ip,
                src_port: r.src_port,
                dst_ip: r.dst_ip,
                dst_port: r.dst_port,
            },
        }
    }
}

/// One point on the ordered path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub point: Point,
    pub host: Arc<str>,
    pub ts_ns: i64,
    pub clock: ClockBound,
}

/// A relay the packet went through, with what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHop {
    pub host: Arc<str>,
    pub dwell_ns: Option<i64>,
    pub in_tuple: Option<Tuple>,
    pub out_tuple: Option<Tuple>,
}

/// A value with the clock-error bound of its two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounded {
    pub ns: i64,
    pub err_ns: u64,
}

/// DESIGN §5 segments; `None` where an end is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segments {
    /// app_send → tx_wire (same host: exact).
    pub tx_host: Option<i64>,
    /// tx_wire → first relay_in, or → rx_wire when there is no relay.
    pub net_up: Option<Bounded>,
    /// Sum of relay_in → relay_out over all relays (exact).
    pub dwell: Option<i64>,
    /// Sum of relay_out → next relay_in (two or more relays).
    pub relay_relay: Option<Bounded>,
    /// Last relay_out → rx_wire.
    pub net_down: Option<Bounded>,
    /// rx_wire → app_recv (exact).
    pub rx_host: Option<i64>,
    /// tx_wire → rx_wire.
    pub wire: Option<Bounded>,
    /// app_send → app_recv.
    pub app: Option<Bounded>,
}

/// A packet after the join: its path, segments and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub key: u64,
    pub tx_host: Option<Arc<str>>,
    pub rx_host: Option<Arc<str>>,
    pub class: Class,
    pub ssrc: Option<u32>,
    pub seq: Option<u16>,
    /// The sender's 5-tuple (tx_wire, else app_send, else the first record's).
    pub tuple: Tuple,
    pub path: Vec<Hop>,
    pub relays: Vec<RelayHop>,
    pub seg: Segments,
    /// Some cross-host segment has an end whose clock is not synchronised.
    pub unsynced: bool,
    pub stun: Option<(u16, [u8; 12])>,
}

impl Joined {
    /// The time the packet is filed under: its first point.
    pub fn ts_ns(&self) -> i64 {
        self.path.first().map_or(0, |h| h.ts_ns)
    }

    /// Flow identity: RTP/RTCP by SSRC, anything else by the sender's 5-tuple.
    pub fn flow_key(&self) -> String {
        let tx = self.tx_host.as_deref().unwrap_or("?");
        let rx = self.rx_host.as_deref().unwrap_or("?");
        match (self.class, self.ssrc) {
            (Class::Rtp | Class::Rtcp, Some(ssrc)) => {
                format!("{tx}>{rx}/{}/{ssrc:08x}", self.class)
            }
            _ => format!("{tx}>{rx}/{}/{}", self.class, self.tuple),
        }
    }

    pub fn hop(&self, point: Point) -> Option<&Hop> {
        self.path.iter().find(|h| h.point == point)
    }
}

fn span(a: &Hop, b: &Hop) -> Bounded {
    // One host or one kernel: one clock, no error. Else the OWAMP sum of both ends.
    let err_ns = if a.host == b.host || a.clock.same_kernel(&b.clock) {
        0
    } else {
        a.clock.maxerror_ns.saturating_add(b.clock.maxerror_ns)
    };
    Bounded {
        ns: b.ts_ns - a.ts_ns,
        err_ns,
    }
}

fn add(a: Bounded, b: Bounded) -> Bounded {
    Bounded {
        ns: a.ns + b.ns,
        err_ns: a.err_ns.saturating_add(b.err_ns),
    }
}

/// Orders a packet's observations (already free of duplicates) along its path
/// and computes its segments.
pub fn build(obs: Vec<Obs>) -> Joined {
    let first = obs
        .iter()
        .min_by_key(|o| o.ts_ns)
        .expect("a packet has a record");
    let earliest = |pts: &[Point]| {
        obs.iter()
            .filter(|o| pts.contains(&o.point))
            .min_by_key(|o| o.ts_ns)
            .map(|o| o.host.clone())
    };
    let tx_host = earliest(&[Point::AppSend, Point::TxWire]);
    let rx_host = earliest(&[Point::RxWire, Point::AppRecv]);
    let at = |host: &Option<Arc<str>>, point: Point| {
        obs.iter()
            .find(|o| o.point == point && Some(&o.host) == host.as_ref())
    };
    let app_send = at(&tx_host, Point::AppSend);
    let tx_wire = at(&tx_host, Point::TxWire);
    let rx_wire = at(&rx_host, Point::RxWire);
    let app_recv = at(&rx_host, Point::AppRecv);

    // Group relay points by relay host; order relays by their first timestamp.
    let mut relay_hosts: Vec<(i64, Arc<str>)> = Vec::new();
    for o in obs
        .iter()
        .filter(|o| matches!(o.point, Point::RelayIn | Point::RelayOut))
    {
        match relay_hosts.iter_mut().find(|(_, h)| *h == o.host) {
            Some((t, _)) => *t = (*t).min(o.ts_ns),
            None => relay_hosts.push((o.ts_ns, o.host.clone())),
        }
    }
    relay_hosts.sort();

    let hop = |o: &Obs| Hop {
        point: o.point,
        host: o.host.clone(),
        ts_ns: o.ts_ns,
        clock: o.clock,
    };
    let mut path: Vec<Hop> = Vec::with_capacity(obs.len());
    path.extend(app_send.into_iter().chain(tx_wire).map(hop));
    let mut relays = Vec::with_capacity(relay_hosts.len());
    let mut relay_ends: Vec<(Option<Hop>, Option<Hop>)> = Vec::with_capacity(relay_hosts.len());
    for (_, host) in &relay_hosts {
        let find = |p: Point| obs.iter().find(|o| o.point == p && o.host == *host);
        let (i, o) = (find(Point::RelayIn), find(Point::RelayOut));
        relays.push(RelayHop {
            host: host.clone(),
            dwell_ns: i.zip(o).map(|(i, o)| o.ts_ns - i.ts_ns),
            in_tuple: i.map(|o| o.tuple),
            out_tuple: o.map(|o| o.tuple),
        });
        let (i, o) = (i.map(hop), o.map(hop));
        path.extend(i.iter().chain(o.iter()).cloned());
        relay_ends.push((i, o));
    }
    path.extend(rx_wire.into_iter().chain(app_recv).map(hop));
    // Records at unexpected places (say app_recv on a host that also sent) are
    // kept on the path, in time order after the rest, so nothing is hidden.
    let mut extra: Vec<Hop> = obs
        .iter()
        .map(hop)
        .filter(|h| !path.iter().any(|p| p.point == h.point && p.host == h.host))
        .collect();
    extra.sort_by_key(|h| h.ts_ns);
    path.extend(extra);

    let pair = |a: Option<&Obs>, b: Option<&Obs>| a.zip(b).map(|(a, b)| span(&hop(a), &hop(b)));
    let tx_wire_hop = tx_wire.map(hop);
    let rx_wire_hop = rx_wire.map(hop);
    let (net_up, relay_relay, net_down) = match (relay_ends.first(), relay_ends.last()) {
        (Some((first_in, _)), Some((_, last_out))) => {
            let up = tx_wire_hop
                .as_ref()
                .zip(first_in.as_ref())
                .map(|(a, b)| span(a, b));
            let down = last_out
                .as_ref()
                .zip(rx_wire_hop.as_ref())
                .map(|(a, b)| span(a, b));
            let between = relay_ends
                .windows(2)
                .map(|w| {
                    w[0].1
                        .as_ref()
                        .zip(w[1].0.as_ref())
                        .map(|(a, b)| span(a, b))
                })
                .try_fold(None, |acc: Option<Bounded>, s| {
                    s.map(|s| Some(acc.map_or(s, |a| add(a, s))))
                })
                .flatten();
            (up, between, down)
        }
        _ => (pair(tx_wire, rx_wire), None, None),
    };
    let dwell = if relays.is_empty() {
        None
    } else {
        relays.iter().map(|r| r.dwell_ns).sum::<Option<i64>>()
    };
    let seg = Segments {
        tx_host: app_send.zip(tx_wire).map(|(a, b)| b.ts_ns - a.ts_ns),
        net_up,
        dwell,
        relay_relay,
        net_down,
        rx_host: rx_wire.zip(app_recv).map(|(a, b)| b.ts_ns - a.ts_ns),
        wire: pair(tx_wire, rx_wire),
        app: pair(app_send, app_recv),
    };
    let many_clocks = path
        .iter()
        .any(|h| h.host != path[0].host && !h.clock.same_kernel(&path[0].clock));
    let unsynced = many_clocks && path.iter().any(|h| !h.clock.synced);
    let sender = tx_wire.or(app_send).unwrap_or(first);
    let stun = obs.iter().find_map(|o| o.stun_type.zip(o.stun_txid));
    // Without endpoint probes (a relay probe alone beside a TURN server) the
    // ends are named by the addresses the relay saw, so directions stay apart.
    let addr = |ip: std::net::IpAddr| Arc::from(ip.to_string());
    let tx_host = tx_host.or_else(|| relays.first()?.in_tuple.map(|t| addr(t.src_ip)));
    let rx_host = rx_host.or_else(|| relays.last()?.out_tuple.map(|t| addr(t.dst_ip)));
    Joined {
        key: first.key,
        tx_host,
        rx_host,
        class: first.class,
        ssrc: obs.iter().find_map(|o| o.ssrc),
        seq: obs.iter().find_map(|o| o.seq),
        tuple: sender.tuple,
        path,
        relays,
        seg,
        unsynced,
        stun,
    }
}
