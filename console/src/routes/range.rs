//! Time ranges of charts: `?from=&to=&step=` in UTC ns, with defaults anchored
//! at the newest data so a finished test run stays readable.

use serde::Deserialize;

const S: i64 = 1_000_000_000;
/// Default span of a chart.
pub const DEFAULT_SPAN_NS: i64 = 15 * 60 * S;
/// Most buckets a series may have.
const MAX_BUCKETS: i64 = 1_000;

#[derive(Debug, Default, Deserialize)]
pub struct RangeQuery {
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub step: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub step: i64,
}

impl RangeQuery {
    /// `newest`: the newest data time of what is shown (`None`: nothing yet).
    pub fn resolve(&self, newest: Option<i64>) -> Range {
        let to = self
            .to
            .unwrap_or_else(|| (newest.unwrap_or_else(crate::store::now_ns) / S + 1) * S);
        let from = self.from.unwrap_or(to - DEFAULT_SPAN_NS).min(to - 1);
        let floor = ((to - from) / MAX_BUCKETS).max(1_000_000);
        let step = self.step.unwrap_or(S).max(floor);
        Range { from, to, step }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_anchor_at_the_newest_data_and_bound_the_buckets() {
        let r = RangeQuery::default().resolve(Some(100 * S + 5));
        assert_eq!(
            r,
            Range {
                from: 101 * S - DEFAULT_SPAN_NS,
                to: 101 * S,
                step: S
            }
        );
        let r = RangeQuery {
            from: Some(0),
            to: Some(10_000 * S),
            step: Some(1),
        }
        .resolve(None);
        assert_eq!(r.step, 10 * S);
        let r = RangeQuery {
            from: Some(50),
            to: Some(10),
            step: None,
        }
        .resolve(None);
        assert!(r.from < r.to);
    }
}
