//! Per-minute rollups per flow and segment, and coverage per point. A minute
//! is recomputed from its packet rows whenever packets land in it, so late
//! packets give exact percentiles, not merged estimates.

use std::collections::BTreeMap;

use sqlx::{Row, SqlitePool};

use super::packets::Dirty;
use super::MINUTE_NS;
use crate::segment::Segment;

/// Coverage row counting a flow's packets seen at any point.
pub const ANY_POINT: &str = "any";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub count: i64,
    pub p50_ns: i64,
    pub p90_ns: i64,
    pub p99_ns: i64,
    pub max_ns: i64,
}

/// Nearest-rank percentiles of `v` (sorted in place); `None` when empty.
pub fn summarize(v: &mut [i64]) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Summary {
        count: v.len() as i64,
        p50_ns: rank(0.50),
        p90_ns: rank(0.90),
        p99_ns: rank(0.99),
        max_ns: v[v.len() - 1],
    })
}

pub async fn recompute(db: &SqlitePool, dirty: &Dirty) -> Result<(), sqlx::Error> {
    for &(flow, minute) in dirty {
        recompute_one(db, flow, minute).await?;
    }
    Ok(())
}

async fn recompute_one(db: &SqlitePool, flow: i64, minute: i64) -> Result<(), sqlx::Error> {
    let cols: Vec<String> = Segment::ALL
        .iter()
        .flat_map(|s| [s.column(), s.err_column().unwrap_or("NULL")])
        .map(str::to_owned)
        .collect();
    let sql = format!(
        "SELECT {}, path_json FROM packets WHERE flow_id = ? AND ts_ns >= ? AND ts_ns < ?",
        cols.join(", ")
    );
    let rows = sqlx::query(&sql)
        .bind(flow)
        .bind(minute)
        .bind(minute + MINUTE_NS)
        .fetch_all(db)
        .await?;
    let mut values: Vec<(Vec<i64>, Option<i64>)> = vec![(Vec::new(), None); Segment::ALL.len()];
    let mut coverage: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in &rows {
        for (i, (vals, err)) in values.iter_mut().enumerate() {
            if let Some(v) = row.try_get::<Option<i64>, _>(2 * i)? {
                vals.push(v);
                let e: Option<i64> = row.try_get(2 * i + 1)?;
                *err = (*err).max(e);
            }
        }
        let path: String = row.try_get(2 * Segment::ALL.len())?;
        let hops: Vec<(String, String, i64)> = serde_json::from_str(&path).unwrap_or_default();
        for (point, host, _) in hops {
            *coverage.entry((point, host)).or_default() += 1;
        }
    }

    let mut tx = db.begin().await?;
    for table in ["rollups", "coverage"] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE flow_id = ? AND minute_ns = ?"
        ))
        .bind(flow)
        .bind(minute)
        .execute(&mut *tx)
        .await?;
    }
    for (seg, (mut vals, err)) in Segment::ALL.into_iter().zip(values) {
        let Some(s) = summarize(&mut vals) else {
            continue;
        };
        sqlx::query(
            "INSERT INTO rollups (flow_id, minute_ns, segment, count, p50_ns, p90_ns, p99_ns,
                max_ns, err_max_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(flow)
        .bind(minute)
        .bind(seg.name())
        .bind(s.count)
        .bind(s.p50_ns)
        .bind(s.p90_ns)
        .bind(s.p99_ns)
        .bind(s.max_ns)
        .bind(err)
        .execute(&mut *tx)
        .await?;
    }
    // The flow's packets at any point: the denominator of coverage.
    coverage.insert((ANY_POINT.into(), String::new()), rows.len() as i64);
    for ((point, host), n) in coverage {
        sqlx::query(
            "INSERT INTO coverage (flow_id, minute_ns, point, host, packets) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(flow)
        .bind(minute)
        .bind(point)
        .bind(host)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        let s = summarize(&mut v).unwrap();
        assert_eq!(
            (s.count, s.p50_ns, s.p90_ns, s.p99_ns, s.max_ns),
            (100, 50, 90, 99, 100)
        );
        let s = summarize(&mut [7]).unwrap();
        assert_eq!((s.p50_ns, s.p99_ns, s.max_ns), (7, 7, 7));
        // Ten values: p99 is the largest, p50 the fifth.
        let s = summarize(&mut [10, 9, 8, 7, 6, 5, 4, 3, 2, -1]).unwrap();
        assert_eq!((s.p50_ns, s.p90_ns, s.p99_ns), (5, 9, 10));
        assert_eq!(summarize(&mut []), None);
    }
}
