//! IANA ↔ Windows time zones, from CLDR's `windowsZones` table (the
//! `localzone` crate's `win_zones` feature carries it).
//!
//! Two things make the table alone unsafe for exact instants:
//!
//! - CLDR spells some zones by their older IANA names (`Asia/Calcutta`,
//!   `Europe/Kiev`, ...), while Feishu and chrono-tz use the current ones;
//! - CLDR groups zones under one Windows zone even when their rules have
//!   since parted (`America/Scoresbysund` moved off Azores time in 2024).
//!
//! Exchange expands a series in the Windows zone, whose rules follow the
//! zone CLDR lists first for it (territory `001`). So a Windows zone is
//! only chosen when that zone's UTC offsets agree with the IANA zone's at
//! every sample from 2025 to 2037 (the years a mirror writes); otherwise
//! another Windows zone that agrees is searched for, and failing that there
//! is none (the target then writes UTC instants). This is computed, not
//! kept as a hand-written alias list, which would go stale with each tzdata
//! release.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use chrono::{Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// IANA zone -> Windows zone id (`"China Standard Time"`) with the same
/// rules from 2025 on, or `None` when Windows has no such zone.
pub fn windows_zone(iana: &str) -> Option<&'static str> {
    static FOUND: OnceLock<Mutex<HashMap<String, Option<&'static str>>>> = OnceLock::new();
    let cache = FOUND.get_or_init(Default::default);
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(iana).copied()) {
        return found;
    }
    let found = lookup(iana);
    if let Ok(mut c) = cache.lock() {
        c.insert(iana.to_owned(), found);
    }
    found
}

fn lookup(iana: &str) -> Option<&'static str> {
    let tz: Tz = iana.parse().ok()?;
    let wanted = fingerprint(tz);
    let agrees = |windows: &str| {
        iana_zone(windows)
            .and_then(|golden| golden.parse::<Tz>().ok())
            .is_some_and(|golden| fingerprint(golden) == wanted)
    };
    if let Some((windows, _)) = localzone::iana_to_win_zone(iana)
        && agrees(windows)
    {
        return Some(windows);
    }
    // Renamed zones, UTC aliases, and zones CLDR groups wrongly: a Windows
    // zone whose golden zone keeps the same offsets, preferring one that
    // also agrees since 1970 (the IANA link of a renamed zone) over one that
    // merely agrees from now on (`Asia/Kolkata` is India, not Sri Lanka).
    let history = fingerprint_from(tz, HISTORY_FROM);
    let agreeing: Vec<&'static str> = windows_ids().filter(|w| agrees(w)).collect();
    agreeing
        .iter()
        .copied()
        .find(|w| {
            iana_zone(w)
                .and_then(|golden| golden.parse::<Tz>().ok())
                .is_some_and(|golden| fingerprint_from(golden, HISTORY_FROM) == history)
        })
        .or_else(|| agreeing.first().copied())
}

/// Windows zone id -> the IANA zone CLDR lists first for it (territory
/// `001`, the "golden" zone), or `None` for an unknown id.
pub fn iana_zone(windows: &str) -> Option<&'static str> {
    localzone::win_zone_to_iana(windows, Some("001"))
        .or_else(|| localzone::win_zone_to_iana(windows, None))
}

/// Every Windows zone id of the table, once each, `UTC` first.
fn windows_ids() -> impl Iterator<Item = &'static str> {
    static IDS: OnceLock<Vec<&'static str>> = OnceLock::new();
    IDS.get_or_init(|| {
        let mut ids = vec!["UTC"];
        for tz in chrono_tz::TZ_VARIANTS {
            if let Some((w, _)) = localzone::iana_to_win_zone(tz.name())
                && !ids.contains(&w)
            {
                ids.push(w);
            }
        }
        ids
    })
    .iter()
    .copied()
}

