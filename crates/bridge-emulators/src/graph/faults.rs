//! Injected faults of the Graph emulator.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kit::{Dice, Effect, Fault, RandomFaults, duration_ms};

/// Random faults for API calls (batch parts included; the token endpoint,
/// the `$batch` envelope and the control API excluded). Probabilities in
/// `0.0..=1.0`, all zero by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// 429 `ApplicationThrottled` with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    /// 503 `ServiceUnavailable` with `Retry-After: retry_after_secs`.
    pub rate_503: f64,
    /// 504 without `Retry-After`.
    pub rate_504: f64,
    /// Answer normally after `slow_delay`.
    pub slow_rate: f64,
    #[serde(with = "duration_ms")]
    pub slow_delay: Duration,
    /// `Retry-After` of random 429 / 503 (0 means 1).
    pub retry_after_secs: u64,
    /// Seed of the dice (random when `None`).
    pub seed: Option<u64>,
}

/// A deterministic fault for [`super::GraphEmulator::fail_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 `ApplicationThrottled` with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// 503, with `Retry-After` when given.
    ServiceUnavailable { retry_after_secs: Option<u64> },
    /// 504.
    GatewayTimeout,
    /// The presented token expires on the spot (401 now and afterwards).
    TokenExpired,
    /// Answer normally after this delay.
    Slow(Duration),
    /// Any Graph error.
    Error {
        status: u16,
        code: String,
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
            (
                self.rate_503,
                FaultKind::ServiceUnavailable {
                    retry_after_secs: Some(retry_after_secs),
                },
            ),
            (self.rate_504, FaultKind::GatewayTimeout),
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
    code: Option<String>,
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
            "service_unavailable" => Self::ServiceUnavailable {
                retry_after_secs: b.retry_after_secs,
            },
            "gateway_timeout" => Self::GatewayTimeout,
            "token_expired" => Self::TokenExpired,
            "slow" => Self::Slow(Duration::from_millis(b.delay_ms.unwrap_or(1000))),
            "error" => Self::Error {
                status: b.status.unwrap_or(500),
                code: b
                    .code
                    .unwrap_or_else(|| "ErrorInternalServerTransientError".into()),
                message: b
                    .message
                    .unwrap_or_else(|| "An internal server error occurred.".into()),
            },
            other => {
                return Err(format!(
                    "unknown fault {other:?} (too_many_requests, service_unavailable, gateway_timeout, token_expired, slow, error)"
                ));
            }
        })
    }
}
