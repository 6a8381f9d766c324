//! The real binary on loopback: peer policy on the wire, start-up errors,
//! signals, metrics, and floods.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{free_port, run_with_limit, self_signed, Relay, TempDir, BIN};
use demarc_relay::client::TurnClient;
use turn_types::attribute::RequestedTransport;
use turn_types::message::ALLOCATE;
use turn_types::stun::message::{Message, MessageWrite, MessageWriteExt, MessageWriteVec};
use turn_types::AddressFamily;

/// Every form the issue names, with a range that allows it.
const FORMS: &[(&str, &str)] = &[
    ("127.0.0.1", "127.0.0.0/8"),
    ("::1", "::1"),
    ("::ffff:127.0.0.1", "127.0.0.1"),
    ("::127.0.0.1", "127.0.0.1"),
    ("0.0.0.0", "0.0.0.0"),
    ("::", "::"),
    ("10.0.0.1", "10.0.0.0/8"),
    ("172.16.0.1", "172.16.0.0/12"),
    ("192.168.0.1", "192.168.0.0/16"),
    ("169.254.0.1", "169.254.0.0/16"),
    ("fe80::1", "fe80::/10"),
    ("fc00::1", "fc00::/7"),
    ("224.0.0.1", "224.0.0.0/4"),
];

fn check_forms(relay: &Relay, expected: u16) {
    let mut v4 = TurnClient::new(relay.addr(), "alice", "pw").unwrap();
    v4.allocate(AddressFamily::IPV4).unwrap();
    let mut v6 = TurnClient::new(relay.addr6(), "alice", "pw").unwrap();
    v6.allocate(AddressFamily::IPV6).unwrap();
    for (i, (addr, _)) in FORMS.iter().enumerate() {
        let peer = SocketAddr::new(addr.parse().unwrap(), 9);
        let client = if peer.is_ipv4() { &mut v4 } else { &mut v6 };
        assert_eq!(
            client.permit(peer).unwrap(),
            expected,
            "CreatePermission {addr}"
        );
        assert_eq!(
            client.bind(0x4000 + i as u16, peer).unwrap(),
            expected,
            "ChannelBind {addr}"
        );
    }
}

#[test]
fn peer_policy_denies_every_form_by_default() {
    let relay = Relay::start(&["--user", "alice:pw"]);
    check_forms(&relay, 403);
}

#[test]
fn peer_policy_allows_configured_ranges() {
    let mut args = vec!["--user", "alice:pw"];
    for (_, range) in FORMS {
        args.extend(["--allowed-peer-ip", range]);
    }
    let relay = Relay::start(&args);
    check_forms(&relay, 0);
}

#[test]
fn allow_loopback_peers_opens_loopback_only() {
    let relay = Relay::start(&["--user", "alice:pw", "--allow-loopback-peers"]);
    let mut client = TurnClient::new(relay.addr(), "alice", "pw").unwrap();
    client.allocate(AddressFamily::IPV4).unwrap();
    assert_eq!(client.permit("127.0.0.1:9".parse().unwrap()).unwrap(), 0);
    assert_eq!(client.permit("10.0.0.1:9".parse().unwrap()).unwrap(), 403);
}

fn start_error(args: &[&str]) -> String {
    let out = run_with_limit(
        "demarc-relay",
        Command::new(BIN).args(args).env("RUST_BACKTRACE", "1"),
        Duration::from_secs(10),
    );
    assert!(!out.status.success(), "{args:?} must not start");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one clear line, got:\n{stderr}");
    stderr
}

#[test]
fn start_up_errors_are_one_clear_line() {
    let dir = TempDir::new("errors");
    let port = free_port().to_string();
    let base = ["-L", "127.0.0.1", "-p", &port, "--user", "a:b"];
    let missing = dir.0.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let line = start_error(&[&base[..], &["--cert", missing, "--pkey", missing]].concat());
    assert!(
        line.contains("cannot read TLS certificate") && line.contains("missing.pem"),
        "{line}"
    );
    let conf = dir.0.join("turnserver.conf");
    std::fs::write(&conf, "realm=x\nmax-port=lots\n").unwrap();
    let line = start_error(&[&base[..], &["-c", conf.to_str().unwrap()]].concat());
    assert!(line.contains("lots"), "{line}");
    let line = start_error(&["-L", "127.0.0.1"]);
    assert!(line.contains("no credentials"), "{line}");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().port().to_string();
    let line = start_error(&["-L", "127.0.0.1", "-p", &taken, "--user", "a:b"]);
    assert!(line.contains("cannot listen on"), "{line}");
}

#[test]
fn unknown_config_keys_warn_once_and_do_not_stop_the_server() {
    let dir = TempDir::new("conf");
    let conf = dir.0.join("turnserver.conf");
    std::fs::write(&conf, "user=alice:pw\nmobility\nmobility\ncli-password=x\n").unwrap();
    let mut relay = Relay::start(&["-c", conf.to_str().unwrap()]);
    relay.proc.signal(libc::SIGTERM);
    relay
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    let mut log = String::new();
    relay
        .proc
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert_eq!(log.matches("unknown config key").count(), 2, "{log}");
}

