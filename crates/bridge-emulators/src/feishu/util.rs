//! Small helpers: random ids and wall-clock time.

use rand::Rng;
use rand::distr::Alphanumeric;

/// `n` random lowercase hex digits.
pub(crate) fn rand_hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// `n` random ASCII letters and digits.
pub(crate) fn rand_alnum(n: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// `n` random characters of `[A-Za-z0-9-_]` (OAuth codes and tokens).
pub(crate) fn rand_urlsafe(n: usize) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(SET[rng.random_range(0..SET.len())]))
        .collect()
}

/// A random UUID v4 in its usual 8-4-4-4-12 spelling (event uids).
pub(crate) fn uuid_v4() -> String {
    let h = rand_hex(32);
    let variant = ['8', '9', 'a', 'b'][rand::rng().random_range(0..4)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

/// Wall-clock Unix seconds.
pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Wall-clock Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A log id in the shape Feishu's `X-Tt-Logid` uses (timestamp + random hex).
pub(crate) fn log_id() -> String {
    format!(
        "{}{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        rand_hex(18).to_uppercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(rand_hex(7).len(), 7);
        assert!(
            rand_urlsafe(64)
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
