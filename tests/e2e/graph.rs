//! The Microsoft Graph sink end to end: the real binary mirrors a Feishu
//! emulator tenant into the in-process Graph emulator.
//!
//! The expected side never comes from bridge-sinks code: the Feishu instance
//! set is what the Feishu emulator's own `instance_view` endpoint expands
//! (plus exceptions without a master, which Feishu shows standalone); the
//! Graph side is the Graph emulator's own expansion of what was written
//! (its `calendarView`).
//!
//! Identity of a Graph instance: the `FeishuBridgeKey` tag of its series
//! master (`seriesMasterId`) or of the event itself, with a trailing `_0`
//! removed (the Feishu uid; an exception without master keeps its full
//! `<uid>_<time>`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, EventListResponse, EventStatus, TimeInfo};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};
use bridge_emulators::graph::{
    Faults, GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
    TEST_TENANT,
};
use chrono::{DateTime, NaiveDate};
use serde_json::Value;

use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{self, Moments, Replica};

const BASE: i64 = 1_760_000_000;
const UPN: &str = "mirror@contoso.example";
const KEY_TAG: &str = "String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey";
const EXAMPLE: &str = include_str!("../../examples/feishu-events.json");
/// The comparison window: 2025-01-01 .. 2026-04-01 UTC.
const FROM: i64 = 1_735_689_600;
const TO: i64 = 1_775_001_600;

// ----- emulators ---------------------------------------------------------------

async fn graph() -> GraphEmulator {
    let g = GraphEmulator::start_with(GraphConfig {
        rate_limit: None,
        ..GraphConfig::default()
    })
    .await
    .unwrap();
    g.add_mailbox(UPN, MailboxAccess::Enabled);
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

fn tenant(f: &FeishuEmulator, events: Vec<Event>) -> (String, String) {
    let user = f.add_user("Li Lei");
    let cal = f.primary_calendar(&user);
    f.bulk_load(&cal, events);
    (user, cal)
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/bridge-core/tests/golden")
}

fn golden_input(case: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(case.join("input.json")).unwrap();
    match serde_json::from_str::<EventListResponse>(&text) {
        Ok(r) => r.data.map(|d| d.items).unwrap_or_default(),
        Err(_) => serde_json::from_str(&text).unwrap(),
    }
}

/// The golden cases rendered with privacy `full`, sorted by name.
fn golden_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("expected.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["privacy"] == "full")
        })
        .collect();
    cases.sort();
    cases
}

/// The mapping cases (the example file plus every golden case's input,
/// each event id once) and `n` sample events.
fn sample_tenant(n: usize) -> Vec<Event> {
    let r: EventListResponse = serde_json::from_str(EXAMPLE).unwrap();
    let mut v = r.data.map(|d| d.items).unwrap_or_default();
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

fn golden_t(s: &str) -> T {
    if s.len() == 10 {
        T::Day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    } else {
        T::At(DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    }
}

/// For every golden case with privacy `full`: the Graph instances of its
/// uids in its window equal its hand-written `expected.json`.
fn check_golden(g: &GraphEmulator, calendar: &str, series: &BTreeSet<String>) -> Vec<String> {
    let mut checked = Vec::new();
    for case in golden_cases() {
        let exp: Value =
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
        let mut idents: BTreeSet<String> = expected.iter().map(|i| i.ident.clone()).collect();
        for id in golden_input(&case).into_iter().filter_map(|e| e.event_id) {
            idents.insert(uid_of(&id).to_owned());
            idents.insert(id);
        }
        let got: Vec<Inst> = graph_instances(g, calendar, from, to, series)
            .into_iter()
            .filter(|i| idents.contains(&i.ident))
            .collect();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_same(&expected, &got, &format!("golden case {name}"));
        checked.push(name);
    }
    checked
}

// ----- config and runs -------------------------------------------------------------

#[derive(Debug, Clone)]
struct Opts {
    on_target_delete: &'static str,
    ics: bool,
    daemon: bool,
    mailbox: &'static str,
    /// Delegated use (`auth graph`) instead of the client secret.
    delegated: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            on_target_delete: "restore",
            ics: false,
            daemon: false,
            mailbox: UPN,
            delegated: false,
        }
    }
}

