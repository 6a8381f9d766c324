//! Passive ICE RTT: a STUN binding request leaving a host at tx_wire and its
//! success response (same transaction id) arriving at the same host's rx_wire.
//! Both timestamps come from one clock, so the RTT is exact.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use demarc_proto::Point;

use super::Joined;

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RttSample {
    /// The host that sent the request and measured the round trip.
    pub host: Arc<str>,
    /// The host that answered, when a probe saw it there ("?" otherwise).
    pub peer: Arc<str>,
    /// When the request left.
    pub ts_ns: i64,
    pub rtt_ns: i64,
}

struct Half {
    request: bool,
    host: Arc<str>,
    ts_ns: i64,
    peer: Option<Arc<str>>,
}

/// Holds the first half of each transaction until the other half is closed.
pub struct Matcher {
    waiting: HashMap<[u8; 12], Half>,
    order: VecDeque<(u64, [u8; 12])>,
    cap: usize,
}

impl Matcher {
    pub fn new(cap: usize) -> Self {
        Matcher {
            waiting: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Either half may close first (records can arrive in any order).
    pub fn offer(&mut self, now_ms: u64, j: &Joined) -> Option<RttSample> {
        let (ty, txid) = j.stun?;
        let half = match ty {
            BINDING_REQUEST => Half {
                request: true,
                host: j.tx_host.clone()?,
                ts_ns: j.hop(Point::TxWire)?.ts_ns,
                peer: j.rx_host.clone(),
            },
            BINDING_SUCCESS => Half {
                request: false,
                host: j.rx_host.clone()?,
                ts_ns: j.hop(Point::RxWire)?.ts_ns,
                peer: j.tx_host.clone(),
            },
            _ => return None,
        };
        match self.waiting.remove(&txid) {
            Some(other) if other.request != half.request && other.host == half.host => {
                let (req, resp) = if half.request {
                    (half, other)
                } else {
                    (other, half)
                };
                Some(RttSample {
                    peer: req.peer.or(resp.peer).unwrap_or_else(|| "?".into()),
                    host: req.host,
                    ts_ns: req.ts_ns,
                    rtt_ns: resp.ts_ns - req.ts_ns,
                })
            }
            _ => {
                if self.waiting.len() >= self.cap {
                    if let Some((_, old)) = self.order.pop_front() {
                        self.waiting.remove(&old);
                    }
                }
                self.waiting.insert(txid, half);
                self.order.push_back((now_ms, txid));
                None
            }
        }
    }

    pub fn expire(&mut self, now_ms: u64, window_ms: u64) {
        while let Some(&(t, txid)) = self.order.front() {
            if t + window_ms > now_ms {
                break;
            }
            self.order.pop_front();
            self.waiting.remove(&txid);
        }
    }
}
