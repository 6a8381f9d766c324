//! `demarc-testbed bench`: demarc-relay against coturn on the same machine
//! in one run. In a namespace of its own, the server runs pinned to one CPU
//! and the load generator ([`load`]) to the other; for each server, payload
//! size and probe state (the eBPF dwell probe beside the server, as
//! `demarc-relay --probe-only` runs it, or none), it measures:
//! - messages/s delivered with < 1% loss (a rate sweep; one message is two
//!   relayed datagrams), and the server's CPU time per relayed datagram;
//! - round trips at a fixed moderate rate;
//! - the relay dwell the probe measured in the kernel (XDP in → tc out);
//! - with the probe, the BPF run time per packet of each program.
//!
//! Runs are interleaved (every configuration once, then again) so that a
//! noisy minute does not land on one server only; [`report`] gives medians,
//! spreads and the demarc/coturn ratios.

mod load;
mod mmsg;
pub mod report;
mod servers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use demarc_agent::dwell::{DwellHistogram, DwellReader, RelayPorts};
use demarc_agent::options::ProbeOptions;
use demarc_proto::ingest::ProgramStats;

use crate::scenario::check::percentile;
use crate::topology::{netns, Sandbox};
use crate::{Error, Result};
use load::{Load, Trial};
pub use servers::Kind;
use servers::{core_busy, Running, LISTEN, RELAY_PORTS, USER};

/// Loss at or past this fails a trial.
const MAX_LOSS: f64 = 0.01;
/// The sweep's first rate (messages/s) and its growth while trials pass.
const FIRST_RATE: f64 = 20_000.0;
const GROWTH: f64 = 1.5;
/// Bisection stops when pass and fail are this close.
const RESOLUTION: f64 = 1.04;
const MAX_TRIALS: usize = 16;

#[derive(Debug, Clone)]
pub struct Options {
    pub runs: usize,
    pub payloads: Vec<usize>,
    pub kinds: Vec<Kind>,
    /// Probe states: false = none, true = the dwell probe beside the server.
    pub probe: Vec<bool>,
    /// Each trial's sending time.
    pub trial: Duration,
    /// Client pairs of the load generator.
    pub pairs: usize,
    pub server_cpu: usize,
    pub load_cpu: usize,
    /// Pings per second of the round-trip measurement.
    pub rtt_rate: f64,
    /// Steer loopback receive processing (RPS) to the server's CPU: on a
    /// real relay host the kernel receives its packets on its own cores; on
    /// loopback it would run on the sender's, the load generator's, which
    /// would then carry the relay's kernel work (all of it, for the XDP
    /// fast path).
    pub rx_steering: bool,
    pub prefix: String,
    /// Server logs and the probe's sampled records.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Config {
    pub payload: usize,
    pub probe: bool,
    pub kind: Kind,
}

/// (p50, p99) in ns.
pub type Quantiles = (f64, f64);

#[derive(Debug, Clone)]
pub struct Measurement {
    pub config: Config,
    /// Messages/s delivered by the best trial under [`MAX_LOSS`].
    pub max_rate: f64,
    /// The generator could not send faster: the server's limit lies higher.
    pub generator_limited: bool,
    /// Server CPU time per relayed datagram in that trial.
    pub cpu_ns_per_datagram: f64,
    /// Share of one core the server used in that trial.
    pub core_share: f64,
    /// Share of the server's CPU busy in that trial, whoever used it: the
    /// server, and the kernel's receive work steered there (softirq).
    pub core_busy: f64,
    pub rtt: Quantiles,
    /// Dwell at the round-trip rate and in the best trial (probe runs).
    pub dwell_moderate: Option<Quantiles>,
    pub dwell_max: Option<Quantiles>,
    /// The probe's programs over the whole run (probe runs).
    pub programs: Vec<ProgramStats>,
    pub trials: Vec<Trial>,
}

