//! Webhook delivery (§8): optional AES-256-CBC encryption with the Encrypt
//! Key, signature headers, 3 s timeout, retries on the configured schedule,
//! and the URL-verification challenge.
//!
//! The crypto helpers are public so tests (and clients) can check them
//! against the documented vector.

use std::sync::Arc;
use std::time::Duration;

use aes::Aes256;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::outbox::{OutMsg, log_attempt, update_delivery};
use super::util::{now_secs, rand_alnum};
use super::{Inner, WebhookTarget};

/// At most this many retries after the first attempt (§8.5).
const MAX_RETRIES: usize = 4;

/// Why an encrypted payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("payload is not base64")]
    Base64,
    #[error("payload is shorter than one IV plus one block")]
    TooShort,
    #[error("bad padding (wrong key?)")]
    Padding,
}

fn key_of(encrypt_key: &str) -> [u8; 32] {
    Sha256::digest(encrypt_key.as_bytes()).into()
}

/// `base64(iv || AES-256-CBC(PKCS7(plaintext)))` with key = SHA-256(encrypt key).
pub fn encrypt(encrypt_key: &str, plaintext: &[u8]) -> String {
    let mut iv = [0u8; 16];
    rand::rng().fill_bytes(&mut iv);
    let ct = cbc::Encryptor::<Aes256>::new(&key_of(encrypt_key).into(), &iv.into())
        .encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    let mut out = iv.to_vec();
    out.extend_from_slice(&ct);
    STANDARD.encode(out)
}

/// Inverse of [`encrypt`].
pub fn decrypt(encrypt_key: &str, encrypted: &str) -> Result<Vec<u8>, CryptoError> {
    let raw = STANDARD
        .decode(encrypted.trim())
        .map_err(|_| CryptoError::Base64)?;
    if raw.len() < 32 || raw.len() % 16 != 0 {
        return Err(CryptoError::TooShort);
    }
    let (iv, ct) = raw.split_at(16);
    let iv: [u8; 16] = iv.try_into().map_err(|_| CryptoError::TooShort)?;
    cbc::Decryptor::<Aes256>::new(&key_of(encrypt_key).into(), &iv.into())
        .decrypt_padded_vec_mut::<Pkcs7>(ct)
        .map_err(|_| CryptoError::Padding)
}

/// `X-Lark-Signature`: lowercase hex SHA-256 of `timestamp + nonce + key + body`.
pub fn signature(timestamp: &str, nonce: &str, encrypt_key: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(timestamp.as_bytes());
    h.update(nonce.as_bytes());
    h.update(encrypt_key.as_bytes());
    h.update(body);
    hex::encode(h.finalize())
}

/// Builds the HTTP request body and headers for one attempt.
fn request_for(target: &WebhookTarget, plaintext: &[u8]) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let timestamp = now_secs().to_string();
    let nonce = rand_alnum(16);
    let mut headers = vec![
        ("X-Lark-Request-Timestamp", timestamp.clone()),
        ("X-Lark-Request-Nonce", nonce.clone()),
    ];
    match target.encrypt_key.as_deref().filter(|k| !k.is_empty()) {
        Some(key) => {
            let body = serde_json::to_vec(&json!({ "encrypt": encrypt(key, plaintext) }))
                .unwrap_or_default();
            headers.push((
                "X-Lark-Signature",
                signature(&timestamp, &nonce, key, &body),
            ));
            (body, headers)
        }
        None => (plaintext.to_vec(), headers),
    }
}

/// One POST; `Ok(status)` for any HTTP answer, `Err` for network errors and
/// timeouts.
async fn post(
    inner: &Inner,
    target: &WebhookTarget,
    plaintext: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let (body, headers) = request_for(target, plaintext);
    let mut req = inner
        .http
        .post(&target.url)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    Ok((status, bytes.to_vec()))
}

