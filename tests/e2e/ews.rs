//! The EWS sink end to end: the real binary mirrors a Feishu emulator
//! tenant into the in-process EWS emulator, and every request it sends is
//! validated against Microsoft's schema (`tests/ews-schema`).
//!
//! The expected side never comes from bridge-sinks code: the Feishu
//! instance set is what the Feishu emulator's `instance_view` expands (plus
//! exceptions without a master, which Feishu shows standalone); the EWS side
//! is what the EWS emulator's CalendarView shows. Identity of an EWS
//! instance: the `FeishuBridgeKey` of its master (occurrences, exceptions)
//! or of itself, with a trailing `_0` removed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, EventListResponse, EventStatus, TimeInfo};
use bridge_emulators::ews::{EwsConfig, EwsEmulator, Faults, UserEdit, zone_of};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};
use chrono::{DateTime, NaiveDate};

use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{self, Moments, Replica};

#[path = "../ews-schema/check.rs"]
pub(crate) mod schema;

const BASE: i64 = 1_760_000_000;
const MAILBOX: &str = "alice@example.com";
const EXAMPLE: &str = include_str!("../../examples/feishu-events.json");
/// 2025-01-01 .. 2026-04-01 UTC.
const FROM: i64 = 1_735_689_600;
const TO: i64 = 1_775_001_600;
const KEY: &str = "FeishuBridgeKey";

async fn ews() -> EwsEmulator {
    EwsEmulator::start(EwsConfig::default()).await.unwrap()
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

/// Every golden case rendered with privacy `full`.
fn golden_cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("expected.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["privacy"] == "full")
        })
        .collect();
    cases.sort();
    cases
}

/// The mapping cases (the example file and every golden case) plus `n`
/// sample events.
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

/// For every golden case with privacy `full`: the CalendarView instances of
/// its uids in its own window equal its hand-written `expected.json` (the
/// cases' windows reach beyond `FROM..TO`, e.g. `dst_later_occurrences`).
fn check_golden(e: &EwsEmulator) -> Vec<String> {
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
        let mut idents: BTreeSet<String> = expected.iter().map(|i| i.ident.clone()).collect();
        for id in golden_input(&case).into_iter().filter_map(|e| e.event_id) {
            idents.insert(uid_of(&id).to_owned());
            idents.insert(id);
        }
        let got: Vec<Inst> = ews_instances(e, from, to)
            .into_iter()
            .filter(|i| idents.contains(&i.ident))
            .collect();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_same(&expected, &got, &format!("golden case {name}"));
        checked.push(name);
    }
    checked
}

#[derive(Debug, Clone)]
struct Opts {
    on_target_delete: &'static str,
    password: &'static str,
    daemon: bool,
    oauth: bool,
    batch_size: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            on_target_delete: "restore",
            password: "correct horse",
            daemon: false,
            oauth: false,
            batch_size: 50,
        }
    }
}

struct Setup {
    config: PathBuf,
}

fn setup(f: &FeishuEmulator, fcal: &str, e: &EwsEmulator, name: &str, o: &Opts) -> Setup {
    let dir = temp_dir(&format!("ews-{name}"));
    let mut extra = String::new();
    if o.daemon {
        extra.push_str(
            "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
             [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n",
        );
    }
    let auth = if o.oauth {
        format!(
            "auth = \"oauth\"\ntoken_url = \"{}\"\nclient_id = \"app-client\"\nclient_secret = \"app-secret\"\n",
            e.token_url("contoso")
        )
    } else {
        format!(
            "auth = \"basic\"\nusername = \"svc-bridge\"\npassword = \"{}\"\n",
            o.password
        )
    };
    extra.push_str(&format!(
        "\n[[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"{}\"\nmailbox = \"{MAILBOX}\"\n{auth}impersonation = true\non_target_delete = \"{}\"\nfallback_past_days = 1500\nbatch_size = {}\n",
        e.ews_url(),
        o.on_target_delete,
        o.batch_size
    ));
    let config = write_config(&dir, f, &format!("[\"{fcal}\"]"), &extra);
    if o.daemon {
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("delivery = \"poll\"", "delivery = \"webhook\"");
        std::fs::write(&config, text).unwrap();
    }
    Setup { config }
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

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

    fn sink(&self) -> &serde_json::Value {
        self.report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with("ews")))
            })
            .unwrap_or_else(|| panic!("no ews sink in the report:\n{}", self.ctx()))
    }

    fn n(&self, key: &str) -> u64 {
        self.sink()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key}:\n{}", self.ctx()))
    }

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
        assert!(items.len() < 999, "instance_view window capped");
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

fn key_of(fields: &bridge_emulators::ews::Fields) -> Option<String> {
    fields
        .extended
        .iter()
        .find(|(k, _)| k.contains(&format!("|{KEY}|")))
        .map(|(_, v)| v.clone())
}

