//! Fault injection (random and one-shot) and the per-user rate limiter.

use std::collections::HashMap;
use std::time::Duration;

use crate::kit::{Dice, Effect, Fault, RandomFaults, Window, ceil_secs, duration_ms};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Random faults for Calendar API calls (batch parts included, the token
/// endpoint and the control API excluded). Probabilities are in
/// `0.0..=1.0`; all zero by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// 429 `rateLimitExceeded` with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    /// 503 `backendError`.
    pub rate_5xx: f64,
    /// 403 `rateLimitExceeded`.
    pub rate_403: f64,
    /// Answer normally after `slow_delay`.
    pub slow_rate: f64,
    #[serde(with = "duration_ms")]
    pub slow_delay: Duration,
    /// `Retry-After` of random 429s (0 means 1).
    pub retry_after_secs: u64,
    /// Seed for the dice, for reproducible runs (random when `None`).
    pub seed: Option<u64>,
}

/// A deterministic fault for [`super::GoogleEmulator::fail_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 429 `usageLimits`/`rateLimitExceeded` with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// HTTP 5xx (500 or 503) `global`/`backendError`.
    BackendError { status: u16 },
    /// HTTP 403 `usageLimits`/`rateLimitExceeded`.
    RateLimitExceeded,
    /// HTTP 403 `usageLimits`/`userRateLimitExceeded`.
    UserRateLimitExceeded,
    /// HTTP 403 `usageLimits`/`quotaExceeded`, once (see
    /// [`super::GoogleEmulator::exhaust_daily_quota`] for the persistent one).
    QuotaExceeded,
    /// Answer normally after this delay.
    Slow(Duration),
    /// The presented access token expires on the spot (401 `authError` now
    /// and afterwards), so the client must refresh.
    TokenExpired,
    /// Any error envelope.
    Error {
        status: u16,
        domain: String,
        reason: String,
        message: String,
    },
}

impl Fault for FaultKind {
    fn effect(&self) -> Effect {
        match self {
            Self::Slow(d) => Effect::Delay(*d),
            _ => Effect::Answer,
        }
    }
}

impl RandomFaults for Faults {
    type Fault = FaultKind;

    fn seed(&self) -> Option<u64> {
        self.seed
    }

    fn roll(&self, dice: &mut Dice) -> Option<FaultKind> {
        let retry_after_secs = self.retry_after_secs.max(1);
        dice.first([
            (
                self.rate_429,
                FaultKind::TooManyRequests { retry_after_secs },
            ),
            (self.rate_5xx, FaultKind::BackendError { status: 503 }),
            (self.rate_403, FaultKind::RateLimitExceeded),
            (self.slow_rate, FaultKind::Slow(self.slow_delay)),
        ])
    }
}

/// The fault of a `POST /_emulator/fail_next` body.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultSpec {
    fault: String,
    #[serde(default)]
    retry_after_secs: Option<u64>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl TryFrom<FaultSpec> for FaultKind {
    type Error = String;

    fn try_from(b: FaultSpec) -> Result<Self, String> {
        Ok(match b.fault.as_str() {
            "too_many_requests" => Self::TooManyRequests {
                retry_after_secs: b.retry_after_secs.unwrap_or(1),
            },
            "backend_error" => Self::BackendError {
                status: b.status.unwrap_or(503),
            },
            "rate_limit_exceeded" => Self::RateLimitExceeded,
            "user_rate_limit_exceeded" => Self::UserRateLimitExceeded,
            "quota_exceeded" => Self::QuotaExceeded,
            "slow" => Self::Slow(Duration::from_millis(b.delay_ms.unwrap_or(1000))),
            "token_expired" => Self::TokenExpired,
            "error" => Self::Error {
                status: b.status.ok_or("error needs status")?,
                domain: b.domain.unwrap_or_else(|| "global".into()),
                reason: b.reason.ok_or("error needs reason")?,
                message: b.message.unwrap_or_default(),
            },
            other => return Err(format!("unknown fault {other:?}")),
        })
    }
}

