//! Deleting what is older than the retention periods.

use sqlx::SqlitePool;

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Per-packet rows, dwells, RTTs, batch ids and point counter samples.
    pub raw_ns: i64,
    /// Rollups, coverage, clock history, and flows with nothing left.
    pub rollup_ns: i64,
}

impl Default for Retention {
    fn default() -> Self {
        const H: i64 = 3_600_000_000_000;
        Retention {
            raw_ns: 24 * H,
            rollup_ns: 30 * 24 * H,
        }
    }
}

/// Deletes expired rows; returns how many.
pub async fn prune(db: &SqlitePool, now_ns: i64, r: Retention) -> Result<u64, sqlx::Error> {
    let raw = now_ns - r.raw_ns;
    let old = now_ns - r.rollup_ns;
    let statements: [(&str, i64); 9] = [
        ("DELETE FROM packets WHERE ts_ns < ?", raw),
        ("DELETE FROM dwells WHERE ts_ns < ?", raw),
        ("DELETE FROM rtts WHERE ts_ns < ?", raw),
        ("DELETE FROM batches WHERE received_ns < ?", raw),
        ("DELETE FROM point_counters WHERE at_ns < ?", raw),
        ("DELETE FROM rollups WHERE minute_ns < ?", old),
        ("DELETE FROM coverage WHERE minute_ns < ?", old),
        ("DELETE FROM clock_history WHERE at_ns < ?", old),
        (
            "DELETE FROM flows WHERE last_ns < ?
               AND id NOT IN (SELECT flow_id FROM rollups)
               AND id NOT IN (SELECT flow_id FROM packets)",
            old,
        ),
    ];
    let mut tx = db.begin().await?;
    let mut n = 0;
    for (sql, before) in statements {
        n += sqlx::query(sql)
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    }
    tx.commit().await?;
    Ok(n)
}
