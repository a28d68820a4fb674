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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bridge_emulators::ews::{EwsConfig, EwsEmulator, Faults, UserEdit, zone_of};
use bridge_emulators::feishu::FeishuEmulator;
use chrono::DateTime;

use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{
    self, BASE, FAULT_SEED, FROM, Faulting, Inst, Moments, Replica, Run, SLOW, T, TO, feishu,
    feishu_instances, output, tenant,
};

#[path = "../ews-schema/check.rs"]
pub(crate) mod schema;

pub(crate) const MAILBOX: &str = "alice@example.com";
const KEY: &str = "FeishuBridgeKey";

async fn ews() -> EwsEmulator {
    EwsEmulator::start(EwsConfig::default()).await.unwrap()
}

/// For every golden case with privacy `full`: the CalendarView instances of
/// its uids in its own window equal its hand-written `expected.json` (the
/// cases' windows reach beyond `FROM..TO`, e.g. `dst_later_occurrences`).
fn check_golden(e: &EwsEmulator) -> Vec<String> {
    replica::check_golden("Exchange", None, |from, to| ews_instances(e, from, to))
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

pub(crate) async fn reconcile(config: &Path) -> Run {
    replica::reconcile::<EwsTarget>(config).await
}

pub(crate) async fn reconcile_ok(config: &Path) -> Run {
    replica::reconcile_clean::<EwsTarget>(config).await
}

// ----- instance sets -----------------------------------------------------------

fn key_of(fields: &bridge_emulators::ews::Fields) -> Option<String> {
    fields
        .extended
        .iter()
        .find(|(k, _)| k.contains(&format!("|{KEY}|")))
        .map(|(_, v)| v.clone())
}

/// CalendarView's instance set in `[from, to)` (by start), as a sorted
/// multiset; all-day items as the dates of their zone.
pub(crate) fn ews_instances(e: &EwsEmulator, from: i64, to: i64) -> Vec<Inst> {
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

pub(crate) fn assert_same(expected: &[Inst], got: &[Inst], what: &str) {
    replica::assert_same_in("Exchange", expected, got, what);
}

/// Stored items (singles and masters) by key: none twice (fallback series
/// share their series' key, one item per occurrence, each its own UID).
pub(crate) fn assert_no_duplicates(e: &EwsEmulator, what: &str) -> usize {
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
    let seeded = replica::sample_tenant(150, None);
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

fn has_subject(e: &EwsEmulator, subject: &str) -> bool {
    e.items(MAILBOX)
        .iter()
        .any(|i| i.fields.subject.as_deref() == Some(subject))
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_a_webhook_push_reaches_exchange() {
    let f = feishu(true).await;
    let (user, fcal) = tenant(&f, bridge_core::sample::events(40, 3, BASE));
    f.subscribe_events(&user, &fcal);
    let o = Opts {
        daemon: true,
        oauth: true,
        ..Opts::default()
    };
    let target = EwsTarget { opts: o };
    let m = target.mirror(&f, &fcal, "webhook").await;
    replica::webhook_push(&target, &f, &fcal, &m).await;
    let e = m.e;
    // The app-only token impersonated the mailbox on every call.
    assert!(
        e.calls()
            .iter()
            .filter(|c| c.path.contains("/EWS/"))
            .all(|c| c.anchor_mailbox.as_deref() == Some(MAILBOX))
    );
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
    const NAME: &'static str = "ews";
    const TARGET: &'static str = "Exchange";

    fn config(m: &EwsMirror) -> &Path {
        &m.s.config
    }
    fn set_faults(&self, m: &EwsMirror, faulting: Faulting) {
        m.e.set_faults(match faulting {
            Faulting::Off => Faults::default(),
            Faulting::Slow => Faults {
                slow_rate: 1.0,
                slow_delay: SLOW,
                seed: Some(1),
                ..Faults::default()
            },
            // ErrorServerBusy (500 with a back-off) and 503.
            Faulting::Faulty => Faults {
                busy_rate: 0.1,
                back_off_ms: 10,
                unavailable_rate: 0.112,
                seed: Some(FAULT_SEED),
                ..Faults::default()
            },
        });
    }
    fn statuses(&self, m: &EwsMirror) -> Vec<u16> {
        m.e.calls().iter().map(|c| c.status).collect()
    }
    fn instances(&self, m: &EwsMirror) -> Vec<Inst> {
        ews_instances(&m.e, FROM, TO)
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

    async fn mirror_with(
        &self,
        f: &FeishuEmulator,
        fcal: &str,
        name: &str,
        on_target_delete: &'static str,
    ) -> EwsMirror {
        let e = ews().await;
        let o = Opts {
            on_target_delete,
            ..self.opts.clone()
        };
        let s = setup(f, fcal, &e, name, &o);
        EwsMirror { e, s }
    }
    fn item_id(&self, m: &EwsMirror, key: &str) -> String {
        item_of(&m.e, key)
            .unwrap_or_else(|| panic!("no item {key}"))
            .id
    }
    fn user_edit(&self, m: &EwsMirror, id: &str, summary: &str) {
        assert!(m.e.user_edit(
            id,
            UserEdit {
                subject: Some(summary.into()),
                ..UserEdit::default()
            }
        ));
    }
    fn user_delete(&self, m: &EwsMirror, id: &str) {
        assert!(m.e.user_delete(id));
    }
    /// An item with the key (a restore creates a new one).
    fn is_live(&self, m: &EwsMirror, _: &str, key: &str) -> bool {
        item_of(&m.e, key).is_some()
    }
    fn has_summary(&self, m: &EwsMirror, summary: &str) -> bool {
        has_subject(&m.e, summary)
    }
    fn check_requests(&self, m: &EwsMirror) {
        schema::assert_valid(&m.e.request_bodies());
    }
}

/// The stored item tagged with this key.
fn item_of(e: &EwsEmulator, key: &str) -> Option<bridge_emulators::ews::StoredItem> {
    e.items(MAILBOX)
        .into_iter()
        .find(|i| key_of(&i.fields).as_deref() == Some(key))
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
    let target = EwsTarget {
        opts: Opts::default(),
    };
    replica::user_edit_and_delete(&target, &f, &fcal, on_target_delete).await;
    f.shutdown().await;
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
