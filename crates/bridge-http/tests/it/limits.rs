//! Client-side limits on paused time, and counters shared by services.

use std::sync::Arc;
use std::time::Duration;

use bridge_http::{
    Bucket, CallKey, CallStats, HttpClient, Limiter, NoAuth, RateLimits, SlidingWindows,
};
use tokio::time::Instant;

use crate::server::{Get, Server, policy};

#[tokio::test(start_paused = true)]
async fn sliding_windows_space_calls_per_endpoint() {
    let l = Limiter::Windows(SlidingWindows::new(RateLimits {
        per_second: 2,
        per_minute: 0,
    }));
    let t0 = Instant::now();
    let mut granted = Vec::new();
    for _ in 0..6 {
        l.acquire("GET /a", 1).await;
        granted.push(t0.elapsed());
    }
    // Two per second: the 3rd and 4th after one second, the 5th and 6th
    // after two.
    assert!(granted[1] < Duration::from_secs(1), "{granted:?}");
    assert!(granted[2] >= Duration::from_secs(1), "{granted:?}");
    assert!(granted[4] >= Duration::from_secs(2), "{granted:?}");
    // Another endpoint has its own windows.
    let before = Instant::now();
    l.acquire("GET /b", 2).await;
    assert_eq!(before.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn sliding_windows_cap_the_minute() {
    let w = SlidingWindows::new(RateLimits {
        per_second: 0,
        per_minute: 3,
    });
    let t0 = Instant::now();
    for _ in 0..4 {
        w.acquire("GET /a").await;
    }
    assert!(t0.elapsed() >= Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_bucket_takes_one_token_per_permit() {
    let l = Limiter::Bucket(Bucket::new(5.0));
    let t0 = Instant::now();
    l.acquire("GET /a", 5).await;
    assert_eq!(t0.elapsed(), Duration::ZERO, "one second of burst");
    // 10 more tokens at 5/s: two seconds, whatever the endpoint.
    l.acquire("POST /batch", 10).await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1999) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    let unlimited = Limiter::Bucket(Bucket::new(0.0));
    let t1 = Instant::now();
    unlimited.acquire("GET /a", 1000).await;
    assert_eq!(t1.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn clients_of_two_services_count_into_one_registry() {
    let s = Server::start(vec![]).await;
    let all = Arc::new(CallStats::default());
    let a = HttpClient::builder("alpha")
        .retry(policy(0))
        .stats(all.clone())
        .build()
        .unwrap();
    let b = HttpClient::builder("beta")
        .retry(policy(0))
        .stats(all.clone())
        .limiter(Limiter::Windows(SlidingWindows::new(RateLimits::default())))
        .build()
        .unwrap();
    for c in [&a, &a, &b] {
        c.execute("GET /x", 1, &NoAuth::<String>::new(), &mut Get::new(&s.url))
            .await
            .unwrap();
    }
    let key = |service: &str| CallKey {
        service: service.into(),
        endpoint: "GET /x".into(),
        status: 200,
    };
    let snap = all.snapshot();
    assert_eq!((snap[&key("alpha")], snap[&key("beta")]), (2, 1));
    assert_eq!(a.stats().total(""), 2);
    assert_eq!(b.stats().snapshot().len(), 1);
}