struct Setup {
    dir: PathBuf,
    config: PathBuf,
    /// The Graph calendar's name (created by the sink).
    calendar: String,
}

fn setup(f: &FeishuEmulator, fcal: &str, g: &GraphEmulator, name: &str, o: &Opts) -> Setup {
    let dir = temp_dir(&format!("graph-{name}"));
    let calendar = format!("Mirror {name}");
    let mut extra = String::new();
    if o.daemon {
        extra.push_str(
            "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n",
        );
    }
    let secret = dir.join("graph-secret");
    std::fs::write(&secret, format!("{TEST_CLIENT_SECRET}\n")).unwrap();
    let credential = if o.delegated {
        format!("delegated = true\nauth_url = \"{}\"\n", g.authorize_url())
    } else {
        format!("client_secret_file = \"{}\"\n", secret.display())
    };
    extra.push_str(&format!(
        "\n[[sinks]]\nkind = \"graph\"\nname = \"graph\"\ntenant_id = \"{TEST_TENANT}\"\n\
         client_id = \"{TEST_CLIENT_ID}\"\n{credential}\
         mailbox = \"{mailbox}\"\ncalendar = \"{calendar}\"\ncreate_calendar = true\n\
         base_url = \"{base}\"\ntoken_url = \"{token}\"\non_target_delete = \"{otd}\"\n",
        mailbox = o.mailbox,
        base = g.base_url(),
        token = g.token_url(),
        otd = o.on_target_delete,
    ));
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
    Setup {
        dir,
        config,
        calendar,
    }
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

struct Run {
    code: i32,
    report: Value,
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

    fn graph(&self) -> &Value {
        self.report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with("graph")))
            })
            .unwrap_or_else(|| panic!("no graph sink in the report:\n{}", self.ctx()))
    }

    fn n(&self, key: &str) -> u64 {
        self.graph()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in the graph sink report:\n{}", self.ctx()))
    }
}

async fn reconcile(config: &Path) -> Run {
    let mut cmd = bin();
    cmd.args(["reconcile", "--json", "--config"]).arg(config);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&stdout).unwrap_or(Value::Null),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum T {
    Day(NaiveDate),
    At(i64),
}

impl T {
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
    T::Day(if is_end { d.succ_opt().unwrap() } else { d })
}

fn uid_of(event_id: &str) -> &str {
    event_id.rsplit_once('_').map_or(event_id, |(u, _)| u)
}

