use std::io;

use crate::delayline::schedule::ScheduleError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the testbed library can fail with; each message is one line a
/// user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("demarc-testbed must run as root (namespaces, veth and TUN need CAP_SYS_ADMIN and CAP_NET_ADMIN)")]
    NotRoot,
    #[error("`{tool}` not found: {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("{path} cannot be opened ({source}): load the tun module (`modprobe tun`) or run where TUN is available")]
    NoTun {
        path: &'static str,
        source: io::Error,
    },
    #[error(
        "invalid prefix {0:?}: use 1-32 characters of a-z, 0-9 and '-', starting with a letter"
    )]
    BadPrefix(String),
    #[error("network namespace {0} already exists and this testbed did not make it: pick another --prefix")]
    NamespaceTaken(String),
    #[error(
        "prefix {prefix} is in use by running process {pid}: stop it or pick another --prefix"
    )]
    PrefixInUse { prefix: String, pid: u32 },
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("entering network namespace {name}: {source}")]
    EnterNetns { name: String, source: io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("schedule {text:?}: {source}")]
    Schedule { text: String, source: ScheduleError },
    #[error("{addr} is in use: the {what} cannot listen there (stop what holds it, or pick another address)")]
    PortInUse {
        addr: std::net::SocketAddr,
        what: String,
    },
    #[error("{name}: {message} (log: {})", log.display())]
    Service {
        name: String,
        message: String,
        log: std::path::PathBuf,
    },
    #[error("peer {host}: {message}")]
    Peer {
        host: crate::topology::Host,
        message: String,
    },
    #[error("benchmark: {0}")]
    Bench(String),
    #[error("delay line {leg}: {message}")]
    DelayLine { leg: String, message: String },
}

impl Error {
    /// An I/O error with what was being done, so the one line names its object.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
