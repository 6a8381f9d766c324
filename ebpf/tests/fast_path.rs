//! BPF_PROG_TEST_RUN of `relay_fast`, the relay's XDP fast path: crafted
//! frames with routes installed in `fast_chan`/`fast_peer`, each run checked
//! byte for byte against the frame the test builds itself (checksums
//! computed from scratch, not updated as the program does), and for its
//! verdict, records, counters, `fast_stats`, dwell histogram and in-flight
//! table.
//!
//! Every test runs on a thread of its own in a network namespace it makes
//! (`in_test_net`), so `bpf_fib_lookup` sees only the routes and neighbours
//! set up here, never the host's; the namespace goes away with the thread.
//! Privileged: needs root, and panics without it.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use demarc_ebpf::abi::{self, FastChanKey, FastPeerKey, FastRoute, Record};
use demarc_ebpf::RELAY_OBJ;
use demarc_proto::vectors::Vector;
use demarc_proto::Point;

use common::*;

const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// TTL of everything the fast path sends (the relay's socket default).
const RELAY_TTL: u8 = 64;
/// TTL of the crafted input frames: not RELAY_TTL, so a rewrite shows.
const IN_TTL: u8 = 57;

// The test network: the relay's two links, fp0 and fp2 (veth, their peers
// fp1 and fp3 idle), with permanent neighbours so lookups resolve.
const RELAY_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1); // fp0
const RELAY_B: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1); // fp2
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2); // on fp0
const CLIENT2: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3); // on fp0
const PEER: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2); // on fp2
const NARROW: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2); // via fp2, route MTU 200
const UNRESOLVED: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 9); // on fp2's subnet, no neighbour
const UNROUTED: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2); // no route at all

const FP0_MAC: [u8; 6] = [2, 0, 0, 0, 0x77, 1];
const FP2_MAC: [u8; 6] = [2, 0, 0, 0, 0x78, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0x77, 2];
const CLIENT2_MAC: [u8; 6] = [2, 0, 0, 0, 0x77, 3];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0x78, 2];
const NARROW_MAC: [u8; 6] = [2, 0, 0, 0, 0x79, 2];
const NARROW_MTU: usize = 200;
const LINK_MTU: usize = 1500;

const NET_SETUP: &str = "\
link set lo up
link add fp0 address 02:00:00:00:77:01 type veth peer name fp1
link add fp2 address 02:00:00:00:78:01 type veth peer name fp3
addr add 10.77.0.1/24 dev fp0
addr add 10.78.0.1/24 dev fp2
link set fp0 up
link set fp1 up
link set fp2 up
link set fp3 up
neigh add 10.77.0.2 lladdr 02:00:00:00:77:02 dev fp0 nud permanent
neigh add 10.77.0.3 lladdr 02:00:00:00:77:03 dev fp0 nud permanent
neigh add 10.78.0.2 lladdr 02:00:00:00:78:02 dev fp2 nud permanent
route add 10.79.0.0/24 dev fp2 mtu lock 200
neigh add 10.79.0.2 lladdr 02:00:00:00:79:02 dev fp2 nud permanent
";

// Port roles as the agent's load_relay sets them: listener i is slot i + 1.
const LISTENER: u16 = 3478; // slot 1
const LISTENER2: u16 = 3479; // slot 2
const RELAY_PORT: u16 = 49160; // peer-facing
const RELAY_PORT2: u16 = 49161; // peer-facing