/// The Feishu instance set in `[from, to)` (see the module docs).
async fn feishu_instances(
    f: &FeishuEmulator,
    cal: &str,
    seeded: &[Event],
    from: i64,
    to: i64,
) -> Vec<Inst> {
    let c = f.config();
    let http = reqwest::Client::new();
    let token: Value = http
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
        let body: Value = http
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
        if id.ends_with("_0")
            || ids.contains(master.as_str())
            || e.status == Some(EventStatus::Cancelled)
        {
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

fn key_of(v: &Value) -> Option<String> {
    v["singleValueExtendedProperties"]
        .as_array()?
        .iter()
        .find(|p| p["id"] == KEY_TAG)?["value"]
        .as_str()
        .map(str::to_owned)
}

/// The graph times of an instance.
fn graph_t(v: &Value, all_day: bool) -> T {
    let s = v["dateTime"].as_str().unwrap();
    let local = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
    if all_day {
        T::Day(local.date())
    } else {
        assert_eq!(v["timeZone"], "UTC");
        T::At(local.and_utc().timestamp())
    }
}

/// The Graph instance set of a calendar in `[from, to)` (a sorted
/// multiset: duplicates show up twice).
/// Uids of the recurring masters among `events`: a Graph single tagged
/// `<uid>_<time>` of such a uid is one of its occurrences written as a
/// single (a rule without a Microsoft pattern), so its identity is the uid.
fn series_uids(events: &[Event]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| {
            e.recurrence.as_deref().is_some_and(|r| !r.is_empty())
                && e.status != Some(EventStatus::Cancelled)
        })
        .filter_map(|e| e.event_id.as_deref())
        .filter(|id| id.ends_with("_0"))
        .map(|id| uid_of(id).to_owned())
        .collect()
}

fn graph_instances(
    g: &GraphEmulator,
    calendar: &str,
    from: i64,
    to: i64,
    series: &BTreeSet<String>,
) -> Vec<Inst> {
    let Some(cal) = g.calendar_id(UPN, calendar) else {
        return Vec::new();
    };
    let iso = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let view = g
        .view(
            UPN,
            Some(&cal),
            &iso(from - 3 * 86_400),
            &iso(to + 3 * 86_400),
        )
        .unwrap();
    let masters: BTreeMap<String, String> = g
        .events(UPN)
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["id"].as_str()?.to_owned(), key_of(e)?)))
        .collect();
    let mut v: Vec<Inst> = view
        .iter()
        .map(|i| {
            let key = match i["seriesMasterId"].as_str() {
                Some(m) => masters
                    .get(m)
                    .cloned()
                    .unwrap_or_else(|| panic!("no master {m}")),
                None => key_of(i).unwrap_or_else(|| panic!("an instance without our tag: {i}")),
            };
            let all_day = i["isAllDay"] == true;
            let ident = match key.strip_suffix("_0") {
                Some(uid) => uid.to_owned(),
                None if series.contains(uid_of(&key)) => uid_of(&key).to_owned(),
                None => key.clone(),
            };
            Inst {
                ident,
                start: graph_t(&i["start"], all_day),
                end: graph_t(&i["end"], all_day),
                summary: i["subject"].as_str().unwrap_or_default().to_owned(),
            }
        })
        .filter(|i| (from..to).contains(&i.start.secs()))
        .collect();
    v.sort();
    v
}

fn diff(expected: &[Inst], got: &[Inst]) -> String {
    let e: BTreeSet<&Inst> = expected.iter().collect();
    let g: BTreeSet<&Inst> = got.iter().collect();
    let missing: Vec<&&Inst> = e.difference(&g).take(10).collect();
    let extra: Vec<&&Inst> = g.difference(&e).take(10).collect();
    format!(
        "expected {} instances, got {}\nmissing in Graph (first 10): {missing:#?}\nextra in Graph (first 10): {extra:#?}",
        expected.len(),
        got.len()
    )
}

fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    assert!(expected == got, "{what}: {}", diff(expected, got));
}

/// Stored singles and masters of the calendar by key: none twice.
fn assert_no_duplicates(g: &GraphEmulator, calendar: &str, what: &str) -> usize {
    let Some(cal) = g.calendar_id(UPN, calendar) else {
        return 0;
    };
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in g
        .events(UPN)
        .unwrap()
        .into_iter()
        .filter(|e| e["calendarId"] == cal.as_str())
    {
        let key = key_of(&e).unwrap_or_else(|| format!("<untagged {}>", e["id"]));
        by_key
            .entry(key)
            .or_default()
            .push(e["id"].as_str().unwrap_or_default().to_owned());
    }
    let dups: Vec<_> = by_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(dups.is_empty(), "{what}: duplicate Graph events {dups:?}");
    by_key.len()
}

/// The stored single or master with this key.
fn graph_event_of(g: &GraphEmulator, calendar: &str, key: &str) -> Option<Value> {
    let cal = g.calendar_id(UPN, calendar)?;
    g.events(UPN)
        .unwrap()
        .into_iter()
        .find(|e| e["calendarId"] == cal.as_str() && key_of(e).as_deref() == Some(key))
}

