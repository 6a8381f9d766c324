//! Reading kernel records from the BPF ring buffer without blocking the runtime
//! (aya 0.14 has no async ring buffer: its fd is polled through AsyncFd).

use aya::maps::{Map, MapData, RingBuf};
use demarc_ebpf::abi;
use tokio::io::{unix::AsyncFd, Interest};

use crate::{Error, Result};

pub struct RecordReader {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Items shorter than a record: an agent/kernel ABI mismatch.
    pub short_items: u64,
}

impl RecordReader {
    pub fn new(map: Map) -> Result<Self> {
        let ring = RingBuf::try_from(map)?;
        // SAFETY: RingBuf owns its map fd for its whole life and always
        // returns that same fd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::Io(e.into()))?;
        Ok(Self {
            ring,
            short_items: 0,
        })
    }

    /// Waits until records are available, then appends all of them to `out`.
    pub async fn read(&mut self, out: &mut Vec<abi::Record>) -> Result<()> {
        let mut guard = self.ring.readable_mut().await.map_err(Error::Io)?;
        let short = drain_into(guard.get_inner_mut(), out);
        guard.clear_ready();
        self.short_items += short;
        Ok(())
    }

    /// Appends what is available now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<abi::Record>) {
        self.short_items += drain_into(self.ring.get_mut(), out);
    }
}

fn drain_into(ring: &mut RingBuf<MapData>, out: &mut Vec<abi::Record>) -> u64 {
    let mut short = 0;
    while let Some(item) = ring.next() {
        match abi::Record::from_bytes(&item) {
            Some(r) => out.push(r),
            None => short += 1,
        }
    }
    short
}
