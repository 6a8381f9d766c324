//! The TURN servers under test, started the same way: pinned to one CPU,
//! one relay thread, UDP only, no TLS, long-term credentials, loopback
//! peers allowed (the generator's peers are the other clients' relays).

use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::scenario::services::{binary, Service};
use crate::{Error, Result};

pub const USER: (&str, &str) = ("bench", "bench");
pub const LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    3478,
));
pub const RELAY_PORTS: (u16, u16) = (49152, 65535);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Coturn,
    Demarc,
    /// demarc-relay with the XDP fast path (`--xdp-fast-path`): its own
    /// probe, in the server, relays bound channels in the kernel.
    DemarcXdp,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Coturn => "coturn",
            Kind::Demarc => "demarc-relay",
            Kind::DemarcXdp => "demarc-relay-xdp",
        })
    }
}

impl Kind {
    /// Whether the dwell probe runs inside the server (it must: the fast
    /// path is the probe's program), not beside it.
    pub fn probe_inside(self) -> bool {
        self == Kind::DemarcXdp
    }

    fn command(self, dir: &Path) -> Result<(PathBuf, Vec<String>)> {
        let (user, password) = USER;
        let ip = LISTEN.ip().to_string();
        let common = [
            format!("--user={user}:{password}"),
            "--realm=demarc".into(),
            format!("--listening-ip={ip}"),
            format!("--relay-ip={ip}"),
            format!("--listening-port={}", LISTEN.port()),
            format!("--min-port={}", RELAY_PORTS.0),
            format!("--max-port={}", RELAY_PORTS.1),
            "--relay-threads=1".into(),
            "--allow-loopback-peers".into(),
            "--no-tcp".into(),
            "--no-tls".into(),
        ];
        let (program, own): (PathBuf, Vec<String>) = match self {
            // -n: no configuration file; the rest keeps it quiet and UDP-only.
            Kind::Coturn => (
                "turnserver".into(),
                [
                    "-n",
                    "--lt-cred-mech",
                    "--no-dtls",
                    "--no-cli",
                    "--log-file=stdout",
                ]
                .map(String::from)
                .into(),
            ),
            Kind::Demarc | Kind::DemarcXdp => {
                let mut own = vec!["--drain-timeout=0".to_owned()];
                if self == Kind::DemarcXdp {
                    own.extend([
                        "--xdp-fast-path".into(),
                        "--iface=lo".into(),
                        // The histograms count every packet; records are only a sample.
                        "--sample-rate=0.001".into(),
                        format!("--output=jsonl:{}", dir.join("relay-xdp.jsonl").display()),
                        format!("--state-dir={}", dir.join("xdp-state").display()),
                    ]);
                }
                (binary("demarc-relay")?, own)
            }
        };
        let args = common.into_iter().chain(own).collect();
        Ok((program, args))
    }
}

/// A server running on one CPU; stopped when dropped.
pub struct Running {
    service: Service,
    pid: i32,
}

impl Running {
    /// Starts `kind` pinned to `cpu` (taskset execs it, so the pid is the
    /// server's) and waits until it answers a STUN Binding request.
    pub fn start(kind: Kind, cpu: usize, dir: &Path) -> Result<Running> {
        let (program, args) = kind.command(dir)?;
        let mut argv = vec![
            "-c".to_owned(),
            cpu.to_string(),
            program.display().to_string(),
        ];
        argv.extend(args);
        let service = Service::start(&kind.to_string(), Path::new("taskset"), &argv, dir)?;
        let pid = service.pid();
        wait_ready(kind)?;
        Ok(Running { service, pid })
    }

    /// CPU time the server has used so far (all threads, user + system).
    pub fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .map_err(Error::io(format!("reading /proc/{}/stat", self.pid)))?;
        cpu_of_stat(&stat)
            .ok_or_else(|| Error::Bench(format!("cannot parse /proc/{}/stat", self.pid)))
    }

    pub fn stop(self) -> Result<()> {
        self.service.stop()
    }
}

/// utime + stime of a `/proc/PID/stat` line (fields 14 and 15, after the
/// parenthesised command name, which may hold spaces).
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(from_ticks(ticks))
}

/// Busy time of `cpu` so far (/proc/stat: user, nice, system, irq, softirq;
/// not idle, iowait, or steal, which the hypervisor took).
pub fn core_busy(cpu: usize) -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(Error::io("reading /proc/stat"))?;
    let prefix = format!("cpu{cpu} ");
    let ticks: Option<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            [0, 1, 2, 5, 6].iter().filter_map(|&i| f.get(i)).sum()
        });
    let ticks = ticks.ok_or_else(|| Error::Bench(format!("no cpu{cpu} in /proc/stat")))?;
    Ok(from_ticks(ticks))
}

/// Clock ticks (USER_HZ, what /proc counts CPU time in) as a Duration.
fn from_ticks(ticks: u64) -> Duration {
    // SAFETY: plain getter.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

fn wait_ready(kind: Kind) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(Error::io("binding a probe socket"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(Error::io("setting a timeout"))?;
    // A STUN Binding request: type 0x0001, no attributes, magic cookie.
    let mut request = [0u8; 20];
    request[1] = 1;
    request[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
    request[8..20].copy_from_slice(b"demarc-bench");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = socket.send_to(&request, LISTEN);
        if socket.recv_from(&mut buf).is_ok() {
            return Ok(());
        }
    }
    Err(Error::Bench(format!(
        "{kind} did not answer on {LISTEN} within 10 s"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        // SAFETY: plain getter.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let stat = format!(
            "42 (turn server) S 1 42 42 0 -1 4194560 100 0 0 0 {} {} 0 0 20 0 3 0 1000",
            2 * hz,
            hz / 2
        );
        assert_eq!(cpu_of_stat(&stat), Some(Duration::from_millis(2500)));
        assert_eq!(cpu_of_stat("garbage"), None);
    }

    #[test]
    fn both_servers_get_the_same_essentials() {
        let (_, coturn) = Kind::Coturn.command(Path::new("/tmp")).unwrap();
        for arg in ["--relay-threads=1", "--no-tls", "--allow-loopback-peers"] {
            assert!(coturn.iter().any(|a| a == arg), "{arg}");
        }
        // The fast path is the probe's program: it needs an interface.
        if let Ok((_, xdp)) = Kind::DemarcXdp.command(Path::new("/tmp")) {
            for arg in ["--xdp-fast-path", "--iface=lo", "--relay-threads=1"] {
                assert!(xdp.iter().any(|a| a == arg), "{arg}");
            }
        }
    }
}
