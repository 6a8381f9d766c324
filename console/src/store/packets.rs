//! Writing joined packets: flows, per-packet rows, relay dwells and RTTs.

use std::collections::{BTreeSet, HashMap};

use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::minute_of;
use crate::join::{Closed, Joined, RelayHop, Tuple};
use crate::segment::Segment;

/// (flow id, minute) pairs whose rollups must be recomputed.
pub type Dirty = BTreeSet<(i64, i64)>;

/// Rows per multi-row INSERT (19 variables each).
const CHUNK: usize = 500;

struct FlowAgg<'a> {
    first: &'a Joined,
    first_ns: i64,
    last_ns: i64,
    packets: i64,
}

/// Writes everything a join pass closed, in one transaction.
pub async fn write(db: &SqlitePool, closed: &Closed) -> Result<Dirty, sqlx::Error> {
    let mut dirty = Dirty::new();
    if closed.packets.is_empty() && closed.rtts.is_empty() {
        return Ok(dirty);
    }
    let mut flows: HashMap<String, FlowAgg> = HashMap::new();
    let keys: Vec<String> = closed.packets.iter().map(Joined::flow_key).collect();
    for (p, k) in closed.packets.iter().zip(&keys) {
        let ts = p.ts_ns();
        let f = flows.entry(k.clone()).or_insert(FlowAgg {
            first: p,
            first_ns: ts,
            last_ns: ts,
            packets: 0,
        });
        f.first_ns = f.first_ns.min(ts);
        f.last_ns = f.last_ns.max(ts);
        f.packets += 1;
    }

    let mut tx = db.begin().await?;
    let mut ids: HashMap<&str, i64> = HashMap::new();
    for (k, f) in &flows {
        let p = f.first;
        let relays: Vec<&str> = p.relays.iter().map(|r| &*r.host).collect();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO flows (flow_key, tx_host, rx_host, class, ssrc, tuple, relays,
                first_ns, last_ns, packets)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (flow_key) DO UPDATE SET
                first_ns = min(first_ns, excluded.first_ns),
                last_ns = max(last_ns, excluded.last_ns),
                packets = packets + excluded.packets,
                relays = CASE WHEN excluded.relays <> '' THEN excluded.relays ELSE relays END
             RETURNING id",
        )
        .bind(k)
        .bind(p.tx_host.as_deref().unwrap_or("?"))
        .bind(p.rx_host.as_deref().unwrap_or("?"))
        .bind(p.class.as_str())
        .bind(p.ssrc.map(i64::from))
        .bind(p.tuple.to_string())
        .bind(relays.join(","))
        .bind(f.first_ns)
        .bind(f.last_ns)
        .bind(f.packets)
        .fetch_one(&mut *tx)
        .await?;
        ids.insert(k, id);
    }

    // Multi-row INSERTs: one statement per chunk instead of one per row
    // (about 3x the rows per second); chunks stay under SQLite's 32766 variables.
    let rows: Vec<(&Joined, i64)> = closed
        .packets
        .iter()
        .zip(&keys)
        .map(|(p, k)| (p, ids[k.as_str()]))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO packets (flow_id, key, ts_ns, seq, tx_host_ns, net_up_ns, dwell_ns,
                relay_relay_ns, net_down_ns, rx_host_ns, wire_ns, app_ns, err_up_ns, err_mid_ns,
                err_down_ns, err_wire_ns, err_app_ns, unsynced, path_json) ",
        );
        q.push_values(chunk, |mut b, &(p, flow)| {
            let path: Vec<(&str, &str, i64)> = p
                .path
                .iter()
                .map(|h| (h.point.as_str(), &*h.host, h.ts_ns))
                .collect();
            let v = |s: Segment| s.of(&p.seg).map(|b| b.ns);
            let e = |s: Segment| s.of(&p.seg).map(|b| b.err_ns.min(i64::MAX as u64) as i64);
            b.push_bind(flow)
                // Keys are stored as the same 64 bits, reinterpreted as SQLite's signed integer.
                .push_bind(p.key as i64)
                .push_bind(p.ts_ns())
                .push_bind(p.seq.map(i64::from))
                .push_bind(v(Segment::TxHost))
                .push_bind(v(Segment::NetUp))
                .push_bind(v(Segment::Dwell))
                .push_bind(v(Segment::RelayRelay))
                .push_bind(v(Segment::NetDown))
                .push_bind(v(Segment::RxHost))
                .push_bind(v(Segment::Wire))
                .push_bind(v(Segment::App))
                .push_bind(e(Segment::NetUp))
                .push_bind(e(Segment::RelayRelay))
                .push_bind(e(Segment::NetDown))
                .push_bind(e(Segment::Wire))
                .push_bind(e(Segment::App))
                .push_bind(p.unsynced)
                .push_bind(serde_json::to_string(&path).expect("path serialises"));
        });
        q.build().execute(&mut *tx).await?;
    }
    let hops: Vec<(&RelayHop, i64, i64, i64)> = rows
        .iter()
        .flat_map(|&(p, flow)| {
            p.relays
                .iter()
                .filter_map(move |r| r.dwell_ns.map(|d| (r, flow, p.ts_ns(), d)))
        })
        .collect();
    for chunk in hops.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO dwells (relay_host, flow_id, ts_ns, dwell_ns, in_tuple, out_tuple) ",
        );
        q.push_values(chunk, |mut b, &(r, flow, ts, dwell)| {
            let t = |t: Option<Tuple>| t.map(|t| t.to_string()).unwrap_or_default();
            b.push_bind(&*r.host)
                .push_bind(flow)
                .push_bind(ts)
                .push_bind(dwell)
                .push_bind(t(r.in_tuple))
                .push_bind(t(r.out_tuple));
        });
        q.build().execute(&mut *tx).await?;
    }
    dirty.extend(rows.iter().map(|&(p, flow)| (flow, minute_of(p.ts_ns()))));

    for r in &closed.rtts {
        sqlx::query("INSERT INTO rtts (host, peer_host, ts_ns, rtt_ns) VALUES (?, ?, ?, ?)")
            .bind(&*r.host)
            .bind(&*r.peer)
            .bind(r.ts_ns)
            .bind(r.rtt_ns)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(dirty)
}