/// Runs `f` on a thread of its own in a new network namespace holding the
/// test network; IPv4 forwarding is on there iff `forwarding`. The
/// namespace is the thread's alone and goes away when it ends.
fn in_test_net<T: Send>(forwarding: bool, f: impl FnOnce() -> T + Send) -> T {
    require_root("fast_path");
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: no pointers; moves only the calling thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let mut ip = std::process::Command::new("ip")
                .args(["-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("run ip (iproute2)");
            std::io::Write::write_all(&mut ip.stdin.take().unwrap(), NET_SETUP.as_bytes()).unwrap();
            assert!(ip.wait().unwrap().success(), "ip -batch failed");
            // Per namespace, as the thread sees /proc/sys/net.
            std::fs::write(
                "/proc/sys/net/ipv4/conf/all/forwarding",
                if forwarding { "1" } else { "0" },
            )
            .expect("set forwarding");
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

fn route(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), channel: u16, slot: u8) -> FastRoute {
    FastRoute {
        expires_ns: u64::MAX,
        src_ip: src.0.octets(),
        dst_ip: dst.0.octets(),
        src_port: src.1.to_be_bytes(),
        dst_port: dst.1.to_be_bytes(),
        channel: channel.to_be_bytes(),
        slot,
        dir: if channel == 0 {
            abi::DIR_CLIENT_TO_PEER
        } else {
            abi::DIR_PEER_TO_CLIENT
        } as u8,
    }
}

/// An RTP packet of `len` bytes (at least the 12 of the header).
fn rtp(seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 0x60];
    p.extend(seq.to_be_bytes());
    p.extend(0x0102_0304u32.to_be_bytes()); // timestamp
    p.extend(0xdead_beefu32.to_be_bytes()); // SSRC
    p.extend((12..len).map(|i| (i as u16).wrapping_mul(seq) as u8));
    p
}

fn channel_data(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = channel.to_be_bytes().to_vec();
    p.extend((payload.len() as u16).to_be_bytes());
    p.extend(payload);
    p
}

/// A frame from `src` to `dst`, as the relay receives it on a link with MAC
/// `local`: DSCP EF, don't-fragment, a UDP checksum.
fn inbound(
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    peer_mac: [u8; 6],
    payload: &[u8],
) -> Ipv4Udp {
    let local = if dst.0 == RELAY_B { FP2_MAC } else { FP0_MAC };
    Ipv4Udp {
        macs: [local, peer_mac],
        tos: 0xb8,
        id: 0x4321,
        frag: 0x4000,
        ttl: IN_TTL,
        udp_checksum: true,
        ..Ipv4Udp::new(Tuple::v4(src.0, src.1, dst.0, dst.1), payload)
    }
}

/// What the fast path must make of `input`: sent from `src` to `dst` over
/// `macs` with `payload`, everything else of the IP header kept but the TTL.
fn outbound(input: &Ipv4Udp, macs: [[u8; 6]; 2], r: &FastRoute, payload: &[u8]) -> Ipv4Udp {
    let ip = |a: [u8; 4]| Ipv4Addr::from(a);
    Ipv4Udp {
        macs,
        tuple: Tuple::v4(
            ip(r.src_ip),
            u16::from_be_bytes(r.src_port),
            ip(r.dst_ip),
            u16::from_be_bytes(r.dst_port),
        ),
        ttl: RELAY_TTL,
        payload: payload.to_vec(),
        ..input.clone()
    }
}

/// What the relay's parser makes of a UDP payload (key, inner length).
fn parsed(udp_payload: &[u8]) -> demarc_proto::Parsed {
    demarc_proto::parse_udp_payload(udp_payload).expect("a well-formed payload")
}

/// The device a packet to `dst` leaves by and its MACs (destination,
/// source), as the test network routes it.
fn hop(dst: Ipv4Addr) -> (&'static str, [[u8; 6]; 2]) {
    match dst {
        CLIENT => ("fp0", [CLIENT_MAC, FP0_MAC]),
        CLIENT2 => ("fp0", [CLIENT2_MAC, FP0_MAC]),
        PEER => ("fp2", [PEER_MAC, FP2_MAC]),
        NARROW => ("fp2", [NARROW_MAC, FP2_MAC]),
        _ => panic!("{dst} has no next hop in the test network"),
    }
}

/// Whether a frame goes to a listener (a client's ChannelData), not to a
/// relay port.
fn from_client(frame: &Ipv4Udp) -> bool {
    [LISTENER, LISTENER2].contains(&frame.tuple.dport)
}

/// The device a frame to one of the relay's addresses arrives on.
fn link_of(relay_ip: std::net::IpAddr) -> &'static str {
    if relay_ip == RELAY_B {
        "fp2"
    } else {
        "fp0"
    }
}

/// The in-flight table's slot for a packet key (relay.bpf.c, inflight_slot).
fn inflight_slot(key: u64) -> u32 {
    (key ^ (key >> 32)) as u32 & 0xffff
}

/// What one run of a program left behind.
struct Outcome {
    retval: u32,
    out: Vec<u8>,
    records: Vec<Record>,
    counts: Vec<u64>,
    stats: Vec<u64>,
    dwell: Vec<u64>,
    /// CLOCK_MONOTONIC just before and after the run.
    window: (u64, u64),
    /// The packet's key holds its in-flight slot after the run.
    in_flight: bool,
    duration: Duration,
}

/// RELAY_OBJ loaded in the calling thread's namespace, port roles set,
/// records stamped with CLOCK_MONOTONIC (the dwell's clock, so a record pair
/// gives the dwell exactly).
struct Relay {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    fast_stats: PerCpuArray<MapData, u64>,
    dwell_hist: PerCpuArray<MapData, u64>,
    inflight: Array<MapData, [u64; 3]>,
    fast_chan: HashMap<MapData, FastChanKey, FastRoute>,
    fast_peer: HashMap<MapData, FastPeerKey, FastRoute>,
    netns: u32,
}

impl Relay {
    fn load(sample_threshold: u64) -> Relay {
        let netns = netns_inode();
        let mut ebpf = EbpfLoader::new()
            .override_global("cfg_netns", &netns, true)
            .override_global("cfg_clock", &abi::CLOCK_MONO, true)
            .override_global("cfg_sample_threshold", &sample_threshold, true)
            .load(RELAY_OBJ)
            .expect("load relay.bpf.o");
        let mut roles: Array<_, u8> = Array::try_from(ebpf.map_mut("port_roles").unwrap()).unwrap();
        for port in [RELAY_PORT, RELAY_PORT2] {
            roles.set(port.into(), abi::ROLE_PEER as u8, 0).unwrap();
        }
        for (i, port) in [LISTENER, LISTENER2].into_iter().enumerate() {
            roles.set(port.into(), i as u8 + 1, 0).unwrap();
        }
        for name in ["relay_fast", "relay_in"] {
            let xdp: &mut Xdp = ebpf.program_mut(name).unwrap().try_into().unwrap();
            xdp.load()
                .unwrap_or_else(|e| panic!("verifier rejects {name}: {e:?}"));
        }
        let mut take = |name| ebpf.take_map(name).unwrap();
        Relay {
            events: RingBuf::try_from(take("events")).unwrap(),
            counters: PerCpuArray::try_from(take("counters")).unwrap(),
            fast_stats: PerCpuArray::try_from(take("fast_stats")).unwrap(),
            dwell_hist: PerCpuArray::try_from(take("dwell_hist")).unwrap(),
            inflight: Array::try_from(take("inflight")).unwrap(),
            fast_chan: HashMap::try_from(take("fast_chan")).unwrap(),
            fast_peer: HashMap::try_from(take("fast_peer")).unwrap(),
            ebpf,
            netns,
        }
    }

