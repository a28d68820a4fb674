//! Client-side token bucket in front of every Calendar API request
//! (sinks-api.md A.10: Google counts each batch part as one request).
//!
//! [`TokenBucket`] is pure arithmetic over caller-supplied instants, so it is
//! tested without a clock; [`RateLimiter`] puts it behind a mutex and sleeps.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket that hands out reservations: taking more tokens than are
/// available drives the balance negative and answers how long the caller
/// must wait, so concurrent callers queue up in arrival order.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second and holding at
    /// most `capacity` (at least 1).
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            capacity,
            tokens: capacity,
            at: now,
        }
    }

    /// The bucket of [`super::GoogleClientConfig::requests_per_second`]:
    /// one second's worth of burst. `None` when unlimited (`rate <= 0`).
    pub fn per_second(rate: f64, now: Instant) -> Option<Self> {
        (rate > 0.0 && rate.is_finite()).then(|| Self::new(rate, rate, now))
    }

    fn refill(&mut self, now: Instant) {
        if now > self.at {
            let gained = now.duration_since(self.at).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + gained).min(self.capacity);
            self.at = now;
        }
    }

    /// Takes `n` tokens at `now`; answers how long to wait before the
    /// request may go out (zero when the tokens were there).
    pub fn reserve(&mut self, n: u32, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= f64::from(n);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Tokens available at `now` (negative while reservations are pending).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// The shared limiter of one client: reserve, then sleep outside the lock.
#[derive(Debug)]
pub struct RateLimiter {
    bucket: Mutex<Option<TokenBucket>>,
}

impl RateLimiter {
    /// `requests_per_second <= 0` disables limiting.
    pub fn new(requests_per_second: f64) -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::per_second(requests_per_second, Instant::now())),
        }
    }

    /// Waits until `n` requests may be sent.
    pub async fn acquire(&self, n: u32) {
        let wait = {
            let mut guard = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_mut() {
                Some(b) => b.reserve(n, Instant::now()),
                None => Duration::ZERO,
            }
        };
        if !wait.is_zero() {
            tracing::debug!(wait_ms = wait.as_millis() as u64, n, "google rate limiter");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Equal within a microsecond (float arithmetic).
    #[track_caller]
    fn close(a: Duration, b: Duration) {
        assert!(a.abs_diff(b) < Duration::from_micros(1), "{a:?} != {b:?}");
    }

    #[test]
    fn five_per_second_bursts_then_spaces_requests() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(5.0, t0).unwrap();
        for _ in 0..5 {
            assert_eq!(b.reserve(1, t0), Duration::ZERO);
        }
        // The sixth waits one interval, the seventh two: reservations queue.
        close(b.reserve(1, t0), ms(200));
        close(b.reserve(1, t0), ms(400));
        // 400 ms later both are paid off, the bucket is empty.
        let t1 = t0 + ms(400);
        assert!(b.available(t1).abs() < 1e-9);
        close(b.reserve(1, t1), ms(200));
    }

    #[test]
    fn refill_is_capped_at_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(5.0, t0).unwrap();
        assert_eq!(b.reserve(5, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(60);
        assert!((b.available(later) - 5.0).abs() < 1e-9);
        assert_eq!(b.reserve(5, later), Duration::ZERO);
        close(b.reserve(1, later), ms(200));
    }

    #[test]
    fn a_batch_takes_one_token_per_part() {
        let t0 = Instant::now();
        let mut b = TokenBucket::per_second(5.0, t0).unwrap();
        // 50 parts at 5/s: 5 now, 45 more tokens take 9 s.
        close(b.reserve(50, t0), Duration::from_secs(9));
        // A single request behind it waits for the whole batch.
        close(b.reserve(1, t0), ms(9200));
    }

    #[test]
    fn unlimited_and_earlier_instants() {
        assert!(TokenBucket::per_second(0.0, Instant::now()).is_none());
        assert!(TokenBucket::per_second(-1.0, Instant::now()).is_none());
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::per_second(5.0, t0).unwrap();
        // An instant before the last one never adds or removes tokens.
        assert_eq!(b.reserve(5, t0 - Duration::from_secs(1)), Duration::ZERO);
        close(b.reserve(1, t0), ms(200));
    }
}
