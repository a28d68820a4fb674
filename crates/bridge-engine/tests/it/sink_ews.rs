//! The EWS sink through the real engine: a static source of sample events,
//! the EWS emulator as the target. Every request the sink sends here is
//! validated against Microsoft's schema (`tests/ews-schema`).

use std::sync::Arc;
use std::time::Duration;

use bridge_core::feishu::Event;
use bridge_emulators::ews::{EwsConfig, EwsEmulator, Faults, UserEdit};
use bridge_engine::{Engine, EngineConfig, Sink, SinkReport};
use bridge_http::{RetryPolicy, Secret};
use bridge_sinks::ews::{ClientConfig, Credentials, EwsSink, EwsSinkConfig, OnTargetDelete};
use bridge_store::Store;

use crate::static_source::StaticSource;
use chrono::{DateTime, Utc};

#[path = "../../../../tests/ews-schema/check.rs"]
mod schema;

const BASE: i64 = 1_790_000_000;
const MAILBOX: &str = "alice@example.com";

fn sink_config(emu: &EwsEmulator, on_delete: OnTargetDelete) -> EwsSinkConfig {
    EwsSinkConfig {
        id: "ews:test".into(),
        privacy: bridge_core::Privacy::Full,
        on_target_delete: on_delete,
        batch_size: 50,
        fallback_past_days: 365,
        fallback_future_days: 730,
        client: ClientConfig {
            url: emu.ews_url(),
            mailbox: MAILBOX.into(),
            impersonation: true,
            version: "Exchange2016".into(),
            max_concurrency: 4,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy {
                max_retries: 8,
                backoff: bridge_http::Backoff {
                    base: Duration::from_millis(5),
                    max: Duration::from_millis(50),
                    jitter: bridge_http::Jitter::Equal,
                },
                ..RetryPolicy::default()
            },
            extra_roots: Vec::new(),
        },
        password_file: None,
        pause_retry: bridge_sinks::ews::PAUSE_RETRY,
        folder: None,
        create_folder: false,
    }
}

fn basic(password: &str) -> Credentials {
    Credentials::Basic {
        username: "svc-bridge".into(),
        password: Secret::new(password),
    }
}

/// A pass of `engine` at `now` in which no item failed: the sink's report.
async fn clean_pass(engine: &Engine, now: i64) -> SinkReport {
    let mut r = engine.reconcile(None, false, now).await.unwrap();
    let sr = r.remove(0).sinks.remove(0);
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    sr
}

struct Setup {
    emu: EwsEmulator,
    engine: Engine,
    sink: Arc<EwsSink>,
    source: Arc<StaticSource>,
    store: Store,
}

async fn engine_for(
    emu: &EwsEmulator,
    sink: Arc<EwsSink>,
    source: Arc<StaticSource>,
    store: Store,
) -> Engine {
    let _ = emu;
    Engine::new(
        source,
        vec![sink as Arc<dyn Sink>],
        store,
        EngineConfig::default(),
    )
}

async fn setup(on_delete: OnTargetDelete, creds: Credentials) -> Setup {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let store = Store::in_memory().await.unwrap();
    let sink = Arc::new(EwsSink::new(sink_config(&emu, on_delete), creds));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(
        300, 42, BASE,
    )));
    let engine = engine_for(&emu, sink.clone(), source.clone(), store.clone()).await;
    Setup {
        emu,
        engine,
        sink,
        source,
        store,
    }
}

fn at(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap()
}

