//! Options: coturn's `turnserver.conf` keys, the same names as command-line
//! flags, and `DEMARC_RELAY_*` environment variables.
//!
//! A config file is read the way coturn reads it: each `key=value` (or bare
//! `key`) line is the flag `--key=value`. File lines are parsed before the
//! command line, so a flag given on the command line wins over the file; for
//! list options (`user`, `listening-ip`, …) both add up. An environment
//! variable applies only when neither gives the option.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::auth::Credentials;
use crate::policy::{IpRange, PeerPolicy};
use crate::turn::{ExternalIp, Settings};

/// coturn keys that are accepted without effect: they ask for what
/// demarc-relay always does, or for coturn features it replaces.
const ACCEPTED_WITHOUT_EFFECT: &[&str] = &[
    "fingerprint",        // FINGERPRINT is always added
    "lt-cred-mech",       // long-term credentials are the only mechanism
    "no-multicast-peers", // multicast peers are denied by default
    "no-loopback-peers",  // loopback peers are denied by default
    "no-cli",             // there is no telnet CLI
    "no-dtls",            // there is no DTLS listener
    "verbose",
    "Verbose",
    "no-stdout-log", // logs go to stdout/journald; use RUST_LOG
    "simple-log",
    "log-file",
    "syslog",
    "pidfile", // systemd tracks the process
    "proc-user",
    "proc-group",
    "no-tlsv1",
    "no-tlsv1_1", // rustls never speaks TLS < 1.2
];

