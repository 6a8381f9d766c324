//! The ingest contract of docs/ingest.md, every bad-input case included.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{recent, Harness};
use demarc_console::store::{self, tokens};
use demarc_console::Config;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;

fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {body}"))
        .to_owned()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_batch_is_accepted_once_and_a_retry_is_a_duplicate(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let b = &recent(2).batches(1000)[0];
    let (s, body) = h.post(b).await;
    assert_eq!(s, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], b.records.len() as u64);
    assert_eq!(v["duplicate"], false);

    let (s, body) = h.post(b).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, r#"{"accepted":0,"duplicate":true}"#);
    assert_eq!(h.count("batches").await, 1);
    let records: i64 = sqlx::query_scalar("SELECT records FROM probes")
        .fetch_one(h.db())
        .await
        .unwrap();
    assert_eq!(
        records,
        b.records.len() as i64,
        "a retry is not counted twice"
    );
    let (j, _) = h.state.join_stats();
    assert_eq!(
        j.records,
        b.records.len() as u64,
        "a retry is not joined twice"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn missing_unknown_and_revoked_tokens_are_401(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let body = serde_json::to_vec(&recent(1).batches(1000)[0]).unwrap();
    let (s, _, b) = h.post_raw(None, body.clone()).await;
    assert_eq!(
        (s, error_of(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "missing bearer token")
    );
    let (s, _, b) = h.post_raw(Some("dmc_nope"), body.clone()).await;
    assert_eq!(
        (s, error_of(&b).as_str()),
        (StatusCode::UNAUTHORIZED, "unknown or revoked token")
    );

    tokens::revoke(h.db(), "test-probes").await.unwrap();
    let (s, _, _) = h.post_raw(Some(&h.token), body).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.count("batches").await, 0);
}

#[sqlx::test(migrations = "../migrations")]
async fn tokens_are_stored_hashed_and_names_are_unique(pool: SqlitePool) {
    let t = tokens::create(&pool, "host-a").await.unwrap();
    assert!(t.starts_with("dmc_") && t.len() == 68);
    let stored: String = sqlx::query_scalar("SELECT hash FROM tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(!stored.contains(&t[4..]));
    assert!(tokens::verify(&pool, &t).await.unwrap().is_some());
    assert!(matches!(
        tokens::create(&pool, "host-a").await,
        Err(tokens::TokenError::Exists(_))
    ));
    tokens::revoke(&pool, "host-a").await.unwrap();
    assert!(tokens::verify(&pool, &t).await.unwrap().is_none());
    assert!(matches!(
        tokens::revoke(&pool, "host-a").await,
        Err(tokens::TokenError::NotFound(_))
    ));
    assert_eq!(tokens::list(&pool).await.unwrap().len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn malformed_json_and_wrong_version_are_400(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let token = h.token.clone();
    let (s, _, b) = h
        .post_raw(Some(&token), "{\"version\": 1, \"batch_id\": ")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).starts_with("malformed batch"), "{b}");

    // A future probe's batch that does not even parse as version 1.
    let (s, _, b) = h
        .post_raw(Some(&token), r#"{"version": 2, "records": "elsewhere"}"#)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("unsupported API version 2"), "{b}");

    let mut batch = recent(1).batches(1000)[0].clone();
    batch.version = 2;
    let (s, b) = h.post(&batch).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(error_of(&b).contains("unsupported API version 2"), "{b}");

    let mut batch = recent(1).batches(1000)[0].clone();
    batch.batch_id = "not-an-id".into();
    assert_eq!(h.post(&batch).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(h.count("batches").await, 0);
    assert_eq!(h.count("probes").await, 0, "nothing half-written");
}

#[sqlx::test(migrations = "../migrations")]
async fn oversized_bodies_and_batches_are_413(pool: SqlitePool) {
    let cfg = Config {
        max_body_bytes: 64 * 1024,
        ..Config::default()
    };
    let h = Harness::with(pool, cfg).await;
    let token = h.token.clone();
    let (s, _, b) = h.post_raw(Some(&token), vec![b' '; 64 * 1024 + 1]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&b).contains("split the batch"), "{b}");

    // Without a Content-Length (streamed), the limit still holds.
    let chunks = streamed_chunks(70 * 1024);
    let (s, _, _) = h
        .post_raw(Some(&token), axum::body::Body::from_stream(chunks))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

fn streamed_chunks(n: usize) -> impl tokio_stream::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    tokio_stream::iter((0..n / 1024).map(|_| Ok(vec![b' '; 1024])))
}

#[sqlx::test(migrations = "../migrations")]
async fn more_records_than_the_limit_is_413(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    // A large batch under both limits (about 4 MB, over axum's 2 MB default) is taken.
    let mut big = recent(1).batches(1000)[0].clone();
    let r = big.records[0].clone();
    big.records = (0..10_000u64)
        .map(|i| demarc_proto::ingest::Record {
            key: i,
            ..r.clone()
        })
        .collect();
    let (s, b) = h.post(&big).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut batch = recent(1).batches(1000)[0].clone();
    let r = batch.records[0].clone();
    batch.records = vec![r; demarc_proto::ingest::MAX_RECORDS_PER_BATCH + 1];
    let (s, b) = h.post(&batch).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&b).contains("20001 records"), "{b}");
}

#[sqlx::test(migrations = "../migrations")]
async fn timestamps_far_from_now_are_422_and_nothing_is_written(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    for shift in [2 * 3_600_000_000_000i64, -2 * 3_600_000_000_000] {
        let mut batch = recent(1).batches(1000)[0].clone();
        let last = batch.records.len() - 1;
        batch.records[last].ts_ns = (batch.records[last].ts_ns as i64 + shift) as u64;
        let (s, b) = h.post(&batch).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert!(error_of(&b).contains("more than 1 h"), "{b}");
    }
    assert_eq!(h.count("batches").await, 0);
    assert_eq!(h.count("probes").await, 0);
    assert_eq!(h.state.join_stats().0.records, 0);
}

/// A second connection holds the write lock: ingest answers 503 with
/// Retry-After instead of waiting forever, and writes nothing.
#[sqlx::test(migrations = "../migrations")]
async fn a_locked_database_is_503_with_retry_after(
    pool_opts: SqlitePoolOptions,
    opts: SqliteConnectOptions,
) {
    let pool = pool_opts
        .connect_with(opts.busy_timeout(Duration::from_millis(100)))
        .await
        .unwrap();
    let h = Harness::new(pool.clone()).await;
    let mut locker = pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .unwrap();
    let b = &recent(1).batches(1000)[0];
    let (s, _, body) = h
        .post_raw(Some(&h.token.clone()), serde_json::to_vec(b).unwrap())
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(&body), "database busy, retry later");
    sqlx::query("ROLLBACK").execute(&mut *locker).await.unwrap();
    drop(locker);
    assert_eq!(h.count("batches").await, 0);
    // Once the lock is gone the retry succeeds.
    assert_eq!(h.post(b).await.0, StatusCode::OK);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_full_database_is_503_with_a_long_retry_after(
    pool_opts: SqlitePoolOptions,
    opts: SqliteConnectOptions,
) {
    // max_page_count cannot go below the current size: "1" freezes the file as it is.
    let pool = pool_opts
        .connect_with(opts.pragma("max_page_count", "1"))
        .await
        .unwrap();
    let h = Harness::new(pool).await;
    let mut b = recent(1).batches(1000)[0].clone();
    // Health large enough to need new pages.
    b.health.fallbacks = (0..400)
        .map(|i| format!("fallback {i}: {}", "x".repeat(100)))
        .collect();
    let (s, headers, body) = h
        .post_raw(Some(&h.token.clone()), serde_json::to_vec(&b).unwrap())
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_of(&body), "database full, retry later");
    assert_eq!(headers["retry-after"], "60");
    assert_eq!(
        h.count("batches").await,
        0,
        "the batch id is rolled back with the rest"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn internal_errors_keep_database_details_out_of_the_answer(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    sqlx::query("DROP TABLE clock_history")
        .execute(h.db())
        .await
        .unwrap();
    let (s, body) = h.post(&recent(1).batches(1000)[0]).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_of(&body), "internal error");
    assert_eq!(h.count("batches").await, 0);
}

fn temp_db(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("demarc-console-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("console.db")
}

#[tokio::test]
async fn a_corrupted_database_file_is_a_clear_error() {
    let path = temp_db("corrupt");
    std::fs::write(&path, vec![0x42; 8192]).unwrap();
    let e = store::open(&path).await.unwrap_err();
    assert!(matches!(e, store::OpenError::NotADatabase { .. }), "{e:?}");
    assert!(
        e.to_string().contains("is not a demarc-console database"),
        "{e}"
    );
}

#[tokio::test]
async fn a_newer_schema_is_a_clear_error() {
    let path = temp_db("newer");
    let pool = store::open(&path).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let e = store::open(&path).await.unwrap_err();
    assert!(
        matches!(
            e,
            store::OpenError::NewerSchema {
                found: 99990101000000,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("use a newer demarc-console"), "{e}");
    // First start on an empty path creates and migrates the database.
    let fresh = temp_db("fresh");
    store::open(&fresh).await.unwrap();
    assert!(fresh.exists());
}

/// Spooled batches replayed hours later are judged by their own `sent_at_ns`
/// (docs/ingest.md) and still join, since the join window runs over arrival.
#[sqlx::test(migrations = "../migrations")]
async fn an_old_replay_is_accepted_and_joined_but_a_future_batch_is_422(pool: SqlitePool) {
    let h = Harness::new(pool).await;
    let three_hours_ago = store::now_ns() as u64 - 3 * 3_600_000_000_000;
    let s = demarc_console::synth::Scenario::new(three_hours_ago, 2);
    h.ingest_all(&s.batches(1000)).await;
    let joined: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM packets WHERE app_ns IS NOT NULL")
        .fetch_one(h.db())
        .await
        .unwrap();
    assert_eq!(joined, 2 * 50 * 2 + 2 * 2);

    let mut b = recent(1).batches(1000)[0].clone();
    b.batch_id = demarc_proto::ingest::batch_id(&b.probe.id, 999);
    b.sent_at_ns += 2 * 3_600_000_000_000;
    for r in &mut b.records {
        r.ts_ns += 2 * 3_600_000_000_000;
    }
    let (s, body) = h.post(&b).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