/// Runs every configuration `opts.runs` times; returns the measurements in
/// the order taken.
pub fn run(opts: &Options) -> Result<Vec<Measurement>> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if opts.server_cpu == opts.load_cpu || opts.server_cpu.max(opts.load_cpu) >= cpus {
        return Err(Error::Bench(format!(
            "server CPU {} and load CPU {} must be two different CPUs of the {cpus} here",
            opts.server_cpu, opts.load_cpu
        )));
    }
    if opts.kinds.contains(&Kind::Coturn) && !on_path("turnserver") {
        return Err(Error::MissingTool {
            tool: "turnserver",
            hint: "install coturn (scripts/setup.sh does)",
        });
    }
    std::fs::create_dir_all(&opts.dir)
        .map_err(Error::io(format!("creating {}", opts.dir.display())))?;
    let sandbox = Sandbox::up(&opts.prefix)?;
    // The generator's ephemeral ports stay out of the relay range, as a
    // remote client's would: the probe must not take them for relay ports.
    netns::sysctl(
        sandbox.name(),
        &[("net.ipv4.ip_local_port_range", "20000 40000")],
    )?;
    if opts.rx_steering {
        netns::rps(sandbox.name(), "lo", 1 << opts.server_cpu)?;
    }
    let mut configs = Vec::new();
    for &payload in &opts.payloads {
        for &probe in &opts.probe {
            // The fast path is the probe's program: there is no run without.
            for &kind in opts.kinds.iter().filter(|k| probe || !k.probe_inside()) {
                configs.push(Config {
                    payload,
                    probe,
                    kind,
                });
            }
        }
    }
    let total = configs.len() * opts.runs;
    netns::run(sandbox.name(), || {
        let mut out = Vec::new();
        for run in 0..opts.runs {
            for &config in &configs {
                tracing::info!("[{}/{total}] run {} {config:?}", out.len() + 1, run + 1);
                let m = measure(config, opts)?;
                tracing::info!(
                    "  {:.0} msgs/s (<1% loss{}), {:.0} ns CPU/datagram, rtt p50 {:.0} µs",
                    m.max_rate,
                    if m.generator_limited {
                        ", generator-limited"
                    } else {
                        ""
                    },
                    m.cpu_ns_per_datagram,
                    m.rtt.0 / 1e3
                );
                out.push(m);
            }
        }
        Ok(out)
    })
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The dwell probe: beside the server, on this thread's namespace's `lo`,
/// or inside it (found by its program in the kernel).
struct Probe {
    reader: Arc<DwellReader>,
    owner: Owner,
}

enum Owner {
    Bench {
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<anyhow::Result<demarc_agent::pipeline::Summary>>,
    },
    /// Ids of the server's programs that use its dwell histograms.
    Server { programs: Vec<u32> },
}

fn relay_ports() -> RelayPorts {
    RelayPorts {
        listeners: vec![LISTEN.port()],
        relay: RELAY_PORTS.0..=RELAY_PORTS.1,
    }
}

impl Probe {
    fn start(opts: &Options) -> Result<Probe> {
        let probe_opts = ProbeOptions {
            ifaces: vec!["lo".into()],
            netns: None,
            // The histograms count every packet; records are only a sample.
            sample_rate: 0.001,
            clock: None,
            output: Some(opts.dir.join("relay-probe.jsonl").display().to_string()),
            console: None,
            token: None,
            name: Some("demarc-bench".into()),
            state_dir: Some(opts.dir.join("probe-state")),
            spool_max_bytes: 1 << 20,
        };
        let (stop, rx) = tokio::sync::oneshot::channel();
        let started = demarc_relay::probe::start(
            probe_opts,
            relay_ports(),
            demarc_relay::probe::Stop::When(rx),
            false,
        )
        .map_err(|e| Error::Bench(format!("dwell probe: {e:#}")))?;
        Ok(Probe {
            reader: started.reader,
            owner: Owner::Bench {
                stop,
                thread: started.thread,
            },
        })
    }

