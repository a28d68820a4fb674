//! The token hook: a refused token is renewed exactly once per call.

use bridge_http::NoAuth;

use crate::server::{Get, Reply, Server, Tokens, client, policy};

#[tokio::test]
async fn a_401_renews_the_token_once_and_retries() {
    let s = Server::start(vec![Reply::Requires("fresh")]).await;
    let c = client(policy(3));
    let tokens = Tokens::new("stale");
    let mut x = Get::new(&s.url);
    let r = c.execute("GET /x", 1, &tokens, &mut x).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(tokens.renewals(), 1);
    assert_eq!(
        s.authorizations(),
        vec![Some("Bearer stale".into()), Some("Bearer fresh".into())]
    );
    assert_eq!(x.retries, vec![None], "a renewal is a retry without a wait");
}

#[tokio::test]
async fn a_second_401_is_final() {
    let s = Server::start(vec![Reply::Requires("never")]).await;
    let c = client(policy(5));
    let tokens = Tokens::new("stale");
    let mut x = Get::new(&s.url);
    let r = c.execute("GET /x", 1, &tokens, &mut x).await;
    assert_eq!(r.unwrap_err(), "401 who are you");
    assert_eq!(tokens.renewals(), 1, "renewed exactly once");
    assert_eq!(s.calls(), 2);
}

#[tokio::test]
async fn renewal_does_not_spend_a_retry() {
    // 500 twice, then 401: with two retries the call still succeeds.
    let s = Server::start(vec![
        Reply::Status(500, vec![]),
        Reply::Status(500, vec![]),
        Reply::Requires("fresh"),
    ])
    .await;
    let c = client(policy(2));
    let tokens = Tokens::new("stale");
    let mut x = Get::new(&s.url);
    let r = c.execute("GET /x", 1, &tokens, &mut x).await;
    assert_eq!(r.unwrap(), "ok");
    assert_eq!(s.calls(), 4);
    assert_eq!(tokens.renewals(), 1);
}

#[tokio::test]
async fn without_auth_no_authorization_header_is_sent() {
    let s = Server::start(vec![]).await;
    let c = client(policy(0));
    let mut x = Get::new(&s.url);
    c.execute("GET /x", 1, &NoAuth::<String>::new(), &mut x)
        .await
        .unwrap();
    assert_eq!(s.authorizations(), vec![None]);
}
