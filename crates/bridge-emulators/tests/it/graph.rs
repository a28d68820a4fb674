//! The Graph emulator over loopback HTTP: identity platform tokens, events,
//! recurrence, transactionId, etags, extended properties, `$batch`,
//! throttling, mailbox access and faults.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge_emulators::graph::{
    FaultKind, GraphConfig, GraphEmulator, MailboxAccess, TEST_CERT_PEM, TEST_CERT_PRIVATE_KEY_PEM,
    TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const UPN: &str = "alice@contoso.example";
const TAG: &str = "String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn emu_with(cfg: GraphConfig) -> GraphEmulator {
    let e = GraphEmulator::start_with(cfg).await.unwrap();
    e.add_mailbox(UPN, MailboxAccess::Enabled);
    e
}

async fn emu() -> GraphEmulator {
    emu_with(GraphConfig::default()).await
}

async fn token_form(e: &GraphEmulator, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http().post(e.token_url()).form(form).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn token(e: &GraphEmulator) -> String {
    let (s, v) = secret_grant(
        e,
        TEST_CLIENT_ID,
        TEST_CLIENT_SECRET,
        "https://graph.microsoft.com/.default",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

/// A request to `{graph}{path}` with the immutable-id preference.
async fn call(
    e: &GraphEmulator,
    t: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    if_match: Option<&str>,
) -> (u16, Value) {
    let mut rb = http()
        .request(method, format!("{}{path}", e.graph_url()))
        .bearer_auth(t)
        .header("Prefer", "IdType=\"ImmutableId\"");
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    if let Some(m) = if_match {
        rb = rb.header("If-Match", m);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The request builders of these tests: one caller with one token.
struct Api<'a> {
    e: &'a GraphEmulator,
    t: String,
}

impl<'a> Api<'a> {
    fn new(e: &'a GraphEmulator, t: &str) -> Self {
        Self { e, t: t.to_owned() }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        call(self.e, &self.t, reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        call(
            self.e,
            &self.t,
            reqwest::Method::POST,
            path,
            Some(body),
            None,
        )
        .await
    }

    async fn patch(&self, path: &str, body: Value, if_match: Option<&str>) -> (u16, Value) {
        call(
            self.e,
            &self.t,
            reqwest::Method::PATCH,
            path,
            Some(body),
            if_match,
        )
        .await
    }

    /// A GET with query parameters (encoded here).
    async fn get_with(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let r = http()
            .get(format!("{}{path}", self.e.graph_url()))
            .bearer_auth(&self.t)
            .query(query)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        call(self.e, &self.t, reqwest::Method::DELETE, path, None, None).await
    }
}

/// `/users/{UPN}/events/{id}`, the id percent-encoded.
fn event_path(id: &str) -> String {
    format!("/users/{UPN}/events/{}", enc(id))
}

/// A client-credentials token request with a secret.
async fn secret_grant(
    e: &GraphEmulator,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> (u16, Value) {
    token_form(
        e,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
            ("scope", scope),
        ],
    )
    .await
}

/// The code the authorization endpoint redirects with for a PKCE
/// `challenge` (consent given at once), checking `state` comes back.
async fn consent_code(e: &GraphEmulator, state: &str, challenge: &str) -> String {
    let url = format!(
        "{}?client_id={TEST_CLIENT_ID}&response_type=code&redirect_uri=http://127.0.0.1:9/cb&scope=offline_access&state={state}&code_challenge={challenge}&code_challenge_method=S256",
        e.authorize_url()
    );
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let q: std::collections::HashMap<String, String> = loc.query_pairs().into_owned().collect();
    assert_eq!(q["state"], state);
    q["code"].clone()
}

/// The code of a consent redeemed with `verifier`.
async fn redeem_code(e: &GraphEmulator, code: &str, verifier: &str) -> (u16, Value) {
    token_form(
        e,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", TEST_CLIENT_ID),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:9/cb"),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(e: &GraphEmulator, refresh_token: &str) -> (u16, Value) {
    token_form(
        e,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", TEST_CLIENT_ID),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

fn enc(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn single(subject: &str) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "text", "content": "hello"},
        "start": {"dateTime": "2026-03-10T09:00:00", "timeZone": "China Standard Time"},
        "end": {"dateTime": "2026-03-10T10:00:00", "timeZone": "China Standard Time"},
        "showAs": "busy",
        "singleValueExtendedProperties": [{"id": TAG, "value": format!("{subject}_0")}],
    })
}

fn assertion(aud: &str, x5t_of: &str) -> String {
    let der: String = x5t_of.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(der)
        .unwrap();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t#S256": URL_SAFE_NO_PAD.encode(Sha256::digest(&der))});
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"aud": aud, "iss": TEST_CLIENT_ID, "sub": TEST_CLIENT_ID, "jti": "j1", "nbf": now, "exp": now + 600});
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = SigningKey::<Sha256>::new(
        RsaPrivateKey::from_pkcs8_pem(TEST_CERT_PRIVATE_KEY_PEM.trim()).unwrap(),
    );
    let sig = key.sign(signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

#[tokio::test]
async fn tokens_for_secrets_and_certificates_and_aad_errors() {
    let e = emu().await;
    token(&e).await;
    let scope = "https://graph.microsoft.com/.default";
    let (s, v) = secret_grant(&e, TEST_CLIENT_ID, "wrong", scope).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000215")
    );
    let (s, v) = secret_grant(
        &e,
        TEST_CLIENT_ID,
        TEST_CLIENT_SECRET,
        "Calendars.ReadWrite",
    )
    .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, v) = secret_grant(&e, "nobody", "x", scope).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")));
    let good = assertion(&e.token_url(), TEST_CERT_PEM);
    let form = |a: &str| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", TEST_CLIENT_ID.to_owned()),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion", a.to_owned()),
            ("scope", scope.to_owned()),
        ]
    };
    let r = http()
        .post(e.token_url())
        .form(&form(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bad = assertion("https://elsewhere/token", TEST_CERT_PEM);
    let r = http()
        .post(e.token_url())
        .form(&form(&bad))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // An expired secret.
    let mut cfg = GraphConfig::default();
    cfg.apps[0].secret_expired = true;
    let e2 = emu_with(cfg).await;
    let (s, v) = secret_grant(&e2, TEST_CLIENT_ID, TEST_CLIENT_SECRET, scope).await;
    assert_eq!(s, 401);
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS7000222")
    );
    // An API call without a valid token.
    let (s, v) = Api::new(&e, "forged")
        .get(&format!("/users/{UPN}/calendars"))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );
}

