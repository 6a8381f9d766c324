//! The command line: a contract that users, scripts and tests rely on.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "demarc-probe",
    version,
    about = "Timestamps real media packets at app_send, tx_wire, rx_wire and app_recv with eBPF",
    long_about = "Timestamps real media packets (RTP, RTCP, DTLS, STUN, TURN-framed) with eBPF at \
four points of this host, without any change to the applications:\n\
  app_send  syscall entry of sendto/sendmsg/sendmmsg\n\
  tx_wire   tc egress of each --iface\n\
  rx_wire   XDP of each --iface (driver mode where available, else skb mode)\n\
  app_recv  syscall exit of recvfrom/recvmsg/recvmmsg\n\n\
Only sockets of the monitored network namespace are recorded: the probe's own, or --netns NAME. \
`ip netns exec NS demarc-probe ...` monitors NS. Sockets driven by io_uring are not seen.\n\n\
Runs until SIGINT/SIGTERM, then detaches, drains and flushes everything it holds."
)]
pub struct Cli {
    /// Interface for tx_wire (tc egress) and rx_wire (XDP); repeat or comma-separate for several.
    #[arg(
        long = "iface",
        value_name = "IFACE",
        required = true,
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

    /// Record only datagrams whose local or remote UDP port is in LO-HI (e.g. 3478-3478).
    #[arg(long, value_name = "LO-HI", value_parser = parse_ports, env = "DEMARC_PORTS")]
    pub ports: Option<(u16, u16)>,

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

    /// Where the probe keeps its id, batch sequence and spool.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/demarc-probe",
        env = "DEMARC_STATE_DIR"
    )]
    pub state_dir: PathBuf,

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

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
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

fn parse_output(s: &str) -> Result<String, String> {
    match s.strip_prefix("jsonl:") {
        Some(path) if !path.is_empty() => Ok(path.into()),
        _ => Err(format!(
            "{s:?}: the only output format is jsonl:PATH (jsonl:- for stdout)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_command_line() {
        let cli = Cli::try_parse_from([
            "demarc-probe",
            "--iface",
            "eth0",
            "--iface",
            "eth1,eth2",
            "--netns",
            "a",
            "--sample-rate",
            "0.25",
            "--clock",
            "mono",
            "--ports",
            "3478-3480",
            "--output",
            "jsonl:/tmp/x.jsonl",
            "--console",
            "http://127.0.0.1:8080",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.ifaces, ["eth0", "eth1", "eth2"]);
        assert_eq!(cli.sample_rate, 0.25);
        assert_eq!(cli.clock, Some(ClockArg::Mono));
        assert_eq!(cli.ports, Some((3478, 3480)));
        assert_eq!(cli.output.as_deref(), Some("/tmp/x.jsonl"));
    }

    #[test]
    fn rejects_bad_values_with_a_reason() {
        for args in [
            &["--iface", "e", "--sample-rate", "0"][..],
            &["--iface", "e", "--sample-rate", "1.5"],
            &["--iface", "e", "--ports", "9-3"],
            &["--iface", "e", "--ports", "x"],
            &["--iface", "e", "--output", "csv:/tmp/x"],
            &["--iface", "e", "--console", "http://x"],
            &[],
        ] {
            let argv = std::iter::once("demarc-probe").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?} accepted");
        }
    }
}
