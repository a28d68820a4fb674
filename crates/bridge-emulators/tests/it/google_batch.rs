//! Google batch endpoint: multipart/mixed parsing, per-part statuses in
//! order, Content-ID mapping, the part limit, accounting.

use bridge_emulators::google::{FaultKind, GoogleEmulator};
use serde_json::json;

use crate::google_common::*;

const BOUNDARY: &str = "batch_feishu_bridge_test";

/// One part: an HTTP request with a path only.
fn part(content_id: &str, method: &str, path: &str, body: Option<&serde_json::Value>) -> String {
    let mut s = format!(
        "--{BOUNDARY}\r\nContent-Type: application/http\r\nContent-ID: <{content_id}>\r\n\r\n\
         {method} /calendar/v3{path} HTTP/1.1\r\n"
    );
    match body {
        Some(b) => {
            let text = b.to_string();
            s.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}\r\n",
                text.len()
            ));
        }
        None => s.push_str("\r\n"),
    }
    s
}

async fn post_batch(emu: &GoogleEmulator, token: &str, parts: &[String]) -> (u16, String, String) {
    let body = format!("{}--{BOUNDARY}--\r\n", parts.concat());
    let resp = client()
        .post(emu.batch_url())
        .bearer_auth(token)
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

#[tokio::test]
async fn batch_of_50_with_mixed_results_and_content_ids() {
    let (emu, api) = setup().await;
    api.post(
        &events("primary"),
        &timed(
            "present001",
            "x",
            "2024-01-01T10:00:00Z",
            "2024-01-01T11:00:00Z",
        ),
    )
    .await;
    let mut parts = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let cid = format!("item{i}:feishu-bridge");
        let (p, status) = match i % 5 {
            // A valid insert with a deterministic id.
            0 | 1 => (
                part(
                    &cid,
                    "POST",
                    &format!("{}?sendUpdates=none", events("primary")),
                    Some(&timed(
                        &format!("batchevent{i:03}"),
                        "from batch",
                        "2024-02-01T10:00:00Z",
                        "2024-02-01T11:00:00Z",
                    )),
                ),
                200,
            ),
            // An id outside base32hex.
            2 => (
                part(
                    &cid,
                    "POST",
                    &events("primary"),
                    Some(&timed(
                        &format!("BAD{i}"),
                        "x",
                        "2024-02-01T10:00:00Z",
                        "2024-02-01T11:00:00Z",
                    )),
                ),
                400,
            ),
            // Re-insert of an existing id.
            3 => (
                part(
                    &cid,
                    "POST",
                    &events("primary"),
                    Some(&timed(
                        "present001",
                        "x",
                        "2024-02-01T10:00:00Z",
                        "2024-02-01T11:00:00Z",
                    )),
                ),
                409,
            ),
            // A get of an unknown event.
            _ => (
                part(
                    &cid,
                    "GET",
                    &event("primary", &format!("missing{i:03}")),
                    None,
                ),
                404,
            ),
        };
        parts.push(p);
        expected.push((format!("<response-{cid}>"), status));
    }
    let writes_before = emu.write_count();
    let (status, ct, text) = post_batch(&emu, &api.token, &parts).await;
    assert_eq!(status, 200, "{text}");
    assert!(ct.starts_with("multipart/mixed; boundary="));
    let answers = read_multipart(&ct, &text);
    assert_eq!(answers.len(), 50);
    for (a, (cid, status)) in answers.iter().zip(&expected) {
        assert_eq!(a.content_id.as_deref(), Some(cid.as_str()));
        assert_eq!(a.status, *status, "{cid}: {:?}", a.body);
    }
    assert_eq!(answers[0].body["id"], "batchevent000");
    assert_eq!(answers[2].body["error"]["errors"][0]["reason"], "invalid");
    assert_eq!(answers[3].body["error"]["errors"][0]["reason"], "duplicate");
    assert_eq!(answers[4].body["error"]["errors"][0]["reason"], "notFound");

    assert_eq!(emu.batch_count(), 1);
    // 40 write parts (inserts of every kind), whatever their answer.
    assert_eq!(emu.write_count() - writes_before, 40);
    let parts_recorded: Vec<_> = emu.calls().into_iter().filter(|c| c.batch_part).collect();
    assert_eq!(parts_recorded.len(), 50);
    assert!(
        parts_recorded
            .iter()
            .all(|c| c.user.as_deref() == Some(ALICE))
    );
    let w = emu.writes();
    let batch_writes: Vec<_> = w.iter().filter(|w| w.batch_part).collect();
    assert_eq!(batch_writes.len(), 20);
    assert!(
        batch_writes
            .iter()
            .all(|w| w.send_updates.as_deref() == Some("none"))
    );
    assert_eq!(
        api.get(&format!("{}?maxResults=100", events("primary")))
            .await
            .ids()
            .len(),
        21
    );
}

#[tokio::test]
async fn more_than_50_parts_is_400() {
    let (emu, api) = setup().await;
    let parts: Vec<String> = (0..51)
        .map(|i| part(&format!("p{i}"), "GET", &events("primary"), None))
        .collect();
    let (status, _, text) = post_batch(&emu, &api.token, &parts).await;
    assert_eq!(status, 400, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], 400);
    assert_eq!(emu.call_count("/calendar/v3/"), 0, "no part ran");

    let not_multipart = send(
        client()
            .post(emu.batch_url())
            .bearer_auth(&api.token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(not_multipart.status, 400);
}

#[tokio::test]
async fn batch_parts_inherit_auth_and_get_their_own_faults() {
    let (emu, api) = setup().await;
    emu.fail_next("missing002", 1, FaultKind::BackendError { status: 503 });
    let parts = vec![
        part("a", "GET", &event("primary", "missing001"), None),
        part("b", "GET", &event("primary", "missing002"), None),
        part("c", "GET", "/calendars/primary", None),
    ];
    let (status, ct, text) = post_batch(&emu, &api.token, &parts).await;
    assert_eq!(status, 200);
    let answers = read_multipart(&ct, &text);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [404, 503, 200]);
    assert_eq!(
        answers[1].body["error"]["errors"][0]["reason"],
        "backendError"
    );

    // Without credentials every part is a 401 of its own.
    let (status, ct, text) = post_batch(&emu, "ya29.nothing", &parts).await;
    assert_eq!(status, 200);
    assert!(read_multipart(&ct, &text).iter().all(|a| a.status == 401));
}
