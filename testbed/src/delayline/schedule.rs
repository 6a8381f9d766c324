//! Delay schedules, one per leg: a starting delay with optional jitter, then
//! steps at times counted from the delay line's epoch.
//!
//! ```text
//! schedule := DELAY ["~" JITTER] ("," STEP)*
//! STEP     := ["+" | "-"] DELAY "@" TIME     (+/- shift the delay, no sign sets it)
//! DELAY, JITTER, TIME := NUMBER UNIT         (UNIT: ns, us, µs, ms, s; 0.5ms is fine)
//! ```
//!
//! `20ms`, `20ms~1ms`, `20ms,+2ms@60s,-2ms@120s`, `20ms,35ms@10s`.

use std::fmt;
use std::str::FromStr;

/// Upper bound on any delay: keeps the queue of held packets and the time
/// a stop waits for it small.
pub const MAX_DELAY_NS: u64 = 10_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("empty schedule")]
    Empty,
    #[error(
        "{0:?} is not a duration: write a number and a unit (ns, us, ms, s), like 20ms or 0.5ms"
    )]
    BadDuration(String),
    #[error("step {0:?} is not [+|-]DELAY@TIME, like +2ms@60s")]
    BadStep(String),
    #[error("step {0:?} comes before the step ahead of it: list steps in time order")]
    OutOfOrder(String),
    #[error("step {0:?} takes the delay below zero")]
    Negative(String),
    #[error("{0:?} asks for more than the 10 s a delay may be")]
    TooLong(String),
}

/// A parsed schedule; it prints back as it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    /// `(from, delay)` in ns since the epoch, in time order, the first from 0.
    pieces: Vec<(u64, u64)>,
    jitter_ns: u64,
}

impl Schedule {
    /// A fixed delay without jitter.
    pub fn fixed(delay_ns: u64) -> Schedule {
        Schedule {
            text: format!("{delay_ns}ns"),
            pieces: vec![(0, delay_ns)],
            jitter_ns: 0,
        }
    }

    /// The delay before jitter at `t_ns` after the epoch; times before the
    /// epoch get the starting delay.
    pub fn base_at(&self, t_ns: i64) -> u64 {
        let t = u64::try_from(t_ns).unwrap_or(0);
        let i = self.pieces.partition_point(|&(from, _)| from <= t);
        self.pieces[i.saturating_sub(1)].1
    }

    /// The delay for a packet arriving `t_ns` after the epoch: the base plus
    /// jitter drawn uniformly from ±jitter (netem's default shape), never
    /// below zero.
    pub fn delay_at(&self, t_ns: i64, rng: &mut Rng) -> u64 {
        let base = self.base_at(t_ns);
        if self.jitter_ns == 0 {
            return base;
        }
        let offset = rng.below(2 * self.jitter_ns + 1) as i64 - self.jitter_ns as i64;
        base.saturating_add_signed(offset)
    }
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::fixed(0)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        let mut parts = text.split(',').map(str::trim);
        let first = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or(ScheduleError::Empty)?;
        let (start, jitter_ns) = match first.split_once('~') {
            Some((d, j)) => (duration(d)?, duration(j)?),
            None => (duration(first)?, 0),
        };
        if start.saturating_add(jitter_ns) > MAX_DELAY_NS {
            return Err(ScheduleError::TooLong(first.to_owned()));
        }
        let mut pieces = vec![(0, start)];
        for step in parts {
            let (change, at) = step
                .split_once('@')
                .ok_or_else(|| ScheduleError::BadStep(step.to_owned()))?;
            let at = duration(at)?;
            let &(previous_at, previous) = pieces.last().expect("starts with one piece");
            if at < previous_at {
                return Err(ScheduleError::OutOfOrder(step.to_owned()));
            }
            let delay = if let Some(up) = change.strip_prefix('+') {
                previous.checked_add(duration(up)?)
            } else if let Some(down) = change.strip_prefix('-') {
                Some(
                    previous
                        .checked_sub(duration(down)?)
                        .ok_or_else(|| ScheduleError::Negative(step.to_owned()))?,
                )
            } else {
                Some(duration(change)?)
            }
            .filter(|d| d + jitter_ns <= MAX_DELAY_NS)
            .ok_or_else(|| ScheduleError::TooLong(step.to_owned()))?;
            pieces.push((at, delay));
        }
        Ok(Schedule {
            text: text.to_owned(),
            pieces,
            jitter_ns,
        })
    }
}

