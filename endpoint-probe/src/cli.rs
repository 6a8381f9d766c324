//! The command line: a contract that users, scripts and tests rely on.

use clap::Parser;
use demarc_agent::options::{parse_ports, ProbeOptions};

#[derive(Debug, Parser)]
#[command(
    name = "demarc-probe",
    version,
    about = "Timestamps real media packets at app_send, tx_wire, rx_wire and app_recv with eBPF",
    long_about = concat!(
        "Timestamps real media packets (RTP, RTCP, DTLS, STUN, TURN-framed) with eBPF at four ",
        "points of this host, without any change to the applications:\n",
        "  app_send  syscall entry of sendto/sendmsg/sendmmsg\n",
        "  tx_wire   tc egress of each --iface\n",
        "  rx_wire   XDP (driver mode) of each --iface, else tc ingress\n",
        "  app_recv  syscall exit of recvfrom/recvmsg/recvmmsg\n\n",
        "Only sockets of the monitored network namespace are recorded: the probe's own, or ",
        "--netns NAME. `ip netns exec NS demarc-probe ...` monitors NS. Sockets driven by ",
        "io_uring are not seen.\n\n",
        "Runs until SIGINT/SIGTERM, then detaches, drains and flushes everything it holds."
    )
)]
pub struct Cli {
    #[command(flatten)]
    pub probe: ProbeOptions,

    /// Record only datagrams whose local or remote UDP port is in LO-HI (e.g. 3478-3478).
    #[arg(long, value_name = "LO-HI", value_parser = parse_ports, env = "DEMARC_PORTS")]
    pub ports: Option<(u16, u16)>,
}

#[cfg(test)]
mod tests {
    use demarc_agent::options::ClockArg;

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
        assert_eq!(cli.probe.ifaces, ["eth0", "eth1", "eth2"]);
        assert_eq!(cli.probe.sample_rate, 0.25);
        assert_eq!(cli.probe.clock, Some(ClockArg::Mono));
        assert_eq!(cli.ports, Some((3478, 3480)));
        assert_eq!(cli.probe.output.as_deref(), Some("/tmp/x.jsonl"));
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
        ] {
            let argv = std::iter::once("demarc-probe").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?} accepted");
        }
    }
}