/// What CalendarView shows: (uid, start, end, subject), sorted.
fn view(emu: &EwsEmulator) -> Vec<(String, i64, i64, String)> {
    let mut v: Vec<_> = emu
        .calendar_view(MAILBOX, at(BASE - 400 * 86_400), at(BASE + 1200 * 86_400))
        .into_iter()
        .map(|i| {
            (
                i.fields.uid.clone().unwrap_or_default(),
                i.fields.start.unwrap().timestamp(),
                i.fields.end.unwrap().timestamp(),
                i.fields.subject.clone().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_valid_requests_then_makes_no_writes() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    let sr = clean_pass(&s.engine, BASE).await;
    assert!(sr.created > 0);
    let writes = s.emu.write_count();
    let before = view(&s.emu);
    assert!(!before.is_empty());
    let r2 = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr2 = &r2[0].sinks[0];
    assert_eq!(
        (sr2.created, sr2.updated, sr2.deleted, sr2.drift_rewrites),
        (0, 0, 0, 0),
        "{sr2:?}"
    );
    assert_eq!(s.emu.write_count(), writes, "second reconcile wrote");
    assert_eq!(view(&s.emu), before);
    // Every call impersonated the mailbox and routed by X-AnchorMailbox.
    assert!(
        s.emu
            .calls()
            .iter()
            .all(|c| c.anchor_mailbox.as_deref() == Some(MAILBOX))
    );
    schema::assert_valid(&s.emu.request_bodies());
    drop(s.sink);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_records_are_adopted_not_duplicated() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    let items = s.emu.items(MAILBOX).len();
    let before = view(&s.emu);
    // A crash between the writes and their records: a fresh store.
    let fresh = Store::in_memory().await.unwrap();
    let sink = Arc::new(EwsSink::new(
        sink_config(&s.emu, OnTargetDelete::Restore),
        basic("correct horse"),
    ));
    let engine = engine_for(&s.emu, sink, s.source.clone(), fresh).await;
    s.emu.reset_calls();
    clean_pass(&engine, BASE + 60).await;
    assert_eq!(s.emu.items(MAILBOX).len(), items, "no duplicate");
    assert_eq!(view(&s.emu), before);
    let creates: usize = s
        .emu
        .calls()
        .iter()
        .filter(|c| c.operation.as_deref() == Some("CreateItem"))
        .map(|c| c.writes)
        .sum();
    assert_eq!(creates, 0, "adopted, not written again");
    schema::assert_valid(&s.emu.request_bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_edits_and_deletes_follow_on_target_delete() {
    for mode in [OnTargetDelete::Restore, OnTargetDelete::Respect] {
        let s = setup(mode, basic("correct horse")).await;
        s.engine.reconcile(None, false, BASE).await.unwrap();
        let before = view(&s.emu);
        let singles: Vec<_> = s
            .emu
            .items(MAILBOX)
            .into_iter()
            .filter(|i| i.recurrence.is_none())
            .collect();
        let (edited, deleted) = (&singles[0], &singles[1]);
        assert!(s.emu.user_edit(
            &edited.id,
            UserEdit {
                subject: Some("edited in Outlook".into()),
                ..UserEdit::default()
            }
        ));
        assert!(s.emu.user_delete(&deleted.id));
        let sr = clean_pass(&s.engine, BASE + 60).await;
        let after = view(&s.emu);
        assert!(
            !after.iter().any(|i| i.3 == "edited in Outlook"),
            "the edit is rewritten"
        );
        let uid = deleted.fields.uid.clone().unwrap();
        match mode {
            OnTargetDelete::Restore => {
                assert_eq!(after, before, "restored");
                assert_eq!(sr.drift_rewrites, 2, "{sr:?}");
            }
            OnTargetDelete::Respect => {
                assert!(!after.iter().any(|i| i.0 == uid), "left deleted");
                assert_eq!(sr.tombstoned, 1, "{sr:?}");
            }
        }
        let writes = s.emu.write_count();
        s.engine.reconcile(None, false, BASE + 120).await.unwrap();
        assert_eq!(s.emu.write_count(), writes, "{mode:?}: third pass wrote");
        schema::assert_valid(&s.emu.request_bodies());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_rule_and_withdrawn_exceptions_leave_nothing_stale() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
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
    clean_pass(&s.engine, BASE + 60).await;
    let feishu_uid = s
        .emu
        .items(MAILBOX)
        .iter()
        .filter(|i| i.fields.extended.values().any(|v| *v == uid))
        .map(|i| (i.fields.uid.clone(), i.exceptions.len(), i.deleted.len()))
        .collect::<Vec<_>>();
    assert_eq!(feishu_uid.len(), 1, "one master: {feishu_uid:?}");
    assert_eq!(
        (feishu_uid[0].1, feishu_uid[0].2),
        (0, 0),
        "no stale exception"
    );
    let n = view(&s.emu)
        .iter()
        .filter(|i| Some(&i.0) == feishu_uid[0].0.as_ref())
        .count();
    assert_eq!(n, 3, "daily, three occurrences");
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(s.emu.write_count(), writes);
    schema::assert_valid(&s.emu.request_bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_converge_and_bad_credentials_pause_only_this_sink() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    s.emu.set_faults(Faults {
        busy_rate: 0.1,
        back_off_ms: 5,
        unavailable_rate: 0.1,
        seed: Some(7),
        ..Faults::default()
    });
    let mut last = None;
    for n in 0..6 {
        let r = s
            .engine
            .reconcile(None, false, BASE + n * 60)
            .await
            .unwrap();
        last = Some(r[0].sinks[0].clone());
    }
    s.emu.set_faults(Faults::default());
    let r = s.engine.reconcile(None, false, BASE + 600).await.unwrap();
    assert_eq!(
        r[0].sinks[0].failed, 0,
        "{:?} (after faults: {last:?})",
        r[0].sinks[0].errors
    );
    let converged = view(&s.emu);
    // The same set as a clean mirror.
    let clean = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    clean.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(converged, view(&clean.emu));
    // A wrong password pauses the sink with what to fix.
    let bad = setup(OnTargetDelete::Restore, basic("wrong")).await;
    let r = bad.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    let msg = sr.paused.clone().unwrap_or_default();
    assert!(msg.contains("password"), "{sr:?}");
    assert_eq!((sr.created, sr.failed), (0, 0));
    assert!(
        bad.store
            .list_records("ews:test", "feishu_cal_1")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_impersonation_pauses_with_its_message() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    emu.update_config(|c| c.users[0].can_impersonate = false);
    let store = Store::in_memory().await.unwrap();
    let sink = Arc::new(EwsSink::new(
        sink_config(&emu, OnTargetDelete::Restore),
        basic("correct horse"),
    ));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(20, 1, BASE)));
    let engine = engine_for(&emu, sink.clone(), source, store).await;
    let r = engine.reconcile(None, false, BASE).await.unwrap();
    let msg = r[0].sinks[0].paused.clone().unwrap_or_default();
    assert!(
        msg.contains("ErrorImpersonateUserDenied") && msg.contains("ApplicationImpersonation"),
        "{msg}"
    );
    assert!(sink.paused().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_token_refused_mid_way_is_renewed_once() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let store = Store::in_memory().await.unwrap();
    let creds = Credentials::ClientCredentials {
        token_url: emu.token_url("contoso"),
        client_id: "app-client".into(),
        client_secret: Secret::new("app-secret"),
        scope: "https://outlook.office365.com/.default".into(),
    };
    let sink = Arc::new(EwsSink::new(
        sink_config(&emu, OnTargetDelete::Restore),
        creds,
    ));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(30, 4, BASE)));
    let engine = engine_for(&emu, sink.clone(), source.clone(), store).await;
    clean_pass(&engine, BASE).await;
    let token_calls = || {
        emu.calls()
            .iter()
            .filter(|c| c.path.ends_with("/oauth2/v2.0/token"))
            .count()
    };
    assert_eq!(token_calls(), 1, "one token for the whole pass");
    // The server forgets the token: the next request gets 401, the sink
    // fetches a new token once and goes on.
    emu.expire_tokens();
    source.0.lock().unwrap().iter_mut().for_each(|e| {
        if let Some(s) = e.summary.as_mut() {
            s.push_str(" (renamed)");
        }
    });
    let sr = clean_pass(&engine, BASE + 60).await;
    assert!(sr.updated > 0);
    assert_eq!(token_calls(), 2);
    assert!(emu.calls().iter().any(|c| c.status == 401));
    assert!(sink.paused().is_none());
    schema::assert_valid(&emu.request_bodies());
}

/// Ids of the recurring masters, sorted.
fn master_ids(emu: &EwsEmulator) -> Vec<String> {
    let mut v: Vec<String> = emu
        .items(MAILBOX)
        .into_iter()
        .filter(|i| i.recurrence.is_some())
        .map(|i| i.id)
        .collect();
    v.sort();
    v
}

/// An instance of `kind` ("Occurrence" or "Exception") of a master, not
/// its first, and not of `other` masters.
fn instance_of(emu: &EwsEmulator, kind: &str, not: &[String]) -> bridge_emulators::ews::Instance {
    emu.calendar_view(MAILBOX, at(BASE - 400 * 86_400), at(BASE + 1200 * 86_400))
        .into_iter()
        .find(|i| {
            i.kind == kind
                && i.index.is_some_and(|n| n > 1)
                && i.master_id.as_ref().is_some_and(|m| !not.contains(m))
        })
        .unwrap_or_else(|| panic!("an instance of kind {kind}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_edit_of_one_occurrence_rewrites_that_occurrence_alone() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    let before = view(&s.emu);
    let masters = master_ids(&s.emu);
    // A plain occurrence and one of our modified occurrences, of two series.
    let plain = instance_of(&s.emu, "Occurrence", &[]);
    let ours = instance_of(
        &s.emu,
        "Exception",
        &[plain.master_id.clone().unwrap_or_default()],
    );
    for i in [&plain, &ours] {
        assert!(s.emu.user_edit(
            &i.id,
            UserEdit {
                subject: Some("edited in Outlook".into()),
                location: Some("elsewhere".into()),
                ..UserEdit::default()
            }
        ));
    }
    let writes = s.emu.write_count();
    clean_pass(&s.engine, BASE + 60).await;
    assert_eq!(view(&s.emu), before, "both occurrences written back");
    assert_eq!(master_ids(&s.emu), masters, "no series was written again");
    assert_eq!(s.emu.write_count() - writes, 2, "one UpdateItem each");
    // Quiet afterwards: no write, and the masters are not read again.
    s.emu.reset_calls();
    let r = s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0);
    assert_eq!(s.emu.write_count(), 0, "third pass wrote");
    assert!(
        !s.emu
            .calls()
            .iter()
            .any(|c| c.operation.as_deref() == Some("GetItem")),
        "masters acknowledged"
    );
    assert_eq!(view(&s.emu), before);
    schema::assert_valid(&s.emu.request_bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deleted_occurrence_follows_on_target_delete() {
    for mode in [OnTargetDelete::Restore, OnTargetDelete::Respect] {
        let s = setup(mode, basic("correct horse")).await;
        s.engine.reconcile(None, false, BASE).await.unwrap();
        let before = view(&s.emu);
        let masters = master_ids(&s.emu);
        let plain = instance_of(&s.emu, "Occurrence", &[]);
        let uid = plain.fields.uid.clone().unwrap_or_default();
        let start = plain.fields.start.unwrap().timestamp();
        assert!(s.emu.user_delete(&plain.id));
        let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
        let sr = &r[0].sinks[0];
        assert_eq!(sr.failed, 0, "{mode:?}: {:?}", sr.errors);
        let after = view(&s.emu);
        let series_items = s
            .emu
            .items(MAILBOX)
            .iter()
            .filter(|i| i.fields.uid.as_deref() == Some(uid.as_str()))
            .count();
        assert_eq!(series_items, 1, "{mode:?}: one master, no duplicate");
        match mode {
            OnTargetDelete::Restore => {
                // EWS cannot undelete an occurrence: the series is written again.
                assert_eq!(after, before, "restored");
                assert_ne!(master_ids(&s.emu), masters);
            }
            OnTargetDelete::Respect => {
                assert!(
                    !after.iter().any(|i| i.0 == uid && i.1 == start),
                    "left deleted"
                );
                assert_eq!(after.len(), before.len() - 1);
                assert_eq!(master_ids(&s.emu), masters, "nothing written again");
            }
        }
        let writes = s.emu.write_count();
        s.engine.reconcile(None, false, BASE + 120).await.unwrap();
        assert_eq!(s.emu.write_count(), writes, "{mode:?}: third pass wrote");
        assert_eq!(view(&s.emu), after);
        schema::assert_valid(&s.emu.request_bodies());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_pause_lifts_when_the_password_file_is_fixed() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ews-password");
    std::fs::write(&file, "wrong\n").unwrap();
    let mut cfg = sink_config(&emu, OnTargetDelete::Restore);
    cfg.password_file = Some(file.clone());
    let sink = Arc::new(EwsSink::new(cfg, basic("wrong")));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(20, 1, BASE)));
    let store = Store::in_memory().await.unwrap();
    let engine = engine_for(&emu, sink.clone(), source, store).await;
    let r = engine.reconcile(None, false, BASE).await.unwrap();
    let msg = r[0].sinks[0].paused.clone().unwrap_or_default();
    assert!(
        msg.contains("check the username and password")
            && msg.contains("tries again at once when")
            && msg.contains("ews-password"),
        "{msg}"
    );
    assert!(emu.items(MAILBOX).is_empty());
    // Still paused on the next pass: no request reaches the server.
    emu.reset_calls();
    let r = engine.reconcile(None, false, BASE + 60).await.unwrap();
    assert!(r[0].sinks[0].paused.is_some());
    assert!(emu.calls().is_empty(), "a paused sink sends nothing");
    // The admin fixes the file: the same sink goes on, no restart.
    std::fs::write(&file, "correct horse\n").unwrap();
    assert!(sink.paused().is_none());
    let r = engine.reconcile(None, false, BASE + 120).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!((sr.paused.as_deref(), sr.failed), (None, 0), "{sr:?}");
    assert!(sr.created > 0);
    assert!(!emu.items(MAILBOX).is_empty());
    schema::assert_valid(&emu.request_bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_pause_runs_out_and_the_next_pass_tries_again() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    emu.update_config(|c| c.users[0].can_impersonate = false);
    let mut cfg = sink_config(&emu, OnTargetDelete::Restore);
    cfg.pause_retry = Duration::ZERO;
    let sink = Arc::new(EwsSink::new(cfg, basic("correct horse")));
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(20, 1, BASE)));
    let store = Store::in_memory().await.unwrap();
    let engine = engine_for(&emu, sink.clone(), source, store).await;
    let r = engine.reconcile(None, false, BASE).await.unwrap();
    let msg = r[0].sinks[0].paused.clone().unwrap_or_default();
    assert!(
        msg.contains("ApplicationImpersonation") && msg.contains("tries again in 0 minutes"),
        "{msg}"
    );
    // The role is granted; the pause ran out, so the next pass writes.
    emu.update_config(|c| c.users[0].can_impersonate = true);
    let r = engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!((sr.paused.as_deref(), sr.failed), (None, 0), "{sr:?}");
    assert!(sr.created > 0);
    schema::assert_valid(&emu.request_bodies());
}

fn folder_sink(emu: &EwsEmulator, store: &Store, create: bool) -> Arc<EwsSink> {
    let mut cfg = sink_config(emu, OnTargetDelete::Restore);
    cfg.folder = Some("Feishu".into());
    cfg.create_folder = create;
    Arc::new(
        EwsSink::new(cfg, basic("correct horse")).with_state(Arc::new(
            bridge_engine::SinkState::new(store.clone(), "ews:test"),
        )),
    )
}

fn calls_of(emu: &EwsEmulator, op: &str) -> usize {
    emu.calls()
        .iter()
        .filter(|c| c.operation.as_deref() == Some(op))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_folder_is_created_once_and_scopes_the_mirror() {
    // A mirror in the calendar itself first (another store, another sink).
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    s.engine.reconcile(None, false, BASE).await.unwrap();
    let in_calendar = s.emu.items(MAILBOX).len();
    assert!(in_calendar > 0);
    // The same source into folder "Feishu", created on the first pass.
    let store = Store::in_memory().await.unwrap();
    let sink = folder_sink(&s.emu, &store, true);
    let engine = engine_for(&s.emu, sink, s.source.clone(), store.clone()).await;
    let r = engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(
        (sr.failed, sr.paused.as_deref()),
        (0, None),
        "{:?}",
        sr.errors
    );
    let folders = s.emu.folders(MAILBOX);
    assert_eq!(folders.len(), 1);
    assert_eq!(
        (
            folders[0].display_name.as_str(),
            folders[0].folder_class.as_str()
        ),
        ("Feishu", "IPF.Appointment")
    );
    let items = s.emu.items(MAILBOX);
    let (mine, other): (Vec<_>, Vec<_>) = items
        .iter()
        .partition(|i| i.folder.as_deref() == Some(folders[0].id.as_str()));
    assert_eq!(other.len(), in_calendar, "the calendar's items untouched");
    assert_eq!(mine.len(), in_calendar, "the same mirror in the folder");
    // Quiet again, and a restarted sink finds the folder in its state.
    s.emu.reset_calls();
    let sink = folder_sink(&s.emu, &store, true);
    let engine = engine_for(&s.emu, sink, s.source.clone(), store).await;
    let r = engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0);
    assert_eq!(s.emu.write_count(), 0, "a rerun wrote");
    assert_eq!(
        (
            calls_of(&s.emu, "FindFolder"),
            calls_of(&s.emu, "CreateFolder")
        ),
        (0, 0)
    );
    assert_eq!(s.emu.folders(MAILBOX).len(), 1);
    assert_eq!(s.emu.items(MAILBOX).len(), 2 * in_calendar);
    schema::assert_valid(&s.emu.request_bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_pauses_unless_it_may_be_created() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let store = Store::in_memory().await.unwrap();
    let source = Arc::new(StaticSource::new(bridge_core::sample::events(20, 1, BASE)));
    let sink = folder_sink(&emu, &store, false);
    let engine = engine_for(&emu, sink.clone(), source.clone(), store.clone()).await;
    let r = engine.reconcile(None, false, BASE).await.unwrap();
    let msg = r[0].sinks[0].paused.clone().unwrap_or_default();
    assert!(
        msg.contains("\"Feishu\" does not exist") && msg.contains("create_folder = true"),
        "{msg}"
    );
    assert!(emu.items(MAILBOX).is_empty() && emu.folders(MAILBOX).is_empty());
    assert_eq!(calls_of(&emu, "CreateFolder"), 0);
    // Allowed to create it: a new sink (configuration changed) writes.
    let sink = folder_sink(&emu, &store, true);
    let engine = engine_for(&emu, sink, source, store).await;
    let r = engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(
        (sr.failed, sr.paused.as_deref()),
        (0, None),
        "{:?}",
        sr.errors
    );
    let id = emu.folders(MAILBOX)[0].id.clone();
    assert!(
        emu.items(MAILBOX)
            .iter()
            .all(|i| i.folder.as_deref() == Some(id.as_str()))
    );
    schema::assert_valid(&emu.request_bodies());
}

/// A golden case's Feishu events, its hand-written instances
/// `(summary, start, end)` and its window.
pub(crate) type GoldenCase = (Vec<Event>, Vec<(String, i64, i64)>, (i64, i64));

/// The golden case `dst_later_occurrences`.
pub(crate) fn dst_later_occurrences() -> GoldenCase {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../bridge-core/tests/golden/dst_later_occurrences");
    let text = std::fs::read_to_string(dir.join("input.json")).unwrap();
    let events = match serde_json::from_str::<bridge_core::feishu::EventListResponse>(&text) {
        Ok(r) => r.data.map(|d| d.items).unwrap_or_default(),
        Err(_) => serde_json::from_str(&text).unwrap(),
    };
    let exp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let t = |v: &serde_json::Value| DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    let mut inst: Vec<(String, i64, i64)> = exp["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["summary"].as_str().unwrap().to_owned(),
                t(&i["start"]).timestamp(),
                t(&i["end"]).timestamp(),
            )
        })
        .collect();
    inst.sort();
    let window = (
        t(&exp["window"][0]).timestamp(),
        t(&exp["window"][1]).timestamp(),
    );
    (events, inst, window)
}

/// Later occurrences in New York's repeated and skipped hours (and ones
/// ending in the repeated hour or spanning the change) show at Feishu's
/// exact instants, written as exceptions; a second pass writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_occurrences_in_repeated_or_skipped_hours_are_exact() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    let (events, expected, (from, to)) = dst_later_occurrences();
    *s.source.0.lock().unwrap() = events;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!(sr.failed, 0, "{:?}", sr.errors);
    let shown = |emu: &EwsEmulator| {
        let mut v: Vec<(String, i64, i64)> = view(emu)
            .into_iter()
            .filter(|i| (from..to).contains(&i.1))
            .map(|(_, s, e, subject)| (subject, s, e))
            .collect();
        v.sort();
        v
    };
    assert_eq!(shown(&s.emu), expected);
    // The exact ones are exceptions (Exchange would otherwise generate them
    // from the wall-clock pattern): Nov 1 01:30 EDT, Mar 8 07:30Z, ...
    let exceptions: Vec<i64> = s
        .emu
        .calendar_view(MAILBOX, at(from), at(to))
        .into_iter()
        .filter(|i| i.kind == "Exception")
        .map(|i| i.fields.start.unwrap().timestamp())
        .collect();
    for t in [1_793_511_000, 1_772_955_000] {
        assert!(exceptions.contains(&t), "{t} in {exceptions:?}");
    }
    let writes = s.emu.write_count();
    let r2 = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr2 = &r2[0].sinks[0];
    assert_eq!(
        (sr2.created, sr2.updated, sr2.deleted, sr2.drift_rewrites),
        (0, 0, 0, 0),
        "{sr2:?}"
    );
    assert_eq!(s.emu.write_count(), writes, "second reconcile wrote");
    assert_eq!(shown(&s.emu), expected);
    schema::assert_valid(&s.emu.request_bodies());
}

/// A user's edit of a plain occurrence of a series with exact occurrences:
/// drift reads the master, counts the exact ones as ours, and writes back
/// the edited occurrence alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_occurrences_are_ours_when_drift_reads_their_master() {
    let s = setup(OnTargetDelete::Restore, basic("correct horse")).await;
    let (events, _, _) = dst_later_occurrences();
    *s.source.0.lock().unwrap() = events;
    let r = s.engine.reconcile(None, false, BASE).await.unwrap();
    assert_eq!(r[0].sinks[0].failed, 0, "{:?}", r[0].sinks[0].errors);
    let before = view(&s.emu);
    let masters = master_ids(&s.emu);
    // The open-ended Sunday series: Nov 1 2026 01:30 is an exact exception.
    let sunday = s
        .emu
        .calendar_view(MAILBOX, at(1_793_511_000 - 60), at(1_793_511_000 + 60))
        .into_iter()
        .find(|i| {
            i.kind == "Exception" && i.fields.subject.as_deref() == Some("Sundays at 01:30, no end")
        })
        .expect("the exact Nov 1 occurrence");
    let plain = s
        .emu
        .calendar_view(MAILBOX, at(1_794_119_400 - 60), at(1_794_119_400 + 60))
        .into_iter()
        .find(|i| i.kind == "Occurrence" && i.master_id == sunday.master_id)
        .expect("the plain Nov 8 occurrence");
    assert!(s.emu.user_edit(
        &plain.id,
        UserEdit {
            subject: Some("edited in Outlook".into()),
            ..UserEdit::default()
        }
    ));
    let writes = s.emu.write_count();
    let r = s.engine.reconcile(None, false, BASE + 60).await.unwrap();
    let sr = &r[0].sinks[0];
    assert_eq!((sr.failed, sr.drift_rewrites), (0, 0), "{sr:?}");
    assert_eq!(view(&s.emu), before, "the edit written back");
    assert_eq!(master_ids(&s.emu), masters, "no series was written again");
    assert_eq!(s.emu.write_count() - writes, 1, "one UpdateItem");
    let writes = s.emu.write_count();
    s.engine.reconcile(None, false, BASE + 120).await.unwrap();
    assert_eq!(s.emu.write_count(), writes, "third pass wrote");
    schema::assert_valid(&s.emu.request_bodies());
}