#[tokio::test]
async fn authorization_code_with_pkce_gives_a_refresh_token_for_one_mailbox() {
    let e = emu_with(GraphConfig {
        consent_user: Some(UPN.into()),
        ..GraphConfig::default()
    })
    .await;
    e.add_mailbox("bob@contoso.example", MailboxAccess::Enabled);
    let verifier = "v".repeat(50);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let code = consent_code(&e, "s1", &challenge).await;
    let (s, _) = redeem_code(&e, &code, "wrong").await;
    assert_eq!(s, 400);
    // Codes are single use: ask again.
    let code = consent_code(&e, "s2", &challenge).await;
    let (s, v) = redeem_code(&e, &code, &verifier).await;
    assert_eq!(s, 200, "{v}");
    let first = v["refresh_token"].as_str().unwrap().to_owned();
    let (s, v) = refresh(&e, &first).await;
    assert_eq!(s, 200);
    // Rotated: a new refresh token, and the redeemed one is refused.
    let second = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let (s, r) = refresh(&e, &first).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = refresh(&e, &second).await;
    assert_eq!(s, 200);
    let t = v["access_token"].as_str().unwrap().to_owned();
    let api = Api::new(&e, &t);
    let (s, _) = api.get(&format!("/users/{UPN}/calendar")).await;
    assert_eq!(s, 200);
    let (s, v) = api.get("/users/bob@contoso.example/calendar").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("ErrorAccessDenied"))
    );
}

#[tokio::test]
async fn events_validate_like_graph_and_etags_guard_writes() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    let path = format!("/users/{UPN}/calendar/events");
    let (s, v) = api.post(&path, single("a")).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(id.contains('/') || id.contains('+'), "{id}");
    let etag = v["@odata.etag"].as_str().unwrap().to_owned();
    assert_eq!(v["type"], "singleInstance");
    assert_eq!(v["start"]["timeZone"], "UTC");
    assert_eq!(v["start"]["dateTime"], "2026-03-10T01:00:00.0000000");
    let ev = event_path(&id);
    let (s, v) = api.patch(&ev, json!({"subject": "b"}), Some(&etag)).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api.patch(&ev, json!({"subject": "c"}), Some(&etag)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("ErrorIrresolvableConflict"))
    );
    let (s, v) = api.patch(&ev, json!({"isAllday": true}), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("RequestBodyRead"))
    );
    let (s, _) = api.patch(&ev, json!({"showAs": "Busy"}), None).await;
    assert_eq!(s, 400);
    let mut iana = single("z");
    iana["start"]["timeZone"] = json!("Asia/Shanghai");
    let (s, v) = api.post(&path, iana).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("TimeZoneNotSupportedException"))
    );
    let mut all_day = single("d");
    all_day["isAllDay"] = json!(true);
    let (s, v) = api.post(&path, all_day).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ErrorPropertyValidationFailure"))
    );
    // Unencoded ids do not route to the event.
    let (s, _) = api.get(&format!("/users/{UPN}/events/{id}")).await;
    assert_ne!(s, 200);
    let (s, _) = api.delete(&ev).await;
    assert_eq!(s, 204);
    let (s, v) = api.delete(&ev).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ErrorItemNotFound"))
    );
}

