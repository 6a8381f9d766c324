//! What the BPF_PROG_TEST_RUN tests share: the privilege check, crafted
//! frames (checksums computed from scratch, independently of the programs),
//! the records and counters the programs should leave, and clocks.
#![allow(dead_code)] // each test binary uses a different part

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::MetadataExt;

use aya::maps::{MapData, PerCpuArray, RingBuf};
use demarc_ebpf::abi::{self, Record};
use demarc_proto::vectors::Vector;
use demarc_proto::Point;

pub const XDP_PASS: u32 = 2;

pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_TCP: u8 = 6;

/// Destination and source MAC of frames that do not name theirs.
pub const MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0, 0xb], [0x02, 0, 0, 0, 0, 0xa]];

/// Panics (does not skip) without root, so a CI run that lost its
/// privileges fails instead of passing empty.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{what} needs root (BPF); run it as root, as CI does"
    );
}

/// Inode of the calling thread's network namespace (the records' netns).
pub fn netns_inode() -> u32 {
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat /proc/thread-self/ns/net")
        .ino() as u32
}

/// Index of device `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: the argument is a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(i, 0, "no device {name:?}");
    i
}

/// A reading of the clock the programs stamp with (`abi::CLOCK_*`).
pub fn clock_ns(clock: u32) -> u64 {
    let id = if clock == abi::CLOCK_MONO {
        libc::CLOCK_MONOTONIC
    } else {
        libc::CLOCK_TAI
    };
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    assert_eq!(unsafe { libc::clock_gettime(id, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Addresses and ports of a crafted frame, as a record should carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn v4(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tuple {
        Tuple {
            src: src.into(),
            dst: dst.into(),
            sport,
            dport,
        }
    }

    pub fn family(&self) -> u8 {
        if self.src.is_ipv4() {
            4
        } else {
            6
        }
    }

    /// The record's 16-byte address field: IPv4 in the first 4 bytes.
    pub fn field(ip: IpAddr) -> [u8; 16] {
        let mut out = [0; 16];
        match ip {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out = a.octets(),
        }
        out
    }

    /// UDP header and payload, checksum 0 (none).
    pub fn udp(&self, payload: &[u8]) -> Vec<u8> {
        let mut udp = Vec::with_capacity(UDP_LEN + payload.len());
        udp.extend(self.sport.to_be_bytes());
        udp.extend(self.dport.to_be_bytes());
        udp.extend(((UDP_LEN + payload.len()) as u16).to_be_bytes());
        udp.extend([0, 0]);
        udp.extend(payload);
        udp
    }
}

/// The Internet checksum (RFC 1071) of `parts`, one after the other, each
/// of even length but the last.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in parts.concat().chunks(2) {
        sum += u64::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ethernet_with(macs: [[u8; 6]; 2], ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = macs.concat();
    f.extend(ethertype.to_be_bytes());
    f.extend(body);
    f
}

pub fn ethernet(ethertype: u16, body: &[u8]) -> Vec<u8> {
    ethernet_with(MACS, ethertype, body)
}

/// An Ethernet + IPv4 + UDP frame; the IPv4 header checksum is always
/// right, the UDP one right or 0 (none).
#[derive(Debug, Clone)]
pub struct Ipv4Udp {
    pub macs: [[u8; 6]; 2],
    pub tuple: Tuple,
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset.
    pub frag: u16,
    pub ttl: u8,
    /// A multiple of 4 bytes.
    pub options: Vec<u8>,
    pub udp_checksum: bool,
    pub payload: Vec<u8>,
}

impl Ipv4Udp {
    pub fn new(tuple: Tuple, payload: &[u8]) -> Ipv4Udp {
        Ipv4Udp {
            macs: MACS,
            tuple,
            tos: 0,
            id: 0x1234,
            frag: 0,
            ttl: 64,
            options: Vec::new(),
            udp_checksum: false,
            payload: payload.to_vec(),
        }
    }

    fn addrs(&self) -> (Ipv4Addr, Ipv4Addr) {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.tuple.src, self.tuple.dst) else {
            panic!("an IPv4 frame needs an IPv4 tuple");
        };
        (src, dst)
    }

    /// The UDP checksum as computed, before a 0 is sent as 0xffff.
    pub fn computed_udp_checksum(&self) -> u16 {
        let (src, dst) = self.addrs();
        let udp = self.tuple.udp(&self.payload);
        let pseudo = [
            &src.octets()[..],
            &dst.octets(),
            &[0, IPPROTO_UDP],
            &(udp.len() as u16).to_be_bytes(),
        ]
        .concat();
        checksum(&[&pseudo, &udp])
    }

    pub fn frame(&self) -> Vec<u8> {
        let (src, dst) = self.addrs();
        let mut udp = self.tuple.udp(&self.payload);
        if self.udp_checksum {
            let c = match self.computed_udp_checksum() {
                0 => 0xffff, // 0 would mean "no checksum"
                c => c,
            };
            udp[6..8].copy_from_slice(&c.to_be_bytes());
        }
        let ihl = IPV4_LEN + self.options.len();
        let mut ip = vec![0x40 | (ihl / 4) as u8, self.tos];
        ip.extend(((ihl + udp.len()) as u16).to_be_bytes());
        ip.extend(self.id.to_be_bytes());
        ip.extend(self.frag.to_be_bytes());
        ip.extend([self.ttl, IPPROTO_UDP, 0, 0]);
        ip.extend(src.octets());
        ip.extend(dst.octets());
        ip.extend(&self.options);
        let c = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend(udp);
        ethernet_with(self.macs, ETH_P_IP, &ip)
    }
}

/// Ethernet + IPv4 (with `options`, a multiple of 4 bytes) + UDP without
/// a UDP checksum (the parser never reads checksums; veth offloads them).
pub fn ipv4_frame(t: &Tuple, payload: &[u8], options: &[u8]) -> Vec<u8> {
    Ipv4Udp {
        options: options.to_vec(),
        ..Ipv4Udp::new(*t, payload)
    }
    .frame()
}

/// Ethernet + IPv6 + UDP.
pub fn ipv6_frame(t: &Tuple, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (t.src, t.dst) else {
        panic!("ipv6_frame needs an IPv6 tuple");
    };
    let udp = t.udp(payload);
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend((udp.len() as u16).to_be_bytes());
    ip.extend([IPPROTO_UDP, 64]);
    ip.extend(src.octets());
    ip.extend(dst.octets());
    ip.extend(udp);
    ethernet(ETH_P_IPV6, &ip)
}

/// The record `point` must write for a payload carried in `t`, with the
/// parse results of `v`; ts_ns is left 0, for the caller to check.
pub fn expected_record(point: Point, t: &Tuple, v: &Vector, netns: u32, ifindex: u32) -> Record {
    Record {
        key: u64::from_str_radix(v.key.as_deref().expect("media vector has a key"), 16)
            .expect("key is hex"),
        ts_ns: 0,
        netns,
        ifindex,
        payload_len: v.payload_len.expect("payload_len"),
        wire_len: v.wire_len.expect("wire_len"),
        ssrc: v.ssrc.unwrap_or(0),
        tgid: 0,
        seq: v.seq.unwrap_or(0),
        channel: v.channel.unwrap_or(0),
        stun_type: v.stun_type.unwrap_or(0),
        sport: t.sport,
        dport: t.dport,
        point: point.code(),
        framing: v.framing.expect("framing").code(),
        class: v.class.expect("class").code(),
        family: t.family(),
        _pad0: [0; 2],
        stun_txid: v
            .stun_txid
            .as_deref()
            .map(|s| unhex(s).try_into().expect("stun_txid is 12 bytes"))
            .unwrap_or_default(),
        saddr: Tuple::field(t.src),
        daddr: Tuple::field(t.dst),
        _pad1: [0; 4],
    }
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

pub fn field_diffs(got: &Record, want: &Record) -> Vec<String> {
    let mut out = Vec::new();
    macro_rules! cmp {
        ($($f:ident),+) => {$(
            if got.$f != want.$f {
                out.push(format!("{}: got {:?}, want {:?}", stringify!($f), got.$f, want.$f));
            }
        )+};
    }
    cmp!(
        key,
        ts_ns,
        netns,
        ifindex,
        payload_len,
        wire_len,
        ssrc,
        tgid,
        seq,
        channel,
        stun_type,
        sport,
        dport,
        point,
        framing,
        class,
        family,
        _pad0,
        stun_txid,
        saddr,
        daddr,
        _pad1
    );
    out
}

/// The records waiting in the ring buffer, oldest first.
pub fn drain(events: &mut RingBuf<MapData>) -> Vec<Record> {
    let mut records = Vec::new();
    while let Some(item) = events.next() {
        records.push(Record::from_bytes(&item).expect("ring buffer item is a whole record"));
    }
    records
}

/// Every entry of a per-CPU array, summed over CPUs.
pub fn sums(map: &PerCpuArray<MapData, u64>) -> Vec<u64> {
    map.iter()
        .map(|v| v.expect("read a per-CPU entry").iter().sum())
        .collect()
}

/// Element-wise `after - before`.
pub fn deltas(after: &[u64], before: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Every counter's expected change: `kinds` at `point`, nothing anywhere else.
pub fn counts(point: Point, kinds: &[u32]) -> Vec<u64> {
    let mut out = vec![0; (abi::POINTS * abi::CNT_KINDS) as usize];
    for &kind in kinds {
        out[abi::counter_index(point.code().into(), kind) as usize] += 1;
    }
    out
}

/// The counters that moved, readable: "point P kind K: +N".
pub fn moved(counts: &[u64]) -> Vec<String> {
    counts
        .iter()
        .enumerate()
        .filter(|(_, &n)| n != 0)
        .map(|(i, n)| {
            let i = i as u32;
            format!(
                "point {} kind {}: +{n}",
                i / abi::CNT_KINDS,
                i % abi::CNT_KINDS
            )
        })
        .collect()
}

pub fn fail_on(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
