//! Client-side rate limits, taken before every request.
//!
//! - [`SlidingWindows`]: at most N calls per second and M per minute per
//!   endpoint, the way Feishu counts (its calendar tier is 50 requests/s and
//!   1000 requests/min per app and API).
//! - [`TokenBucket`] / [`Bucket`]: a token bucket for services that document
//!   one (Google counts each batch part as one request, sinks-api.md A.10).
//!   [`TokenBucket`] is pure arithmetic over caller-supplied instants, so it
//!   is tested without a clock; [`Bucket`] puts it behind a mutex and sleeps.
//!
//! Both read `tokio::time::Instant`, so tests can run them on paused time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The limiter of one client.
#[derive(Debug, Default)]
pub enum Limiter {
    /// No client-side limit.
    #[default]
    Unlimited,
    /// Sliding windows per endpoint.
    Windows(SlidingWindows),
    /// One token bucket for every endpoint; a call takes `permits` tokens.
    Bucket(Bucket),
    /// One sliding window over every endpoint; a call takes `permits` slots.
    Window(Window),
}

impl Limiter {
    /// Waits until `permits` calls to `endpoint` may go out.
    pub async fn acquire(&self, endpoint: &str, permits: u32) {
        match self {
            Limiter::Unlimited => {}
            Limiter::Windows(w) => {
                for _ in 0..permits {
                    w.acquire(endpoint).await;
                }
            }
            Limiter::Bucket(b) => b.acquire(permits).await,
            Limiter::Window(w) => w.acquire(permits).await,
        }
    }
}

// ---- sliding windows (moved from bridge-feishu's ratelimit.rs) ------------

/// Limits applied per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_second: u32,
    pub per_minute: u32,
}

impl Default for RateLimits {
    /// Feishu's calendar tier.
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
pub struct SlidingWindows {
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

impl SlidingWindows {
    /// A limit of 0 disables that window.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            windows: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> RateLimits {
        self.limits
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

// ---- one sliding window of any length ------------------------------------

/// At most `limit` calls in any `period`, over every endpoint of a client:
/// a service that counts all of an app's calls to one account in one window
/// (Microsoft Graph: 10,000 requests per 10 minutes per app and mailbox,
/// each part of a `$batch` counted, graph.md §6). [`SlidingWindows`] has
/// fixed one-second and one-minute windows per endpoint; a minute's share
/// of a ten-minute limit would forbid the bursts the service allows.
#[derive(Debug)]
pub struct Window {
    limit: u32,
    period: Duration,
    /// Start times of the calls in the window (one entry per permit).
    calls: Mutex<VecDeque<Instant>>,
}

impl Window {
    /// A limit of 0 disables the window.
    pub fn new(limit: u32, period: Duration) -> Self {
        Self {
            limit,
            period,
            calls: Mutex::new(VecDeque::new()),
        }
    }

    pub fn limit(&self) -> (u32, Duration) {
        (self.limit, self.period)
    }

    /// Permits taken in the window ending now.
    pub fn in_window(&self) -> usize {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut calls, Instant::now());
        calls.len()
    }

    fn expire(&self, calls: &mut VecDeque<Instant>, now: Instant) {
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.period + MARGIN)
        {
            calls.pop_front();
        }
    }

    /// Takes `n` permits at `now` if the window has room for all of them
    /// (more than the limit at once: when the window is empty); otherwise
    /// how long to wait.
    pub fn try_take(&self, n: u32, now: Instant) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        self.expire(&mut calls, now);
        let limit = self.limit as usize;
        let n = n as usize;
        let room = limit.saturating_sub(calls.len());
        if n > room && !calls.is_empty() {
            // The oldest call whose expiry makes room for all `n`.
            let need = n.min(limit) - room;
            let t = calls[need - 1];
            return Err((t + self.period + MARGIN).saturating_duration_since(now));
        }
        calls.extend(std::iter::repeat_n(now, n));
        Ok(())
    }

    /// Waits until `n` calls may go out.
    pub async fn acquire(&self, n: u32) {
        loop {
            match self.try_take(n, Instant::now()) {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

// ---- token bucket (moved from bridge-sinks' google/limit.rs) --------------

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

    /// `rate` per second with one second's worth of burst. `None` when
    /// unlimited (`rate <= 0`).
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

/// The shared token bucket of one client: reserve, then sleep outside the lock.
#[derive(Debug)]
pub struct Bucket {
    bucket: Mutex<Option<TokenBucket>>,
}

impl Bucket {
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
            tracing::debug!(wait_ms = wait.as_millis() as u64, n, "rate limiter");
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- one window ----

    #[test]
    fn a_window_counts_permits_over_its_whole_period() {
        let w = Window::new(10, Duration::from_secs(600));
        let t0 = Instant::now();
        // A burst up to the limit, permits of a batch taken together.
        assert!(w.try_take(4, t0).is_ok());
        assert!(w.try_take(6, t0 + Duration::from_secs(60)).is_ok());
        // Full: the next permit waits for the first calls to leave the window.
        let wait = w.try_take(1, t0 + Duration::from_secs(120)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(480) + MARGIN);
        // Five permits need the first four and one of the next six gone.
        let wait = w.try_take(5, t0 + Duration::from_secs(120)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(540) + MARGIN);
        let later = t0 + Duration::from_secs(600) + MARGIN;
        assert!(w.try_take(4, later).is_ok());
        assert!(w.try_take(1, later).is_err());
        // More than the limit at once goes out on an empty window only.
        let w = Window::new(3, Duration::from_secs(1));
        assert!(w.try_take(5, t0).is_ok());
        assert!(w.try_take(1, t0 + Duration::from_millis(500)).is_err());
        assert!(w.try_take(1, t0 + Duration::from_secs(2)).is_ok());
        // 0 disables it.
        let off = Window::new(0, Duration::from_secs(1));
        assert!((0..100).all(|_| off.try_take(20, t0).is_ok()));
    }

    // ---- sliding windows ----

    #[test]
    fn the_burst_is_the_per_second_limit_per_endpoint() {
        let l = SlidingWindows::new(RateLimits {
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
        let l = SlidingWindows::new(RateLimits {
            per_second: 0,
            per_minute: 3,
        });
        assert!((0..3).all(|_| l.try_acquire("GET /x")));
        assert!(!l.try_acquire("GET /x"));
    }

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let l = SlidingWindows::new(RateLimits {
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
        let l = SlidingWindows::new(RateLimits {
            per_second: 2,
            per_minute: 0,
        });
        l.acquire("GET /x").await;
        l.acquire("GET /x").await;
        assert!(!l.try_acquire("GET /x"));
        l.acquire("GET /x").await;
    }

    // ---- token bucket ----

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