/// Event ids of live single timed events (not series, not exceptions).
fn single_event_ids(f: &FeishuEmulator, cal: &str) -> Vec<String> {
    f.events(cal)
        .into_iter()
        .filter(|e| {
            e.recurrence.as_deref().unwrap_or("").is_empty()
                && e.status != Some(EventStatus::Cancelled)
                && e.start_time.as_ref().is_some_and(|t| t.timestamp.is_some())
        })
        .filter_map(|e| e.event_id)
        .filter(|id| id.ends_with("_0"))
        .collect()
}

// ----- 1 + 2: full mirror, then a no-op --------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_full_mirror_equals_the_feishu_instance_set_and_a_rerun_writes_nothing() {
    let f = feishu(false).await;
    let seeded = sample_tenant(150);
    let (_, fcal) = tenant(&f, seeded.clone());
    let g = graph().await;
    let s = setup(&f, &fcal, &g, "mirror", &Opts::default());

    let first = reconcile_ok(&s.config).await;
    assert!(first.n("created") > 0, "{}", first.ctx());
    assert_eq!(
        (first.n("updated"), first.n("deleted")),
        (0, 0),
        "{}",
        first.ctx()
    );
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    let series = series_uids(&seeded);
    let got = graph_instances(&g, &s.calendar, FROM, TO, &series);
    assert_same(&expected, &got, "Graph vs Feishu instance set");
    assert!(expected.len() > 300, "a meaningful set: {}", expected.len());
    assert!(expected.iter().any(|i| matches!(i.start, T::Day(_))));
    assert!(assert_no_duplicates(&g, &s.calendar, "first mirror") > 0);
    let golden = check_golden(&g, &s.calendar, &series);
    for case in [
        "dst_series_new_york",
        "allday_series",
        "exception_cancelled",
        "exception_moved_renamed",
        "exception_without_master",
        "dst_fall_back_second",
        "dst_later_occurrences",
    ] {
        assert!(
            golden.iter().any(|c| c == case),
            "golden case {case} checked: {golden:?}"
        );
    }
    assert!(
        g.calls()
            .iter()
            .filter(|c| c.path.starts_with("/v1.0/"))
            .all(|c| c.immutable_id)
    );
    assert!(
        g.side_effects().is_empty(),
        "no invitations, no online meetings"
    );

    let writes = g.write_count();
    let calls_before = g.calls().len();
    let second = reconcile_ok(&s.config).await;
    assert_eq!(
        (
            second.n("created"),
            second.n("updated"),
            second.n("deleted")
        ),
        (0, 0, 0),
        "{}",
        second.ctx()
    );
    assert_eq!(g.write_count(), writes, "the no-op pass wrote to Graph");
    let calls = g.calls();
    let odd: Vec<_> = calls[calls_before..]
        .iter()
        .filter(|c| !(c.path.ends_with("/oauth2/v2.0/token") || c.method == "GET"))
        .collect();
    assert!(
        odd.is_empty(),
        "a no-op pass makes token and listing calls only: {odd:#?}"
    );
    assert_same(
        &got,
        &graph_instances(&g, &s.calendar, FROM, TO, &series),
        "after the no-op",
    );
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 3. a webhook push reaches Graph ------------------------------------------

