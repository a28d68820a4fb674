//! Random ids and tokens, and wall-clock time.

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

/// Wall-clock Unix seconds.
pub(crate) fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Wall-clock Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(rand_hex(7).len(), 7);
        assert!(rand_hex(40).bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(rand_alnum(40).bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(
            rand_urlsafe(64)
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
}
