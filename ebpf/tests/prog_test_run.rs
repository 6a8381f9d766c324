//! BPF_PROG_TEST_RUN of the wire programs, in the manner of cilium/ebpf's and
//! Retina's packet-parser tests: crafted Ethernet frames go through the real
//! `tx_wire` (tc) and `rx_wire` (XDP) programs of `ENDPOINT_OBJ`, and the ring
//! buffer and the counters are checked field by field against
//! `testdata/vectors.json`, the spec that `demarc-proto` is held to as well.
//!
//! Privileged: needs root for BPF. Without it the tests panic rather than
//! skip, so a CI run that lost its privileges fails instead of passing empty.
//! Run with `--nocapture` to see what each group checked.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use demarc_ebpf::abi::{self, layout, Record};
use demarc_ebpf::ENDPOINT_OBJ;
use demarc_proto::vectors::{Expect, Vector};
use demarc_proto::{Class, Framing, Point};

use common::*;

/// The probe must never change a packet's fate: tc says "no opinion"
/// (TC_ACT_UNSPEC, -1), XDP passes.
const TC_ACT_UNSPEC: u32 = -1i32 as u32;

const WIRE: [Point; 2] = [Point::TxWire, Point::RxWire];

/// Shortest Ethernet frame without FCS; shorter ones arrive zero-padded.
const ETH_MIN_FRAME: usize = 60;

fn vectors() -> Vec<Vector> {
    demarc_proto::vectors::load().expect("read ebpf/testdata/vectors.json")
}

const V4: Tuple = Tuple {
    src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    dst: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 2)),
    sport: 40000,
    dport: 3478,
};

const V6: Tuple = Tuple {
    src: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    dst: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    sport: 50000,
    dport: 3479,
};

fn pad_to_min(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(frame.len().max(ETH_MIN_FRAME), 0);
    frame
}

/// Load-time configuration (`const volatile` globals in demarc_common.h).
#[derive(Debug, Clone, Copy)]
struct Config {
    clock: u32,
    sample_threshold: u64,
    port_lo: u16,
    port_hi: u16,
    /// rx_wire as its tc-ingress twin (the fallback where XDP has no driver mode).
    rx_tc: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            clock: abi::CLOCK_TAI,
            sample_threshold: 1 << 32,
            port_lo: 0,
            port_hi: u16::MAX,
            rx_tc: false,
        }
    }
}

/// What one program run left behind.
struct Run {
    /// What the program must return: tc "no opinion", XDP_PASS.
    want_retval: u32,
    retval: u32,
    records: Vec<Record>,
    /// Change of every counter (all points, all kinds), summed over CPUs.
    counts: Vec<u64>,
    /// Clock readings just before and after the run.
    window: (u64, u64),
}

/// `ENDPOINT_OBJ` loaded with `tx_wire` and `rx_wire` ready for test runs.
struct Wire {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    cfg: Config,
    netns: u32,
    lo_ifindex: u32,
}

impl Wire {
    fn load(cfg: Config) -> Wire {
        require_root("prog_test_run");
        let netns = netns_inode();
        let mut ebpf = EbpfLoader::new()
            .override_global("cfg_netns", &netns, true)
            .override_global("cfg_clock", &cfg.clock, true)
            .override_global("cfg_sample_threshold", &cfg.sample_threshold, true)
            .override_global("cfg_port_lo", &cfg.port_lo, true)
            .override_global("cfg_port_hi", &cfg.port_hi, true)
            .load(ENDPOINT_OBJ)
            .expect("load endpoint.bpf.o");
        let tc: &mut SchedClassifier = ebpf.program_mut("tx_wire").unwrap().try_into().unwrap();
        tc.load().expect("verifier accepts tx_wire");
        if cfg.rx_tc {
            let tc: &mut SchedClassifier =
                ebpf.program_mut("rx_wire_tc").unwrap().try_into().unwrap();
            tc.load().expect("verifier accepts rx_wire_tc");
        } else {
            let xdp: &mut Xdp = ebpf.program_mut("rx_wire").unwrap().try_into().unwrap();
            xdp.load().expect("verifier accepts rx_wire");
        }
        let events = RingBuf::try_from(ebpf.take_map("events").unwrap()).unwrap();
        let counters = PerCpuArray::try_from(ebpf.take_map("counters").unwrap()).unwrap();
        // Test runs happen on the loopback device of the caller's namespace.
        let lo_ifindex = ifindex("lo");
        Wire {
            ebpf,
            events,
            counters,
            cfg,
            netns,
            lo_ifindex,
        }
    }

