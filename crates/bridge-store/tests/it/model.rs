//! A random sequence of dirty-queue and dedupe operations must behave
//! exactly like a few lines of `BTreeMap` code.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use bridge_store::{MIN_DEDUPE_TTL, Store};

const CALENDARS: [&str; 3] = ["cal-a", "cal-b", "cal-c"];
const REASONS: [&str; 2] = ["webhook", "poll"];
const KEYS: [&str; 3] = ["ev-1", "ev-2", "ev-3"];

#[derive(Debug, Clone)]
enum Op {
    Mark { cal: usize, reason: usize, at: i64 },
    Clear { cal: usize, up_to: i64 },
    Seen { key: usize, now: i64, ttl_secs: u64 },
    Purge { now: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    // Times span several TTLs so that expiry matters; TTLs straddle the minimum.
    let time = 0i64..120_000;
    prop_oneof![
        (0..CALENDARS.len(), 0..REASONS.len(), time.clone())
            .prop_map(|(cal, reason, at)| Op::Mark { cal, reason, at }),
        (0..CALENDARS.len(), time.clone()).prop_map(|(cal, up_to)| Op::Clear { cal, up_to }),
        (0..KEYS.len(), time.clone(), 0u64..60_000).prop_map(|(key, now, ttl_secs)| Op::Seen {
            key,
            now,
            ttl_secs
        }),
        time.prop_map(|now| Op::Purge { now }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dirty {
    since: i64,
    last: i64,
    hints: u64,
    reason: &'static str,
}

#[derive(Default)]
struct Model {
    dirty: BTreeMap<&'static str, Dirty>,
    /// key -> expires_at
    seen: BTreeMap<&'static str, i64>,
}

async fn check(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = Store::in_memory().await.unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Mark { cal, reason, at } => {
                let (cal, reason) = (CALENDARS[cal], REASONS[reason]);
                let got = store.mark_dirty(cal, reason, at).await.unwrap();
                let e = m
                    .dirty
                    .entry(cal)
                    .and_modify(|e| {
                        e.since = e.since.min(at);
                        if at >= e.last {
                            e.last = at;
                            e.reason = reason;
                        }
                        e.hints += 1;
                    })
                    .or_insert(Dirty {
                        since: at,
                        last: at,
                        hints: 1,
                        reason,
                    });
                prop_assert_eq!(
                    (got.since, got.last_hint_at, got.hints, got.reason.as_str()),
                    (e.since, e.last, e.hints, e.reason)
                );
            }
            Op::Clear { cal, up_to } => {
                let cal = CALENDARS[cal];
                let got = store.clear_dirty(cal, up_to).await.unwrap();
                let want = m.dirty.get(cal).is_some_and(|e| e.last <= up_to);
                if want {
                    m.dirty.remove(cal);
                }
                prop_assert_eq!(got, want);
            }
            Op::Seen { key, now, ttl_secs } => {
                let key = KEYS[key];
                let ttl = Duration::from_secs(ttl_secs);
                let got = store.seen_or_insert(key, now, ttl).await.unwrap();
                let want = m.seen.get(key).is_some_and(|&exp| now < exp);
                if !want {
                    let ttl = ttl.max(MIN_DEDUPE_TTL).as_secs() as i64;
                    m.seen.insert(key, now + ttl);
                }
                prop_assert_eq!(got, want);
            }
            Op::Purge { now } => {
                let got = store.purge_expired(now).await.unwrap();
                let before = m.seen.len();
                m.seen.retain(|_, exp| now < *exp);
                prop_assert_eq!(got, (before - m.seen.len()) as u64);
            }
        }
    }

    let mut want: Vec<(i64, &str, i64, u64, &str)> = m
        .dirty
        .iter()
        .map(|(cal, e)| (e.since, *cal, e.last, e.hints, e.reason))
        .collect();
    want.sort();
    let got: Vec<(i64, String, i64, u64, String)> = store
        .dirty()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.since, e.calendar_id, e.last_hint_at, e.hints, e.reason))
        .collect();
    let got: Vec<(i64, &str, i64, u64, &str)> = got
        .iter()
        .map(|(s, c, l, h, r)| (*s, c.as_str(), *l, *h, r.as_str()))
        .collect();
    prop_assert_eq!(got, want);
    prop_assert_eq!(store.stats().await.unwrap().dedupe, m.seen.len() as u64);
    Ok(())
}

#[test]
fn queue_and_dedupe_match_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..60), |ops| {
            rt.block_on(check(ops))
        })
        .unwrap();
}
