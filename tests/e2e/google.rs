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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, EventListResponse, EventStatus, TimeInfo};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};
use bridge_emulators::google::{EventTime, Faults, GoogleConfig, GoogleEmulator};
use chrono::{DateTime, NaiveDate, Utc};

use crate::daemon::Daemon;
use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{self, Moments, Replica, single_event_ids};

/// The sample data starts here (Unix seconds, 2025-10-09).
const BASE: i64 = 1_760_000_000;
/// The Google user who owns the target calendars (domain-wide delegation).
pub(crate) const OWNER: &str = "owner@example.com";
/// Every mapping case of the golden fixtures, as a Feishu list response.
const EXAMPLE: &str = include_str!("../../examples/feishu-events.json");
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

async fn feishu(webhook: bool) -> FeishuEmulator {
    FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        webhook_retry_schedule: if webhook {
            vec![Duration::from_millis(200); 4]
        } else {
            FeishuConfig::default().webhook_retry_schedule
        },
        ..FeishuConfig::default()
    })
    .await
    .unwrap()
}

/// The mapping-case events of the golden fixtures.
fn fixture_events() -> Vec<Event> {
    let r: EventListResponse = serde_json::from_str(EXAMPLE).unwrap();
    r.data.map(|d| d.items).unwrap_or_default()
}

/// A tenant: a user whose primary calendar holds `events`; returns the
/// user's open id and the calendar id.
fn tenant(f: &FeishuEmulator, events: Vec<Event>) -> (String, String) {
    let user = f.add_user("Li Lei");
    let cal = f.primary_calendar(&user);
    f.bulk_load(&cal, events);
    (user, cal)
}

/// The root of the golden mapping cases.
fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/bridge-core/tests/golden")
}

/// The events of one golden case (a list response or a bare array).
fn golden_input(case: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(case.join("input.json")).unwrap();
    match serde_json::from_str::<EventListResponse>(&text) {
        Ok(r) => r.data.map(|d| d.items).unwrap_or_default(),
        Err(_) => serde_json::from_str(&text).unwrap(),
    }
}

/// The golden cases rendered with privacy `full`, sorted by name, except
/// those whose `expected.json` says why Google cannot show them yet
/// (`skip_google`).
fn golden_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("expected.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["privacy"] == "full" && v.get("skip_google").is_none())
        })
        .collect();
    cases.sort();
    cases
}

/// The mapping cases (the example file plus every golden case's input,
/// each event id once) and `n` sample events (seed 42).
fn sample_tenant(n: usize) -> Vec<Event> {
    let mut v = fixture_events();
    let mut ids: BTreeSet<String> = v.iter().filter_map(|e| e.event_id.clone()).collect();
    for case in golden_cases() {
        for e in golden_input(&case) {
            if ids.insert(e.event_id.clone().unwrap()) {
                v.push(e);
            }
        }
    }
    v.extend(bridge_core::sample::events(n, 42, BASE));
    v
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

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

/// One `reconcile --json`.
struct Run {
    code: i32,
    report: serde_json::Value,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ctx(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The Google sink's entry of the only calendar.
    fn google(&self) -> &serde_json::Value {
        self.report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with("google")))
            })
            .unwrap_or_else(|| panic!("no google sink in the report:\n{}", self.ctx()))
    }

    fn n(&self, key: &str) -> u64 {
        self.google()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in the google sink report:\n{}", self.ctx()))
    }

    /// `(created, updated, deleted, unchanged, failed)` of the Google sink.
    fn counts(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.n("created"),
            self.n("updated"),
            self.n("deleted"),
            self.n("unchanged"),
            self.n("failed"),
        )
    }
}

async fn reconcile(config: &Path) -> Run {
    let mut cmd = bin();
    cmd.args(["reconcile", "--json", "--config"]).arg(config);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn reconcile_ok(config: &Path) -> Run {
    let r = reconcile(config).await;
    assert_eq!(r.code, 0, "{}", r.ctx());
    assert_eq!(r.n("failed"), 0, "{}", r.ctx());
    r
}

// ----- instance sets -----------------------------------------------------------

/// A start or end: an all-day date (ends exclusive) or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum T {
    Day(NaiveDate),
    At(i64),
}

