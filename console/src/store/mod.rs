//! SQLite (WAL) store: schema in `../migrations`, one module per kind of data.

pub mod batches;
pub mod packets;
pub mod query;
pub mod retention;
pub mod rollup;
pub mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Why the database cannot be opened. Each is final: restarting will not help.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} is not a demarc-console database (not SQLite, or corrupted): {source}")]
    NotADatabase { path: String, source: sqlx::Error },
    #[error(
        "{path} has schema version {found}, newer than this demarc-console knows \
         (up to {known}); use a newer demarc-console or another --db"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("cannot open {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("cannot migrate {path}: {source}")]
    Migrate { path: String, source: MigrateError },
}

/// SQLite result codes the console treats specially (primary code, low byte).
pub mod code {
    pub const BUSY: i64 = 5;
    pub const LOCKED: i64 = 6;
    pub const CORRUPT: i64 = 11;
    pub const FULL: i64 = 13;
    pub const NOTADB: i64 = 26;
}

/// The primary SQLite result code of a database error.
pub fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    let code = e.as_database_error()?.code()?;
    i64::from_str(&code).ok().map(|c| c & 0xff)
}

/// Opens (creating if needed) and migrates the database.
pub async fn open(path: &Path) -> Result<SqlitePool, OpenError> {
    let p = path.display().to_string();
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(|source| classify_open(&p, source))?;
    migrate(&pool, &p).await?;
    Ok(pool)
}

fn classify_open(path: &str, source: sqlx::Error) -> OpenError {
    match sqlite_code(&source) {
        Some(code::NOTADB | code::CORRUPT) => OpenError::NotADatabase {
            path: path.into(),
            source,
        },
        _ => OpenError::Open {
            path: path.into(),
            source,
        },
    }
}

async fn migrate(pool: &SqlitePool, path: &str) -> Result<(), OpenError> {
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    MIGRATOR.run(pool).await.map_err(|e| match e {
        MigrateError::VersionMissing(found) => OpenError::NewerSchema {
            path: path.into(),
            found,
            known,
        },
        MigrateError::Execute(source) => classify_open(path, source),
        source => OpenError::Migrate {
            path: path.into(),
            source,
        },
    })
}

/// Wall-clock UTC ns.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub const MINUTE_NS: i64 = 60_000_000_000;

pub fn minute_of(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(MINUTE_NS) * MINUTE_NS
}
