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
use std::path::{Path, PathBuf};

use bridge_core::feishu::{Event, EventStatus};
use bridge_emulators::feishu::FeishuEmulator;
use bridge_emulators::graph::{
    Faults, GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET,
    TEST_TENANT,
};
use chrono::DateTime;
use serde_json::Value;

use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{
    self, BASE, FAULT_SEED, FROM, Faulting, Inst, Moments, Replica, Run, SLOW, T, TO, feishu,
    feishu_instances, output, tenant, uid_of,
};

const UPN: &str = "mirror@contoso.example";
const KEY_TAG: &str = "String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey";
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

/// For every golden case with privacy `full`: the Graph instances of its
/// uids in its window equal its hand-written `expected.json`.
fn check_golden(g: &GraphEmulator, calendar: &str, series: &BTreeSet<String>) -> Vec<String> {
    replica::check_golden("Graph", None, |from, to| {
        graph_instances(g, calendar, from, to, series)
    })
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

async fn reconcile(config: &Path) -> Run {
    replica::reconcile::<GraphTarget<'static>>(config).await
}

async fn reconcile_ok(config: &Path) -> Run {
    replica::reconcile_clean::<GraphTarget<'static>>(config).await
}

// ----- instance sets -----------------------------------------------------------

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

fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    replica::assert_same_in("Graph", expected, got, what);
}

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

// ----- 1 + 2: full mirror, then a no-op --------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_full_mirror_equals_the_feishu_instance_set_and_a_rerun_writes_nothing() {
    let f = feishu(false).await;
    let seeded = replica::sample_tenant(150, None);
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
    replica::webhook_push(&GraphTarget(&g), &f, &fcal, &s).await;
    f.shutdown().await;
    g.shutdown().await;
}

// ----- 4. kill -9 ------------------------------------------------------------------

/// The Graph target of the shared scenarios: a calendar of one mailbox
/// per mirror.
struct GraphTarget<'a>(&'a GraphEmulator);

impl Replica for GraphTarget<'_> {
    type Mirror = Setup;
    const NAME: &'static str = "graph";
    const TARGET: &'static str = "Graph";

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
                rate_503: 0.112,
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
        graph_instances(self.0, &m.calendar, FROM, TO, &BTreeSet::new())
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
        let ev = graph_event_of(self.0, &m.calendar, key)
            .unwrap_or_else(|| panic!("no Graph event {key}"));
        ev["id"].as_str().unwrap().to_owned()
    }
    fn user_edit(&self, _: &Setup, id: &str, summary: &str) {
        self.0
            .user_edit(UPN, id, serde_json::json!({ "subject": summary }))
            .unwrap();
    }
    fn user_delete(&self, _: &Setup, id: &str) {
        self.0.user_delete(UPN, id).unwrap();
    }
    /// An event with the key (a restore creates a new one).
    fn is_live(&self, m: &Setup, _: &str, key: &str) -> bool {
        graph_event_of(self.0, &m.calendar, key).is_some()
    }
    fn has_summary(&self, m: &Setup, summary: &str) -> bool {
        graph_has_subject(self.0, &m.calendar, summary)
    }
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

// ----- 6. a user's edit and deletion in Outlook: restore vs respect ----------------

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_user_deletion_is_restored_or_respected() {
    for mode in ["restore", "respect"] {
        let f = feishu(false).await;
        let (_, fcal) = tenant(&f, bridge_core::sample::events(30, 5, BASE));
        let g = graph().await;
        replica::user_edit_and_delete(&GraphTarget(&g), &f, &fcal, mode).await;
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
    let paused = r.sink()["paused"].as_str().unwrap_or_default().to_owned();
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
        r.sink()["paused"]
            .as_str()
            .is_some_and(|p| p.contains("auth graph")),
        "{}",
        r.ctx()
    );
    let (url, _) = replica::authorize(&s.config, "graph", "graph").await;
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let r = reconcile_ok(&s.config).await;
    assert!(r.n("created") > 0, "{}", r.ctx());
    assert!(assert_no_duplicates(&g, &s.calendar, "delegated") > 0);
    f.shutdown().await;
    g.shutdown().await;
}
