//! The Google Calendar sink end to end: the real binary mirrors a Feishu
//! emulator tenant into the in-process Google Calendar v3 emulator.
//!
//! The expected side never comes from bridge-sinks code: the Feishu instance
//! set is what the Feishu emulator's own `instance_view` endpoint expands
//! (plus exceptions without a master, which Feishu shows standalone), and the
//! golden fixtures' hand-written `expected.json` instance sets are checked too.
//!
//! Identity of a Google instance: `extendedProperties.private.feishuKey` of
//! its master (`recurringEventId`) or of the event itself, with a trailing
//! `_0` removed (a series or single event is `<uid>_0`, so this gives the
//! Feishu uid; an exception without master keeps its full `<uid>_<time>`).
//! Identity of a Feishu instance: the uid part of its event id, except for an
//! exception whose master is absent (its full event id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bridge_core::feishu::Event;
use bridge_emulators::feishu::FeishuEmulator;
use bridge_emulators::google::{EventTime, Faults, GoogleConfig, GoogleEmulator};
use chrono::{DateTime, Utc};

use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{
    self, BASE, FAULT_SEED, FROM, Faulting, Inst, Moments, Replica, Run, SLOW, T, TO, feishu,
    feishu_instances, output, single_event_ids, tenant,
};

/// The Google user who owns the target calendars (domain-wide delegation).
pub(crate) const OWNER: &str = "owner@example.com";
/// The documented message of a paused Google sink.
const REVOKED: &str = "token revoked or expired: run `feishu-bridge auth google`";

// ----- emulators ---------------------------------------------------------------

pub(crate) async fn google() -> GoogleEmulator {
    let g = GoogleEmulator::start(GoogleConfig {
        rate_limit: None,
        consent_user: Some(OWNER.into()),
        ..GoogleConfig::default()
    })
    .await
    .unwrap();
    g.add_user(OWNER);
    g
}

/// The mapping cases and `n` sample events (see [`replica::sample_tenant`]).
fn sample_tenant(n: usize) -> Vec<Event> {
    replica::sample_tenant(n, Some("skip_google"))
}

// ----- config ------------------------------------------------------------------

#[derive(Debug, Clone)]
pub(crate) struct Opts {
    batch: bool,
    on_target_delete: &'static str,
    /// Installed-app OAuth (client id/secret + `auth google`) instead of the
    /// service account.
    installed: bool,
    /// An ICS sink next to the Google one.
    ics: bool,
    /// `run` with webhook delivery.
    daemon: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            batch: true,
            on_target_delete: "restore",
            installed: false,
            ics: false,
            daemon: false,
        }
    }
}

/// A working directory with a config mirroring `fcal` into the Google
/// calendar `gcal` (and `<dir>/ics` when asked).
struct Setup {
    dir: PathBuf,
    config: PathBuf,
    gcal: String,
}

impl Setup {
    fn ics_dir(&self) -> PathBuf {
        self.dir.join("ics")
    }
}

pub(crate) fn google_sink(g: &GoogleEmulator, dir: &Path, gcal: &str, o: &Opts) -> String {
    let auth = if o.installed {
        let c = g.config();
        format!(
            "client_id = \"{}\"\nclient_secret = \"{}\"\n",
            c.client_id, c.client_secret
        )
    } else {
        let key = dir.join("google-key.json");
        std::fs::write(
            &key,
            serde_json::to_vec_pretty(&g.service_account_key_json()).unwrap(),
        )
        .unwrap();
        format!(
            "service_account_key_file = \"{}\"\nsubject = \"{OWNER}\"\n",
            key.display()
        )
    };
    format!(
        "\n[[sinks]]\nkind = \"google\"\nname = \"google\"\nprivacy = \"full\"\n\
         calendar_id = \"{gcal}\"\n{auth}token_url = \"{token}\"\nauth_url = \"{authu}\"\n\
         base_url = \"{base}\"\nrequests_per_second = 0.0\nbatch = {batch}\n\
         on_target_delete = \"{otd}\"\n",
        token = g.token_url(),
        authu = g.auth_url(),
        base = g.base_url(),
        batch = o.batch,
        otd = o.on_target_delete,
    )
}

