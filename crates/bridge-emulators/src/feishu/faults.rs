//! Fault injection (random and one-shot) and the per-endpoint rate limiter.

use std::collections::HashMap;
use std::time::Duration;

use crate::kit::{Dice, Effect, Fault, RandomFaults, Window, duration_ms};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Random faults. Probabilities are in `0.0..=1.0`; all zero by default.
///
/// `rate_429`, `rate_5xx`, `slow_rate` and `truncate_rate` apply to calendar
/// API requests (`/open-apis/calendar/…`); `drop_ws_rate` closes the
/// long-connection socket instead of delivering a message; `duplicate_rate`
/// re-sends a message that was already delivered (webhook and WS).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    pub rate_429: f64,
    pub rate_5xx: f64,
    pub slow_rate: f64,
    #[serde(with = "duration_ms")]
    pub slow_delay: Duration,
    pub drop_ws_rate: f64,
    pub duplicate_rate: f64,
    pub truncate_rate: f64,
    /// Seed for the fault dice, for reproducible runs (random when `None`).
    pub seed: Option<u64>,
}

/// A deterministic fault for [`super::FeishuEmulator::fail_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// HTTP 429, code 99991400, `x-ogw-ratelimit-reset: reset_secs`.
    Status429 { reset_secs: u64 },
    /// HTTP 500, code 190003.
    Status5xx,
    /// Answer normally after this delay.
    Slow(Duration),
    /// The presented token is expired on the spot (99991663 tenant /
    /// 99991677 user), so the client must fetch or refresh a new one.
    TokenExpired,
    /// Answer normally but cut the JSON body in half.
    Truncated,
}

impl Fault for FaultKind {
    fn effect(&self) -> Effect {
        match self {
            Self::Slow(d) => Effect::Delay(*d),
            Self::Truncated => Effect::Truncate,
            Self::Status429 { .. } | Self::Status5xx | Self::TokenExpired => Effect::Answer,
        }
    }
}

impl RandomFaults for Faults {
    type Fault = FaultKind;

    fn seed(&self) -> Option<u64> {
        self.seed
    }

    fn roll(&self, dice: &mut Dice) -> Option<FaultKind> {
        dice.first([
            (self.rate_429, FaultKind::Status429 { reset_secs: 1 }),
            (self.rate_5xx, FaultKind::Status5xx),
            (self.truncate_rate, FaultKind::Truncated),
            (self.slow_rate, FaultKind::Slow(self.slow_delay)),
        ])
    }
}

/// The fault of a `POST /_emulator/fail_next` body.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultSpec {
    fault: String,
    #[serde(default)]
    reset_secs: Option<u64>,
    #[serde(default)]
    delay_ms: Option<u64>,
}

impl TryFrom<FaultSpec> for FaultKind {
    type Error = String;

    fn try_from(b: FaultSpec) -> Result<Self, String> {
        Ok(match b.fault.as_str() {
            "status429" => Self::Status429 {
                reset_secs: b.reset_secs.unwrap_or(1),
            },
            "status5xx" => Self::Status5xx,
            "slow" => Self::Slow(Duration::from_millis(b.delay_ms.unwrap_or(1000))),
            "token_expired" => Self::TokenExpired,
            "truncated" => Self::Truncated,
            other => return Err(format!("unknown fault {other}")),
        })
    }
}

/// Sliding-window limiter: per key, at most `per_sec` requests in any 1 s and
/// `per_min` in any 60 s. Throttled requests are not counted.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    hits: HashMap<String, (Window, Window)>,
}

/// A throttling verdict: the limit that was hit and seconds until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub(crate) limit: u32,
    pub(crate) reset_secs: u64,
}

impl RateLimiter {
    pub(crate) fn check(
        &mut self,
        key: &str,
        per_sec: u32,
        per_min: u32,
        now: Instant,
    ) -> Result<(), Throttled> {
        let (second, minute) = self.hits.entry(key.to_owned()).or_insert_with(|| {
            (
                Window::new(Duration::from_secs(1)),
                Window::new(Duration::from_secs(60)),
            )
        });
        let throttled = |limit| move |reset_secs| Throttled { limit, reset_secs };
        second.check(per_sec, now).map_err(throttled(per_sec))?;
        minute.check(per_min, now).map_err(throttled(per_min))?;
        second.hit(now);
        minute.hit(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_then_per_minute() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            rl.check("k", 3, 5, t0).unwrap();
        }
        let err = rl.check("k", 3, 5, t0).unwrap_err();
        assert_eq!(
            err,
            Throttled {
                limit: 3,
                reset_secs: 1
            }
        );
        let t1 = t0 + Duration::from_millis(1500);
        rl.check("k", 3, 5, t1).unwrap();
        rl.check("k", 3, 5, t1).unwrap();
        let err = rl.check("k", 3, 5, t1).unwrap_err();
        assert_eq!(err.limit, 5);
        assert_eq!(err.reset_secs, 59);
        rl.check("other", 3, 5, t1).unwrap();
    }

    #[test]
    fn random_faults_only_with_their_rates() {
        let mut dice = Dice::default();
        assert_eq!(Faults::default().roll(&mut dice), None);
        let all_5xx = Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        };
        assert_eq!(all_5xx.roll(&mut dice), Some(FaultKind::Status5xx));
        assert_eq!(FaultKind::Truncated.effect(), Effect::Truncate);
    }
}
