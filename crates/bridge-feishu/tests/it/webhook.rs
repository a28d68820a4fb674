//! The webhook route over real loopback HTTP: every refusal answers the
//! right status and records nothing; valid deliveries are accepted once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bridge_feishu::hint::ChangeHint;
use bridge_feishu::webhook::{
    self, DeliverySink, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, MemoryDeliveries,
    WebhookConfig,
};

const KEY: &str = "it-encrypt-key";
const TOKEN: &str = "it-verification-token";

struct Served {
    url: String,
    sink: Arc<MemoryDeliveries>,
    http: reqwest::Client,
}

async fn serve(config: WebhookConfig) -> Served {
    let sink = Arc::new(MemoryDeliveries::new());
    let app = webhook::router(config, Arc::clone(&sink) as Arc<dyn DeliverySink>);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Served {
        url: format!("http://{addr}{}", webhook::WEBHOOK_PATH),
        sink,
        http: reqwest::Client::new(),
    }
}

fn config() -> WebhookConfig {
    WebhookConfig {
        encrypt_key: Some(KEY.into()),
        verification_token: Some(TOKEN.into()),
        ..WebhookConfig::default()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn event(event_id: &str, token: &str) -> String {
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": event_id,
            "event_type": "calendar.calendar.event.changed_v4",
            "create_time": (now_s() * 1000).to_string(),
            "token": token,
            "app_id": "cli_it",
            "tenant_key": "tk"
        },
        "event": {
            "calendar_id": "feishu.cn_it@group.calendar.feishu.cn",
            "user_id_list": [{"open_id": "ou_it"}],
            "calendar_event_id": "uid-1_0",
            "change_type": "update"
        }
    })
    .to_string()
}

fn encrypted(plain: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"encrypt": webhook::encrypt(KEY, plain.as_bytes())}))
        .unwrap()
}

impl Served {
    async fn post_signed(&self, body: Vec<u8>, ts: &str) -> (u16, serde_json::Value) {
        let sig = webhook::signature(ts, "n0nce", KEY, &body);
        self.post(body, Some((ts.to_owned(), sig))).await
    }

    async fn post(&self, body: Vec<u8>, sig: Option<(String, String)>) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json; charset=utf-8")
            .body(body);
        if let Some((ts, sig)) = sig {
            req = req
                .header(HEADER_TIMESTAMP, ts)
                .header(HEADER_NONCE, "n0nce")
                .header(HEADER_SIGNATURE, sig);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    fn assert_nothing_recorded(&self) {
        assert_eq!(self.sink.seen_count(), 0, "no dedupe key recorded");
        assert_eq!(self.sink.accepted_count(), 0, "nothing accepted");
    }
}

#[tokio::test]
async fn valid_encrypted_delivery_is_accepted_and_replays_processed_once() {
    let s = serve(config()).await;
    let body = encrypted(&event("ev-1", TOKEN));
    let ts = now_s().to_string();
    let (status, json) = s.post_signed(body.clone(), &ts).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json, serde_json::json!({"msg": "success"}));
    // Feishu's at-least-once retry of the very same request.
    let (status, json) = s.post_signed(body, &ts).await;
    assert_eq!(status, 200, "{json}");
    // A re-encryption of the same event (fresh IV, fresh signature) is a duplicate too.
    let (status, _) = s.post_signed(encrypted(&event("ev-1", TOKEN)), &ts).await;
    assert_eq!(status, 200);

    let accepted = s.sink.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].dedupe_key, "ev-1");
    let ChangeHint::CalendarEventChanged {
        calendar_id,
        event_id,
        ..
    } = &accepted[0].hint
    else {
        panic!("{:?}", accepted[0].hint)
    };
    assert_eq!(calendar_id, "feishu.cn_it@group.calendar.feishu.cn");
    assert_eq!(event_id.as_deref(), Some("uid-1_0"));
}

