//! Joins each packet's records from all hosts by packet key.
//!
//! Sans-IO: the caller passes a monotonic `now_ms` (arrival time at the
//! console), so the window is over ingest time, not record time; batches
//! replayed late by every probe still join. Memory is bounded by
//! `max_pending` keys; the oldest are evicted and counted.

mod path;
mod rtt;

use std::collections::{HashMap, HashSet, VecDeque};

pub use path::{build, Bounded, ClockBound, Hop, Joined, Obs, RelayHop, Segments, Tuple};
pub use rtt::RttSample;

#[derive(Debug, Clone, Copy)]
pub struct JoinConfig {
    /// How long after a key's first record its packet is closed.
    pub window_ms: u64,
    /// Most keys held open at once.
    pub max_pending: usize,
}

impl Default for JoinConfig {
    fn default() -> Self {
        JoinConfig {
            window_ms: 10_000,
            max_pending: 200_000,
        }
    }
}

/// Counters since start; exported on /metrics and the probes page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JoinStats {
    pub records: u64,
    /// A second record for the same (key, point, host): ignored.
    pub duplicates: u64,
    /// A record for a key closed less than a window ago: not joined.
    pub late: u64,
    /// Keys dropped because `max_pending` was reached.
    pub evicted: u64,
    pub packets: u64,
    /// Closed packets missing App-to-App (one of app_send/app_recv).
    pub incomplete: u64,
}

/// What closing packets produced.
#[derive(Debug, Default)]
pub struct Closed {
    pub packets: Vec<Joined>,
    pub rtts: Vec<RttSample>,
}

struct Pending {
    obs: Vec<Obs>,
}

pub struct Joiner {
    cfg: JoinConfig,
    pending: HashMap<u64, Pending>,
    /// Keys by first arrival; arrival is monotonic so the front expires first.
    order: VecDeque<(u64, u64)>,
    /// Recently closed keys, to tell late records from new packets.
    closed: HashSet<u64>,
    closed_order: VecDeque<(u64, u64)>,
    rtt: rtt::Matcher,
    stats: JoinStats,
}

impl Joiner {
    pub fn new(cfg: JoinConfig) -> Self {
        Joiner {
            cfg,
            pending: HashMap::new(),
            order: VecDeque::new(),
            closed: HashSet::new(),
            closed_order: VecDeque::new(),
            rtt: rtt::Matcher::new(cfg.max_pending),
            stats: JoinStats::default(),
        }
    }

    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    pub fn push(&mut self, now_ms: u64, o: Obs) {
        self.stats.records += 1;
        if self.closed.contains(&o.key) {
            self.stats.late += 1;
            return;
        }
        if let Some(p) = self.pending.get_mut(&o.key) {
            if p.obs.iter().any(|x| x.point == o.point && x.host == o.host) {
                self.stats.duplicates += 1;
            } else {
                p.obs.push(o);
            }
            return;
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.evict_oldest();
        }
        self.order.push_back((now_ms, o.key));
        self.pending.insert(o.key, Pending { obs: vec![o] });
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.pending.remove(&key);
            self.stats.evicted += 1;
        }
    }

    /// Closes every key whose window has passed.
    pub fn expire(&mut self, now_ms: u64) -> Closed {
        let mut out = Closed::default();
        while let Some(&(t, key)) = self.order.front() {
            if t + self.cfg.window_ms > now_ms {
                break;
            }
            self.order.pop_front();
            self.close(now_ms, key, &mut out);
        }
        self.forget_closed(now_ms);
        out
    }

    /// Closes everything (shutdown, tests).
    pub fn flush(&mut self, now_ms: u64) -> Closed {
        let mut out = Closed::default();
        while let Some((_, key)) = self.order.pop_front() {
            self.close(now_ms, key, &mut out);
        }
        out
    }

    fn close(&mut self, now_ms: u64, key: u64, out: &mut Closed) {
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let joined = build(p.obs);
        self.stats.packets += 1;
        if joined.seg.app.is_none() {
            self.stats.incomplete += 1;
        }
        out.rtts.extend(self.rtt.offer(now_ms, &joined));
        out.packets.push(joined);
        self.closed.insert(key);
        self.closed_order.push_back((now_ms, key));
        if self.closed.len() > self.cfg.max_pending {
            if let Some((_, k)) = self.closed_order.pop_front() {
                self.closed.remove(&k);
            }
        }
    }

    fn forget_closed(&mut self, now_ms: u64) {
        while let Some(&(t, k)) = self.closed_order.front() {
            if t + self.cfg.window_ms > now_ms {
                break;
            }
            self.closed_order.pop_front();
            self.closed.remove(&k);
        }
        self.rtt.expire(now_ms, self.cfg.window_ms);
    }
}

#[cfg(test)]
mod tests;
