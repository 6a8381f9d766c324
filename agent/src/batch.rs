//! Collecting records into ingest batches with stable, never-reused ids.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use demarc_proto::ingest::{Batch, ClockState, Health, ProbeInfo, Record, API_VERSION};

/// A batch closes at this many records...
pub const MAX_RECORDS: usize = 1_000;
/// ...or when its first record is this old.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Sequence numbers reserved on disk at a time, so a crash never reuses one.
const SEQ_BLOCK: u64 = 100_000;

/// The probe's persistent identity and batch sequence, in its state directory.
pub struct Identity {
    pub id: String,
    seq_file: PathBuf,
    next: u64,
    reserved_until: u64,
}

impl Identity {
    pub fn load_or_create(state_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(state_dir)?;
        let id_file = state_dir.join("probe-id");
        let id = match fs::read_to_string(&id_file) {
            Ok(s) if s.trim().len() == 16 && s.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                s.trim().to_ascii_lowercase()
            }
            _ => {
                let mut bytes = [0u8; 8];
                fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
                let id = format!("{:016x}", u64::from_le_bytes(bytes));
                write_atomic(&id_file, id.as_bytes())?;
                id
            }
        };
        let seq_file = state_dir.join("next-batch-seq");
        let next = fs::read_to_string(&seq_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let mut identity = Self {
            id,
            seq_file,
            next,
            reserved_until: next,
        };
        identity.reserve()?;
        Ok(identity)
    }

    fn reserve(&mut self) -> io::Result<()> {
        self.reserved_until = self.next + SEQ_BLOCK;
        write_atomic(&self.seq_file, self.reserved_until.to_string().as_bytes())
    }

    fn next_seq(&mut self) -> io::Result<u64> {
        if self.next >= self.reserved_until {
            self.reserve()?;
        }
        self.next += 1;
        Ok(self.next - 1)
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, path)
}

pub struct Batcher {
    probe: ProbeInfo,
    identity: Identity,
    records: Vec<Record>,
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(probe: ProbeInfo, identity: Identity) -> Self {
        Self {
            probe: ProbeInfo {
                id: identity.id.clone(),
                ..probe
            },
            identity,
            records: Vec::with_capacity(MAX_RECORDS),
            opened: None,
        }
    }

    pub fn probe(&self) -> &ProbeInfo {
        &self.probe
    }

    pub fn push(&mut self, r: Record) {
        self.opened.get_or_insert_with(Instant::now);
        self.records.push(r);
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= MAX_RECORDS
    }

    pub fn is_due(&self) -> bool {
        self.opened.is_some_and(|t| t.elapsed() >= MAX_AGE)
    }

    /// Closes the current batch (possibly empty: a health/clock heartbeat);
    /// returns its sequence number with it.
    pub fn take(
        &mut self,
        clock: ClockState,
        health: Health,
        now_ns: u64,
    ) -> io::Result<(u64, Batch)> {
        let seq = self.identity.next_seq()?;
        self.opened = None;
        let batch = Batch {
            version: API_VERSION,
            batch_id: format!("{}-{seq:012}", self.probe.id),
            probe: self.probe.clone(),
            sent_at_ns: now_ns,
            clock,
            health,
            records: std::mem::replace(&mut self.records, Vec::with_capacity(MAX_RECORDS)),
        };
        Ok((seq, batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_restarts_and_never_reuses_a_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Identity::load_or_create(dir.path()).unwrap();
        let a = first.next_seq().unwrap();
        let b = first.next_seq().unwrap();
        assert_eq!(b, a + 1);
        // A restart (or crash) continues past everything reserved.
        let mut second = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(second.id, first.id);
        assert!(second.next_seq().unwrap() > b);
    }
}