#[tokio::test]
async fn transaction_ids_deduplicate_creates() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    let path = format!("/users/{UPN}/calendar/events");
    let mut b = single("t");
    b["transactionId"] = json!("8f1e0b52-1d7a-4c55-9a33-0b6b4c3f0001");
    let (s1, v1) = api.post(&path, b.clone()).await;
    let (s2, v2) = api.post(&path, b.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1["id"], v2["id"]);
    assert_eq!(e.events(UPN).unwrap().len(), 1);
    b["subject"] = json!("other");
    let (s, v) = api.post(&path, b).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ErrorDuplicateTransactionId"))
    );
    let ev = format!("/users/{UPN}/events/{}", enc(v1["id"].as_str().unwrap()));
    let (s, v) = api.patch(&ev, json!({"transactionId": "x"}), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("ErrorInvalidRequest"))
    );
}

#[tokio::test]
async fn series_expand_in_their_windows_zone_with_exceptions_and_cancellations() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    let body = json!({
        "subject": "weekly",
        "start": {"dateTime": "2026-03-02T09:00:00", "timeZone": "Pacific Standard Time"},
        "end": {"dateTime": "2026-03-02T09:30:00", "timeZone": "Pacific Standard Time"},
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
            "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 4, "recurrenceTimeZone": "Pacific Standard Time"}
        }
    });
    let (s, m) = api.post(&format!("/users/{UPN}/events"), body).await;
    assert_eq!(s, 201, "{m}");
    let mid = m["id"].as_str().unwrap().to_owned();
    let inst = format!(
        "/users/{UPN}/events/{}/instances?startDateTime=2026-03-01T00:00:00Z&endDateTime=2026-04-01T00:00:00Z",
        enc(&mid)
    );
    let (_, v) = api.get(&inst).await;
    let items = v["value"].as_array().unwrap().clone();
    let starts: Vec<&str> = items
        .iter()
        .map(|i| i["originalStart"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-03-02T17:00:00Z",
            "2026-03-09T16:00:00Z",
            "2026-03-16T16:00:00Z",
            "2026-03-23T16:00:00Z"
        ]
    );
    assert!(
        items
            .iter()
            .all(|i| i["seriesMasterId"] == mid.as_str() && i["type"] == "occurrence")
    );
    let second = items[1]["id"].as_str().unwrap().to_owned();
    let third = items[2]["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .patch(&event_path(&second), json!({"subject": "moved"}), None)
        .await;
    assert_eq!((s, v["type"].as_str()), (200, Some("exception")));
    let (s, _) = api.delete(&event_path(&third)).await;
    assert_eq!(s, 204);
    let (_, v) = api.get(&inst).await;
    let kinds: Vec<(&str, &str)> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["type"].as_str().unwrap(), i["subject"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("occurrence", "weekly"),
            ("exception", "moved"),
            ("occurrence", "weekly")
        ]
    );
    let (_, v) = api
        .get(&format!(
            "/users/{UPN}/events/{}?$select=cancelledOccurrences",
            enc(&mid)
        ))
        .await;
    assert_eq!(
        v["cancelledOccurrences"],
        json!([format!("OID.{mid}.2026-03-16")])
    );
    // The exceptions of a master read by id, whatever `$select` keeps.
    let (s, v) = api
        .get(&format!(
            "{}?$select=id,cancelledOccurrences&$expand=exceptionOccurrences",
            event_path(&mid)
        ))
        .await;
    assert_eq!(s, 200, "{v}");
    let x = &v["exceptionOccurrences"];
    assert_eq!(x.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        (&x[0]["subject"], &x[0]["type"], &x[0]["originalStart"]),
        (
            &json!("moved"),
            &json!("exception"),
            &json!("2026-03-09T16:00:00Z")
        )
    );
    assert_eq!(x[0]["seriesMasterId"], mid.as_str());
    assert!(x[0]["@odata.etag"].is_string());
    // Only there: a listing refuses it.
    let (s, _) = api
        .get(&format!("/users/{UPN}/events?$expand=exceptionOccurrences"))
        .await;
    assert_eq!(s, 400);
    let (_, v) = api.get(&format!("/users/{UPN}/calendarView?startDateTime=2026-03-01T00:00:00Z&endDateTime=2026-04-01T00:00:00Z")).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 3);
    // A new rule drops the exceptions.
    let (s, _) = api
        .patch(
            &event_path(&mid),
            json!({"recurrence": {
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2026-03-02", "numberOfOccurrences": 2}
            }}),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = api.get(&inst).await;
    assert!(
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] == "occurrence" && i["subject"] == "weekly")
    );
}