    fn counts(&self) -> Vec<u64> {
        sums(&self.counters)
    }

    fn now(&self) -> u64 {
        clock_ns(self.cfg.clock)
    }

    fn run(&mut self, point: Point, frame: &[u8]) -> Run {
        let before = self.counts();
        let opts = TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        };
        let name = match point {
            Point::RxWire if self.cfg.rx_tc => "rx_wire_tc",
            _ => point.as_str(),
        };
        let start = self.now();
        let (result, want_retval) = match self.ebpf.program(name) {
            Some(Program::SchedClassifier(p)) => (p.test_run(opts), TC_ACT_UNSPEC),
            Some(Program::Xdp(p)) => (p.test_run(opts), XDP_PASS),
            _ => panic!("no wire program {name}"),
        };
        let result = result.unwrap_or_else(|e| {
            panic!("test run of {point} on a {}-byte frame: {e:?}", frame.len())
        });
        let end = self.now();
        let records = drain(&mut self.events);
        let counts = deltas(&self.counts(), &before);
        Run {
            want_retval,
            retval: result.return_value,
            records,
            counts,
            window: (start, end),
        }
    }

    /// The record `point` must write for a payload carried in `t`, with the
    /// parse results of `v`; ts_ns is checked separately.
    fn expected(&self, point: Point, t: &Tuple, v: &Vector) -> Record {
        expected_record(point, t, v, self.netns, self.lo_ifindex)
    }
}

/// Checks a run against the expected verdict, counters and (at most one)
/// record; returns what disagreed, empty when all agreed.
fn check(run: &Run, want_counts: &[u64], want: Option<Record>) -> Vec<String> {
    let mut problems = Vec::new();
    if run.retval != run.want_retval {
        problems.push(format!(
            "returned {}, want {}",
            run.retval as i32, run.want_retval as i32
        ));
    }
    if run.counts != want_counts {
        problems.push(format!(
            "counters moved {:?}, want {:?}",
            moved(&run.counts),
            moved(want_counts)
        ));
    }
    match (run.records.as_slice(), want) {
        ([], None) => {}
        ([got], Some(mut want)) => {
            let (start, end) = run.window;
            if !(start..=end).contains(&got.ts_ns) {
                problems.push(format!("ts_ns {} outside [{start}, {end}]", got.ts_ns));
            }
            want.ts_ns = got.ts_ns;
            problems.extend(field_diffs(got, &want));
        }
        (got, want) => problems.push(format!(
            "{} records, want {}",
            got.len(),
            usize::from(want.is_some())
        )),
    }
    problems
}

#[test]
fn point_and_class_codes_agree_with_proto() {
    assert_eq!(u32::from(Point::TxWire.code()), layout::POINT_TX_WIRE);
    assert_eq!(u32::from(Point::RxWire.code()), layout::POINT_RX_WIRE);
    for (f, c) in [
        (Framing::Bare, layout::FRAMING_BARE),
        (Framing::ChannelData, layout::FRAMING_CHANNEL_DATA),
        (Framing::Send, layout::FRAMING_SEND),
        (Framing::Data, layout::FRAMING_DATA),
    ] {
        assert_eq!(u32::from(f.code()), c, "{f}");
    }
    for (k, c) in [
        (Class::Other, layout::CLASS_OTHER),
        (Class::Rtp, layout::CLASS_RTP),
        (Class::Rtcp, layout::CLASS_RTCP),
        (Class::Dtls, layout::CLASS_DTLS),
        (Class::Stun, layout::CLASS_STUN),
    ] {
        assert_eq!(u32::from(k.code()), c, "{k}");
    }
}

