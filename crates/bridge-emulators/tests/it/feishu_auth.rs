//! auth/v3 tokens, token errors on API calls, OAuth v2 (code + PKCE, refresh rotation).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge_emulators::feishu::FeishuConfig;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::common::*;

#[tokio::test]
async fn tenant_token_is_reused_and_bad_secret_is_rejected() {
    let emu = start().await;
    let url = format!(
        "{}/open-apis/auth/v3/tenant_access_token/internal",
        emu.base_url()
    );
    let creds = json!({"app_id": "cli_test_app", "app_secret": "test_app_secret"});
    let a = send(client().post(&url).json(&creds)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["msg"], "ok");
    assert!(a.body.get("data").is_none(), "fields are top level");
    let t1 = a.body["tenant_access_token"].as_str().unwrap().to_owned();
    assert!(t1.starts_with("t-"));
    assert_eq!(a.body["expire"], 7200);
    let b = send(client().post(&url).json(&creds)).await;
    assert_eq!(b.body["tenant_access_token"], t1.as_str());
    assert!(b.body["expire"].as_u64().unwrap() <= 7200);

    let bad = send(
        client()
            .post(&url)
            .json(&json!({"app_id": "cli_test_app", "app_secret": "nope"})),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.code(), 99991543);

    let app = send(
        client()
            .post(format!(
                "{}/open-apis/auth/v3/app_access_token/internal",
                emu.base_url()
            ))
            .json(&creds),
    )
    .await;
    assert_eq!(app.code(), 0);
    assert!(
        app.body["app_access_token"]
            .as_str()
            .unwrap()
            .starts_with("a-")
    );
    assert_eq!(app.body["tenant_access_token"], t1.as_str());
}

#[tokio::test]
async fn short_lived_tenant_tokens_are_reissued_and_both_stay_valid() {
    let emu = start_with(FeishuConfig {
        tenant_token_ttl: Duration::from_secs(600),
        ..fast_config()
    })
    .await;
    let t1 = tenant_token(&emu).await;
    let t2 = tenant_token(&emu).await;
    assert_ne!(t1, t2, "less than 30 min left: a new token");
    for t in [&t1, &t2] {
        assert_eq!(
            get(&emu, t, "/open-apis/calendar/v4/calendars")
                .await
                .code(),
            0
        );
    }
}

#[tokio::test]
async fn token_errors_on_api_calls() {
    let emu = start().await;
    let path = "/open-apis/calendar/v4/calendars";
    let missing = send(client().get(format!("{}{path}", emu.base_url()))).await;
    assert_eq!((missing.status, missing.code()), (400, 99991661));
    assert!(missing.headers.contains_key("x-tt-logid"));

    let unknown = get(&emu, "t-unknown", path).await;
    assert_eq!(unknown.code(), 99991663);
    let malformed = get(&emu, "garbage", path).await;
    assert_eq!(malformed.code(), 99991671);

    let t = tenant_token(&emu).await;
    assert_eq!(get(&emu, &t, path).await.code(), 0);
    emu.expire_tenant_tokens();
    let expired = get(&emu, &t, path).await;
    assert_eq!((expired.status, expired.code()), (400, 99991663));
    let fresh = tenant_token(&emu).await;
    assert_ne!(fresh, t);
    assert_eq!(get(&emu, &fresh, path).await.code(), 0);

    let user = emu.add_user("Ann");
    let (ut, _) = emu.issue_user_token(&user, "calendar:calendar:readonly");
    assert_eq!(get(&emu, &ut, path).await.code(), 0);
    emu.expire_user_tokens();
    assert_eq!(get(&emu, &ut, path).await.code(), 99991677);
    assert_eq!(
        get(&emu, "eyJnever.issued.token", path).await.code(),
        99991668
    );

    let (no_cal, _) = emu.issue_user_token(&user, "contact:user.base:readonly");
    assert_eq!(get(&emu, &no_cal, path).await.code(), 99991679);
}

