//! Throttling answers, server errors, the retry and wait budgets, timeouts.

use std::time::{Duration, Instant, SystemTime};

use bridge_http::{HttpClient, NoAuth};

use crate::server::{Get, Reply, Server, client, policy};

const EP: &str = "GET /thing";

async fn get(c: &HttpClient, url: &str) -> (Result<String, String>, Get) {
    let mut x = Get::new(url);
    let r = c.execute(EP, 1, &NoAuth::<String>::new(), &mut x).await;
    (r, x)
}

#[tokio::test]
async fn a_429_waits_its_retry_after_seconds() {
    let s = Server::start(vec![Reply::Status(429, vec![("retry-after", "1".into())])]).await;
    let c = client(policy(3));
    let started = Instant::now();
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(s.calls(), 2);
    assert_eq!(x.retries, vec![Some(Duration::from_secs(1))]);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_retry_after_date_is_waited_until() {
    let at = SystemTime::now() + Duration::from_secs(3);
    let s = Server::start(vec![Reply::Status(
        503,
        vec![("retry-after", httpdate::fmt_http_date(at))],
    )])
    .await;
    let c = client(policy(3));
    let started = Instant::now();
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap(), "ok");
    // The date has whole seconds: the wait is between 2 and 3 s.
    let wait = x.retries[0].unwrap();
    assert!(
        wait > Duration::from_secs(1) && wait <= Duration::from_secs(3),
        "{wait:?}"
    );
    assert!(started.elapsed() >= wait);
}

#[tokio::test]
async fn a_reset_header_comes_before_retry_after() {
    let s = Server::start(vec![Reply::Status(
        429,
        vec![("x-reset", "1".into()), ("retry-after", "30".into())],
    )])
    .await;
    let c = client(policy(3));
    let started = Instant::now();
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(x.retries, vec![Some(Duration::from_secs(1))]);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed_and_are_counted() {
    let s = Server::start(vec![Reply::Status(500, vec![]), Reply::Status(503, vec![])]).await;
    let c = client(policy(3));
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(s.calls(), 3);
    assert_eq!(x.retries.len(), 2);
    assert!(
        x.retries
            .iter()
            .all(|w| w.unwrap() <= Duration::from_millis(5))
    );
    let stats = c.stats().snapshot();
    for status in [500, 503, 200] {
        assert_eq!(stats[&(EP.to_owned(), status)], 1, "{stats:?}");
    }
    assert_eq!(c.stats().total("/thing"), 3);
}

#[tokio::test]
async fn retries_run_out_and_the_last_error_is_returned() {
    let s = Server::start(vec![Reply::Status(502, vec![]); 5]).await;
    let c = client(policy(2));
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap_err(), "502 status 502");
    assert_eq!(s.calls(), 3, "one call and two retries");
    assert_eq!(x.retries.len(), 2);
}

#[tokio::test]
async fn final_answers_are_not_retried() {
    let s = Server::start(vec![Reply::Status(404, vec![])]).await;
    let c = client(policy(5));
    let (r, _) = get(&c, &s.url).await;
    assert_eq!(r.unwrap_err(), "404 status 404");
    assert_eq!(s.calls(), 1);
}

#[tokio::test]
async fn the_total_wait_is_bounded() {
    let s = Server::start(vec![
        Reply::Status(429, vec![("retry-after", "1".into())]);
        5
    ])
    .await;
    let mut p = policy(10);
    p.max_total_wait = Duration::from_millis(1500);
    let c = client(p);
    let (r, x) = get(&c, &s.url).await;
    assert!(r.unwrap_err().starts_with("429"));
    // 1 s fits the budget; another second would not.
    assert_eq!(x.retries, vec![Some(Duration::from_secs(1))]);
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn a_timeout_is_retried_and_counted_as_no_answer() {
    let s = Server::start(vec![Reply::Slow(Duration::from_secs(5))]).await;
    let c = HttpClient::builder("test")
        .retry(policy(2))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (r, x) = get(&c, &s.url).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(x.retries.len(), 1);
    let stats = c.stats().snapshot();
    assert_eq!(stats[&(EP.to_owned(), 0)], 1, "{stats:?}");
    assert_eq!(stats[&(EP.to_owned(), 200)], 1, "{stats:?}");
}

#[tokio::test]
async fn a_timeout_that_lasts_is_reported_as_one() {
    let s = Server::start(vec![Reply::Slow(Duration::from_secs(5)); 2]).await;
    let c = HttpClient::builder("test")
        .retry(policy(1))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let (r, _) = get(&c, &s.url).await;
    assert!(r.unwrap_err().starts_with("timeout: "));
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_failure() {
    // Bind and drop: nothing listens on the port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = client(policy(1));
    let (r, x) = get(&c, &format!("http://127.0.0.1:{port}/")).await;
    assert!(r.unwrap_err().starts_with("transport: "));
    assert_eq!(x.retries.len(), 1);
    assert_eq!(c.stats().snapshot()[&(EP.to_owned(), 0)], 2);
}