/// CalendarView's instance set in `[from, to)` (by start), as a sorted
/// multiset; all-day items as the dates of their zone.
fn ews_instances(e: &EwsEmulator, from: i64, to: i64) -> Vec<Inst> {
    let items = e.items(MAILBOX);
    let master_key: BTreeMap<&str, String> = items
        .iter()
        .filter_map(|i| Some((i.id.as_str(), key_of(&i.fields)?)))
        .collect();
    let at = |t: i64| DateTime::from_timestamp(t, 0).unwrap();
    let mut v: Vec<Inst> = e
        .calendar_view(MAILBOX, at(from - 3 * 86_400), at(to + 3 * 86_400))
        .into_iter()
        .map(|i| {
            let key = match &i.master_id {
                Some(m) => master_key.get(m.as_str()).cloned(),
                None => key_of(&i.fields),
            }
            .unwrap_or_else(|| format!("<untagged {}>", i.id));
            let ident = key.strip_suffix("_0").unwrap_or(&key).to_owned();
            let (s, en) = (i.fields.start.unwrap(), i.fields.end.unwrap());
            let (start, end) = if i.fields.is_all_day == Some(true) {
                let tz = i
                    .fields
                    .start_tz
                    .as_deref()
                    .and_then(zone_of)
                    .expect("an all-day item has a zone");
                (
                    T::Day(s.with_timezone(&tz).date_naive()),
                    T::Day(en.with_timezone(&tz).date_naive()),
                )
            } else {
                (T::At(s.timestamp()), T::At(en.timestamp()))
            };
            Inst {
                ident,
                start,
                end,
                summary: i.fields.subject.clone().unwrap_or_default(),
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
    let missing: Vec<_> = e.difference(&g).take(10).collect();
    let extra: Vec<_> = g.difference(&e).take(10).collect();
    format!(
        "expected {} instances, got {}\nmissing in Exchange (first 10): {missing:#?}\nextra in Exchange (first 10): {extra:#?}",
        expected.len(),
        got.len()
    )
}

fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    assert!(expected == got, "{what}: {}", diff(expected, got));
}

/// Stored items (singles and masters) by key: none twice (fallback series
/// share their series' key, one item per occurrence, each its own UID).
fn assert_no_duplicates(e: &EwsEmulator, what: &str) -> usize {
    let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
    for i in e.items(MAILBOX) {
        let key = key_of(&i.fields).unwrap_or_else(|| format!("<untagged {}>", i.id));
        *by.entry((key, i.fields.uid.clone().unwrap_or_default()))
            .or_default() += 1;
    }
    let dups: Vec<_> = by.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "{what}: duplicate items {dups:?}");
    by.len()
}

// ----- 1 + 2: full mirror, then a no-op -----------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ews_full_mirror_equals_the_feishu_instance_set_and_a_rerun_writes_nothing() {
    let f = feishu(false).await;
    let seeded = sample_tenant(150);
    let (_, fcal) = tenant(&f, seeded.clone());
    let e = ews().await;
    let s = setup(&f, &fcal, &e, "mirror", &Opts::default());
    let first = reconcile_ok(&s.config).await;
    let (created, updated, deleted, _, failed) = first.counts();
    assert!(created > 0, "{}", first.ctx());
    assert_eq!((updated, deleted, failed), (0, 0, 0), "{}", first.ctx());
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    let got = ews_instances(&e, FROM, TO);
    assert_same(&expected, &got, "Exchange vs Feishu instance set");
    assert!(expected.len() > 400, "a meaningful set: {}", expected.len());
    assert!(expected.iter().any(|i| matches!(i.start, T::Day(_))));
    assert_no_duplicates(&e, "first mirror");
    let golden = check_golden(&e);
    assert!(
        golden.iter().any(|c| c == "dst_later_occurrences"),
        "golden cases checked: {golden:?}"
    );

    let writes = e.write_count();
    let calls_before = e.calls().len();
    let second = reconcile_ok(&s.config).await;
    let (c, u, d, unchanged, _) = second.counts();
    assert_eq!((c, u, d), (0, 0, 0), "{}", second.ctx());
    assert_eq!(unchanged, created, "{}", second.ctx());
    assert_eq!(e.write_count(), writes, "the no-op pass wrote to Exchange");
    let calls = e.calls();
    let odd: Vec<_> = calls[calls_before..]
        .iter()
        .filter(|c| c.operation.as_deref() != Some("FindItem"))
        .map(|c| (c.operation.clone(), c.status))
        .collect();
    assert!(
        odd.is_empty(),
        "a no-op pass makes the drift listing only: {odd:?}"
    );
    assert_same(&got, &ews_instances(&e, FROM, TO), "after the no-op");
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

// ----- 3. a webhook push reaches Exchange ------------------------------------------

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

fn has_subject(e: &EwsEmulator, subject: &str) -> bool {
    e.items(MAILBOX)
        .iter()
        .any(|i| i.fields.subject.as_deref() == Some(subject))
}

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

#[tokio::test(flavor = "multi_thread")]
async fn ews_a_webhook_push_reaches_exchange() {
    let f = feishu(true).await;
    let (user, fcal) = tenant(&f, bridge_core::sample::events(40, 3, BASE));
    f.subscribe_events(&user, &fcal);
    let e = ews().await;
    let o = Opts {
        daemon: true,
        oauth: true,
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &e, "webhook", &o);
    let id = single_event_ids(&f, &fcal).remove(0);
    let old = f
        .events(&fcal)
        .into_iter()
        .find(|x| x.event_id.as_deref() == Some(&id))
        .and_then(|x| x.summary)
        .unwrap();
    let daemon = Daemon::start(&s.config);
    f.set_webhook(Some(WebhookTarget {
        url: format!("http://{}/webhook/event", daemon.addr),
        encrypt_key: Some("enc-key".into()),
        verification_token: "verify-token".into(),
    }));
    wait_for("the initial mirror", Duration::from_secs(20), || {
        has_subject(&e, &old)
    })
    .await;
    let before = f.deliveries().len();
    f.update_event(&fcal, &id, |x| x.summary = Some("Renamed, pushed".into()));
    let deliveries = f
        .wait_for_deliveries(before + 1, Duration::from_secs(5))
        .await;
    assert!(
        deliveries.iter().skip(before).any(|d| d.delivered_ok),
        "{deliveries:?}"
    );
    wait_for("the change in Exchange", Duration::from_secs(10), || {
        has_subject(&e, "Renamed, pushed")
    })
    .await;
    assert_no_duplicates(&e, "after the push");
    // The app-only token impersonated the mailbox on every call.
    assert!(
        e.calls()
            .iter()
            .filter(|c| c.path.contains("/EWS/"))
            .all(|c| c.anchor_mailbox.as_deref() == Some(MAILBOX))
    );
    daemon.stop();
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

// ----- 4. kill -9 -------------------------------------------------------------------

/// The EWS target of the shared scenarios: each mirror its own mailbox
/// server.
struct EwsTarget {
    opts: Opts,
}

/// A mailbox server and the configuration mirroring into it.
struct EwsMirror {
    e: EwsEmulator,
    s: Setup,
}

impl Replica for EwsTarget {
    type Mirror = EwsMirror;
    type Inst = Inst;
    const NAME: &'static str = "ews";

    async fn mirror(&self, f: &FeishuEmulator, fcal: &str, name: &str) -> EwsMirror {
        let e = ews().await;
        let s = setup(f, fcal, &e, name, &self.opts);
        EwsMirror { e, s }
    }
    fn config(m: &EwsMirror) -> &Path {
        &m.s.config
    }
    fn slow(&self, m: &EwsMirror, on: bool) {
        m.e.set_faults(if on {
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
    fn faults(&self, m: &EwsMirror, on: bool) {
        // P(fault) = 0.1 + 0.9 * 0.112 ≈ 0.2, seeded.
        m.e.set_faults(if on {
            Faults {
                busy_rate: 0.1,
                back_off_ms: 10,
                unavailable_rate: 0.112,
                seed: Some(0xFA_017),
                ..Faults::default()
            }
        } else {
            Faults::default()
        });
    }
    fn faulted(&self, m: &EwsMirror) -> (usize, usize) {
        let calls = m.e.calls();
        let faulted = calls.iter().filter(|c| c.status >= 500).count();
        (faulted, calls.len())
    }
    fn instances(&self, m: &EwsMirror) -> Vec<Inst> {
        ews_instances(&m.e, FROM, TO)
    }
    fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
        assert_same(expected, got, what);
    }
    fn no_duplicates(&self, m: &EwsMirror, what: &str) -> usize {
        assert_no_duplicates(&m.e, what)
    }
    fn after_kill(&self, m: &EwsMirror, _: &str) -> usize {
        m.e.items(MAILBOX).len()
    }
    fn write_count(&self, m: &EwsMirror) -> usize {
        m.e.write_count()
    }
    async fn done(&self, m: EwsMirror) {
        m.e.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_kill_9_at_any_moment_then_a_clean_run_gives_the_same_mirror() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(120, 17, BASE));
    let target = EwsTarget {
        opts: Opts::default(),
    };
    let moments = Moments {
        seed: 0xE55_613,
        late_from: 500,
        late_span: 500,
    };
    replica::kill_9_trials(&target, &f, &fcal, moments).await;
    f.shutdown().await;
}

// ----- 5. faults -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ews_twenty_percent_faults_converge_to_the_fault_free_mirror() {
    let f = feishu(false).await;
    let seeded = bridge_core::sample::events(80, 23, BASE);
    let (_, fcal) = tenant(&f, seeded.clone());
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    // Small batches: many requests for the faults to hit.
    let target = EwsTarget {
        opts: Opts {
            batch_size: 5,
            ..Opts::default()
        },
    };
    let m = target.mirror(&f, &fcal, "faults").await;
    replica::converge_under_faults(&target, &m).await;
    assert_same(&expected, &ews_instances(&m.e, FROM, TO), "after faults");
    assert_no_duplicates(&m.e, "after faults");
    schema::assert_valid(&m.e.request_bodies());
    f.shutdown().await;
    m.e.shutdown().await;
}

// ----- 6. user edits and deletes ------------------------------------------------------

async fn user_changes(on_target_delete: &'static str) {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 5, BASE));
    let e = ews().await;
    let o = Opts {
        on_target_delete,
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &e, &format!("user-{on_target_delete}"), &o);
    reconcile_ok(&s.config).await;
    let before = ews_instances(&e, FROM, TO);
    let ids = single_event_ids(&f, &fcal);
    let item_of = |key: &str| {
        e.items(MAILBOX)
            .into_iter()
            .find(|i| key_of(&i.fields).as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no item {key}"))
    };
    let (edited, deleted) = (item_of(&ids[0]), item_of(&ids[1]));
    assert!(e.user_edit(
        &edited.id,
        UserEdit {
            subject: Some("edited in Outlook".into()),
            ..UserEdit::default()
        }
    ));
    assert!(e.user_delete(&deleted.id));
    let r = reconcile_ok(&s.config).await;
    let after = ews_instances(&e, FROM, TO);
    assert!(
        !has_subject(&e, "edited in Outlook"),
        "the edit is overwritten: {}",
        r.ctx()
    );
    let gone = uid_of(&ids[1]).to_owned();
    match on_target_delete {
        "restore" => assert_same(&before, &after, "restored"),
        _ => {
            assert!(!after.iter().any(|i| i.ident == gone), "left deleted");
            assert_eq!(
                after.len(),
                before.iter().filter(|i| i.ident != gone).count()
            );
        }
    }
    let writes = e.write_count();
    reconcile_ok(&s.config).await;
    assert_eq!(
        e.write_count(),
        writes,
        "{on_target_delete}: the next pass wrote"
    );
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_user_edit_and_delete_with_restore() {
    user_changes("restore").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_user_edit_and_delete_with_respect() {
    user_changes("respect").await;
}

// ----- 7. credentials: pause only this sink; `check` ------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn ews_wrong_password_and_denied_impersonation_pause_only_this_sink() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(20, 9, BASE));
    let e = ews().await;
    let o = Opts {
        password: "wrong",
        ..Opts::default()
    };
    let s = setup(&f, &fcal, &e, "wrong-password", &o);
    // An ICS sink next to it goes on.
    let dir = s.config.parent().unwrap().to_owned();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text.push_str(&format!(
        "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        dir.join("ics").display()
    ));
    std::fs::write(&s.config, text).unwrap();
    let r = reconcile(&s.config).await;
    assert_eq!(r.code, 1, "{}", r.ctx());
    let paused = r.sink()["paused"].as_str().unwrap_or_default().to_owned();
    assert!(
        paused.contains("EWS sink ews:ex paused")
            && paused.contains("check the username and password"),
        "{}",
        r.ctx()
    );
    assert!(
        std::fs::read_dir(dir.join("ics")).unwrap().count() > 0,
        "the ICS sink wrote"
    );
    assert!(e.items(MAILBOX).is_empty());
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(&s.config);
    let out = output(cmd).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("credentials refused"), "{text}");

    // Denied impersonation.
    e.update_config(|c| c.users[0].can_impersonate = false);
    let s2 = setup(&f, &fcal, &e, "denied", &Opts::default());
    let r = reconcile(&s2.config).await;
    let paused = r.sink()["paused"].as_str().unwrap_or_default().to_owned();
    assert!(
        paused.contains("ErrorImpersonateUserDenied")
            && paused.contains("ApplicationImpersonation"),
        "{}",
        r.ctx()
    );
    // And `check` with good credentials says what answers.
    e.update_config(|c| c.users[0].can_impersonate = true);
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(&s2.config);
    let out = output(cmd).await;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for want in [
        "answers (Exchange 15.1.2507.6)",
        "credentials of svc-bridge accepted",
        "calendar of alice@example.com reachable through impersonation",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    f.shutdown().await;
    e.shutdown().await;
}