#[test]
fn sigterm_drains() {
    let relay_args = ["--user", "alice:pw", "--drain-timeout", "3"];
    let mut relay = Relay::start(&relay_args);
    let mut client = TurnClient::new(relay.addr(), "alice", "pw").unwrap();
    client.allocate(AddressFamily::IPV4).unwrap();
    relay.proc.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // Still serving the existing allocation, refusing new ones.
    let mut late = TurnClient::new(relay.addr(), "alice", "pw").unwrap();
    let (code, _) = late
        .request(ALLOCATE, &|_| {
            vec![Box::new(RequestedTransport::new(RequestedTransport::UDP))]
        })
        .unwrap();
    assert_eq!(code, 508);
    assert_eq!(client.permit("8.8.8.8:9".parse().unwrap()).unwrap(), 0);
    let status = relay
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain timeout");
    assert!(status.success());

    // With nothing to drain it stops at once.
    let mut idle = Relay::start(&relay_args);
    idle.proc.signal(libc::SIGTERM);
    assert!(idle.proc.wait_exit(Duration::from_secs(2)).is_some());
}

/// The certificate's subject as `openssl s_client` sees it.
fn served_subject(port: &str) -> String {
    let out = run_with_limit(
        "openssl",
        Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        )),
        Duration::from_secs(10),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sighup_reloads_the_certificate() {
    let dir = TempDir::new("reload");
    let (cert, key) = self_signed(&dir.0, "first");
    let tls_port = free_port().to_string();
    let relay = Relay::start(&[
        "--user",
        "alice:pw",
        "--cert",
        cert.to_str().unwrap(),
        "--pkey",
        key.to_str().unwrap(),
        "--tls-listening-port",
        &tls_port,
    ]);
    assert!(served_subject(&tls_port).contains("first"));
    let (cert2, key2) = self_signed(&dir.0, "second");
    std::fs::rename(cert2, &cert).unwrap();
    std::fs::rename(key2, &key).unwrap();
    relay.proc.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(served_subject(&tls_port).contains("second"));
}

fn scrape(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn floods_leave_memory_bounded_and_metrics_count_them() {
    let metrics_port = free_port();
    let relay = Relay::start(&[
        "--user",
        "alice:pw",
        "--prometheus",
        "--prometheus-port",
        &metrics_port.to_string(),
    ]);
    let unauthenticated = {
        let mut msg = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        msg.finish()
    };
    let flood = |rounds: usize| {
        // Many source ports, so per-source state would show.
        let sockets: Vec<UdpSocket> = (0..100)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut garbage = [0u8; 200];
        for round in 0..rounds {
            for (i, s) in sockets.iter().enumerate() {
                garbage[0] = (round * 7 + i) as u8;
                s.send_to(&unauthenticated, relay.addr()).unwrap();
                s.send_to(&garbage, relay.addr()).unwrap();
            }
            // Stay a moderate flood: the point is state, not the socket buffer.
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    flood(50);
    std::thread::sleep(Duration::from_millis(300));
    let before = relay.proc.rss_kib();
    flood(200);
    std::thread::sleep(Duration::from_millis(300));
    let after = relay.proc.rss_kib();
    assert!(
        after < before + 4096,
        "40,000 unauthenticated packets from 100 more sources grew RSS {before} → {after} KiB"
    );
    let text = scrape(metrics_port);
    let challenges: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("demarc_relay_errors_total{code=\"401\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(challenges > 1000, "401s counted:\n{text}");
    assert!(text.contains("turn_total_allocations 0"), "{text}");
    assert!(
        text.contains("demarc_relay_userspace_dwell_seconds_bucket"),
        "{text}"
    );
    // Still serving.
    let mut client = TurnClient::new(relay.addr(), "alice", "pw").unwrap();
    client.allocate(AddressFamily::IPV4).unwrap();
}

/// Reads until the server closes the connection; `false` if it stays open.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn garbage_streams_are_closed_and_the_server_keeps_serving() {
    let relay = Relay::start(&["--user", "alice:pw"]);
    // A TLS ClientHello on the plain TCP port is neither STUN nor ChannelData.
    let mut tls_on_tcp = TcpStream::connect(relay.addr()).unwrap();
    tls_on_tcp
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .unwrap();
    assert!(closed_by_server(&mut tls_on_tcp));
    // A STUN header announcing a 64 KiB body, trickled by a client that has no allocation.
    let mut giant = TcpStream::connect(relay.addr()).unwrap();
    let mut header = Message::builder_request(ALLOCATE, MessageWriteVec::new()).finish();
    header[2..4].copy_from_slice(&0xfffcu16.to_be_bytes());
    giant.write_all(&header).unwrap();
    giant.write_all(&[0u8; 6000]).unwrap();
    assert!(closed_by_server(&mut giant));
    // A well-formed Binding request on a fresh connection is still answered.
    let mut good = TcpStream::connect(relay.addr()).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let binding =
        Message::builder_request(turn_types::stun::message::BINDING, MessageWriteVec::new())
            .finish();
    good.write_all(&binding).unwrap();
    let mut reply = [0u8; 20];
    good.read_exact(&mut reply).unwrap();
    assert_eq!(&reply[..2], &[0x01, 0x01], "Binding success");
}
