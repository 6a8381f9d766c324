//! Server-rendered pages. Each chart is a `<div data-kind data-src>` that
//! `static/app.js` fills from the JSON API; tables are rendered here.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Html;

use super::api::{self, Call};
use super::range::{Range, RangeQuery, SPANS};
use crate::error::AppError;
use crate::fmt::{age, bound, ms, opt_ms, utc};
use crate::segment::Segment;
use crate::state::{AppState, Counters};
use crate::store::now_ns;
use crate::store::query::{self, Flow, FlowNow, FlowSummary, ProbeRow, RelayDwell};
use crate::store::rollup::Summary;

type Page = Result<Html<String>, AppError>;

fn render(t: impl Template) -> Page {
    Ok(Html(t.render()?))
}

/// Links in the header: host pairs and relays.
pub struct Nav {
    pub pairs: Vec<(String, String)>,
    pub relays: Vec<String>,
}

async fn nav(st: &AppState) -> Result<Nav, AppError> {
    Ok(Nav {
        pairs: query::host_pairs(&st.db).await?,
        relays: query::relays(&st.db).await?,
    })
}

/// The App-to-App clock bound, and how many packets had an unsynchronised end.
fn clock_note(s: &FlowSummary) -> String {
    match s.unsynced {
        0 => bound(s.app_err_ns),
        n => format!("{} · {n} packets UNSYNCHRONISED", bound(s.app_err_ns)),
    }
}

