use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use bridge_feeds::{MissPolicy, router, router_with};
use bridge_sinks::feed::{self, FeedBook};
use http_body_util::BodyExt;
use tower::ServiceExt;

const TEXT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\nUID:a\r\nSUMMARY:Weekly sync with a long enough text to be worth compressing\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

fn book() -> (Arc<FeedBook>, String) {
    let book = FeedBook::new();
    let token = feed::new_token();
    book.set_token("team", "cal1", &token);
    book.set_body(
        "team",
        "cal1",
        Arc::new(feed::Body::new(TEXT, 1_772_413_200)),
    );
    (book, token)
}

async fn call(
    app: &axum::Router,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::builder().uri(uri)
}

#[tokio::test]
async fn full_get_then_conditional_gets() {
    let (book, token) = book();
    let app = router(book.clone());
    let uri = format!("/feeds/{token}.ics");
    let (status, h, body) = call(&app, get(&uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, TEXT.as_bytes());
    assert_eq!(h[header::CONTENT_TYPE], "text/calendar; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "private, no-cache");
    assert_eq!(h[header::VARY], "accept-encoding");
    assert_eq!(h[header::LAST_MODIFIED], "Mon, 02 Mar 2026 01:00:00 GMT");
    let digest = feed::Body::new(TEXT, 0).digest;
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{digest}\""));

    let (status, h, body) = call(
        &app,
        get(&uri)
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(h[header::ETAG], etag.as_str());
    assert_eq!(h[header::CACHE_CONTROL], "private, no-cache");

    let (status, ..) = call(
        &app,
        get(&uri)
            .header(header::IF_MODIFIED_SINCE, "Mon, 02 Mar 2026 01:00:00 GMT")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, ..) = call(
        &app,
        get(&uri)
            .header(header::IF_MODIFIED_SINCE, "Mon, 02 Mar 2026 00:59:59 GMT")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // If-None-Match wins over If-Modified-Since.
    let (status, ..) = call(
        &app,
        get(&uri)
            .header(header::IF_NONE_MATCH, "\"old\"")
            .header(header::IF_MODIFIED_SINCE, "Mon, 02 Mar 2026 01:00:00 GMT")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A new body: new ETag, the old one no longer matches.
    book.set_body(
        "team",
        "cal1",
        Arc::new(feed::Body::new(format!("{TEXT}X"), 1_772_500_000)),
    );
    let (status, h, _) = call(
        &app,
        get(&uri)
            .header(header::IF_NONE_MATCH, &etag)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(h[header::ETAG], etag.as_str());
}

#[tokio::test]
async fn gzip_and_brotli_have_their_own_etags() {
    let (book, token) = book();
    let app = router(book);
    let uri = format!("/feeds/{token}.ics");
    let digest = feed::Body::new(TEXT, 0).digest;
    for (accept, coding) in [("gzip", "gzip"), ("br", "br"), ("br;q=1, gzip;q=0.5", "br")] {
        let (status, h, body) = call(
            &app,
            get(&uri)
                .header(header::ACCEPT_ENCODING, accept)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_ENCODING], coding);
        assert_eq!(
            h[header::ETAG].to_str().unwrap(),
            format!("\"{digest}-{coding}\"")
        );
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        assert_ne!(body, TEXT.as_bytes());
        if coding == "gzip" {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut out)
                .unwrap();
            assert_eq!(out, TEXT);
        }
        // Its own tag revalidates.
        let (status, h, _) = call(
            &app,
            get(&uri)
                .header(header::ACCEPT_ENCODING, accept)
                .header(header::IF_NONE_MATCH, h[header::ETAG].clone())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(
            h[header::ETAG].to_str().unwrap(),
            format!("\"{digest}-{coding}\"")
        );
    }
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let (book, token) = book();
    let app = router(book);
    let (status, h, body) = call(
        &app,
        Request::head(format!("/feeds/{token}.ics"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(h[header::CONTENT_TYPE], "text/calendar; charset=utf-8");
    assert!(h.contains_key(header::ETAG));
    assert_eq!(h[header::CONTENT_LENGTH], TEXT.len().to_string().as_str());
}

#[tokio::test]
async fn unknown_rotated_and_unrendered_addresses() {
    let (book, token) = book();
    let app = router_with(
        book.clone(),
        MissPolicy {
            free: 1,
            base_delay: std::time::Duration::from_millis(1),
            ..MissPolicy::default()
        },
    );
    for uri in [
        "/feeds/nope.ics".to_owned(),
        format!("/feeds/{token}"),
        format!("/feeds/{}.ics", feed::new_token()),
    ] {
        let (status, ..) = call(&app, get(&uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
    }
    let new = feed::new_token();
    book.set_token("team", "cal1", &new);
    let (status, ..) = call(
        &app,
        get(&format!("/feeds/{token}.ics"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, ..) = call(
        &app,
        get(&format!("/feeds/{new}.ics"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let other = feed::new_token();
    book.set_token("team", "cal2", &other);
    let (status, h, _) = call(
        &app,
        get(&format!("/feeds/{other}.ics"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.contains_key(header::RETRY_AFTER));
    let (status, ..) = call(
        &app,
        Request::post(format!("/feeds/{new}.ics"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn head_answers_as_get_would_per_encoding() {
    let (book, token) = book();
    let app = router(book);
    let (status, h, body) = call(
        &app,
        Request::head(format!("/feeds/{token}.ics"))
            .header(header::ACCEPT_ENCODING, "gzip")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    let digest = feed::Body::new(TEXT, 0).digest;
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        h[header::ETAG].to_str().unwrap(),
        format!("\"{digest}-gzip\"")
    );
    assert_eq!(h[header::VARY], "accept-encoding");
}
