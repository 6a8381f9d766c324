//! Start-up and run of a probe, shared by demarc-probe and demarc-relay:
//! everything but which programs are loaded and where they attach.

use std::{fmt::Write as _, path::PathBuf};

use aya::{Ebpf, EbpfLoader};
use demarc_proto::{
    ingest::{ClockMode, HookStatus, PointCounters, ProbeInfo, ProbeKind},
    Point,
};

use crate::{
    attach,
    batch::{Batcher, Identity},
    clock::Clock,
    health::HealthSource,
    netns::Netns,
    options::{ClockArg, ProbeOptions},
    pipeline::{Pipeline, Summary},
    ringbuf::RecordReader,
    ship::{ingest_url, Shipper},
    sink::JsonlSink,
    spool::Spool,
    Error, Result,
};

/// Programs loaded and attached, ready to run.
pub struct Attached {
    pub ebpf: Ebpf,
    pub kind: ProbeKind,
    /// The points these programs report (health counters).
    pub points: Vec<Point>,
    pub hooks: Vec<HookStatus>,
    pub fallbacks: Vec<String>,
    /// Extra lines for the start-up report.
    pub notes: Vec<String>,
}

/// What is settled before any program is loaded.
pub struct Prepared {
    pub opts: ProbeOptions,
    pub netns: Netns,
    pub clock: Clock,
    pub state_dir: PathBuf,
    identity: Identity,
    console: Option<Shipper>,
    jsonl: Option<JsonlSink>,
    netns_inode: u32,
    clock_code: u32,
    threshold: u64,
    rt: tokio::runtime::Runtime,
}

impl Prepared {
    /// Checks the kernel, namespace, interfaces, clock, state and outputs, in
    /// that order, so the first problem is the one reported.
    pub fn new(opts: ProbeOptions, program: &str) -> Result<Self> {
        if opts.ifaces.is_empty() {
            return Err(Error::Option(
                "give --iface IFACE: the interface(s) whose traffic is measured".into(),
            ));
        }
        attach::preflight()?;
        let netns = match &opts.netns {
            Some(name) => Netns::named(name)?,
            None => Netns::current()?,
        };
        for iface in &opts.ifaces {
            netns.ifindex(iface)?;
        }
        let mode = match opts.clock {
            Some(ClockArg::Tai) if !Clock::kernel_has_tai() => return Err(Error::NoTai),
            Some(ClockArg::Tai) => ClockMode::Tai,
            Some(ClockArg::Mono) => ClockMode::Mono,
            None if Clock::kernel_has_tai() => ClockMode::Tai,
            None => ClockMode::Mono,
        };
        let clock = Clock::start(mode)?;
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/lib").join(program));
        let state = |e| Error::State(state_dir.display().to_string(), e);
        let identity = Identity::load_or_create(&state_dir).map_err(state)?;
        let jsonl = match opts.output.as_deref() {
            Some(p) => Some(JsonlSink::open(p).map_err(|e| Error::State(p.into(), e))?),
            None => None,
        };
        // Shipping runs on this runtime; the reader needs it to register its fd.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let console = match opts.console.as_deref() {
            Some(url) => {
                let spool =
                    Spool::open(&state_dir.join("spool"), opts.spool_max_bytes).map_err(state)?;
                let _rt = rt.enter();
                Some(Shipper::new(
                    ingest_url(url)?,
                    opts.token.clone().unwrap_or_default(),
                    spool,
                )?)
            }
            None => None,
        };
        if jsonl.is_none() && console.is_none() {
            return Err(Error::NoOutput);
        }
        Ok(Self {
            netns_inode: u32::try_from(netns.inode).map_err(|_| Error::NetnsInode(netns.inode))?,
            clock_code: clock.kernel_code(),
            threshold: demarc_proto::sample_threshold(opts.sample_rate)
                .map_err(|e| Error::Option(e.to_string()))?,
            opts,
            netns,
            clock,
            state_dir,
            identity,
            console,
            jsonl,
            rt,
        })
    }

    /// A loader with the shared load-time constants set; the caller adds its own.
    pub fn loader(&self) -> EbpfLoader<'_> {
        let mut l = EbpfLoader::new();
        l.override_global("cfg_netns", &self.netns_inode, true)
            .override_global("cfg_clock", &self.clock_code, true)
            .override_global("cfg_sample_threshold", &self.threshold, true);
        l
    }

    /// Takes the ring buffer and counters, prints the start-up report, runs
    /// until SIGINT/SIGTERM and returns what the run did.
    pub fn run(self, attached: Attached) -> Result<Summary> {
        // Handlers first: a signal right after the report must stop us cleanly.
        let shutdown = {
            let _rt = self.rt.enter();
            shutdown_signal()?
        };
        self.run_until(attached, shutdown)
    }

    /// As `run`, but stops when `shutdown` completes (a probe inside another
    /// program, which owns the signals).
    pub fn run_until(
        self,
        attached: Attached,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<Summary> {
        let Attached {
            mut ebpf,
            kind,
            points,
            hooks,
            fallbacks,
            notes,
        } = attached;
        let _rt = self.rt.enter();
        let programs = attach::program_fds(&ebpf);
        let reader = RecordReader::new(attach::take_map(&mut ebpf, "events")?)?;
        let health = HealthSource::new(
            attach::take_map(&mut ebpf, "counters")?,
            points,
            programs,
            hooks,
            fallbacks,
        )?;
        let probe = ProbeInfo {
            id: self.identity.id.clone(),
            name: self
                .opts
                .name
                .clone()
                .unwrap_or_else(|| default_name(&self.netns)),
            kind,
            version: env!("CARGO_PKG_VERSION").into(),
            netns: self.netns.inode,
        };
        print!("{}", self.report(&probe, &health, &notes));
        let pipeline = Pipeline {
            ebpf,
            reader,
            clock: self.clock,
            health,
            batcher: Batcher::new(probe, self.identity),
            jsonl: self.jsonl,
            console: self.console,
        };
        self.rt.block_on(pipeline.run(shutdown))
    }

    /// The one start-up report: what is measured, how, and what is not.
    fn report(&self, probe: &ProbeInfo, health: &HealthSource, notes: &[String]) -> String {
        let mut s = String::new();
        let c = self.clock.state();
        let _ = writeln!(
            s,
            "demarc {:?} probe {} {} ({}) monitoring {}",
            probe.kind,
            probe.version,
            probe.name,
            probe.id,
            self.netns.describe()
        );
        let mode = match self.clock.mode() {
            ClockMode::Tai => "tai",
            ClockMode::Mono => "mono",
        };
        let _ = writeln!(
            s,
            "  clock: {mode}, synchronised: {}, esterror {} us, maxerror {} us",
            if c.synchronized { "yes" } else { "NO" },
            c.esterror_ns / 1_000,
            c.maxerror_ns / 1_000
        );
        let _ = writeln!(s, "  sampling: rate {}", self.opts.sample_rate);
        let _ = writeln!(s, "  hooks:");
        for h in &health.hooks {
            let mode = if h.mode.is_empty() {
                String::new()
            } else {
                format!(" ({})", h.mode)
            };
            let state = if h.attached {
                "attached"
            } else {
                "NOT attached"
            };
            let _ = writeln!(
                s,
                "    {:<9} {}{mode} {}: {state} {}",
                h.point.as_str(),
                h.hook,
                h.target,
                h.note
            );
        }
        if health.fallbacks.is_empty() {
            let _ = writeln!(s, "  fallbacks: none");
        }
        for f in &health.fallbacks {
            let _ = writeln!(s, "  fallback: {f}");
        }
        for n in notes {
            let _ = writeln!(s, "  {n}");
        }
        if let Some(url) = &self.opts.console {
            let _ = writeln!(
                s,
                "  console: {url} (spool {}, at most {} MiB)",
                self.state_dir.join("spool").display(),
                self.opts.spool_max_bytes >> 20
            );
        }
        // Last line: scripts and tests wait for it to know everything is attached.
        match &self.opts.output {
            Some(p) => {
                let _ = writeln!(s, "  output: jsonl {p}");
            }
            None => {
                let _ = writeln!(s, "  output: console only");
            }
        }
        s
    }
}

