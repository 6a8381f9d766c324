mod cli;
mod signals;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use demarc_testbed::scenario::{self, Kind, Options};
use demarc_testbed::{topology, Config, DelayLine, Host, Leg, Schedules, Topology};
use tracing_subscriber::EnvFilter;

use cli::{BenchArgs, BenchServer, Cli, Command, LabArgs, ProbeState, UpArgs};
use signals::Signals;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The WebRTC stack logs every state change at info.
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,webrtc=error,demarc_testbed=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(*args),
        Command::Down { prefix } => down(&prefix),
        Command::Scenario(args) => run_scenario(Options {
            kind: args.name,
            duration: args.duration,
            step_every: args.step_every,
            square: false,
            chromium: args.chromium,
            ..lab_options(args.lab)
        }),
        Command::Bench(args) => bench(args),
        Command::Demo(lab) => {
            println!("demo: Chromium in a and b, relay-only; A → B steps ±2 ms every 30 s, B → A stays flat");
            println!("demo: Ctrl-C stops it and removes everything");
            run_scenario(Options {
                kind: Kind::Steps,
                // A square wave on A → B for a day, or until Ctrl-C.
                duration: Duration::from_secs(24 * 3600),
                step_every: Duration::from_secs(30),
                square: true,
                // Chromium answers ICE checks at once, so its RTT is honest;
                // the webrtc crate's peers answer on their next write.
                chromium: true,
                ..lab_options(lab)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demarc-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use demarc_testbed::bench::{self, report, Kind};
    let opts = bench::Options {
        runs: args.runs,
        payloads: args.payloads,
        kinds: args
            .servers
            .iter()
            .map(|s| match s {
                BenchServer::Demarc => Kind::Demarc,
                BenchServer::Coturn => Kind::Coturn,
                BenchServer::DemarcXdp => Kind::DemarcXdp,
            })
            .collect(),
        probe: args.probe.iter().map(|p| *p == ProbeState::On).collect(),
        trial: args.trial,
        pairs: args.pairs,
        server_cpu: args.server_cpu,
        load_cpu: args.load_cpu,
        rtt_rate: args.rtt_rate,
        rx_steering: !args.no_rx_steering,
        prefix: args.prefix,
        dir: args.dir,
    };
    let measurements = bench::run(&opts)?;
    let mut table = report::markdown(&measurements);
    if let Some(line) = report::headline(&measurements) {
        table = format!("{line}\n\n{table}");
    }
    print!("{table}");
    if let Some(out) = args.out {
        std::fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    let signals = Signals::block().context("blocking signals")?;
    let config = Config {
        log: args
            .log
            .unwrap_or_else(|| format!("{}-holds.jsonl", args.prefix).into()),
        schedules: Schedules {
            a_to_relay: args.a_to_relay,
            relay_to_a: args.relay_to_a,
            b_to_relay: args.b_to_relay,
            relay_to_b: args.relay_to_b,
        },
        epoch_ns: None,
        seed: args.seed,
    };
    let topology = Topology::up(&args.prefix)?;
    let line = DelayLine::start(&topology, &config)?;
    for host in Host::ALL {
        println!(
            "{:<6} netns {:<20} {}",
            host.name(),
            topology.netns(host),
            host.address()
        );
    }
    for leg in Leg::ALL {
        println!("{:<11} {}", leg.name(), config.schedules.get(leg));
    }
    println!("epoch_ns   {}", line.epoch_ns());
    println!("log        {}", config.log.display());
    println!("ready: Ctrl-C stops the delay line and removes the namespaces");
    let signal = signals.wait().context("waiting for a signal")?;
    tracing::info!("{signal}: stopping");
    for (leg, stats) in line.stop()? {
        tracing::info!(
            "{leg}: {} packets released, {} write errors",
            stats.released,
            stats.write_errors
        );
    }
    topology.down()?;
    Ok(())
}

fn down(prefix: &str) -> anyhow::Result<()> {
    let removed = topology::down(prefix)?;
    if removed.is_empty() {
        println!("nothing left under prefix {prefix}");
    } else {
        println!("removed {}", removed.join(" "));
    }
    Ok(())
}

/// Where a run puts things; the scenario fields are the caller's.
fn lab_options(lab: LabArgs) -> Options {
    let dir = lab
        .dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("demarc-testbed-{}", lab.prefix)));
    Options {
        kind: Kind::Symmetric,
        duration: Duration::ZERO,
        step_every: Duration::ZERO,
        square: false,
        chromium: false,
        prefix: lab.prefix,
        console: lab.console,
        dir,
    }
}

fn run_scenario(options: Options) -> anyhow::Result<()> {
    // Before any thread exists, so that every thread inherits the mask.
    let signals = Signals::block().context("blocking signals")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = stop.clone();
    std::thread::spawn(move || {
        if let Ok(signal) = signals.wait() {
            tracing::info!("{signal}: ending the call, then removing everything");
            stopper.store(true, Ordering::Relaxed);
        }
    });
    let kind = options.kind;
    let outcome = scenario::run(&options, stop)?;
    print!("{}", outcome.text);
    if outcome.failures.is_empty() {
        println!("{kind}: all checks passed");
        return Ok(());
    }
    for f in &outcome.failures {
        println!("FAIL {f}");
    }
    anyhow::bail!("{kind}: {} check(s) failed", outcome.failures.len())
}