    /// The probe the server loaded: the newest `relay_fast` program's
    /// dwell histograms, and the programs sharing them.
    fn inside() -> Result<Probe> {
        let bench = |e: &dyn std::fmt::Display| Error::Bench(format!("server's probe: {e}"));
        let loaded: Vec<_> = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .collect();
        let fast = loaded
            .iter()
            .filter(|p| p.name_as_str() == Some("relay_fast"))
            .max_by_key(|p| p.id())
            .ok_or_else(|| bench(&"no relay_fast program is loaded"))?;
        let map_ids = fast.map_ids().map_err(|e| bench(&e))?.unwrap_or_default();
        let hist = map_ids
            .iter()
            .filter_map(|&id| aya::maps::MapData::from_id(id).ok())
            .find(|m| {
                m.info()
                    .is_ok_and(|i| i.name_as_str() == Some("dwell_hist"))
            })
            .ok_or_else(|| bench(&"relay_fast has no dwell_hist map"))?;
        let hist_id = hist.info().map_err(|e| bench(&e))?.id();
        let programs = loaded
            .iter()
            .filter(|p| {
                p.map_ids()
                    .ok()
                    .flatten()
                    .is_some_and(|ids| ids.contains(&hist_id))
            })
            .map(|p| p.id())
            .collect();
        let reader = DwellReader::from_map(aya::maps::Map::PerCpuArray(hist), &relay_ports())
            .map_err(|e| bench(&e))?;
        Ok(Probe {
            reader: Arc::new(reader),
            owner: Owner::Server { programs },
        })
    }

    fn snapshot(&self) -> Vec<DwellHistogram> {
        self.reader.read()
    }

    fn finish(self) -> Result<Vec<ProgramStats>> {
        match self.owner {
            Owner::Bench { stop, thread } => {
                let _ = stop.send(());
                let summary = thread
                    .join()
                    .map_err(|_| Error::Bench("the dwell probe panicked".into()))?
                    .map_err(|e| Error::Bench(format!("dwell probe: {e:#}")))?;
                Ok(summary.health.map(|h| h.programs).unwrap_or_default())
            }
            Owner::Server { programs } => Ok(aya::programs::loaded_programs()
                .filter_map(|p| p.ok())
                .filter(|p| programs.contains(&p.id()))
                .map(|p| ProgramStats {
                    name: p.name_as_str().unwrap_or("?").to_owned(),
                    run_count: p.run_count(),
                    run_time_ns: p.run_time().as_nanos() as u64,
                    recursion_misses: 0,
                })
                .collect()),
        }
    }
}

/// Every packet's dwell between two snapshots, all listeners and directions.
fn dwell_between(before: &[DwellHistogram], after: &[DwellHistogram]) -> Option<Quantiles> {
    let mut merged = DwellHistogram {
        listener: 0,
        direction: after.first()?.direction,
        buckets: vec![0; after.first()?.buckets.len()],
    };
    for (i, h) in after.iter().enumerate() {
        for (b, n) in h.buckets.iter().enumerate() {
            let was = before.get(i).map_or(0, |p| p.buckets[b]);
            merged.buckets[b] += n.saturating_sub(was);
        }
    }
    Some((
        report::bucket_quantile(&merged, 0.5)?,
        report::bucket_quantile(&merged, 0.99)?,
    ))
}

