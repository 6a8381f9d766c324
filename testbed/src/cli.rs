//! Command-line options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use demarc_testbed::scenario::Kind;
use demarc_testbed::topology::DEFAULT_PREFIX;
use demarc_testbed::Schedule;

#[derive(Debug, Parser)]
#[command(
    name = "demarc-testbed",
    version,
    about = "demarc's lab: namespaces a — wan-a — relay — wan-b — b with a TUN delay line in each wan"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the namespaces, run the delay line until Ctrl-C (or SIGTERM),
    /// then remove everything.
    Up(Box<UpArgs>),
    /// Remove what a run that died left behind under a prefix.
    Down {
        #[arg(long, default_value = DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Run a whole call through the lab (console, relay, probes, delay
    /// lines, WebRTC peers) and check every measured segment against the
    /// delay line's log; exits non-zero when a check fails.
    Scenario(ScenarioArgs),
    /// The `steps` scenario until Ctrl-C, with the console left at
    /// http://127.0.0.1:8080 showing it.
    Demo(LabArgs),
    /// demarc-relay against coturn, same cores, same load: throughput at
    /// <1% loss, CPU per packet, round trips, dwell from the eBPF probe,
    /// with the probe on and off. Prints a Markdown table.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs of every configuration (medians and spreads are over these).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Payload sizes in bytes (RTP header included), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "160,1200")]
    pub payloads: Vec<usize>,
    /// Servers to measure, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "demarc,demarc-xdp,coturn"
    )]
    pub servers: Vec<BenchServer>,
    /// Probe states to measure: off (no probe), on (the dwell probe beside the server).
    #[arg(long, value_delimiter = ',', default_value = "off,on")]
    pub probe: Vec<ProbeState>,
    /// Sending time of each trial of the rate sweep.
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    pub trial: Duration,
    /// Client pairs of the load generator.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// CPU the server (and the probe's thread) runs on.
    #[arg(long, default_value_t = 1)]
    pub server_cpu: usize,
    /// CPU the load generator runs on.
    #[arg(long, default_value_t = 0)]
    pub load_cpu: usize,
    /// Leave loopback receive processing on the sending CPU instead of
    /// steering it (RPS) to the server's CPU.
    #[arg(long)]
    pub no_rx_steering: bool,
    /// Pings per second of the round-trip measurement.
    #[arg(long, default_value_t = 5000.0)]
    pub rtt_rate: f64,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Namespace PREFIX-bench.
    #[arg(long, default_value = "dmcbench")]
    pub prefix: String,
    /// Server logs and the probe's sampled records [default: /tmp/demarc-bench].
    #[arg(long, default_value = "/tmp/demarc-bench")]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeState {
    Off,
    On,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchServer {
    Demarc,
    Coturn,
    /// demarc-relay with its XDP fast path (measured with the probe on only).
    DemarcXdp,
}

/// Where a run puts things.
#[derive(Debug, Args)]
pub struct LabArgs {
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Where the console listens (root namespace).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub console: SocketAddr,
    /// Logs, console database, probe output, delay-line log
    /// [default: /tmp/demarc-testbed-PREFIX].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ScenarioArgs {
    /// symmetric, asymmetric, steps, relay-load or browser.
    pub name: Kind,
    /// How long the peers send once connected (`90s`, `2m`).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// `steps`: interval between the +2 ms steps of A → B.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub step_every: Duration,
    /// Headless Chromium as the peers instead of the webrtc crate's.
    #[arg(long)]
    pub chromium: bool,
    #[command(flatten)]
    pub lab: LabArgs,
}

/// `90s`, `2m`, `500ms`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 90s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: ms, s, m or h")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Delay schedules are `20ms`, `20ms~1ms` (uniform jitter),
/// `20ms,+2ms@60s,-2ms@120s` (steps at times after the start).
/// A→B crosses a-to-relay then relay-to-b; B→A b-to-relay then relay-to-a.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Namespaces are named PREFIX-a, PREFIX-wan-a, PREFIX-relay, PREFIX-wan-b, PREFIX-b.
    #[arg(long, default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// Delay from a to the relay (in wan-a).
    #[arg(long, value_name = "SCHEDULE", default_value = "0ms")]
    pub a_to_relay: Schedule,
    /// Delay from the relay to a (in wan-a).
    #[arg(long, value_name = "SCHEDULE", default_value = "0ms")]
    pub relay_to_a: Schedule,
    /// Delay from b to the relay (in wan-b).
    #[arg(long, value_name = "SCHEDULE", default_value = "0ms")]
    pub b_to_relay: Schedule,
    /// Delay from the relay to b (in wan-b).
    #[arg(long, value_name = "SCHEDULE", default_value = "0ms")]
    pub relay_to_b: Schedule,
    /// Ground-truth log, one JSON line per packet and leg [default: PREFIX-holds.jsonl].
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Seed for jitter draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
