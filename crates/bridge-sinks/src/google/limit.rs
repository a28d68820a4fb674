//! The client-side token bucket in front of every Calendar API request
//! (sinks-api.md A.10: Google counts each batch part as one request) lives
//! in `bridge-http` with its tests; the client builds it from
//! [`super::GoogleClientConfig::requests_per_second`].

pub use bridge_http::{Bucket as RateLimiter, TokenBucket};