    /// Installs `r` for ChannelData on `channel` from `client` to `server`.
    fn chan(
        &mut self,
        client: (Ipv4Addr, u16),
        server: (Ipv4Addr, u16),
        channel: u16,
        r: FastRoute,
    ) {
        let key = FastChanKey {
            client_ip: client.0.octets(),
            server_ip: server.0.octets(),
            client_port: client.1.to_be_bytes(),
            server_port: server.1.to_be_bytes(),
            channel: channel.to_be_bytes(),
            _pad: [0; 2],
        };
        self.fast_chan
            .insert(key, r, 0)
            .expect("insert into fast_chan");
    }

    /// Installs `r` for datagrams from `peer` to the relay port `relay`.
    fn peer(&mut self, peer: (Ipv4Addr, u16), relay: (Ipv4Addr, u16), r: FastRoute) {
        let key = FastPeerKey {
            peer_ip: peer.0.octets(),
            relay_ip: relay.0.octets(),
            peer_port: peer.1.to_be_bytes(),
            relay_port: relay.1.to_be_bytes(),
        };
        self.fast_peer
            .insert(key, r, 0)
            .expect("insert into fast_peer");
    }

    /// Runs `prog` `repeat` times on `frame` arriving on device `ingress`,
    /// with the in-flight slot of `key` (the payload's, 0 if none) emptied
    /// first.
    fn run(&mut self, prog: &str, frame: &[u8], ingress: &str, key: u64, repeat: u32) -> Outcome {
        let slot = inflight_slot(key);
        self.inflight.set(slot, [0u64; 3], 0).unwrap();
        drain(&mut self.events);
        let before = (
            sums(&self.counters),
            sums(&self.fast_stats),
            sums(&self.dwell_hist),
        );
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex.
        let ctx: Vec<u8> = [0, frame.len() as u32, 0, ifindex(ingress), 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut out = vec![0u8; 4096];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat,
            ..TestRunOptions::new()
        };
        let start = clock_ns(abi::CLOCK_MONO);
        let r = match self.ebpf.program(prog) {
            Some(aya::programs::Program::Xdp(p)) => p.test_run(opts),
            _ => panic!("no XDP program {prog}"),
        }
        .unwrap_or_else(|e| panic!("test run of {prog} on a {}-byte frame: {e:?}", frame.len()));
        let end = clock_ns(abi::CLOCK_MONO);
        out.truncate(r.data_size_out as usize);
        Outcome {
            retval: r.return_value,
            out,
            records: drain(&mut self.events),
            counts: deltas(&sums(&self.counters), &before.0),
            stats: deltas(&sums(&self.fast_stats), &before.1),
            dwell: deltas(&sums(&self.dwell_hist), &before.2),
            window: (start, end),
            in_flight: key != 0 && self.inflight.get(&slot, 0).unwrap()[0] == key,
            duration: r.duration,
        }
    }
}

/// Where two frames first differ, for a readable failure.
fn frame_diff(got: &[u8], want: &[u8]) -> Option<String> {
    if got == want {
        return None;
    }
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    let show = |f: &[u8]| vector_hex(&f[at.min(f.len())..(at + 8).min(f.len())]);
    Some(format!(
        "frame differs at byte {at} ({} vs {} bytes): got {}.., want {}..",
        got.len(),
        want.len(),
        show(got),
        show(want)
    ))
}

fn vector_hex(b: &[u8]) -> String {
    demarc_proto::vectors::hex(b)
}

/// The record `point` writes for `frame`'s payload at `frame`'s addresses.
fn record_for(relay: &Relay, point: Point, frame: &Ipv4Udp, ifindex: u32) -> Record {
    let v = Vector::parsed(point.as_str(), &frame.payload);
    expected_record(point, &frame.tuple, &v, relay.netns, ifindex)
}

/// Counter changes of a packet relay_in saw, and relay_out too if `out`
/// (with a dwell if `matched`).
fn relay_counts(out: bool, matched: bool) -> Vec<u64> {
    let seen = [abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED];
    let mut c = counts(Point::RelayIn, &seen);
    if out {
        let kinds = [&seen[..], &[abi::CNT_RELAY_MATCH][..usize::from(matched)]].concat();
        for (a, b) in c.iter_mut().zip(counts(Point::RelayOut, &kinds)) {
            *a += b;
        }
    }
    c
}

