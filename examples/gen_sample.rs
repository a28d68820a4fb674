//! Writes N deterministic sample Feishu events as a list-events response.
//!
//! `cargo run --release --example gen_sample -- 10000 > /tmp/sample.json`

#![allow(clippy::print_stdout)]

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let events = bridge_core::sample::events(n, 42, 1_735_689_600);
    let page = serde_json::json!({
        "code": 0, "msg": "success",
        "data": {"has_more": false, "items": events}
    });
    println!("{page}");
}
