//! Prometheus metrics, with coturn's names where coturn has one
//! (`turn_total_allocations`, `turn_total_traffic_*`), and the userspace
//! dwell-time histograms.
//!
//! coturn labels traffic by realm and user; here it is totals only, so a
//! busy server's scrape stays small and its label set bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::observe::{Direction, PacketObserver, Relayed};

/// Upper bounds of the dwell-time buckets, in microseconds.
const DWELL_BOUNDS_US: [u64; 12] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; DWELL_BOUNDS_US.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, ns: u64) {
        if let Some(i) = DWELL_BOUNDS_US.iter().position(|&b| ns <= b * 1000) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in DWELL_BOUNDS_US.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Packets and bytes one way.
#[derive(Debug, Default)]
struct Traffic {
    packets: AtomicU64,
    bytes: AtomicU64,
}

impl Traffic {
    fn add(&self, bytes: usize) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    allocations: AtomicU64,
    allocations_created: AtomicU64,
    peer_denied: AtomicU64,
    /// From clients, to clients, from peers, to peers.
    client_in: Traffic,
    client_out: Traffic,
    peer_in: Traffic,
    peer_out: Traffic,
    dwell_to_peer: Histogram,
    dwell_to_client: Histogram,
    errors: Mutex<BTreeMap<u16, u64>>,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    /// Renders the dwell probe's kernel histograms, once the probe runs.
    kernel_dwell: std::sync::OnceLock<KernelDwell>,
}

/// A source of more exposition text (the dwell probe's histograms).
pub struct KernelDwell(pub Box<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for KernelDwell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelDwell")
    }
}

impl Metrics {
    pub fn set_allocations(&self, n: usize) {
        self.allocations.store(n as u64, Relaxed);
    }

    pub fn allocation_created(&self) {
        self.allocations_created.fetch_add(1, Relaxed);
    }

    pub fn peer_denied(&self) {
        self.peer_denied.fetch_add(1, Relaxed);
    }

    /// An error response sent, by STUN error code.
    pub fn error(&self, code: u16) {
        *self
            .errors
            .lock()
            .expect("not poisoned")
            .entry(code)
            .or_default() += 1;
    }

    /// A packet dropped without an answer, by reason.
    pub fn dropped(&self, reason: &'static str) {
        *self
            .dropped
            .lock()
            .expect("not poisoned")
            .entry(reason)
            .or_default() += 1;
    }

    /// Bytes received from a client (any framing, control included).
    pub fn client_received(&self, bytes: usize) {
        self.client_in.add(bytes);
    }

    pub fn client_sent(&self, bytes: usize) {
        self.client_out.add(bytes);
    }

    pub fn peer_received(&self, bytes: usize) {
        self.peer_in.add(bytes);
    }

    pub fn peer_sent(&self, bytes: usize) {
        self.peer_out.add(bytes);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "turn_total_allocations",
            "Allocations alive now.",
            "gauge",
            self.allocations.load(Relaxed),
        );
        gauge(
            &mut out,
            "demarc_relay_allocations_created_total",
            "Allocations granted since start.",
            "counter",
            self.allocations_created.load(Relaxed),
        );
        gauge(
            &mut out,
            "demarc_relay_peer_denied_total",
            "Requests refused by the peer policy (403).",
            "counter",
            self.peer_denied.load(Relaxed),
        );
        for (prefix, traffic, what) in [
            (
                "turn_total_traffic_rcv",
                &self.client_in,
                "received from clients",
            ),
            (
                "turn_total_traffic_sent",
                &self.client_out,
                "sent to clients",
            ),
            (
                "turn_total_traffic_peer_rcv",
                &self.peer_in,
                "received from peers",
            ),
            (
                "turn_total_traffic_peer_sent",
                &self.peer_out,
                "sent to peers",
            ),
        ] {
            let packets = format!("Packets {what}.");
            gauge(
                &mut out,
                &format!("{prefix}p"),
                &packets,
                "counter",
                traffic.packets.load(Relaxed),
            );
            let bytes = format!("Bytes {what}.");
            gauge(
                &mut out,
                &format!("{prefix}b"),
                &bytes,
                "counter",
                traffic.bytes.load(Relaxed),
            );
        }
        let _ = writeln!(
            out,
            "# HELP demarc_relay_errors_total Error responses sent, by STUN error code.\n\
             # TYPE demarc_relay_errors_total counter"
        );
        for (code, n) in self.errors.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "demarc_relay_errors_total{{code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP demarc_relay_dropped_total Packets dropped without an answer, by reason.\n\
             # TYPE demarc_relay_dropped_total counter"
        );
        for (reason, n) in self.dropped.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "demarc_relay_dropped_total{{reason=\"{reason}\"}} {n}");
        }
        let name = "demarc_relay_userspace_dwell_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from the relay's receive call returning to its send call returning.\n\
             # TYPE {name} histogram"
        );
        self.dwell_to_peer
            .render(&mut out, name, "direction=\"to_peer\"");
        self.dwell_to_client
            .render(&mut out, name, "direction=\"to_client\"");
        if let Some(k) = self.kernel_dwell.get() {
            out.push_str(&(k.0)());
        }
        out
    }

    /// Adds the dwell probe's histograms to every scrape from now on.
    pub fn set_kernel_dwell(&self, render: KernelDwell) {
        let _ = self.kernel_dwell.set(render);
    }
}

impl PacketObserver for Metrics {
    fn relayed(&self, packet: &Relayed<'_>) {
        let ns = packet.send_tai_ns.saturating_sub(packet.recv_tai_ns);
        match packet.direction {
            Direction::ToPeer => self.dwell_to_peer.observe(ns),
            Direction::ToClient => self.dwell_to_client.observe(ns),
        }
    }
}

/// Serves `GET /metrics` (anything else is 404) until the task is dropped.
/// A few lines of HTTP/1.0 instead of a web framework: one route, one scraper.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request))
                    .await;
            let Ok(Ok(n)) = read else { return };
            let head = String::from_utf8_lossy(&request[..n]);
            let response = if head.starts_with("GET /metrics ") {
                let body = metrics.render();
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::{FiveTuple, Transport};
    use std::net::SocketAddr;

    #[test]
    fn renders_coturn_names_and_histograms() {
        let m = Metrics::default();
        m.set_allocations(3);
        m.client_received(100);
        m.peer_sent(80);
        m.error(401);
        m.dropped("malformed");
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        m.relayed(&Relayed {
            direction: Direction::ToPeer,
            client: FiveTuple {
                transport: Transport::Udp,
                local: addr,
                remote: addr,
            },
            relay: addr,
            peer: addr,
            payload: &[],
            recv_tai_ns: 1_000,
            send_tai_ns: 31_000,
        });
        let text = m.render();
        for line in [
            "turn_total_allocations 3",
            "turn_total_traffic_rcvp 1",
            "turn_total_traffic_rcvb 100",
            "turn_total_traffic_peer_sentb 80",
            "demarc_relay_errors_total{code=\"401\"} 1",
            "demarc_relay_dropped_total{reason=\"malformed\"} 1",
            "demarc_relay_userspace_dwell_seconds_bucket{direction=\"to_peer\",le=\"0.00005\"} 1",
            "demarc_relay_userspace_dwell_seconds_bucket{direction=\"to_peer\",le=\"0.000025\"} 0",
            "demarc_relay_userspace_dwell_seconds_count{direction=\"to_client\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
