//! Call counters by service, endpoint and outcome, for `/metrics` and the
//! reports. Cheap enough to keep always on.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One counter's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallKey {
    /// `feishu`, `google`, …
    pub service: String,
    /// The endpoint template (`GET /open-apis/calendar/v4/calendars/:calendar_id`).
    pub endpoint: String,
    /// The HTTP status, or 0 when no answer came (connection failure, timeout).
    pub status: u16,
}

/// Calls of every service that records here. One per client by default;
/// share one between clients to read them all in one place.
#[derive(Debug, Default)]
pub struct CallStats {
    counts: Mutex<BTreeMap<CallKey, u64>>,
}

impl CallStats {
    pub fn record(&self, service: &str, endpoint: &str, status: u16) {
        let key = CallKey {
            service: service.to_owned(),
            endpoint: endpoint.to_owned(),
            status,
        };
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(key).or_default() += 1;
    }

    /// Every counter.
    pub fn snapshot(&self) -> BTreeMap<CallKey, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `(endpoint, status) -> count` of one service.
    pub fn service(&self, service: &str) -> BTreeMap<(String, u16), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(k, _)| k.service == service)
            .map(|(k, n)| ((k.endpoint.clone(), k.status), *n))
            .collect()
    }

    /// Forgets every counter of `service`.
    pub fn reset(&self, service: &str) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| k.service != service);
    }
}

/// The counters of one service: records under its name into a (possibly
/// shared) [`CallStats`].
#[derive(Debug, Clone)]
pub struct ServiceStats {
    service: Arc<str>,
    stats: Arc<CallStats>,
}

impl ServiceStats {
    pub fn new(service: &str, stats: Arc<CallStats>) -> Self {
        Self {
            service: service.into(),
            stats,
        }
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the counters live (to share with another client, or to read
    /// every service).
    pub fn shared(&self) -> &Arc<CallStats> {
        &self.stats
    }

    pub fn record(&self, endpoint: &str, status: u16) {
        self.stats.record(&self.service, endpoint, status);
    }

    /// `(endpoint, status) -> count`.
    pub fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.stats.service(&self.service)
    }

    /// Total calls to endpoints whose template contains `part`.
    pub fn total(&self, part: &str) -> u64 {
        self.snapshot()
            .iter()
            .filter(|((e, _), _)| e.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    /// Forgets this service's counters.
    pub fn reset(&self) {
        self.stats.reset(&self.service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Moved from bridge-feishu's ratelimit.rs.
    #[test]
    fn counts_calls() {
        let s = ServiceStats::new("feishu", Arc::default());
        s.record("GET /a", 200);
        s.record("GET /a", 200);
        s.record("GET /a", 429);
        assert_eq!(s.total("/a"), 3);
        assert_eq!(s.snapshot()[&("GET /a".to_owned(), 200)], 2);
    }

    #[test]
    fn services_share_one_registry_without_mixing() {
        let all = Arc::new(CallStats::default());
        let f = ServiceStats::new("feishu", all.clone());
        let g = ServiceStats::new("google", all.clone());
        f.record("GET /a", 200);
        g.record("GET /a", 200);
        g.record("POST /b", 0);
        assert_eq!(f.total(""), 1);
        assert_eq!(g.total(""), 2);
        assert_eq!(all.snapshot().len(), 3);
        let key = CallKey {
            service: "google".into(),
            endpoint: "POST /b".into(),
            status: 0,
        };
        assert_eq!(all.snapshot()[&key], 1);
        g.reset();
        assert_eq!((f.total(""), g.total("")), (1, 0));
    }
}
