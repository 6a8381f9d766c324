//! A bounded on-disk queue of encoded batches that could not be delivered.
//!
//! One file per batch, named `<sequence>-<records>.json` so order and the
//! record count are known without reading it. Past the byte bound the oldest
//! batches are deleted and counted; nothing else is ever dropped.

use std::{
    collections::VecDeque,
    fs, io,
    path::{Path, PathBuf},
};

use demarc_proto::ingest::SpoolStats;

use crate::batch::write_atomic;

struct Entry {
    path: PathBuf,
    bytes: u64,
    records: u64,
}

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    total_bytes: u64,
    dropped_batches: u64,
    dropped_records: u64,
}

impl Spool {
    /// Opens `dir`, picking up batches left by an earlier run.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut found: Vec<(String, Entry)> = Vec::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(records) = name
                .strip_suffix(".json")
                .and_then(|s| s.split_once('-'))
                .and_then(|(_, n)| n.parse().ok())
            else {
                continue;
            };
            let bytes = e.metadata()?.len();
            found.push((
                name,
                Entry {
                    path: e.path(),
                    bytes,
                    records,
                },
            ));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let entries: VecDeque<Entry> = found.into_iter().map(|(_, e)| e).collect();
        Ok(Self {
            dir: dir.into(),
            max_bytes,
            total_bytes: entries.iter().map(|e| e.bytes).sum(),
            entries,
            dropped_batches: 0,
            dropped_records: 0,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            queued_batches: self.entries.len() as u64,
            dropped_batches: self.dropped_batches,
            dropped_records: self.dropped_records,
        }
    }

    /// Appends a batch; evicts the oldest ones if the bound is passed.
    pub fn push(&mut self, seq: u64, records: u64, body: &[u8]) -> io::Result<()> {
        let path = self.dir.join(format!("{seq:012}-{records}.json"));
        write_atomic(&path, body)?;
        let bytes = body.len() as u64;
        self.entries.push_back(Entry {
            path,
            bytes,
            records,
        });
        self.total_bytes += bytes;
        while self.total_bytes > self.max_bytes && self.entries.len() > 1 {
            let old = self.entries.pop_front().expect("len > 1");
            fs::remove_file(&old.path)?;
            self.total_bytes -= old.bytes;
            self.dropped_batches += 1;
            self.dropped_records += old.records;
        }
        Ok(())
    }

    /// The oldest batch: its record count and body.
    pub fn front(&self) -> Option<(u64, io::Result<Vec<u8>>)> {
        self.entries.front().map(|e| (e.records, fs::read(&e.path)))
    }

    /// Removes the oldest batch (delivered, or rejected for good).
    pub fn pop_front(&mut self) -> io::Result<()> {
        if let Some(e) = self.entries.pop_front() {
            self.total_bytes -= e.bytes;
            fs::remove_file(&e.path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_drops_oldest_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 25).unwrap();
        s.push(1, 3, b"0123456789").unwrap();
        s.push(2, 4, b"abcdefghij").unwrap();
        assert_eq!(s.stats().queued_batches, 2);
        s.push(3, 5, b"ABCDEFGHIJ").unwrap(); // 30 bytes > 25: batch 1 goes
        assert_eq!(s.stats().dropped_batches, 1);
        assert_eq!(s.stats().dropped_records, 3);

        let mut again = Spool::open(dir.path(), 25).unwrap();
        assert_eq!(again.front().unwrap().1.unwrap(), b"abcdefghij");
        again.pop_front().unwrap();
        assert_eq!(again.front().unwrap().1.unwrap(), b"ABCDEFGHIJ");
        again.pop_front().unwrap();
        assert!(again.is_empty());
    }
}