/// A packet the fast path must relay.
#[derive(Clone)]
struct Fast {
    name: &'static str,
    ingress: &'static str,
    input: Ipv4Udp,
    /// Bytes after the IP datagram (Ethernet padding), kept as they are.
    trailer: Vec<u8>,
    output: Ipv4Udp,
    egress: &'static str,
    retval: u32,
    route: FastRoute,
}

impl Fast {
    /// `input` relayed by route `r`: its inner payload, in ChannelData on
    /// the route's channel or bare; back to the sender (MACs swapped,
    /// XDP_TX) when the route leads to its address, else by the test
    /// network's next hop (XDP_TX when that is the same link).
    fn new(name: &'static str, input: Ipv4Udp, r: FastRoute) -> Fast {
        let inner = if from_client(&input) {
            &input.payload[4..]
        } else {
            &input.payload[..]
        };
        let payload = match u16::from_be_bytes(r.channel) {
            0 => inner.to_vec(),
            channel => channel_data(channel, inner),
        };
        let ingress = link_of(input.tuple.dst);
        let dst = Ipv4Addr::from(r.dst_ip);
        let (egress, macs) = if input.tuple.src == dst {
            (ingress, [input.macs[1], input.macs[0]])
        } else {
            hop(dst)
        };
        Fast {
            name,
            ingress,
            output: outbound(&input, macs, &r, &payload),
            // Ethernet pads frames to 60 bytes; the IP datagram ends before.
            trailer: vec![0; 60usize.saturating_sub(input.frame().len())],
            input,
            egress,
            retval: if egress == ingress {
                XDP_TX
            } else {
                XDP_REDIRECT
            },
            route: r,
        }
    }

    /// ChannelData of `len` payload bytes on `channel` from CLIENT to the
    /// first listener, relayed by `r` (installed in `relay`).
    fn from_client(
        relay: &mut Relay,
        name: &'static str,
        channel: u16,
        r: FastRoute,
        len: usize,
    ) -> Fast {
        let (from, to) = ((CLIENT, 40000), (RELAY_A, LISTENER));
        relay.chan(from, to, channel, r);
        let payload = channel_data(channel, &rtp(channel, len));
        Fast::new(name, inbound(from, to, CLIENT_MAC, &payload), r)
    }

    /// `len` bytes from `from` to the relay port `to`, relayed by `r`.
    fn from_peer(
        relay: &mut Relay,
        name: &'static str,
        from: (Ipv4Addr, u16),
        to: (Ipv4Addr, u16),
        r: FastRoute,
        len: usize,
    ) -> Fast {
        relay.peer(from, to, r);
        let mac = if from.0 == PEER { PEER_MAC } else { CLIENT_MAC };
        Fast::new(name, inbound(from, to, mac, &rtp(from.1, len)), r)
    }

    /// The same case with the payload's last two bytes chosen so that the
    /// output's UDP checksum computes to 0, which must go out as 0xffff.
    fn with_udp_checksum_computing_to_zero(&self) -> Fast {
        let mut c = self.clone();
        c.name = "... its UDP checksum computing to 0";
        fn set_last(c: &mut Fast, word: u16) {
            for p in [&mut c.input.payload, &mut c.output.payload] {
                let n = p.len();
                p[n - 2..].copy_from_slice(&word.to_be_bytes());
            }
        }
        // The word must lie at an even offset in the datagram to add as one.
        assert_eq!(c.output.payload.len() % 2, 0, "an even payload");
        set_last(&mut c, 0);
        // checksum = !sum: adding 0xffff - sum makes the sum 0xffff (-0).
        let sum = !c.output.computed_udp_checksum();
        set_last(&mut c, 0xffff - sum);
        assert_eq!(c.output.computed_udp_checksum(), 0);
        c
    }

    /// The same case without a UDP checksum, which must stay 0.
    fn without_udp_checksum(&self) -> Fast {
        let mut c = self.clone();
        c.name = "... without a UDP checksum";
        c.input.udp_checksum = false;
        c.output.udp_checksum = false;
        c
    }
}

/// The verdict, frame and counters of a run against what they should be.
fn check_outcome(run: &Outcome, retval: u32, frame: &[u8], counts: &[u64]) -> Vec<String> {
    let mut problems = Vec::new();
    if run.retval != retval {
        problems.push(format!("returned {}, want {retval}", run.retval));
    }
    problems.extend(frame_diff(&run.out, frame));
    if run.counts != counts {
        problems.push(format!(
            "counters moved {:?}, want {:?}",
            moved(&run.counts),
            moved(counts)
        ));
    }
    problems
}