/// Runs `v`'s payload in IPv4 (bare and padded to the Ethernet minimum) and
/// IPv6 frames through both wire programs; returns the problems found and the
/// number of records checked.
fn check_vector(wire: &mut Wire, v: &Vector) -> (Vec<String>, usize) {
    let payload = unhex(&v.udp_payload_hex);
    let frames = [
        ("IPv4", V4, ipv4_frame(&V4, &payload, &[])),
        (
            "IPv4 padded",
            V4,
            pad_to_min(ipv4_frame(&V4, &payload, &[])),
        ),
        ("IPv6", V6, ipv6_frame(&V6, &payload)),
    ];
    let (mut problems, mut records) = (Vec::new(), 0);
    for (what, t, frame) in &frames {
        for point in WIRE {
            let (kinds, want): (&[u32], _) = match v.expect {
                Expect::Media => (
                    &[abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED],
                    Some(wire.expected(point, t, v)),
                ),
                Expect::NotMedia => (&[abi::CNT_SEEN], None),
                Expect::Malformed => (&[abi::CNT_SEEN, abi::CNT_PARSE_FAIL], None),
            };
            let run = wire.run(point, frame);
            records += run.records.len();
            for p in check(&run, &counts(point, kinds), want) {
                problems.push(format!("{} / {what} / {point}: {p}", v.name));
            }
        }
    }
    (problems, records)
}

/// Every vector through [`check_vector`]: the problems and records checked.
fn check_vectors(wire: &mut Wire, vectors: &[Vector]) -> (Vec<String>, usize) {
    let (mut problems, mut records) = (Vec::new(), 0);
    for v in vectors {
        let (p, r) = check_vector(wire, v);
        problems.extend(p);
        records += r;
    }
    (problems, records)
}

#[test]
fn vectors_through_tx_wire_and_rx_wire() {
    let mut wire = Wire::load(Config::default());
    let vectors = vectors();
    let (problems, records) = check_vectors(&mut wire, &vectors);
    let n = |e| vectors.iter().filter(|v| v.expect == e).count();
    println!(
        "vectors: {} payloads ({} media, {} not media, {} malformed) x IPv4, IPv4 padded to 60, \
         IPv6 x tx_wire, rx_wire = {} runs, {records} records checked field by field, \
         counters and verdicts checked on every run",
        vectors.len(),
        n(Expect::Media),
        n(Expect::NotMedia),
        n(Expect::Malformed),
        vectors.len() * 6,
    );
    fail_on(problems);
}

#[test]
fn vectors_through_rx_wire_at_tc_ingress() {
    let mut wire = Wire::load(Config {
        rx_tc: true,
        ..Config::default()
    });
    let vectors = vectors();
    let (problems, records) = check_vectors(&mut wire, &vectors);
    println!(
        "vectors: {} payloads x 3 frames x tx_wire, rx_wire_tc: {records} records checked \
         field by field, the same as rx_wire's at XDP",
        vectors.len()
    );
    fail_on(problems);
}

/// splitmix64 with a fixed seed: the generated payloads are the same on every
/// run, so a failure names a case that can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Fewer than `n` random bytes.
    fn some_bytes(&mut self, n: usize) -> Vec<u8> {
        let len = self.below(n);
        self.bytes(len)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
}

/// First bytes on both sides of every RFC 7983 range edge.
const FIRST_BYTE_EDGES: [u8; 16] = [
    0, 1, 3, 4, 19, 20, 63, 64, 79, 80, 127, 128, 191, 192, 254, 255,
];

