//! Probe overhead, side by side in one run (needs root): a sender in one
//! namespace blasts 172-byte RTP-like datagrams with sendto to a receiver in
//! another, without probes and with a probe in each namespace, alternating.
//! Prints sender throughput, the ratio, and the kernel's BPF run time per run
//! of every program (BPF_OBJ_GET_INFO_BY_FD run_time_ns / run_cnt).
//!
//! cargo bench -p demarc-probe --bench probe_overhead

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use support::*;

const PORT: u16 = 6400;
const SECONDS: f64 = 2.0;
const ROUNDS: usize = 3;

/// Datagrams per second the sender reached in SECONDS.
fn blast(pair: &NetnsPair) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let rx = in_netns(&pair.receiver, move || {
        while !s2.load(Ordering::Relaxed) {
            receive(Syscall::To, PORT, usize::MAX, Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let sent = in_netns(&pair.sender, || {
        let p = payload(0x5000, 1, false);
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let dst = (RECEIVER_IP, PORT);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < SECONDS {
            if sock.send_to(&p, dst).is_ok() {
                n += 1;
            }
        }
        n as f64 / start.elapsed().as_secs_f64()
    })
    .join()
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    rx.join().unwrap();
    sent
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let pair = NetnsPair::new("bn");
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut reports = Vec::new();
    for _ in 0..ROUNDS {
        without.push(blast(&pair));
        let probes = [
            Probe::start(&pair.sender, "vs", &[]),
            Probe::start(&pair.receiver, "vr", &[]),
        ];
        with.push(blast(&pair));
        for p in probes {
            reports.push(p.stop().1);
        }
    }
    let (w0, w1) = (median(without.clone()), median(with.clone()));
    println!(
        "\nsender throughput, sendto of 172 B datagrams over veth, {ROUNDS} rounds of {SECONDS} s"
    );
    println!("| configuration | median pps | runs (pps) |");
    println!("|---|---:|---|");
    println!("| without probe | {w0:.0} | {without:.0?} |");
    println!("| with a probe in each namespace | {w1:.0} | {with:.0?} |");
    println!(
        "with/without = {:.3} (overhead {:.1}%)",
        w1 / w0,
        (1.0 - w1 / w0) * 100.0
    );
    println!("\nBPF cost per run, last round (sender probe, then receiver probe):");
    for r in &reports[reports.len() - 2..] {
        // The probe's exit report: per-point counters and per-program cost.
        for line in r
            .lines()
            .skip_while(|l| !l.starts_with("demarc-probe: stopped"))
        {
            println!("{line}");
        }
    }
}
