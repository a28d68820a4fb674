//! Proactive client-side rate limiting per endpoint (Feishu's calendar tier
//! is 50 requests/s and 1000 requests/min per app and API) and call
//! accounting. Both live in `bridge-http` (the sliding windows and their
//! tests, the per-service counters); the Feishu client uses them with the
//! defaults of [`RateLimits`].

pub use bridge_http::{RateLimits, ServiceStats, SlidingWindows};