fn setup(f: &FeishuEmulator, fcal: &str, g: &GoogleEmulator, name: &str, o: &Opts) -> Setup {
    let dir = temp_dir(&format!("google-{name}"));
    let gcal = g.create_calendar(OWNER, &format!("Mirror {name}"));
    let mut extra = String::new();
    if o.daemon {
        extra.push_str(
            "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n",
        );
    }
    extra.push_str(&google_sink(g, &dir, &gcal, o));
    if o.ics {
        extra.push_str(&format!(
            "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
            dir.join("ics").display()
        ));
    }
    let config = write_config(&dir, f, &format!("[\"{fcal}\"]"), &extra);
    if o.daemon {
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("delivery = \"poll\"", "delivery = \"webhook\"");
        std::fs::write(&config, text).unwrap();
    }
    Setup { dir, config, gcal }
}

// ----- running the binary -------------------------------------------------------

async fn reconcile(config: &Path) -> Run {
    replica::reconcile::<GoogleTarget<'static>>(config).await
}

async fn reconcile_ok(config: &Path) -> Run {
    replica::reconcile_clean::<GoogleTarget<'static>>(config).await
}

// ----- instance sets -----------------------------------------------------------

fn google_t(t: &EventTime) -> T {
    match t {
        EventTime::Date(d) => T::Day(*d),
        EventTime::DateTime(t) => T::At(t.timestamp()),
    }
}

fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// The feishuKey of a stored Google event.
fn feishu_key(g: &GoogleEmulator, gcal: &str, id: &str) -> String {
    let e = g
        .event(gcal, id)
        .unwrap_or_else(|| panic!("no Google event {id}"));
    e.private_properties
        .get("feishuKey")
        .cloned()
        .unwrap_or_else(|| panic!("Google event {id} has no feishuKey: {:?}", e.resource))
}

/// The live Google instance set in `[from, to)` (by start), as a sorted
/// multiset (duplicates show up twice).
fn google_instances(g: &GoogleEmulator, gcal: &str, from: i64, to: i64) -> Vec<Inst> {
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    let mut v: Vec<Inst> = g
        .expanded_instances(gcal, utc(from - 3 * 86_400), utc(to + 3 * 86_400))
        .into_iter()
        .filter(|i| i.status != "cancelled")
        .map(|i| {
            let owner = i.recurring_event_id.clone().unwrap_or_else(|| i.id.clone());
            let key = keys
                .entry(owner.clone())
                .or_insert_with(|| feishu_key(g, gcal, &owner))
                .clone();
            let ident = key.strip_suffix("_0").unwrap_or(&key).to_owned();
            Inst {
                ident,
                start: google_t(&i.start),
                end: google_t(&i.end),
                summary: i.summary.clone().unwrap_or_default(),
            }
        })
        .filter(|i| (from..to).contains(&i.start.secs()))
        .collect();
    v.sort();
    v
}

fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    replica::assert_same_in("Google", expected, got, what);
}

/// Live stored Google events that are not exceptions, by feishuKey: none twice.
fn assert_no_duplicates(g: &GoogleEmulator, gcal: &str, what: &str) -> usize {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in g.events(gcal) {
        if e.status == "cancelled" || e.recurring_event_id.is_some() {
            continue;
        }
        let key = e
            .private_properties
            .get("feishuKey")
            .cloned()
            .unwrap_or_else(|| format!("<no feishuKey: {}>", e.id));
        by_key.entry(key).or_default().push(e.id.clone());
    }
    let dups: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(dups.is_empty(), "{what}: duplicate Google events {dups:?}");
    by_key.len()
}

/// The live, non-exception Google event with this feishuKey.
fn google_event_of(
    g: &GoogleEmulator,
    gcal: &str,
    key: &str,
) -> bridge_emulators::google::StoredEvent {
    g.events(gcal)
        .into_iter()
        .find(|e| {
            e.recurring_event_id.is_none()
                && e.private_properties.get("feishuKey").map(String::as_str) == Some(key)
        })
        .unwrap_or_else(|| panic!("no Google event with feishuKey {key}"))
}

// ----- the golden fixtures' hand-written instance sets -------------------------

/// For every golden case with privacy `full` (all loaded by
/// [`sample_tenant`]): the Google instances of its uids in its window equal
/// its hand-written `expected.json`.
fn check_golden(g: &GoogleEmulator, gcal: &str) -> Vec<String> {
    replica::check_golden("Google", Some("skip_google"), |from, to| {
        google_instances(g, gcal, from, to)
    })
}