#[tokio::test]
async fn extended_properties_filter_and_expand() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    for s in ["a", "b"] {
        api.post(&format!("/users/{UPN}/events"), single(s)).await;
    }
    let filter =
        format!("singleValueExtendedProperties/Any(ep: ep/id eq '{TAG}' and ep/value eq 'b_0')");
    let events = format!("/users/{UPN}/events");
    let expand = format!("singleValueExtendedProperties($filter=id eq '{TAG}')");
    let (_, v) = api
        .get_with(&events, &[("$filter", &filter), ("$expand", &expand)])
        .await;
    let items = v["value"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["singleValueExtendedProperties"],
        json!([{"id": TAG, "value": "b_0"}])
    );
    let (s, _) = api
        .get_with(&events, &[("$filter", "subject eq 'a'")])
        .await;
    assert_eq!(s, 400);
    // Not expanded: not shown.
    let (_, v) = api.get(&events).await;
    assert!(v["value"][0].get("singleValueExtendedProperties").is_none());
}

#[tokio::test]
async fn batches_correlate_by_id_honour_depends_on_and_cap_at_twenty() {
    let e = emu().await;
    let t = token(&e).await;
    let batch = |reqs: Vec<Value>| {
        let t = t.clone();
        let url = format!("{}/$batch", e.graph_url());
        async move {
            let r = http()
                .post(url)
                .bearer_auth(t)
                .json(&json!({"requests": reqs}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let post = |id: &str, s: &str| json!({"id": id, "method": "POST", "url": format!("/users/{UPN}/events"), "headers": {"Content-Type": "application/json"}, "body": single(s)});
    let (s, v) = batch((0..21).map(|i| post(&i.to_string(), "x")).collect()).await;
    assert_eq!(s, 400, "{v}");
    let mut bad = post("2", "y");
    bad["body"]["showAs"] = json!("Busy");
    let mut dep = post("3", "z");
    dep["dependsOn"] = json!(["2"]);
    let (s, v) = batch(vec![post("1", "w"), bad, dep]).await;
    assert_eq!(s, 200);
    let by_id: std::collections::HashMap<&str, u64> = v["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!((by_id["1"], by_id["2"], by_id["3"]), (201, 400, 424));
    assert_ne!(v["responses"][0]["id"], "1", "answered in request order");
    let mut no_ct = post("1", "q");
    no_ct["headers"] = json!({});
    let (_, v) = batch(vec![no_ct]).await;
    assert_eq!(v["responses"][0]["status"], 400);
    assert!(e.calls().iter().any(|c| c.batch_part));
}

#[tokio::test]
async fn a_fifth_concurrent_request_to_a_mailbox_is_throttled() {
    let e = emu_with(GraphConfig {
        latency: Duration::from_millis(300),
        ..GraphConfig::default()
    })
    .await;
    let t = token(&e).await;
    let url = format!("{}/users/{UPN}/calendars", e.graph_url());
    let futs = (0..6).map(|_| {
        let (u, t) = (url.clone(), t.clone());
        async move {
            let r = http().get(u).bearer_auth(t).send().await.unwrap();
            (
                r.status().as_u16(),
                r.headers().get("retry-after").is_some(),
            )
        }
    });
    let res = futures_util::future::join_all(futs).await;
    assert_eq!(res.iter().filter(|(s, _)| *s == 200).count(), 4, "{res:?}");
    assert!(res.iter().filter(|(s, _)| *s == 429).all(|(_, ra)| *ra));
    assert_eq!(e.peak_concurrency(), 4);
}

#[tokio::test]
async fn mailbox_access_errors_and_faults() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    e.add_mailbox("onprem@contoso.example", MailboxAccess::NoRest);
    e.add_mailbox("denied@contoso.example", MailboxAccess::Denied);
    let (s, v) = api.get("/users/onprem@contoso.example/calendar").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("MailboxNotEnabledForRESTAPI"))
    );
    let (s, v) = api.get("/users/denied@contoso.example/calendar").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("ErrorAccessDenied"))
    );
    e.fail_next(
        "/calendar",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 3,
        },
    );
    let r = http()
        .get(format!("{}/users/{UPN}/calendar", e.graph_url()))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "3");
    e.fail_next("/calendar", 1, FaultKind::TokenExpired);
    let (s, _) = api.get(&format!("/users/{UPN}/calendar")).await;
    assert_eq!(s, 401);
    let (s, _) = api.get(&format!("/users/{UPN}/calendar")).await;
    assert_eq!(s, 401, "an expired token stays expired");
    let t2 = token(&e).await;
    let api2 = Api::new(&e, &t2);
    let (s, _) = api2.get(&format!("/users/{UPN}/calendar")).await;
    assert_eq!(s, 200);
    // A user's edit through the control API makes a new etag.
    let (_, ev) = api2
        .post(&format!("/users/{UPN}/events"), single("u"))
        .await;
    let edited = e
        .user_edit(
            UPN,
            ev["id"].as_str().unwrap(),
            json!({"subject": "by hand"}),
        )
        .unwrap();
    assert_ne!(edited["@odata.etag"], ev["@odata.etag"]);
}

