//! The seam for the dwell-time probe: what the TURN server tells about each
//! packet it relays, and where it listens.
//!
//! The eBPF probe sees `relay_in` (XDP) and `relay_out` (tc egress) in the
//! kernel; with the userspace times reported here it can split the relay's
//! dwell into kernel-in | TURN userspace | kernel-out (DESIGN.md §1). Times
//! are CLOCK_TAI nanoseconds, the clock `bpf_ktime_get_tai_ns()` reads, so the
//! two sides compare without conversion; `payload` is the inner payload the
//! packet key is computed over.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::turn::{FiveTuple, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → relay → peer.
    ToPeer,
    /// Peer → relay → client.
    ToClient,
}

/// One relayed packet, as the server handled it.
#[derive(Debug, Clone, Copy)]
pub struct Relayed<'a> {
    pub direction: Direction,
    pub client: FiveTuple,
    /// The relay socket's local address.
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    /// The inner payload (TURN framing removed).
    pub payload: &'a [u8],
    /// When the server's receive call returned.
    pub recv_tai_ns: u64,
    /// When the server's send call returned.
    pub send_tai_ns: u64,
}

/// Where the server is reachable: a probe attaches to these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub listeners: Vec<(Transport, SocketAddr)>,
    pub relay_ips: Vec<IpAddr>,
    pub relay_ports: RangeInclusive<u16>,
}

/// Consumes the server's per-packet reports. Called on the I/O path, so an
/// implementation must not block: count, or hand off to a bounded queue.
pub trait PacketObserver: Send + Sync {
    /// Once, after every listener is bound.
    fn started(&self, _endpoints: &Endpoints) {}
    fn relayed(&self, packet: &Relayed<'_>);
}

/// CLOCK_TAI now, in nanoseconds.
pub fn tai_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_TAI exists since Linux 3.10.
    unsafe { libc::clock_gettime(libc::CLOCK_TAI, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