/// A payload as TURN would carry it: RTP, RTCP, DTLS, STUN or other, short
/// or long, so the prefix read and every class boundary are reached.
fn inner_payload(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(24),
        1 => 60 + rng.below(10),
        _ => rng.below(1200),
    };
    let mut p = rng.bytes(len);
    if let Some(b) = p.first_mut() {
        *b = rng.pick(&FIRST_BYTE_EDGES);
    }
    if p.len() >= 2 && rng.below(3) == 0 {
        p[1] = rng.pick(&[191, 192, 200, 223, 224]);
    }
    if p.len() >= 8 && p[0] <= 3 && rng.below(2) == 0 {
        p[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
    }
    p
}

/// A declared length: exact most of the time, else just off.
fn skew(rng: &mut Rng, len: usize) -> u16 {
    let d = if rng.below(4) == 0 {
        rng.pick(&[1, 2, 3, 4, 8, -1, -4, -8])
    } else {
        0
    };
    (len as i64 + d).clamp(0, 0xffff) as u16
}

/// One STUN/TURN message: Binding or Send/Data indication with up to 20
/// attributes, DATA among them sometimes, lengths sometimes wrong.
fn stun_message(rng: &mut Rng) -> Vec<u8> {
    let mut attrs = Vec::new();
    for _ in 0..rng.below(21) {
        let data = rng.below(4) == 0;
        let value = if data {
            inner_payload(rng)
        } else {
            rng.some_bytes(25)
        };
        let kind: u16 = if data {
            0x0013
        } else {
            rng.pick(&[0x0012, 0x000d, 0x8028, 0x0006, 0x1300])
        };
        attrs.extend(kind.to_be_bytes());
        attrs.extend(skew(rng, value.len()).to_be_bytes());
        attrs.extend(&value);
        attrs.resize(attrs.len().next_multiple_of(4), 0);
    }
    let kind: u16 = rng.pick(&[0x0001, 0x0101, 0x0016, 0x0017, 0x0016, 0x0017]);
    let mut p = kind.to_be_bytes().to_vec();
    p.extend(skew(rng, attrs.len()).to_be_bytes());
    p.extend(0x2112_a442u32.to_be_bytes());
    p.extend(rng.bytes(12));
    p.extend(attrs);
    p
}

fn generated_payload(rng: &mut Rng) -> Vec<u8> {
    let mut p = match rng.below(4) {
        0 => {
            let inner = inner_payload(rng);
            let mut p = (0x4000 + rng.below(0x1000) as u16).to_be_bytes().to_vec();
            p.extend(skew(rng, inner.len()).to_be_bytes());
            p.extend(inner);
            p
        }
        1 => stun_message(rng),
        2 => inner_payload(rng),
        _ => rng.some_bytes(100),
    };
    // Trailing bytes (padding) or a cut, now and then.
    match rng.below(8) {
        0 => p.extend(rng.some_bytes(9)),
        1 => p.truncate(rng.below(p.len() + 1)),
        _ => {}
    }
    // A datagram fits a 1500-byte MTU (and the skb test run takes about a page).
    p.truncate(1400);
    p
}

#[test]
fn generated_payloads_agree_with_the_rust_twin() {
    const CASES: usize = 3000;
    let mut wire = Wire::load(Config::default());
    let mut rng = Rng(0x646d_7263_7465_7374);
    let (mut problems, mut records) = (Vec::new(), 0);
    let mut seen = [0; 3];
    let mut framings = [0; 4];
    for i in 0..CASES {
        let v = Vector::parsed(format!("generated #{i}"), &generated_payload(&mut rng));
        seen[v.expect as usize] += 1;
        if let Some(f) = v.framing {
            framings[usize::from(f.code())] += 1;
        }
        let (p, r) = check_vector(&mut wire, &v);
        if !p.is_empty() {
            problems.push(format!("{} payload {}", v.name, v.udp_payload_hex));
        }
        problems.extend(p);
        records += r;
    }
    println!(
        "differential: {CASES} generated payloads ({} media: {} bare, {} channel_data, {} send, \
         {} data; {} not media; {} malformed, by demarc-proto) x 3 frames x tx_wire, rx_wire: \
         C agrees with the Rust twin, {records} records checked field by field",
        seen[Expect::Media as usize],
        framings[0],
        framings[1],
        framings[2],
        framings[3],
        seen[Expect::NotMedia as usize],
        seen[Expect::Malformed as usize],
    );
    fail_on(problems);
}

