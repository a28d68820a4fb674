//! More of the Microsoft Graph sink end to end (the real binary against the
//! Feishu and Graph emulators): a user's edit or delete of one occurrence
//! of a mirrored series in Outlook (the Graph emulator's control routes).
//!
//! The expected side is what the Graph emulator showed after the first
//! mirror (its own `calendarView` expansion), never bridge-sinks code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};
use bridge_emulators::graph::{
    GraphConfig, GraphEmulator, MailboxAccess, TEST_CLIENT_ID, TEST_CLIENT_SECRET, TEST_TENANT,
};
use serde_json::Value;

use crate::feishu::{bin, temp_dir, write_config};

const BASE: i64 = 1_760_000_000;
const UPN: &str = "occurrences@contoso.example";
const FROM: &str = "2025-01-01T00:00:00Z";
const TO: &str = "2027-01-01T00:00:00Z";

struct Mirror {
    f: FeishuEmulator,
    g: GraphEmulator,
    config: PathBuf,
    calendar: String,
}

/// A Feishu tenant of sample events mirrored once into a Graph calendar.
async fn mirror(name: &str, on_target_delete: &str) -> Mirror {
    let g = GraphEmulator::start_with(GraphConfig {
        rate_limit: None,
        ..GraphConfig::default()
    })
    .await
    .unwrap();
    g.add_mailbox(UPN, MailboxAccess::Enabled);
    let f = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = f.add_user("Han Meimei");
    let fcal = f.primary_calendar(&user);
    f.bulk_load(&fcal, bridge_core::sample::events(40, 11, BASE));
    let dir = temp_dir(&format!("graph-more-{name}"));
    let secret = dir.join("graph-secret");
    std::fs::write(&secret, format!("{TEST_CLIENT_SECRET}\n")).unwrap();
    let calendar = format!("Occurrences {name}");
    let extra = format!(
        "\n[[sinks]]\nkind = \"graph\"\nname = \"graph\"\ntenant_id = \"{TEST_TENANT}\"\n\
         client_id = \"{TEST_CLIENT_ID}\"\nclient_secret_file = \"{}\"\n\
         mailbox = \"{UPN}\"\ncalendar = \"{calendar}\"\ncreate_calendar = true\n\
         base_url = \"{}\"\ntoken_url = \"{}\"\non_target_delete = \"{on_target_delete}\"\n",
        secret.display(),
        g.base_url(),
        g.token_url(),
    );
    let config = write_config(&dir, &f, &format!("[\"{fcal}\"]"), &extra);
    let m = Mirror {
        f,
        g,
        config,
        calendar,
    };
    m.reconcile().await;
    m
}

impl Mirror {
    /// `reconcile --json`: exit 0 and no failed item; the Graph sink's report.
    async fn reconcile(&self) -> Value {
        let mut cmd: Command = bin();
        cmd.args(["reconcile", "--json", "--config"])
            .arg(&self.config);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let ctx = format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(0), "{ctx}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let sink = report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["sink"] == "graph:graph"))
            .cloned()
            .unwrap_or_else(|| panic!("no graph sink in the report: {ctx}"));
        assert_eq!(sink["failed"], 0, "{ctx}");
        sink
    }

    fn view(&self) -> Vec<Value> {
        let cal = self.g.calendar_id(UPN, &self.calendar).unwrap();
        self.g.view(UPN, Some(&cal), FROM, TO).unwrap()
    }

    /// The occurrences and exceptions of series, by master and original start.
    fn occurrences(&self) -> BTreeMap<(String, String), Value> {
        self.view()
            .into_iter()
            .filter_map(|v| {
                let m = v["seriesMasterId"].as_str()?.to_owned();
                let o = v["originalStart"].as_str()?.to_owned();
                Some(((m, o), v))
            })
            .collect()
    }

