//! Google OAuth: refresh-token and JWT-bearer grants, expiry, revocation,
//! scopes.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge_emulators::google::{
    FaultKind, GOOGLE_TOKEN_URL, GoogleConfig, GoogleEmulator, JWT_BEARER, SCOPE_CALENDAR,
    TEST_SERVICE_ACCOUNT_EMAIL, TEST_SERVICE_ACCOUNT_KEY_ID, TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::google_common::*;

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A real RS256 JWT signed with the test service account's private key.
fn sign_jwt(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": TEST_SERVICE_ACCOUNT_KEY_ID});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = RsaPrivateKey::from_pkcs8_pem(TEST_SERVICE_ACCOUNT_PRIVATE_KEY_PEM).unwrap();
    let signature = SigningKey::<Sha256>::new(key).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn claims(emu: &GoogleEmulator, sub: Option<&str>) -> Value {
    let now = now_secs();
    let mut c = json!({
        "iss": TEST_SERVICE_ACCOUNT_EMAIL,
        "scope": SCOPE_CALENDAR,
        "aud": emu.token_url(),
        "iat": now,
        "exp": now + 3600,
    });
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    c
}

async fn token_request(emu: &GoogleEmulator, form: &[(&str, &str)]) -> Answer {
    send(client().post(emu.token_url()).form(form)).await
}

async fn jwt_grant(emu: &GoogleEmulator, assertion: &str) -> Answer {
    token_request(emu, &[("grant_type", JWT_BEARER), ("assertion", assertion)]).await
}

#[tokio::test]
async fn refresh_grant_issues_working_tokens_and_checks_the_client() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let cfg = emu.config();
    let a = token_request(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 3600);
    assert_eq!(a.body["scope"], SCOPE_CALENDAR);
    let access = a.body["access_token"].as_str().unwrap();
    assert!(access.starts_with("ya29."));
    let cal = Api::new(&emu, access).get("/calendars/primary").await;
    assert_eq!(cal.status, 200);
    assert_eq!(cal.body["id"], ALICE);

    // HTTP Basic client authentication works as well.
    let basic = send(
        client()
            .post(emu.token_url())
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
    )
    .await;
    assert_eq!(basic.status, 200);

    let wrong = token_request(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", "nope"),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "invalid_client");

    let missing = token_request(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
        ],
    )
    .await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.body["error_description"],
        "Missing required parameter: refresh_token"
    );

    let unsupported = token_request(&emu, &[("grant_type", "password")]).await;
    assert_eq!(unsupported.body["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn revoked_and_unknown_refresh_tokens_are_invalid_grant() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let cfg = emu.config();
    let refresh = emu.issue_refresh_token(ALICE, SCOPE_CALENDAR);
    let grant = |token: String| {
        let emu = emu.clone();
        let cfg = cfg.clone();
        async move {
            token_request(
                &emu,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &cfg.client_id),
                    ("client_secret", &cfg.client_secret),
                    ("refresh_token", &token),
                ],
            )
            .await
        }
    };
    let first = grant(refresh.clone()).await;
    let access = first.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(emu.revoke_refresh_tokens(), 1);
    let revoked = grant(refresh).await;
    assert_eq!(revoked.status, 400);
    assert_eq!(revoked.body["error"], "invalid_grant");
    assert_eq!(
        revoked.body["error_description"],
        "Token has been expired or revoked."
    );
    // Access tokens minted from a revoked grant die with it.
    let dead = Api::new(&emu, &access).get("/calendars/primary").await;
    assert_eq!(dead.status, 401);
    assert_eq!(dead.reason(), "authError");

    let unknown = grant("1//0not-a-token".into()).await;
    assert_eq!(unknown.body["error"], "invalid_grant");
    let calls = emu.calls();
    assert_eq!(calls.last().unwrap().path, "/token");
    assert_eq!(
        calls.last().unwrap().reason.as_deref(),
        Some("invalid_grant")
    );
}