#[tokio::test]
async fn user_only_endpoints_reject_tenant_tokens() {
    let emu = start().await;
    let t = tenant_token(&emu).await;
    let cal = emu.create_calendar("Team");
    let a = post(
        &emu,
        &t,
        &format!("/open-apis/calendar/v4/calendars/{cal}/events/subscription"),
        json!({}),
    )
    .await;
    assert_eq!((a.status, a.code()), (400, 99991663));
    let b = post(
        &emu,
        &t,
        "/open-apis/calendar/v4/calendars/subscription",
        json!({}),
    )
    .await;
    assert_eq!(b.code(), 99991663);

    let user = emu.add_user("Ann");
    let (ut, _) = emu.issue_user_token(&user, "calendar:calendar");
    let ok = post(
        &emu,
        &ut,
        &format!("/open-apis/calendar/v4/calendars/{cal}/events/subscription"),
        json!({}),
    )
    .await;
    assert_eq!(ok.body, json!({"code": 0, "msg": "success", "data": {}}));
}

struct Flow {
    code: String,
    state: String,
}

async fn authorize(base: &str, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(format!("{base}/open-apis/authen/v1/authorize"))
        .query(query)
        .send()
        .await
        .unwrap()
}

async fn login(base: &str, scope: &str, challenge: Option<(&str, &str)>) -> Flow {
    let mut q = vec![
        ("client_id", "cli_test_app"),
        ("response_type", "code"),
        ("redirect_uri", "http://127.0.0.1:9/callback?x=1"),
        ("scope", scope),
        ("state", "st8"),
    ];
    if let Some((c, m)) = challenge {
        q.push(("code_challenge", c));
        q.push(("code_challenge_method", m));
    }
    let resp = authorize(base, &q).await;
    assert_eq!(resp.status(), 302);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let url = url::Url::parse(&loc).unwrap();
    assert_eq!(url.path(), "/callback");
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    assert_eq!(get("x"), "1", "existing query kept");
    Flow {
        code: get("code"),
        state: get("state"),
    }
}

fn token_url(base: &str) -> String {
    format!("{base}/open-apis/authen/v2/oauth/token")
}

#[tokio::test]
async fn oauth_code_flow_with_pkce_and_refresh_rotation() {
    let emu = start().await;
    let ann = emu.add_user("Ann");
    let base = emu.base_url();
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-long-enough-verifier";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let flow = login(
        &base,
        "calendar:calendar:readonly offline_access",
        Some((&challenge, "S256")),
    )
    .await;
    assert_eq!(flow.state, "st8");
    assert!(flow.code.len() >= 64);
    assert!(
        flow.code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );

    // Wrong verifier: 20049, code stays usable.
    let bad = send(client().post(token_url(&base)).json(&json!({
        "grant_type": "authorization_code", "client_id": "cli_test_app",
        "client_secret": "test_app_secret", "code": flow.code,
        "redirect_uri": "http://127.0.0.1:9/callback?x=1", "code_verifier": "wrong"
    })))
    .await;
    assert_eq!((bad.status, bad.code()), (400, 20049));
    assert_eq!(bad.body["error"], "invalid_grant");

    // Form-encoded exchange works.
    let ok = send(client().post(token_url(&base)).form(&[
        ("grant_type", "authorization_code"),
        ("client_id", "cli_test_app"),
        ("client_secret", "test_app_secret"),
        ("code", flow.code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9/callback?x=1"),
        ("code_verifier", verifier),
    ]))
    .await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.code(), 0);
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 7200);
    assert_eq!(ok.body["refresh_token_expires_in"], 604800);
    assert_eq!(
        ok.body["scope"],
        "calendar:calendar:readonly offline_access"
    );
    let access = ok.body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = ok.body["refresh_token"].as_str().unwrap().to_owned();
    let me = get(&emu, &access, "/open-apis/authen/v1/user_info").await;
    assert_eq!(me.body["data"]["open_id"], ann.as_str());

    // Code reuse.
    let again = send(client().post(token_url(&base)).json(&json!({
        "grant_type": "authorization_code", "client_id": "cli_test_app",
        "client_secret": "test_app_secret", "code": flow.code, "code_verifier": verifier
    })))
    .await;
    assert_eq!(again.code(), 20065);

    // Refresh rotates; the old one is dead at once.
    let refresh = |rt: String| {
        let base = base.clone();
        async move {
            send(client().post(token_url(&base)).json(&json!({
                "grant_type": "refresh_token", "client_id": "cli_test_app",
                "client_secret": "test_app_secret", "refresh_token": rt
            })))
            .await
        }
    };
    let r2 = refresh(refresh1.clone()).await;
    assert_eq!(r2.code(), 0, "{:?}", r2.body);
    let refresh2 = r2.body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh1);
    assert_ne!(r2.body["access_token"].as_str().unwrap(), access);
    let reuse = refresh(refresh1).await;
    assert_eq!((reuse.status, reuse.code()), (400, 20073));
    // The previous access token still works during the grace minute.
    assert_eq!(
        get(&emu, &access, "/open-apis/calendar/v4/calendars")
            .await
            .code(),
        0
    );

    emu.revoke_refresh_tokens();
    assert_eq!(refresh(refresh2).await.code(), 20064);
    assert_eq!(refresh("eyJunknown".into()).await.code(), 20026);
}

