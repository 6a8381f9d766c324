mod cli;
mod signals;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use demarc_testbed::{topology, Config, DelayLine, Host, Leg, Schedules, Topology};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, UpArgs};
use signals::Signals;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(*args),
        Command::Down { prefix } => down(&prefix),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demarc-testbed: {e:#}");
            ExitCode::FAILURE
        }
    }
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