/// Pins the calling thread (threads it starts inherit the mask).
fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET stays inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(Error::io(format!("pinning to CPU {cpu}"))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn measure(config: Config, opts: &Options) -> Result<Measurement> {
    let server = Running::start(config.kind, opts.server_cpu, &opts.dir)?;
    // The probe's thread shares the server's CPU: its cost is the server's.
    let probe = if config.kind.probe_inside() {
        pin(opts.load_cpu)?;
        Some(Probe::inside()?)
    } else if config.probe {
        pin(opts.server_cpu)?;
        let started = Probe::start(opts);
        pin(opts.load_cpu)?;
        Some(started?)
    } else {
        pin(opts.load_cpu)?;
        None
    };
    let snapshot = || probe.as_ref().map(Probe::snapshot);
    let mut load = Load::connect(LISTEN, USER, opts.pairs, config.payload)?;
    load.trial(2_000.0, Duration::from_millis(300))?;

    let before = snapshot();
    let mut rtts = load.round_trips(opts.rtt_rate, opts.trial)?;
    let dwell_moderate = before
        .zip(snapshot())
        .and_then(|(b, a)| dwell_between(&b, &a));
    rtts.sort_unstable();
    let rtt = percentile(&rtts, 50.0)
        .zip(percentile(&rtts, 99.0))
        .map(|(p50, p99)| (p50 as f64, p99 as f64))
        .ok_or_else(|| Error::Bench(format!("{}: no round trip came back", config.kind)))?;

    let mut trials = Vec::new();
    let mut best: Option<(Trial, (Duration, Duration), Option<Quantiles>)> = None;
    let (mut pass, mut fail) = (None::<f64>, None::<f64>);
    let mut rate = FIRST_RATE;
    let mut generator_limited = false;
    let mut measured = |rate: f64, trials: &mut Vec<Trial>| -> Result<_> {
        let (cpu0, core0, dwell0) = (server.cpu()?, core_busy(opts.server_cpu)?, snapshot());
        let trial = load.trial(rate, opts.trial)?;
        let cpu = (
            server.cpu()? - cpu0,
            core_busy(opts.server_cpu)?.saturating_sub(core0),
        );
        let dwell = snapshot();
        trials.push(trial);
        let dwell = dwell0.zip(dwell).and_then(|(b, a)| dwell_between(&b, &a));
        Ok((trial, cpu, dwell))
    };
    while trials.len() < MAX_TRIALS {
        let mut taken = measured(rate, &mut trials)?;
        // One hiccup (a kworker on the server's core) must not end the
        // sweep: a failed rate gets a second trial, and the better counts.
        if taken.0.loss() >= MAX_LOSS && taken.0.kept_pace() {
            let again = measured(rate, &mut trials)?;
            if again.0.loss() < taken.0.loss() {
                taken = again;
            }
        }
        let trial = taken.0;
        let ok = trial.loss() < MAX_LOSS;
        if ok && best.is_none_or(|(b, ..)| trial.delivered_rate() > b.delivered_rate()) {
            best = Some(taken);
        }
        if !trial.kept_pace() {
            generator_limited = ok;
            fail = Some(rate);
        } else if ok {
            pass = Some(rate);
        } else {
            fail = Some(rate);
        }
        rate = match (pass, fail) {
            (Some(p), Some(f)) if f / p <= RESOLUTION => break,
            (Some(p), Some(f)) => (p + f) / 2.0,
            (Some(p), None) => p * GROWTH,
            (None, Some(f)) => f / 2.0,
            (None, None) => unreachable!("a trial either passed or failed"),
        };
        if generator_limited {
            break;
        }
    }
    let programs = probe.map(Probe::finish).transpose()?.unwrap_or_default();
    // The trials are taken: a server that had to be killed at the end
    // (coturn, now and then, with receive steering) costs no measurement.
    if let Err(e) = server.stop() {
        tracing::warn!("{}: {e}", config.kind);
    }
    let (trial, (cpu, core), dwell_max) = best.ok_or_else(|| {
        Error::Bench(format!(
            "{}: even {} messages/s lost more than 1%",
            config.kind, rate
        ))
    })?;
    let datagrams = 2.0 * trial.received as f64;
    Ok(Measurement {
        config,
        max_rate: trial.delivered_rate(),
        generator_limited,
        cpu_ns_per_datagram: cpu.as_nanos() as f64 / datagrams,
        core_share: cpu.as_secs_f64() / trial.elapsed.as_secs_f64(),
        core_busy: core.as_secs_f64() / trial.elapsed.as_secs_f64(),
        rtt,
        dwell_moderate,
        dwell_max,
        programs,
        trials,
    })
}
