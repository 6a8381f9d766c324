//! Probe overhead, side by side in one run (needs root): a sender in one
//! namespace blasts 172-byte RTP-like datagrams with sendto to a receiver in
//! another, without probes and with a probe in each namespace, alternating.
//! Prints sender throughput, the ratio, and the kernel's BPF run time per run
//! of every program (BPF_OBJ_GET_INFO_BY_FD run_time_ns / run_cnt).
//!
//! Then the exact per-packet cost of the wire programs (tc, XDP, endpoint and
//! relay), from BPF_PROG_TEST_RUN on a crafted frame, repeated.
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

use aya::{
    maps::Array,
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
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

/// Ethernet + IPv4 + UDP (3478 → 40000) around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&3478u16.to_be_bytes());
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// Average ns per run of `prog` over `repeat` runs on `data`.
fn test_run_ns(ebpf: &mut Ebpf, prog: &str, data: &[u8], repeat: u32) -> u128 {
    let opts = TestRunOptions {
        data_in: Some(data),
        repeat,
        ..Default::default()
    };
    let p = ebpf.program_mut(prog).unwrap();
    let r = if let Ok(x) = <&mut Xdp>::try_from(&mut *p) {
        x.load().unwrap();
        x.test_run(opts)
    } else {
        let tc: &mut SchedClassifier = p.try_into().unwrap();
        tc.load().unwrap();
        tc.test_run(opts)
    };
    let r: Result<_, ProgramError> = r;
    r.unwrap().duration.as_nanos()
}

/// BPF_PROG_TEST_RUN cost of the wire programs, recording every packet
/// (rate 1) and recording none (parse, key and counters only).
fn wire_program_costs() {
    // Fewer records than a quarter of the ring buffer: no wake-ups, no drops.
    const REPEAT: u32 = 15_000;
    let bare = payload(0x6000, 7, false);
    let framed = payload(0x6000, 7, true);
    println!(
        "\nper-packet cost of the wire programs (BPF_PROG_TEST_RUN, {REPEAT} runs, 172 B RTP)"
    );
    println!("| program | payload | records | ns per packet |");
    println!("|---|---|---|---:|");
    for (threshold, records) in [(1u64 << 32, "all"), (0, "none")] {
        for (obj, progs) in [
            (
                demarc_ebpf::ENDPOINT_OBJ,
                &["tx_wire", "rx_wire", "rx_wire_tc"][..],
            ),
            (
                demarc_ebpf::RELAY_OBJ,
                &["relay_in", "relay_in_tc", "relay_out"][..],
            ),
        ] {
            for prog in progs {
                for (what, p) in [("bare", &bare), ("ChannelData", &framed)] {
                    let mut ebpf = EbpfLoader::new()
                        .override_global("cfg_sample_threshold", &threshold, true)
                        .load(obj)
                        .unwrap();
                    if let Some(m) = ebpf.map_mut("port_roles") {
                        let mut roles: Array<_, u8> = Array::try_from(m).unwrap();
                        roles.set(3478, 1, 0).unwrap();
                        roles
                            .set(40000, demarc_ebpf::abi::ROLE_PEER as u8, 0)
                            .unwrap();
                    }
                    let ns = test_run_ns(&mut ebpf, prog, &frame(p), REPEAT);
                    println!("| {prog} | {what} | {records} | {ns} |");
                }
            }
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sender throughput with probes started with `args`, one round.
fn with_probes(pair: &NetnsPair, args: &[&str], reports: &mut Vec<String>) -> f64 {
    let probes = [
        Probe::start(&pair.sender, "vs", args),
        Probe::start(&pair.receiver, "vr", args),
    ];
    let pps = blast(pair);
    for p in probes {
        reports.push(p.stop().1);
    }
    pps
}

fn main() {
    wire_program_costs();
    let pair = NetnsPair::new("bn");
    // Every packet recorded (the agents' work included), and almost none
    // (the BPF programs' cost alone).
    let configs: [(&str, &[&str]); 3] = [
        ("without probe", &[]),
        ("probes, every packet recorded", &[]),
        ("probes, sample rate 0.0001", &["--sample-rate", "0.0001"]),
    ];
    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut reports = Vec::new();
    for _ in 0..ROUNDS {
        for (i, (_, args)) in configs.iter().enumerate() {
            let pps = if i == 0 {
                blast(&pair)
            } else {
                with_probes(&pair, args, &mut reports)
            };
            runs[i].push(pps);
        }
    }
    let base = median(runs[0].clone());
    println!(
        "\nsender throughput, sendto of 172 B datagrams over veth, {ROUNDS} rounds of {SECONDS} s"
    );
    println!("| configuration | median pps | ratio to without | runs (pps) |");
    println!("|---|---:|---:|---|");
    for ((name, _), r) in configs.iter().zip(&runs) {
        let m = median(r.clone());
        println!("| {name} | {m:.0} | {:.3} | {r:.0?} |", m / base);
    }
    println!("\nBPF cost per run, last round of each probe configuration (sender, then receiver):");
    for r in &reports[reports.len() - 4..] {
        // The probe's exit report: per-point counters and per-program cost.
        for line in r
            .lines()
            .skip_while(|l| !l.starts_with("demarc-probe: stopped"))
        {
            println!("{line}");
        }
    }
}
