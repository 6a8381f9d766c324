//! `POST /api/v1/ingest` (docs/ingest.md).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use demarc_proto::ingest::{Batch, IngestResponse, API_VERSION, MAX_RECORDS_PER_BATCH};

use crate::error::AppError;
use crate::state::{AppState, Counters};
use crate::store::{self, batches::Stored};

pub async fn ingest(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, AppError> {
    let r = handle(&st, &headers, body).await;
    let c = &st.counters;
    match &r {
        Ok(resp) if resp.duplicate => Counters::add(&c.duplicate_batches, 1),
        Ok(resp) => {
            Counters::add(&c.batches, 1);
            Counters::add(&c.records, resp.accepted);
        }
        Err(e) => match e.status().as_u16() {
            400 => Counters::add(&c.rejected_400, 1),
            401 => Counters::add(&c.rejected_401, 1),
            413 => Counters::add(&c.rejected_413, 1),
            422 => Counters::add(&c.rejected_422, 1),
            _ => Counters::add(&c.rejected_503, 1),
        },
    }
    r.map(Json)
}

async fn handle(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, AppError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AppError::Unauthorized("missing bearer token"))?;
    let token_id = store::tokens::verify(&st.db, token.trim())
        .await?
        .ok_or(AppError::Unauthorized("unknown or revoked token"))?;

    let limit = st.cfg.max_body_bytes;
    let too_large = || AppError::TooLarge(format!("body over {limit} bytes: split the batch"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;

    let batch: Batch = serde_json::from_slice(&bytes).map_err(|e| malformed(&bytes, e))?;
    let now = store::now_ns();
    batch.validate(now as u64).map_err(|e| {
        let msg = e.to_string();
        match e.http_status() {
            413 => AppError::TooLarge(msg),
            422 => AppError::Unprocessable(msg),
            _ => AppError::BadRequest(msg),
        }
    })?;

    match store::batches::store(&st.db, &batch, token_id, now).await? {
        Stored::Duplicate => Ok(IngestResponse {
            accepted: 0,
            duplicate: true,
        }),
        Stored::Accepted => {
            st.push(&batch);
            Ok(IngestResponse {
                accepted: batch.records.len() as u64,
                duplicate: false,
            })
        }
    }
}

/// A batch that does not parse: say whether the version or the content is
/// wrong, since a newer probe's batch may not parse as version 1.
fn malformed(bytes: &[u8], e: serde_json::Error) -> AppError {
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    #[derive(serde::Deserialize)]
    struct CountOnly {
        records: Vec<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<VersionOnly>(bytes) {
        Ok(v) if v.version != API_VERSION => AppError::BadRequest(format!(
            "unsupported API version {} (this console speaks {API_VERSION})",
            v.version
        )),
        _ => match serde_json::from_slice::<CountOnly>(bytes) {
            // Oversized batches are answered 413 even when a record is also bad,
            // so the probe splits rather than drops.
            Ok(c) if c.records.len() > MAX_RECORDS_PER_BATCH => AppError::TooLarge(format!(
                "{} records in one batch (at most {MAX_RECORDS_PER_BATCH})",
                c.records.len()
            )),
            _ => AppError::BadRequest(format!("malformed batch: {e}")),
        },
    }
}
