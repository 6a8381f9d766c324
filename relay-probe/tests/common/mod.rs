//! Helpers for the tests that run the real binary: processes that die with
//! the test, free ports, TLS files.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use turn_types::stun::message::{Message, MessageWrite, MessageWriteVec, BINDING};

pub const BIN: &str = env!("CARGO_BIN_EXE_demarc-relay");

/// Fails with the fix when a tool the test drives is missing.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
    assert!(
        found,
        "{tool} is not installed: run scripts/setup.sh (Debian package coturn)"
    );
}

/// A port free for both UDP and TCP on loopback, v4 and v6.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        let others = (
            TcpListener::bind(("127.0.0.1", port)),
            UdpSocket::bind(("::1", port)),
            TcpListener::bind(("::1", port)),
        );
        if others.0.is_ok() && others.1.is_ok() && others.2.is_ok() {
            return port;
        }
    }
}

/// A relay port range of `len` ports nobody uses now.
pub fn free_range(len: u16) -> (u16, u16) {
    'search: loop {
        let start = free_port();
        if start.checked_add(len).is_none() {
            continue;
        }
        for p in start..start + len {
            if UdpSocket::bind(("127.0.0.1", p)).is_err() || UdpSocket::bind(("::1", p)).is_err() {
                continue 'search;
            }
        }
        return (start, start + len - 1);
    }
}

/// A child process killed (by its own pid) when the test ends.
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// demarc-relay on loopback with `args` added; returns once it answers.
pub struct Relay {
    pub proc: Proc,
    pub port: u16,
    pub range: (u16, u16),
}

impl Relay {
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let range = free_range(40);
        let mut cmd = Command::new(BIN);
        cmd.args(["-L", "127.0.0.1", "-L", "::1", "--realm", "demarc.test"])
            .args(["--listening-port", &port.to_string()])
            .args(["--min-port", &range.0.to_string()])
            .args(["--max-port", &range.1.to_string()])
            .args(args)
            .env("RUST_LOG", "warn");
        let proc = Proc::spawn("demarc-relay", &mut cmd);
        let relay = Self { proc, port, range };
        relay.wait_ready();
        relay
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn addr6(&self) -> SocketAddr {
        format!("[::1]:{}", self.port).parse().unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while Instant::now() < deadline {
            let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
            socket.send_to(&request, self.addr()).unwrap();
            let mut buf = [0u8; 1500];
            if socket.recv_from(&mut buf).is_ok() {
                return;
            }
        }
        panic!("demarc-relay did not answer a Binding request within 10 s");
    }
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_with_limit(name: &'static str, cmd: &mut Command, limit: Duration) -> Output {
    let mut proc = Proc::spawn(name, cmd);
    if proc.wait_exit(limit).is_none() {
        panic!("{name} did not finish within {limit:?}");
    }
    let Proc { child, .. } = &mut proc;
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Output {
        status: child.try_wait().unwrap().unwrap(),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// A self-signed certificate for `cn`, written by the openssl CLI.
pub fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    require("openssl");
    let cert = dir.join(format!("{cn}.cert.pem"));
    let key = dir.join(format!("{cn}.key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

/// A scratch directory removed at the end of the test.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "demarc-relay-{tag}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        .into()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
