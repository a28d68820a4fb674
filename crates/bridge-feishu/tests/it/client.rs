//! The HTTP client against the Feishu emulator over real loopback HTTP:
//! paging, deltas, expired cursors, throttling, token expiry, retries, user
//! OAuth with PKCE and refresh-token rotation.

use std::sync::Arc;
use std::time::Duration;

use bridge_core::feishu::{
    Attendee, AttendeeType, Event, EventStatus, RsvpStatus, TimeInfo, UnixSeconds,
};
use bridge_emulators::feishu::{FaultKind, FeishuConfig, FeishuEmulator};
use bridge_feishu::FeishuError;
use bridge_feishu::auth::{
    FileTokenStore, OauthApp, Secret, TokenStore, UserAuth, UserTokens, receive_redirect,
};
use bridge_feishu::client::{ClientConfig, FeishuClient, Identity, ListEventsQuery};
use bridge_feishu::ratelimit::RateLimits;

async fn emulator() -> FeishuEmulator {
    FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        ..FeishuConfig::default()
    })
    .await
    .unwrap()
}

fn config(emu: &FeishuEmulator) -> ClientConfig {
    let c = emu.config();
    let mut cfg = ClientConfig::new(&emu.base_url(), &c.app_id, Secret::new(c.app_secret));
    cfg.backoff_base = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    cfg
}

fn client(emu: &FeishuEmulator) -> FeishuClient {
    FeishuClient::new(config(emu)).unwrap()
}

fn app(emu: &FeishuEmulator) -> OauthApp {
    let c = emu.config();
    OauthApp {
        base_url: emu.base_url(),
        accounts_url: emu.base_url(),
        app_id: c.app_id,
        app_secret: Secret::new(c.app_secret),
    }
}

fn timed(at: i64) -> TimeInfo {
    TimeInfo {
        timestamp: Some(UnixSeconds(at)),
        timezone: Some("Asia/Shanghai".into()),
        date: None,
    }
}

fn simple_event(summary: &str, at: i64) -> Event {
    Event {
        summary: Some(summary.into()),
        start_time: Some(timed(at)),
        end_time: Some(timed(at + 1800)),
        ..Event::default()
    }
}

fn temp_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fb-client-it-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("tokens.json")
}

#[tokio::test]
async fn full_listing_pages_of_1000_then_a_delta() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.bulk_load(&cal, bridge_core::sample::events(2500, 1, 1_760_000_000));
    let c = client(&emu);
    emu.reset_calls();

    let full = c.list_events(Identity::Tenant, &cal, None).await.unwrap();
    assert_eq!(full.items.len(), 2500);
    assert_eq!(full.pages, 3, "ceil(2500 / 1000) pages");
    let token = full
        .sync_token
        .clone()
        .expect("sync_token on the last page");
    let listing_calls: Vec<_> = emu
        .calls()
        .into_iter()
        .filter(|r| r.path.ends_with("/events"))
        .collect();
    assert_eq!(listing_calls.len(), 3);
    assert!(
        listing_calls
            .iter()
            .all(|r| r.query.contains("page_size=1000"))
    );

    // A no-change delta is one call with nothing in it.
    let none = c
        .list_events(Identity::Tenant, &cal, Some(&token))
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert_eq!(none.pages, 1);

    let first = full.items[0].event_id.clone().unwrap();
    let second = full
        .items
        .iter()
        .filter_map(|e| e.event_id.clone())
        .find(|id| id.ends_with("_0") && *id != first)
        .unwrap();
    emu.update_event(&cal, &first, |e| e.summary = Some("renamed".into()));
    emu.delete_event(&cal, &second);
    let created = emu.create_event(&cal, simple_event("new", 1_760_100_000));

    let delta = c
        .list_events(Identity::Tenant, &cal, none.sync_token.as_deref())
        .await
        .unwrap();
    let by_id = |id: &str| {
        delta
            .items
            .iter()
            .find(|e| e.event_id.as_deref() == Some(id))
    };
    assert_eq!(by_id(&first).unwrap().summary.as_deref(), Some("renamed"));
    assert_eq!(by_id(&second).unwrap().status, Some(EventStatus::Cancelled));
    assert!(by_id(&created).is_some());
    assert!(delta.sync_token.is_some());
    emu.shutdown().await;
}