/// Every page of a delta round from `url` (absolute): items and the
/// deltaLink that ends it.
async fn delta_round(t: &str, url: &str, page: usize) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut next = url.to_owned();
    loop {
        let r = http()
            .get(&next)
            .bearer_auth(t)
            .header(
                "Prefer",
                format!("IdType=\"ImmutableId\", odata.maxpagesize={page}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let got = v["value"].as_array().unwrap();
        assert!(got.len() <= page, "{v}");
        items.extend(got.iter().cloned());
        if let Some(d) = v["@odata.deltaLink"].as_str() {
            return (items, d.to_owned());
        }
        next = v["@odata.nextLink"]
            .as_str()
            .expect("a nextLink")
            .to_owned();
    }
}

#[tokio::test]
async fn calendar_view_delta_pages_then_answers_changes_and_removals() {
    let e = emu().await;
    let t = token(&e).await;
    let api = Api::new(&e, &t);
    let mut ids = Vec::new();
    for s in ["a", "b", "c", "d", "e"] {
        let (_, v) = api.post(&format!("/users/{UPN}/events"), single(s)).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    // Outside the window: never reported.
    let mut later = single("later");
    later["start"]["dateTime"] = json!("2026-06-10T09:00:00");
    later["end"]["dateTime"] = json!("2026-06-10T10:00:00");
    api.post(&format!("/users/{UPN}/events"), later).await;
    let first = format!(
        "{}/users/{UPN}/calendarView/delta?startDateTime=2026-03-01T00:00:00Z&endDateTime=2026-04-01T00:00:00Z",
        e.graph_url()
    );
    let (items, link) = delta_round(&t, &first, 2).await;
    assert_eq!(items.len(), 5, "{items:#?}");
    // Nothing changed: an empty round.
    let (items, link) = delta_round(&t, &link, 2).await;
    assert!(items.is_empty(), "{items:#?}");
    // A user's edit, a delete and a new event.
    e.user_edit(UPN, &ids[1], json!({"subject": "edited"}))
        .unwrap();
    e.user_delete(UPN, &ids[2]).unwrap();
    api.post(&format!("/users/{UPN}/events"), single("f")).await;
    let (items, link) = delta_round(&t, &link, 2).await;
    let removed: Vec<&str> = items
        .iter()
        .filter(|v| v["@removed"]["reason"] == "deleted")
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(removed, [ids[2].as_str()]);
    let mut subjects: Vec<&str> = items.iter().filter_map(|v| v["subject"].as_str()).collect();
    subjects.sort();
    assert_eq!(subjects, ["edited", "f"]);
    // Evicted tokens answer 410; the query options delta cannot take, 400.
    e.expire_delta_tokens();
    let r = http().get(&link).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "SyncStateNotFound");
    let r = http()
        .get(format!("{first}&$select=subject"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, _) = api.get(&format!("/users/{UPN}/calendarView/delta")).await;
    assert_eq!(s, 400, "the first request needs a window");
}
