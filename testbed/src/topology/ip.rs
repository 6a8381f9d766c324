//! Running iproute2's `ip`, so that a failure names the exact command and
//! what `ip` said about it.

use std::io::ErrorKind;

use crate::{command, Error, Result};

/// Runs `ip -n NETNS ARGS…` (`ip ARGS…` without a namespace); `args` is split
/// on whitespace, which is safe because every name the testbed passes is
/// checked to hold none.
pub fn ip(netns: Option<&str>, args: &str) -> Result<()> {
    ip_output(netns, args).map(drop)
}

/// [`ip`], returning what it printed.
pub fn ip_output(netns: Option<&str>, args: &str) -> Result<String> {
    let mut argv: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["-n", ns]);
    }
    argv.extend(args.split_whitespace());
    command::output("ip", &argv).map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => missing_ip(),
        e => e,
    })
}

fn missing_ip() -> Error {
    Error::MissingTool {
        tool: "ip",
        hint: "install iproute2 (scripts/setup.sh does)",
    }
}
