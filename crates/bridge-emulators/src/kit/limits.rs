//! Sliding windows, the building block of the emulated rate limits.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The requests admitted within the last `span`.
#[derive(Debug)]
pub(crate) struct Window {
    span: Duration,
    hits: VecDeque<Instant>,
}

impl Window {
    pub(crate) fn new(span: Duration) -> Self {
        Self {
            span,
            hits: VecDeque::new(),
        }
    }

    /// `Err(seconds until a request leaves the window)` when `limit`
    /// requests already fall within the span ending at `now`.
    pub(crate) fn check(&mut self, limit: u32, now: Instant) -> Result<(), u64> {
        while self
            .hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.span)
        {
            self.hits.pop_front();
        }
        if self.hits.len() < limit as usize {
            return Ok(());
        }
        let oldest = self
            .hits
            .front()
            .map(|t| now.duration_since(*t))
            .unwrap_or_default();
        Err(ceil_secs(self.span.saturating_sub(oldest)))
    }

    /// Counts an admitted request (throttled ones are not counted).
    pub(crate) fn hit(&mut self, now: Instant) {
        self.hits.push_back(now);
    }
}

/// Whole seconds rounded up, at least 1 (what reset headers carry).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_window_waits_for_its_oldest_hit() {
        let mut w = Window::new(Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..2 {
            w.check(2, t0).unwrap();
            w.hit(t0);
        }
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(w.check(2, t1), Err(59));
        assert_eq!(w.check(3, t1), Ok(()));
        assert_eq!(w.check(2, t0 + Duration::from_secs(60)), Ok(()));
        assert_eq!(ceil_secs(Duration::ZERO), 1);
    }
}
