//! Batched UDP I/O for the data path: `recvmmsg` into reused slots, then
//! `sendmmsg` of the outgoing datagrams grouped by the socket they leave on.
//!
//! Receiving goes through `nix`'s `recvmmsg` (no allocation per call, source
//! addresses decoded). Sending calls `libc::sendmmsg` directly: `nix`'s
//! `sendmmsg` reports how many went out only through an iterator that reads
//! its never-written receive-address slots, which is unsound.
//!
//! One [`Batch`] per worker thread ([`with`]), not per socket: every slot
//! holds a maximal datagram, so a batch per allocation would cost megabytes
//! per allocation. A batch is borrowed only between two awaits.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::RawFd;

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::framing::CHANNEL_HEADER;
use crate::turn::FiveTuple;

/// Datagrams per system call. Past ~32 the per-call cost is already
/// negligible next to the per-datagram cost.
pub const BATCH: usize = 32;
/// Largest UDP payload (65507 for IPv4, 65527 for IPv6), rounded up.
pub const UDP_MAX: usize = 65536;
/// A slot: room for the ChannelData header in front of the datagram and for
/// stream padding behind it, so framing happens in place.
const SLOT: usize = CHANNEL_HEADER + UDP_MAX + 3;
const UNSPECIFIED: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// A datagram to send from the batch buffer, and what its report needs.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Local address of the socket it leaves on: what batches group by.
    pub via: SocketAddr,
    pub to: SocketAddr,
    /// The bytes to send and the inner payload, as ranges of the buffer.
    pub frame: Range<usize>,
    pub payload: Range<usize>,
    pub client: FiveTuple,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

pub struct Batch {
    buf: Box<[u8]>,
    /// One set per address family, IPv4 first: `nix` leaves the address
    /// length the kernel wrote in the reused headers, and an IPv4 source's
    /// 16 bytes would cut the next IPv6 source short.
    headers: [MultiHeaders<SockaddrStorage>; 2],
    /// Length and source of each datagram the last [`Batch::recv`] got.
    received: Vec<(usize, SocketAddr)>,
}

thread_local! {
    static BATCH_BUF: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's batch. `f` must not call `with` again.
pub fn with<R>(f: impl FnOnce(&mut Batch) -> R) -> R {
    BATCH_BUF.with_borrow_mut(|batch| f(batch.get_or_insert_with(Batch::new)))
}

impl Batch {
    fn new() -> Self {
        Self {
            // Zeroed pages come from mmap and stay unbacked until a datagram
            // this large lands in them.
            buf: vec![0; BATCH * SLOT].into_boxed_slice(),
            headers: [
                MultiHeaders::preallocate(BATCH, None),
                MultiHeaders::preallocate(BATCH, None),
            ],
            received: Vec::with_capacity(BATCH),
        }
    }

    /// One non-blocking `recvmmsg` on a socket bound to `local` (whose
    /// family its peers share: IPv6 sockets are IPv6-only); returns how many
    /// datagrams arrived (`WouldBlock` when none). Each lands at its slot's
    /// `CHANNEL_HEADER`.
    pub fn recv(&mut self, fd: RawFd, local: SocketAddr) -> io::Result<usize> {
        let mut slots = self.buf.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] = std::array::from_fn(|_| {
            let slot = slots.next().expect("the buffer has BATCH slots");
            [IoSliceMut::new(
                &mut slot[CHANNEL_HEADER..CHANNEL_HEADER + UDP_MAX],
            )]
        });
        let got = recvmmsg(
            fd,
            &mut self.headers[usize::from(local.is_ipv6())],
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )?;
        self.received.clear();
        // UDP always has a source; the fallback only keeps slots and indices aligned.
        self.received.extend(got.map(|msg| {
            let from = msg.address.as_ref().and_then(socket_addr);
            (msg.bytes, from.unwrap_or(UNSPECIFIED))
        }));
        Ok(self.received.len())
    }

    /// Datagram `i` of the last receive: length and source.
    pub fn received(&self, i: usize) -> (usize, SocketAddr) {
        self.received[i]
    }

    /// Where datagram `i`'s bytes are in the buffer.
    pub fn payload(&self, i: usize) -> Range<usize> {
        let start = i * SLOT + CHANNEL_HEADER;
        start..start + self.received[i].0
    }

    pub fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Slot `i`, header room included, to frame its datagram in place.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.buf[i * SLOT..(i + 1) * SLOT]
    }

    /// One non-blocking `sendmmsg` of `datagrams` (at most [`BATCH`]) on
    /// `fd`; returns how many went out, at least one. An error belongs to
    /// the first datagram.
    pub fn send(&self, fd: RawFd, datagrams: &[Datagram]) -> io::Result<usize> {
        let n = datagrams.len().min(BATCH);
        let addrs: [socket2::SockAddr; BATCH] =
            std::array::from_fn(|i| datagrams.get(i).map_or(UNSPECIFIED, |d| d.to).into());
        // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers, zero lengths).
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, d) in datagrams[..n].iter().enumerate() {
            let frame = &self.buf[d.frame.clone()];
            iovs[i].iov_base = frame.as_ptr().cast_mut().cast();
            iovs[i].iov_len = frame.len();
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = addrs[i].as_ptr().cast_mut().cast();
            hdr.msg_namelen = addrs[i].len();
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers point at `addrs`, `iovs` and the
        // buffer, which all outlive the call; the kernel only reads them.
        let sent =
            unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}

