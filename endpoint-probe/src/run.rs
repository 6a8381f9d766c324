//! Start-up (load, attach, report), the run, and the orderly stop.

use std::{fmt::Write as _, path::Path};

use anyhow::Context;
use aya::{Ebpf, EbpfLoader};
use demarc_agent::{
    attach,
    batch::{Batcher, Identity},
    clock::Clock,
    health::HealthSource,
    netns::Netns,
    pipeline::{Pipeline, Summary},
    ringbuf::RecordReader,
    ship::{ingest_url, Shipper},
    sink::JsonlSink,
    spool::Spool,
};
use demarc_proto::{
    ingest::{ClockMode, HookStatus, ProbeInfo, ProbeKind},
    Point,
};

use crate::cli::{Cli, ClockArg};

/// (program, syscall tracepoint, point): every syscall hook of the endpoint.
const SYSCALL_HOOKS: &[(&str, &str, Point)] = &[
    ("app_send_sendto", "sys_enter_sendto", Point::AppSend),
    ("app_send_sendmsg", "sys_enter_sendmsg", Point::AppSend),
    ("app_send_sendmmsg", "sys_enter_sendmmsg", Point::AppSend),
    (
        "app_recv_enter_recvfrom",
        "sys_enter_recvfrom",
        Point::AppRecv,
    ),
    (
        "app_recv_exit_recvfrom",
        "sys_exit_recvfrom",
        Point::AppRecv,
    ),
    (
        "app_recv_enter_recvmsg",
        "sys_enter_recvmsg",
        Point::AppRecv,
    ),
    ("app_recv_exit_recvmsg", "sys_exit_recvmsg", Point::AppRecv),
    (
        "app_recv_enter_recvmmsg",
        "sys_enter_recvmmsg",
        Point::AppRecv,
    ),
    (
        "app_recv_exit_recvmmsg",
        "sys_exit_recvmmsg",
        Point::AppRecv,
    ),
];

const POINTS: [Point; 4] = [Point::AppSend, Point::TxWire, Point::RxWire, Point::AppRecv];

const NOT_SEEN: &str = "sockets driven by io_uring; write()/read() on UDP sockets; \
    datagrams after the first of a UDP GSO (UDP_SEGMENT) send";

pub fn run(cli: Cli) -> anyhow::Result<Summary> {
    attach::preflight()?;
    let netns = match &cli.netns {
        Some(name) => Netns::named(name)?,
        None => Netns::current()?,
    };
    // Unknown interfaces are reported before anything is loaded.
    for iface in &cli.ifaces {
        netns.ifindex(iface)?;
    }
    let mode = match cli.clock {
        Some(ClockArg::Tai) if !Clock::kernel_has_tai() => {
            anyhow::bail!("--clock tai needs kernel 6.1+ (bpf_ktime_get_tai_ns); use --clock mono")
        }
        Some(ClockArg::Tai) => ClockMode::Tai,
        Some(ClockArg::Mono) => ClockMode::Mono,
        None if Clock::kernel_has_tai() => ClockMode::Tai,
        None => ClockMode::Mono,
    };
    let clock = Clock::start(mode).context("starting the clock")?;
    let identity = Identity::load_or_create(&cli.state_dir)
        .with_context(|| format!("state directory {}", cli.state_dir.display()))?;
    let console = cli
        .console
        .as_deref()
        .map(|url| -> anyhow::Result<Shipper> {
            let spool = Spool::open(&cli.state_dir.join("spool"), cli.spool_max_bytes)
                .context("opening the spool")?;
            let token = cli.token.clone().unwrap_or_default();
            Ok(Shipper::new(ingest_url(url)?, token, spool)?)
        })
        .transpose()?;
    let jsonl = cli
        .output
        .as_deref()
        .map(|p| JsonlSink::open(p).with_context(|| format!("opening output {p}")))
        .transpose()?;
    if jsonl.is_none() && console.is_none() {
        anyhow::bail!("nothing to do: give --output jsonl:PATH and/or --console URL --token T");
    }

    let mut ebpf = load(&cli, &netns, clock.kernel_code())?;
    let mut fallbacks = Vec::new();
    let mut hooks: Vec<HookStatus> = Vec::new();
    for (prog, tp, point) in SYSCALL_HOOKS {
        hooks.push(attach::tracepoint(&mut ebpf, prog, tp, *point)?);
    }
    for iface in &cli.ifaces {
        hooks.push(attach::tc_egress(
            &mut ebpf,
            "tx_wire",
            &netns,
            iface,
            Point::TxWire,
        )?);
        hooks.push(attach::xdp(
            &mut ebpf,
            "rx_wire",
            &netns,
            iface,
            Point::RxWire,
            &mut fallbacks,
        )?);
    }
    let programs = attach::program_fds(&ebpf);
    // Single-threaded: the work per record is small, and the probe should
    // take as little of the host as it can.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _rt_guard = rt.enter();
    let reader = RecordReader::new(attach::take_map(&mut ebpf, "events")?)?;
    let health = HealthSource::new(
        attach::take_map(&mut ebpf, "counters")?,
        POINTS.to_vec(),
        programs,
        hooks,
        fallbacks,
    )?;
    let probe = ProbeInfo {
        id: identity.id.clone(),
        name: cli.name.clone().unwrap_or_else(|| default_name(&netns)),
        kind: ProbeKind::Endpoint,
        version: env!("CARGO_PKG_VERSION").into(),
        netns: netns.inode,
    };
    print!("{}", report(&cli, &netns, &probe, &clock, &health));

    let pipeline = Pipeline {
        ebpf,
        reader,
        clock,
        health,
        batcher: Batcher::new(probe, identity),
        jsonl,
        console,
    };
    let summary = rt.block_on(pipeline.run(shutdown_signal()))?;
    Ok(summary)
}