    /// What a user sees: (subject, start, end) of every instance, sorted.
    fn seen(&self) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .view()
            .iter()
            .map(|v| {
                (
                    v["subject"].as_str().unwrap_or("").to_owned(),
                    v["start"]["dateTime"].as_str().unwrap_or("").to_owned(),
                    v["end"]["dateTime"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Stored singles and masters of the calendar: none twice (by key tag).
    fn assert_no_duplicate(&self) {
        let cal = self.g.calendar_id(UPN, &self.calendar).unwrap();
        let mut seen = BTreeMap::new();
        for e in self.g.events(UPN).unwrap() {
            if e["calendarId"] != cal.as_str() {
                continue;
            }
            let key = e["singleValueExtendedProperties"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| {
                    p["id"]
                        .as_str()
                        .is_some_and(|i| i.ends_with("FeishuBridgeKey"))
                })
                .and_then(|p| p["value"].as_str())
                .unwrap_or_else(|| panic!("an event without our key: {e}"))
                .to_owned();
            assert!(
                seen.insert(key.clone(), ()).is_none(),
                "a duplicate of {key}"
            );
        }
    }

    /// A series with one of our exceptions and at least three plain
    /// occurrences: (our exception, plain occurrences).
    fn series_to_touch(&self) -> (Value, Vec<Value>) {
        let occ = self.occurrences();
        let mut by_master: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for ((m, _), v) in &occ {
            by_master.entry(m.as_str()).or_default().push(v);
        }
        by_master
            .values()
            .find_map(|vs| {
                let ours = vs.iter().find(|v| v["type"] == "exception")?;
                let plain: Vec<Value> = vs
                    .iter()
                    .filter(|v| v["type"] == "occurrence")
                    .map(|v| (*v).clone())
                    .collect();
                (plain.len() >= 3).then(|| ((*ours).clone(), plain))
            })
            .expect("a sample series with an exception and three occurrences")
    }

    async fn shutdown(self) {
        self.f.shutdown().await;
        self.g.shutdown().await;
    }
}

fn id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_users_edit_of_one_occurrence_is_written_back_on_that_occurrence() {
    let m = mirror("edit", "restore").await;
    let before = m.seen();
    let (ours, plain) = m.series_to_touch();
    m.g.user_edit(
        UPN,
        id(&ours),
        serde_json::json!({"subject": "renamed in Outlook"}),
    )
    .unwrap();
    let moved = &plain[1];
    let start = moved["start"]["dateTime"].as_str().unwrap();
    let end = moved["end"]["dateTime"].as_str().unwrap();
    // An hour earlier (the strings are UTC wall clock, `...T09:00:00.0000000`).
    let earlier = |s: &str| {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").unwrap()
            - chrono::Duration::hours(1);
        serde_json::json!({"dateTime": t.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": "UTC"})
    };
    m.g.user_edit(
        UPN,
        id(moved),
        serde_json::json!({"start": earlier(start), "end": earlier(end)}),
    )
    .unwrap();
    assert_ne!(m.seen(), before);
    let writes = m.g.write_count();
    let r = m.reconcile().await;
    assert_eq!(r["drift_rewrites"], 1, "{r}");
    assert_eq!(
        m.seen(),
        before,
        "the occurrences are back as Feishu has them"
    );
    // Two PATCHes on the two occurrences; the master untouched.
    assert_eq!(m.g.write_count() - writes, 2, "{r}");
    m.assert_no_duplicate();
    let writes = m.g.write_count();
    let r = m.reconcile().await;
    assert_eq!(r["drift_rewrites"], 0, "{r}");
    assert_eq!(m.g.write_count(), writes, "the rerun wrote: {r}");
    m.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_a_users_delete_of_one_occurrence_is_restored_or_respected() {
    for mode in ["restore", "respect"] {
        let m = mirror(&format!("delete-{mode}"), mode).await;
        let before = m.seen();
        let (_, plain) = m.series_to_touch();
        m.g.user_delete(UPN, id(&plain[2])).unwrap();
        assert_eq!(m.seen().len(), before.len() - 1);
        let r = m.reconcile().await;
        let after = m.seen();
        if mode == "restore" {
            // Graph cannot bring one occurrence back: the series is
            // written anew, with its exceptions and cancellations.
            assert_eq!(after, before, "{mode}: {r}");
        } else {
            assert_eq!(after.len(), before.len() - 1, "{mode}: left deleted: {r}");
        }
        m.assert_no_duplicate();
        let writes = m.g.write_count();
        let r = m.reconcile().await;
        assert_eq!(m.g.write_count(), writes, "{mode}: the rerun wrote: {r}");
        assert_eq!(m.seen(), after);
        m.shutdown().await;
    }
}