/// Orders `datagrams` so those leaving on one socket are adjacent, keeping
/// their receive order (the frame offsets grow with it), and returns the
/// groups: one `sendmmsg` series each.
pub fn group(datagrams: &mut [Datagram]) -> impl Iterator<Item = &[Datagram]> {
    datagrams.sort_unstable_by_key(|d| (d.via, d.frame.start));
    datagrams.chunk_by(|a, b| a.via == b.via)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::Transport;

    fn datagram(via: u16, slot: usize) -> Datagram {
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let start = slot * SLOT + CHANNEL_HEADER;
        Datagram {
            via: addr(via),
            to: addr(9),
            frame: start..start + 10,
            payload: start..start + 10,
            client: FiveTuple {
                transport: Transport::Udp,
                local: addr(3478),
                remote: addr(1),
            },
            relay: addr(via),
            peer: addr(9),
        }
    }

    #[test]
    fn groups_by_socket_in_receive_order() {
        let mut out: Vec<_> = [(2, 0), (1, 1), (2, 2), (1, 3), (3, 4), (2, 5)]
            .into_iter()
            .map(|(via, slot)| datagram(via, slot))
            .collect();
        let groups: Vec<Vec<(u16, usize)>> = group(&mut out)
            .map(|g| {
                g.iter()
                    .map(|d| (d.via.port(), d.frame.start / SLOT))
                    .collect()
            })
            .collect();
        assert_eq!(
            groups,
            vec![
                vec![(1, 1), (1, 3)],
                vec![(2, 0), (2, 2), (2, 5)],
                vec![(3, 4)]
            ]
        );
    }

    #[test]
    fn sends_and_receives_batches() {
        let open = || std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (rx, tx_a, tx_b) = (open(), open(), open());
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        use std::os::fd::AsRawFd;
        let mut batch = Batch::new();
        assert_eq!(
            batch.recv(rx.as_raw_fd(), to).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );

        // Two sources, one recvmmsg; each datagram in its own slot.
        tx_a.send_to(b"first", to).unwrap();
        tx_b.send_to(b"second!", to).unwrap();
        tx_a.send_to(&[7; 1500], to).unwrap();
        assert_eq!(batch.recv(rx.as_raw_fd(), to).unwrap(), 3);
        assert_eq!(batch.received(0), (5, tx_a.local_addr().unwrap()));
        assert_eq!(batch.received(1), (7, tx_b.local_addr().unwrap()));
        assert_eq!(batch.bytes(batch.payload(1)), b"second!");
        assert_eq!(batch.bytes(batch.payload(2)), &[7; 1500]);

        // Echo them back, to two destinations in one sendmmsg.
        let back: Vec<Datagram> = (0..3)
            .map(|i| {
                let (_, from) = batch.received(i);
                Datagram {
                    to: from,
                    frame: batch.payload(i),
                    ..datagram(to.port(), i)
                }
            })
            .collect();
        assert_eq!(batch.send(rx.as_raw_fd(), &back).unwrap(), 3);
        let mut buf = [0; 2000];
        assert_eq!(tx_a.recv(&mut buf).unwrap(), 5);
        assert_eq!(tx_a.recv(&mut buf).unwrap(), 1500);
        assert_eq!(tx_b.recv(&mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"second!");

        // The same batch on an IPv6 socket after IPv4 sources: the whole
        // source address comes through.
        let rx6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let tx6 = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let to6 = rx6.local_addr().unwrap();
        tx6.send_to(b"v6", to6).unwrap();
        assert_eq!(batch.recv(rx6.as_raw_fd(), to6).unwrap(), 1);
        assert_eq!(batch.received(0), (2, tx6.local_addr().unwrap()));
    }
}