struct Daemon {
    child: Child,
    addr: String,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let mut child = bin()
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("a startup line").unwrap();
        std::thread::spawn(move || for _ in lines {});
        let marker = "http://";
        let rest = &line[line
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {line:?}"))
            + marker.len()..];
        let addr = rest.split([' ', ',', ')']).next().unwrap().to_owned();
        Daemon { child, addr }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the daemon exits cleanly: {status}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn graph_has_subject(g: &GraphEmulator, calendar: &str, subject: &str) -> bool {
    let Some(cal) = g.calendar_id(UPN, calendar) else {
        return false;
    };
    g.events(UPN)
        .unwrap()
        .iter()
        .any(|e| e["calendarId"] == cal.as_str() && e["subject"] == subject)
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_webhook_push_reaches_graph() {
    let f = feishu(true).await;
    let (user, fcal) = tenant(&f, bridge_core::sample::events(40, 3, BASE));
    f.subscribe_events(&user, &fcal);
    let g = graph().await;
    let s = setup(
        &f,
        &fcal,
        &g,
        "webhook",
        &Opts {
            daemon: true,
            ..Opts::default()
        },
    );
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
    wait_for("the initial mirror", Duration::from_secs(20), || {
        graph_has_subject(&g, &s.calendar, &old)
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
    wait_for("the change in Graph", Duration::from_secs(10), || {
        graph_has_subject(&g, &s.calendar, "Renamed, pushed")
    })
    .await;
    assert_no_duplicates(&g, &s.calendar, "after the push");
    daemon.stop();
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 4. kill -9 ------------------------------------------------------------------

/// The Graph target of the shared scenarios: a calendar of one mailbox
/// per mirror.
struct GraphTarget<'a>(&'a GraphEmulator);

impl Replica for GraphTarget<'_> {
    type Mirror = Setup;
    type Inst = Inst;
    const NAME: &'static str = "graph";

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
                rate_503: 0.112,
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
        graph_instances(self.0, &m.calendar, FROM, TO, &BTreeSet::new())
    }
    fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
        assert_same(expected, got, what);
    }
    fn no_duplicates(&self, m: &Setup, what: &str) -> usize {
        assert_no_duplicates(self.0, &m.calendar, what)
    }
    fn after_kill(&self, m: &Setup, what: &str) -> usize {
        assert_no_duplicates(self.0, &m.calendar, what)
    }
    fn write_count(&self, _: &Setup) -> usize {
        self.0.write_count()
    }
    async fn done(&self, _: Setup) {}
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_twenty_kill_9_trials_leave_no_duplicate() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(80, 17, BASE));
    let g = graph().await;
    let moments = Moments {
        seed: 0x6a_2a_f1,
        late_from: 300,
        late_span: 700,
    };
    replica::kill_9_trials(&GraphTarget(&g), &f, &fcal, moments).await;
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 5. random 429 / 503 faults ------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_twenty_percent_faults_converge_to_the_fault_free_mirror() {
    let f = feishu(false).await;
    let seeded = bridge_core::sample::events(80, 23, BASE);
    let (_, fcal) = tenant(&f, seeded.clone());
    let g = graph().await;
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    let s = setup(&f, &fcal, &g, "faults", &Opts::default());
    replica::converge_under_faults(&GraphTarget(&g), &s).await;
    assert_same(
        &expected,
        &graph_instances(&g, &s.calendar, FROM, TO, &series_uids(&seeded)),
        "after faults",
    );
    assert_no_duplicates(&g, &s.calendar, "after faults");
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 6. a deletion in Outlook: restore vs respect --------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_user_deletion_is_restored_or_respected() {
    for mode in ["restore", "respect"] {
        let f = feishu(false).await;
        let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 5, BASE));
        let g = graph().await;
        let s = setup(
            &f,
            &fcal,
            &g,
            &format!("delete-{mode}"),
            &Opts {
                on_target_delete: mode,
                ..Opts::default()
            },
        );
        reconcile_ok(&s.config).await;
        let key = single_event_ids(&f, &fcal).remove(0);
        let ev = graph_event_of(&g, &s.calendar, &key).unwrap();
        g.user_delete(UPN, ev["id"].as_str().unwrap()).unwrap();
        let r = reconcile_ok(&s.config).await;
        let back = graph_event_of(&g, &s.calendar, &key);
        if mode == "restore" {
            assert!(back.is_some(), "restored: {}", r.ctx());
            assert_eq!(r.n("drift_rewrites"), 1, "{}", r.ctx());
        } else {
            assert!(back.is_none(), "left deleted: {}", r.ctx());
            assert_eq!(r.n("tombstoned"), 1, "{}", r.ctx());
        }
        let writes = g.write_count();
        let again = reconcile_ok(&s.config).await;
        assert_eq!(
            g.write_count(),
            writes,
            "{mode}: the next pass wrote: {}",
            again.ctx()
        );
        f.shutdown().await;
        g.shutdown().await;
    }
}

