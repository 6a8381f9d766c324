//! sendmmsg/recvmmsg on a connected UDP socket: the load generator sends
//! and receives in batches so that one core can outrun the server.

use std::io;
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 64;

/// `BATCH` fixed-size slots of one buffer, and the length used in each.
pub struct Slots {
    data: Vec<u8>,
    slot: usize,
    lens: [usize; BATCH],
}

impl Slots {
    pub fn new(slot: usize) -> Self {
        Self {
            data: vec![0; slot * BATCH],
            slot,
            lens: [0; BATCH],
        }
    }

    /// Slot `i`, whole, to fill before [`send`].
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * self.slot..(i + 1) * self.slot]
    }

    pub fn set_len(&mut self, i: usize, len: usize) {
        self.lens[i] = len.min(self.slot);
    }

    /// What [`recv`] put in slot `i`.
    pub fn received(&self, i: usize) -> &[u8] {
        &self.data[i * self.slot..i * self.slot + self.lens[i]]
    }

    /// Runs one mmsg call over the first `n` slots: with `lens` as lengths
    /// (send) or whole slots (receive, lengths written back).
    fn call(
        &mut self,
        n: usize,
        whole: bool,
        f: impl FnOnce(*mut libc::mmsghdr, u32) -> libc::c_int,
    ) -> io::Result<usize> {
        let n = n.min(BATCH);
        let base = self.data.as_mut_ptr();
        let mut iovs: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: an all-zero mmsghdr is valid (null name and control).
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                // SAFETY: slot i lies inside `data`.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: if whole { self.slot } else { self.lens[i] },
            };
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let done = f(hdrs.as_mut_ptr(), n as u32);
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        let done = done as usize;
        if whole {
            for (len, hdr) in self.lens.iter_mut().zip(&hdrs[..done]) {
                *len = hdr.msg_len as usize;
            }
        }
        Ok(done)
    }
}

/// Sends slots `0..n` (their set lengths); returns how many went.
pub fn send(socket: &impl AsRawFd, slots: &mut Slots, n: usize) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    // SAFETY: the headers point into `slots` and live across the call.
    slots.call(n, false, |hdrs, len| unsafe {
        libc::sendmmsg(fd, hdrs, len, libc::MSG_DONTWAIT)
    })
}

/// Receives up to `BATCH` datagrams without waiting; returns how many.
pub fn recv(socket: &impl AsRawFd, slots: &mut Slots) -> io::Result<usize> {
    let fd = socket.as_raw_fd();
    // SAFETY: as in `send`; the kernel writes at most `slot` bytes per slot.
    slots.call(BATCH, true, |hdrs, len| unsafe {
        libc::recvmmsg(fd, hdrs, len, libc::MSG_DONTWAIT, std::ptr::null_mut())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_goes_and_comes_back_whole() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let mut out = Slots::new(64);
        for i in 0..10 {
            out.slot_mut(i)[..3].copy_from_slice(&[i as u8; 3]);
            out.set_len(i, 1 + i % 3);
        }
        assert_eq!(send(&a, &mut out, 10).unwrap(), 10);
        let mut got = Slots::new(64);
        let mut seen = Vec::new();
        while seen.len() < 10 {
            match recv(&b, &mut got) {
                Ok(n) => seen.extend((0..n).map(|i| got.received(i).to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        let want: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; 1 + i % 3]).collect();
        assert_eq!(seen, want);
        assert_eq!(
            recv(&b, &mut got).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
