//! Long connection: bootstrap, handshake failures, ping/pong, delivery, acks,
//! split payloads, redelivery, reconnects.

use std::time::Duration;

use bridge_emulators::feishu::ws::{Frame, METHOD_CONTROL, METHOD_DATA};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, Transport};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::common::*;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn ws_config() -> FeishuConfig {
    FeishuConfig {
        long_connection: true,
        ..fast_config()
    }
}

async fn endpoint(emu: &FeishuEmulator) -> Answer {
    send(
        client()
            .post(format!("{}/callback/ws/endpoint", emu.base_url()))
            .header("locale", "zh")
            .json(&json!({"AppID": "cli_test_app", "AppSecret": "test_app_secret"})),
    )
    .await
}

async fn ws_url(emu: &FeishuEmulator) -> String {
    endpoint(emu).await.body["data"]["URL"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn service_of(url: &str) -> i32 {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "service_id")
        .unwrap()
        .1
        .parse()
        .unwrap()
}

async fn connect(emu: &FeishuEmulator) -> (Ws, i32) {
    let url = ws_url(emu).await;
    let (ws, resp) = connect_async(url.as_str()).await.expect("handshake");
    assert_eq!(resp.status(), 101);
    for _ in 0..100 {
        if emu.ws_connections() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (ws, service_of(&url))
}

async fn next_frame(ws: &mut Ws, wait: Duration) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Binary(b) = msg {
            return Some(Frame::decode(b.as_ref()).unwrap());
        }
    }
}

async fn ack(ws: &mut Ws, frame: &Frame, code: i64) {
    let mut reply = frame.clone();
    reply.set_header("biz_rt", "3");
    reply.payload = Some(
        json!({"code": code, "headers": null, "data": null})
            .to_string()
            .into_bytes(),
    );
    ws.send(Message::Binary(reply.encode_to_vec().into()))
        .await
        .unwrap();
}

