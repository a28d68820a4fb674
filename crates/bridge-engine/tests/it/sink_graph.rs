//! The Graph sink through the real engine: a static source of sample
//! events, the Graph emulator as the target. The sink's request bodies are
//! also checked by `tests/graph-csdl/graph_event_check.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridge_core::feishu::Event;
use bridge_emulators::graph::{
    Faults, GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
};
use bridge_engine::{Engine, EngineConfig, Sink};
use bridge_http::{Backoff, Jitter, RetryPolicy, Secret, ServerWait};
use bridge_sinks::graph::{
    ClientConfig, Credentials, GraphClient, GraphSink, GraphSinkConfig, OnTargetDelete,
    TargetCalendar,
};
use bridge_store::Store;

use crate::static_source::StaticSource;
use serde_json::Value;

const BASE: i64 = 1_790_000_000;
const UPN: &str = "alice@contoso.example";
const KEY_TAG: &str = "String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 6,
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(50),
            jitter: Jitter::Equal,
        },
        server_wait: ServerWait::Instead {
            cap: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
        },
        max_total_wait: Duration::from_secs(10),
    }
}

fn sink(emu: &GraphEmulator, store: &Store, id: &str, on_delete: OnTargetDelete) -> Arc<GraphSink> {
    let client = GraphClient::new(
        ClientConfig {
            base_url: emu.base_url(),
            token_url: emu.token_url(),
            mailbox: UPN.into(),
            retry: fast_retry(),
            timeout: Duration::from_secs(20),
        },
        Credentials::Secret {
            client_id: TEST_CLIENT_ID.into(),
            secret: Secret::new(TEST_CLIENT_SECRET),
        },
        None,
    )
    .map_err(|e| e.to_string());
    Arc::new(GraphSink::new(
        GraphSinkConfig {
            id: id.into(),
            privacy: bridge_core::Privacy::Full,
            calendar: TargetCalendar::Primary,
            on_target_delete: on_delete,
        },
        client,
        Arc::new(bridge_engine::SinkState::new(store.clone(), id)),
    ))
}

struct Setup {
    emu: GraphEmulator,
    engine: Engine,
    sink: Arc<GraphSink>,
    source: Arc<StaticSource>,
}

fn engine(source: &Arc<StaticSource>, sink: &Arc<GraphSink>, store: Store) -> Engine {
    Engine::new(
        source.clone(),
        vec![sink.clone() as Arc<dyn Sink>],
        store,
        EngineConfig::default(),
    )
}

async fn setup(on_delete: OnTargetDelete, n: usize) -> Setup {
    let emu = GraphEmulator::start_with(GraphConfig {
        rate_limit: None,
        ..GraphConfig::default()
    })
    .await
    .unwrap();
    emu.add_mailbox(UPN, MailboxAccess::Enabled);
    let store = Store::in_memory().await.unwrap();
    let sink = sink(&emu, &store, "graph:test", on_delete);
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(n, 42, BASE)));
    let engine = engine(&source, &sink, store);
    Setup {
        emu,
        engine,
        sink,
        source,
    }
}