// ----- 7. a mailbox without REST access pauses only this sink ----------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_mailbox_without_rest_pauses_graph_but_not_ics() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(20, 8, BASE));
    let g = graph().await;
    g.add_mailbox("onprem@contoso.example", MailboxAccess::NoRest);
    let s = setup(
        &f,
        &fcal,
        &g,
        "norest",
        &Opts {
            ics: true,
            mailbox: "onprem@contoso.example",
            ..Opts::default()
        },
    );
    let r = reconcile(&s.config).await;
    assert_eq!(r.code, 1, "a paused sink fails the pass: {}", r.ctx());
    let paused = r.graph()["paused"].as_str().unwrap_or_default().to_owned();
    assert!(
        paused.contains("MailboxNotEnabledForRESTAPI") && paused.contains("EWS"),
        "{}",
        r.ctx()
    );
    let ics = std::fs::read_dir(s.dir.join("ics"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ics"))
        .count();
    assert!(ics > 0, "the ICS sink went on: {}", r.ctx());
    assert_eq!(g.write_count(), 0);
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 8. `check`, and delegated use through `auth graph` ---------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_check_verifies_the_token_mailbox_and_calendar() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(5, 2, BASE));
    let g = graph().await;
    let s = setup(&f, &fcal, &g, "check", &Opts::default());
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(&s.config);
    let out = output(cmd).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("access token obtained from"), "{text}");
    assert!(text.contains(&format!("mailbox {UPN} reachable")), "{text}");
    assert!(text.contains("is created on the first sync"), "{text}");
    // A wrong secret: the check fails and says what to fix.
    std::fs::write(s.dir.join("graph-secret"), "wrong\n").unwrap();
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(&s.config);
    let out = output(cmd).await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("AADSTS7000215") && text.contains("client secret"),
        "{text}"
    );
    f.shutdown().await;
    g.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_delegated_sink_mirrors_after_auth_graph() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(20, 9, BASE));
    let g = GraphEmulator::start_with(GraphConfig {
        rate_limit: None,
        consent_user: Some(UPN.into()),
        ..GraphConfig::default()
    })
    .await
    .unwrap();
    g.add_mailbox(UPN, MailboxAccess::Enabled);
    let s = setup(
        &f,
        &fcal,
        &g,
        "delegated",
        &Opts {
            delegated: true,
            ..Opts::default()
        },
    );
    // Not authorized yet: paused, nothing written.
    let r = reconcile(&s.config).await;
    assert_eq!(r.code, 1, "{}", r.ctx());
    assert!(
        r.graph()["paused"]
            .as_str()
            .is_some_and(|p| p.contains("auth graph")),
        "{}",
        r.ctx()
    );
    let mut child = bin()
        .args([
            "auth",
            "graph",
            "--sink",
            "graph",
            "--port",
            "0",
            "--timeout",
            "20",
            "--config",
        ])
        .arg(&s.config)
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
        .expect("auth graph printed an authorize URL");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let consent = http.get(&url).send().await.unwrap();
    assert_eq!(consent.status(), 302, "the emulator approves at once");
    let location = consent.headers()["location"].to_str().unwrap().to_owned();
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
    let printed = reader.join().unwrap();
    assert!(
        out.status.success(),
        "auth graph failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reconcile_ok(&s.config).await;
    assert!(r.n("created") > 0, "{}", r.ctx());
    assert!(assert_no_duplicates(&g, &s.calendar, "delegated") > 0);
    f.shutdown().await;
    g.shutdown().await;
}