fn default_name(netns: &Netns) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    match &netns.name {
        Some(ns) => format!("{host}/{ns}"),
        None => host,
    }
}

/// The health at exit: per-point counters and the cost of each program.
pub fn exit_report(program: &str, s: &Summary) -> String {
    let mut out = format!(
        "{program}: stopped; {} records in {} batches, {} undecodable\n",
        s.records, s.batches, s.undecodable
    );
    let Some(health) = &s.health else {
        return out;
    };
    let _ = write!(out, "  {:<9}", "point");
    for name in PointCounters::NAMES {
        let _ = write!(out, " {name:>12}");
    }
    out.push('\n');
    for (p, c) in &health.points {
        let _ = write!(out, "  {:<9}", p.as_str());
        for v in c.values() {
            let _ = write!(out, " {v:>12}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "  {:<24} {:>10} {:>12} {:>10} {:>9}",
        "program", "runs", "run_time_ns", "ns/run", "rec_miss"
    );
    for p in &health.programs {
        let per_run = p.run_time_ns.checked_div(p.run_count).unwrap_or(0);
        let _ = writeln!(
            out,
            "  {:<24} {:>10} {:>12} {:>10} {:>9}",
            p.name, p.run_count, p.run_time_ns, per_run, p.recursion_misses
        );
    }
    let sp = &health.spool;
    if sp.queued_batches + sp.dropped_batches > 0 {
        let _ = writeln!(
            out,
            "  spool: {} batches queued for the next start, {} batches ({} records) dropped",
            sp.queued_batches, sp.dropped_batches, sp.dropped_records
        );
    }
    out
}

/// Registers SIGINT and SIGTERM handlers now; the future completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
