//! One HTTP client layer for every service the bridge talks to. It knows no
//! service: each client says what an answer means (an [`Exchange`]) and
//! where its tokens come from (an [`Auth`]); this crate does the rest:
//!
//! - retries with jittered exponential backoff, honouring `Retry-After`
//!   (delta-seconds or HTTP-date) and reset headers, within a bound on the
//!   total wait ([`retry`]);
//! - one token renewal after a refusal ([`Verdict::Renew`]);
//! - client-side rate limits: sliding windows per endpoint, or a token
//!   bucket ([`limit`]);
//! - call counters by service, endpoint and status ([`stats`]);
//! - request and connect timeouts;
//! - the [`Secret`] type of every credential.

pub mod client;
pub mod limit;
pub mod retry;
pub mod secret;
pub mod stats;

pub use client::{
    Answer, Auth, Exchange, HttpClient, HttpClientBuilder, HttpError, NoAuth, Retrying,
    TransportError, Verdict, error_chain,
};
pub use limit::{Bucket, Limiter, RateLimits, SlidingWindows, TokenBucket, Window};
pub use retry::{Backoff, Jitter, RetryPolicy, ServerWait};
pub use secret::Secret;
pub use stats::{CallKey, CallStats, ServiceStats};