/// Delivers one message: first attempt now, then one retry per entry of the
/// retry schedule (at most four) until an HTTP 200 within 3 s.
pub(crate) async fn deliver(inner: Arc<Inner>, msg: Arc<OutMsg>) {
    let schedule = inner.config().webhook_retry_schedule;
    let retries = schedule.len().min(MAX_RETRIES);
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(schedule[attempt - 1]).await;
        }
        let Some(target) = inner.config().webhook else {
            log_attempt(
                &inner,
                msg.slot,
                None,
                Some("no webhook configured".into()),
                false,
            );
            continue;
        };
        let outcome = post(&inner, &target, &msg.body).await;
        match outcome {
            Ok((200, _)) => {
                log_attempt(&inner, msg.slot, Some(200), None, false);
                tracing::debug!(event_id = %msg.id, attempt, "webhook delivered");
                let dup = inner.kit.roll(|f| f.duplicate_rate);
                if dup {
                    let status = post(&inner, &target, &msg.body).await.ok().map(|(s, _)| s);
                    log_attempt(&inner, msg.slot, status, None, true);
                    update_delivery(&inner, msg.slot, |d| d.last_status = Some(200));
                }
                // Settled only once every send of it is done (the duplicate
                // too), so that a test waiting for it sees all its attempts.
                update_delivery(&inner, msg.slot, |d| d.delivered_ok = true);
                return;
            }
            Ok((status, _)) => {
                tracing::debug!(event_id = %msg.id, attempt, status, "webhook answered non-200");
                log_attempt(&inner, msg.slot, Some(status), None, false);
            }
            Err(e) => {
                tracing::debug!(event_id = %msg.id, attempt, error = %e, "webhook attempt failed");
                log_attempt(&inner, msg.slot, None, Some(e), false);
            }
        }
    }
    update_delivery(&inner, msg.slot, |d| d.gave_up = true);
    tracing::warn!(event_id = %msg.id, "webhook push failed all retries");
}

/// Why the URL-verification challenge failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no webhook configured")]
    NoWebhook,
    #[error("request failed: {0}")]
    Request(String),
    #[error("did not answer within 1 s")]
    Timeout,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer did not echo the challenge: {0}")]
    WrongChallenge(String),
}

/// Sends the URL-verification challenge (§8.2) and checks the echo.
pub(crate) async fn verify_url(inner: &Inner) -> Result<(), VerifyError> {
    let target = inner.config().webhook.ok_or(VerifyError::NoWebhook)?;
    let challenge = rand_alnum(24);
    let plaintext = serde_json::to_vec(&json!({
        "challenge": challenge,
        "token": target.verification_token,
        "type": "url_verification",
    }))
    .unwrap_or_default();
    let answer = tokio::time::timeout(Duration::from_secs(1), post(inner, &target, &plaintext))
        .await
        .map_err(|_| VerifyError::Timeout)?
        .map_err(VerifyError::Request)?;
    if answer.0 != 200 {
        return Err(VerifyError::Status(answer.0));
    }
    let echoed: Option<Value> = serde_json::from_slice(&answer.1).ok();
    let got = echoed
        .as_ref()
        .and_then(|v| v.get("challenge"))
        .and_then(Value::as_str);
    if got != Some(challenge.as_str()) {
        return Err(VerifyError::WrongChallenge(
            String::from_utf8_lossy(&answer.1).into_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_vector_and_round_trip() {
        let pt = decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=").unwrap();
        assert_eq!(pt, b"hello world");
        assert_eq!(
            hex::encode(key_of("test key")),
            "fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"
        );
        let ct = encrypt("k", b"{\"a\":1}");
        assert_eq!(decrypt("k", &ct).unwrap(), b"{\"a\":1}");
        assert!(decrypt("other", &ct).is_err() || decrypt("other", &ct).unwrap() != b"{\"a\":1}");
    }

    #[test]
    fn derived_signature_example() {
        let body = br#"{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}"#;
        assert_eq!(
            signature("1700000000", "abc", "test key", body),
            "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af"
        );
    }
}
