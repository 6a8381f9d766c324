//! Accepting a batch: its id (idempotency), the probe, its health and clock
//! state, all in one transaction so nothing is half-written.

use demarc_proto::ingest::Batch;
use sqlx::SqlitePool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Accepted,
    Duplicate,
}

#[derive(sqlx::FromRow, PartialEq, Eq)]
struct Clock {
    clock_mode: String,
    clock_synced: bool,
    clock_esterror_ns: i64,
    clock_maxerror_ns: i64,
    clock_source: String,
}

pub async fn store(
    db: &SqlitePool,
    b: &Batch,
    token_id: i64,
    now_ns: i64,
) -> Result<Stored, sqlx::Error> {
    let mut tx = db.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO batches (batch_id, probe_id, received_ns, records) VALUES (?, ?, ?, ?)
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(&b.batch_id)
    .bind(&b.probe.id)
    .bind(now_ns)
    .bind(b.records.len() as i64)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(Stored::Duplicate);
    }

    let clock = Clock {
        clock_mode: serde_plain(&b.clock.mode),
        clock_synced: b.clock.synchronized,
        // Error bounds are far below i64::MAX ns (the kernel caps maxerror at 16 s).
        clock_esterror_ns: b.clock.esterror_ns.min(i64::MAX as u64) as i64,
        clock_maxerror_ns: b.clock.maxerror_ns.min(i64::MAX as u64) as i64,
        clock_source: b.clock.source.clone().unwrap_or_default(),
    };
    let before: Option<Clock> = sqlx::query_as(
        "SELECT clock_mode, clock_synced, clock_esterror_ns, clock_maxerror_ns, clock_source
         FROM probes WHERE id = ?",
    )
    .bind(&b.probe.id)
    .fetch_optional(&mut *tx)
    .await?;

    let health = serde_json::to_string(&b.health).expect("health serialises");
    sqlx::query(
        "INSERT INTO probes (id, name, kind, version, netns, token_id, first_seen_ns, last_seen_ns,
            batches, records, clock_mode, clock_synced, clock_esterror_ns, clock_maxerror_ns,
            clock_source, health_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, 1, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET
            name = excluded.name, kind = excluded.kind, version = excluded.version,
            netns = excluded.netns, token_id = excluded.token_id,
            last_seen_ns = excluded.last_seen_ns, batches = batches + 1,
            records = records + excluded.records,
            clock_mode = excluded.clock_mode, clock_synced = excluded.clock_synced,
            clock_esterror_ns = excluded.clock_esterror_ns,
            clock_maxerror_ns = excluded.clock_maxerror_ns,
            clock_source = excluded.clock_source, health_json = excluded.health_json",
    )
    .bind(&b.probe.id)
    .bind(&b.probe.name)
    .bind(serde_plain(&b.probe.kind))
    .bind(&b.probe.version)
    .bind(b.probe.netns as i64)
    .bind(token_id)
    .bind(now_ns)
    .bind(b.records.len() as i64)
    .bind(&clock.clock_mode)
    .bind(clock.clock_synced)
    .bind(clock.clock_esterror_ns)
    .bind(clock.clock_maxerror_ns)
    .bind(&clock.clock_source)
    .bind(health)
    .execute(&mut *tx)
    .await?;

    if before.as_ref() != Some(&clock) {
        sqlx::query(
            "INSERT INTO clock_history (probe_id, at_ns, mode, synced, esterror_ns, maxerror_ns, source)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.probe.id)
        .bind(now_ns)
        .bind(&clock.clock_mode)
        .bind(clock.clock_synced)
        .bind(clock.clock_esterror_ns)
        .bind(clock.clock_maxerror_ns)
        .bind(&clock.clock_source)
        .execute(&mut *tx)
        .await?;
    }
    for (point, c) in &b.health.points {
        let v = c.values();
        let mut q = sqlx::query(
            "INSERT INTO point_counters (probe_id, at_ns, point, seen, media, recorded, parse_fail,
                ringbuf_full, map_full, read_fail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&b.probe.id)
        .bind(now_ns)
        .bind(point.as_str());
        for n in v {
            // Counters stay far below 2^63 in any probe's lifetime.
            q = q.bind(n.min(i64::MAX as u64) as i64);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Stored::Accepted)
}

/// The JSON spelling of a unit enum (`"endpoint"`, `"tai"`).
fn serde_plain<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}
