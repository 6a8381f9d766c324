//! Privileged (root, BPF, namespaces, Chromium): whole scenarios end to end —
//! console, relay with its dwell probe, endpoint probes in `a` and `b`, the
//! delay lines and the peers — each checked against the delay line's log by
//! `scenario::evaluate` (the same checks `demarc-testbed scenario` runs).
//! Serial: they share the machine's two cores and would disturb each other's
//! timing. Needs the workspace's binaries (`cargo test --workspace` builds
//! them next to this test).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use demarc_testbed::browser;
use demarc_testbed::scenario::{self, Kind, Options, Outcome};

static SERIAL: Mutex<()> = Mutex::new(());

fn free_loopback() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Namespace prefixes of this process: another run of these tests on the
/// same machine (a developer's beside CI's) uses others.
fn prefix(name: &str) -> String {
    format!("dmt{}-{name}", std::process::id())
}

fn run(kind: Kind, seconds: u64, name: &str, dir: &std::path::Path) -> (Outcome, SocketAddr) {
    let options = Options {
        kind,
        duration: Duration::from_secs(seconds),
        // Short, so that a 20 s call holds two steps.
        step_every: Duration::from_secs(6),
        square: false,
        chromium: false,
        prefix: prefix(name),
        console: free_loopback(),
        dir: dir.into(),
    };
    let outcome = scenario::run(&options, Arc::new(AtomicBool::new(false)))
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    println!("{}", outcome.text);
    assert!(
        outcome.failures.is_empty(),
        "{kind} failed its checks:\n{}\n{}",
        outcome.failures.join("\n"),
        outcome.text
    );
    (outcome, options.console)
}

#[test]
fn symmetric_segments_match_the_delay_line() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    run(Kind::Symmetric, 12, "sym", dir.path());
}

#[test]
fn asymmetric_directions_keep_their_own_delays() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (outcome, _) = run(Kind::Asymmetric, 12, "asym", dir.path());
    let wire = |i: usize| {
        let s = outcome.directions[i].segment("wire").unwrap();
        scenario::check::percentile(&s.measured, 50.0).unwrap()
    };
    // 20 ms and 35 ms configured; the relay's dwell adds a little to both.
    assert!(
        (20_000_000..21_500_000).contains(&wire(0)),
        "A → B {}",
        wire(0)
    );
    assert!(
        (35_000_000..36_500_000).contains(&wire(1)),
        "B → A {}",
        wire(1)
    );
}

#[test]
fn steps_show_in_one_direction_and_the_console_draws_them() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (mut outcome, addr) = run(Kind::Steps, 20, "steps", dir.path());
    let steps = outcome
        .text
        .lines()
        .filter(|l| l.starts_with("step "))
        .count();
    assert!(
        steps >= 2,
        "only {steps} steps inside the call:\n{}",
        outcome.text
    );
    // The console still runs: its pages, screenshotted for people to look at.
    let console = outcome
        .console
        .take()
        .expect("the console outlives the lab");
    let shots = browser::screenshot_console(addr, &browser::artifacts(), dir.path())
        .unwrap_or_else(|e| panic!("screenshots: {e}"));
    for shot in &shots {
        let size = std::fs::metadata(shot).unwrap().len();
        assert!(
            size > 10_000,
            "{} is {size} bytes: an empty page?",
            shot.display()
        );
    }
    console.stop().unwrap();
}

#[test]
fn chromium_peers_are_measured_like_any_other() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    run(Kind::Browser, 12, "web", dir.path());
}

#[test]
fn peers_that_cannot_reach_the_relay_fail_with_one_line() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // No delay line and no relay: the wans' TUNs drop everything.
    let topology = demarc_testbed::Topology::up(&prefix("noice")).unwrap();
    let mut call = scenario::call_options(Duration::from_secs(1), Arc::new(AtomicBool::new(false)));
    call.connect_timeout = Duration::from_secs(5);
    let err = demarc_testbed::peer::calls(&topology, &call, 1)
        .expect_err("no call without a relay")
        .to_string();
    assert!(err.starts_with("peer "), "{err}");
    assert!(err.contains("10.77.0.1:3478"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    topology.down().unwrap();
}
