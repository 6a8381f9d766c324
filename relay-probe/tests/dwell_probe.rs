//! The eBPF dwell probe, for real, as root: in a network namespace this test
//! makes, coturn's turnutils_uclient relays through a TURN server on the
//! namespace's loopback to turnutils_peer, with channels and with Send
//! indications. The probe (XDP relay_in + tc relay_out on lo) must pair every
//! relayed packet in both directions, inside demarc-relay and beside coturn
//! (`--probe-only`), and its dwell must agree with demarc-relay's own
//! userspace receive→send times.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    process::Command,
    time::Duration,
};

use common::{require, run_with_limit, Proc, TempDir, BIN};
use demarc_proto::{ingest::Record, Framing, Point};

const MESSAGES: u32 = 100;
const CLIENTS: u32 = 2;
const USER: &str = "ninefingers:youhavetoberealistic";
const LISTEN: u16 = 3478;
const RELAY_PORTS: (u16, u16) = (49152, 49190);

/// A namespace with only loopback, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        // SAFETY: plain getter.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test needs root (CI runs as root)"
        );
        let name = format!("dmcdw{}{tag}", std::process::id() % 100_000);
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            assert!(
                Command::new("ip").args(&args).status().unwrap().success(),
                "ip {args:?}"
            );
        }
        Self(name)
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn relay_range() -> [String; 4] {
    [
        "--min-port".into(),
        RELAY_PORTS.0.to_string(),
        "--max-port".into(),
        RELAY_PORTS.1.to_string(),
    ]
}

/// Runs uclient through the server on the namespace's 127.0.0.1, checks
/// every message came back and returns how many were sent: MESSAGES per
/// client, twice that with `-y` (each client also answers its partner).
fn uclient(ns: &Netns, extra: &[&str]) -> u32 {
    require("turnutils_uclient");
    let (user, password) = USER.split_once(':').unwrap();
    let out = run_with_limit(
        "turnutils_uclient",
        ns.exec("turnutils_uclient")
            .args(["-n", &MESSAGES.to_string(), "-m", &CLIENTS.to_string()])
            .args(["-l", "160", "-z", "10", "-u", user, "-w", password])
            .args(["-e", "127.0.0.1", "-r", "3480"])
            .args(extra)
            .arg("127.0.0.1"),
        Duration::from_secs(60),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let sent = if extra.contains(&"-y") { 2 } else { 1 } * MESSAGES * CLIENTS;
    let expected = format!("tot_send_msgs={sent}, tot_recv_msgs={sent}");
    assert!(
        text.contains(&expected),
        "turnutils_uclient {extra:?}:\n{text}"
    );
    sent
}

fn peer(ns: &Netns) -> Proc {
    require("turnutils_peer");
    let p = Proc::spawn(
        "turnutils_peer",
        ns.exec("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", "3480"]),
    );
    std::thread::sleep(Duration::from_millis(300));
    p
}

/// Waits for the probe's start-up report (it ends with the output line),
/// then keeps draining stdout so the process never blocks on it.
fn wait_for_report(p: &mut Proc) {
    use std::io::BufRead;
    let stdout = p.child.stdout.take().expect("piped stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut report = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        report.push_str(&line);
        report.push('\n');
        if line.starts_with("  output:") {
            print!("{report}");
            std::thread::spawn(move || lines.for_each(drop));
            return;
        }
    }
    panic!("{} exited before its start-up report:\n{report}", p.name);
}

struct Pairs {
    /// (in framing, out framing) → dwell ns of each matched packet.
    dwell: HashMap<(Framing, Framing), Vec<u64>>,
}