/// `20ms`, `0.5ms`, `250us`, `2s` → ns.
fn duration(text: &str) -> Result<u64, ScheduleError> {
    let bad = || ScheduleError::BadDuration(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let unit_ns = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let ns = (value * unit_ns).round();
    // f64 holds every integer up to 2^53 ns (104 days) exactly.
    if ns > (1u64 << 53) as f64 {
        return Err(ScheduleError::TooLong(text.to_owned()));
    }
    Ok(ns as u64)
}

/// SplitMix64: small, seedable, and plenty for drawing jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-40 for any jitter a
    /// schedule allows).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: i64 = 1_000_000_000;

    fn parse(s: &str) -> Schedule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_fixed_delay_holds_at_all_times() {
        let s = parse("20ms");
        for t in [-S, 0, S, 3600 * S] {
            assert_eq!(s.base_at(t), 20 * MS);
        }
        assert_eq!(s.to_string(), "20ms");
    }

    #[test]
    fn units_and_fractions() {
        assert_eq!(duration("250us"), Ok(250_000));
        assert_eq!(duration("250µs"), Ok(250_000));
        assert_eq!(duration("0.1ms"), Ok(100_000));
        assert_eq!(duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(duration("7ns"), Ok(7));
    }

    #[test]
    fn steps_shift_or_set_the_delay_from_their_time_on() {
        let s = parse("20ms, +2ms@60s, -2ms@120s, 35ms@130s");
        assert_eq!(s.base_at(60 * S - 1), 20 * MS);
        assert_eq!(s.base_at(60 * S), 22 * MS);
        assert_eq!(s.base_at(120 * S - 1), 22 * MS);
        assert_eq!(s.base_at(120 * S), 20 * MS);
        assert_eq!(s.base_at(130 * S), 35 * MS);
        assert_eq!(s.base_at(i64::MAX), 35 * MS);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_is_reproducible() {
        let s = parse("20ms~1ms");
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..10_000)
                .map(|_| s.delay_at(0, &mut rng))
                .collect::<Vec<_>>()
        };
        let delays = draw(7);
        assert!(delays.iter().all(|d| (19 * MS..=21 * MS).contains(d)));
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        assert!((mean - 20e6).abs() < 0.05e6, "mean {mean}");
        assert!(delays.iter().any(|&d| d < 19_500_000) && delays.iter().any(|&d| d > 20_500_000));
        assert_eq!(delays, draw(7));
    }

    #[test]
    fn jitter_never_makes_a_delay_negative() {
        let s = parse("0.5ms~1ms");
        let mut rng = Rng::new(1);
        assert!((0..1000).map(|_| s.delay_at(0, &mut rng)).any(|d| d == 0));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        use ScheduleError::*;
        let cases = [
            ("", Empty),
            ("20", BadDuration("20".into())),
            ("20 parsecs", BadDuration("20 parsecs".into())),
            ("-5ms", BadDuration("-5ms".into())),
            ("20ms,+2ms", BadStep("+2ms".into())),
            ("20ms,+2ms@60s,+1ms@30s", OutOfOrder("+1ms@30s".into())),
            ("2ms,-3ms@1s", Negative("-3ms@1s".into())),
            ("11s", TooLong("11s".into())),
            ("9s~2s", TooLong("9s~2s".into())),
            ("9s,+2s@1s", TooLong("+2s@1s".into())),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Schedule>(), Err(want), "{text:?}");
        }
    }
}
