//! What demarc's probes share, in data-path order: attach programs
//! ([`attach`], in a chosen network namespace via [`netns`]), read records from
//! the ring buffer ([`ringbuf`]), convert kernel time to UTC ([`clock`]) and
//! records to the ingest form ([`decode`]), collect health ([`health`]), batch
//! ([`batch`]) and deliver batches to JSONL files or the console ([`sink`],
//! [`ship`], [`spool`]). [`pipeline`] ties them together.

pub mod attach;
pub mod batch;
pub mod clock;
pub mod decode;
pub mod dwell;
pub mod health;
pub mod netns;
pub mod options;
pub mod pipeline;
pub mod probe;
pub mod ringbuf;
pub mod ship;
pub mod sink;
pub mod spool;

/// The agent's errors; each says what failed and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network namespace {name:?} not found ({path}); list them with `ip netns list`")]
    NetnsNotFound { name: String, path: String },
    #[error("cannot enter network namespace {name:?}: {source} (needs root / CAP_SYS_ADMIN)")]
    NetnsEnter {
        name: String,
        source: std::io::Error,
    },
    #[error("interface {iface:?} not found in {netns}; list them with `ip link`")]
    UnknownInterface { iface: String, netns: String },
    #[error("no permission: missing {0}; run as root (or grant those capabilities)")]
    Permission(String),
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux: the kernel needs CONFIG_DEBUG_INFO_BTF"
    )]
    MissingBtf,
    #[error("tracefs is not mounted and mounting it failed ({0}); run `mount -t tracefs tracefs /sys/kernel/tracing`")]
    Tracefs(std::io::Error),
    #[error("loading the BPF programs failed: {0} (needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN)")]
    Load(#[from] aya::EbpfError),
    #[error("BPF program {name}: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error("BPF map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("--clock tai needs kernel 6.1+ (bpf_ktime_get_tai_ns); use --clock mono")]
    NoTai,
    #[error("nothing to do: give --output jsonl:PATH and/or --console URL --token T")]
    NoOutput,
    #[error("{0}")]
    Option(String),
    #[error("netns inode {0} does not fit the 32-bit ABI field")]
    NetnsInode(u64),
    #[error("{0}: {1}")]
    State(String, std::io::Error),
    #[error("invalid console URL {url:?}: {reason}")]
    ConsoleUrl { url: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