#[tokio::test]
async fn an_expired_sync_token_is_a_typed_error() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, simple_event("a", 1_760_000_000));
    let c = client(&emu);
    let full = c.list_events(Identity::Tenant, &cal, None).await.unwrap();
    emu.expire_sync_tokens();
    let err = c
        .list_events(Identity::Tenant, &cal, full.sync_token.as_deref())
        .await
        .unwrap_err();
    assert!(matches!(err, FeishuError::CursorExpired { .. }), "{err}");
    assert_eq!(err.code(), Some(190_008));
    assert!(!err.is_transient());
    // The caller's fallback, a full listing, works.
    assert_eq!(
        c.list_events(Identity::Tenant, &cal, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn throttling_waits_the_reset_time_and_does_not_storm() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, simple_event("a", 1_760_000_000));
    let c = client(&emu);
    emu.fail_next("/events", 2, FaultKind::Status429 { reset_secs: 1 });
    emu.reset_calls();
    let started = std::time::Instant::now();
    let l = c.list_events(Identity::Tenant, &cal, None).await.unwrap();
    assert_eq!(l.items.len(), 1);
    // Two throttled answers, one success: three calls, no more.
    let statuses: Vec<u16> = emu
        .calls()
        .into_iter()
        .filter(|r| r.path.ends_with("/events"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 429, 200]);
    // The client honoured x-ogw-ratelimit-reset (1 s) both times.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let stats = c.stats().snapshot();
    let ep = "GET /open-apis/calendar/v4/calendars/:calendar_id/events".to_owned();
    assert_eq!(stats.get(&(ep.clone(), 429)), Some(&2));
    assert_eq!(stats.get(&(ep, 200)), Some(&1));
    emu.shutdown().await;
}

