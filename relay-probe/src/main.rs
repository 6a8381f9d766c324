use std::io::IsTerminal;

use anyhow::Context;
use demarc_agent::{dwell::RelayPorts, probe::exit_report};
use demarc_relay::config::Config;
use demarc_relay::fastpath::Installer;
use demarc_relay::listeners;
use demarc_relay::metrics::KernelDwell;
use demarc_relay::probe::{self, Stop};
use demarc_relay::turn::Transport;
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
    if config.probe_only {
        return probe_only(config);
    }
    let result = runtime(config.relay_threads)
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(run(config)));
    // One clear line, not a backtrace: start-up errors are the operator's to fix.
    if let Err(e) = result {
        eprintln!("demarc-relay: {e:#}");
        std::process::exit(1);
    }
}

/// `relay-threads`: one thread gets a current-thread runtime, so a server
/// pinned to one core never hands work between two workers.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
        None => tokio::runtime::Runtime::new(),
    }
}

/// `--probe-only`: the dwell probe beside another TURN server, until a signal.
fn probe_only(config: Config) {
    let ports = RelayPorts {
        listeners: vec![config.port],
        relay: config.min_port..=config.max_port,
    };
    let summary = probe::start(config.probe, ports, Stop::Signal, false).and_then(|started| {
        started
            .thread
            .join()
            .map_err(|_| anyhow::anyhow!("the dwell probe panicked"))?
    });
    match summary {
        Ok(s) => eprint!("{}", exit_report("demarc-relay", &s)),
        Err(e) => {
            eprintln!("demarc-relay: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let drain_timeout = config.drain_timeout;
    let metrics = config.metrics;
    let probe_opts = config.probe.clone();
    let fast = config.xdp_fast_path;
    let mut running = listeners::start(config, None).await?;
    let endpoints = running.endpoints().clone();
    // The dwell probe watches the UDP listeners and the relay ports, and
    // stops only after the server has drained.
    let probe = if probe_opts.ifaces.is_empty() {
        None
    } else {
        let mut listeners: Vec<u16> = endpoints
            .listeners
            .iter()
            .filter(|(t, _)| *t == Transport::Udp)
            .map(|(_, a)| a.port())
            .collect();
        listeners.sort_unstable();
        listeners.dedup();
        let ports = RelayPorts {
            listeners,
            relay: endpoints.relay_ports.clone(),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let started = probe::start(probe_opts, ports.clone(), Stop::When(stop_rx), fast)?;
        let reader = started.reader;
        running
            .metrics()
            .set_kernel_dwell(KernelDwell(Box::new(move || {
                let mut out = probe::render_kernel_dwell(&reader.read());
                if let Some(stats) = reader.fast_stats() {
                    out.push_str(&probe::render_fast_path(&stats));
                }
                out
            })));
        if fast
            && endpoints
                .listeners
                .iter()
                .any(|(t, a)| *t == Transport::Udp && a.ip().is_unspecified())
        {
            // The kernel matches a client's packets by the address it sent to.
            tracing::warn!("xdp-fast-path skips clients of wildcard listeners: give listening-ip");
        }
        if let Some(maps) = started.fast {
            running.start_fast_path(Installer::new(maps, ports.listeners));
        }
        Some((stop_tx, started.thread))
    };
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
    if let Some((stop, thread)) = probe {
        let _ = stop.send(());
        let summary = tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the dwell probe panicked"))??;
        eprint!("{}", exit_report("demarc-relay", &summary));
    }
    Ok(())
}