impl T {
    /// The instant used for window filtering (all-day: midnight UTC).
    fn secs(self) -> i64 {
        match self {
            T::Day(d) => d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
            T::At(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Inst {
    ident: String,
    start: T,
    end: T,
    summary: String,
}

fn feishu_t(ti: &TimeInfo, is_end: bool) -> T {
    if let Some(ts) = ti.timestamp {
        return T::At(ts.0);
    }
    let d = NaiveDate::parse_from_str(ti.date.as_deref().unwrap(), "%Y-%m-%d").unwrap();
    // Feishu's all-day end date is the last day (inclusive).
    T::Day(if is_end { d.succ_opt().unwrap() } else { d })
}

fn google_t(t: &EventTime) -> T {
    match t {
        EventTime::Date(d) => T::Day(*d),
        EventTime::DateTime(t) => T::At(t.timestamp()),
    }
}

fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// The comparison window: 2025-01-01 .. 2026-04-01 UTC (the golden cases'
/// year and the first half year of the sample data, which crosses the 2025
/// autumn and 2026 spring DST changes of New York and Berlin).
const FROM: i64 = 1_735_689_600;
const TO: i64 = 1_775_001_600;

fn uid_of(event_id: &str) -> &str {
    event_id.rsplit_once('_').map_or(event_id, |(u, _)| u)
}

/// The Feishu instance set in `[from, to)` (by start): the emulator's own
/// `instance_view` in 10-day windows, plus live exceptions whose master is
/// absent from `seeded` (Feishu lists them standalone; `instance_view` only
/// applies exceptions through their master).
async fn feishu_instances(
    f: &FeishuEmulator,
    cal: &str,
    seeded: &[Event],
    from: i64,
    to: i64,
) -> Vec<Inst> {
    let c = f.config();
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(format!(
            "{}/open-apis/auth/v3/tenant_access_token/internal",
            f.base_url()
        ))
        .json(&serde_json::json!({"app_id": c.app_id, "app_secret": c.app_secret}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["tenant_access_token"].as_str().unwrap().to_owned();
    let mut seen: BTreeMap<(String, T), Inst> = BTreeMap::new();
    let step = 10 * 86_400;
    let mut lo = from - 3 * 86_400;
    while lo < to + 3 * 86_400 {
        let hi = lo + step;
        let body: serde_json::Value = http
            .get(format!(
                "{}/open-apis/calendar/v4/calendars/{cal}/events/instance_view",
                f.base_url()
            ))
            .bearer_auth(&token)
            .query(&[("start_time", lo.to_string()), ("end_time", hi.to_string())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["code"], 0, "instance_view: {body}");
        let items: Vec<Event> = serde_json::from_value(body["data"]["items"].clone()).unwrap();
        assert!(
            items.len() < 999,
            "instance_view window capped; use less data"
        );
        for e in items {
            if e.status == Some(EventStatus::Cancelled) {
                continue;
            }
            let id = e.event_id.clone().unwrap();
            let inst = Inst {
                ident: uid_of(&id).to_owned(),
                start: feishu_t(e.start_time.as_ref().unwrap(), false),
                end: feishu_t(e.end_time.as_ref().unwrap(), true),
                summary: e.summary.clone().unwrap_or_default(),
            };
            seen.insert((id, inst.start), inst);
        }
        lo = hi;
    }
    let ids: BTreeSet<&str> = seeded
        .iter()
        .filter_map(|e| e.event_id.as_deref())
        .collect();
    for e in seeded {
        let id = e.event_id.as_deref().unwrap();
        let master = format!("{}_0", uid_of(id));
        if id.ends_with("_0") || ids.contains(master.as_str()) {
            continue;
        }
        if e.status == Some(EventStatus::Cancelled) {
            continue;
        }
        let inst = Inst {
            ident: id.to_owned(),
            start: feishu_t(e.start_time.as_ref().unwrap(), false),
            end: feishu_t(e.end_time.as_ref().unwrap(), true),
            summary: e.summary.clone().unwrap_or_default(),
        };
        seen.insert((id.to_owned(), inst.start), inst);
    }
    let mut v: Vec<Inst> = seen
        .into_values()
        .filter(|i| (from..to).contains(&i.start.secs()))
        .collect();
    v.sort();
    v
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

/// Explains the difference of two sorted instance lists (first few).
fn diff(expected: &[Inst], got: &[Inst]) -> String {
    let mut e = expected.to_vec();
    let mut g = got.to_vec();
    let mut missing = Vec::new();
    let mut extra = Vec::new();
    e.sort();
    g.sort();
    let (mut i, mut j) = (0, 0);
    while i < e.len() || j < g.len() {
        match (e.get(i), g.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                extra.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                missing.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                extra.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    format!(
        "expected {} instances, got {}; {} missing in Google, {} extra in Google\n\
         missing (first 10): {:#?}\nextra (first 10): {:#?}",
        e.len(),
        g.len(),
        missing.len(),
        extra.len(),
        &missing[..missing.len().min(10)],
        &extra[..extra.len().min(10)]
    )
}

fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    assert!(expected == got, "{what}: {}", diff(expected, got));
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

fn golden_t(s: &str) -> T {
    if s.len() == 10 {
        T::Day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    } else {
        T::At(DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    }
}

/// For every golden case with privacy `full` (all loaded by
/// [`sample_tenant`]): the Google instances of its uids in its window equal
/// its hand-written `expected.json`.
fn check_golden(g: &GoogleEmulator, gcal: &str) -> Vec<String> {
    let mut checked = Vec::new();
    for case in golden_cases() {
        let exp: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("expected.json")).unwrap())
                .unwrap();
        let from = golden_t(exp["window"][0].as_str().unwrap()).secs();
        let to = golden_t(exp["window"][1].as_str().unwrap()).secs();
        let mut expected: Vec<Inst> = exp["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| Inst {
                ident: i["uid"].as_str().unwrap().to_owned(),
                start: golden_t(i["start"].as_str().unwrap()),
                end: golden_t(i["end"].as_str().unwrap()),
                summary: i["summary"].as_str().unwrap_or_default().to_owned(),
            })
            .collect();
        expected.sort();
        // Every identity the case's events can have in Google (uid, or the
        // full id of an exception without master), so extras show up too.
        let input_ids: Vec<String> = golden_input(&case)
            .into_iter()
            .filter_map(|e| e.event_id)
            .collect();
        let mut idents: BTreeSet<&str> = expected.iter().map(|i| i.ident.as_str()).collect();
        for id in &input_ids {
            idents.insert(id);
            idents.insert(uid_of(id));
        }
        let got: Vec<Inst> = google_instances(g, gcal, from, to)
            .into_iter()
            .filter(|i| idents.contains(i.ident.as_str()))
            .collect();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_same(&expected, &got, &format!("golden case {name}"));
        checked.push(name);
    }
    checked
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

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    let id = single_event_ids(&f, &fcal).remove(0);
    let old = f
        .events(&fcal)
        .into_iter()
        .find(|e| e.event_id.as_deref() == Some(&id))
        .and_then(|e| e.summary)
        .unwrap();

    let daemon = Daemon::start(&s.config);
    f.set_webhook(Some(WebhookTarget {
        url: format!("http://{}/webhook/event", daemon.addr),
        encrypt_key: Some("enc-key".into()),
        verification_token: "verify-token".into(),
    }));
    // The start-up pass mirrors everything.
    wait_for("the initial mirror", Duration::from_secs(20), || {
        google_has_summary(&g, &s.gcal, &old)
    })
    .await;

    let before = f.deliveries().len();
    f.update_event(&fcal, &id, |e| e.summary = Some("Renamed, pushed".into()));
    let deliveries = f
        .wait_for_deliveries(before + 1, Duration::from_secs(5))
        .await;
    assert!(
        deliveries.iter().skip(before).any(|d| d.delivered_ok),
        "the push was delivered: {deliveries:?}"
    );
    wait_for("the change in Google", Duration::from_secs(10), || {
        google_has_summary(&g, &s.gcal, "Renamed, pushed")
    })
    .await;
    assert!(!google_has_summary(&g, &s.gcal, &old) || old == "Renamed, pushed");
    assert_no_duplicates(&g, &s.gcal, "after the push");
    daemon.stop();
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 4. kill -9 ------------------------------------------------------------------

/// The Google target of the shared scenarios: a calendar of one emulator
/// per mirror.
struct GoogleTarget<'a>(&'a GoogleEmulator);

impl Replica for GoogleTarget<'_> {
    type Mirror = Setup;
    type Inst = Inst;
    const NAME: &'static str = "google";

    async fn mirror(&self, f: &FeishuEmulator, fcal: &str, name: &str) -> Setup {
        setup(f, fcal, self.0, name, &Opts::default())
    }
    fn config(m: &Setup) -> &Path {
        &m.config
    }
    fn slow(&self, _: &Setup, on: bool) {
        self.0.set_faults(if on {
            Faults {
                slow_rate: 1.0,
                slow_delay: Duration::from_millis(15),
                seed: Some(1),
                ..Faults::default()
            }
        } else {
            Faults::default()
        });
    }
    fn faults(&self, _: &Setup, on: bool) {
        // P(fault) = 0.1 + 0.9 * 0.112 ≈ 0.2, seeded.
        self.0.set_faults(if on {
            Faults {
                rate_429: 0.1,
                rate_5xx: 0.112,
                retry_after_secs: 1,
                seed: Some(0xFA_017),
                ..Faults::default()
            }
        } else {
            Faults::default()
        });
    }
    fn faulted(&self, _: &Setup) -> (usize, usize) {
        let calls = self.0.calls();
        let faulted = calls
            .iter()
            .filter(|c| c.status == 429 || c.status >= 500)
            .count();
        (faulted, calls.len())
    }
    fn instances(&self, m: &Setup) -> Vec<Inst> {
        google_instances(self.0, &m.gcal, FROM, TO)
    }
    fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
        assert_same(expected, got, what);
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
    fn ident(i: &Inst) -> &str {
        &i.ident
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

/// Runs `auth google`, plays the browser (without following redirects), and
/// returns the command's stdout.
async fn authorize_google(config: &Path) -> String {
    let mut child = bin()
        .args([
            "auth",
            "google",
            "--sink",
            "google",
            "--port",
            "0",
            "--timeout",
            "20",
            "--config",
        ])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.trim_start().starts_with("http://") {
                let _ = tx.send(line.trim().to_owned());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let url = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("auth google printed an authorize URL");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let consent = http.get(&url).send().await.unwrap();
    assert_eq!(consent.status(), 302, "the emulator approves at once");
    let location = consent
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(location.contains("code="), "{location}");
    let page = http.get(&location).send().await.unwrap();
    assert!(
        page.status().is_success(),
        "loopback answered {}",
        page.status()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = reader.join().unwrap();
    assert!(
        out.status.success(),
        "auth google failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

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
    authorize_google(&s.config).await;
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
    let paused = r.google()["paused"].as_str().unwrap_or_default();
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
