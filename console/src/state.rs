//! Shared state and the join → store pipeline that runs beside the server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demarc_proto::ingest::Batch;
use sqlx::SqlitePool;

use crate::auth::UiAuth;
use crate::join::{ClockBound, Closed, JoinConfig, JoinStats, Joiner, Obs};
use crate::store::{self, retention::Retention};

#[derive(Debug, Clone)]
pub struct Config {
    pub join: JoinConfig,
    pub retention: Retention,
    pub ui_auth: Option<UiAuth>,
    pub max_body_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            join: JoinConfig::default(),
            retention: Retention::default(),
            ui_auth: None,
            max_body_bytes: demarc_proto::ingest::MAX_BODY_BYTES,
        }
    }
}

/// Ingest and store counters since start (/metrics, probes page).
#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    pub records: AtomicU64,
    pub duplicate_batches: AtomicU64,
    pub rejected_400: AtomicU64,
    pub rejected_401: AtomicU64,
    pub rejected_413: AtomicU64,
    pub rejected_422: AtomicU64,
    pub rejected_503: AtomicU64,
    pub store_errors: AtomicU64,
    /// Joined packets dropped because the store stayed unwritable.
    pub store_dropped: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct Inner {
    pub db: SqlitePool,
    pub cfg: Config,
    pub counters: Counters,
    joiner: Mutex<Joiner>,
    /// Closed packets not yet written (kept across a failed write).
    unwritten: tokio::sync::Mutex<Closed>,
    epoch: Instant,
}

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(db: SqlitePool, cfg: Config) -> Self {
        AppState(Arc::new(Inner {
            db,
            joiner: Mutex::new(Joiner::new(cfg.join)),
            cfg,
            counters: Counters::default(),
            unwritten: tokio::sync::Mutex::new(Closed::default()),
            epoch: Instant::now(),
        }))
    }

    /// Monotonic ms since start: the join's clock.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn joiner(&self) -> std::sync::MutexGuard<'_, Joiner> {
        // A panic while holding the lock leaves a consistent joiner (each
        // method finishes its own bookkeeping), so poisoning is ignored.
        self.joiner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn join_stats(&self) -> (JoinStats, usize) {
        let j = self.joiner();
        (j.stats(), j.pending())
    }

    /// Hands an accepted batch's records to the join.
    pub fn push(&self, b: &Batch) {
        let host: Arc<str> = Arc::from(b.probe.name.as_str());
        let clock = ClockBound {
            maxerror_ns: b.clock.maxerror_ns,
            synced: b.clock.synchronized,
            kernel: b
                .clock
                .kernel_id
                .as_deref()
                .map_or(0, |id| demarc_proto::packet_key(id.as_bytes())),
        };
        let now = self.now_ms();
        let mut j = self.joiner();
        for r in &b.records {
            j.push(now, Obs::from_record(r, &host, clock));
        }
    }

    /// Closes expired packets (all of them with `flush`), writes them and
    /// recomputes the touched rollups. On a write error the packets are kept
    /// for the next pass, up to the join's own memory bound.
    pub async fn step(&self, flush: bool) -> Result<(), sqlx::Error> {
        let mut unwritten = self.unwritten.lock().await;
        let now = self.now_ms();
        let closed = {
            let mut j = self.joiner();
            if flush {
                j.flush(now)
            } else {
                j.expire(now)
            }
        };
        unwritten.packets.extend(closed.packets);
        unwritten.rtts.extend(closed.rtts);
        let excess = unwritten
            .packets
            .len()
            .saturating_sub(self.cfg.join.max_pending);
        if excess > 0 {
            unwritten.packets.drain(..excess);
            Counters::add(&self.counters.store_dropped, excess as u64);
        }
        let result = async {
            let dirty = store::packets::write(&self.db, &unwritten).await?;
            *unwritten = Closed::default();
            store::rollup::recompute(&self.db, &dirty).await
        }
        .await;
        if result.is_err() {
            Counters::add(&self.counters.store_errors, 1);
        }
        result
    }

    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        store::retention::prune(&self.db, store::now_ns(), self.cfg.retention).await
    }

    /// Runs the pipeline until the process ends: a join pass every second,
    /// retention every minute.
    pub async fn run_pipeline(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = self.step(false).await {
                tracing::warn!(error = %e, "join pass could not write; will retry");
            }
            if n.is_multiple_of(60) {
                match self.prune().await {
                    Ok(rows) if rows > 0 => tracing::info!(rows, "retention removed old rows"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "retention pass failed"),
                }
            }
            n += 1;
        }
    }
}
