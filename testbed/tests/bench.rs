//! The benchmark runner end to end, briefly (root: namespace, BPF, pinned
//! CPUs): the three servers, probe off and on, one short run. Checks that every
//! measurement was taken, not how fast anything is (that is BENCHMARKS.md's).

use std::time::Duration;

use demarc_testbed::bench::{self, report, Kind, Options};

#[test]
fn bench_measures_every_server_with_and_without_the_probe() {
    // SAFETY: plain getter.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (CI runs as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        runs: 1,
        payloads: vec![160],
        kinds: vec![Kind::Demarc, Kind::DemarcXdp, Kind::Coturn],
        probe: vec![false, true],
        trial: Duration::from_millis(300),
        pairs: 2,
        server_cpu: 1,
        load_cpu: 0,
        rtt_rate: 1000.0,
        rx_steering: true,
        prefix: format!("dmcbt{}", std::process::id() % 100_000),
        dir: dir.path().to_owned(),
    };
    let ms = bench::run(&opts).unwrap();
    assert_eq!(
        ms.len(),
        5,
        "2 servers x probe off/on, the fast path with it"
    );
    for m in &ms {
        let what = format!("{:?}", m.config);
        assert!(m.max_rate >= 1000.0, "{what}: {} msgs/s", m.max_rate);
        // The fast path relays in softirq, which /proc does not charge to
        // the server: its process may well show no CPU time at all.
        assert!(
            m.cpu_ns_per_datagram > 0.0 || m.config.kind == Kind::DemarcXdp,
            "{what}: no server CPU time"
        );
        assert!(
            m.rtt.0 > 0.0 && m.rtt.1 >= m.rtt.0,
            "{what}: rtt {:?}",
            m.rtt
        );
        assert!(!m.trials.is_empty());
        // Steered receive work and the server itself keep its CPU busy.
        assert!(m.core_busy > 0.0, "{what}: server CPU idle");
        // The probe's kernel histograms saw the relayed packets, and only with the probe.
        assert_eq!(m.dwell_moderate.is_some(), m.config.probe, "{what}");
        assert_eq!(!m.programs.is_empty(), m.config.probe, "{what}");
        if let Some((p50, p99)) = m.dwell_moderate {
            assert!(p50 > 0.0 && p99 >= p50, "{what}: dwell {p50} / {p99}");
        }
    }
    let table = report::markdown(&ms);
    print!("{table}");
    for needle in [
        "| coturn | 160 B | on |",
        "| demarc-relay | 160 B | off |",
        "| demarc-relay-xdp | 160 B | on |",
        "relay_fast",
        "relay_in",
    ] {
        assert!(table.contains(needle), "{needle} missing");
    }
    let headline = report::headline(&ms).unwrap();
    let ratio = |prefix: &str| {
        headline
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix}R in {headline:?}"))
    };
    assert!(ratio("demarc/coturn userspace = ") > 0.0);
    assert!(ratio("demarc/coturn xdp = ") > 0.0);
    // The namespace is gone.
    assert!(!std::path::Path::new(&format!("/run/netns/{}-bench", opts.prefix)).exists());
}
