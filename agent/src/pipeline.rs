//! The probe's main loop: ring buffer → UTC records → batches → outputs, and
//! the orderly stop (detach, drain, flush) on shutdown.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::Ebpf;
use demarc_ebpf::abi;
use demarc_proto::ingest::{Health, SpoolStats};
use tokio::sync::mpsc;

use crate::{
    batch::Batcher,
    clock::{utc_now_ns, Clock},
    decode,
    health::HealthSource,
    ringbuf::RecordReader,
    ship::{Outgoing, Shipper},
    sink::JsonlSink,
    Result,
};

/// A batch with no records still goes out this often, so idle probes report.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The kernel wakes the reader only when its buffer is a quarter full, so
/// records are also collected on this tick.
const TICK: Duration = Duration::from_millis(50);

pub struct Pipeline {
    /// The loaded programs; dropping it detaches them.
    pub ebpf: Ebpf,
    pub reader: RecordReader,
    pub clock: Clock,
    pub health: HealthSource,
    pub batcher: Batcher,
    pub jsonl: Option<JsonlSink>,
    pub console: Option<Shipper>,
}

/// What a run did, for the exit report.
#[derive(Debug, Default)]
pub struct Summary {
    pub records: u64,
    pub batches: u64,
    pub undecodable: u64,
    /// Health at the end, after the final drain.
    pub health: Option<Health>,
}

struct Outputs {
    jsonl: Option<JsonlSink>,
    ship: Option<mpsc::Sender<Outgoing>>,
    spool: Option<Arc<Mutex<SpoolStats>>>,
}

impl Pipeline {
    /// Runs until `shutdown` completes, then detaches the programs, drains the
    /// ring buffer and flushes every output before returning.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<Summary> {
        let Pipeline {
            ebpf,
            mut reader,
            clock,
            health,
            mut batcher,
            jsonl,
            console,
        } = self;
        let (tx, rx) = mpsc::channel(64);
        let mut out = Outputs {
            jsonl,
            spool: console.as_ref().map(Shipper::stats),
            ship: console.is_some().then_some(tx),
        };
        let shipping = console.map(|s| tokio::spawn(s.run(rx)));

        let mut summary = Summary::default();
        let mut raw = Vec::new();
        let mut last_batch = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                r = reader.read(&mut raw) => r?,
                _ = tick.tick() => reader.drain(&mut raw),
            }
            absorb(&mut raw, &clock, &mut batcher, &mut summary);
            if batcher.is_full() || batcher.is_due() || last_batch.elapsed() >= HEARTBEAT {
                flush(&mut batcher, &clock, &health, &mut out, &mut summary).await?;
                last_batch = Instant::now();
            }
        }

        // Detach first, so nothing arrives after the final drain.
        drop(ebpf);
        reader.drain(&mut raw);
        absorb(&mut raw, &clock, &mut batcher, &mut summary);
        flush(&mut batcher, &clock, &health, &mut out, &mut summary).await?;
        summary.undecodable += reader.short_items;
        drop(out.ship);
        if let Some(task) = shipping {
            let _ = task.await;
        }
        Ok(summary)
    }
}

fn absorb(raw: &mut Vec<abi::Record>, clock: &Clock, batcher: &mut Batcher, summary: &mut Summary) {
    for r in raw.drain(..) {
        match decode::to_ingest(&r, clock) {
            Ok(rec) => batcher.push(rec),
            Err(e) => {
                summary.undecodable += 1;
                tracing::warn!(error = %e, "undecodable kernel record");
            }
        }
    }
}

async fn flush(
    batcher: &mut Batcher,
    clock: &Clock,
    health: &HealthSource,
    out: &mut Outputs,
    summary: &mut Summary,
) -> Result<()> {
    let mut h = health.snapshot();
    if let Some(spool) = &out.spool {
        h.spool = *spool.lock().unwrap();
    }
    summary.health = Some(h.clone());
    let (seq, batch) = batcher.take(clock.state(), h, utc_now_ns())?;
    summary.records += batch.records.len() as u64;
    summary.batches += 1;
    if let Some(sink) = &mut out.jsonl {
        sink.write(&batch.records)?;
    }
    if let Some(ship) = &out.ship {
        let body = serde_json::to_vec(&batch).map_err(std::io::Error::other)?;
        let o = Outgoing {
            seq,
            records: batch.records.len() as u64,
            body,
        };
        // The shipper only stops when we drop the sender.
        let _ = ship.send(o).await;
    }
    Ok(())
}