#[tokio::test]
async fn jwt_bearer_grant_verifies_rs256_signatures() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);

    // As the service account itself.
    let a = jwt_grant(&emu, &sign_jwt(&claims(&emu, None))).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert!(a.body.get("refresh_token").is_none());
    let sa = Api::new(&emu, a.body["access_token"].as_str().unwrap());
    let cal = sa.get("/calendars/primary").await;
    assert_eq!(cal.body["id"], TEST_SERVICE_ACCOUNT_EMAIL);

    // Impersonating a user (domain-wide delegation), with Google's own
    // token URL as audience.
    let mut c = claims(&emu, Some(ALICE));
    c["aud"] = json!(GOOGLE_TOKEN_URL);
    let a = jwt_grant(&emu, &sign_jwt(&c)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let alice = Api::new(&emu, a.body["access_token"].as_str().unwrap());
    assert_eq!(alice.get("/calendars/primary").await.body["id"], ALICE);

    // A signature that does not match the signed bytes.
    let good = sign_jwt(&claims(&emu, None));
    let (input, sig) = good.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 0x01;
    let tampered = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    let bad = jwt_grant(&emu, &tampered).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"], "invalid_grant");
    assert_eq!(bad.body["error_description"], "Invalid JWT Signature.");

    // Claims swapped after signing.
    let (h, rest) = good.split_once('.').unwrap();
    let (_, s) = rest.split_once('.').unwrap();
    let mut evil = claims(&emu, Some(ALICE));
    evil["scope"] = json!("https://www.googleapis.com/auth/calendar.readonly");
    let swapped = format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode(evil.to_string()));
    assert_eq!(
        jwt_grant(&emu, &swapped).await.body["error_description"],
        "Invalid JWT Signature."
    );

    // Lifetime over one hour, wrong audience, unknown issuer, no scope.
    let mut long = claims(&emu, None);
    long["exp"] = json!(now_secs() + 7200);
    let a = jwt_grant(&emu, &sign_jwt(&long)).await;
    assert_eq!(a.body["error"], "invalid_grant");
    assert!(
        a.body["error_description"]
            .as_str()
            .unwrap()
            .contains("short-lived")
    );
    let mut aud = claims(&emu, None);
    aud["aud"] = json!("https://example.com/token");
    assert_eq!(
        jwt_grant(&emu, &sign_jwt(&aud)).await.body["error"],
        "invalid_grant"
    );
    let mut iss = claims(&emu, None);
    iss["iss"] = json!("someone@else.iam.gserviceaccount.com");
    assert_eq!(
        jwt_grant(&emu, &sign_jwt(&iss)).await.body["error"],
        "invalid_grant"
    );
    let mut scope = claims(&emu, None);
    scope["scope"] = json!("");
    assert_eq!(
        jwt_grant(&emu, &sign_jwt(&scope)).await.body["error"],
        "invalid_scope"
    );
    assert_eq!(
        jwt_grant(&emu, "not.a-jwt").await.body["error"],
        "invalid_grant"
    );
}

