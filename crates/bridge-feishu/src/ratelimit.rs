//! Proactive client-side rate limiting per endpoint (Feishu's calendar tier is
//! 50 requests/s and 1000 requests/min per app and API), and call accounting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Sliding-window limits per endpoint: at most `per_second` calls in any
/// second and `per_minute` in any minute, the way Feishu counts them. (Token
/// buckets such as GCRA allow a burst plus the refill inside one window, which
/// overshoots a sliding-window server by up to twice the limit.)
#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    windows: Mutex<HashMap<String, Windows>>,
}

#[derive(Debug, Default)]
struct Windows {
    second: VecDeque<Instant>,
    minute: VecDeque<Instant>,
}

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
/// Slack against clock granularity at the window edges.
const MARGIN: Duration = Duration::from_millis(5);

impl Limiter {
    /// A limit of 0 disables that window.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a permit now if both windows have room; otherwise how long to wait.
    fn try_take(&self, endpoint: &str, now: Instant) -> Result<(), Duration> {
        let mut all = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = all.entry(endpoint.to_owned()).or_default();
        while w
            .second
            .front()
            .is_some_and(|t| now.duration_since(*t) >= SECOND + MARGIN)
        {
            w.second.pop_front();
        }
        while w
            .minute
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE + MARGIN)
        {
            w.minute.pop_front();
        }
        let mut wait = Duration::ZERO;
        let ps = self.limits.per_second as usize;
        let pm = self.limits.per_minute as usize;
        if ps > 0 && w.second.len() >= ps {
            let oldest = w.second[w.second.len() - ps];
            wait = wait.max((oldest + SECOND + MARGIN).saturating_duration_since(now));
        }
        if pm > 0 && w.minute.len() >= pm {
            let oldest = w.minute[w.minute.len() - pm];
            wait = wait.max((oldest + MINUTE + MARGIN).saturating_duration_since(now));
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        if ps > 0 {
            w.second.push_back(now);
        }
        if pm > 0 {
            w.minute.push_back(now);
        }
        Ok(())
    }

    /// Takes a permit now if there is room (no waiting).
    pub fn try_acquire(&self, endpoint: &str) -> bool {
        self.try_take(endpoint, Instant::now()).is_ok()
    }

    /// Waits until a call to `endpoint` is allowed.
    pub async fn acquire(&self, endpoint: &str) {
        loop {
            match self.try_take(endpoint, Instant::now()) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
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
        assert!(
            !l.try_acquire("GET /x"),
            "the sixth call in the same second must wait"
        );
        assert!(
            l.try_acquire("GET /y"),
            "another endpoint has its own buckets"
        );
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

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let l = Limiter::new(RateLimits {
            per_second: 5,
            per_minute: 0,
        });
        let t0 = Instant::now();
        let mut granted = Vec::new();
        // Simulated clock: ask every 10 ms for 3 s.
        for i in 0..300u64 {
            let now = t0 + Duration::from_millis(10 * i);
            if l.try_take("GET /x", now).is_ok() {
                granted.push(now);
            }
        }
        for (i, t) in granted.iter().enumerate() {
            let in_window = granted[i..]
                .iter()
                .take_while(|u| u.duration_since(*t) < SECOND)
                .count();
            assert!(in_window <= 5, "{in_window} calls within one second");
        }
        assert!(
            granted.len() >= 12,
            "still makes progress: {}",
            granted.len()
        );
    }

    #[tokio::test]
    async fn acquire_waits_for_room() {
        let l = Limiter::new(RateLimits {
            per_second: 2,
            per_minute: 0,
        });
        l.acquire("GET /x").await;
        l.acquire("GET /x").await;
        assert!(!l.try_acquire("GET /x"));
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