/// Per-user and per-project request limits (sinks-api.md A.10: 600 requests
/// per minute per user, 10,000 per minute per project, sliding windows;
/// batched calls count one each).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per user (token-bucket refill rate).
    pub per_user_per_second: f64,
    /// Bucket size: how many requests a user may send at once.
    pub per_user_burst: u32,
    /// Sliding one-minute quota per user (`userRateLimitExceeded`).
    pub per_user_per_minute: u32,
    /// Sliding one-minute quota per project (`rateLimitExceeded`).
    pub per_project_per_minute: u32,
    /// Answer 429 with `Retry-After` instead of 403 (Google does both).
    pub answer_429: bool,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_user_per_second: 10.0,
            per_user_burst: 20,
            per_user_per_minute: 600,
            per_project_per_minute: 10_000,
            answer_429: false,
        }
    }
}

/// Which limit a throttled request hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The per-user token bucket: `rateLimitExceeded`.
    UserRate,
    /// The per-user minute: `userRateLimitExceeded`.
    UserMinute,
    /// The per-project minute: `rateLimitExceeded`.
    ProjectMinute,
}

/// A throttling verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub(crate) limit: Limit,
    pub(crate) retry_after_secs: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per user plus sliding minute windows. Throttled requests
/// are not counted.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    buckets: HashMap<String, Bucket>,
    user_minutes: HashMap<String, Window>,
    project_minute: Window,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            buckets: HashMap::new(),
            user_minutes: HashMap::new(),
            project_minute: Window::new(MINUTE),
        }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub(crate) fn check(
        &mut self,
        user: &str,
        limit: &RateLimit,
        now: Instant,
    ) -> Result<(), Throttled> {
        let capacity = f64::from(limit.per_user_burst.max(1));
        let rate = limit.per_user_per_second.max(f64::MIN_POSITIVE);
        let bucket = self.buckets.entry(user.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(capacity);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(Throttled {
                limit: Limit::UserRate,
                retry_after_secs: ceil_secs(Duration::from_secs_f64(
                    ((1.0 - bucket.tokens) / rate).min(3600.0),
                )),
            });
        }
        let throttled = |limit| {
            move |retry_after_secs| Throttled {
                limit,
                retry_after_secs,
            }
        };
        let user_minute = self
            .user_minutes
            .entry(user.to_owned())
            .or_insert_with(|| Window::new(MINUTE));
        user_minute
            .check(limit.per_user_per_minute, now)
            .map_err(throttled(Limit::UserMinute))?;
        self.project_minute
            .check(limit.per_project_per_minute, now)
            .map_err(throttled(Limit::ProjectMinute))?;
        bucket.tokens -= 1.0;
        user_minute.hit(now);
        self.project_minute.hit(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_then_refill_then_minute() {
        let limit = RateLimit {
            per_user_per_second: 2.0,
            per_user_burst: 3,
            per_user_per_minute: 5,
            ..RateLimit::default()
        };
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check("a", &limit, t0).unwrap();
        }
        let err = rl.check("a", &limit, t0).unwrap_err();
        assert_eq!(err.limit, Limit::UserRate);
        assert_eq!(err.retry_after_secs, 1);
        rl.check("b", &limit, t0).unwrap();
        let t1 = t0 + Duration::from_millis(1000);
        rl.check("a", &limit, t1).unwrap();
        rl.check("a", &limit, t1).unwrap();
        let t2 = t1 + Duration::from_millis(1000);
        let err = rl.check("a", &limit, t2).unwrap_err();
        assert_eq!(err.limit, Limit::UserMinute);
        assert_eq!(err.retry_after_secs, 58);
    }

    #[test]
    fn random_faults_only_with_their_rates() {
        let mut dice = Dice::default();
        assert_eq!(Faults::default().roll(&mut dice), None);
        let all_429 = Faults {
            rate_429: 1.0,
            ..Faults::default()
        };
        assert_eq!(
            all_429.roll(&mut dice),
            Some(FaultKind::TooManyRequests {
                retry_after_secs: 1
            })
        );
        let spec: FaultSpec =
            serde_json::from_value(serde_json::json!({"fault": "error"})).unwrap();
        assert_eq!(
            FaultKind::try_from(spec),
            Err("error needs status".to_owned())
        );
    }
}
