//! Tokens: refresh-token grant and its cache, 401 renewal, revocation,
//! service accounts (with and without a subject), the installed-app flow.

use bridge_emulators::google::{
    FaultKind, GoogleConfig, GoogleEmulator, SCOPE_CALENDAR, TEST_SERVICE_ACCOUNT_EMAIL,
};
use bridge_sinks::google::{
    ApiRequest, CALENDAR_SCOPE, Credentials, DEFAULT_TOKEN_URL, GoogleClient, GoogleError,
    InstalledApp, Method, Secret, ServiceAccountKey, calendar_path,
};

use crate::google_common::*;

fn primary() -> ApiRequest {
    ApiRequest::new(Method::Get, calendar_path("primary"))
}

#[tokio::test]
async fn refresh_grant_token_is_cached_and_renewed_after_401() {
    let (emu, client) = setup().await;
    for _ in 0..10 {
        let cal = client.execute(primary()).await.unwrap();
        assert_eq!(cal.body["id"], ALICE);
        assert_eq!(cal.status, 200);
    }
    let s = client.stats();
    assert_eq!((s.token_calls, s.api_calls, s.retries), (1, 10, 0));
    assert_eq!(emu.call_count("/token"), 1);

    // Every access token expires: one 401, one refresh, then success.
    emu.expire_access_tokens();
    let cal = client.execute(primary()).await.unwrap();
    assert_eq!(cal.body["id"], ALICE);
    let s = client.stats();
    assert_eq!((s.token_calls, s.api_calls, s.retries), (2, 12, 1));

    // The same through a one-shot fault.
    emu.fail_next("/calendars/primary", 1, FaultKind::TokenExpired);
    client.execute(primary()).await.unwrap();
    assert_eq!(client.stats().token_calls, 3);

    client.reset_stats();
    assert_eq!(client.stats(), Default::default());
    let shown = format!("{client:?}");
    assert!(!shown.contains(&emu.config().client_secret), "{shown}");
}

#[tokio::test]
async fn revoked_refresh_token_is_revoked_error() {
    let (emu, client) = setup().await;
    client.execute(primary()).await.unwrap();
    assert_eq!(emu.revoke_refresh_tokens(), 1);
    let err = client.execute(primary()).await.unwrap_err();
    assert!(matches!(err, GoogleError::Revoked(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("token revoked or expired: run `feishu-bridge auth google` ("),
        "{text}"
    );
    assert!(text.contains("invalid_grant"), "{text}");
    // The batch path stops with the same error.
    let err = client
        .execute_batch(vec![insert("primary", 1)])
        .await
        .unwrap_err();
    assert!(matches!(err, GoogleError::Revoked(_)), "{err:?}");
}

#[tokio::test]
async fn wrong_client_secret_is_a_configuration_error() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let creds = Credentials::RefreshToken {
        client_id: emu.config().client_id,
        client_secret: Some(Secret::new("wrong")),
        refresh_token: Secret::new(refresh),
    };
    let client = GoogleClient::new(client_config(&emu), creds).unwrap();
    let err = client.execute(primary()).await.unwrap_err();
    assert!(matches!(err, GoogleError::Config(_)), "{err:?}");
}

fn key(emu: &GoogleEmulator) -> ServiceAccountKey {
    ServiceAccountKey::from_json(&emu.service_account_key_json().to_string()).unwrap()
}

#[tokio::test]
async fn service_account_jwt_with_and_without_subject() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let k = key(&emu);
    assert_eq!(k.client_email, TEST_SERVICE_ACCOUNT_EMAIL);
    assert_eq!(k.token_uri.as_deref(), Some(emu.token_url().as_str()));
    assert!(!format!("{k:?}").contains("PRIVATE KEY"));

    let own = GoogleClient::new(
        client_config(&emu),
        Credentials::ServiceAccount {
            key: k.clone(),
            subject: None,
        },
    )
    .unwrap();
    let cal = own.execute(primary()).await.unwrap();
    assert_eq!(cal.body["id"], TEST_SERVICE_ACCOUNT_EMAIL);
    own.execute(primary()).await.unwrap();
    assert_eq!(own.stats().token_calls, 1);

    // Impersonating Alice; the client keeps Google's token URL, so the key
    // file's token_uri (the emulator) is used.
    let cfg = bridge_sinks::google::GoogleClientConfig {
        token_url: DEFAULT_TOKEN_URL.into(),
        ..client_config(&emu)
    };
    let alice = GoogleClient::new(
        cfg,
        Credentials::ServiceAccount {
            key: k.clone(),
            subject: Some(ALICE.into()),
        },
    )
    .unwrap();
    assert_eq!(alice.execute(primary()).await.unwrap().body["id"], ALICE);

    // Expiry: a new JWT is minted.
    emu.expire_access_tokens();
    alice.execute(primary()).await.unwrap();
    assert_eq!(alice.stats().token_calls, 2);

    // An unknown subject is invalid_grant: Revoked.
    let nobody = GoogleClient::new(
        client_config(&emu),
        Credentials::ServiceAccount {
            key: k,
            subject: Some("nobody@example.com".into()),
        },
    )
    .unwrap();
    let err = nobody.execute(primary()).await.unwrap_err();
    assert!(matches!(err, GoogleError::Revoked(_)), "{err:?}");
}

#[tokio::test]
async fn service_account_without_delegation_cannot_impersonate() {
    let mut cfg = fast_config();
    cfg.service_accounts[0].domain_wide_delegation = false;
    let emu = start_with(cfg).await;
    emu.add_user(ALICE);
    let client = GoogleClient::new(
        client_config(&emu),
        Credentials::ServiceAccount {
            key: key(&emu),
            subject: Some(ALICE.into()),
        },
    )
    .unwrap();
    let err = client.execute(primary()).await.unwrap_err();
    assert!(matches!(err, GoogleError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn installed_app_flow_yields_a_working_refresh_token() {
    let emu = start_with(GoogleConfig {
        consent_user: Some(ALICE.into()),
        ..fast_config()
    })
    .await;
    emu.add_user(ALICE);
    let cfg = emu.config();
    let app = InstalledApp {
        client_id: cfg.client_id.clone(),
        client_secret: Some(Secret::new(cfg.client_secret.clone())),
        auth_url: emu.auth_url(),
        token_url: emu.token_url(),
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let auth = app.authorize("http://127.0.0.1:8765/oauth2/callback", &[CALENDAR_SCOPE]);
    assert!(auth.url.starts_with(&emu.auth_url()));

    let resp = http.get(&auth.url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&auth.redirect_uri), "{location}");
    let back: Vec<(String, String)> = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let get = |k: &str| {
        back.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("state"), auth.state);
    let code = get("code");

    let refresh = app.exchange_code(&http, &auth, &code).await.unwrap();
    assert!(!refresh.expose().is_empty());
    assert_eq!(format!("{refresh:?}"), "[redacted]");

    let client = GoogleClient::new(
        client_config(&emu),
        refresh_credentials(&emu, refresh.expose()),
    )
    .unwrap();
    assert_eq!(client.execute(primary()).await.unwrap().body["id"], ALICE);

    // A code is good once.
    let err = app.exchange_code(&http, &auth, &code).await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert_eq!(err.reason(), Some("invalid_grant"));

    // A second authorization's code with the first one's verifier fails.
    let other = app.authorize("http://127.0.0.1:8765/oauth2/callback", &[CALENDAR_SCOPE]);
    let resp = http.get(&other.url).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let err = app.exchange_code(&http, &auth, &code).await.unwrap_err();
    assert_eq!(err.reason(), Some("invalid_grant"), "{err:?}");
}