async fn handshake_error(url: &str) -> (u16, String, String) {
    match connect_async(url).await {
        Ok(_) => panic!("handshake should fail"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let h = |k: &str| resp.headers()[k].to_str().unwrap().to_owned();
            (
                resp.status().as_u16(),
                h("handshake-status"),
                h("handshake-autherrcode"),
            )
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn bootstrap_and_handshake_failures() {
    let emu = start_with(FeishuConfig {
        ws_max_connections: 1,
        ..ws_config()
    })
    .await;
    let a = endpoint(&emu).await;
    assert_eq!(a.code(), 0);
    let data = &a.body["data"];
    let url = data["URL"].as_str().unwrap();
    assert!(url.starts_with(&format!(
        "ws://{}/ws/v2?",
        emu.base_url().trim_start_matches("http://")
    )));
    assert!(url.contains("device_id=") && url.contains("service_id=") && url.contains("ticket="));
    assert_eq!(
        data["ClientConfig"],
        json!({"ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30, "PingInterval": 120})
    );

    let bad = send(
        client()
            .post(format!("{}/callback/ws/endpoint", emu.base_url()))
            .json(&json!({"AppID": "cli_test_app", "AppSecret": "wrong"})),
    )
    .await;
    assert_eq!(bad.status, 200);
    assert_ne!(bad.code(), 0);

    let (_ws, _) = connect_async(url).await.unwrap();
    // Tickets are single use.
    let (status, hs, _) = handshake_error(url).await;
    assert_eq!((status, hs.as_str()), (403, "403"));
    let bogus = url.replace("ticket=", "ticket=x");
    assert_eq!(handshake_error(&bogus).await.1, "403");
    // Over the connection limit.
    let second = ws_url(&emu).await;
    let (status, hs, code) = handshake_error(&second).await;
    assert_eq!(
        (status, hs.as_str(), code.as_str()),
        (514, "514", "1000040350")
    );
}

#[tokio::test]
async fn ping_gets_pong_with_client_config() {
    let emu = start().await;
    let (mut ws, service) = connect(&emu).await;
    ws.send(Message::Binary(Frame::ping(service).encode_to_vec().into()))
        .await
        .unwrap();
    let pong = next_frame(&mut ws, Duration::from_secs(2))
        .await
        .expect("pong");
    assert_eq!(pong.method, METHOD_CONTROL);
    assert_eq!(pong.header("type"), Some("pong"));
    assert_eq!(pong.service, service);
    let cfg: Value = serde_json::from_slice(pong.payload.as_deref().unwrap()).unwrap();
    assert_eq!(cfg["PingInterval"], 120);
    // Text messages are ignored.
    ws.send(Message::Text("hello".into())).await.unwrap();
    ws.send(Message::Binary(Frame::ping(service).encode_to_vec().into()))
        .await
        .unwrap();
    assert!(next_frame(&mut ws, Duration::from_secs(2)).await.is_some());
}

#[tokio::test]
async fn events_are_delivered_acked_and_recorded() {
    let emu = start_with(ws_config()).await;
    let (mut ws, service) = connect(&emu).await;
    let cal = emu.create_calendar("Team");
    let ann = emu.add_user("Ann");
    emu.subscribe_events(&ann, &cal);
    let id = emu.create_event(&cal, timed("x", 1_767_225_600, 60));
    let f = next_frame(&mut ws, Duration::from_secs(2))
        .await
        .expect("event frame");
    assert_eq!(f.method, METHOD_DATA);
    assert_eq!(f.service, service);
    assert_eq!(f.header("type"), Some("event"));
    assert_eq!(f.header("sum"), Some("1"));
    assert_eq!(f.header("seq"), Some("0"));
    assert!(f.header("trace_id").is_some());
    assert_eq!(f.header("timestamp").unwrap().len(), 13);
    let v: Value = serde_json::from_slice(f.payload.as_deref().unwrap()).unwrap();
    assert_eq!(v["schema"], "2.0");
    assert_eq!(v["event"]["calendar_event_id"], id.as_str());
    assert_eq!(f.header("message_id"), v["header"]["event_id"].as_str());
    ack(&mut ws, &f, 200).await;
    let d = emu.wait_for_deliveries(1, Duration::from_secs(2)).await;
    assert!(d[0].delivered_ok, "{d:?}");
    assert_eq!(d[0].transport, Transport::Ws);
    assert_eq!(d[0].attempts, 1);
    assert_eq!(d[0].acks[0]["code"], 200);
    assert_eq!(d[0].biz_rt, vec!["3".to_owned()]);
}

#[tokio::test]
async fn large_payloads_are_split() {
    let emu = start_with(FeishuConfig {
        ws_split_threshold: 64,
        ..ws_config()
    })
    .await;
    let (mut ws, _) = connect(&emu).await;
    let big = "x".repeat(300);
    emu.emit_v2("big.event_v1", json!({ "blob": big }));
    let first = next_frame(&mut ws, Duration::from_secs(2)).await.unwrap();
    let sum: usize = first.header("sum").unwrap().parse().unwrap();
    assert!(sum > 1);
    let mut parts = vec![first];
    for _ in 1..sum {
        parts.push(next_frame(&mut ws, Duration::from_secs(2)).await.unwrap());
    }
    let mid = parts[0].header("message_id").unwrap().to_owned();
    let mut body = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.header("message_id"), Some(mid.as_str()));
        assert_eq!(p.header("seq"), Some(i.to_string().as_str()));
        assert!(p.payload.as_ref().unwrap().len() <= 64);
        body.extend_from_slice(p.payload.as_deref().unwrap());
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["event"]["blob"].as_str().unwrap().len(), 300);
    ack(&mut ws, parts.last().unwrap(), 200).await;
    let d = emu.wait_for_deliveries(1, Duration::from_secs(2)).await;
    assert!(d[0].delivered_ok);
    assert_eq!(d[0].parts, sum);
}

#[tokio::test]
async fn nack_and_missing_ack_are_redelivered() {
    let emu = start_with(ws_config()).await;
    let (mut ws, _) = connect(&emu).await;
    let id = emu.emit_v2("a.b_v1", json!({}));
    let f1 = next_frame(&mut ws, Duration::from_secs(2)).await.unwrap();
    ack(&mut ws, &f1, 500).await;
    let f2 = next_frame(&mut ws, Duration::from_secs(2))
        .await
        .expect("redelivered after 500");
    assert_eq!(f2.header("message_id"), Some(id.as_str()));
    // No ack this time: redelivered after the ack timeout + retry delay.
    let f3 = next_frame(&mut ws, Duration::from_secs(3))
        .await
        .expect("redelivered after timeout");
    assert_eq!(f3.header("message_id"), Some(id.as_str()));
    ack(&mut ws, &f3, 200).await;
    let d = emu.wait_for_deliveries(1, Duration::from_secs(2)).await;
    assert!(d[0].delivered_ok);
    assert_eq!(d[0].attempts, 3);
    assert_eq!(d[0].attempt_log[0].status, Some(500));
    assert_eq!(d[0].attempt_log[1].error.as_deref(), Some("ack timeout"));
}

#[tokio::test]
async fn nothing_is_lost_across_drops_and_reconnects() {
    let emu = start_with(ws_config()).await;
    // Queued while nobody is connected.
    let early = emu.emit_v2("early.event_v1", json!({}));
    let (mut ws, _) = connect(&emu).await;
    let f = next_frame(&mut ws, Duration::from_secs(2)).await.unwrap();
    assert_eq!(f.header("message_id"), Some(early.as_str()));
    ack(&mut ws, &f, 200).await;

    // Received but the socket dies before the ack.
    let late = emu.emit_v2("late.event_v1", json!({}));
    let f = next_frame(&mut ws, Duration::from_secs(2)).await.unwrap();
    assert_eq!(f.header("message_id"), Some(late.as_str()));
    emu.drop_ws_connections();
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(Message::Close(_))) => panic!("abrupt close expected, got a close frame"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok());
    assert_eq!(emu.ws_connections(), 0);
    let (mut ws2, _) = connect(&emu).await;
    // At-least-once: the early ack may not have been read before the drop,
    // so `early` may come again; `late` must.
    let mut got_late = false;
    while let Some(f) = next_frame(&mut ws2, Duration::from_millis(500)).await {
        ack(&mut ws2, &f, 200).await;
        let id = f.header("message_id").unwrap();
        assert!(id == late || id == early, "{id}");
        got_late |= id == late;
    }
    assert!(got_late, "late was redelivered after the reconnect");
    let d = emu.wait_for_deliveries(2, Duration::from_secs(2)).await;
    assert!(d.iter().all(|x| x.delivered_ok), "{d:?}");
}

#[tokio::test]
async fn shutdown_closes_everything() {
    let emu = start_with(ws_config()).await;
    let (mut ws, _) = connect(&emu).await;
    emu.emit_v2("pending.event_v1", json!({}));
    let base = emu.base_url();
    tokio::time::timeout(Duration::from_secs(5), emu.shutdown())
        .await
        .expect("shutdown is prompt");
    let end = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "socket closed");
    assert!(
        client()
            .get(format!("{base}/open-apis/calendar/v4/calendars"))
            .send()
            .await
            .is_err()
    );
}
