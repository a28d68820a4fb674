//! When to try again and how long to wait: exponential backoff with jitter,
//! the server's own wait (`Retry-After` as delta-seconds or HTTP-date, and
//! reset headers such as a window's seconds-until-reset), and a bound on the
//! total wait of one call.
//!
//! Why not `backon`: its jitter adds up to the whole current delay
//! (`[d, 2d)`), while Google documents "2^n s plus random milliseconds" and
//! Feishu's client waits `[d/2, d]`; both shapes are pinned by tests. And
//! the retry loop of [`crate::HttpClient::execute`] renews a token once
//! without spending an attempt and takes the server's wait per answer,
//! which `backon`'s `Retryable` would only express through side channels.
//! What remains is the arithmetic below.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// How the random part of a backoff step is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[step / 2, step]` ("equal jitter").
    Equal,
    /// `step` plus uniform in `[0, j)`, then capped at the maximum again.
    Add(Duration),
}

/// Exponential backoff: step `n` is `base * 2^n`, at most `max`, jittered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
}

impl Backoff {
    /// The wait before retry number `attempt + 1`.
    pub fn step(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        match self.jitter {
            Jitter::Equal => {
                let half = exp / 2;
                half + half.mul_f64(rand::rng().random::<f64>())
            }
            Jitter::Add(j) => {
                let extra = if j.is_zero() {
                    Duration::ZERO
                } else {
                    j.mul_f64(rand::rng().random::<f64>())
                };
                (exp + extra).min(self.max)
            }
        }
    }
}

/// How a wait the server asked for combines with the backoff step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerWait {
    /// Wait what the server said (at most `cap`) plus up to `jitter`, instead
    /// of the backoff step: the server knows when its window resets, and the
    /// jitter keeps workers from returning together.
    Instead { cap: Duration, jitter: Duration },
    /// Wait at least what the server said, but never longer than the
    /// backoff's `max`.
    AtLeast,
}

/// Everything about retrying one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (token renewal does not count).
    pub max_retries: u32,
    pub backoff: Backoff,
    pub server_wait: ServerWait,
    /// The waits of one call add up to at most this; a retry that would go
    /// beyond it is not made and the last error is returned.
    pub max_total_wait: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `attempt + 1`, given the server's wait.
    pub fn delay(&self, attempt: u32, server: Option<Duration>) -> Duration {
        match (self.server_wait, server) {
            (ServerWait::Instead { cap, jitter }, Some(s)) => {
                let extra = if jitter.is_zero() {
                    Duration::ZERO
                } else {
                    jitter.mul_f64(rand::rng().random::<f64>())
                };
                s.min(cap) + extra
            }
            (ServerWait::Instead { .. }, None) => self.backoff.step(attempt),
            (ServerWait::AtLeast, s) => self
                .backoff
                .step(attempt)
                .max(s.unwrap_or_default())
                .min(self.backoff.max),
        }
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delta-seconds (fractions
/// tolerated, as some servers send them) or an HTTP-date, measured from
/// `now`. A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Some(secs) = parse_seconds(v) {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// A non-negative number of seconds (`"3"`, `"1.5"`).
pub fn parse_seconds(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
}

/// The wait a throttled answer announces: the first of `reset_headers`
/// (seconds until the limit resets, e.g. a gateway's window header) that
/// parses, else `Retry-After`. `header` looks a header up by lower-case
/// name, so it works for real responses and for the parts of a batch answer.
pub fn server_wait<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    reset_headers: &[&str],
    now: SystemTime,
) -> Option<Duration> {
    reset_headers
        .iter()
        .find_map(|name| header(name).and_then(parse_seconds))
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(v, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google_like(max: Duration) -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max,
                jitter: Jitter::Add(Duration::from_secs(1)),
            },
            server_wait: ServerWait::AtLeast,
            max_total_wait: Duration::from_secs(600),
        }
    }

    #[test]
    fn added_jitter_and_a_floor_from_the_server() {
        let p = google_like(Duration::from_secs(10));
        for attempt in 0..3 {
            let exp = Duration::from_secs(1 << attempt);
            let d = p.delay(attempt, None);
            assert!(d >= exp && d < exp + Duration::from_secs(1), "{d:?}");
        }
        assert_eq!(p.delay(5, None), Duration::from_secs(10), "capped");
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(7))),
            Duration::from_secs(7),
            "at least the server's wait"
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(70))),
            Duration::from_secs(10),
            "never beyond the cap"
        );
    }

    #[test]
    fn equal_jitter_stays_within_half_and_whole_step() {
        let b = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            jitter: Jitter::Equal,
        };
        for attempt in 0..8 {
            let exp = (Duration::from_millis(500) * (1 << attempt)).min(Duration::from_secs(30));
            let d = b.step(attempt);
            assert!(d >= exp / 2 && d <= exp, "{attempt}: {d:?} for {exp:?}");
        }
        assert!(b.step(u32::MAX) <= Duration::from_secs(30));
    }

    #[test]
    fn a_server_wait_replaces_the_step_when_asked_to() {
        let p = RetryPolicy {
            max_retries: 5,
            backoff: Backoff {
                base: Duration::from_secs(10),
                max: Duration::from_secs(30),
                jitter: Jitter::Equal,
            },
            server_wait: ServerWait::Instead {
                cap: Duration::from_secs(60),
                jitter: Duration::from_millis(50),
            },
            max_total_wait: Duration::from_secs(600),
        };
        let d = p.delay(3, Some(Duration::from_secs(1)));
        assert!(d >= Duration::from_secs(1) && d < Duration::from_millis(1050));
        let capped = p.delay(0, Some(Duration::from_secs(3600)));
        assert!(capped >= Duration::from_secs(60) && capped < Duration::from_millis(60_050));
        assert!(p.delay(0, None) <= Duration::from_secs(10));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn reset_headers_come_before_retry_after() {
        let now = SystemTime::now();
        let headers = [("x-reset", "3"), ("retry-after", "9")];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(
            server_wait(get, &["x-reset"], now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(server_wait(get, &[], now), Some(Duration::from_secs(9)));
        assert_eq!(server_wait(|_| None, &["x-reset"], now), None);
    }
}
