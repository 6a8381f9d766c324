//! Command-line options every probe shares (flattened into each program's CLI).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct ProbeOptions {
    /// Interface to attach the wire hooks to (tc egress and XDP); repeat or comma-separate.
    #[arg(
        long = "iface",
        value_name = "IFACE",
        value_delimiter = ',',
        env = "DEMARC_IFACE"
    )]
    pub ifaces: Vec<String>,

    /// Monitor the named network namespace (from `ip netns add`) instead of the probe's own;
    /// shipping to the console still happens from the namespace the probe was started in.
    #[arg(long, value_name = "NAME", env = "DEMARC_NETNS")]
    pub netns: Option<String>,

    /// Fraction of packets recorded, 0 < R <= 1. Hash-based (RFC 5475), so every probe with
    /// the same rate records the same packets.
    #[arg(long, value_name = "R", default_value_t = 1.0, value_parser = parse_rate, env = "DEMARC_SAMPLE_RATE")]
    pub sample_rate: f64,

    /// Kernel clock to stamp with: tai (bpf_ktime_get_tai_ns, kernel 6.1+) or mono (monotonic +
    /// offset, re-sampled on wall-clock steps). Default: tai where the kernel has it.
    #[arg(long, value_enum, env = "DEMARC_CLOCK")]
    pub clock: Option<ClockArg>,

    /// Write one JSON object per record to PATH (`jsonl:-` for standard output).
    #[arg(long, value_name = "jsonl:PATH", value_parser = parse_output, env = "DEMARC_OUTPUT")]
    pub output: Option<String>,

    /// Ship batches to the console's ingest API at URL (e.g. http://127.0.0.1:8080).
    #[arg(long, value_name = "URL", requires = "token", env = "DEMARC_CONSOLE")]
    pub console: Option<String>,

    /// The probe's token, from `demarc-console token create --name HOST`.
    #[arg(
        long,
        value_name = "T",
        requires = "console",
        env = "DEMARC_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Name the console shows for this probe. Default: the host name (+ "/NETNS" with --netns).
    #[arg(long, env = "DEMARC_NAME")]
    pub name: Option<String>,

    /// Where the probe keeps its id, batch sequence and spool [default: /var/lib/<program>].
    #[arg(long, value_name = "DIR", env = "DEMARC_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Bound of the on-disk spool used while the console is unreachable; past it the oldest
    /// batches are dropped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20, env = "DEMARC_SPOOL_MAX_BYTES")]
    pub spool_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClockArg {
    Tai,
    Mono,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    demarc_proto::sample_threshold(r).map_err(|e| e.to_string())?;
    Ok(r)
}

fn parse_output(s: &str) -> Result<String, String> {
    match s.strip_prefix("jsonl:") {
        Some(path) if !path.is_empty() => Ok(path.into()),
        _ => Err(format!(
            "{s:?}: the only output format is jsonl:PATH (jsonl:- for stdout)"
        )),
    }
}

/// `LO-HI` or a single port.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port (0-65535)"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo > hi {
        return Err(format!("empty range {lo}-{hi}"));
    }
    Ok((lo, hi))
}