/// The range links above a page's charts, and the range as a query string
/// that every chart of the page uses.
pub struct Ranges {
    pub query: String,
    /// Label, link (relative: only the query changes) and whether it is shown.
    pub links: Vec<(&'static str, String, bool)>,
}

fn ranges(q: &RangeQuery, r: &Range) -> Ranges {
    let explicit = q.from.is_some() || q.span.is_some();
    let mut links = vec![("follow the data", "?".to_owned(), !explicit)];
    links.extend(SPANS.iter().map(|&(label, s)| {
        (
            label,
            format!("?span={s}"),
            q.from.is_none() && q.span == Some(s),
        )
    }));
    Ranges {
        query: r.query(),
        links,
    }
}

/// One stacked-bar part: a segment's share of the median App-to-App.
pub struct Share {
    pub name: &'static str,
    pub label: &'static str,
    pub x: f64,
    pub w: f64,
    pub value: String,
}

pub struct FlowView {
    pub id: i64,
    pub dir: String,
    pub label: String,
    pub via: String,
    pub packets: i64,
    pub app_p50: String,
    pub app_p99: String,
    pub err: String,
    pub unsynced: bool,
    pub dominant: String,
    pub shares: Vec<Share>,
}

impl FlowView {
    fn new(n: &FlowNow) -> Self {
        let total: i64 = n.stack.iter().map(|(_, v)| (*v).max(0)).sum();
        let mut x = 0.0;
        let shares = n
            .stack
            .iter()
            .map(|&(s, v)| {
                let w = if total > 0 {
                    100.0 * v.max(0) as f64 / total as f64
                } else {
                    0.0
                };
                x += w;
                Share {
                    name: s.name(),
                    label: s.label(),
                    x: x - w,
                    w,
                    value: ms(v),
                }
            })
            .collect();
        FlowView {
            id: n.flow.id,
            dir: format!("{} → {}", n.flow.tx_host, n.flow.rx_host),
            label: n.flow.label(),
            via: n.flow.via(),
            packets: n.summary.packets,
            app_p50: opt_ms(n.summary.get(Segment::App).map(|s| s.p50_ns)),
            app_p99: opt_ms(n.summary.get(Segment::App).map(|s| s.p99_ns)),
            err: clock_note(&n.summary),
            unsynced: n.summary.unsynced > 0,
            dominant: n
                .dominant
                .map_or_else(|| "—".into(), |(s, v)| format!("{} ({})", s.label(), ms(v))),
            shares,
        }
    }
}

pub struct CallView {
    pub a: String,
    pub b: String,
    pub flows: Vec<FlowView>,
}

/// Probes send a batch at least every 10 s even when idle (docs/ingest.md);
/// three missed ones mark a probe as silent.
const STALE_NS: i64 = 30_000_000_000;

pub struct ProbeView {
    pub name: String,
    pub id: String,
    pub kind: String,
    pub version: String,
    pub seen: String,
    /// No batch for longer than an idle probe's heartbeat allows.
    pub stale: bool,
    pub records: i64,
    pub synced: bool,
    pub clock: String,
    pub hooks: Vec<demarc_proto::ingest::HookStatus>,
    pub fallbacks: Vec<String>,
    /// Point, then seen, media, recorded and the loss counters: cumulative as
    /// reported, and their increase over the last 10 minutes of reports.
    pub points: Vec<(String, [u64; 7], [u64; 7])>,
    pub programs: Vec<demarc_proto::ingest::ProgramStats>,
    pub spool: String,
    /// Polyline points of maxerror over the clock history (0..200 × 0..40).
    pub clock_line: String,
    pub clock_range: String,
}

impl ProbeView {
    fn new(p: ProbeRow, now: i64) -> Self {
        let health = p.health.unwrap_or_else(|| demarc_proto::ingest::Health {
            hooks: vec![],
            fallbacks: vec![],
            points: Default::default(),
            programs: vec![],
            spool: Default::default(),
        });
        let points = health
            .points
            .iter()
            .map(|(pt, c)| {
                let total = c.values();
                let recent = p.recent.get(pt.as_str()).copied().unwrap_or_default();
                (pt.to_string(), total, recent)
            })
            .collect();
        // The history plus "now", so one state still draws a line.
        let mut hist: Vec<(i64, i64)> = p.clock_history.iter().map(|&(t, _, e)| (t, e)).collect();
        hist.push((p.last_seen_ns, p.clock_maxerror_ns));
        let (t0, t1) = (hist[0].0, hist[hist.len() - 1].0.max(hist[0].0 + 1));
        let emax = hist.iter().map(|h| h.1).max().unwrap_or(0).max(1);
        let clock_line = hist
            .iter()
            .map(|&(t, e)| {
                let x = 200.0 * (t - t0) as f64 / (t1 - t0) as f64;
                let y = 38.0 - 36.0 * e as f64 / emax as f64;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        ProbeView {
            seen: format!("{} ({})", age(p.last_seen_ns, now), utc(p.last_seen_ns)),
            stale: now - p.last_seen_ns > STALE_NS,
            clock: format!(
                "{} clock, {}, maxerror {}, esterror {}{}",
                p.clock_mode,
                if p.clock_synced {
                    "synchronised"
                } else {
                    "UNSYNCHRONISED"
                },
                ms(p.clock_maxerror_ns),
                ms(p.clock_esterror_ns),
                if p.clock_source.is_empty() {
                    String::new()
                } else {
                    format!(", source {}", p.clock_source)
                }
            ),
            clock_range: format!("maxerror 0 – {}", ms(emax)),
            synced: p.clock_synced,
            name: p.name,
            id: p.id,
            kind: p.kind,
            version: p.version,
            records: p.records,
            hooks: health.hooks,
            fallbacks: health.fallbacks,
            points,
            programs: health.programs,
            spool: format!(
                "{} queued, {} batches ({} records) dropped",
                health.spool.queued_batches,
                health.spool.dropped_batches,
                health.spool.dropped_records
            ),
            clock_line,
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    title: String,
    window: String,
    calls: Vec<CallView>,
    probes: Vec<ProbeView>,
}

pub async fn overview(State(st): State<AppState>) -> Page {
    let o = api::overview_data(&st).await?;
    let now = now_ns();
    let calls = o
        .calls
        .iter()
        .map(|c: &Call| CallView {
            a: c.a.clone(),
            b: c.b.clone(),
            flows: c.flows.iter().map(FlowView::new).collect(),
        })
        .collect();
    render(OverviewPage {
        nav: nav(&st).await?,
        title: "Overview".into(),
        window: format!("{} – {}", utc(o.from_ns), utc(o.to_ns)),
        calls,
        probes: query::probes(&st.db)
            .await?
            .into_iter()
            .map(|p| ProbeView::new(p, now))
            .collect(),
    })
}

pub struct SegRow {
    pub label: &'static str,
    pub p50: String,
    pub p90: String,
    pub p99: String,
    pub max: String,
    pub count: i64,
}

fn seg_row(s: Segment, m: &Summary) -> SegRow {
    SegRow {
        label: s.label(),
        p50: ms(m.p50_ns),
        p90: ms(m.p90_ns),
        p99: ms(m.p99_ns),
        max: ms(m.max_ns),
        count: m.count,
    }
}

#[derive(Template)]
#[template(path = "flow.html")]
struct FlowPage {
    ranges: Ranges,
    nav: Nav,
    title: String,
    flow: Flow,
    via: String,
    window: String,
    rows: Vec<SegRow>,
    err: String,
    unsynced: bool,
}

pub async fn flow(
    State(st): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RangeQuery>,
) -> Page {
    let flow = api::flow_or_404(&st, id).await?;
    let r = q.resolve(Some((flow.first_ns, flow.last_ns)));
    let summary = query::segment_summaries(&st.db, id, r.from, r.to).await?;
    render(FlowPage {
        ranges: ranges(&q, &r),
        nav: nav(&st).await?,
        title: format!("{} → {} {}", flow.tx_host, flow.rx_host, flow.label()),
        via: flow.via(),
        window: format!("{} – {}", utc(r.from), utc(r.to)),
        rows: summary
            .segments
            .iter()
            .map(|(s, m)| seg_row(*s, m))
            .collect(),
        err: clock_note(&summary),
        unsynced: summary.unsynced > 0,
        flow,
    })
}

#[derive(Template)]
#[template(path = "pair.html")]
struct PairPage {
    ranges: Ranges,
    nav: Nav,
    title: String,
    a: String,
    b: String,
    window: String,
    ab: String,
    ba: String,
    ab_err: String,
    ba_err: String,
    rtt_half_ice: String,
    rtt_half_sum: String,
    ab_error: String,
    ba_error: String,
    asymmetry: String,
    rtt_samples: i64,
}

/// "Now" on the direction page: the last minute of data.
const NOW_NS: i64 = 60_000_000_000;

fn median_of(v: &[Option<i64>]) -> Option<i64> {
    let mut x: Vec<i64> = v.iter().flatten().copied().collect();
    crate::store::rollup::summarize(&mut x).map(|s| s.p50_ns)
}

pub async fn pair(
    State(st): State<AppState>,
    Path((a, b)): Path<(String, String)>,
    Query(q): Query<RangeQuery>,
) -> Page {
    let extent = api::pair_extent(&st, &a, &b).await?;
    let r = q.resolve(Some(extent));
    let d = query::direction(&st.db, &a, &b, r.from, r.to, r.step).await?;
    // The verdict is about now: the last minute of data; the charts show history.
    let k = d.t_ns.partition_point(|&t| t < r.to - NOW_NS);
    let last = |v: &[Option<i64>]| median_of(&v[k..]);
    let (ab, ba) = (last(&d.ab), last(&d.ba));
    let ice = last(&d.rtt_half_ice);
    let half = ice.or(last(&d.rtt_half_sum));
    let signed = |e: Option<i64>| {
        e.map_or_else(
            || "—".into(),
            |e| format!("{}{}", if e > 0 { "+" } else { "" }, ms(e)),
        )
    };
    let err = d.ab_err.iter().chain(&d.ba_err).flatten().copied().max();
    let asymmetry = match (ab, ba, half) {
        (Some(x), Some(y), Some(h)) => {
            let mut v = format!(
                "{a} → {b} takes {}, {b} → {a} takes {}: {} apart. RTT/2 ({}) is off by {} for {a} → {b} and {} for {b} → {a}.",
                ms(x),
                ms(y),
                ms((x - y).abs()),
                ms(h),
                signed(Some(h - x)),
                signed(Some(h - y)),
            );
            // One-way delays are only as good as the two clocks: say when the
            // difference is inside their error bound.
            if let Some(e) = err.filter(|&e| e >= (x - y).abs()) {
                v.push_str(&format!(
                    " Caution: the clocks' error bound ({}) is larger than that difference.",
                    bound(Some(e))
                ));
            }
            v
        }
        _ => "Not enough data in both directions yet.".into(),
    };
    render(PairPage {
        ranges: ranges(&q, &r),
        nav: nav(&st).await?,
        title: format!("{a} ⇄ {b}"),
        window: format!("{} – {}", utc(r.from), utc(r.to)),
        ab: opt_ms(ab),
        ba: opt_ms(ba),
        ab_err: bound(d.ab_err.iter().flatten().copied().max()),
        ba_err: bound(d.ba_err.iter().flatten().copied().max()),
        rtt_half_ice: opt_ms(ice),
        rtt_half_sum: opt_ms(last(&d.rtt_half_sum)),
        ab_error: signed(ice.zip(ab).map(|(h, x)| h - x)),
        ba_error: signed(ice.zip(ba).map(|(h, y)| h - y)),
        asymmetry,
        rtt_samples: d.rtt_samples,
        a,
        b,
    })
}

#[derive(Template)]
#[template(path = "relay.html")]
struct RelayPage {
    ranges: Ranges,
    nav: Nav,
    title: String,
    host: String,
    window: String,
    rows: Vec<(String, SegRow)>,
    dwell: RelayDwell,
}

pub async fn relay(
    State(st): State<AppState>,
    Path(host): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Page {
    let r = q.resolve(Some(api::relay_extent(&st, &host).await?));
    let dwell = query::relay_dwell(&st.db, &host, r.from, r.to).await?;
    let rows = dwell
        .directions
        .iter()
        .map(|d| {
            (
                format!("{} → {}", d.tx_host, d.rx_host),
                seg_row(Segment::Dwell, &d.summary),
            )
        })
        .collect();
    render(RelayPage {
        ranges: ranges(&q, &r),
        nav: nav(&st).await?,
        title: format!("Relay {host}"),
        window: format!("{} – {}", utc(r.from), utc(r.to)),
        rows,
        dwell,
        host,
    })
}

#[derive(Template)]
#[template(path = "probes.html")]
struct ProbesPage {
    nav: Nav,
    title: String,
    probes: Vec<ProbeView>,
    counters: Vec<(&'static str, u64)>,
}

pub async fn probes(State(st): State<AppState>) -> Page {
    let now = now_ns();
    let c = &st.counters;
    let (j, pending) = st.join_stats();
    let counters = vec![
        ("batches accepted", Counters::get(&c.batches)),
        ("records accepted", Counters::get(&c.records)),
        ("duplicate batches", Counters::get(&c.duplicate_batches)),
        (
            "batches refused: malformed (400)",
            Counters::get(&c.rejected_400),
        ),
        (
            "batches refused: token (401)",
            Counters::get(&c.rejected_401),
        ),
        (
            "batches refused: too large (413)",
            Counters::get(&c.rejected_413),
        ),
        (
            "batches refused: timestamps (422)",
            Counters::get(&c.rejected_422),
        ),
        (
            "batches refused: store unavailable (5xx)",
            Counters::get(&c.rejected_503),
        ),
        ("join: duplicate records", j.duplicates),
        ("join: late records", j.late),
        ("join: evicted keys", j.evicted),
        ("join: pending keys", pending as u64),
        ("join: packets", j.packets),
        ("join: packets without App-to-App", j.incomplete),
        ("store: write errors", Counters::get(&c.store_errors)),
        ("store: dropped packets", Counters::get(&c.store_dropped)),
    ];
    render(ProbesPage {
        nav: nav(&st).await?,
        title: "Probes".into(),
        probes: query::probes(&st.db)
            .await?
            .into_iter()
            .map(|p| ProbeView::new(p, now))
            .collect(),
        counters,
    })
}
