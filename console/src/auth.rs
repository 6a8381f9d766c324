//! Optional protection of the UI, JSON API and /metrics when the console is
//! exposed: HTTP Basic (browsers) and/or a bearer token (scrapers, scripts).
//! Ingest has its own per-probe tokens and /healthz stays open.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;

#[derive(Clone, Default)]
pub struct UiAuth {
    /// SHA-256 of "user:password".
    basic: Option<[u8; 32]>,
    /// SHA-256 of the token.
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for UiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UiAuth { .. }")
    }
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl UiAuth {
    /// `basic` is "user:password". `None` when neither is given.
    pub fn new(basic: Option<&str>, token: Option<&str>) -> Option<UiAuth> {
        (basic.is_some() || token.is_some()).then(|| UiAuth {
            basic: basic.map(|b| digest(b.as_bytes())),
            token: token.map(|t| digest(t.as_bytes())),
        })
    }

    /// Compares digests, not secrets, so the time taken says nothing about them.
    fn allows(&self, authorization: &str) -> bool {
        if let (Some(want), Some(b64)) = (self.basic, authorization.strip_prefix("Basic ")) {
            if let Ok(pair) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                return digest(&pair) == want;
            }
        }
        if let (Some(want), Some(t)) = (self.token, authorization.strip_prefix("Bearer ")) {
            return digest(t.trim().as_bytes()) == want;
        }
        false
    }
}

pub async fn require_ui_auth(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    if let Some(auth) = &st.cfg.ui_auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth.allows(given) {
            return Err(AppError::UiUnauthorized);
        }
    }
    Ok(next.run(req).await)
}
