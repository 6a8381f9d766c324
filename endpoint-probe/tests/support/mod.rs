//! Privileged test and bench support: a namespace pair joined by veth, probe
//! processes, and UDP traffic through every send/receive syscall.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use demarc_proto::ingest::Record;

pub const SENDER_IP: &str = "10.231.0.1";
pub const RECEIVER_IP: &str = "10.231.0.2";

pub fn require_root() {
    // SAFETY: plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (CI runs as root)"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop.
pub struct NetnsPair {
    pub sender: String,
    pub receiver: String,
}

impl NetnsPair {
    pub fn new(tag: &str) -> Self {
        require_root();
        let base = format!("dmcp{}{tag}", std::process::id() % 100_000);
        let pair = Self {
            sender: format!("{base}s"),
            receiver: format!("{base}r"),
        };
        pair.remove();
        ip(&["netns", "add", &pair.sender]);
        ip(&["netns", "add", &pair.receiver]);
        ip(&[
            "link",
            "add",
            "vs",
            "netns",
            &pair.sender,
            "type",
            "veth",
            "peer",
            "name",
            "vr",
            "netns",
            &pair.receiver,
        ]);
        for (ns, dev, addr) in [
            (&pair.sender, "vs", SENDER_IP),
            (&pair.receiver, "vr", RECEIVER_IP),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn remove(&self) {
        for ns in [&self.sender, &self.receiver] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Runs `f` on a fresh thread inside network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).expect("open netns");
        // SAFETY: valid fd; affects this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns {path}"
        );
        f()
    })
}

