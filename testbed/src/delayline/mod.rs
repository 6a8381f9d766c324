//! The delay line: for each leg, packets steered into its TUN are held for
//! the leg's scheduled delay and written back in order, and every packet's
//! hold goes to one JSONL log, the ground truth for the network segments.

pub mod clock;
mod line;
pub mod log;
mod packet;
pub mod schedule;
mod tun;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use clock::Stamp;
use line::Core;
pub use line::LegStats;
pub use schedule::Schedule;

use crate::topology::{Leg, Topology};
use crate::{Error, Result};

/// One schedule per leg: A→B is `a_to_relay` then `relay_to_b`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedules {
    pub a_to_relay: Schedule,
    pub relay_to_a: Schedule,
    pub b_to_relay: Schedule,
    pub relay_to_b: Schedule,
}

impl Schedules {
    pub fn get(&self, leg: Leg) -> &Schedule {
        match leg {
            Leg::AToRelay => &self.a_to_relay,
            Leg::RelayToA => &self.relay_to_a,
            Leg::BToRelay => &self.b_to_relay,
            Leg::RelayToB => &self.relay_to_b,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub schedules: Schedules,
    /// The JSONL log; created anew.
    pub log: PathBuf,
    /// UTC ns that schedule steps count from; `None` for the start. It is
    /// carried onto the monotonic clock once, so setting the wall clock
    /// later moves no step.
    pub epoch_ns: Option<u64>,
    /// Seeds the jitter draws, so a run can be repeated.
    pub seed: u64,
}

struct LegThreads {
    leg: Leg,
    reader: JoinHandle<Result<()>>,
    writer: JoinHandle<LegStats>,
}

/// A running delay line on all four legs. Stop it (or drop it) before the
/// topology goes: its TUN files keep the wan namespaces alive.
pub struct DelayLine {
    epoch_ns: u64,
    /// Readable once stop is asked for; every reader polls it.
    stop: OwnedFd,
    legs: Vec<LegThreads>,
    /// The writers hold clones; the logger ends when all are gone.
    log: Option<mpsc::Sender<log::Released>>,
    logger: Option<JoinHandle<Result<()>>>,
}

impl DelayLine {
    pub fn start(topology: &Topology, config: &Config) -> Result<DelayLine> {
        let log_file = File::create(&config.log)
            .map_err(Error::io(format!("creating {}", config.log.display())))?;
        // SAFETY: eventfd returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::io("creating an eventfd")(
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: a fresh fd that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(raw) };
        let (log_tx, log_rx) = mpsc::channel();
        let now = Stamp::now();
        let epoch_ns = config.epoch_ns.unwrap_or(now.real_ns);
        // The epoch moved onto the monotonic clock once, here.
        let epoch_mono_ns = now.mono_ns as i64 - (now.real_ns as i64 - epoch_ns as i64);
        let mut line = DelayLine {
            epoch_ns,
            stop,
            legs: Vec::new(),
            log: Some(log_tx),
            logger: Some(spawn("dl-log", move || log::write_all(log_file, log_rx))?),
        };
        // An error here drops `line`, which stops the legs already running.
        for (i, leg) in Leg::ALL.into_iter().enumerate() {
            let tun = Arc::new(tun::attach(&topology.netns(leg.wan()), leg.tun())?);
            let core = Core::new(
                config.schedules.get(leg).clone(),
                epoch_mono_ns,
                config.seed ^ i as u64,
            );
            let (held_tx, held_rx) = mpsc::channel();
            let stop = line
                .stop
                .try_clone()
                .map_err(Error::io("duplicating the stop eventfd"))?;
            let reader_tun = tun.clone();
            let reader = spawn(&format!("dl-{leg}-rx"), move || {
                line::read(leg, &reader_tun, stop.as_fd(), core, held_tx)
                    .inspect_err(|e| tracing::error!("{e}"))
            })?;
            let log_tx = line.log.clone().expect("set until shutdown");
            let writer = spawn(&format!("dl-{leg}-tx"), move || {
                line::write(leg, &tun, held_rx, log_tx)
            })?;
            line.legs.push(LegThreads {
                leg,
                reader,
                writer,
            });
        }
        topology.wait_for_tuns(Duration::from_secs(3))?;
        tracing::info!(
            "delay line running on {} legs, log {}",
            line.legs.len(),
            config.log.display()
        );
        Ok(line)
    }

    /// UTC ns that schedule steps count from.
    pub fn epoch_ns(&self) -> u64 {
        self.epoch_ns
    }

    /// Stops reading, releases what is still held on time, and waits for
    /// the log to be written.
    pub fn stop(mut self) -> Result<Vec<(Leg, LegStats)>> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Vec<(Leg, LegStats)>> {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), one.as_ptr().cast(), 8) };
        let mut result = Ok(Vec::new());
        for LegThreads {
            leg,
            reader,
            writer,
        } in self.legs.drain(..)
        {
            let read = join(reader);
            let stats = join(writer);
            match (&mut result, read) {
                (Ok(all), Ok(())) => all.push((leg, stats)),
                (Ok(_), Err(e)) => result = Err(e),
                (Err(_), _) => {}
            }
        }
        self.log = None;
        if let Some(logger) = self.logger.take() {
            join(logger)?;
        }
        result
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("stopping the delay line: {e}");
        }
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(Error::io(format!("starting thread {name}")))
}

/// A delay-line thread that panicked is a bug; carry the panic on.
fn join<T>(handle: JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