// ----- 1 + 2: full mirror, then a no-op --------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn google_full_mirror_equals_the_feishu_instance_set_and_a_rerun_writes_nothing() {
    let f = feishu(false).await;
    let seeded = sample_tenant(150);
    let (_, fcal) = tenant(&f, seeded.clone());
    let g = google().await;
    let s = setup(&f, &fcal, &g, "mirror", &Opts::default());

    let first = reconcile_ok(&s.config).await;
    let (created, updated, deleted, _, failed) = first.counts();
    assert!(created > 0, "{}", first.ctx());
    assert_eq!((updated, deleted, failed), (0, 0, 0), "{}", first.ctx());

    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    let got = google_instances(&g, &s.gcal, FROM, TO);
    assert_same(&expected, &got, "Google vs Feishu instance set");
    assert!(expected.len() > 400, "a meaningful set: {}", expected.len());
    assert!(expected.iter().any(|i| matches!(i.start, T::Day(_))));
    let live = assert_no_duplicates(&g, &s.gcal, "first mirror");
    assert!(live > 0);
    let golden = check_golden(&g, &s.gcal);
    for case in [
        "dst_series_new_york",
        "allday_series",
        "exception_cancelled",
        "exception_moved_renamed",
        "exception_without_master",
        "weekly_byday_until",
    ] {
        assert!(
            golden.iter().any(|c| c == case),
            "golden case {case} checked: {golden:?}"
        );
    }

    // 2. A second reconcile: listing only, not one write.
    let writes = g.write_count();
    let batches = g.batch_count();
    let calls_before = g.calls().len();
    let second = reconcile_ok(&s.config).await;
    let (c, u, d, unchanged, _) = second.counts();
    assert_eq!((c, u, d), (0, 0, 0), "{}", second.ctx());
    assert_eq!(unchanged, created, "{}", second.ctx());
    assert_eq!(g.write_count(), writes, "the no-op pass wrote to Google");
    assert_eq!(g.batch_count(), batches, "the no-op pass sent a batch");
    let calls = g.calls();
    let new = &calls[calls_before..];
    let odd: Vec<_> = new
        .iter()
        .filter(|c| !(c.path == "/token" || (c.method == "GET" && c.path.ends_with("/events"))))
        .collect();
    assert!(
        odd.is_empty(),
        "a no-op pass makes token and listing calls only: {odd:#?}"
    );
    assert_same(
        &got,
        &google_instances(&g, &s.gcal, FROM, TO),
        "after the no-op",
    );
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 3. a webhook push reaches Google ------------------------------------------

fn google_has_summary(g: &GoogleEmulator, gcal: &str, summary: &str) -> bool {
    g.events(gcal)
        .iter()
        .any(|e| e.status != "cancelled" && e.summary.as_deref() == Some(summary))
}

#[tokio::test(flavor = "multi_thread")]
async fn google_a_webhook_push_reaches_google() {
    let f = feishu(true).await;
    let (user, fcal) = tenant(&f, bridge_core::sample::events(40, 3, BASE));
    f.subscribe_events(&user, &fcal);
    let g = google().await;
    let o = Opts {
        daemon: true,
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &g, "webhook", &o);
    replica::webhook_push(&GoogleTarget(&g), &f, &fcal, &s).await;
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 4. kill -9 ------------------------------------------------------------------

/// The Google target of the shared scenarios: a calendar of one emulator
/// per mirror.
struct GoogleTarget<'a>(&'a GoogleEmulator);

