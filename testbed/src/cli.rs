//! Command-line options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
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
