//! bridge-http against a small axum server on 127.0.0.1:0: throttling
//! answers, server errors, timeouts, token renewal, counters and limits.

mod limits;
mod retries;
mod server;
mod tokens;