fn check_fast(relay: &mut Relay, c: &Fast) -> Vec<String> {
    let frame = [c.input.frame(), c.trailer.clone()].concat();
    let want = [c.output.frame(), c.trailer.clone()].concat();
    let run = relay.run(
        "relay_fast",
        &frame,
        c.ingress,
        parsed(&c.input.payload).key,
        1,
    );
    // As relay_out: a dwell needs a listener slot to be counted under.
    let slotted = (1..=abi::RELAY_LISTENERS).contains(&c.route.slot.into());
    let mut problems = check_outcome(&run, c.retval, &want, &relay_counts(true, slotted));
    let in_dir = if from_client(&c.input) {
        abi::DIR_CLIENT_TO_PEER
    } else {
        abi::DIR_PEER_TO_CLIENT
    };
    let mut stats = vec![0; abi::FAST_STATS as usize];
    stats[in_dir as usize * 2] = 1;
    stats[in_dir as usize * 2 + 1] = parsed(&c.input.payload).payload_len.into();
    if run.stats != stats {
        problems.push(format!("fast_stats moved {:?}, want {stats:?}", run.stats));
    }
    if run.in_flight {
        problems.push("in flight: relay_out never sees a fast packet".into());
    }
    let [rin, rout] = run.records.as_slice() else {
        problems.push(format!(
            "{} records, want relay_in and relay_out",
            run.records.len()
        ));
        return problems;
    };
    let (start, end) = run.window;
    if !(start <= rin.ts_ns && rin.ts_ns <= rout.ts_ns && rout.ts_ns <= end) {
        problems.push(format!(
            "relay_in at {}, relay_out at {}: not in order within [{start}, {end}]",
            rin.ts_ns, rout.ts_ns
        ));
    }
    for (got, frame, dev) in [(rin, &c.input, c.ingress), (rout, &c.output, c.egress)] {
        let point = if std::ptr::eq(got, rin) {
            Point::RelayIn
        } else {
            Point::RelayOut
        };
        let mut want = record_for(relay, point, frame, ifindex(dev));
        want.ts_ns = got.ts_ns;
        for p in field_diffs(got, &want) {
            problems.push(format!("{point} record: {p}"));
        }
    }
    // The records carry the two clock readings the dwell is taken from.
    let bucket = abi::dwell_bucket(rout.ts_ns.saturating_sub(rin.ts_ns));
    let mut dwell = vec![0; run.dwell.len()];
    if slotted {
        dwell[abi::dwell_index(c.route.slot.into(), c.route.dir.into(), bucket) as usize] = 1;
    }
    if run.dwell != dwell {
        let moved: Vec<_> = run
            .dwell
            .iter()
            .enumerate()
            .filter(|(_, &n)| n != 0)
            .collect();
        problems.push(format!(
            "dwell_hist moved {moved:?}, want +1 at slot {} dir {} bucket {bucket}",
            c.route.slot, c.route.dir
        ));
    }
    problems
}

/// Checks that `relay_fast` leaves `frame` to user space exactly as
/// `relay_in` does: passed unchanged, one relay_in record, in flight.
fn check_slow(relay: &mut Relay, ingress: &str, input: &Ipv4Udp, frame: &[u8]) -> Vec<String> {
    let run = relay.run("relay_fast", frame, ingress, parsed(&input.payload).key, 1);
    let mut problems = check_outcome(&run, XDP_PASS, frame, &relay_counts(false, false));
    if run.stats.iter().any(|&n| n != 0) || run.dwell.iter().any(|&n| n != 0) {
        problems.push("fast_stats or dwell_hist moved".into());
    }
    if !run.in_flight {
        problems.push("not in flight: relay_out could not match it".into());
    }
    match run.records.as_slice() {
        [got] => {
            let mut want = record_for(relay, Point::RelayIn, input, ifindex(ingress));
            want.ts_ns = got.ts_ns;
            if !(run.window.0..=run.window.1).contains(&got.ts_ns) {
                problems.push("relay_in record stamped outside the run".into());
            }
            problems.extend(field_diffs(got, &want));
        }
        got => problems.push(format!("{} records, want one relay_in", got.len())),
    }
    problems
}

fn run_fast_cases(relay: &mut Relay, cases: &[Fast]) -> Vec<String> {
    let mut problems = Vec::new();
    for c in cases {
        for p in check_fast(relay, c) {
            problems.push(format!("{}: {p}", c.name));
        }
    }
    problems
}

/// Runs `cases` and the first again without a UDP checksum and with one
/// computing to 0; fails on any problem.
fn check_with_checksum_variants(relay: &mut Relay, what: &str, mut cases: Vec<Fast>) {
    cases.push(cases[0].without_udp_checksum());
    cases.push(cases[0].with_udp_checksum_computing_to_zero());
    fail_on(run_fast_cases(relay, &cases));
    println!("{what}: {} cases byte for byte", cases.len());
}

