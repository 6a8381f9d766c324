//! Interoperability with clients no one here wrote: coturn's
//! `turnutils_uclient` relays through demarc-relay to `turnutils_peer`, over
//! UDP, TCP and TLS, with channels and Send indications, static and REST-API
//! credentials. Loopback only; `allow-loopback-peers` is the documented
//! override for that.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, require, run_with_limit, self_signed, Proc, Relay, TempDir};

const MESSAGES: u32 = 100;
const CLIENTS: u32 = 2;

struct Peer {
    _proc: Proc,
    port: u16,
}

fn peer(addr: &str) -> Peer {
    require("turnutils_peer");
    let port = free_port();
    let proc = Proc::spawn(
        "turnutils_peer",
        Command::new("turnutils_peer").args(["-L", addr, "-p", &port.to_string()]),
    );
    std::thread::sleep(Duration::from_millis(300));
    Peer { _proc: proc, port }
}

/// Runs uclient with `clients` clients and checks every message came back
/// (uclient's peer echoes).
fn uclient(clients: u32, args: &[&str]) {
    require("turnutils_uclient");
    let out = run_with_limit(
        "turnutils_uclient",
        Command::new("turnutils_uclient")
            .args(["-n", &MESSAGES.to_string(), "-m", &clients.to_string()])
            // 100 messages of 160 bytes every 10 ms per client: a voice call's rate.
            .args(["-l", "160", "-z", "10"])
            .args(args),
        Duration::from_secs(60),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let expected = format!("tot_send_msgs={0}, tot_recv_msgs={0}", MESSAGES * clients);
    assert!(
        out.status.success() && text.contains(&expected) && text.contains("Total lost packets 0 "),
        "turnutils_uclient {args:?} failed ({}):\n{text}",
        out.status
    );
}

fn static_relay(extra: &[&str]) -> Relay {
    let mut args = vec![
        "--user",
        "ninefingers:youhavetoberealistic",
        "--allow-loopback-peers",
    ];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

const USER: [&str; 4] = ["-u", "ninefingers", "-w", "youhavetoberealistic"];

#[test]
fn udp_with_channels() {
    let relay = static_relay(&[]);
    let peer = peer("127.0.0.1");
    let port = relay.port.to_string();
    let peer_port = peer.port.to_string();
    let mut args = vec!["-p", &port, "-e", "127.0.0.1", "-r", &peer_port];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
}

/// The benchmark's shape: clients relaying to each other through their
/// allocations, both ways batched, everything on one thread.
#[test]
fn client_to_client_on_one_thread() {
    let relay = static_relay(&["--relay-threads", "1"]);
    let port = relay.port.to_string();
    let mut args = vec!["-y", "-c", "-p", &port];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
}

#[test]
fn udp_with_send_indications() {
    let relay = static_relay(&[]);
    let peer = peer("127.0.0.1");
    let port = relay.port.to_string();
    let peer_port = peer.port.to_string();
    let mut args = vec!["-s", "-p", &port, "-e", "127.0.0.1", "-r", &peer_port];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
}

#[test]
fn tcp_with_channels_and_send_indications() {
    let relay = static_relay(&[]);
    let peer = peer("127.0.0.1");
    let port = relay.port.to_string();
    let peer_port = peer.port.to_string();
    for mode in ["-t", "-s"] {
        let mut args = vec!["-t", mode, "-p", &port, "-e", "127.0.0.1", "-r", &peer_port];
        args.extend(USER);
        args.push("127.0.0.1");
        uclient(CLIENTS, &args);
    }
}

/// RFC 6062: uclient pairs connect to each other's TCP relay addresses
/// (Connect, ConnectionAttempt, ConnectionBind).
#[test]
fn tcp_allocations() {
    let relay = static_relay(&[]);
    let port = relay.port.to_string();
    let mut args = vec!["-T", "-p", &port];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
}

#[test]
fn tls() {
    let dir = TempDir::new("tls");
    let (cert, key) = self_signed(&dir.0, "localhost");
    let tls_port = free_port().to_string();
    let _relay = static_relay(&[
        "--cert",
        cert.to_str().unwrap(),
        "--pkey",
        key.to_str().unwrap(),
        "--tls-listening-port",
        &tls_port,
    ]);
    let peer = peer("127.0.0.1");
    let peer_port = peer.port.to_string();
    let mut args = vec![
        "-t",
        "-S",
        "-p",
        &tls_port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
    ];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
}

#[test]
fn rest_api_secrets_rotate() {
    let relay = Relay::start(&[
        "--use-auth-secret",
        "--static-auth-secret",
        "retiring",
        "--static-auth-secret",
        "current",
        "--allow-loopback-peers",
    ]);
    let peer = peer("127.0.0.1");
    let port = relay.port.to_string();
    let peer_port = peer.port.to_string();
    let common = [
        "-p",
        &port,
        "-e",
        "127.0.0.1",
        "-r",
        &peer_port,
        "-u",
        "carol",
    ];
    for secret in ["retiring", "current"] {
        uclient(
            CLIENTS,
            &[&common[..], &["-W", secret, "127.0.0.1"]].concat(),
        );
    }
    let out = run_with_limit(
        "turnutils_uclient",
        Command::new("turnutils_uclient")
            .args(["-n", "2"])
            .args(common)
            .args(["-W", "wrong", "127.0.0.1"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "a wrong secret must not allocate");
}

#[test]
fn ipv6_relay_and_clients() {
    let relay = static_relay(&[]);
    let peer = peer("::1");
    let port = relay.port.to_string();
    let peer_port = peer.port.to_string();
    // IPv4 client asking for an IPv6 relay (RFC 6156), then all-IPv6 over TCP.
    let mut args = vec!["-x", "-p", &port, "-e", "::1", "-r", &peer_port];
    args.extend(USER);
    args.push("127.0.0.1");
    uclient(CLIENTS, &args);
    let mut args = vec!["-t", "-x", "-p", &port, "-e", "::1", "-r", &peer_port];
    args.extend(USER);
    args.push("::1");
    uclient(CLIENTS, &args);
}