/// An RTP packet, the payload of the frame-level cases.
fn rtp_vector() -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == "rtp_header_only_12")
        .expect("vector rtp_header_only_12")
}

/// A crafted frame: name, bytes, the counters it must move at the point it
/// runs through, and the tuple of the record it must write (none when `None`).
type Case<'a> = (&'a str, Vec<u8>, &'a [u32], Option<&'a Tuple>);

#[test]
fn frame_level_cases() {
    let mut wire = Wire::load(Config::default());
    let v = rtp_vector();
    let payload = unhex(&v.udp_payload_hex);
    let good4 = ipv4_frame(&V4, &payload, &[]);
    let good6 = ipv6_frame(&V6, &payload);
    let l3 = |off: usize| ETH_LEN + off;
    let udp4 = |off: usize| ETH_LEN + IPV4_LEN + off;
    let with = |frame: &[u8], at: usize, bytes: &[u8]| {
        let mut f = frame.to_vec();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    let truncated = |frame: &[u8], len: usize| frame[..len].to_vec();
    let vlan = {
        // 802.1Q tag (VLAN 100) in front of the IPv4 ethertype.
        let mut f = good4[..12].to_vec();
        f.extend([0x81, 0x00, 0x00, 0x64]);
        f.extend(&good4[12..]);
        f
    };
    let arp = ethernet(
        0x0806,
        &[
            0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0xa, 10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 1, 2,
        ],
    );
    let hop_by_hop = {
        // Next header 0 (hop-by-hop options, 8 bytes of PadN) in front of UDP.
        let mut f = with(&good6, l3(6), &[0]);
        f[l3(4)..l3(6)].copy_from_slice(&((UDP_LEN + payload.len() + 8) as u16).to_be_bytes());
        let ext = [IPPROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
        f.splice(ETH_LEN + IPV6_LEN..ETH_LEN + IPV6_LEN, ext);
        f
    };
    let udp_len = UDP_LEN + payload.len();
    let recorded: &[u32] = &[abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED];
    let parse_fail: &[u32] = &[abi::CNT_PARSE_FAIL];
    let nothing: &[u32] = &[];
    let cases: Vec<Case> = vec![
        // Positive controls, so each case below fails for the reason it names.
        ("IPv4 + UDP + RTP", good4.clone(), recorded, Some(&V4)),
        ("IPv6 + UDP + RTP", good6.clone(), recorded, Some(&V6)),
        (
            "IPv4 with 4 bytes of options",
            ipv4_frame(&V4, &payload, &[1, 1, 1, 0]),
            recorded,
            Some(&V4),
        ),
        (
            "IPv4 don't-fragment bit set",
            with(&good4, l3(6), &[0x40, 0]),
            recorded,
            Some(&V4),
        ),
        (
            "UDP length shorter than the frame (trailing bytes)",
            [good4.as_slice(), &[0xee; 9]].concat(),
            recorded,
            Some(&V4),
        ),
        // Not unfragmented UDP over IPv4/IPv6 without extension headers: skipped, not counted.
        (
            "IPv4 IHL 4 (< 20 bytes)",
            with(&good4, l3(0), &[0x44]),
            nothing,
            None,
        ),
        (
            "IPv4 first fragment (MF)",
            with(&good4, l3(6), &[0x20, 0]),
            nothing,
            None,
        ),
        (
            "IPv4 later fragment (offset 8)",
            with(&good4, l3(6), &[0, 1]),
            nothing,
            None,
        ),
        (
            "IPv4 TCP",
            with(&good4, l3(9), &[IPPROTO_TCP]),
            nothing,
            None,
        ),
        (
            "IPv6 TCP",
            with(&good6, l3(6), &[IPPROTO_TCP]),
            nothing,
            None,
        ),
        (
            "IPv6 hop-by-hop header before UDP",
            hop_by_hop,
            nothing,
            None,
        ),
        ("802.1Q VLAN-tagged IPv4", vlan, nothing, None),
        ("ARP", arp, nothing, None),
        // UDP header present but broken: counted as parse failure.
        (
            "UDP header truncated to 4 bytes",
            truncated(&good4, udp4(4)),
            parse_fail,
            None,
        ),
        (
            "UDP length 1 past the frame",
            with(&good4, udp4(4), &((udp_len + 1) as u16).to_be_bytes()),
            parse_fail,
            None,
        ),
        (
            "UDP length 0xffff",
            with(&good4, udp4(4), &[0xff, 0xff]),
            parse_fail,
            None,
        ),
        (
            "UDP length 7 (< header)",
            with(&good4, udp4(4), &[0, 7]),
            parse_fail,
            None,
        ),
        (
            "IPv6 UDP length 1 past the frame",
            with(
                &good6,
                ETH_LEN + IPV6_LEN + 4,
                &((udp_len + 1) as u16).to_be_bytes(),
            ),
            parse_fail,
            None,
        ),
    ];
    // The kernel's skb test run refuses (EINVAL) frames of Ethernet header
    // length or less, and IPv4/IPv6 ethertypes without a whole base header;
    // the walk is the same inline code at both points, so XDP covers these.
    let xdp_only: Vec<Case> = vec![
        (
            "Ethernet header only",
            truncated(&good4, ETH_LEN),
            nothing,
            None,
        ),
        (
            "IPv4 header truncated to 10 bytes",
            truncated(&good4, l3(10)),
            nothing,
            None,
        ),
        (
            "IPv6 header truncated to 30 bytes",
            truncated(&good6, l3(30)),
            nothing,
            None,
        ),
    ];
    let mut problems = Vec::new();
    let runs = cases
        .iter()
        .map(|c| (c, &WIRE[..]))
        .chain(xdp_only.iter().map(|c| (c, &[Point::RxWire][..])));
    for ((name, frame, kinds, tuple), points) in runs {
        for &point in points {
            let want = tuple.map(|t| wire.expected(point, t, &v));
            let run = wire.run(point, frame);
            for p in check(&run, &counts(point, kinds), want) {
                problems.push(format!("{name} / {point}: {p}"));
            }
        }
    }
    let n = |k: &[u32]| cases.iter().chain(&xdp_only).filter(|c| c.2 == k).count();
    println!(
        "frame level: {} crafted frames x tx_wire, rx_wire and {} more x rx_wire only: \
         verdicts, records and counters ({} recorded, {} skipped uncounted, {} parse_fail)",
        cases.len(),
        xdp_only.len(),
        n(recorded),
        n(nothing),
        n(parse_fail),
    );
    fail_on(problems);
}

#[test]
fn sample_threshold_zero_counts_media_but_records_nothing() {
    let mut wire = Wire::load(Config {
        sample_threshold: 0,
        ..Config::default()
    });
    let mut problems = Vec::new();
    let media: Vec<Vector> = vectors()
        .into_iter()
        .filter(|v| v.expect == Expect::Media)
        .collect();
    for v in &media {
        let frame = ipv4_frame(&V4, &unhex(&v.udp_payload_hex), &[]);
        for point in WIRE {
            let run = wire.run(point, &frame);
            let want = counts(point, &[abi::CNT_SEEN, abi::CNT_MEDIA]);
            for p in check(&run, &want, None) {
                problems.push(format!("{} / {point}: {p}", v.name));
            }
        }
    }
    println!(
        "sampling: threshold 0, {} media payloads x tx_wire, rx_wire: seen and media counted, \
         nothing recorded",
        media.len()
    );
    fail_on(problems);
}

#[test]
fn sample_threshold_is_a_strict_upper_bound_on_the_key() {
    let v = rtp_vector();
    let key = u64::from_str_radix(v.key.as_deref().unwrap(), 16).unwrap();
    let frame = ipv4_frame(&V4, &unhex(&v.udp_payload_hex), &[]);
    let mut problems = Vec::new();
    for (threshold, sampled) in [(key >> 32, false), ((key >> 32) + 1, true)] {
        assert_eq!(demarc_proto::is_sampled(key, threshold), sampled);
        let mut wire = Wire::load(Config {
            sample_threshold: threshold,
            ..Config::default()
        });
        for point in WIRE {
            let run = wire.run(point, &frame);
            let (kinds, want): (&[u32], _) = if sampled {
                (
                    &[abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED],
                    Some(wire.expected(point, &V4, &v)),
                )
            } else {
                (&[abi::CNT_SEEN, abi::CNT_MEDIA], None)
            };
            for p in check(&run, &counts(point, kinds), want) {
                problems.push(format!("threshold {threshold:#x} / {point}: {p}"));
            }
        }
    }
    println!(
        "sampling: threshold key>>32 drops the packet, key>>32 + 1 records it, \
         as demarc_proto::is_sampled"
    );
    fail_on(problems);
}

#[test]
fn port_range_scopes_the_wire_points() {
    let v = rtp_vector();
    let frame = ipv4_frame(&V4, &unhex(&v.udp_payload_hex), &[]);
    let mut problems = Vec::new();
    let ranges = [
        ("excludes both ports", 1000, 2000, false),
        ("below both ports", 0, V4.dport - 1, false),
        ("above both ports", V4.sport + 1, u16::MAX, false),
        ("holds only the destination port", V4.dport, V4.dport, true),
        ("holds only the source port", V4.sport, V4.sport, true),
    ];
    for (what, port_lo, port_hi, in_scope) in ranges {
        let mut wire = Wire::load(Config {
            port_lo,
            port_hi,
            ..Config::default()
        });
        for point in WIRE {
            let run = wire.run(point, &frame);
            let (kinds, want): (&[u32], _) = if in_scope {
                (
                    &[abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED],
                    Some(wire.expected(point, &V4, &v)),
                )
            } else {
                (&[], None)
            };
            for p in check(&run, &counts(point, kinds), want) {
                problems.push(format!("ports {port_lo}-{port_hi} ({what}) / {point}: {p}"));
            }
        }
    }
    println!(
        "ports: {} ranges x tx_wire, rx_wire: out of range nothing counted or recorded, \
         either port in range records",
        ranges.len()
    );
    fail_on(problems);
}

#[test]
fn mono_clock_stamps_with_the_monotonic_clock() {
    let v = rtp_vector();
    let frame = ipv6_frame(&V6, &unhex(&v.udp_payload_hex));
    let mut wire = Wire::load(Config {
        clock: abi::CLOCK_MONO,
        ..Config::default()
    });
    let mut problems = Vec::new();
    for point in WIRE {
        let want = wire.expected(point, &V6, &v);
        let run = wire.run(point, &frame);
        let want_counts = counts(point, &[abi::CNT_SEEN, abi::CNT_MEDIA, abi::CNT_RECORDED]);
        for p in check(&run, &want_counts, Some(want)) {
            problems.push(format!("{point}: {p}"));
        }
    }
    println!("clock: cfg_clock mono stamps within CLOCK_MONOTONIC around the run (tai elsewhere)");
    fail_on(problems);
}