/// Stored singles and masters by their key tag; panics on a duplicate.
fn by_key(emu: &GraphEmulator) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in emu.events(UPN).unwrap() {
        let key = e["singleValueExtendedProperties"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"] == KEY_TAG)
            .and_then(|p| p["value"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("an event without our key tag: {e}"));
        let id = e["id"].clone();
        assert!(
            out.insert(key.clone(), e).is_none(),
            "duplicate of {key} ({id})"
        );
    }
    out
}

/// The Python CSDL checker, on every event body the sink sent.
fn check_bodies_with_python(emu: &GraphEmulator) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let checker = root.join("tests/graph-csdl/graph_event_check.py");
    let csdl = root.join("tests/graph-csdl/event-subset-v1.0.csdl");
    let dir: PathBuf = root.join("target/graph-csdl-bodies");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for c in emu.calls() {
        let Some(body) = c.body.filter(|_| c.path.contains("/events")) else {
            continue;
        };
        // One body per shape of keys is enough for the checker.
        let shape: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
        let sig = format!(
            "{} {shape:?} {}",
            c.method, body["recurrence"]["pattern"]["type"]
        );
        if seen.insert(sig) {
            let f = dir.join(format!("{:03}.json", seen.len()));
            std::fs::write(&f, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
        }
    }
    assert!(seen.len() >= 3, "too few bodies captured: {}", seen.len());
    let venv = root.join("target/pyenv/bin/python");
    let python = if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    };
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let out = std::process::Command::new(&python)
            .arg(&checker)
            .arg(&csdl)
            .arg(f.path())
            .output()
            .expect("python3 runs the CSDL checker");
        assert!(
            out.status.success(),
            "{} fails the CSDL check:\n{}",
            f.path().display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_then_makes_no_writes_and_bodies_pass_the_csdl_checker() {
    let s = setup(OnTargetDelete::Restore, 300).await;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    assert!(sr.created > 0);
    let writes = s.emu.write_count();
    let calls = s.emu.calls();
    assert!(
        calls
            .iter()
            .filter(|c| c.path.starts_with("/v1.0/users"))
            .all(|c| c.immutable_id),
        "a call without Prefer: IdType"
    );
    assert!(calls.iter().any(|c| c.batch_part), "no batch was used");
    assert!(calls.iter().filter(|c| c.method == "PATCH").all(|c| {
        c.body
            .as_ref()
            .is_none_or(|b| b.get("transactionId").is_none())
    }));
    assert!(
        calls
            .iter()
            .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
            .all(|c| c
                .body
                .as_ref()
                .is_some_and(|b| b["transactionId"].is_string()))
    );
    assert!(
        s.emu.side_effects().is_empty(),
        "invitations or meetings: {:?}",
        s.emu.side_effects()
    );
    assert!(s.emu.peak_concurrency() <= 4);
    assert_eq!(s.emu.over_concurrency(), 0);
    let stored = by_key(&s.emu);
    assert!(stored.values().any(|e| e["type"] == "seriesMaster"));
    // Modified occurrences are exceptions of their masters.
    let view = s
        .emu
        .view(UPN, None, "2026-01-01T00:00:00Z", "2027-06-01T00:00:00Z")
        .unwrap();
    assert!(
        view.iter().any(|v| v["type"] == "exception"),
        "no exception written"
    );
    let r2 = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr2 = &r2[0].sinks[0];
    assert_eq!(
        (
            sr2.created,
            sr2.updated,
            sr2.deleted,
            sr2.drift_rewrites,
            sr2.orphans_deleted
        ),
        (0, 0, 0, 0, 0),
        "{sr2:?}"
    );
    assert_eq!(s.emu.write_count(), writes, "the second reconcile wrote");
    check_bodies_with_python(&s.emu);
    assert!(s.sink.client().unwrap().stats().total("") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_delete_is_restored_or_respected_and_user_edits_are_rewritten() {
    for mode in [OnTargetDelete::Restore, OnTargetDelete::Respect] {
        let s = setup(mode, 60).await;
        s.engine.reconcile(None, false, BASE).await.unwrap();
        let events = by_key(&s.emu);
        let (victim_key, victim) = events
            .iter()
            .find(|(_, e)| e["type"] == "singleInstance")
            .map(|(k, e)| (k.clone(), e["id"].as_str().unwrap().to_owned()))
            .unwrap();
        s.emu.user_delete(UPN, &victim).unwrap();
        let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
        let sr = &r[0].sinks[0];
        let back = by_key(&s.emu).contains_key(&victim_key);
        match mode {
            OnTargetDelete::Restore => {
                assert!(back, "restored");
                assert_eq!(sr.drift_rewrites, 1, "{sr:?}");
            }
            OnTargetDelete::Respect => {
                assert!(!back, "left deleted");
                assert_eq!(sr.tombstoned, 1, "{sr:?}");
            }
        }
        // A user's edit is overwritten by the next reconcile.
        let (edited_key, edited) = by_key(&s.emu)
            .iter()
            .find(|(k, e)| **k != victim_key && e["type"] == "singleInstance")
            .map(|(k, e)| (k.clone(), e["id"].as_str().unwrap().to_owned()))
            .unwrap();
        let before = by_key(&s.emu)[&edited_key]["subject"].clone();
        s.emu
            .user_edit(
                UPN,
                &edited,
                serde_json::json!({"subject": "edited in Outlook"}),
            )
            .unwrap();
        let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
        assert_eq!(r[0].sinks[0].drift_rewrites, 1, "{:?}", r[0].sinks[0]);
        assert_eq!(by_key(&s.emu)[&edited_key]["subject"], before);
        let writes = s.emu.write_count();
        let r = s.engine.reconcile(None, false, BASE + 180).await.unwrap();
        assert_eq!(r[0].sinks[0].drift_rewrites, 0);
        assert_eq!(s.emu.write_count(), writes, "{mode:?}: the last pass wrote");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_lost_before_their_record_are_adopted_not_duplicated() {
    let s = setup(OnTargetDelete::Restore, 80).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    let first = by_key(&s.emu);
    // A crash after the creates, before any record: a fresh store. One
    // event changed meanwhile (its repeated transactionId is refused).
    {
        let mut evs = s.source.0.lock().unwrap();
        let e = evs
            .iter_mut()
            .find(|e| {
                e.recurrence.as_deref().is_none_or(str::is_empty) && e.recurring_event_id.is_none()
            })
            .unwrap();
        e.summary = Some("changed during the crash".into());
    }
    let store = Store::in_memory().await.unwrap();
    let sink = sink(&s.emu, &store, "graph:test", OnTargetDelete::Restore);
    let engine = engine(&s.source, &sink, store);
    let r = engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let after = by_key(&s.emu);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert!(
        after
            .values()
            .any(|e| e["subject"] == "changed during the crash")
    );
    assert!(
        s.emu
            .calls()
            .iter()
            .any(|c| c.code.as_deref() == Some("ErrorDuplicateTransactionId"))
    );
    let writes = s.emu.write_count();
    engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(s.emu.write_count(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_leaves_no_stale_occurrence() {
    let s = setup(OnTargetDelete::Restore, 300).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    // A master with exceptions gets a new rule; Feishu drops its exceptions.
    let uid = {
        let evs = s.source.0.lock().unwrap();
        evs.iter()
            .filter(|e| e.recurrence.as_deref().is_some_and(|r| !r.is_empty()))
            .filter_map(|e| e.event_id.clone())
            .find(|m| {
                evs.iter()
                    .any(|e| e.recurring_event_id.as_deref() == Some(m.as_str()))
            })
            .expect("a series with an exception")
    };
    {
        let mut evs = s.source.0.lock().unwrap();
        evs.retain(|e| e.recurring_event_id.as_deref() != Some(uid.as_str()));
        for e in evs.iter_mut() {
            if e.event_id.as_deref() == Some(uid.as_str()) {
                e.recurrence = Some("FREQ=DAILY;COUNT=3".into());
            }
        }
    }
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let keys = by_key(&s.emu);
    let master = keys
        .iter()
        .find(|(k, _)| k.starts_with(uid.as_str()) && k.ends_with("_0"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| {
            panic!(
                "no master of {uid} in {:?}",
                keys.keys().take(5).collect::<Vec<_>>()
            )
        });
    let id = master["id"].as_str().unwrap();
    let view = s
        .emu
        .view(UPN, None, "2020-01-01T00:00:00Z", "2030-01-01T00:00:00Z")
        .unwrap();
    let of_series: Vec<&Value> = view.iter().filter(|v| v["seriesMasterId"] == id).collect();
    assert_eq!(of_series.len(), 3, "{of_series:#?}");
    assert!(of_series.iter().all(|v| v["type"] == "occurrence"));
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(s.emu.write_count(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_faults_converge_without_duplicates() {
    let s = setup(OnTargetDelete::Restore, 120).await;
    s.emu.set_faults(Faults {
        rate_429: 0.1,
        rate_503: 0.1,
        retry_after_secs: 1,
        seed: Some(7),
        ..Faults::default()
    });
    let mut passes = 0;
    loop {
        passes += 1;
        let r = s
            .engine
            .reconcile(None, false, BASE + passes * 3600)
            .await
            .unwrap();
        let sr = &r[0].sinks[0];
        if sr.failed == 0 && sr.deferred == 0 {
            break;
        }
        assert!(passes < 12, "no convergence: {sr:?}");
    }
    s.emu.set_faults(Faults::default());
    by_key(&s.emu);
    let r = s
        .engine
        .reconcile(None, false, BASE + 100 * 3600)
        .await
        .unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(
        (sr.created, sr.updated, sr.deleted, sr.failed),
        (0, 0, 0, 0),
        "{sr:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailbox_without_rest_pauses_the_sink_with_what_to_fix() {
    let s = setup(OnTargetDelete::Restore, 20).await;
    s.emu.set_access(UPN, MailboxAccess::NoRest).unwrap();
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert!(
        sr.paused
            .as_deref()
            .is_some_and(|m| m.contains("MailboxNotEnabledForRESTAPI") && m.contains("EWS")),
        "{sr:?}"
    );
    assert_eq!((sr.created, sr.failed), (0, 0));
    assert!(s.sink.paused().is_some());
}

fn timed(at: i64) -> bridge_core::feishu::TimeInfo {
    bridge_core::feishu::TimeInfo {
        timestamp: Some(bridge_core::feishu::UnixSeconds(at)),
        timezone: Some("Asia/Shanghai".into()),
        date: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_without_a_microsoft_pattern_is_written_as_single_occurrences() {
    let s = setup(OnTargetDelete::Restore, 0).await;
    // The 31st of every month: Microsoft would put it on the last day of
    // shorter months, so it has no pattern (2026-10-31 09:00 Shanghai).
    let start = 1_793_408_400;
    let master = Event {
        event_id: Some("monthly31_0".into()),
        summary: Some("On the 31st".into()),
        start_time: Some(timed(start)),
        end_time: Some(timed(start + 3600)),
        recurrence: Some("FREQ=MONTHLY;BYMONTHDAY=31;COUNT=4".into()),
        ..Event::default()
    };
    s.source.0.lock().unwrap().push(master);
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let stored = by_key(&s.emu);
    let keys: Vec<&String> = stored.keys().collect();
    // 2026-10-31, 2026-12-31, 2027-01-31, 2027-03-31.
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(
        stored
            .values()
            .all(|e| e["type"] == "singleInstance" && e["subject"] == "On the 31st")
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("monthly31_") && !k.ends_with("_0"))
    );
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(s.emu.write_count(), writes, "the rerun wrote");
    // The rule gets a pattern: the singles go, a master comes.
    for e in s.source.0.lock().unwrap().iter_mut() {
        e.recurrence = Some("FREQ=WEEKLY;COUNT=3".into());
    }
    let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let stored = by_key(&s.emu);
    assert_eq!(stored.len(), 1, "{:?}", stored.keys().collect::<Vec<_>>());
    assert_eq!(stored["monthly31_0"]["type"], "seriesMaster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_taken_back_while_the_master_changes_leave_no_stale_occurrence() {
    let s = setup(OnTargetDelete::Restore, 300).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    // Every series with exceptions (modified or cancelled ones) loses them
    // while its master is renamed.
    let uids: Vec<String> = {
        let evs = s.source.0.lock().unwrap();
        evs.iter()
            .filter(|e| e.recurrence.as_deref().is_some_and(|r| !r.is_empty()))
            .filter_map(|e| e.event_id.clone())
            .filter(|m| {
                evs.iter()
                    .any(|e| e.recurring_event_id.as_deref() == Some(m.as_str()))
            })
            .collect()
    };
    assert!(!uids.is_empty());
    {
        let mut evs = s.source.0.lock().unwrap();
        evs.retain(|e| {
            !e.recurring_event_id
                .as_deref()
                .is_some_and(|m| uids.iter().any(|u| u == m))
        });
        for e in evs.iter_mut() {
            if e.event_id.as_ref().is_some_and(|id| uids.contains(id)) {
                e.summary = Some("Renamed series".into());
            }
        }
    }
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let masters: Vec<String> = by_key(&s.emu)
        .values()
        .filter(|e| e["subject"] == "Renamed series")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(masters.len(), uids.len());
    let view = s
        .emu
        .view(UPN, None, "2025-01-01T00:00:00Z", "2028-01-01T00:00:00Z")
        .unwrap();
    for v in view.iter().filter(|v| {
        v["seriesMasterId"]
            .as_str()
            .is_some_and(|m| masters.iter().any(|x| x == m))
    }) {
        assert_eq!(v["subject"], "Renamed series", "a stale occurrence: {v}");
    }
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(s.emu.write_count(), writes);
}

/// A weekly series of five (from 2026-10-31 09:00 Shanghai) whose second
/// occurrence is moved by an hour in Feishu.
fn weekly_with_an_override() -> (Vec<Event>, i64) {
    let start = 1_793_408_400;
    let week = 7 * 86_400;
    let master = Event {
        event_id: Some("weekly_0".into()),
        summary: Some("Weekly".into()),
        start_time: Some(timed(start)),
        end_time: Some(timed(start + 3600)),
        recurrence: Some("FREQ=WEEKLY;COUNT=5".into()),
        ..Event::default()
    };
    let moved = Event {
        event_id: Some(format!("weekly_{}", start + week)),
        summary: Some("Weekly (moved)".into()),
        start_time: Some(timed(start + week + 3600)),
        end_time: Some(timed(start + week + 7200)),
        is_exception: Some(true),
        recurring_event_id: Some("weekly_0".into()),
        ..Event::default()
    };
    (vec![master, moved], start)
}

/// The series' instances in the emulator, by original start.
fn instances(emu: &GraphEmulator) -> BTreeMap<String, Value> {
    emu.view(UPN, None, "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z")
        .unwrap()
        .into_iter()
        .filter(|v| v["seriesMasterId"].is_string())
        .map(|v| (v["originalStart"].as_str().unwrap().to_owned(), v))
        .collect()
}

fn utc(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_edit_of_one_occurrence_is_written_back_on_that_occurrence_alone() {
    let s = setup(OnTargetDelete::Restore, 0).await;
    let (events, start) = weekly_with_an_override();
    *s.source.0.lock().unwrap() = events;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let before = instances(&s.emu);
    assert_eq!(before.len(), 5, "{before:#?}");
    let week = 7 * 86_400;
    let ours = before[&utc(start + week)].clone();
    let plain = before[&utc(start + 3 * week)].clone();
    assert_eq!(ours["type"], "exception");
    assert_eq!(plain["type"], "occurrence");
    // In Outlook: our modified occurrence renamed, a plain one moved.
    s.emu
        .user_edit(
            UPN,
            ours["id"].as_str().unwrap(),
            serde_json::json!({"subject": "mine"}),
        )
        .unwrap();
    s.emu
        .user_edit(
            UPN,
            plain["id"].as_str().unwrap(),
            serde_json::json!({"start": {"dateTime": "2026-11-21T05:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2026-11-21T06:00:00", "timeZone": "UTC"}}),
        )
        .unwrap();
    let calls = s.emu.calls().len();
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!((sr.failed, sr.drift_rewrites), (0, 1), "{sr:?}");
    let after = instances(&s.emu);
    for (orig, v) in &before {
        let a = &after[orig];
        assert_eq!(
            (&a["subject"], &a["start"], &a["end"]),
            (&v["subject"], &v["start"], &v["end"]),
            "{orig}"
        );
    }
    // Only the two occurrences were written, the master was not.
    let master = ours["seriesMasterId"].as_str().unwrap();
    let writes: Vec<String> = s.emu.calls()[calls..]
        .iter()
        .filter(|c| c.method != "GET" && c.path.contains("/events"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(writes.iter().all(|w| w.starts_with("PATCH")), "{writes:?}");
    assert!(
        !writes
            .iter()
            .any(|w| w.contains(master) || w.contains(&bridge_sinks::graph::client::seg(master))),
        "{writes:?}"
    );
    let n = s.emu.write_count();
    let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].drift_rewrites, 0);
    assert_eq!(s.emu.write_count(), n, "the rerun wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_delete_of_one_occurrence_is_restored_or_respected() {
    for mode in [OnTargetDelete::Restore, OnTargetDelete::Respect] {
        let s = setup(mode, 0).await;
        let (events, start) = weekly_with_an_override();
        *s.source.0.lock().unwrap() = events;
        s.engine.reconcile(None, false, BASE).await.unwrap();
        let week = 7 * 86_400;
        let before = instances(&s.emu);
        // Our modified occurrence and a plain one deleted in Outlook.
        for t in [start + week, start + 2 * week] {
            s.emu
                .user_delete(UPN, before[&utc(t)]["id"].as_str().unwrap())
                .unwrap();
        }
        assert_eq!(instances(&s.emu).len(), 3);
        let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
        let sr = &r[0].sinks[0];
        assert_eq!(sr.failed, 0, "{mode:?}: {sr:?}");
        let after = instances(&s.emu);
        let stored = by_key(&s.emu);
        assert_eq!(stored.len(), 1, "{mode:?}: one master, no duplicate");
        match mode {
            OnTargetDelete::Restore => {
                // Graph cannot bring one occurrence back: the series is
                // written anew, with its modified occurrence.
                assert_eq!(after.len(), 5, "{after:#?}");
                for (orig, v) in &before {
                    let a = &after[orig];
                    assert_eq!((&a["subject"], &a["start"]), (&v["subject"], &v["start"]));
                }
            }
            OnTargetDelete::Respect => {
                assert_eq!(after.len(), 3, "{after:#?}");
                assert_eq!(sr.tombstoned, 1, "{sr:?}");
            }
        }
        let n = s.emu.write_count();
        let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
        assert_eq!(r[0].sinks[0].failed, 0);
        assert_eq!(s.emu.write_count(), n, "{mode:?}: the rerun wrote");
        assert_eq!(instances(&s.emu).len(), after.len());
    }
}

/// GETs of one event by id (a series master read for its occurrences).
fn event_reads(calls: &[bridge_emulators::graph::CallRecord]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "GET")
        .filter_map(|c| c.path.rsplit_once("/events/").map(|(_, id)| id.to_owned()))
        .filter(|id| !id.contains('/'))
        .collect()
}

/// Every instance of the calendar around the sample, by master and
/// original start.
fn occurrences(emu: &GraphEmulator) -> BTreeMap<(String, String), Value> {
    emu.view(UPN, None, "2026-06-01T00:00:00Z", "2027-12-31T00:00:00Z")
        .unwrap()
        .into_iter()
        .filter_map(|v| {
            let m = v["seriesMasterId"].as_str()?.to_owned();
            let o = v["originalStart"].as_str()?.to_owned();
            Some(((m, o), v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noop_reconcile_reads_no_master_and_any_field_a_user_edits_on_one_occurrence_is_found() {
    let s = setup(OnTargetDelete::Restore, 300).await;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let masters = s
        .emu
        .events(UPN)
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "seriesMaster")
        .count();
    assert!(masters > 5, "the sample has series");
    // The no-op rerun: listing calls only, no master read, no write.
    let n = s.emu.calls().len();
    let writes = s.emu.write_count();
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!((sr.failed, sr.drift_rewrites), (0, 0), "{sr:?}");
    let calls = s.emu.calls()[n..].to_vec();
    assert_eq!(
        event_reads(&calls),
        Vec::<String>::new(),
        "a master was read"
    );
    assert_eq!(s.emu.write_count(), writes, "the no-op rerun wrote");
    assert!(
        calls
            .iter()
            .all(|c| c.method == "GET" || c.path.ends_with("/token")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/calendarView/delta")),
        "the change feed was not followed"
    );
    // In Outlook, one plain occurrence of some series: one property we
    // write changed, nothing else. Each is found on the next full pass and
    // written back on that occurrence, reading that master only.
    let before = occurrences(&s.emu);
    let plain: Vec<(String, String)> = before
        .iter()
        .filter(|(_, v)| v["type"] == "occurrence")
        .map(|(k, _)| k.clone())
        .collect();
    let edits = [
        serde_json::json!({"body": {"contentType": "text", "content": "my notes"}}),
        serde_json::json!({"location": {"displayName": "Elsewhere"}}),
        serde_json::json!({"showAs": "oof"}),
        serde_json::json!({"sensitivity": "confidential"}),
        serde_json::json!({"isReminderOn": true, "reminderMinutesBeforeStart": 1234}),
        serde_json::json!({"subject": "Mine now"}),
    ];
    let mut at = BASE + 120;
    for (i, patch) in edits.iter().enumerate() {
        // Occurrences of different series, far apart in the listing.
        let k = &plain[i * plain.len() / edits.len()];
        let id = before[k]["id"].as_str().unwrap();
        s.emu.user_edit(UPN, id, patch.clone()).unwrap();
        let n = s.emu.calls().len();
        let r = s.engine.reconcile(None, false, at).await.unwrap();
        at += 60;
        assert_eq!(
            r[0].sinks[0].failed, 0,
            "{patch}: {:?}",
            r[0].sinks[0].errors
        );
        let reads = event_reads(&s.emu.calls()[n..]);
        assert!(
            !reads.is_empty() && reads.len() <= 2 && reads.len() < masters,
            "{patch}: masters read {reads:?}"
        );
        let after = occurrences(&s.emu);
        for field in patch.as_object().unwrap().keys() {
            let (got, want) = (&after[k][field], &before[k][field]);
            let same = match field.as_str() {
                "body" => got["content"] == want["content"],
                "location" => got["displayName"] == want["displayName"],
                _ => got == want,
            };
            assert!(same, "{patch}: {field} is {got}, was {want}");
        }
    }
    // A deleted plain occurrence is found too (restored: the series is
    // written anew), and the pass after makes no write.
    let k = &plain[plain.len() / 2 + 1];
    s.emu
        .user_delete(UPN, before[k]["id"].as_str().unwrap())
        .unwrap();
    let r = s.engine.reconcile(None, false, at).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let after = occurrences(&s.emu);
    assert!(
        after
            .values()
            .any(|v| v["originalStart"] == k.1.as_str() && v["subject"] == before[k]["subject"]),
        "the deleted occurrence is not back"
    );
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, at + 60).await.unwrap();
    let n = s.emu.calls().len();
    let r = s.engine.reconcile(None, false, at + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].drift_rewrites, 0);
    assert_eq!(s.emu.write_count(), writes, "a pass after the repair wrote");
    assert_eq!(event_reads(&s.emu.calls()[n..]), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_change_feed_checks_every_series_once_and_misses_no_edit() {
    let s = setup(OnTargetDelete::Respect, 120).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    let masters: Vec<String> = s
        .emu
        .events(UPN)
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "seriesMaster")
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!masters.is_empty());
    let before = occurrences(&s.emu);
    let (k, v) = before
        .iter()
        .find(|(_, v)| v["type"] == "occurrence")
        .expect("a plain occurrence");
    // A user's edit, then Graph evicts the feed's token (410 on its use).
    s.emu
        .user_edit(
            UPN,
            v["id"].as_str().unwrap(),
            serde_json::json!({"showAs": "free"}),
        )
        .unwrap();
    s.emu.expire_delta_tokens();
    let n = s.emu.calls().len();
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let calls = s.emu.calls()[n..].to_vec();
    assert!(
        calls
            .iter()
            .any(|c| c.path.ends_with("/calendarView/delta") && c.status == 410),
        "the evicted token was not used"
    );
    let reads = event_reads(&calls);
    assert_eq!(
        reads.len(),
        masters.len(),
        "every master read once: {reads:?}"
    );
    assert_eq!(
        occurrences(&s.emu)[k]["showAs"],
        v["showAs"],
        "the edit stayed"
    );
    // The new feed serves the next pass: no master read.
    s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    let n = s.emu.calls().len();
    s.engine.reconcile(None, false, BASE + 180).await.unwrap();
    assert_eq!(event_reads(&s.emu.calls()[n..]), Vec::<String>::new());
}

/// Later occurrences in New York's repeated and skipped hours (and ones
/// ending in the repeated hour or spanning the change) show at Feishu's
/// exact instants, written as exceptions; a second pass writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_occurrences_in_repeated_or_skipped_hours_are_exact() {
    let s = setup(OnTargetDelete::Restore, 0).await;
    let (events, expected, (from, to)) = crate::sink_ews::dst_later_occurrences();
    *s.source.0.lock().unwrap() = events;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    let secs = |v: &Value| {
        assert_eq!(v["timeZone"], "UTC");
        chrono::NaiveDateTime::parse_from_str(
            v["dateTime"].as_str().unwrap(),
            "%Y-%m-%dT%H:%M:%S%.f",
        )
        .unwrap()
        .and_utc()
        .timestamp()
    };
    let shown = |emu: &GraphEmulator| {
        let mut v: Vec<(String, i64, i64)> = emu
            .view(UPN, None, &utc(from), &utc(to))
            .unwrap()
            .into_iter()
            .map(|v| {
                (
                    v["subject"].as_str().unwrap_or_default().to_owned(),
                    secs(&v["start"]),
                    secs(&v["end"]),
                )
            })
            .filter(|i| (from..to).contains(&i.1))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shown(&s.emu), expected);
    let exceptions: Vec<i64> = s
        .emu
        .view(UPN, None, &utc(from), &utc(to))
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "exception")
        .map(|v| secs(&v["start"]))
        .collect();
    for t in [1_793_511_000, 1_772_955_000] {
        assert!(exceptions.contains(&t), "{t} in {exceptions:?}");
    }
    let writes = s.emu.write_count();
    let r2 = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr2 = &r2[0].sinks[0];
    assert_eq!(
        (
            sr2.created,
            sr2.updated,
            sr2.deleted,
            sr2.drift_rewrites,
            sr2.orphans_deleted
        ),
        (0, 0, 0, 0, 0),
        "{sr2:?}"
    );
    assert_eq!(s.emu.write_count(), writes, "the second reconcile wrote");
    assert_eq!(shown(&s.emu), expected);
}

/// A user's edit of a plain occurrence of a series with exact occurrences:
/// drift counts the exact ones as ours and writes back the edited one alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_occurrences_are_ours_when_drift_reads_their_master() {
    let s = setup(OnTargetDelete::Restore, 0).await;
    let (events, _, _) = crate::sink_ews::dst_later_occurrences();
    *s.source.0.lock().unwrap() = events;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    // The open-ended Sunday series' instances by original start (other
    // series share some original starts).
    let master = instances(&s.emu)
        .into_values()
        .find(|v| v["subject"] == "Sundays at 01:30, no end")
        .map(|v| v["seriesMasterId"].clone())
        .expect("the Sunday series");
    let sundays = |emu: &GraphEmulator| -> BTreeMap<String, Value> {
        emu.view(UPN, None, "2026-10-01T00:00:00Z", "2027-01-01T00:00:00Z")
            .unwrap()
            .into_iter()
            .filter(|v| v["seriesMasterId"] == master)
            .map(|v| (v["originalStart"].as_str().unwrap().to_owned(), v))
            .collect()
    };
    let before = sundays(&s.emu);
    // Nov 1 2026 01:30 is repeated: an exact exception; Nov 8 is plain.
    let exact = &before[&utc(1_793_511_000)];
    assert_eq!(exact["type"], "exception", "{exact:#}");
    let plain = before[&utc(1_794_119_400)].clone();
    assert_eq!(plain["type"], "occurrence", "{plain:#}");
    s.emu
        .user_edit(
            UPN,
            plain["id"].as_str().unwrap(),
            serde_json::json!({"subject": "edited in Outlook"}),
        )
        .unwrap();
    let calls = s.emu.calls().len();
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{sr:?}");
    let after = sundays(&s.emu);
    for (orig, v) in &before {
        let a = &after[orig];
        assert_eq!(
            (&a["subject"], &a["start"], &a["end"]),
            (&v["subject"], &v["start"], &v["end"]),
            "{orig}"
        );
    }
    let writes: Vec<String> = s.emu.calls()[calls..]
        .iter()
        .filter(|c| c.method != "GET" && c.path.contains("/events"))
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(writes.len(), 1, "the edited occurrence alone: {writes:?}");
    let n = s.emu.write_count();
    let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].drift_rewrites, 0);
    assert_eq!(s.emu.write_count(), n, "the rerun wrote");
}
