//! Helpers for the tests that run the real binary: processes that die with
//! the test, free ports, a minimal TURN client, TLS files.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use turn_types::attribute::{
    ChannelNumber, RequestedAddressFamily, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId, BINDING,
};
use turn_types::stun::prelude::AttributeWrite;
use turn_types::AddressFamily;

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

/// A minimal TURN client over UDP for what the real clients cannot be made
/// to do (ask for denied peers, count exact error codes).
pub struct TurnClient {
    pub socket: UdpSocket,
    server: SocketAddr,
    user: String,
    password: String,
    realm: String,
    nonce: String,
}

impl TurnClient {
    pub fn new(server: SocketAddr, user: &str, password: &str) -> Self {
        let bind = if server.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let socket = UdpSocket::bind(bind).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        Self {
            socket,
            server,
            user: user.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
        }
    }

    pub fn roundtrip(&self, request: &[u8]) -> Vec<u8> {
        self.socket.send_to(request, self.server).unwrap();
        let mut buf = vec![0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buf).expect("an answer");
        buf.truncate(n);
        buf
    }

    /// Sends a signed request, learning realm and nonce from a 401/438
    /// first. Returns the response's error code (0 for success) and bytes.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &dyn Fn(TransactionId) -> Vec<Box<dyn AttributeWrite>>,
    ) -> (u16, Vec<u8>) {
        for _ in 0..2 {
            let txid = TransactionId::generate();
            let mut msg = Message::builder(
                MessageType::from_class_method(MessageClass::Request, method),
                txid,
                MessageWriteVec::new(),
            );
            for a in attrs(txid) {
                msg.add_attribute(a.as_ref()).unwrap();
            }
            if !self.nonce.is_empty() {
                msg.add_attribute(&Username::new(&self.user).unwrap())
                    .unwrap();
                msg.add_attribute(&Realm::new(&self.realm).unwrap())
                    .unwrap();
                msg.add_attribute(&Nonce::new(&self.nonce).unwrap())
                    .unwrap();
                let creds: MessageIntegrityCredentials = LongTermKeyCredentials::new(
                    self.user.clone(),
                    self.password.clone(),
                    self.realm.clone(),
                )
                .into();
                msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
                    .unwrap();
            }
            let reply = self.roundtrip(&msg.finish());
            let code = response_code(&reply);
            if code == 401 || code == 438 {
                let parsed = Message::from_bytes(&reply).unwrap();
                if let (Ok(realm), Ok(nonce)) =
                    (parsed.attribute::<Realm>(), parsed.attribute::<Nonce>())
                {
                    let fresh = self.nonce.is_empty() || code == 438;
                    self.realm = realm.realm().into();
                    self.nonce = nonce.nonce().into();
                    if fresh {
                        continue;
                    }
                }
            }
            return (code, reply);
        }
        panic!("no answer after a fresh nonce");
    }

    /// Allocates a relay of `family`; returns the relayed address.
    pub fn allocate(&mut self, family: AddressFamily) -> SocketAddr {
        let (code, reply) = self.request(ALLOCATE, &|_| {
            let mut attrs: Vec<Box<dyn AttributeWrite>> =
                vec![Box::new(RequestedTransport::new(RequestedTransport::UDP))];
            if family == AddressFamily::IPV6 {
                attrs.push(Box::new(RequestedAddressFamily::new(family)));
            }
            attrs
        });
        assert_eq!(code, 0, "allocate");
        let msg = Message::from_bytes(&reply).unwrap();
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
    }

    pub fn permit(&mut self, peer: SocketAddr) -> u16 {
        self.request(CREATE_PERMISSION, &|txid| {
            vec![Box::new(XorPeerAddress::new(peer, txid))]
        })
        .0
    }

    pub fn bind(&mut self, channel: u16, peer: SocketAddr) -> u16 {
        self.request(CHANNEL_BIND, &|txid| {
            vec![
                Box::new(ChannelNumber::new(channel)),
                Box::new(XorPeerAddress::new(peer, txid)),
            ]
        })
        .0
    }
}

/// 0 for a success response, else the ERROR-CODE.
pub fn response_code(reply: &[u8]) -> u16 {
    let msg = Message::from_bytes(reply).expect("a STUN response");
    match msg.class() {
        MessageClass::Success => 0,
        MessageClass::Error => msg.attribute::<ErrorCode>().unwrap().code(),
        other => panic!("not a response: {other:?}"),
    }
}