/// Pairs relay_in with relay_out records by key.
fn pairs(records: &[Record]) -> Pairs {
    let mut ins: HashMap<u64, Vec<&Record>> = HashMap::new();
    for r in records.iter().filter(|r| r.point == Point::RelayIn) {
        ins.entry(r.key).or_default().push(r);
    }
    let mut dwell: HashMap<(Framing, Framing), Vec<u64>> = HashMap::new();
    for out in records.iter().filter(|r| r.point == Point::RelayOut) {
        let Some(cands) = ins.get(&out.key) else {
            continue;
        };
        // The latest relay_in before this relay_out (payloads repeat across clients).
        if let Some(i) = cands
            .iter()
            .filter(|i| i.ts_ns <= out.ts_ns)
            .max_by_key(|i| i.ts_ns)
        {
            dwell
                .entry((i.framing, out.framing))
                .or_default()
                .push(out.ts_ns - i.ts_ns);
        }
    }
    Pairs { dwell }
}

fn read_records(path: &std::path::Path) -> Vec<Record> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn check_both_directions(p: &Pairs, client_to_peer: Framing, peer_to_client: Framing) {
    for (key, what) in [
        ((client_to_peer, Framing::Bare), "client → peer"),
        ((Framing::Bare, peer_to_client), "peer → client"),
    ] {
        let d = p
            .dwell
            .get(&key)
            .unwrap_or_else(|| panic!("no {what} pairs ({key:?}): {:?}", p.dwell.keys()));
        let mut sorted = d.clone();
        sorted.sort();
        println!(
            "{what} {key:?}: {} packets, dwell p50 {} ns, max {} ns",
            d.len(),
            sorted[d.len() / 2],
            sorted[d.len() - 1]
        );
        assert_eq!(
            d.len() as u32,
            MESSAGES * CLIENTS,
            "{what}: every relayed packet paired"
        );
        assert!(
            sorted[d.len() - 1] < 50_000_000,
            "{what}: a dwell over 50 ms"
        );
    }
}

/// GET /metrics from inside the namespace.
fn scrape(ns: &Netns, port: u16) -> String {
    let path = format!("/run/netns/{}", ns.0);
    std::thread::spawn(move || {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: valid fd; this thread only.
        assert_eq!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
            0
        );
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .join()
    .unwrap()
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
}

/// demarc-relay in `ns` with the probe on lo writing records to `records`,
/// metrics on 9641; `extra` arguments appended.
fn relay_with_probe(ns: &Netns, dir: &TempDir, records: &std::path::Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        "demarc-relay",
        ns.exec(BIN)
            .args([
                "-L",
                "127.0.0.1",
                "--realm",
                "demarc.test",
                "--user",
                USER,
                "--allow-loopback-peers",
            ])
            .args([
                "--listening-port",
                &LISTEN.to_string(),
                "--no-tls",
                "--drain-timeout",
                "1",
            ])
            .args(relay_range())
            .args(["--prometheus", "--prometheus-port", "9641"])
            .args(["--iface", "lo", "--state-dir"])
            .arg(dir.0.join("state"))
            .arg(format!("--output=jsonl:{}", records.display()))
            .args(extra)
            .env("RUST_LOG", "warn"),
    )
}

fn stop(mut relay: Proc) {
    relay.signal(libc::SIGTERM);
    assert!(
        relay
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "relay did not stop cleanly"
    );
}

