//! Per-probe ingest tokens. Only a SHA-256 of each token is stored: tokens are
//! 256 random bits, so a fast hash is enough (no password stretching needed).

use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

use super::now_ns;

const PREFIX: &str = "dmc_";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} already exists")]
    Exists(String),
    #[error("no active token named {0:?}")]
    NotFound(String),
    #[error("no randomness: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created_ns: i64,
    pub revoked_ns: Option<i64>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Creates a token and returns it; it is shown once and never stored in clear.
pub async fn create(db: &SqlitePool, name: &str) -> Result<String, TokenError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(TokenError::Random)?;
    let token = format!("{PREFIX}{}", hex(&raw));
    let r = sqlx::query("INSERT INTO tokens (name, hash, created_ns) VALUES (?, ?, ?)")
        .bind(name)
        .bind(hash(&token))
        .bind(now_ns())
        .execute(db)
        .await;
    match r {
        Ok(_) => Ok(token),
        Err(e)
            if e.as_database_error()
                .is_some_and(|d| d.is_unique_violation()) =>
        {
            Err(TokenError::Exists(name.into()))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(db: &SqlitePool) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, created_ns, revoked_ns FROM tokens ORDER BY name")
        .fetch_all(db)
        .await
}

pub async fn revoke(db: &SqlitePool, name: &str) -> Result<(), TokenError> {
    let r = sqlx::query("UPDATE tokens SET revoked_ns = ? WHERE name = ? AND revoked_ns IS NULL")
        .bind(now_ns())
        .bind(name)
        .execute(db)
        .await?;
    if r.rows_affected() == 0 {
        return Err(TokenError::NotFound(name.into()));
    }
    Ok(())
}

/// The id of the active token `token`, if any.
pub async fn verify(db: &SqlitePool, token: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM tokens WHERE hash = ? AND revoked_ns IS NULL")
        .bind(hash(token))
        .fetch_optional(db)
        .await
}