#[tokio::test]
async fn the_proactive_limiter_keeps_under_the_server_limit() {
    let emu = FeishuEmulator::start(FeishuConfig {
        rate_limit: Some((5, 1000)),
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let cal = emu.create_calendar("Team");
    let mut cfg = config(&emu);
    // One call per second below the server's 5: the server counts calls
    // when they arrive, and on a loaded machine calls the client spaced out
    // can reach it bunched (this test flaked at 5/5 under load).
    cfg.rate_limits = RateLimits {
        per_second: 4,
        per_minute: 1000,
    };
    let c = Arc::new(FeishuClient::new(cfg).unwrap());
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let c = c.clone();
            let cal = cal.clone();
            tokio::spawn(async move { c.get_calendar(Identity::Tenant, &cal).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let throttled = emu.calls().iter().filter(|r| r.status == 429).count();
    assert_eq!(
        throttled, 0,
        "the client must not exceed 5 calls per second"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_tenant_token_expiring_mid_listing_is_replaced_once() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.bulk_load(&cal, bridge_core::sample::events(1500, 2, 1_760_000_000));
    let c = client(&emu);
    let q = ListEventsQuery {
        page_size: Some(1000),
        ..ListEventsQuery::default()
    };
    let p1 = c
        .list_events_page(Identity::Tenant, &cal, &q)
        .await
        .unwrap();
    assert!(p1.has_more);
    emu.expire_tenant_tokens();
    let q2 = ListEventsQuery {
        page_token: p1.page_token.clone(),
        ..q
    };
    let p2 = c
        .list_events_page(Identity::Tenant, &cal, &q2)
        .await
        .unwrap();
    assert_eq!(p1.items.len() + p2.items.len(), 1500);
    let codes: Vec<Option<i64>> = emu
        .calls()
        .into_iter()
        .filter(|r| r.path.ends_with("/events"))
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, vec![Some(0), Some(99_991_663), Some(0)]);
    assert_eq!(emu.call_count("tenant_access_token"), 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn server_errors_and_truncated_pages_are_retried_then_reported() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, simple_event("a", 1_760_000_000));
    let c = client(&emu);
    emu.fail_next("/events", 2, FaultKind::Status5xx);
    assert_eq!(
        c.list_events(Identity::Tenant, &cal, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    emu.fail_next("/events", 1, FaultKind::Truncated);
    assert_eq!(
        c.list_events(Identity::Tenant, &cal, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // Past the retry budget, the error surfaces with its code and log id.
    emu.fail_next("/events", 10, FaultKind::Status5xx);
    let err = c
        .list_events(Identity::Tenant, &cal, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(190_003), "{err}");
    assert!(err.is_transient());
    assert!(err.log_id().is_some(), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn attendees_are_read_in_pages_of_100() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let id = emu.create_event(&cal, simple_event("big meeting", 1_760_000_000));
    for i in 0..250 {
        emu.add_attendee(
            &cal,
            &id,
            Attendee {
                kind: Some(AttendeeType::ThirdParty),
                third_party_email: Some(format!("guest{i}@example.com")),
                rsvp_status: Some(RsvpStatus::NeedsAction),
                ..Attendee::default()
            },
        );
    }
    let c = client(&emu);
    emu.reset_calls();
    let all = c.list_attendees(Identity::Tenant, &cal, &id).await.unwrap();
    assert!(all.len() >= 250, "{}", all.len());
    assert_eq!(emu.call_count("/attendees"), all.len().div_ceil(100));
    let ev = c
        .get_event(Identity::Tenant, &cal, &id, true)
        .await
        .unwrap();
    assert_eq!(ev.summary.as_deref(), Some("big meeting"));
    emu.shutdown().await;
}

#[tokio::test]
async fn instances_of_a_series() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let start = 1_760_000_400;
    let mut master = simple_event("weekly", start);
    master.recurrence = Some("FREQ=WEEKLY;COUNT=10".into());
    let id = emu.create_event(&cal, master);
    let c = client(&emu);
    let inst = c
        .instances(Identity::Tenant, &cal, &id, start - 60, start + 90 * 86_400)
        .await
        .unwrap();
    assert_eq!(inst.len(), 10);
    emu.shutdown().await;
}

#[tokio::test]
async fn authorization_code_with_pkce_through_a_loopback_redirect() {
    let emu = emulator().await;
    let user = emu.add_user("Li Lei");
    emu.set_auto_login_user(&user);
    let app = app(&emu);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let auth = app.authorize(
        &format!("http://127.0.0.1:{port}/callback"),
        &["calendar:calendar:readonly"],
    );
    let state = auth.state.clone();
    let waiter =
        tokio::spawn(
            async move { receive_redirect(listener, &state, Duration::from_secs(10)).await },
        );
    // The "browser": the authorize page redirects to our listener.
    let page = reqwest::get(&auth.url).await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    let code = waiter.await.unwrap().unwrap();
    let http = reqwest::Client::new();
    let tokens = app.exchange_code(&http, &auth, &code).await.unwrap();
    assert!(
        !tokens.refresh_token.is_empty(),
        "offline_access gives a refresh token"
    );
    // The code is single-use.
    let again = app.exchange_code(&http, &auth, &code).await.unwrap_err();
    assert!(matches!(again.code(), Some(20_003 | 20_065)), "{again}");
    emu.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_dead_one_asks_for_auth_again() {
    let emu = emulator().await;
    let user = emu.add_user("Han Meimei");
    let cal = emu.primary_calendar(&user);
    let (access, refresh) = emu.issue_user_token(&user, "calendar:calendar offline_access");
    let refresh = refresh.expect("refresh token");
    let path = temp_file("rotation");
    let store = Arc::new(FileTokenStore::new(&path));
    store
        .save(&UserTokens {
            access_token: Secret::new(access),
            // Already expired: the first call refreshes.
            access_expires_at: 0,
            refresh_token: Secret::new(refresh.clone()),
            refresh_expires_at: 0,
            scope: String::new(),
        })
        .await
        .unwrap();
    let user_auth = Arc::new(UserAuth::new(app(&emu), store.clone()));
    let c = client(&emu).with_user(user_auth);
    c.subscribe_events(&cal).await.unwrap();

    // The new tokens were persisted, with a new refresh token.
    let saved = store.load().await.unwrap().unwrap();
    assert_ne!(saved.refresh_token.expose(), refresh);
    // The old refresh token is dead (single use).
    let http = reqwest::Client::new();
    let reuse = app(&emu)
        .refresh(&http, &Secret::new(refresh))
        .await
        .unwrap_err();
    assert!(
        matches!(reuse, FeishuError::ReauthRequired { code: 20_073, .. }),
        "{reuse}"
    );

    // An expired access token is refreshed transparently on 99991677.
    emu.expire_user_tokens();
    c.unsubscribe_events(&cal).await.unwrap();

    // Revoked: the error says what to do.
    emu.revoke_refresh_tokens();
    emu.expire_user_tokens();
    let err = c.subscribe_events(&cal).await.unwrap_err();
    assert!(matches!(err, FeishuError::ReauthRequired { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("run `feishu-bridge auth feishu` again"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    emu.shutdown().await;
}

#[tokio::test]
async fn subscriptions_need_the_user_identity() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let c = client(&emu);
    assert!(matches!(
        c.subscribe_events(&cal).await.unwrap_err(),
        FeishuError::NotAuthorized
    ));
    // And Feishu itself refuses a tenant token there.
    let err = c
        .call::<serde_json::Value>(
            Identity::Tenant,
            reqwest::Method::POST,
            "POST /open-apis/calendar/v4/calendars/:calendar_id/events/subscription",
            &format!(
                "/open-apis/calendar/v4/calendars/{}/events/subscription",
                url::form_urlencoded::byte_serialize(cal.as_bytes()).collect::<String>()
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert!(err.code().is_some(), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let mut cfg = config(&emu);
    cfg.request_timeout = Duration::from_millis(300);
    let c = FeishuClient::new(cfg).unwrap();
    // Warm the token so that only the listing is slow.
    c.get_calendar(Identity::Tenant, &cal).await.unwrap();
    emu.fail_next("/events", 1, FaultKind::Slow(Duration::from_secs(2)));
    let l = c.list_events(Identity::Tenant, &cal, None).await.unwrap();
    assert!(l.items.is_empty());
    let stats = c.stats().snapshot();
    let ep = "GET /open-apis/calendar/v4/calendars/:calendar_id/events".to_owned();
    assert_eq!(
        stats.get(&(ep.clone(), 0)),
        Some(&1),
        "one transport failure: {stats:?}"
    );
    assert_eq!(stats.get(&(ep, 200)), Some(&1));
    emu.shutdown().await;
}

/// Issue #10 item 9: every id is exactly one percent-encoded path segment,
/// and a dot segment (`.`, `..`, encoded or not) never reaches another
/// endpoint: it is refused before any request.
#[tokio::test]
async fn ids_are_one_path_segment_and_dot_segments_reach_no_other_endpoint() {
    let emu = emulator().await;
    let user = emu.add_user("Dot");
    let cal = emu.primary_calendar(&user);
    let c = client(&emu);
    for id in [".", "..", "%2e", "%2E%2e", ".%2E", ""] {
        let err = c.list_events(Identity::Tenant, id, None).await.unwrap_err();
        assert!(matches!(err, FeishuError::Config(_)), "{id:?}: {err}");
        let err = c.get_calendar(Identity::Tenant, id).await.unwrap_err();
        assert!(matches!(err, FeishuError::Config(_)), "{id:?}: {err}");
        let err = c
            .get_event(Identity::Tenant, &cal, id, false)
            .await
            .unwrap_err();
        assert!(matches!(err, FeishuError::Config(_)), "{id:?}: {err}");
        let err = c
            .instances(Identity::Tenant, &cal, id, 0, 86_400)
            .await
            .unwrap_err();
        assert!(matches!(err, FeishuError::Config(_)), "{id:?}: {err}");
    }
    let api: Vec<_> = emu
        .calls()
        .into_iter()
        .filter(|call| call.path.contains("/calendar/v4"))
        .map(|call| call.path)
        .collect();
    assert!(api.is_empty(), "no calendar request was sent: {api:?}");

    // Reserved characters stay inside their segment.
    let odd = "a/b?c#d%e f+g";
    let _ = c.get_event(Identity::Tenant, &cal, odd, false).await;
    let paths: Vec<_> = emu.calls().into_iter().map(|call| call.path).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/events/a%2Fb%3Fc%23d%25e%20f%2Bg")),
        "{paths:?}"
    );
}