#[test]
fn dwell_inside_demarc_relay_pairs_every_packet_and_agrees_with_userspace() {
    let ns = Netns::new("in");
    let dir = TempDir::new("dwell-in");
    let records = dir.0.join("records.jsonl");
    let mut relay = relay_with_probe(&ns, &dir, &records, &[]);
    wait_for_report(&mut relay);
    let _peer = peer(&ns);
    uclient(&ns, &[]);
    uclient(&ns, &["-s"]);
    std::thread::sleep(Duration::from_millis(500));
    let metrics = scrape(&ns, 9641);
    stop(relay);

    let all = read_records(&records);
    let p = pairs(&all);
    // ChannelData both ways; Send indications in, Data indications out.
    check_both_directions(&p, Framing::ChannelData, Framing::ChannelData);
    check_both_directions(&p, Framing::Send, Framing::Data);

    // The kernel histograms counted every relayed packet too.
    for dir in ["client_to_peer", "peer_to_client"] {
        let n = metric(&metrics, &format!("demarc_relay_kernel_dwell_seconds_count{{listener=\"{LISTEN}\",direction=\"{dir}\"}}"));
        println!("kernel histogram {dir}: {n}");
        assert_eq!(n as u32, 2 * MESSAGES * CLIENTS, "{dir}");
    }
    // Kernel dwell (XDP in → tc out) contains the userspace receive → send
    // time, plus the kernel's own part: compare the medians (outliers are the
    // scheduler's, on a loaded machine), the userspace one from its histogram.
    let mut kernel: Vec<u64> = p.dwell.values().flatten().copied().collect();
    kernel.sort_unstable();
    let kernel_p50 = kernel[kernel.len() / 2] as f64 / 1e9;
    let (user_lo, user_hi) = userspace_median_bucket(&metrics);
    println!(
        "median dwell: kernel {:.1} us, userspace in ({:.0}, {:.0}] us",
        kernel_p50 * 1e6,
        user_lo * 1e6,
        user_hi * 1e6
    );
    let user_count: f64 = ["to_peer", "to_client"]
        .iter()
        .map(|d| {
            metric(
                &metrics,
                &format!("demarc_relay_userspace_dwell_seconds_count{{direction=\"{d}\"}}"),
            )
        })
        .sum();
    assert_eq!(
        user_count as usize,
        kernel.len(),
        "both sides saw the same packets"
    );
    assert!(
        kernel_p50 > user_lo,
        "kernel dwell shorter than the userspace part of it"
    );
    assert!(
        kernel_p50 - user_hi < 100e-6,
        "kernel-in + kernel-out over 100 us"
    );
}

/// With `--xdp-fast-path`, the channel traffic of an outside peer and of
/// two clients of the relay is relayed in the kernel: every message still
/// arrives, user space relays only the first packets (before the routes are
/// installed), and the kernel dwell and records still cover every packet.
#[test]
fn xdp_fast_path_relays_bound_channels_in_the_kernel() {
    let ns = Netns::new("fp");
    let dir = TempDir::new("dwell-fp");
    let records = dir.0.join("records.jsonl");
    let mut relay = relay_with_probe(&ns, &dir, &records, &["--xdp-fast-path"]);
    wait_for_report(&mut relay);
    let _peer = peer(&ns);
    let counts = |ns: &Netns| {
        let m = scrape(ns, 9641);
        let get = |name: &str, dir: &str| metric(&m, &format!("{name}{{direction=\"{dir}\"}}"));
        let fast = "demarc_relay_fast_path_packets_total";
        let user = "demarc_relay_userspace_dwell_seconds_count";
        let kernel: f64 = ["client_to_peer", "peer_to_client"]
            .iter()
            .map(|d| {
                metric(
                    &m,
                    &format!("demarc_relay_kernel_dwell_seconds_count{{listener=\"{LISTEN}\",direction=\"{d}\"}}"),
                )
            })
            .sum();
        (
            get(fast, "client_to_peer"),
            get(fast, "peer_to_client"),
            get(user, "to_peer") + get(user, "to_client"),
            kernel,
        )
    };
    let sent = f64::from(MESSAGES * CLIENTS);

    // Channels to an outside peer: ChannelData in, bare UDP out, and back.
    uclient(&ns, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let (to_peer, to_client, user, kernel) = counts(&ns);
    println!("peer run: fast {to_peer} + {to_client}, user space {user}, of {sent} each way");
    // A few go through user space before the routes are in.
    assert!((0.8 * sent..=sent).contains(&to_peer), "{to_peer}");
    assert!((0.8 * sent..=sent).contains(&to_client), "{to_client}");
    assert_eq!(
        user,
        2.0 * sent - to_peer - to_client,
        "user space relayed the rest"
    );
    assert_eq!(
        kernel,
        2.0 * sent,
        "every relayed packet has its kernel dwell"
    );

    // Client to client: one pass in the kernel, where user space relays twice.
    let sent = f64::from(uclient(&ns, &["-y"]));
    std::thread::sleep(Duration::from_millis(300));
    let (to_peer2, to_client2, user2, kernel2) = counts(&ns);
    let passes = to_peer2 - to_peer;
    println!(
        "client-to-client run: {passes} fast passes, user space {}",
        user2 - user
    );
    assert_eq!(to_client2, to_client, "nothing came from an outside peer");
    assert!((0.8 * sent..=sent).contains(&passes), "{passes}");
    assert_eq!(
        user2 - user,
        2.0 * (sent - passes),
        "user space relayed the rest"
    );
    assert_eq!(kernel2 - kernel, passes + (user2 - user));
    stop(relay);

    // The fast path's records pair up like the others: sampled relay_in and
    // relay_out with one key; client to client is ChannelData both sides.
    let p = pairs(&read_records(&records));
    let paired: usize = p.dwell.values().map(Vec::len).sum();
    assert_eq!(paired as f64, kernel2, "every relayed packet paired");
    let mut c2c = p.dwell[&(Framing::ChannelData, Framing::ChannelData)].clone();
    c2c.sort_unstable();
    println!(
        "fast client-to-client dwell p50 {} ns, max {} ns",
        c2c[c2c.len() / 2],
        c2c[c2c.len() - 1]
    );
    assert_eq!(c2c.len() as f64, passes);
    assert!(
        c2c[c2c.len() / 2] < 20_000,
        "fast path dwell p50 over 20 us"
    );
}

/// The bucket (lower, upper seconds) of the userspace dwell histogram, both
/// directions together, that holds the median.
fn userspace_median_bucket(metrics: &str) -> (f64, f64) {
    let prefix = "demarc_relay_userspace_dwell_seconds_bucket{direction=";
    let mut cumulative: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(prefix)) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap();
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        match cumulative.iter_mut().find(|(b, _)| *b == le) {
            Some(e) => e.1 += n,
            None => cumulative.push((le, n)),
        }
    }
    let total = cumulative.last().unwrap().1;
    let mut lower = 0.0;
    for (le, n) in cumulative {
        if n * 2.0 >= total {
            return (lower, le);
        }
        lower = le;
    }
    unreachable!("the +Inf bucket holds everything")
}

