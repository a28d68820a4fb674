//! Proactive client-side rate limiting per endpoint (Feishu's calendar tier is
//! 50 requests/s and 1000 requests/min per app and API), and call accounting.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Limits applied per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_second: u32,
    pub per_minute: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_second: 50,
            per_minute: 1000,
        }
    }
}

/// Two keyed token buckets (per second, per minute); a call waits for both.
#[derive(Debug)]
pub struct Limiter {
    second: Option<DefaultKeyedRateLimiter<String>>,
    minute: Option<DefaultKeyedRateLimiter<String>>,
}

impl Limiter {
    /// A limit of 0 disables that bucket.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            second: NonZeroU32::new(limits.per_second)
                .map(|n| RateLimiter::keyed(Quota::per_second(n))),
            minute: NonZeroU32::new(limits.per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Takes a permit now if both buckets have one (no waiting).
    pub fn try_acquire(&self, endpoint: &str) -> bool {
        let key = endpoint.to_owned();
        self.minute.as_ref().is_none_or(|m| m.check_key(&key).is_ok())
            && self.second.as_ref().is_none_or(|s| s.check_key(&key).is_ok())
    }

    /// Waits until a call to `endpoint` is allowed.
    pub async fn acquire(&self, endpoint: &str) {
        let key = endpoint.to_owned();
        if let Some(m) = &self.minute {
            m.until_key_ready(&key).await;
        }
        if let Some(s) = &self.second {
            s.until_key_ready(&key).await;
        }
    }
}

/// Calls made, by endpoint template and outcome (HTTP status, or 0 for a
/// transport failure). Cheap enough to keep always on; `/metrics` reads it.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
}

impl CallStats {
    pub fn record(&self, endpoint: &str, status: u16) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry((endpoint.to_owned(), status)).or_default() += 1;
    }

    /// `(endpoint, status) -> count`.
    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Total calls to endpoints whose template contains `part`.
    pub fn total(&self, part: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((e, _), _)| e.contains(part))
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_is_the_per_second_limit_per_endpoint() {
        let l = Limiter::new(RateLimits {
            per_second: 5,
            per_minute: 1000,
        });
        for _ in 0..5 {
            assert!(l.try_acquire("GET /x"));
        }
        assert!(!l.try_acquire("GET /x"), "the sixth call in the same second must wait");
        assert!(l.try_acquire("GET /y"), "another endpoint has its own buckets");
    }

    #[test]
    fn the_minute_bucket_caps_sustained_rate() {
        let l = Limiter::new(RateLimits {
            per_second: 0,
            per_minute: 3,
        });
        assert!((0..3).all(|_| l.try_acquire("GET /x")));
        assert!(!l.try_acquire("GET /x"));
    }

    #[tokio::test]
    async fn acquire_returns_when_allowed() {
        let l = Limiter::new(RateLimits::default());
        l.acquire("GET /x").await;
    }

    #[test]
    fn counts_calls() {
        let s = CallStats::default();
        s.record("GET /a", 200);
        s.record("GET /a", 200);
        s.record("GET /a", 429);
        assert_eq!(s.total("/a"), 3);
        assert_eq!(s.snapshot()[&("GET /a".to_owned(), 200)], 2);
    }
}