#[tokio::test]
async fn oauth_failures() {
    let emu = start_with(FeishuConfig {
        auth_code_ttl: Duration::from_millis(100),
        refresh_token_ttl: Duration::from_millis(100),
        ..fast_config()
    })
    .await;
    emu.add_user("Ann");
    let base = emu.base_url();
    let exchange = |code: String, extra: serde_json::Value| {
        let base = base.clone();
        async move {
            let mut body = json!({
                "grant_type": "authorization_code", "client_id": "cli_test_app",
                "client_secret": "test_app_secret", "code": code
            });
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            send(client().post(token_url(&base)).json(&body)).await
        }
    };

    // No offline_access: no refresh token.
    let f = login(&base, "calendar:calendar:readonly", None).await;
    let a = exchange(f.code, json!({})).await;
    assert_eq!(a.code(), 0);
    assert!(a.body.get("refresh_token").is_none());

    // redirect_uri mismatch.
    let f = login(&base, "offline_access", None).await;
    let a = exchange(
        f.code.clone(),
        json!({"redirect_uri": "http://evil.example/cb"}),
    )
    .await;
    assert_eq!(a.code(), 20071);
    // Plain PKCE is not involved; secret wrong.
    let a = exchange(f.code.clone(), json!({"client_secret": "nope"})).await;
    assert_eq!(a.code(), 20002);
    let a = exchange(f.code.clone(), json!({"grant_type": "password"})).await;
    assert_eq!(a.code(), 20036);
    // Scope narrowing to something not granted.
    let a = exchange(f.code.clone(), json!({"scope": "calendar:calendar"})).await;
    assert_eq!(a.code(), 20068);
    // Expired code.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(exchange(f.code, json!({})).await.code(), 20004);
    assert_eq!(exchange("nope".into(), json!({})).await.code(), 20003);

    // Expired refresh token.
    let f = login(&base, "calendar:calendar offline_access", None).await;
    let a = exchange(f.code, json!({})).await;
    let rt = a.body["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = send(client().post(token_url(&base)).json(&json!({
        "grant_type": "refresh_token", "client_id": "cli_test_app",
        "client_secret": "test_app_secret", "refresh_token": rt
    })))
    .await;
    assert_eq!(r.code(), 20037);

    // Missing parameter.
    let r = send(
        client()
            .post(token_url(&base))
            .json(&json!({"grant_type": "refresh_token"})),
    )
    .await;
    assert_eq!(r.code(), 20001);

    // Authorize page: unknown auto-login user -> access_denied redirect.
    emu.set_auto_login_user("ou_nobody");
    let resp = authorize(
        &base,
        &[
            ("client_id", "cli_test_app"),
            ("response_type", "code"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("state", "s"),
        ],
    )
    .await;
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        loc.contains("error=access_denied") && loc.contains("state=s"),
        "{loc}"
    );
    // Unknown client.
    let resp = authorize(
        &base,
        &[
            ("client_id", "cli_other"),
            ("response_type", "code"),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 400);
}