fn load(cli: &Cli, netns: &Netns, clock: u32) -> anyhow::Result<Ebpf> {
    let threshold = demarc_proto::sample_threshold(cli.sample_rate)?;
    let (lo, hi) = cli.ports.unwrap_or((0, u16::MAX));
    let netns_inode = u32::try_from(netns.inode).context("netns inode does not fit 32 bits")?;
    let ebpf = EbpfLoader::new()
        .override_global("cfg_netns", &netns_inode, true)
        .override_global("cfg_clock", &clock, true)
        .override_global("cfg_sample_threshold", &threshold, true)
        .override_global("cfg_port_lo", &lo, true)
        .override_global("cfg_port_hi", &hi, true)
        .load(demarc_ebpf::ENDPOINT_OBJ)
        .map_err(demarc_agent::Error::Load)?;
    Ok(ebpf)
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

/// The one start-up report: what is measured, how, and what is not.
fn report(
    cli: &Cli,
    netns: &Netns,
    probe: &ProbeInfo,
    clock: &Clock,
    health: &HealthSource,
) -> String {
    let mut s = String::new();
    let c = clock.state();
    let _ = writeln!(
        s,
        "demarc-probe {}: probe {} ({}) monitoring {}",
        probe.version,
        probe.name,
        probe.id,
        netns.describe()
    );
    let _ = writeln!(
        s,
        "  clock: {}, synchronised: {}, esterror {} us, maxerror {} us",
        match clock.mode() {
            ClockMode::Tai => "tai",
            ClockMode::Mono => "mono",
        },
        if c.synchronized { "yes" } else { "NO" },
        c.esterror_ns / 1_000,
        c.maxerror_ns / 1_000
    );
    let ports = cli
        .ports
        .map_or("all".to_string(), |(lo, hi)| format!("{lo}-{hi}"));
    let _ = writeln!(
        s,
        "  sampling: rate {}; UDP ports: {ports}",
        cli.sample_rate
    );
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
    let _ = writeln!(s, "  not seen: {NOT_SEEN}");
    if let Some(p) = &cli.output {
        let _ = writeln!(s, "  output: jsonl {p}");
    }
    if let Some(url) = &cli.console {
        let _ = writeln!(
            s,
            "  console: {url} (spool {}, at most {} MiB)",
            Path::new(&cli.state_dir).join("spool").display(),
            cli.spool_max_bytes >> 20
        );
    }
    s
}

/// The health at exit: per-point counters and the cost of each program.
pub fn exit_report(s: &Summary) -> String {
    let mut out = format!(
        "demarc-probe: stopped; {} records in {} batches, {} undecodable\n",
        s.records, s.batches, s.undecodable
    );
    let _ = writeln!(
        out,
        "  {:<9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>8} {:>9}",
        "point", "seen", "media", "recorded", "parse_fail", "ringbuf_full", "map_full", "read_fail"
    );
    let Some(health) = &s.health else {
        return out;
    };
    for (p, c) in &health.points {
        let _ = writeln!(
            out,
            "  {:<9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>8} {:>9}",
            p.as_str(),
            c.seen,
            c.media,
            c.recorded,
            c.parse_fail,
            c.ringbuf_full,
            c.map_full,
            c.read_fail
        );
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
