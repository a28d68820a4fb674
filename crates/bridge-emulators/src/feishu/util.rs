//! Ids in Feishu's shapes (the generic ones come from the kit).

use rand::Rng;

pub(crate) use crate::kit::ids::{now_ms, now_secs, rand_alnum, rand_hex, rand_urlsafe};

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
        assert_eq!(log_id().len(), 14 + 18);
    }
}
