//! Ingest → join → store → API, with synthetic calls of known delays.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::{recent, Harness};
use demarc_console::auth::UiAuth;
use demarc_console::join::{JoinConfig, Joiner, Obs};
use demarc_console::store::{self, retention::Retention};
use demarc_console::Config;
use serde_json::Value;
use sqlx::SqlitePool;

const MS: f64 = 1e6;

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

async fn rtp_flow(h: &Harness, tx: &str, rx: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM flows WHERE tx_host = ? AND rx_host = ? AND class = 'rtp'")
        .bind(tx)
        .bind(rx)
        .fetch_one(h.db())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_relayed_call_is_joined_split_and_rolled_up(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let mut s = recent(20);
    s.ab_ms = 20.0;
    s.ba_ms = 26.0;
    h.ingest_all(&s.batches(1000)).await;

    // RTP both ways plus STUN requests a→b and responses b→a.
    assert_eq!(h.count("flows").await, 4);
    assert_eq!(h.count("packets").await, 20 * 50 * 2 + 20 * 2);
    assert_eq!(h.count("rtts").await, 20);
    assert_eq!(h.count("dwells").await, h.count("packets").await);
    let (j, pending) = h.state.join_stats();
    assert_eq!(
        (j.late, j.duplicates, j.evicted, j.incomplete, pending),
        (0, 0, 0, 0, 0)
    );

    let ab = rtp_flow(&h, "a", "b").await;
    let now = h.get_json("/api/v1/overview").await;
    let flows: Vec<&Value> = now["calls"][0]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        now["calls"].as_array().unwrap().len(),
        1,
        "both directions are one call"
    );
    let fab = flows.iter().find(|x| x["flow"]["id"] == ab).unwrap();
    // 20 ms network + 40 µs TX host + 60 µs dwell + 150 µs RX host, jitter ±.
    let app = &fab["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == "app")
        .unwrap()[1];
    let p50 = f(&app["p50_ns"]) / MS;
    assert!((20.2..20.35).contains(&p50), "{p50}");
    let dominant = fab["dominant"][0].as_str().unwrap();
    assert!(["net_up", "net_down"].contains(&dominant), "{dominant}");
    assert_eq!(fab["app_err_ns"], 32_000, "maxerror of both ends");
    assert_eq!(fab["unsynced"], 0);

    let series = h.get_json(&format!("/api/v1/flows/{ab}/series")).await;
    let up: Vec<f64> = series["segments"]["net_up"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(up.len() >= 19, "{}", up.len());
    assert!(up.iter().all(|v| (9.8 * MS..10.2 * MS).contains(v)));

    let cov = h.get_json(&format!("/api/v1/flows/{ab}/coverage")).await;
    assert_eq!(cov["packets"], 1000);
    let pts: Vec<String> = cov["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["point"].as_str().unwrap(),
                p["host"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        pts,
        [
            "app_send@a",
            "tx_wire@a",
            "relay_in@relay",
            "relay_out@relay",
            "rx_wire@b",
            "app_recv@b"
        ]
    );

    let rollups = h.get_json(&format!("/api/v1/flows/{ab}/rollups")).await;
    let app_rows: Vec<&Value> = rollups
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["segment"] == "app")
        .collect();
    assert_eq!(
        app_rows
            .iter()
            .map(|r| r["count"].as_i64().unwrap())
            .sum::<i64>(),
        1000
    );
    assert!(app_rows.iter().all(|r| f(&r["p50_ns"]) <= f(&r["p90_ns"])
        && f(&r["p90_ns"]) <= f(&r["p99_ns"])
        && f(&r["p99_ns"]) <= f(&r["max_ns"])));

    let waterfall = h
        .get_json(&format!("/api/v1/flows/{ab}/packets?n=10"))
        .await;
    assert_eq!(waterfall.as_array().unwrap().len(), 10);
    assert_eq!(waterfall[0]["path"].as_array().unwrap().len(), 6);

    // Direction comparison: one-way delays and RTT/2 from the ICE round trips.
    let d = h.get_json("/api/v1/pairs/a/b/direction").await;
    let med = |k: &str| {
        let mut v: Vec<f64> = d[k]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] / MS
    };
    assert!((med("ab") - 20.1).abs() < 0.1, "{}", med("ab"));
    assert!((med("ba") - 26.1).abs() < 0.1, "{}", med("ba"));
    // ICE RTT = both networks + both dwells + b's 0.2 ms answer, all halved.
    assert!(
        (med("rtt_half_ice") - 23.25).abs() < 0.15,
        "{}",
        med("rtt_half_ice")
    );
    assert!(
        (med("ab_error_ice") - 3.1).abs() < 0.15,
        "{}",
        med("ab_error_ice")
    );
    assert!(
        (med("ba_error_ice") + 2.9).abs() < 0.15,
        "{}",
        med("ba_error_ice")
    );

    let relay = h.get_json("/api/v1/relays/relay/dwell").await;
    assert_eq!(relay["directions"].as_array().unwrap().len(), 2);
    let p50 = f(&relay["directions"][0]["summary"]["p50_ns"]);
    assert!((50e3..70e3).contains(&p50), "{p50}");
    assert_eq!(relay["flows"].as_array().unwrap().len(), 4);
}

#[sqlx::test(migrations = "../migrations")]
async fn no_relay_and_two_relays_go_through_the_same_pipeline(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let mut direct = recent(3);
    direct.relays.clear();
    h.ingest_all(&direct.batches(1000)).await;
    let ab = rtp_flow(&h, "a", "b").await;
    let via: String = sqlx::query_scalar("SELECT relays FROM flows WHERE id = ?")
        .bind(ab)
        .fetch_one(h.db())
        .await
        .unwrap();
    assert_eq!(via, "");
    assert_eq!(h.count("dwells").await, 0);

    let mut two = recent(3);
    two.relays = vec!["turn-a".into(), "turn-b".into()];
    // Different probe ids per scenario are not needed: batch ids differ by content below.
    sqlx::query("DELETE FROM batches")
        .execute(h.db())
        .await
        .unwrap();
    h.ingest_all(&two.batches(1000)).await;
    let relays: Vec<String> = sqlx::query_scalar(
        "SELECT relays FROM flows WHERE relays <> '' AND class = 'rtp' ORDER BY tx_host",
    )
    .fetch_all(h.db())
    .await
    .unwrap();
    assert_eq!(relays, ["turn-a,turn-b", "turn-b,turn-a"]);
    let mid: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(relay_relay_ns) FROM packets WHERE relay_relay_ns IS NOT NULL",
    )
    .fetch_one(h.db())
    .await
    .unwrap();
    // 20 ms over three hops: about 6.7 ms between the relays.
    assert!((6.4e6..7.0e6).contains(&(mid.unwrap() as f64)), "{mid:?}");
    assert_eq!(
        h.get_json("/api/v1/relays/turn-b/dwell").await["directions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn missing_points_show_as_coverage_not_silence(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let mut s = recent(4);
    s.drop_every = 10;
    let mut batches = s.batches(1000);
    // a also misses the first five sends: no point sees every packet.
    for b in batches.iter_mut().filter(|b| b.probe.name == "a") {
        b.records.retain(|r| {
            !(r.point == demarc_proto::Point::AppSend
                && r.ssrc == Some(0x1000_0000)
                && r.seq < Some(5))
        });
    }
    h.ingest_all(&batches).await;
    let ab = rtp_flow(&h, "a", "b").await;
    let cov = h.get_json(&format!("/api/v1/flows/{ab}/coverage")).await;
    let recv = cov["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["point"] == "app_recv")
        .unwrap();
    assert_eq!(
        (
            cov["packets"].as_i64(),
            recv["packets"].as_i64(),
            cov["points"][0]["packets"].as_i64()
        ),
        (Some(200), Some(180), Some(195))
    );
    assert_eq!(h.state.join_stats().0.incomplete, 25);
}

#[sqlx::test(migrations = "../migrations")]
async fn late_records_are_counted_and_shown_in_metrics(pool: SqlitePool) {
    let cfg = Config {
        join: JoinConfig {
            window_ms: 1,
            max_pending: 1_000,
        },
        ..Config::default()
    };
    let h = Harness::with(pool, cfg).await;
    let batches = recent(1).batches(1000);
    let (from_a, rest): (Vec<_>, Vec<_>) = batches.into_iter().partition(|b| b.probe.name == "a");
    for b in &from_a {
        assert_eq!(h.post(b).await.0, StatusCode::OK);
    }
    // The window (1 ms) passes before the other probes report.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    h.state.step(false).await.unwrap();
    let late: usize = rest.iter().map(|b| b.records.len()).sum::<usize>();
    for b in &rest {
        assert_eq!(h.post(b).await.0, StatusCode::OK);
    }
    let (j, _) = h.state.join_stats();
    // a saw every packet (it sends one way and receives the other), so every
    // record of b and the relay is late.
    assert_eq!(j.late as usize, late);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains(&format!("demarc_join_late_records_total {}", j.late)),
        "{metrics}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn retention_removes_old_rows_and_keeps_rollups_longer(pool: SqlitePool) {
    let h = Harness::new(pool.clone()).await;
    h.ingest_all(&recent(2).batches(1000)).await;
    let rollups = h.count("rollups").await;
    assert!(rollups > 0);
    let now = store::now_ns();
    const H: i64 = 3_600_000_000_000;
    // Nothing is old yet.
    store::retention::prune(&pool, now, Retention::default())
        .await
        .unwrap();
    assert_eq!(h.count("rollups").await, rollups);
    // Two days later: raw rows are gone, rollups stay.
    store::retention::prune(&pool, now + 48 * H, Retention::default())
        .await
        .unwrap();
    for t in ["packets", "dwells", "rtts", "batches", "point_counters"] {
        assert_eq!(h.count(t).await, 0, "{t}");
    }
    assert_eq!(h.count("rollups").await, rollups);
    assert_eq!(h.count("flows").await, 4);
    // Past the rollup retention, everything about the call is gone.
    store::retention::prune(&pool, now + 31 * 24 * H, Retention::default())
        .await
        .unwrap();
    for t in ["rollups", "coverage", "flows", "clock_history"] {
        assert_eq!(h.count(t).await, 0, "{t}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_late_packet_recomputes_its_minute_exactly(pool: SqlitePool) {
    // Two passes write packets of the same minute; the rollup covers both.
    let mut j = Joiner::new(JoinConfig::default());
    let batches = recent(2).batches(1000);
    let (first, second) = batches.split_at(batches.len() / 2);
    for part in [first, second] {
        for b in part {
            let host = std::sync::Arc::from(b.probe.name.as_str());
            let clock = demarc_console::join::ClockBound {
                maxerror_ns: 0,
                synced: true,
                kernel: 0,
            };
            for r in &b.records {
                j.push(0, Obs::from_record(r, &host, clock));
            }
        }
        let closed = j.flush(0);
        let dirty = store::packets::write(&pool, &closed).await.unwrap();
        store::rollup::recompute(&pool, &dirty).await.unwrap();
    }
    let packets: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packets")
        .fetch_one(&pool)
        .await
        .unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT SUM(count) FROM rollups WHERE segment = 'tx_host'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let with_tx: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM packets WHERE tx_host_ns IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(packets > 0);
    assert_eq!(counted, with_tx);
}

#[sqlx::test(migrations = "../migrations")]
async fn every_page_renders_and_unknown_things_are_404(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    h.ingest_all(&recent(3).batches(1000)).await;
    let ab = rtp_flow(&h, "a", "b").await;
    for (path, needle) in [
        ("/".to_owned(), "Call a ⇄ b"),
        (format!("/flows/{ab}"), "Per-packet waterfall"),
        ("/pairs/a/b".to_owned(), "is off by"),
        ("/relays/relay".to_owned(), "Dwell time histogram"),
        ("/probes".to_owned(), "demarc_tc_egress"),
    ] {
        let (s, body) = h.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(body.contains(needle), "{path}: no {needle:?} in {body}");
    }
    // A probe that stopped reporting is marked silent.
    assert!(!h.get("/probes").await.1.contains("silent"));
    sqlx::query("UPDATE probes SET last_seen_ns = last_seen_ns - 60000000000 WHERE name = 'b'")
        .execute(h.db())
        .await
        .unwrap();
    assert!(h.get("/probes").await.1.contains("· silent"));
    // Range links: the charts get the page's range as an explicit query.
    let (s, body) = h.get(&format!("/flows/{ab}?span=300")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("/series?from="), "{body}");
    assert!(body.contains("class=\"on\">5 min</a>"), "{body}");
    for path in [
        "/flows/999",
        "/pairs/a/zz",
        "/relays/nope",
        "/api/v1/flows/999/series",
        "/static/nope.js",
    ] {
        assert_eq!(h.get(path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, js) = h.get("/static/app.js").await;
    assert_eq!(s, StatusCode::OK);
    assert!(js.contains("data-drawn") || js.contains("dataset.drawn"));
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("demarc_segment_seconds{flow=\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("segment=\"app\",quantile=\"0.99\"}"),
        "{metrics}"
    );
    for needle in [
        "demarc_probe_point_packets_total{probe=\"relay\",point=\"relay_in\",counter=\"ringbuf_full\"} 0",
        "demarc_probe_clock_synchronized{probe=\"a\",id=\"",
        "demarc_ingest_records_total ",
    ] {
        assert!(metrics.contains(needle), "{needle} not in {metrics}");
    }
    assert_eq!(h.get("/healthz").await, (StatusCode::OK, "ok\n".to_owned()));
}

#[sqlx::test(migrations = "../migrations")]
async fn the_ui_can_require_basic_auth_or_a_token(pool: SqlitePool) {
    let cfg = Config {
        ui_auth: UiAuth::new(Some("ops:s3cret"), Some("ui-token")),
        ..Config::default()
    };
    let h = Harness::with(pool, cfg).await;
    let get = |auth: Option<&str>| {
        let mut r = Request::get("/api/v1/probes");
        if let Some(a) = auth {
            r = r.header(header::AUTHORIZATION, a);
        }
        r.body(Body::empty()).unwrap()
    };
    let (s, headers, _) = h.request(get(None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(headers[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    // "ops:s3cret" and a wrong password.
    assert_eq!(
        h.request(get(Some("Basic b3BzOnMzY3JldA=="))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.request(get(Some("Basic b3BzOndyb25n"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.request(get(Some("Bearer ui-token"))).await.0,
        StatusCode::OK
    );
    assert_eq!(
        h.request(get(Some("Bearer nope"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    for path in ["/", "/metrics", "/probes"] {
        assert_eq!(h.get(path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Probes use their own tokens; health checks stay open.
    assert_eq!(h.post(&recent(1).batches(1000)[0]).await.0, StatusCode::OK);
    assert_eq!(h.get("/healthz").await.0, StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unsynchronised_probe_marks_its_cross_host_segments(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let mut batches = recent(2).batches(1000);
    for b in batches.iter_mut().filter(|b| b.probe.name == "b") {
        b.clock.synchronized = false;
        b.clock.maxerror_ns = 16_000_000_000;
    }
    h.ingest_all(&batches).await;
    let unsynced: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packets WHERE unsynced")
        .fetch_one(h.db())
        .await
        .unwrap();
    assert_eq!(
        unsynced,
        h.count("packets").await,
        "every packet has b at one end"
    );
    let bound: i64 = sqlx::query_scalar("SELECT MAX(err_app_ns) FROM packets")
        .fetch_one(h.db())
        .await
        .unwrap();
    assert_eq!(bound, 16_000_016_000);
    let (_, page) = h.get("/").await;
    assert!(page.contains("packets UNSYNCHRONISED"), "{page}");
    let (_, probes) = h.get("/probes").await;
    assert!(probes.contains("UNSYNCHRONISED"));
    let (_, pair) = h.get("/pairs/a/b").await;
    assert!(
        pair.contains("Caution: the clocks&#39; error bound (± 16000.016 ms)"),
        "{pair}"
    );
}

/// The join's writer meets a locked database: the closed packets are kept and
/// written by the next pass, none lost.
#[sqlx::test(migrations = "../migrations")]
async fn joined_packets_survive_a_locked_database(
    pool_opts: sqlx::sqlite::SqlitePoolOptions,
    opts: sqlx::sqlite::SqliteConnectOptions,
) {
    let pool = pool_opts
        .connect_with(opts.busy_timeout(std::time::Duration::from_millis(100)))
        .await
        .unwrap();
    let h = Harness::new(pool.clone()).await;
    for b in &recent(1).batches(1000) {
        assert_eq!(h.post(b).await.0, StatusCode::OK);
    }
    let mut locker = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    assert!(h.state.step(true).await.is_err());
    sqlx::query("ROLLBACK").execute(&mut *locker).await.unwrap();
    drop(locker);
    let (_, metrics) = h.get("/metrics").await;
    assert!(metrics.contains("demarc_store_errors_total 1"), "{metrics}");
    h.state.step(false).await.unwrap();
    assert_eq!(h.count("packets").await, 50 * 2 + 2);
}

/// Default probe names are "hostname/netns": slashes survive links and paths.
#[sqlx::test(migrations = "../migrations")]
async fn host_names_with_slashes_work_in_links(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let mut batches = recent(2).batches(1000);
    for b in &mut batches {
        b.probe.name = format!("vm/{}", b.probe.name);
    }
    h.ingest_all(&batches).await;
    let (_, page) = h.get("/").await;
    assert!(page.contains("href=\"/pairs/vm%2Fa/vm%2Fb\""), "{page}");
    assert!(page.contains("href=\"/relays/vm%2Frelay\""), "{page}");
    let (s, page) = h.get("/pairs/vm%2Fa/vm%2Fb").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        page.contains("data-src=\"/api/v1/pairs/vm%2Fa/vm%2Fb/direction?"),
        "{page}"
    );
    let d = h.get_json("/api/v1/pairs/vm%2Fa/vm%2Fb/direction").await;
    assert!(d["ab"].as_array().unwrap().iter().any(|v| !v.is_null()));
    assert_eq!(h.get("/relays/vm%2Frelay").await.0, StatusCode::OK);
}