#[test]
fn probe_only_beside_coturn_pairs_every_packet() {
    require("turnserver");
    let ns = Netns::new("co");
    let dir = TempDir::new("dwell-co");
    let (user, password) = USER.split_once(':').unwrap();
    let _coturn = Proc::spawn(
        "turnserver",
        ns.exec("turnserver")
            .args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.1",
            ])
            .args(["--listening-port", &LISTEN.to_string()])
            .args(relay_range())
            .args([
                "--lt-cred-mech",
                "--user",
                &format!("{user}:{password}"),
                "--realm",
                "demarc.test",
            ])
            .args([
                "--allow-loopback-peers",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--relay-threads",
                "1",
            ])
            .args(["--pidfile"])
            .arg(dir.0.join("turnserver.pid"))
            .args(["--log-file", "stdout"]),
    );
    let records = dir.0.join("records.jsonl");
    let mut probe = Proc::spawn(
        "demarc-relay --probe-only",
        Command::new(BIN)
            .args(["--probe-only", "--netns", &ns.0, "--iface", "lo"])
            .args(["--listening-port", &LISTEN.to_string()])
            .args(relay_range())
            .arg("--state-dir")
            .arg(dir.0.join("state"))
            .arg(format!("--output=jsonl:{}", records.display())),
    );
    wait_for_report(&mut probe);
    std::thread::sleep(Duration::from_millis(500));
    let _peer = peer(&ns);
    uclient(&ns, &[]);
    uclient(&ns, &["-s"]);
    std::thread::sleep(Duration::from_millis(300));
    probe.signal(libc::SIGINT);
    assert!(
        probe
            .wait_exit(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "probe did not stop cleanly"
    );
    let p = pairs(&read_records(&records));
    check_both_directions(&p, Framing::ChannelData, Framing::ChannelData);
    check_both_directions(&p, Framing::Send, Framing::Data);
}