#[tokio::test]
async fn forged_signature_is_refused() {
    let s = serve(config()).await;
    let body = encrypted(&event("ev-1", TOKEN));
    let ts = now_s().to_string();
    let forged = webhook::signature(&ts, "n0nce", "not the key", &body);
    let (status, json) = s.post(body, Some((ts, forged))).await;
    assert_eq!(status, 401, "{json}");
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn unsigned_encrypted_event_is_refused() {
    let s = serve(config()).await;
    let (status, _) = s.post(encrypted(&event("ev-1", TOKEN)), None).await;
    assert_eq!(status, 401);
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn tampered_ciphertext_is_refused() {
    use base64::Engine as _;
    let s = serve(config()).await;
    let b64 = webhook::encrypt(KEY, event("ev-1", TOKEN).as_bytes());
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .unwrap();
    let n = raw.len();
    raw[n - 1] ^= 0x80; // garbles the whole last block, padding included
    let body = serde_json::to_vec(&serde_json::json!({
        "encrypt": base64::engine::general_purpose::STANDARD.encode(&raw)
    }))
    .unwrap();
    // Signed by someone who knows the key: the tampering is caught by decryption.
    let (status, json) = s.post_signed(body, &now_s().to_string()).await;
    assert_eq!(status, 400, "{json}");
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn wrong_verification_token_is_refused() {
    let s = serve(config()).await;
    let (status, _) = s
        .post_signed(
            encrypted(&event("ev-1", "other-token")),
            &now_s().to_string(),
        )
        .await;
    assert_eq!(status, 401);
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn stale_timestamp_is_refused() {
    let s = serve(config()).await;
    let stale = (now_s() - 3600).to_string();
    let (status, json) = s
        .post_signed(encrypted(&event("ev-1", TOKEN)), &stale)
        .await;
    assert_eq!(status, 401, "{json}");
    assert!(json["msg"].as_str().unwrap().contains("stale"), "{json}");
    // in milliseconds too
    let stale_ms = ((now_s() - 3600) * 1000).to_string();
    let (status, _) = s
        .post_signed(encrypted(&event("ev-1", TOKEN)), &stale_ms)
        .await;
    assert_eq!(status, 401);
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let s = serve(WebhookConfig {
        max_body_bytes: 4096,
        ..config()
    })
    .await;
    let big = serde_json::to_vec(&serde_json::json!({"encrypt": "A".repeat(8192)})).unwrap();
    let (status, _) = s.post_signed(big, &now_s().to_string()).await;
    assert_eq!(status, 413);
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn bad_json_and_missing_fields_are_refused() {
    let s = serve(WebhookConfig {
        encrypt_key: None,
        ..config()
    })
    .await;
    for body in [
        &b"{not json"[..],
        br#"{"schema":"2.0","header":{"event_type":"x","token":"it-verification-token"}}"#,
        br#"{"encrypt":"AAAA"}"#,
    ] {
        let (status, json) = s.post(body.to_vec(), None).await;
        assert_eq!(status, 400, "{} -> {json}", String::from_utf8_lossy(body));
        assert!(json["msg"].is_string());
    }
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn challenges_are_answered() {
    let s = serve(config()).await;
    let challenge = serde_json::json!({
        "challenge": "ajls384kdjx98XX", "token": TOKEN, "type": "url_verification"
    })
    .to_string();
    let (status, json) = s.post(encrypted(&challenge), None).await;
    assert_eq!(status, 200);
    assert_eq!(json, serde_json::json!({"challenge": "ajls384kdjx98XX"}));

    let wrong = challenge.replace(TOKEN, "nope");
    let (status, _) = s.post(encrypted(&wrong), None).await;
    assert_eq!(status, 401);

    let plain = serve(WebhookConfig {
        encrypt_key: None,
        ..config()
    })
    .await;
    let (status, json) = plain.post(challenge.into_bytes(), None).await;
    assert_eq!(status, 200);
    assert_eq!(json["challenge"], "ajls384kdjx98XX");
    s.assert_nothing_recorded();
}

#[tokio::test]
async fn sink_failure_answers_500_and_the_retry_is_processed() {
    let s = serve(config()).await;
    let body = encrypted(&event("ev-9", TOKEN));
    let ts = now_s().to_string();
    s.sink.fail_next_accepts(1);
    let (status, _) = s.post_signed(body.clone(), &ts).await;
    assert_eq!(status, 500);
    assert_eq!(s.sink.accepted_count(), 0);
    assert_eq!(
        s.sink.seen_count(),
        0,
        "the failed delivery's key is forgotten"
    );

    let (status, _) = s.post_signed(body.clone(), &ts).await;
    assert_eq!(status, 200);
    assert_eq!(s.sink.accepted_count(), 1);

    s.sink.fail_seen(true);
    let (status, _) = s.post_signed(encrypted(&event("ev-10", TOKEN)), &ts).await;
    assert_eq!(status, 500);
    assert_eq!(s.sink.accepted_count(), 1);
}

#[tokio::test]
async fn v1_and_unknown_events_are_acknowledged() {
    let s = serve(WebhookConfig {
        encrypt_key: None,
        ..config()
    })
    .await;
    let v1 = serde_json::json!({
        "ts": format!("{}.123", now_s()), "uuid": "v1-uuid", "token": TOKEN, "type": "event_callback",
        "event": {"type": "third_party_meeting_room_event_updated", "uid": "u", "original_time": 0,
                  "start": {"time_stamp": "1553853600000"}, "meeting_rooms": [{"open_id": "omm_1"}]}
    });
    let (status, _) = s.post(v1.to_string().into_bytes(), None).await;
    assert_eq!(status, 200);
    let unknown = serde_json::json!({
        "schema": "2.0",
        "header": {"event_id": "u-1", "event_type": "im.message.receive_v1", "token": TOKEN},
        "event": {}
    });
    let (status, _) = s.post(unknown.to_string().into_bytes(), None).await;
    assert_eq!(status, 200);
    let kinds: Vec<_> = s
        .sink
        .accepted()
        .into_iter()
        .map(|d| (d.dedupe_key, d.event_type))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (
                "v1-uuid".to_owned(),
                "third_party_meeting_room_event_updated".to_owned()
            ),
            ("u-1".to_owned(), "im.message.receive_v1".to_owned()),
        ]
    );
}

#[tokio::test]
async fn answers_fast() {
    let s = serve(config()).await;
    let started = std::time::Instant::now();
    for i in 0..50 {
        let (status, _) = s
            .post_signed(
                encrypted(&event(&format!("fast-{i}"), TOKEN)),
                &now_s().to_string(),
            )
            .await;
        assert_eq!(status, 200);
    }
    // Feishu allows 3 s per request; 50 requests over loopback take milliseconds.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.sink.accepted_count(), 50);
}

// ---------------------------------------------------------------------------
// End to end with the Feishu emulator pushing to the router.

mod with_emulator {
    use std::time::Duration;

    use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
    use bridge_emulators::feishu::{
        Faults, FeishuConfig, FeishuEmulator, RoomEventKind, WebhookTarget,
    };
    use bridge_feishu::hint::{ChangeHint, ChangeType, RoomEventKind as HintRoomKind};

    use super::{KEY, Served, TOKEN, config, serve};

    const SETTLE: Duration = Duration::from_secs(15);

    async fn emulator_pushing_to(s: &Served, encrypt_key: Option<&str>) -> FeishuEmulator {
        FeishuEmulator::start(FeishuConfig {
            aggregation_window: Duration::from_millis(300),
            webhook: Some(WebhookTarget {
                url: s.url.clone(),
                encrypt_key: encrypt_key.map(str::to_owned),
                verification_token: TOKEN.into(),
            }),
            webhook_retry_schedule: vec![Duration::from_millis(200); 4],
            rate_limit: None,
            ..FeishuConfig::default()
        })
        .await
        .unwrap()
    }

    fn event(summary: &str, start: i64) -> Event {
        let at = |t: i64| TimeInfo {
            timestamp: Some(UnixSeconds(t)),
            timezone: Some("UTC".into()),
            date: None,
        };
        Event {
            summary: Some(summary.into()),
            start_time: Some(at(start)),
            end_time: Some(at(start + 3600)),
            ..Event::default()
        }
    }

    #[tokio::test]
    async fn url_verification_and_an_aggregated_change_arrive_once() {
        let s = serve(config()).await;
        let emu = emulator_pushing_to(&s, Some(KEY)).await;
        emu.verify_webhook().await.expect("challenge answered");

        let user = emu.add_user("Alice");
        let cal = emu.primary_calendar(&user);
        emu.subscribe_events(&user, &cal);
        // create + update inside the aggregation window: one `create` push
        let event_id = emu.create_event(&cal, event("Planning", 1_767_225_600));
        emu.update_event(&cal, &event_id, |e| e.summary = Some("Planning v2".into()));

        let deliveries = emu.wait_for_deliveries(1, SETTLE).await;
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert!(deliveries[0].delivered_ok);
        assert_eq!(deliveries[0].last_status, Some(200));
        let accepted = s.sink.accepted();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].dedupe_key, deliveries[0].event_id);
        match &accepted[0].hint {
            ChangeHint::CalendarEventChanged {
                calendar_id,
                event_id: changed,
                change_type,
                ..
            } => {
                assert_eq!(calendar_id, &cal);
                assert_eq!(changed.as_deref(), Some(event_id.as_str()));
                assert_eq!(change_type, &Some(ChangeType::Create));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn duplicate_pushes_are_processed_once() {
        let s = serve(config()).await;
        let emu = emulator_pushing_to(&s, Some(KEY)).await;
        emu.set_faults(Faults {
            duplicate_rate: 1.0,
            seed: Some(7),
            ..Faults::default()
        });
        let user = emu.add_user("Alice");
        let cal = emu.primary_calendar(&user);
        emu.subscribe_events(&user, &cal);
        emu.create_event(&cal, event("Twice", 1_767_225_600));
        let deliveries = emu.wait_for_deliveries(1, SETTLE).await;
        let d = &deliveries[0];
        assert!(d.attempt_log.iter().any(|a| a.duplicate), "{d:?}");
        assert!(d.attempt_log.iter().all(|a| a.status == Some(200)), "{d:?}");
        assert_eq!(s.sink.accepted_count(), 1);
    }

    #[tokio::test]
    async fn a_failing_sink_gets_the_retry() {
        let s = serve(config()).await;
        let emu = emulator_pushing_to(&s, Some(KEY)).await;
        s.sink.fail_next_accepts(1);
        let user = emu.add_user("Alice");
        let cal = emu.primary_calendar(&user);
        emu.subscribe_events(&user, &cal);
        emu.create_event(&cal, event("Retry", 1_767_225_600));
        let deliveries = emu.wait_for_deliveries(1, SETTLE).await;
        let statuses: Vec<_> = deliveries[0].attempt_log.iter().map(|a| a.status).collect();
        assert_eq!(statuses, vec![Some(500), Some(200)]);
        assert_eq!(s.sink.accepted_count(), 1);
    }

    #[tokio::test]
    async fn plaintext_mode_and_v1_room_events() {
        let s = serve(bridge_feishu::webhook::WebhookConfig {
            encrypt_key: None,
            ..config()
        })
        .await;
        let emu = emulator_pushing_to(&s, None).await;
        emu.verify_webhook()
            .await
            .expect("plain challenge answered");
        let organizer = emu.add_user("Org");
        emu.emit_third_party_room_event(
            RoomEventKind::Deleted,
            "uid-7",
            1_767_225_600,
            1_767_225_600_000,
            1_767_229_200_000,
            &["omm_a", "omm_b"],
            &organizer,
        );
        let deliveries = emu.wait_for_deliveries(1, SETTLE).await;
        assert!(deliveries[0].delivered_ok, "{:?}", deliveries[0]);
        let accepted = s.sink.accepted();
        assert_eq!(accepted.len(), 1);
        match &accepted[0].hint {
            ChangeHint::ThirdPartyRoomEvent {
                kind,
                uid,
                original_time,
                event_id,
                end_ms,
                room_ids,
                organizer: Some(org),
                ..
            } => {
                assert_eq!(*kind, HintRoomKind::Deleted);
                assert_eq!(uid, "uid-7");
                assert_eq!(*original_time, 1_767_225_600);
                assert_eq!(event_id.as_deref(), Some("uid-7_1767225600"));
                assert_eq!(*end_ms, Some(1_767_229_200_000));
                assert_eq!(room_ids, &["omm_a".to_owned(), "omm_b".to_owned()]);
                assert_eq!(org.open_id.as_deref(), Some(organizer.as_str()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn wrong_token_at_the_emulator_is_refused_and_retried_then_given_up() {
        let s = serve(bridge_feishu::webhook::WebhookConfig {
            verification_token: Some("the-real-token".into()),
            ..config()
        })
        .await;
        let emu = emulator_pushing_to(&s, Some(KEY)).await;
        assert!(
            emu.verify_webhook().await.is_err(),
            "challenge with a wrong token refused"
        );
        emu.emit_v2(
            "calendar.calendar.changed_v4",
            serde_json::json!({"user_id_list": []}),
        );
        let deliveries = emu.wait_for_deliveries(1, SETTLE).await;
        assert!(deliveries[0].gave_up, "{:?}", deliveries[0]);
        assert!(
            deliveries[0]
                .attempt_log
                .iter()
                .all(|a| a.status == Some(401))
        );
        s.assert_nothing_recorded();
    }
}
