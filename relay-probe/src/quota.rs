//! Allocation quotas (`user-quota`, `total-quota`) and per-allocation
//! bandwidth limits (`max-bps`).

use std::collections::HashMap;
use std::time::Instant;

/// Counts live allocations per user and in total. `0` means unlimited, as in
/// coturn.
#[derive(Debug, Default)]
pub struct Quota {
    user_limit: u32,
    total_limit: u32,
    per_user: HashMap<String, u32>,
    total: u32,
}

impl Quota {
    pub fn new(user_limit: u32, total_limit: u32) -> Self {
        Self {
            user_limit,
            total_limit,
            ..Default::default()
        }
    }

    /// Takes one allocation for `user`; `false` (answer 486) when a limit is reached.
    pub fn acquire(&mut self, user: &str) -> bool {
        let used = self.per_user.get(user).copied().unwrap_or(0);
        if (self.user_limit != 0 && used >= self.user_limit)
            || (self.total_limit != 0 && self.total >= self.total_limit)
        {
            return false;
        }
        *self.per_user.entry(user.to_string()).or_default() += 1;
        self.total += 1;
        true
    }

    pub fn release(&mut self, user: &str) {
        if let Some(used) = self.per_user.get_mut(user) {
            *used -= 1;
            self.total -= 1;
            if *used == 0 {
                self.per_user.remove(user);
            }
        }
    }

    pub fn total(&self) -> u32 {
        self.total
    }
}

/// A token bucket in bytes; one per allocation and direction (coturn's
/// `max-bps` treats input and output separately). A burst of one second's
/// worth is allowed, so media with frame bursts at the nominal rate passes.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    tokens: u64,
    last: Instant,
}

impl Bucket {
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        Self {
            rate: bytes_per_sec,
            tokens: bytes_per_sec,
            last: now,
        }
    }

    /// Takes `len` bytes; `false` means drop the packet.
    pub fn take(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let refill = (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64;
        if refill > 0 {
            self.tokens = (self.tokens + refill).min(self.rate);
            self.last = now;
        }
        let len = len as u64;
        if self.tokens < len {
            return false;
        }
        self.tokens -= len;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn user_and_total_limits() {
        let mut q = Quota::new(2, 3);
        assert!(q.acquire("a"));
        assert!(q.acquire("a"));
        assert!(!q.acquire("a"), "user quota");
        assert!(q.acquire("b"));
        assert!(!q.acquire("c"), "total quota");
        q.release("a");
        assert!(q.acquire("c"));
        assert_eq!(q.total(), 3);
        q.release("nobody");
        assert_eq!(q.total(), 3);
    }

    #[test]
    fn zero_is_unlimited() {
        let mut q = Quota::new(0, 0);
        for _ in 0..1000 {
            assert!(q.acquire("a"));
        }
    }

    #[test]
    fn bucket_limits_and_refills() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(600, t0));
        assert!(!b.take(600, t0));
        assert!(b.take(600, t0 + Duration::from_millis(200)));
        // never more than one second's worth banked
        assert!(!b.take(1001, t0 + Duration::from_secs(60)));
        assert!(b.take(1000, t0 + Duration::from_secs(60)));
    }
}