impl Replica for GoogleTarget<'_> {
    type Mirror = Setup;
    const NAME: &'static str = "google";
    const TARGET: &'static str = "Google";

    fn config(m: &Setup) -> &Path {
        &m.config
    }
    fn set_faults(&self, _: &Setup, faulting: Faulting) {
        self.0.set_faults(match faulting {
            Faulting::Off => Faults::default(),
            Faulting::Slow => Faults {
                slow_rate: 1.0,
                slow_delay: SLOW,
                seed: Some(1),
                ..Faults::default()
            },
            Faulting::Faulty => Faults {
                rate_429: 0.1,
                rate_5xx: 0.112,
                retry_after_secs: 1,
                seed: Some(FAULT_SEED),
                ..Faults::default()
            },
        });
    }
    fn statuses(&self, _: &Setup) -> Vec<u16> {
        self.0.calls().iter().map(|c| c.status).collect()
    }
    fn instances(&self, m: &Setup) -> Vec<Inst> {
        google_instances(self.0, &m.gcal, FROM, TO)
    }
    fn no_duplicates(&self, m: &Setup, what: &str) -> usize {
        assert_no_duplicates(self.0, &m.gcal, what)
    }
    fn after_kill(&self, m: &Setup, _: &str) -> usize {
        self.0.events(&m.gcal).len()
    }
    fn write_count(&self, _: &Setup) -> usize {
        self.0.write_count()
    }
    async fn done(&self, _: Setup) {}

    async fn mirror_with(
        &self,
        f: &FeishuEmulator,
        fcal: &str,
        name: &str,
        on_target_delete: &'static str,
    ) -> Setup {
        let o = Opts {
            on_target_delete,
            ..Opts::default()
        };
        setup(f, fcal, self.0, name, &o)
    }
    fn item_id(&self, m: &Setup, key: &str) -> String {
        let ev = google_event_of(self.0, &m.gcal, key);
        assert_eq!(ev.status, "confirmed");
        ev.id
    }
    fn user_edit(&self, m: &Setup, id: &str, summary: &str) {
        self.0
            .user_edit_event(&m.gcal, id, serde_json::json!({ "summary": summary }));
    }
    fn user_delete(&self, m: &Setup, id: &str) {
        self.0.user_delete_event(&m.gcal, id);
    }
    /// The same event, confirmed again (Google keeps a deleted event as
    /// `cancelled`, and a restore brings that one back).
    fn is_live(&self, m: &Setup, id: &str, _: &str) -> bool {
        let status = self.0.event(&m.gcal, id).unwrap().status;
        assert!(status == "confirmed" || status == "cancelled", "{status}");
        status == "confirmed"
    }
    fn has_summary(&self, m: &Setup, summary: &str) -> bool {
        google_has_summary(self.0, &m.gcal, summary)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn google_kill_9_at_any_moment_then_a_clean_run_gives_the_same_mirror() {
    let f = feishu(false).await;
    let seeded = bridge_core::sample::events(120, 17, BASE);
    let (_, fcal) = tenant(&f, seeded);
    let g = google().await;
    let moments = Moments {
        seed: 0x600_613,
        late_from: 500,
        late_span: 500,
    };
    replica::kill_9_trials(&GoogleTarget(&g), &f, &fcal, moments).await;
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 5. random 429 / 5xx faults ------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn google_twenty_percent_faults_converge_to_the_fault_free_mirror() {
    let f = feishu(false).await;
    let seeded = bridge_core::sample::events(80, 23, BASE);
    let (_, fcal) = tenant(&f, seeded.clone());
    let g = google().await;
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;

    let s = setup(&f, &fcal, &g, "faults", &Opts::default());
    replica::converge_under_faults(&GoogleTarget(&g), &s).await;
    let got = google_instances(&g, &s.gcal, FROM, TO);
    assert_same(&expected, &got, "after faults");
    assert_no_duplicates(&g, &s.gcal, "after faults");
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 6. a user's edit and deletion in Google: restore vs respect ----------------

#[tokio::test(flavor = "multi_thread")]
async fn google_a_user_deletion_is_restored_with_restore() {
    user_changes("restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn google_a_user_deletion_is_left_alone_with_respect() {
    user_changes("respect").await;
}

async fn user_changes(on_target_delete: &'static str) {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 5, BASE));
    let g = google().await;
    replica::user_edit_and_delete(&GoogleTarget(&g), &f, &fcal, on_target_delete).await;
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 7. a revoked refresh token pauses only the Google sink ---------------------

#[tokio::test(flavor = "multi_thread")]
async fn google_a_revoked_refresh_token_pauses_google_but_not_ics() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 8, BASE));
    let g = google().await;
    let o = Opts {
        installed: true,
        ics: true,
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &g, "revoked", &o);
    replica::authorize(&s.config, "google", "google").await;
    assert!(
        g.calls()
            .iter()
            .any(|c| c.path == "/token" && c.status == 200),
        "the code was exchanged"
    );
    reconcile_ok(&s.config).await;

    let id = single_event_ids(&f, &fcal).remove(0);
    let google_before = google_event_of(&g, &s.gcal, &id);
    assert!(g.revoke_refresh_tokens() >= 1);
    f.update_event(&fcal, &id, |e| {
        e.summary = Some("Renamed after the revocation".into());
    });
    let writes = g.write_count();
    let r = reconcile(&s.config).await;
    assert_eq!(r.code, 1, "a paused sink fails the pass: {}", r.ctx());
    assert!(
        r.stdout.contains(REVOKED) || r.stderr.contains(REVOKED),
        "the documented message: {}",
        r.ctx()
    );
    let paused = r.sink()["paused"].as_str().unwrap_or_default();
    assert!(
        !paused.is_empty(),
        "the report names the pause: {}",
        r.ctx()
    );
    let ics_text: String = std::fs::read_dir(s.ics_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ics"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        ics_text.contains("SUMMARY:Renamed after the revocation"),
        "the ICS sink got the change"
    );
    assert_eq!(g.write_count(), writes, "nothing was written to Google");
    let google_after = google_event_of(&g, &s.gcal, &id);
    assert_eq!(google_after.summary, google_before.summary);
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 8. a user edit in Google is overwritten --------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn google_a_user_edit_is_overwritten_by_the_next_reconcile() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 4, BASE));
    let g = google().await;
    let s = setup(&f, &fcal, &g, "user-edit", &Opts::default());
    reconcile_ok(&s.config).await;
    let key = single_event_ids(&f, &fcal).remove(0);
    let ev = google_event_of(&g, &s.gcal, &key);
    let mirrored = ev.summary.clone();
    g.user_edit_event(
        &s.gcal,
        &ev.id,
        serde_json::json!({"summary": "Edited in Google"}),
    );
    let r = reconcile_ok(&s.config).await;
    let after = g.event(&s.gcal, &ev.id).unwrap();
    assert_eq!(after.summary, mirrored, "overwritten: {}", r.ctx());
    assert_no_duplicates(&g, &s.gcal, "after the user edit");
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 9. explain: where each target holds the event ------------------------------

async fn explain(config: &Path, key: &str) -> String {
    let mut cmd = bin();
    cmd.args(["explain", key, "--offline", "--config"])
        .arg(config);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn google_explain_names_the_google_event_and_the_ics_file() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(10, 2, BASE));
    let g = google().await;
    let o = Opts {
        on_target_delete: "respect",
        ics: true,
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &g, "explain-lines", &o);
    reconcile_ok(&s.config).await;
    let key = single_event_ids(&f, &fcal).remove(0);
    let ev = google_event_of(&g, &s.gcal, &key);

    // Each target's module says where the event lives.
    let text = explain(&s.config, &key).await;
    for want in [
        format!(
            "target:   Google Calendar {}, event {}, etag {}",
            s.gcal, ev.id, ev.etag
        ),
        format!("target:   ICS file {}", s.ics_dir().display()),
    ] {
        assert!(text.contains(&want), "{want:?} missing:\n{text}");
    }
    assert_eq!(text.matches("decision: up to date").count(), 2, "{text}");
    let mut cmd = bin();
    cmd.args(["explain", &key, "--offline", "--json", "--config"])
        .arg(&s.config);
    let j: serde_json::Value = serde_json::from_slice(&output(cmd).await.stdout).unwrap();
    let sinks = j["matches"][0]["sinks"].as_array().unwrap();
    let google = sinks.iter().find(|s| s["sink"] == "google:google").unwrap();
    assert_eq!(
        google["target"][0],
        format!(
            "Google Calendar {}, event {}, etag {}",
            s.gcal, ev.id, ev.etag
        )
    );

    // Deleted in Google and respected: the planner leaves it deleted.
    g.user_delete_event(&s.gcal, &ev.id);
    reconcile_ok(&s.config).await;
    let text = explain(&s.config, &key).await;
    assert!(
        text.contains("decision: deleted on the target and left deleted"),
        "{text}"
    );
    assert!(text.contains(", deleted (tombstone)"), "{text}");
    f.shutdown().await;
    g.shutdown().await;
}
