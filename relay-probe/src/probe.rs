//! The eBPF dwell probe, inside the relay or beside another TURN server
//! (`--probe-only`): relay_in/relay_out records to the console or JSONL, and
//! the complete in-kernel dwell histograms for /metrics.

use std::{
    fmt::Write as _,
    sync::{mpsc, Arc},
    thread::JoinHandle,
};

use demarc_agent::{
    dwell::{
        load_relay, DwellHistogram, DwellReader, FastMaps, FastStats, RelayDirection, RelayPorts,
    },
    options::ProbeOptions,
    pipeline::Summary,
    probe::{Attached, Prepared},
};
use demarc_proto::{ingest::ProbeKind, Point};

/// How the probe stops.
pub enum Stop {
    /// On SIGINT/SIGTERM (`--probe-only`: the probe is the program).
    Signal,
    /// When the server says so (after it has drained).
    When(tokio::sync::oneshot::Receiver<()>),
}

/// A probe that is attached and running.
pub struct Started {
    pub reader: Arc<DwellReader>,
    /// The fast path's route maps, when it was asked for.
    pub fast: Option<FastMaps>,
    pub thread: JoinHandle<anyhow::Result<Summary>>,
}

/// Loads and attaches the probe on a thread of its own (its runtime is
/// single-threaded and apart from the server's). Returns once everything is
/// attached, or with the reason it could not be. With `fast`, relay_fast
/// replaces relay_in and its route maps come back for the relay to fill.
pub fn start(
    opts: ProbeOptions,
    ports: RelayPorts,
    stop: Stop,
    fast: bool,
) -> anyhow::Result<Started> {
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("demarc-dwell".into())
        .spawn(move || -> anyhow::Result<Summary> {
            let attached = (|| -> anyhow::Result<_> {
                let prepared = Prepared::new(opts, "demarc-relay")?;
                let (mut ebpf, hooks, fallbacks) = load_relay(&prepared, &ports, fast)?;
                let reader = Arc::new(DwellReader::new(&mut ebpf, &ports, fast)?);
                let maps = fast.then(|| FastMaps::take(&mut ebpf)).transpose()?;
                Ok((prepared, ebpf, hooks, fallbacks, reader, maps))
            })();
            let (prepared, ebpf, hooks, fallbacks, reader, maps) = match attached {
                Ok(a) => a,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok((reader, maps)));
            let attached = Attached {
                ebpf,
                kind: ProbeKind::Relay,
                points: vec![Point::RelayIn, Point::RelayOut],
                hooks,
                fallbacks,
                notes: vec![format!(
                    "relay ports: listeners {:?}, relay range {}-{}{}",
                    ports.listeners,
                    ports.relay.start(),
                    ports.relay.end(),
                    if fast { ", XDP fast path on" } else { "" }
                )],
            };
            Ok(match stop {
                Stop::Signal => prepared.run(attached)?,
                Stop::When(rx) => prepared.run_until(attached, async {
                    let _ = rx.await;
                })?,
            })
        })?;
    match ready_rx.recv() {
        Ok(Ok((reader, fast))) => Ok(Started {
            reader,
            fast,
            thread,
        }),
        Ok(Err(e)) => Err(anyhow::anyhow!(e)),
        Err(_) => Err(anyhow::anyhow!(
            "the dwell probe thread died while starting"
        )),
    }
}

/// Prometheus `le` bounds (seconds) of the kernel dwell histograms.
const LE_SECONDS: [f64; 16] = [
    1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 20e-3,
    50e-3, 100e-3,
];

/// The fast path's counters in Prometheus text format.
pub fn render_fast_path(stats: &FastStats) -> String {
    let mut out = String::new();
    for (name, what, values) in [
        ("packets", "Datagrams", &stats.packets),
        ("bytes", "Payload bytes of datagrams", &stats.bytes),
    ] {
        let name = format!("demarc_relay_fast_path_{name}_total");
        let _ = writeln!(
            out,
            "# HELP {name} {what} relayed in the kernel by the XDP fast path, by arrival direction.\n# TYPE {name} counter"
        );
        for dir in [RelayDirection::ClientToPeer, RelayDirection::PeerToClient] {
            let v = values[dir as usize];
            let _ = writeln!(out, "{name}{{direction=\"{}\"}} {v}", dir.as_str());
        }
    }
    out
}

/// The kernel-measured dwell histograms in Prometheus text format. A fine
/// bucket counts toward `le` only when all of it lies below `le`.
pub fn render_kernel_dwell(hists: &[DwellHistogram]) -> String {
    let name = "demarc_relay_kernel_dwell_seconds";
    let mut out = format!(
        "# HELP {name} Time a relayed packet spent in the relay host, XDP in to tc egress out, every packet.\n\
         # TYPE {name} histogram\n"
    );
    for h in hists {
        let labels = format!(
            "listener=\"{}\",direction=\"{}\"",
            h.listener,
            h.direction.as_str()
        );
        let fine: Vec<(u64, u64, u64)> = h.nonzero().collect();
        for le in LE_SECONDS {
            let le_ns = (le * 1e9) as u64;
            let n: u64 = fine
                .iter()
                .filter(|(_, hi, _)| *hi <= le_ns)
                .map(|b| b.2)
                .sum();
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
        }
        let total = h.count();
        // The exact sum is not kept in the kernel; bucket midpoints estimate it.
        let sum_ns: f64 = fine
            .iter()
            .map(|(lo, hi, n)| (lo + hi) as f64 / 2.0 * *n as f64)
            .sum();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_ns / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
    }
    out
}
