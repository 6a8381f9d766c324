//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use demarc_console::store::{now_ns, tokens};
use demarc_console::synth::Scenario;
use demarc_console::{app, AppState, Config};
use demarc_proto::ingest::Batch;
use http_body_util::BodyExt;
use sqlx::SqlitePool;
use tower::ServiceExt;

pub struct Harness {
    pub state: AppState,
    pub token: String,
}

impl Harness {
    pub async fn new(pool: SqlitePool) -> Self {
        Self::with(pool, Config::default()).await
    }

    pub async fn with(pool: SqlitePool, cfg: Config) -> Self {
        let token = tokens::create(&pool, "test-probes").await.unwrap();
        Harness {
            state: AppState::new(pool, cfg),
            token,
        }
    }

    pub fn db(&self) -> &SqlitePool {
        &self.state.db
    }

    pub async fn request(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let resp = app(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    pub async fn post_raw(
        &self,
        token: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let mut req =
            Request::post("/api/v1/ingest").header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.request(req.body(body.into()).unwrap()).await
    }

    pub async fn post(&self, b: &Batch) -> (StatusCode, String) {
        let (s, _, body) = self
            .post_raw(Some(&self.token.clone()), serde_json::to_vec(b).unwrap())
            .await;
        (s, body)
    }

    /// Posts every batch (must all be accepted) and runs the join to the end.
    pub async fn ingest_all(&self, batches: &[Batch]) {
        for b in batches {
            let (s, body) = self.post(b).await;
            assert_eq!(s, StatusCode::OK, "{body}");
        }
        self.state.step(true).await.unwrap();
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let (s, _, body) = self
            .request(Request::get(path).body(Body::empty()).unwrap())
            .await;
        (s, body)
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let (s, body) = self.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(self.db())
            .await
            .unwrap()
    }
}

/// A scenario that ended just now (timestamps pass the 1 h check).
pub fn recent(seconds: u32) -> Scenario {
    Scenario::new(
        now_ns() as u64 - u64::from(seconds + 5) * 1_000_000_000,
        seconds,
    )
}
