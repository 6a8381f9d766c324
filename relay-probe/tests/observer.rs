//! The seam the dwell probe will use: the server, started in-process,
//! reports where it listens and, per relayed packet, the inner payload and
//! its userspace receive and send times.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::free_range;
use demarc_relay::client::TurnClient;
use demarc_relay::config::Config;
use demarc_relay::listeners;
use demarc_relay::observe::{tai_ns, Direction, Endpoints, PacketObserver, Relayed};
use demarc_relay::turn::Transport;
use turn_types::AddressFamily;

/// What one `relayed()` call reported.
#[derive(Debug, Clone)]
struct Seen {
    direction: Direction,
    payload: Vec<u8>,
    recv: u64,
    send: u64,
    peer: SocketAddr,
}

#[derive(Default)]
struct Recorder {
    endpoints: Mutex<Option<Endpoints>>,
    packets: Mutex<Vec<Seen>>,
}

impl PacketObserver for Recorder {
    fn started(&self, endpoints: &Endpoints) {
        *self.endpoints.lock().unwrap() = Some(endpoints.clone());
    }

    fn relayed(&self, p: &Relayed<'_>) {
        self.packets.lock().unwrap().push(Seen {
            direction: p.direction,
            payload: p.payload.to_vec(),
            recv: p.recv_tai_ns,
            send: p.send_tai_ns,
            peer: p.peer,
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_endpoints_and_every_relayed_packet() {
    let range = free_range(10);
    let (config, _) = Config::load([
        "demarc-relay",
        "-L",
        "127.0.0.1",
        "-p",
        "0",
        "--user",
        "alice:pw",
        "--allow-loopback-peers",
        "--min-port",
        &range.0.to_string(),
        "--max-port",
        &range.1.to_string(),
    ])
    .unwrap();
    let recorder = Arc::new(Recorder::default());
    let running = listeners::start(config, Some(recorder.clone()))
        .await
        .unwrap();

    let endpoints = recorder
        .endpoints
        .lock()
        .unwrap()
        .clone()
        .expect("started() called");
    assert_eq!(&endpoints, running.endpoints());
    assert_eq!(endpoints.relay_ports, range.0..=range.1);
    let udp = endpoints
        .listeners
        .iter()
        .find(|(t, _)| *t == Transport::Udp)
        .map(|(_, a)| *a)
        .expect("a UDP listener");
    assert!(
        endpoints.listeners.contains(&(Transport::Tcp, udp)),
        "TCP on the same port"
    );

    let before = tai_ns();
    let exchange = tokio::task::spawn_blocking(move || {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let mut client = TurnClient::new(udp, "alice", "pw").unwrap();
        let relayed = client.allocate(AddressFamily::IPV4).unwrap();
        assert_eq!(client.bind(0x4000, peer_addr).unwrap(), 0);
        client.socket.send_to(b"\x40\x00\x00\x04ping", udp).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], relayed));
        peer.send_to(b"pong", relayed).unwrap();
        let (n, _) = client.socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x40\x00\x00\x04pong");
        peer_addr
    });
    let peer_addr = exchange.await.unwrap();

    // The report follows the send, so it may land just after the echo.
    for _ in 0..100 {
        if recorder.packets.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let after = tai_ns();
    let mut packets = recorder.packets.lock().unwrap().clone();
    packets.sort_by_key(|p| p.recv);
    assert_eq!(packets.len(), 2, "{packets:?}");
    for (seen, (direction, payload)) in packets
        .iter()
        .zip([(Direction::ToPeer, b"ping"), (Direction::ToClient, b"pong")])
    {
        assert_eq!(
            (seen.direction, seen.payload.as_slice(), seen.peer),
            (direction, &payload[..], peer_addr)
        );
        assert!(
            before <= seen.recv && seen.recv <= seen.send && seen.send <= after,
            "CLOCK_TAI stamps in order: {seen:?}"
        );
    }
    let metrics = running.metrics().render();
    assert!(metrics.contains("demarc_relay_userspace_dwell_seconds_count{direction=\"to_peer\"} 1"));
    running.drain(Duration::from_secs(1)).await;
}