const SAMPLE_FROM: i64 = 1_735_689_600; // 2025-01-01
const SAMPLE_TO: i64 = 2_145_916_800; // 2038-01-01
/// A week and an hour: the samples drift through the hours of the day and
/// the days of the week, so a DST rule that differs by a weekend is seen.
const SAMPLE_STEP: i64 = 7 * 86_400 + 3_600;

const HISTORY_FROM: i64 = 0; // 1970-01-01

fn fingerprint(tz: Tz) -> Vec<i32> {
    fingerprint_from(tz, SAMPLE_FROM)
}

fn fingerprint_from(tz: Tz, from: i64) -> Vec<i32> {
    (0..)
        .map(|i| from + i * SAMPLE_STEP)
        .take_while(|t| *t < SAMPLE_TO)
        .map(|t| {
            Utc.timestamp_opt(t, 0).single().map_or(0, |u| {
                tz.offset_from_utc_datetime(&u.naive_utc())
                    .fix()
                    .local_minus_utc()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_zones_map_directly() {
        assert_eq!(windows_zone("Asia/Shanghai"), Some("China Standard Time"));
        assert_eq!(
            windows_zone("America/New_York"),
            Some("Eastern Standard Time")
        );
        assert_eq!(
            windows_zone("Europe/Berlin"),
            Some("W. Europe Standard Time")
        );
        assert_eq!(windows_zone("Etc/UTC"), Some("UTC"));
        assert_eq!(windows_zone("UTC"), Some("UTC"));
    }

    #[test]
    fn renamed_zones_map_through_their_old_cldr_spelling() {
        assert_eq!(windows_zone("Asia/Kolkata"), Some("India Standard Time"));
        assert_eq!(windows_zone("Europe/Kyiv"), Some("FLE Standard Time"));
        assert_eq!(windows_zone("Asia/Kathmandu"), Some("Nepal Standard Time"));
        assert_eq!(
            windows_zone("Asia/Ho_Chi_Minh"),
            Some("SE Asia Standard Time")
        );
        assert_eq!(
            windows_zone("America/Argentina/Buenos_Aires"),
            Some("Argentina Standard Time")
        );
    }

    #[test]
    fn unknown_names_have_no_windows_zone() {
        assert_eq!(windows_zone("Mars/Olympus_Mons"), None);
        assert_eq!(iana_zone("Mars Standard Time"), None);
    }

    #[test]
    fn windows_ids_map_back_to_their_golden_zone() {
        assert_eq!(iana_zone("China Standard Time"), Some("Asia/Shanghai"));
        assert_eq!(iana_zone("Eastern Standard Time"), Some("America/New_York"));
        assert_eq!(iana_zone("UTC"), Some("Etc/UTC"));
    }

    #[test]
    fn zones_cldr_groups_wrongly_get_a_windows_zone_with_their_rules() {
        // CLDR lists Scoresbysund under Azores time, which it left in 2024.
        let windows = windows_zone("America/Scoresbysund").unwrap();
        assert_ne!(windows, "Azores Standard Time");
        assert_eq!(windows, windows_zone("America/Nuuk").unwrap());
    }

    /// Every IANA zone that maps maps to a Windows zone whose golden zone
    /// keeps the same offsets in the years a mirror writes: the round trip
    /// loses no instant.
    #[test]
    fn every_mapped_zone_round_trips_to_the_same_rules() {
        let mut mapped = 0;
        for tz in chrono_tz::TZ_VARIANTS {
            let Some(windows) = windows_zone(tz.name()) else {
                continue;
            };
            mapped += 1;
            let golden: Tz = iana_zone(windows).unwrap().parse().unwrap();
            for year in 2025..2038 {
                for month in 1..=12 {
                    let t = Utc.with_ymd_and_hms(year, month, 15, 12, 0, 0).unwrap();
                    let off = |z: Tz| z.offset_from_utc_datetime(&t.naive_utc()).fix();
                    assert_eq!(
                        off(tz),
                        off(golden),
                        "{} -> {windows} -> {golden} at {t}",
                        tz.name()
                    );
                }
            }
        }
        assert!(mapped > 500, "only {mapped} zones map");
    }
}