/// Checksums of a header from RFC 1071's practice (a well-known IPv4
/// header): the helper the expected frames rely on is right.
#[test]
fn checksum_of_a_known_ipv4_header() {
    let header = unhex("450000730000400040110000c0a80001c0a800c7");
    assert_eq!(checksum(&[&header]), 0xb861);
    let mut with = header.clone();
    with[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
    assert_eq!(
        checksum(&[&with]),
        0,
        "a header with its checksum sums to 0"
    );
}

/// (a) client → client: ChannelData in, ChannelData out on the route's
/// channel, same size; back to the sender's address (two clients behind one
/// NAT: XDP_TX, MACs swapped) and to another link (XDP_REDIRECT, MACs from
/// the FIB). Here and below the UDP checksum is updated, left 0 when the
/// sender sent none, and sent as 0xffff when it computes to 0.
#[test]
fn client_to_client() {
    in_test_net(true, || {
        let mut relay = Relay::load(1 << 32);
        let cases = vec![
            Fast::from_client(
                &mut relay,
                "back to the sender",
                0x4000,
                route((RELAY_A, LISTENER), (CLIENT, 40002), 0x4123, 1),
                160,
            ),
            Fast::from_client(
                &mut relay,
                "to another link, another listener",
                0x4001,
                route((RELAY_B, LISTENER2), (PEER, 40004), 0x7ffe, 2),
                1000,
            ),
        ];
        check_with_checksum_variants(&mut relay, "client → client", cases);
    });
}

/// (b) client → peer: ChannelData in, the bare payload out, 4 bytes
/// shorter; to the peer's link (XDP_REDIRECT), on the same link through the
/// FIB (XDP_TX, the neighbour's MAC), with Ethernet padding behind a short
/// datagram, which stays behind it, and by a route with no listener slot.
#[test]
fn client_to_peer() {
    in_test_net(true, || {
        let mut relay = Relay::load(1 << 32);
        let to_peer = |slot| route((RELAY_B, RELAY_PORT), (PEER, 5000), 0, slot);
        let cases = vec![
            Fast::from_client(&mut relay, "to the peer's link", 0x4000, to_peer(1), 160),
            Fast::from_client(
                &mut relay,
                "on the same link",
                0x4001,
                route((RELAY_A, RELAY_PORT2), (CLIENT2, 5002), 0, 2),
                1200,
            ),
            Fast::from_client(
                &mut relay,
                "12 bytes, in a frame padded to 60",
                0x4002,
                to_peer(1),
                12,
            ),
            Fast::from_client(
                &mut relay,
                "a route without a listener slot: relayed, no dwell counted",
                0x4003,
                to_peer(0),
                160,
            ),
        ];
        assert!(!cases[2].trailer.is_empty(), "the short case has padding");
        check_with_checksum_variants(&mut relay, "client → peer", cases);
    });
}

/// (c) peer → client: bare UDP in, ChannelData out, 4 bytes longer, its
/// length field the payload's; from the peer's link (XDP_REDIRECT), back
/// to the sender's address (XDP_TX), at the largest sizes the link MTU and
/// a route's locked MTU allow.
#[test]
fn peer_to_client() {
    in_test_net(true, || {
        let mut relay = Relay::load(1 << 32);
        // IP header + UDP header + ChannelData header around the payload.
        let grown = IPV4_LEN + UDP_LEN + 4;
        let cases = vec![
            Fast::from_peer(
                &mut relay,
                "from the peer's link",
                (PEER, 5000),
                (RELAY_B, RELAY_PORT),
                route((RELAY_A, LISTENER), (CLIENT, 40000), 0x4000, 1),
                160,
            ),
            Fast::from_peer(
                &mut relay,
                "back to the sender (peer and client on one address)",
                (CLIENT, 5004),
                (RELAY_A, RELAY_PORT),
                route((RELAY_A, LISTENER2), (CLIENT, 40006), 0x4fff, 2),
                160,
            ),
            Fast::from_peer(
                &mut relay,
                "back to the sender, grown to the link MTU",
                (CLIENT, 5006),
                (RELAY_A, RELAY_PORT2),
                route((RELAY_A, LISTENER), (CLIENT, 40008), 0x4001, 1),
                LINK_MTU - grown,
            ),
            Fast::from_peer(
                &mut relay,
                "grown to a route's locked MTU",
                (CLIENT, 5008),
                (RELAY_A, RELAY_PORT),
                route((RELAY_B, LISTENER), (NARROW, 40010), 0x4002, 1),
                NARROW_MTU - grown,
            ),
        ];
        check_with_checksum_variants(&mut relay, "peer → client", cases);
    });
}

/// (d, e) Whatever the fast path cannot or must not relay goes to user space
/// as relay_in sends it: unchanged, recorded, in flight. Each case has a
/// live route but for what it names.
#[test]
fn what_the_fast_path_leaves_to_the_relay() {
    in_test_net(true, || {
        let mut relay = Relay::load(1 << 32);
        let (client, listener) = ((CLIENT, 40000), (RELAY_A, LISTENER));
        let (peer, relay_port) = ((PEER, 5000), (RELAY_B, RELAY_PORT));
        let to_peer = |dst| route((RELAY_B, RELAY_PORT), dst, 0, 1);
        let to_client = |dst| route((RELAY_A, LISTENER), dst, 0x4000, 1);
        let chan = |channel, payload: &[u8]| {
            inbound(
                client,
                listener,
                CLIENT_MAC,
                &channel_data(channel, payload),
            )
        };
        let grown = IPV4_LEN + UDP_LEN + 4;

        let mut expired = to_peer((PEER, 5000));
        expired.expires_ns = clock_ns(abi::CLOCK_MONO);
        relay.chan(client, listener, 0x4000, expired);
        relay.chan(client, listener, 0x4001, to_peer((PEER, 5000)));
        relay.chan(client, listener, 0x4003, to_peer((UNROUTED, 5000)));
        relay.chan(client, listener, 0x4004, to_peer((UNRESOLVED, 5000)));
        relay.chan(client, listener, 0x4005, to_peer((RELAY_B, 5000)));
        relay.peer(peer, relay_port, to_client((NARROW, 40000)));
        let (back, back_to) = ((CLIENT, 5010), (RELAY_A, RELAY_PORT));
        relay.peer(back, back_to, to_client((CLIENT, 40000)));
        let mut padded = chan(0x4001, &rtp(5, 161));
        padded.payload.extend([0; 3]);
        let cases = [
            ("route expired", chan(0x4000, &rtp(5, 160))),
            (
                "no route for this channel (another has one)",
                chan(0x4002, &rtp(5, 160)),
            ),
            ("ChannelData padded to 4 bytes", padded),
            (
                "IPv4 options",
                Ipv4Udp {
                    options: vec![1, 1, 1, 0],
                    ..chan(0x4001, &rtp(5, 160))
                },
            ),
            ("no route to the destination", chan(0x4003, &rtp(5, 160))),
            ("the destination's MAC unknown", chan(0x4004, &rtp(5, 160))),
            (
                "the destination is the relay host itself",
                chan(0x4005, &rtp(5, 160)),
            ),
            (
                "grows past a route's locked MTU",
                inbound(peer, relay_port, PEER_MAC, &rtp(5, NARROW_MTU - grown + 1)),
            ),
            (
                "back to the sender, grows past the link MTU",
                inbound(back, back_to, CLIENT_MAC, &rtp(5, LINK_MTU - grown + 1)),
            ),
            (
                "no route from this peer port (the next port has one)",
                inbound((PEER, 5001), relay_port, PEER_MAC, &rtp(5, 160)),
            ),
        ];
        let mut problems = Vec::new();
        for (name, input) in &cases {
            for p in check_slow(&mut relay, link_of(input.tuple.dst), input, &input.frame()) {
                problems.push(format!("{name}: {p}"));
            }
        }
        // An IP datagram longer than the UDP datagram in it.
        let input = chan(0x4001, &rtp(5, 160));
        let mut frame = input.frame();
        let tot = (IPV4_LEN + UDP_LEN + input.payload.len() + 2) as u16;
        frame[ETH_LEN + 2..ETH_LEN + 4].copy_from_slice(&tot.to_be_bytes());
        frame.extend([0, 0]);
        for p in check_slow(&mut relay, "fp0", &input, &frame) {
            problems.push(format!("IP total length past the UDP datagram: {p}"));
        }
        fail_on(problems);
        println!(
            "left to the relay: {} cases, unchanged, recorded, in flight",
            cases.len() + 1
        );
    });
}

/// bpf_fib_lookup does not route for a device that does not forward
/// (BPF_FIB_LKUP_RET_FWD_DISABLED): with forwarding off only the way back to
/// the sender, which needs no lookup, stays fast.
#[test]
fn without_forwarding_only_the_way_back_is_fast() {
    in_test_net(false, || {
        let mut relay = Relay::load(1 << 32);
        let (from, to) = ((CLIENT, 40000), (RELAY_A, LISTENER));
        let back = route((RELAY_A, LISTENER), (CLIENT, 40002), 0x4001, 1);
        let fast = Fast::from_client(&mut relay, "back to the sender", 0x4000, back, 160);
        let mut problems = run_fast_cases(&mut relay, &[fast]);
        let onward = route((RELAY_A, RELAY_PORT), (CLIENT2, 5000), 0, 1);
        relay.chan(from, to, 0x4002, onward);
        let input = inbound(from, to, CLIENT_MAC, &channel_data(0x4002, &rtp(6, 160)));
        for p in check_slow(&mut relay, "fp0", &input, &input.frame()) {
            problems.push(format!("to a neighbour: {p}"));
        }
        fail_on(problems);
    });
}

/// Without routes relay_fast is relay_in: every payload of the shared
/// vectors, in frames to a listener, to a relay port (IPv4 and IPv6) and to
/// a port of no role, passes unchanged through both, with the same records,
/// counters and in-flight entry.
#[test]
fn without_routes_relay_fast_is_relay_in() {
    in_test_net(true, || {
        let mut relay = Relay::load(1 << 32);
        let vectors = demarc_proto::vectors::load().expect("read ebpf/testdata/vectors.json");
        let v6 = |port| Tuple {
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            sport: 40000,
            dport: port,
        };
        let mut problems = Vec::new();
        let mut runs = 0;
        for v in &vectors {
            let payload = unhex(&v.udp_payload_hex);
            let key = v
                .key
                .as_deref()
                .map_or(0, |k| u64::from_str_radix(k, 16).unwrap());
            let frames = [
                (
                    "to a listener",
                    Ipv4Udp::new(Tuple::v4(CLIENT, 40000, RELAY_A, LISTENER), &payload).frame(),
                ),
                (
                    "to a relay port",
                    Ipv4Udp::new(Tuple::v4(PEER, 5000, RELAY_A, RELAY_PORT), &payload).frame(),
                ),
                ("IPv6, to a listener", ipv6_frame(&v6(LISTENER), &payload)),
                (
                    "IPv6, to a relay port",
                    ipv6_frame(&v6(RELAY_PORT), &payload),
                ),
                (
                    "to a port of no role",
                    Ipv4Udp::new(Tuple::v4(CLIENT, 40000, RELAY_A, 9), &payload).frame(),
                ),
            ];
            for (what, frame) in &frames {
                let mut problem = |p: String| problems.push(format!("{} / {what}: {p}", v.name));
                let a = relay.run("relay_in", frame, "fp0", key, 1);
                let b = relay.run("relay_fast", frame, "fp0", key, 1);
                runs += 2;
                for (name, o) in [("relay_in", &a), ("relay_fast", &b)] {
                    if o.retval != XDP_PASS || o.out != *frame {
                        problem(format!(
                            "{name} returned {} with the frame changed: {}",
                            o.retval,
                            o.out != *frame
                        ));
                    }
                    if let Some(r) = o
                        .records
                        .iter()
                        .find(|r| !(o.window.0..=o.window.1).contains(&r.ts_ns))
                    {
                        problem(format!(
                            "{name} stamped a record outside its run: {}",
                            r.ts_ns
                        ));
                    }
                }
                let untimed = |o: &Outcome| -> Vec<Record> {
                    o.records
                        .iter()
                        .map(|r| Record { ts_ns: 0, ..*r })
                        .collect()
                };
                if untimed(&a) != untimed(&b) {
                    problem(format!(
                        "records differ: {:?} vs {:?}",
                        a.records, b.records
                    ));
                }
                if a.counts != b.counts || a.in_flight != b.in_flight {
                    problem(format!(
                        "relay_in moved {:?} (in flight: {}), relay_fast {:?} (in flight: {})",
                        moved(&a.counts),
                        a.in_flight,
                        moved(&b.counts),
                        b.in_flight
                    ));
                }
                if b.stats.iter().chain(&b.dwell).any(|&n| n != 0) {
                    problem("relay_fast moved fast_stats or dwell_hist".into());
                }
            }
        }
        fail_on(problems);
        println!(
            "no routes: {} vectors x 5 frames, relay_fast = relay_in in {runs} runs",
            vectors.len()
        );
    });
}

/// Per-packet cost from BPF_PROG_TEST_RUN's duration, for the report: the
/// median over ROUNDS of REPEAT runs each of relay_in and relay_fast on a
/// packet without a route, and of relay_fast relaying client → client. A
/// route and its mirror image make every run's output the next run's input,
/// so each repetition is fast; fast_stats proves it.
#[test]
fn per_packet_cost() {
    // Two records a fast run stay under a quarter of the ring buffer, where
    // every record would force a wake-up.
    const REPEAT: u32 = 8_000;
    const ROUNDS: usize = 5;
    in_test_net(true, || {
        let (client, server) = ((CLIENT, LISTENER2), (RELAY_A, LISTENER));
        let payload = |channel| channel_data(channel, &rtp(7, 160));
        let frame = |channel| inbound(client, server, CLIENT_MAC, &payload(channel)).frame();
        let (routed, unrouted) = (frame(0x4000), frame(0x4001));
        let (key, key_unrouted) = (parsed(&payload(0x4000)).key, parsed(&payload(0x4001)).key);
        let mirror = ((RELAY_A, LISTENER2), (CLIENT, LISTENER));
        println!(
            "per-packet cost (BPF_PROG_TEST_RUN, median of {ROUNDS} x {REPEAT} runs, \
             160 B RTP in ChannelData)"
        );
        println!("| program | packet | records | ns per packet |");
        println!("|---|---|---|---:|");
        for (threshold, records) in [(0, "none"), (1 << 32, "all")] {
            let mut relay = Relay::load(threshold);
            relay.chan(client, server, 0x4000, route(mirror.0, mirror.1, 0x4000, 1));
            relay.chan(mirror.0, mirror.1, 0x4000, route(client, server, 0x4000, 2));
            let mut ns: [Vec<u128>; 3] = Default::default();
            let mut problems = Vec::new();
            for round in 0..ROUNDS {
                let slow_in = relay.run("relay_in", &unrouted, "fp0", key_unrouted, REPEAT);
                let slow = relay.run("relay_fast", &unrouted, "fp0", key_unrouted, REPEAT);
                let fast = relay.run("relay_fast", &routed, "fp0", key, REPEAT);
                if slow.retval != XDP_PASS || slow.stats.iter().any(|&n| n != 0) {
                    problems.push(format!(
                        "round {round}: a packet without a route was relayed"
                    ));
                }
                if fast.retval != XDP_TX || fast.stats[0] != u64::from(REPEAT) {
                    problems.push(format!(
                        "round {round}: returned {}, {} of {REPEAT} runs fast",
                        fast.retval, fast.stats[0]
                    ));
                }
                for (runs, o) in ns.iter_mut().zip([slow_in, slow, fast]) {
                    runs.push(o.duration.as_nanos());
                }
            }
            fail_on(problems);
            let what = [
                ("relay_in", "any"),
                ("relay_fast", "left to the relay (no route)"),
                ("relay_fast", "client → client, back to the sender"),
            ];
            for ((prog, packet), mut runs) in what.into_iter().zip(ns) {
                runs.sort_unstable();
                println!("| {prog} | {packet} | {records} | {} |", runs[ROUNDS / 2]);
            }
        }
    });
}
