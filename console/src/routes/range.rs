//! Time ranges of charts: `?from=&to=&step=` in UTC ns, with defaults that
//! follow the data (its newest time, and not before its oldest) so a finished
//! test run stays readable.

use serde::Deserialize;

const S: i64 = 1_000_000_000;
/// Longest default span of a chart.
pub const DEFAULT_SPAN_NS: i64 = 15 * 60 * S;
/// Most buckets a series may have.
const MAX_BUCKETS: i64 = 1_000;

/// Oldest and newest data time of what a chart shows; `None`: nothing yet.
pub type Extent = Option<(i64, i64)>;

#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub step: Option<i64>,
    /// Seconds before `to`, instead of `from` (the pages' range links).
    pub span: Option<i64>,
}

/// The range links on the pages: label and span in seconds.
pub const SPANS: [(&str, i64); 5] = [
    ("5 min", 300),
    ("15 min", 900),
    ("1 h", 3_600),
    ("6 h", 21_600),
    ("24 h", 86_400),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub step: i64,
}

impl Range {
    /// The same range as a query string, so every chart of a page agrees.
    pub fn query(&self) -> String {
        format!("from={}&to={}&step={}", self.from, self.to, self.step)
    }
}

impl RangeQuery {
    pub fn resolve(&self, extent: Extent) -> Range {
        let now = crate::store::now_ns();
        let (oldest, newest) = extent.unwrap_or((now, now));
        let to = self.to.unwrap_or((newest / S + 1) * S);
        let from = match (self.from, self.span) {
            (Some(from), _) => from,
            (None, Some(span)) => to - span.max(1) * S,
            (None, None) => (to - DEFAULT_SPAN_NS).max(oldest / S * S),
        }
        .min(to - 1);
        let floor = ((to - from) / MAX_BUCKETS).max(1_000_000);
        let step = self.step.unwrap_or(S).max(floor);
        Range { from, to, step }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_data_and_bound_the_buckets() {
        let r = RangeQuery::default().resolve(Some((0, 3_600 * S + 5)));
        assert_eq!(
            r,
            Range {
                from: 3_601 * S - DEFAULT_SPAN_NS,
                to: 3_601 * S,
                step: S
            }
        );
        // A short run is shown whole, not as a sliver of 15 minutes.
        let r = RangeQuery::default().resolve(Some((100 * S + 7, 340 * S)));
        assert_eq!((r.from, r.to), (100 * S, 341 * S));
        let q = RangeQuery {
            from: Some(0),
            to: Some(10_000 * S),
            step: Some(1),
            span: None,
        };
        assert_eq!(q.resolve(None).step, 10 * S);
        let q = RangeQuery {
            from: Some(50),
            to: Some(10),
            step: None,
            span: None,
        };
        let r = q.resolve(None);
        assert!(r.from < r.to);
        let q = RangeQuery {
            span: Some(3_600),
            ..RangeQuery::default()
        };
        let r = q.resolve(Some((100 * S, 7_200 * S)));
        assert_eq!(
            (r.from, r.to, r.step),
            (3_601 * S, 7_201 * S, 3_600_000_000)
        );
        assert_eq!(
            r.query(),
            format!("from={}&to={}&step=3600000000", r.from, r.to)
        );
    }
}
