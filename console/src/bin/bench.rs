//! demarc-console-bench: how many records per second the console ingests into
//! SQLite (HTTP handling, JSON, auth, batch row, join, packet rows, rollups),
//! and how much memory the join holds per pending key under a flood.
//!
//! cargo run --release -p demarc-console --bin demarc-console-bench -- [SECONDS] [PPS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use demarc_console::join::{ClockBound, JoinConfig, Joiner, Obs, Tuple};
use demarc_console::store::{self, tokens};
use demarc_console::synth::Scenario;
use demarc_console::{app, AppState, Config};
use demarc_proto::{Class, Point};
use tower::ServiceExt;

/// Resident set size of this process, bytes (Linux).
fn rss() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm.split_whitespace().nth(1).context("statm")?.parse()?;
    Ok(pages * 4096)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .context("usage: demarc-console-bench [SECONDS] [PPS]")?;
    let seconds = args.first().copied().unwrap_or(60);
    let pps = args.get(1).copied().unwrap_or(100);

    let dir = std::env::temp_dir().join(format!("demarc-console-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let pool = store::open(&dir.join("bench.db")).await?;
    let token = tokens::create(&pool, "bench").await?;
    let state = AppState::new(pool, Config::default());

    let start = store::now_ns() as u64 - u64::from(seconds + 5) * 1_000_000_000;
    let mut s = Scenario::new(start, seconds);
    s.pps = pps;
    let batches = s.batches(1000);
    let records: usize = batches.iter().map(|b| b.records.len()).sum();
    let bodies: Vec<Vec<u8>> = batches
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<_, _>>()?;
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "scenario: {seconds} s at {pps} pps each way through one relay: {} batches, {records} records, {:.1} MiB of JSON",
        bodies.len(),
        bytes as f64 / (1 << 20) as f64
    );

    let t = Instant::now();
    for body in bodies {
        let req = Request::post("/api/v1/ingest")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))?;
        let resp = app(state.clone()).oneshot(req).await?;
        ensure!(
            resp.status() == StatusCode::OK,
            "ingest answered {}",
            resp.status()
        );
    }
    let ingest = t.elapsed();
    let t = Instant::now();
    state.step(true).await?;
    let joined = t.elapsed();
    let (j, _) = state.join_stats();
    println!(
        "ingest (HTTP, JSON, auth, batch row, join): {:>10.0} records/s ({ingest:.2?})",
        rate(records, ingest)
    );
    println!(
        "join close + packet rows + rollups:         {:>10.0} packets/s ({joined:.2?}, {} packets)",
        rate(j.packets as usize, joined),
        j.packets
    );
    println!(
        "end to end:                                 {:>10.0} records/s",
        rate(records, ingest + joined)
    );

    // A flood of keys that never complete: memory must stop growing at the bound.
    let cfg = JoinConfig::default();
    let before = rss()?;
    let mut joiner = Joiner::new(cfg);
    let host: Arc<str> = Arc::from("flood");
    let tuple = Tuple {
        src_ip: [10, 0, 0, 1].into(),
        src_port: 1,
        dst_ip: [10, 0, 0, 2].into(),
        dst_port: 2,
    };
    let flood = 5 * cfg.max_pending as u64;
    let t = Instant::now();
    for key in 0..flood {
        joiner.push(
            key / 1000,
            Obs {
                key,
                point: Point::RxWire,
                host: host.clone(),
                ts_ns: key as i64,
                clock: ClockBound {
                    maxerror_ns: 0,
                    synced: true,
                    kernel: 0,
                },
                class: Class::Rtp,
                ssrc: Some(1),
                seq: Some(key as u16),
                stun_type: None,
                stun_txid: None,
                tuple,
            },
        );
    }
    let took = t.elapsed();
    let after = rss()?;
    let st = joiner.stats();
    println!(
        "join flood: {flood} keys in {took:.2?} ({:.0} keys/s), {} pending (bound {}), {} evicted, ~{} bytes per pending key",
        rate(flood as usize, took),
        joiner.pending(),
        cfg.max_pending,
        st.evicted,
        after.saturating_sub(before) / joiner.pending().max(1) as u64
    );
    drop(state);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
