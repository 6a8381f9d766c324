use std::io::IsTerminal;

use anyhow::Context;
use demarc_relay::config::Config;
use demarc_relay::listeners;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

fn main() {
    // key=value fields; colours only for a person at a terminal, not journald.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let (config, unknown) = Config::load(std::env::args_os()).unwrap_or_else(|e| match e {
        demarc_relay::config::ConfigError::Args(e) => e.exit(),
        e => {
            eprintln!("demarc-relay: {e}");
            std::process::exit(2);
        }
    });
    for key in unknown {
        tracing::warn!(key, "unknown config key ignored");
    }
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    // One clear line, not a backtrace: start-up errors are the operator's to fix.
    if let Err(e) = result {
        eprintln!("demarc-relay: {e:#}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let drain_timeout = config.drain_timeout;
    let metrics = config.metrics;
    let running = listeners::start(config, None).await?;
    let endpoints = running.endpoints();
    tracing::info!(
        listeners = ?endpoints.listeners,
        relay_ips = ?endpoints.relay_ips,
        relay_ports = ?endpoints.relay_ports,
        metrics = ?metrics,
        "demarc-relay started"
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = hup.recv() => match running.reload_tls() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed, keeping the old certificate"),
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(
        allocations = running.allocations(),
        timeout_s = drain_timeout.as_secs(),
        "draining: no new allocations"
    );
    tokio::select! {
        () = running.drain(drain_timeout) => tracing::info!("drained, exiting"),
        _ = term.recv() => tracing::info!("second signal, exiting now"),
        _ = int.recv() => tracing::info!("second signal, exiting now"),
    }
    Ok(())
}
