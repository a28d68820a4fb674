//! Webhook throughput: `process()` on signed, AES-encrypted
//! `calendar.calendar.event.changed_v4` deliveries (signature check +
//! decryption + parsing + token and staleness checks), one core.
//!
//! `cargo bench -p bridge-feishu --bench webhook`

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue};
use bridge_feishu::webhook::{
    self, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP, Outcome, WebhookConfig,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const N: usize = 1_000;
const KEY: &str = "bench-encrypt-key-0123456789";
const TOKEN: &str = "rvaYgkND1GOiu5MM0E1rncYC6PLtF7JV";
const NOW_S: u64 = 1_735_689_600;

/// A full-size delivery: every gray-release field present, two subscribers,
/// one rsvp entry (about 900 bytes of plaintext).
fn payload(i: usize) -> String {
    serde_json::json!({
        "schema": "2.0",
        "header": {
            "event_id": format!("5e3702a84e847582be8db7fb7328{i:04x}"),
            "event_type": "calendar.calendar.event.changed_v4",
            "create_time": ((NOW_S - 2) * 1000).to_string(),
            "token": TOKEN,
            "app_id": "cli_9f5343c580712544",
            "tenant_key": "2ca1d211f64f6438"
        },
        "event": {
            "calendar_id": "feishu.cn_aWQ4ZTk2NTZkNGNhNDQ0OTk4NWQ1ZTUz@group.calendar.feishu.cn",
            "user_id_list": [
                {"union_id": "on_8ed6aa67826108097d9ee143816345", "user_id": "e33ggbyz",
                 "open_id": "ou_84aad35d084aa403a838cf73ee18467"},
                {"union_id": "on_a1b2c3d4e5f60718293a4b5c6d7e8f90", "user_id": "f44hhczx",
                 "open_id": "ou_0f1e2d3c4b5a69788796a5b4c3d2e1f0"}
            ],
            "calendar_event_id": format!("efa67a98-06a8-4df5-8559-746c8f44{i:04x}_0"),
            "change_type": "update",
            "rsvp_infos": [{
                "from_user_id": {"union_id": "on_8ed6aa67826108097d9ee143816345",
                                 "user_id": "e33ggbyz",
                                 "open_id": "ou_84aad35d084aa403a838cf73ee18467"},
                "rsvp_status": "accept"
            }]
        }
    })
    .to_string()
}

fn bench(c: &mut Criterion) {
    let config = WebhookConfig {
        encrypt_key: Some(KEY.into()),
        verification_token: Some(TOKEN.into()),
        ..WebhookConfig::default()
    };
    let now = UNIX_EPOCH + Duration::from_secs(NOW_S);
    let ts = NOW_S.to_string();
    let requests: Vec<(HeaderMap, Vec<u8>)> = (0..N)
        .map(|i| {
            let body = serde_json::to_vec(&serde_json::json!({
                "encrypt": webhook::encrypt(KEY, payload(i).as_bytes())
            }))
            .unwrap();
            let nonce = format!("nonce-{i}");
            let mut h = HeaderMap::new();
            h.insert(HEADER_TIMESTAMP, HeaderValue::from_str(&ts).unwrap());
            h.insert(HEADER_NONCE, HeaderValue::from_str(&nonce).unwrap());
            h.insert(
                HEADER_SIGNATURE,
                HeaderValue::from_str(&webhook::signature(&ts, &nonce, KEY, &body)).unwrap(),
            );
            (h, body)
        })
        .collect();
    let body_len = requests[0].1.len();

    let mut g = c.benchmark_group("webhook");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(30);
    g.bench_function(
        format!("process_signed_encrypted_event_changed_{N}x{body_len}B"),
        |b| {
            b.iter(|| {
                let mut accepted = 0usize;
                for (headers, body) in &requests {
                    if let Ok(Outcome::Event(d)) = webhook::process(&config, headers, body, now) {
                        std::hint::black_box(&d);
                        accepted += 1;
                    }
                }
                assert_eq!(accepted, N);
                accepted
            });
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