#[derive(Debug, Parser)]
#[command(
    name = "demarc-relay",
    version,
    about = "TURN server (RFC 8656, RFC 6156) that reads coturn's turnserver.conf",
    long_about = "TURN server (RFC 8656, RFC 6156) that reads coturn's turnserver.conf.\n\n\
        Every option is also a config-file key (key=value, or a bare key for flags). \
        The command line wins over the file, the file over DEMARC_RELAY_* variables. \
        Unknown file keys are warned about once and ignored.",
    args_override_self = true
)]
pub struct Cli {
    /// coturn-style configuration file.
    #[arg(short = 'c', long, env = "DEMARC_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// UDP and TCP listening port.
    #[arg(
        short = 'p',
        long,
        default_value_t = 3478,
        env = "DEMARC_RELAY_LISTENING_PORT"
    )]
    pub listening_port: u16,

    /// TLS listening port.
    #[arg(long, default_value_t = 5349, env = "DEMARC_RELAY_TLS_LISTENING_PORT")]
    pub tls_listening_port: u16,

    /// Listening address; repeat for several. Default: 0.0.0.0 and ::.
    #[arg(
        short = 'L',
        long,
        env = "DEMARC_RELAY_LISTENING_IP",
        value_delimiter = ','
    )]
    pub listening_ip: Vec<IpAddr>,

    /// Address relay sockets bind to; repeat for IPv4 and IPv6. Default: the
    /// listening addresses, a wildcard replaced by its family's default-route
    /// source address.
    #[arg(
        short = 'E',
        long,
        env = "DEMARC_RELAY_RELAY_IP",
        value_delimiter = ','
    )]
    pub relay_ip: Vec<IpAddr>,

    /// Public address told to clients, `public` or `public/private` (NAT).
    #[arg(
        short = 'X',
        long,
        env = "DEMARC_RELAY_EXTERNAL_IP",
        value_delimiter = ','
    )]
    pub external_ip: Vec<String>,

    /// Lowest relay port.
    #[arg(long, default_value_t = 49152, env = "DEMARC_RELAY_MIN_PORT")]
    pub min_port: u16,

    /// Highest relay port.
    #[arg(long, default_value_t = 65535, env = "DEMARC_RELAY_MAX_PORT")]
    pub max_port: u16,

    /// Realm for long-term credentials.
    #[arg(
        short = 'r',
        long,
        default_value = "demarc",
        env = "DEMARC_RELAY_REALM"
    )]
    pub realm: String,

    /// Static user, `name:password`; repeat for several.
    #[arg(
        short = 'u',
        long,
        env = "DEMARC_RELAY_USER",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub user: Vec<String>,

    /// Accept TURN REST-API credentials (`expiry:user`, password = base64 HMAC-SHA1).
    #[arg(long, env = "DEMARC_RELAY_USE_AUTH_SECRET")]
    pub use_auth_secret: bool,

    /// Shared secret for REST-API credentials; repeat to rotate (all are accepted).
    #[arg(
        long,
        env = "DEMARC_RELAY_STATIC_AUTH_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub static_auth_secret: Vec<String>,

    /// Separator between expiry and user name in REST-API usernames.
    #[arg(long, default_value_t = ':', env = "DEMARC_RELAY_REST_API_SEPARATOR")]
    pub rest_api_separator: char,

    /// Nonce lifetime in seconds (`stale-nonce` alone means 600).
    #[arg(long, num_args = 0..=1, default_missing_value = "600", default_value_t = 600,
          env = "DEMARC_RELAY_STALE_NONCE")]
    pub stale_nonce: u64,

    /// TLS certificate chain (PEM). TLS listens only when this is set; reloaded on SIGHUP.
    #[arg(long, env = "DEMARC_RELAY_CERT")]
    pub cert: Option<PathBuf>,

    /// TLS private key (PEM); reloaded on SIGHUP.
    #[arg(long, env = "DEMARC_RELAY_PKEY")]
    pub pkey: Option<PathBuf>,

    /// Allocations one user may hold at once; 0 is unlimited.
    #[arg(long, default_value_t = 0, env = "DEMARC_RELAY_USER_QUOTA")]
    pub user_quota: u32,

    /// Allocations the server holds at once; 0 is unlimited.
    #[arg(long, default_value_t = 0, env = "DEMARC_RELAY_TOTAL_QUOTA")]
    pub total_quota: u32,

    /// Bytes per second one allocation may relay, each direction; 0 is unlimited.
    #[arg(long, default_value_t = 0, env = "DEMARC_RELAY_MAX_BPS")]
    pub max_bps: u64,

    /// Longest allocation lifetime a client may ask for, in seconds.
    #[arg(
        long,
        default_value_t = 3600,
        env = "DEMARC_RELAY_MAX_ALLOCATE_LIFETIME"
    )]
    pub max_allocate_lifetime: u64,

    /// Channel binding lifetime, in seconds.
    #[arg(long, default_value_t = 600, env = "DEMARC_RELAY_CHANNEL_LIFETIME")]
    pub channel_lifetime: u64,

    /// Permission lifetime, in seconds.
    #[arg(long, default_value_t = 300, env = "DEMARC_RELAY_PERMISSION_LIFETIME")]
    pub permission_lifetime: u64,

    /// Peer range to allow even where denied by default: an address,
    /// `first-last`, or `prefix/len`; repeat for several.
    #[arg(long, env = "DEMARC_RELAY_ALLOWED_PEER_IP", value_delimiter = ',')]
    pub allowed_peer_ip: Vec<String>,

    /// Peer range to deny in addition to the defaults.
    #[arg(long, env = "DEMARC_RELAY_DENIED_PEER_IP", value_delimiter = ',')]
    pub denied_peer_ip: Vec<String>,

    /// Allow loopback peers (127/8, ::1 and their IPv4-in-IPv6 forms). For tests.
    #[arg(long, env = "DEMARC_RELAY_ALLOW_LOOPBACK_PEERS")]
    pub allow_loopback_peers: bool,

    /// No UDP listener.
    #[arg(long, env = "DEMARC_RELAY_NO_UDP")]
    pub no_udp: bool,

    /// No TCP listener.
    #[arg(long, env = "DEMARC_RELAY_NO_TCP")]
    pub no_tcp: bool,

    /// No TLS listener.
    #[arg(long, env = "DEMARC_RELAY_NO_TLS")]
    pub no_tls: bool,

    /// Serve Prometheus metrics at /metrics.
    #[arg(long, env = "DEMARC_RELAY_PROMETHEUS")]
    pub prometheus: bool,

    /// Port for /metrics.
    #[arg(long, default_value_t = 9641, env = "DEMARC_RELAY_PROMETHEUS_PORT")]
    pub prometheus_port: u16,

    /// Address for /metrics (coturn binds all; here loopback unless told).
    #[arg(
        long,
        default_value = "127.0.0.1",
        env = "DEMARC_RELAY_PROMETHEUS_ADDRESS"
    )]
    pub prometheus_address: IpAddr,

    /// After SIGTERM, how long existing allocations may go on, in seconds.
    #[arg(long, default_value_t = 60, env = "DEMARC_RELAY_DRAIN_TIMEOUT")]
    pub drain_timeout: u64,

    /// Threads that relay; 0 or 1 runs everything on one thread. Default: one per CPU.
    #[arg(long, env = "DEMARC_RELAY_RELAY_THREADS")]
    pub relay_threads: Option<usize>,

    /// Run only the dwell probe, beside another TURN server (coturn) listening on
    /// listening-port with relay ports min-port..max-port; needs --iface.
    #[arg(long, requires = "ifaces", env = "DEMARC_RELAY_PROBE_ONLY")]
    pub probe_only: bool,

    /// Relay the UDP ChannelData of bound channels in the kernel (XDP on the
    /// probe's interfaces) for IPv4 clients on listeners with a fixed address
    /// and no max-bps; needs --iface. Dwell is still measured.
    #[arg(
        long,
        requires = "ifaces",
        conflicts_with = "probe_only",
        env = "DEMARC_RELAY_XDP_FAST_PATH"
    )]
    pub xdp_fast_path: bool,

    /// The eBPF dwell probe: attached when --iface is given.
    #[command(flatten, next_help_heading = "Dwell probe (eBPF relay_in/relay_out)")]
    pub probe: demarc_agent::options::ProbeOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(transparent)]
    Args(#[from] clap::Error),
    #[error("{0}")]
    Invalid(String),
}

/// TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub listening_ips: Vec<IpAddr>,
    pub relay_ips: Vec<IpAddr>,
    pub port: u16,
    pub tls_port: u16,
    pub udp: bool,
    pub tcp: bool,
    pub tls: Option<TlsFiles>,
    pub min_port: u16,
    pub max_port: u16,
    pub metrics: Option<SocketAddr>,
    pub drain_timeout: Duration,
    /// Runtime worker threads; `None` is one per CPU, 0 and 1 a single
    /// thread (coturn's 0 also means "relay on the listener's thread").
    pub relay_threads: Option<usize>,
    /// No TURN server, only the dwell probe beside another one.
    pub probe_only: bool,
    /// Relay bound channels in the kernel (XDP), beside the probe.
    pub xdp_fast_path: bool,
    /// Dwell probe options; the probe runs when they name an interface.
    pub probe: demarc_agent::options::ProbeOptions,
}

impl Config {
    /// Parses `args` (argv, program name first), reading the config file they
    /// name. Returns the config and the file's unknown keys, one each.
    pub fn load<I, T>(args: I) -> Result<(Self, Vec<String>), ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let first = Cli::try_parse_from(&args)?;
        let (file_args, unknown) = match &first.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                file_args(&text).map_err(|(line, message)| ConfigError::Line {
                    path: path.clone(),
                    line,
                    message,
                })?
            }
            None => (Vec::new(), Vec::new()),
        };
        let cli = if file_args.is_empty() {
            first
        } else {
            let mut all = vec![args[0].clone()];
            all.extend(file_args);
            all.extend(args[1..].iter().cloned());
            Cli::try_parse_from(all)?
        };
        Ok((Self::from_cli(cli, default_route_source)?, unknown))
    }

    /// Validates `cli`. `route_source` finds the address a wildcard listener
    /// relays from when no `relay-ip` is given (coturn picks one too).
    pub fn from_cli(
        cli: Cli,
        route_source: fn(IpAddr) -> Option<IpAddr>,
    ) -> Result<Self, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let mut users = HashMap::new();
        for entry in &cli.user {
            let (name, password) = entry
                .split_once(':')
                .ok_or_else(|| invalid(format!("user {entry:?}: expected name:password")))?;
            if password.starts_with("0x") {
                return Err(invalid(format!(
                    "user {name:?}: hashed keys (0x…) are not supported, give the password"
                )));
            }
            users.insert(name.to_string(), password.to_string());
        }
        if cli.use_auth_secret && cli.static_auth_secret.is_empty() {
            return Err(invalid(
                "use-auth-secret needs at least one static-auth-secret".into(),
            ));
        }
        let secrets = if cli.use_auth_secret {
            cli.static_auth_secret.clone()
        } else {
            Vec::new()
        };
        if users.is_empty() && secrets.is_empty() && !cli.probe_only {
            return Err(invalid(
                "no credentials: give user=name:password, or use-auth-secret with static-auth-secret"
                    .into(),
            ));
        }
        let ranges = |list: &[String]| -> Result<Vec<IpRange>, ConfigError> {
            list.iter()
                .map(|s| s.parse().map_err(|e| invalid(format!("{e}"))))
                .collect()
        };
        let policy = PeerPolicy {
            allowed: ranges(&cli.allowed_peer_ip)?,
            denied: ranges(&cli.denied_peer_ip)?,
            allow_loopback: cli.allow_loopback_peers,
        };
        let external_ips = cli
            .external_ip
            .iter()
            .map(|s| {
                parse_external(s).ok_or_else(|| {
                    invalid(format!(
                        "external-ip {s:?}: expected public or public/private"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if cli.min_port > cli.max_port || cli.min_port == 0 {
            return Err(invalid(format!(
                "relay port range {}-{} is empty",
                cli.min_port, cli.max_port
            )));
        }
        if cli.realm.is_empty() || cli.realm.len() > 763 {
            return Err(invalid("realm must be 1 to 763 bytes".into()));
        }
        if cli.stale_nonce < 30 {
            return Err(invalid("stale-nonce must be at least 30 seconds".into()));
        }
        let listening_ips = if cli.listening_ip.is_empty() {
            vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
        } else {
            cli.listening_ip.clone()
        };
        // A relay socket on a wildcard address cannot tell clients where it
        // is, unless an external-ip says so.
        let advertised = |ip: &IpAddr| {
            !ip.is_unspecified()
                || external_ips.iter().any(|e| {
                    e.private.is_none_or(|p| p == *ip) && e.public.is_ipv4() == ip.is_ipv4()
                })
        };
        let relay_ips: Vec<IpAddr> = if cli.relay_ip.is_empty() {
            let mut ips: Vec<IpAddr> = listening_ips
                .iter()
                .map(|&ip| match ip {
                    ip if advertised(&ip) => ip,
                    wildcard => route_source(wildcard).unwrap_or(wildcard),
                })
                .filter(advertised)
                .collect();
            ips.dedup();
            ips
        } else {
            cli.relay_ip.clone()
        };
        if relay_ips.is_empty() || !relay_ips.iter().all(advertised) {
            return Err(invalid(
                "relay-ip must name the addresses relay sockets bind to (a wildcard only with a \
                 matching external-ip)"
                    .into(),
            ));
        }
        let tls = match (&cli.cert, &cli.pkey, cli.no_tls) {
            (_, _, true) | (None, None, false) => None,
            (Some(cert), Some(key), false) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => return Err(invalid("TLS needs both cert and pkey".into())),
        };
        let settings = Settings {
            realm: cli.realm.clone(),
            credentials: Credentials {
                users,
                secrets,
                separator: cli.rest_api_separator,
            },
            policy,
            user_quota: cli.user_quota,
            total_quota: cli.total_quota,
            max_bps: cli.max_bps,
            max_lifetime: Duration::from_secs(cli.max_allocate_lifetime),
            permission_lifetime: Duration::from_secs(cli.permission_lifetime),
            channel_lifetime: Duration::from_secs(cli.channel_lifetime),
            nonce_lifetime: Duration::from_secs(cli.stale_nonce),
            external_ips,
            ..Settings::default()
        };
        Ok(Self {
            settings,
            listening_ips,
            relay_ips,
            port: cli.listening_port,
            tls_port: cli.tls_listening_port,
            udp: !cli.no_udp,
            tcp: !cli.no_tcp,
            tls,
            min_port: cli.min_port,
            max_port: cli.max_port,
            metrics: cli
                .prometheus
                .then(|| SocketAddr::new(cli.prometheus_address, cli.prometheus_port)),
            drain_timeout: Duration::from_secs(cli.drain_timeout),
            relay_threads: cli.relay_threads,
            probe_only: cli.probe_only,
            xdp_fast_path: cli.xdp_fast_path,
            probe: cli.probe,
        })
    }
}

/// The source address of the default route for `wildcard`'s family: what a
/// connected UDP socket is given. `connect` on UDP sends no packet.
fn default_route_source(wildcard: IpAddr) -> Option<IpAddr> {
    let (bind, probe): (SocketAddr, SocketAddr) = if wildcard.is_ipv4() {
        (([0, 0, 0, 0], 0).into(), ([203, 0, 113, 1], 9).into())
    } else {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            ("2001:db8::1".parse::<Ipv6Addr>().ok()?, 9).into(),
        )
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(probe).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

fn parse_external(s: &str) -> Option<ExternalIp> {
    match s.split_once('/') {
        Some((public, private)) => Some(ExternalIp {
            public: public.trim().parse().ok()?,
            private: Some(private.trim().parse().ok()?),
        }),
        None => Some(ExternalIp {
            public: s.trim().parse().ok()?,
            private: None,
        }),
    }
}

/// Turns config-file lines into flags. Errors carry the 1-based line number.
fn file_args(text: &str) -> Result<(Vec<OsString>, Vec<String>), (usize, String)> {
    let command = Cli::command();
    let mut args = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
            None => (line, None),
        };
        if key.is_empty() || key.starts_with('-') {
            return Err((i + 1, format!("not a key: {line:?}")));
        }
        if key == "config" {
            return Err((i + 1, "a config file cannot name another".into()));
        }
        if ACCEPTED_WITHOUT_EFFECT.contains(&key) {
            continue;
        }
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(key)) else {
            if !unknown.iter().any(|u| u == key) {
                unknown.push(key.to_string());
            }
            continue;
        };
        let takes_value = arg.get_action().takes_values();
        let flag = match (takes_value, value) {
            (true, Some(v)) => format!("--{key}={v}"),
            (true, None) if arg.get_num_args().is_none_or(|n| n.min_values() > 0) => {
                return Err((i + 1, format!("{key} needs a value")));
            }
            // A flag, or an option with an implied value (stale-nonce).
            _ => format!("--{key}"),
        };
        // Checked alone so a bad value is reported with its line number; what
        // it needs besides (probe-only: iface) is checked with everything.
        if let Err(e) = Cli::try_parse_from(["demarc-relay", flag.as_str()]) {
            if e.kind() != clap::error::ErrorKind::MissingRequiredArgument {
                let message = e.to_string();
                let first = message.lines().next().unwrap_or_default();
                return Err((i + 1, first.trim_start_matches("error: ").to_string()));
            }
        }
        args.push(flag.into());
    }
    Ok((args, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(file: &str, extra: &[&str]) -> Result<(Config, Vec<String>), ConfigError> {
        let mut f = tempfile();
        f.1.write_all(file.as_bytes()).unwrap();
        let mut args = vec!["demarc-relay", "-c", f.0.to_str().unwrap()];
        args.extend_from_slice(extra);
        let result = Config::load(args);
        std::fs::remove_file(&f.0).unwrap();
        result
    }

    fn tempfile() -> (PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!(
            "demarc-relay-conf-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        (path.clone(), std::fs::File::create(path).unwrap())
    }

    const COTURN_CONF: &str = "\
# a typical turnserver.conf
listening-port=3479
listening-ip=127.0.0.1
listening-ip=::1
relay-ip=127.0.0.1
relay-ip=::1
external-ip=203.0.113.5/127.0.0.1
min-port=50000
max-port=50100
fingerprint
lt-cred-mech
realm=example.org
user=alice:secret1
use-auth-secret
static-auth-secret=s1
static-auth-secret=s2
user-quota=4
total-quota=100
max-bps=64000
denied-peer-ip=203.0.113.0-203.0.113.255
allowed-peer-ip=10.0.0.0/8
stale-nonce
no-tls
relay-threads=1
prometheus
cli-password=qwerty
cli-password=again
mobility
";

    #[test]
    fn reads_a_coturn_config() {
        let (config, unknown) = load(COTURN_CONF, &[]).unwrap();
        assert_eq!(
            unknown,
            vec!["cli-password", "mobility"],
            "each unknown key once"
        );
        assert_eq!(config.port, 3479);
        assert_eq!(config.listening_ips.len(), 2);
        assert_eq!(config.relay_ips.len(), 2);
        assert_eq!((config.min_port, config.max_port), (50000, 50100));
        let s = &config.settings;
        assert_eq!(s.realm, "example.org");
        assert_eq!(s.credentials.users["alice"], "secret1");
        assert_eq!(s.credentials.secrets, vec!["s1", "s2"]);
        assert_eq!((s.user_quota, s.total_quota, s.max_bps), (4, 100, 64000));
        assert_eq!(s.nonce_lifetime, Duration::from_secs(600));
        assert!(s.policy.permits("10.1.1.1".parse().unwrap()));
        assert!(!s.policy.permits("203.0.113.7".parse().unwrap()));
        assert_eq!(
            s.external_ips,
            vec![ExternalIp {
                public: "203.0.113.5".parse().unwrap(),
                private: Some("127.0.0.1".parse().unwrap())
            }]
        );
        assert!(config.tls.is_none());
        assert_eq!(config.metrics, Some("127.0.0.1:9641".parse().unwrap()));
        assert_eq!(config.relay_threads, Some(1));
    }

    #[test]
    fn command_line_wins_and_lists_add_up() {
        let (config, _) = load(
            COTURN_CONF,
            &[
                "--listening-port",
                "4000",
                "--user",
                "bob:pw",
                "--relay-threads",
                "3",
            ],
        )
        .unwrap();
        assert_eq!(config.port, 4000);
        assert_eq!(config.settings.credentials.users.len(), 2);
        assert_eq!(config.relay_threads, Some(3));
        let (config, _) = load("user=a:b\n", &[]).unwrap();
        assert_eq!(config.relay_threads, None, "one per CPU unless told");
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = load("realm=x\nuser=a:b\nmin-port=banana\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains(":3: invalid value 'banana'"),
            "{err}"
        );
        let err = load("realm=x\n--user=a:b\n", &[]).unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
        let err = load("realm\n", &[]).unwrap_err();
        assert!(err.to_string().contains("needs a value"), "{err}");
    }

    #[test]
    fn clear_errors_for_incomplete_configs() {
        let cases = [
            ("listening-ip=127.0.0.1\n", "no credentials"),
            ("user=a\n", "name:password"),
            ("user=a:0xabcdef\n", "hashed keys"),
            (
                "use-auth-secret\nlistening-ip=127.0.0.1\n",
                "static-auth-secret",
            ),
            ("user=a:b\nlistening-ip=127.0.0.1\ncert=/x.pem\n", "pkey"),
            (
                "user=a:b\nlistening-ip=127.0.0.1\nmin-port=600\nmax-port=500\n",
                "empty",
            ),
            (
                "user=a:b\nlistening-ip=127.0.0.1\nallowed-peer-ip=10.0.0.0/99\n",
                "prefix",
            ),
            (
                "user=a:b\nlistening-ip=127.0.0.1\nexternal-ip=nope\n",
                "external-ip",
            ),
            (
                "user=a:b\nlistening-ip=127.0.0.1\nxdp-fast-path\n",
                "--iface",
            ),
        ];
        let (config, _) = load(
            "user=a:b\nlistening-ip=127.0.0.1\nxdp-fast-path\niface=lo\n",
            &[],
        )
        .expect("a flag and what it needs, both from the file");
        assert!(config.xdp_fast_path);
        for (file, expected) in cases {
            let err = load(file, &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{file:?}: {err}");
        }
    }

    fn from_args(
        args: &[&str],
        route: fn(IpAddr) -> Option<IpAddr>,
    ) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from([&["demarc-relay"], args].concat()).unwrap();
        Config::from_cli(cli, route)
    }

    #[test]
    fn wildcard_listeners_relay_from_the_default_route_or_external_ip() {
        let args = ["--user", "a:b", "-L", "0.0.0.0", "-L", "::"];
        let err = from_args(&args, |_| None).unwrap_err().to_string();
        assert!(err.contains("relay-ip"), "{err}");
        let config = from_args(&args, |ip| {
            Some(if ip.is_ipv4() {
                "192.0.2.2".parse().unwrap()
            } else {
                "fd00::2".parse().unwrap()
            })
        })
        .unwrap();
        let expected: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        assert_eq!(config.relay_ips, expected);
        let natted = [&args[..2], &["-L", "0.0.0.0", "-X", "198.51.100.1"]].concat();
        let config = from_args(&natted, |_| None).unwrap();
        assert_eq!(config.relay_ips, vec!["0.0.0.0".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn help_documents_the_coturn_keys() {
        let help = Cli::command().render_long_help().to_string();
        for key in [
            "--listening-port",
            "--tls-listening-port",
            "--listening-ip",
            "--relay-ip",
            "--external-ip",
            "--min-port",
            "--max-port",
            "--realm",
            "--user",
            "--use-auth-secret",
            "--static-auth-secret",
            "--cert",
            "--pkey",
            "--user-quota",
            "--total-quota",
            "--max-bps",
            "--allowed-peer-ip",
            "--denied-peer-ip",
            "--allow-loopback-peers",
            "--stale-nonce",
            "--prometheus",
        ] {
            assert!(help.contains(key), "{key} missing from --help");
        }
    }
}
