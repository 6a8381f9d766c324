//! One error type for every handler. Database details go to the log; the
//! answer says what the client can do about it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use demarc_proto::ingest::ErrorBody;

use crate::store::{code, sqlite_code};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    /// Ingest: unknown, revoked or missing probe token.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// UI: credentials needed (answered with a Basic challenge).
    #[error("authentication required")]
    UiUnauthorized,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("not found")]
    NotFound,
    /// Worth retrying soon: the database is busy or locked.
    #[error("database busy, retry later")]
    Busy,
    /// Worth retrying much later: the disk is full.
    #[error("database full, retry later")]
    Full,
    #[error("internal error")]
    Db(#[source] sqlx::Error),
    #[error("internal error")]
    Template(#[from] askama::Error),
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        match (&e, sqlite_code(&e)) {
            (_, Some(code::BUSY | code::LOCKED)) | (sqlx::Error::PoolTimedOut, _) => AppError::Busy,
            (_, Some(code::FULL)) => AppError::Full,
            _ => AppError::Db(e),
        }
    }
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) | AppError::UiUnauthorized => StatusCode::UNAUTHORIZED,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::NotFound => StatusCode::NOT_FOUND,
            AppError::Busy | AppError::Full => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Db(_) | AppError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn retry_after(&self) -> Option<u32> {
        match self {
            AppError::Busy => Some(1),
            AppError::Full => Some(60),
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match &self {
            AppError::Db(e) => tracing::error!(error = %e, "database error"),
            AppError::Template(e) => tracing::error!(error = %e, "template error"),
            AppError::Busy | AppError::Full => tracing::warn!(error = %self, "store unavailable"),
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let status = self.status();
        let retry = self.retry_after();
        let challenge = matches!(self, AppError::UiUnauthorized);
        let mut resp = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if let Some(s) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if challenge {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"demarc\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}