#[tokio::test]
async fn impersonation_needs_domain_wide_delegation() {
    let mut cfg = fast_config();
    cfg.service_accounts[0].domain_wide_delegation = false;
    let emu = start_with(cfg).await;
    emu.add_user(ALICE);
    let a = jwt_grant(&emu, &sign_jwt(&claims(&emu, Some(ALICE)))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error"], "unauthorized_client");
    // Without `sub` the account still acts as itself.
    assert_eq!(
        jwt_grant(&emu, &sign_jwt(&claims(&emu, None))).await.status,
        200
    );
}

#[tokio::test]
async fn access_tokens_expire_with_401_auth_error() {
    let emu = start_with(GoogleConfig {
        access_token_ttl: Duration::from_millis(800),
        ..fast_config()
    })
    .await;
    emu.add_user(ALICE);
    let api = Api::new(&emu, &emu.issue_access_token(ALICE, SCOPE_CALENDAR));
    assert_eq!(api.get("/calendars/primary").await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let a = api.get("/calendars/primary").await;
    assert_eq!(a.status, 401);
    assert_eq!(a.reason(), "authError");
    assert_eq!(a.body["error"]["errors"][0]["domain"], "global");
    assert_eq!(a.body["error"]["errors"][0]["location"], "Authorization");
    assert_eq!(a.body["error"]["status"], "UNAUTHENTICATED");
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let none = send(client().get(format!("{}/calendars/primary", emu.api_base()))).await;
    assert_eq!((none.status, none.reason()), (401, "required"));
    let junk = Api::new(&emu, "ya29.junk").get("/calendars/primary").await;
    assert_eq!((junk.status, junk.reason()), (401, "authError"));

    // Control: every token expires at once; a one-shot fault expires one.
    let fresh = Api::new(&emu, &emu.issue_access_token(ALICE, SCOPE_CALENDAR));
    emu.expire_access_tokens();
    assert_eq!(fresh.get("/calendars/primary").await.status, 401);
    let other = Api::new(&emu, &emu.issue_access_token(ALICE, SCOPE_CALENDAR));
    emu.fail_next("/calendars/primary", 1, FaultKind::TokenExpired);
    assert_eq!(other.get("/calendars/primary").await.status, 401);
    assert_eq!(
        other.get("/calendars/primary").await.status,
        401,
        "the token really expired"
    );
}

#[tokio::test]
async fn scopes_limit_what_a_token_may_do() {
    let (emu, _) = setup().await;
    let ro = Api::new(
        &emu,
        &emu.issue_access_token(ALICE, "https://www.googleapis.com/auth/calendar.readonly"),
    );
    assert_eq!(ro.get(&events("primary")).await.status, 200);
    let a = ro
        .post(
            &events("primary"),
            &timed("abcde", "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!((a.status, a.reason()), (403, "insufficientPermissions"));
    let ev = Api::new(
        &emu,
        &emu.issue_access_token(ALICE, "https://www.googleapis.com/auth/calendar.events"),
    );
    assert_eq!(
        ev.get("/calendars/primary").await.reason(),
        "insufficientPermissions"
    );
    let ok = ev
        .post(
            &events("primary"),
            &timed("abcde", "x", "2024-01-01T10:00:00Z", "2024-01-01T11:00:00Z"),
        )
        .await;
    assert_eq!(ok.status, 200);
}

// ----- authorization-code flow (installed app, PKCE) --------------------------------------

const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-0123456789-abcdefghijklmnop";

fn challenge(verifier: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

const REDIRECT: &str = "http://127.0.0.1:4711/oauth2/callback";

/// The consent request's query with the given overrides (`None` removes).
fn consent_query(
    emu: &GoogleEmulator,
    overrides: &[(&str, Option<&str>)],
) -> Vec<(String, String)> {
    let cfg = emu.config();
    let ch = challenge(VERIFIER);
    let mut q: Vec<(String, String)> = [
        ("client_id", cfg.client_id.as_str()),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", SCOPE_CALENDAR),
        ("state", "st-123"),
        ("code_challenge", ch.as_str()),
        ("code_challenge_method", "S256"),
        ("access_type", "offline"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in overrides {
        q.retain(|(n, _)| n != k);
        if let Some(v) = v {
            q.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    q
}

/// GET the consent endpoint; the status and the parsed `Location` query.
async fn consent(
    emu: &GoogleEmulator,
    overrides: &[(&str, Option<&str>)],
) -> (u16, Vec<(String, String)>, String) {
    let resp = no_redirects()
        .get(emu.auth_url())
        .query(&consent_query(emu, overrides))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let pairs = url::Url::parse(&location)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    (status, pairs, location)
}

fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn exchange(emu: &GoogleEmulator, code: &str, redirect: &str, verifier: &str) -> Answer {
    let cfg = emu.config();
    token_request(
        emu,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("code", code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
        ],
    )
    .await
}

#[tokio::test]
async fn authorization_code_flow_with_pkce_issues_a_refresh_token() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    let (status, pairs, location) = consent(&emu, &[("login_hint", Some(ALICE))]).await;
    assert_eq!(status, 302);
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(param(&pairs, "state"), Some("st-123"));
    let code = param(&pairs, "code").expect("code").to_owned();

    let a = exchange(&emu, &code, REDIRECT, VERIFIER).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["token_type"], "Bearer");
    assert_eq!(a.body["expires_in"], 3600);
    assert_eq!(a.body["scope"], SCOPE_CALENDAR);
    let access = a.body["access_token"].as_str().unwrap();
    let refresh = a.body["refresh_token"].as_str().unwrap().to_owned();
    let cal = Api::new(&emu, access).get("/calendars/primary").await;
    assert_eq!(cal.body["id"], ALICE);

    // The refresh token works with the refresh grant.
    let cfg = emu.config();
    let r = token_request(
        &emu,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &cfg.client_id),
            ("client_secret", &cfg.client_secret),
            ("refresh_token", &refresh),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Codes are single use.
    let again = exchange(&emu, &code, REDIRECT, VERIFIER).await;
    assert_eq!(
        (again.status, again.body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn authorization_code_checks_verifier_redirect_and_offline() {
    let emu = start_with(GoogleConfig {
        consent_user: Some(ALICE.into()),
        ..fast_config()
    })
    .await;
    emu.add_user(ALICE);
    let code = |pairs: &[(String, String)]| param(pairs, "code").expect("code").to_owned();

    // consent_user approves when there is no login_hint.
    let (_, pairs, _) = consent(&emu, &[]).await;
    let wrong_verifier = exchange(&emu, &code(&pairs), REDIRECT, "another-verifier").await;
    assert_eq!(wrong_verifier.body["error"], "invalid_grant");
    assert_eq!(
        wrong_verifier.body["error_description"],
        "Invalid code verifier."
    );

    let (_, pairs, _) = consent(&emu, &[]).await;
    let other_redirect = exchange(
        &emu,
        &code(&pairs),
        "http://127.0.0.1:9/elsewhere",
        VERIFIER,
    )
    .await;
    assert_eq!(other_redirect.body["error"], "invalid_grant");

    // Without access_type=offline: no refresh token.
    let (_, pairs, _) = consent(&emu, &[("access_type", None)]).await;
    let online = exchange(&emu, &code(&pairs), REDIRECT, VERIFIER).await;
    assert_eq!(online.status, 200);
    assert!(online.body.get("refresh_token").is_none());

    let unknown = exchange(&emu, "4/0nope", REDIRECT, VERIFIER).await;
    assert_eq!(unknown.body["error"], "invalid_grant");
}

#[tokio::test]
async fn consent_endpoint_refuses_bad_requests() {
    let emu = start_with(fast_config()).await;
    emu.add_user(ALICE);
    // No login_hint and no consent_user: access_denied, state kept.
    let (status, pairs, _) = consent(&emu, &[]).await;
    assert_eq!(status, 302);
    assert_eq!(param(&pairs, "error"), Some("access_denied"));
    assert_eq!(param(&pairs, "state"), Some("st-123"));
    let (_, pairs, _) = consent(&emu, &[("login_hint", Some("nobody@example.com"))]).await;
    assert_eq!(param(&pairs, "error"), Some("access_denied"));

    let hint = Some(ALICE);
    // PKCE is mandatory, S256 only.
    let (_, pairs, _) = consent(&emu, &[("login_hint", hint), ("code_challenge", None)]).await;
    assert_eq!(param(&pairs, "error"), Some("invalid_request"));
    let (_, pairs, _) = consent(
        &emu,
        &[
            ("login_hint", hint),
            ("code_challenge_method", Some("plain")),
        ],
    )
    .await;
    assert_eq!(param(&pairs, "error"), Some("invalid_request"));
    let (_, pairs, _) = consent(
        &emu,
        &[("login_hint", hint), ("response_type", Some("token"))],
    )
    .await;
    assert_eq!(param(&pairs, "error"), Some("unsupported_response_type"));

    // Loopback redirects only; unknown clients get no redirect at all.
    for bad in [
        "https://example.com/cb",
        "http://192.0.2.1:80/cb",
        "urn:ietf:wg:oauth:2.0:oob",
    ] {
        let (status, _, location) =
            consent(&emu, &[("login_hint", hint), ("redirect_uri", Some(bad))]).await;
        assert_eq!((status, location.as_str()), (400, ""), "{bad}");
    }
    let (status, _, _) = consent(
        &emu,
        &[
            ("login_hint", hint),
            ("redirect_uri", Some("http://localhost/cb")),
        ],
    )
    .await;
    assert_eq!(status, 302);
    let (status, _, location) = consent(
        &emu,
        &[("login_hint", hint), ("client_id", Some("other.apps"))],
    )
    .await;
    assert_eq!((status, location.as_str()), (401, ""));
}