/// A running demarc-probe writing JSONL; stopped with SIGINT.
pub struct Probe {
    child: Child,
    pub output: PathBuf,
    pub stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Probe {
    pub fn start(netns: &str, iface: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("records.jsonl");
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_demarc-probe"))
            .args(["--iface", iface, "--netns", netns])
            .arg("--output")
            .arg(format!("jsonl:{}", output.display()))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("start demarc-probe");
        // The report ends with the output line: everything is attached by then.
        let stdout = child.stdout.take().unwrap();
        let mut report = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            report.push_str(&line);
            report.push('\n');
            if line.trim_start().starts_with("output:") {
                break;
            }
        }
        assert!(
            report.contains("output:"),
            "probe did not start: {report}\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        print!("{report}");
        Self {
            child,
            output,
            stderr,
            _dir: dir,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    /// SIGINT, wait, and the records it wrote.
    pub fn stop(mut self) -> (Vec<Record>, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "probe did not stop within 20 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        assert!(status.success(), "probe exited with {status}: {stderr}");
        (read_records(&self.output), stderr)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_records(path: &Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad record {l}: {e}")))
        .collect()
}

/// RTP-like payload, unique per (ssrc, seq); ChannelData-framed when asked.
pub fn payload(ssrc: u32, seq: u16, channel_data: bool) -> Vec<u8> {
    let mut rtp = vec![0x80, 0x6f];
    rtp.extend_from_slice(&seq.to_be_bytes());
    rtp.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    rtp.extend((0..148).map(|i| (i as u8) ^ (seq as u8)));
    if !channel_data {
        return rtp;
    }
    let mut cd = vec![0x40, 0x00];
    cd.extend_from_slice(&(rtp.len() as u16).to_be_bytes());
    cd.extend_from_slice(&rtp);
    cd
}

/// How datagrams go out and come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// sendto / recvfrom
    To,
    /// sendmsg / recvmsg
    Msg,
    /// sendmmsg / recvmmsg, in batches of 8
    Mmsg,
}

fn sockaddr(ip: &str, port: u16) -> libc::sockaddr_in {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap();
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn udp_socket() -> i32 {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0);
    let size: i32 = 4 << 20;
    // SAFETY: valid fd and option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const i32).cast(),
            4,
        );
    }
    fd
}

/// Sends `payloads` to RECEIVER_IP:port at `rate` per second with `how`.
pub fn send_all(how: Syscall, port: u16, payloads: &[Vec<u8>], rate: f64) {
    let fd = udp_socket();
    // Bound first, as media sockets are (ICE binds before it sends), so the
    // source port is known at the first app_send already.
    let local = sockaddr(SENDER_IP, 0);
    // SAFETY: valid sockaddr of the stated size.
    let bound = unsafe {
        libc::bind(
            fd,
            (&local as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&local) as u32,
        )
    };
    assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
    let dst = sockaddr(RECEIVER_IP, port);
    let dst_ptr = (&dst as *const libc::sockaddr_in).cast::<libc::sockaddr>();
    let dst_len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    let start = Instant::now();
    let chunk = if how == Syscall::Mmsg { 8 } else { 1 };
    for (n, batch) in payloads.chunks(chunk).enumerate() {
        let due = start + Duration::from_secs_f64((n * chunk) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut iovs: Vec<libc::iovec> = batch
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut _,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: all pointers reference live buffers of the stated sizes.
        let rc = unsafe {
            match how {
                Syscall::To => libc::sendto(
                    fd,
                    batch[0].as_ptr().cast(),
                    batch[0].len(),
                    0,
                    dst_ptr,
                    dst_len,
                ) as i64,
                Syscall::Msg => {
                    let mut m: libc::msghdr = std::mem::zeroed();
                    m.msg_name = dst_ptr as *mut _;
                    m.msg_namelen = dst_len;
                    m.msg_iov = iovs.as_mut_ptr();
                    m.msg_iovlen = 1;
                    libc::sendmsg(fd, &m, 0) as i64
                }
                Syscall::Mmsg => {
                    let mut msgs: Vec<libc::mmsghdr> = iovs
                        .iter_mut()
                        .map(|iov| {
                            let mut m: libc::mmsghdr = std::mem::zeroed();
                            m.msg_hdr.msg_name = dst_ptr as *mut _;
                            m.msg_hdr.msg_namelen = dst_len;
                            m.msg_hdr.msg_iov = iov;
                            m.msg_hdr.msg_iovlen = 1;
                            m
                        })
                        .collect();
                    libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) as i64
                }
            }
        };
        assert!(rc >= 0, "send failed: {}", std::io::Error::last_os_error());
    }
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
}

/// Receives on port with `how` until `expected` datagrams or `timeout`;
/// returns how many arrived.
pub fn receive(how: Syscall, port: u16, expected: usize, timeout: Duration) -> usize {
    let fd = udp_socket();
    let addr = sockaddr(RECEIVER_IP, port);
    // SAFETY: valid sockaddr; 100 ms receive timeout so the deadline is checked.
    unsafe {
        assert_eq!(
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of_val(&addr) as u32
            ),
            0
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of_val(&tv) as u32,
        );
    }
    let deadline = Instant::now() + timeout;
    let mut bufs = vec![[0u8; 2048]; 8];
    let mut got = 0;
    while got < expected && Instant::now() < deadline {
        let mut from: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of_val(&from) as u32;
        let mut iovs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: all pointers reference live buffers of the stated sizes.
        let n = unsafe {
            match how {
                Syscall::To => {
                    let r = libc::recvfrom(
                        fd,
                        bufs[0].as_mut_ptr().cast(),
                        2048,
                        0,
                        (&mut from as *mut libc::sockaddr_in).cast(),
                        &mut from_len,
                    );
                    if r >= 0 {
                        1
                    } else {
                        0
                    }
                }
                Syscall::Msg => {
                    let mut m: libc::msghdr = std::mem::zeroed();
                    m.msg_name = (&mut from as *mut libc::sockaddr_in).cast();
                    m.msg_namelen = from_len;
                    m.msg_iov = iovs.as_mut_ptr();
                    m.msg_iovlen = 1;
                    if libc::recvmsg(fd, &mut m, 0) >= 0 {
                        1
                    } else {
                        0
                    }
                }
                Syscall::Mmsg => {
                    let mut names: Vec<libc::sockaddr_in> = vec![std::mem::zeroed(); iovs.len()];
                    let mut msgs: Vec<libc::mmsghdr> = iovs
                        .iter_mut()
                        .zip(&mut names)
                        .map(|(iov, name)| {
                            let mut m: libc::mmsghdr = std::mem::zeroed();
                            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
                            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                            m.msg_hdr.msg_iov = iov;
                            m.msg_hdr.msg_iovlen = 1;
                            m
                        })
                        .collect();
                    let r = libc::recvmmsg(
                        fd,
                        msgs.as_mut_ptr(),
                        msgs.len() as u32,
                        libc::MSG_WAITFORONE,
                        std::ptr::null_mut(),
                    );
                    r.max(0) as usize
                }
            }
        };
        got += n;
    }
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    got
}
