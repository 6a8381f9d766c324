//! JSON behind every chart and table.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::range::{Extent, Range, RangeQuery};
use crate::error::AppError;
use crate::state::AppState;
use crate::store::query::{self, Flow, FlowNow};

/// "Now" on the overview: the last minute of data.
const NOW_SPAN_NS: i64 = 60_000_000_000;
/// Flows listed on the overview: seen in the last hour of data.
const RECENT_NS: i64 = 3_600_000_000_000;

pub type ApiResult<T> = Result<Json<T>, AppError>;

/// Oldest and newest packet time over all flows.
pub async fn extent(st: &AppState) -> Result<Extent, AppError> {
    let (lo, hi): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(first_ns), MAX(last_ns) FROM flows")
            .fetch_one(&st.db)
            .await?;
    Ok(lo.zip(hi))
}

pub async fn flow_or_404(st: &AppState, id: i64) -> Result<Flow, AppError> {
    query::flow(&st.db, id).await?.ok_or(AppError::NotFound)
}

#[derive(Debug, Serialize)]
pub struct Call {
    pub a: String,
    pub b: String,
    pub flows: Vec<FlowNow>,
}

#[derive(Debug, Serialize)]
pub struct Overview {
    pub from_ns: i64,
    pub to_ns: i64,
    pub calls: Vec<Call>,
}

/// Calls (host pairs, both directions together) and each flow's last minute.
pub async fn overview_data(st: &AppState) -> Result<Overview, AppError> {
    let to = extent(st).await?.map_or_else(crate::store::now_ns, |e| e.1) + 1;
    let from = to - NOW_SPAN_NS;
    let mut calls: Vec<Call> = Vec::new();
    for f in query::flows_since(&st.db, to - RECENT_NS).await? {
        let (a, b) = if f.tx_host <= f.rx_host {
            (f.tx_host.clone(), f.rx_host.clone())
        } else {
            (f.rx_host.clone(), f.tx_host.clone())
        };
        let now = query::flow_now(&st.db, f, from, to).await?;
        match calls.iter_mut().find(|c| c.a == a && c.b == b) {
            Some(c) => c.flows.push(now),
            None => calls.push(Call {
                a,
                b,
                flows: vec![now],
            }),
        }
    }
    Ok(Overview {
        from_ns: from,
        to_ns: to,
        calls,
    })
}

pub async fn overview(State(st): State<AppState>) -> ApiResult<Overview> {
    Ok(Json(overview_data(&st).await?))
}

#[derive(Debug, Serialize)]
pub struct OverviewSeries {
    pub t_ns: Vec<i64>,
    pub flows: Vec<(i64, String, Vec<Option<i64>>)>,
}

/// App-to-App median per flow over time.
pub async fn overview_series(
    State(st): State<AppState>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<OverviewSeries> {
    let r = q.resolve(extent(&st).await?);
    let mut out = OverviewSeries {
        t_ns: Vec::new(),
        flows: Vec::new(),
    };
    for f in query::flows_since(&st.db, r.from).await? {
        let mut s = query::flow_series(&st.db, f.id, r.from, r.to, r.step).await?;
        if s.segments["app"].iter().all(Option::is_none) {
            continue;
        }
        out.t_ns = s.t_ns;
        let label = format!("{}→{} {}", f.tx_host, f.rx_host, f.label());
        out.flows
            .push((f.id, label, s.segments.remove("app").unwrap_or_default()));
    }
    Ok(Json(out))
}

pub async fn flows(State(st): State<AppState>) -> ApiResult<Vec<Flow>> {
    Ok(Json(query::flows_since(&st.db, 0).await?))
}

async fn flow_range(st: &AppState, id: i64, q: &RangeQuery) -> Result<Range, AppError> {
    let f = flow_or_404(st, id).await?;
    Ok(q.resolve(Some((f.first_ns, f.last_ns))))
}

pub async fn flow_series(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<query::FlowSeries> {
    let r = flow_range(&st, id, &q).await?;
    Ok(Json(
        query::flow_series(&st.db, id, r.from, r.to, r.step).await?,
    ))
}

pub async fn coverage(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<query::Coverage> {
    let r = flow_range(&st, id, &q).await?;
    Ok(Json(query::coverage(&st.db, id, r.from, r.to).await?))
}

pub async fn rollups(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Vec<query::RollupRow>> {
    let r = flow_range(&st, id, &q).await?;
    Ok(Json(query::rollups(&st.db, id, r.from, r.to).await?))
}

#[derive(Debug, Deserialize)]
pub struct AroundQuery {
    /// UTC ns; default: the flow's newest packet.
    pub at: Option<i64>,
    pub n: Option<i64>,
}

pub async fn packets(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<AroundQuery>,
) -> ApiResult<Vec<query::PacketRow>> {
    let f = flow_or_404(&st, id).await?;
    let n = q.n.unwrap_or(24).clamp(1, 200);
    Ok(Json(
        query::packets_around(&st.db, id, q.at.unwrap_or(f.last_ns), n).await?,
    ))
}

/// Oldest and newest packet time between two hosts, either way.
pub async fn pair_extent(st: &AppState, a: &str, b: &str) -> Result<(i64, i64), AppError> {
    let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MIN(first_ns), MAX(last_ns) FROM flows
         WHERE (tx_host = ?1 AND rx_host = ?2) OR (tx_host = ?2 AND rx_host = ?1)",
    )
    .bind(a)
    .bind(b)
    .fetch_one(&st.db)
    .await?;
    lo.zip(hi).ok_or(AppError::NotFound)
}

pub async fn direction(
    State(st): State<AppState>,
    Path((a, b)): Path<(String, String)>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<query::Direction> {
    let r = q.resolve(Some(pair_extent(&st, &a, &b).await?));
    Ok(Json(
        query::direction(&st.db, &a, &b, r.from, r.to, r.step).await?,
    ))
}

/// Oldest and newest dwell sample of a relay.
pub async fn relay_extent(st: &AppState, host: &str) -> Result<(i64, i64), AppError> {
    let (lo, hi): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(ts_ns), MAX(ts_ns) FROM dwells WHERE relay_host = ?")
            .bind(host)
            .fetch_one(&st.db)
            .await?;
    lo.zip(hi).ok_or(AppError::NotFound)
}

pub async fn relay_dwell(
    State(st): State<AppState>,
    Path(host): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<query::RelayDwell> {
    let r = q.resolve(Some(relay_extent(&st, &host).await?));
    Ok(Json(query::relay_dwell(&st.db, &host, r.from, r.to).await?))
}

pub async fn probes(State(st): State<AppState>) -> ApiResult<Vec<query::ProbeRow>> {
    Ok(Json(query::probes(&st.db).await?))
}
