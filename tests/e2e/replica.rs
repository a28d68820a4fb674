//! What the replica targets' end-to-end tests share (Google, EWS, Graph):
//! the kill -9 trials, the 20%-fault convergence loop and a user's edits
//! and deletions on the target (restore vs respect), driven through a small
//! [`Replica`] trait each target's module implements over its emulator
//! (start a mirror and write its sink table, slow or faulty calls, list the
//! instance set, edit or delete as a user through the emulator's control
//! side).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bridge_core::feishu::{Event, EventListResponse, EventStatus, TimeInfo};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};
use chrono::{DateTime, NaiveDate};

use crate::daemon::Daemon;
use crate::feishu::bin;

/// The faults a scenario puts on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Faulting {
    Off,
    /// Every call answers after 15 ms ([`SLOW`]), so that a run can be
    /// killed while listing, writing or committing.
    Slow,
    /// Seeded faults (throttling, 5xx) on about 20% of the calls: P =
    /// 0.1 + 0.9 × 0.112, with [`FAULT_SEED`].
    Faulty,
}

/// The delay of [`Faulting::Slow`].
pub(crate) const SLOW: Duration = Duration::from_millis(15);
/// The dice of [`Faulting::Faulty`].
pub(crate) const FAULT_SEED: u64 = 0xFA_017;

/// One replica target as the shared scenarios drive it.
pub(crate) trait Replica {
    /// A target calendar (or mailbox) and the configuration mirroring into it.
    type Mirror;
    /// The prefix of the sink id (`google`, `ews`, `graph`), also in messages.
    const NAME: &'static str;
    /// The target as messages name it (`Google`, `Exchange`, `Graph`).
    const TARGET: &'static str;

    /// A configuration mirroring `fcal` into a fresh target
    /// (`on_target_delete = "restore"`); `name` names its directory.
    async fn mirror(&self, f: &FeishuEmulator, fcal: &str, name: &str) -> Self::Mirror {
        self.mirror_with(f, fcal, name, "restore").await
    }
    fn config(m: &Self::Mirror) -> &Path;
    /// Sets the target's faults (see [`Faulting`]).
    fn set_faults(&self, m: &Self::Mirror, faulting: Faulting);
    /// The status of every call the target answered, in order.
    fn statuses(&self, m: &Self::Mirror) -> Vec<u16>;
    /// The mirror's instance set within the tests' range.
    fn instances(&self, m: &Self::Mirror) -> Vec<Inst>;
    /// The live items, asserting there is no duplicate.
    fn no_duplicates(&self, m: &Self::Mirror, what: &str) -> usize;
    /// What the target holds right after a kill (printed with the trials).
    fn after_kill(&self, m: &Self::Mirror, what: &str) -> usize;
    /// Writes the target received so far.
    fn write_count(&self, m: &Self::Mirror) -> usize;
    /// Releases a mirror (a server of its own is shut down).
    async fn done(&self, m: Self::Mirror);

    /// Like [`Replica::mirror`], with this `on_target_delete`.
    async fn mirror_with(
        &self,
        f: &FeishuEmulator,
        fcal: &str,
        name: &str,
        on_target_delete: &'static str,
    ) -> Self::Mirror;
    /// The target's id of the mirrored item of this Feishu event id.
    fn item_id(&self, m: &Self::Mirror, key: &str) -> String;
    /// A user renames the item on the target.
    fn user_edit(&self, m: &Self::Mirror, id: &str, summary: &str);
    /// A user deletes the item on the target.
    fn user_delete(&self, m: &Self::Mirror, id: &str);
    /// Whether the item (the target's `id`, or whatever now mirrors `key`)
    /// is live on the target.
    fn is_live(&self, m: &Self::Mirror, id: &str, key: &str) -> bool;
    /// Whether a live item has this title.
    fn has_summary(&self, m: &Self::Mirror, summary: &str) -> bool;
    /// Checks of everything the target received (EWS: the schema).
    fn check_requests(&self, _: &Self::Mirror) {}
}

pub(crate) async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

/// One `reconcile --json`.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) report: serde_json::Value,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    sink: &'static str,
}

impl Run {
    pub(crate) fn ctx(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The sink's entry of the only calendar in the report.
    pub(crate) fn sink(&self) -> &serde_json::Value {
        self.report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with(self.sink)))
            })
            .unwrap_or_else(|| panic!("no {} sink in the report:\n{}", self.sink, self.ctx()))
    }

    /// A count of the sink's entry in the report.
    pub(crate) fn n(&self, key: &str) -> u64 {
        self.sink()[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} of the {} sink:\n{}", self.sink, self.ctx()))
    }

    /// `(created, updated, deleted, unchanged, failed)` of the sink.
    pub(crate) fn counts(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.n("created"),
            self.n("updated"),
            self.n("deleted"),
            self.n("unchanged"),
            self.n("failed"),
        )
    }
}

pub(crate) async fn reconcile<R: Replica>(config: &Path) -> Run {
    let mut cmd = bin();
    cmd.args(["reconcile", "--json", "--config"]).arg(config);
    let out = output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        sink: R::NAME,
    }
}

async fn reconcile_ok<R: Replica>(config: &Path) -> Run {
    let r = reconcile::<R>(config).await;
    assert_eq!(r.code, 0, "{}", r.ctx());
    r
}

/// How the kill -9 trials pick their moments: even trials anywhere in
/// 0-110% of an uninterrupted slow run, odd ones in its later part.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moments {
    /// Seed of the trials' dice.
    pub(crate) seed: u64,
    /// Odd trials: from this per mille of the run ...
    pub(crate) late_from: u64,
    /// ... over this many per mille.
    pub(crate) late_span: u64,
}

/// Twenty trials: a mirror's run killed (SIGKILL) at a random moment, then
/// a clean run must give the reference mirror (a clean run into a fresh
/// target) with no duplicate, and a further pass must write nothing.
#[allow(clippy::print_stderr)]
pub(crate) async fn kill_9_trials<R: Replica>(
    r: &R,
    f: &FeishuEmulator,
    fcal: &str,
    moments: Moments,
) {
    const TRIALS: u64 = 20;
    let reference_mirror = r.mirror(f, fcal, "kill-ref").await;
    reconcile_ok::<R>(R::config(&reference_mirror)).await;
    let reference = r.instances(&reference_mirror);
    assert!(!reference.is_empty());
    let n_items = r.no_duplicates(&reference_mirror, "reference");

    let calib = r.mirror(f, fcal, "kill-calib").await;
    r.set_faults(&calib, Faulting::Slow);
    let started = Instant::now();
    let run = reconcile::<R>(R::config(&calib)).await;
    let full_run = started.elapsed();
    r.set_faults(&calib, Faulting::Off);
    assert_eq!(run.code, 0, "{}", run.ctx());

    let mut rng = bridge_core::sample::Rng::new(moments.seed);
    let mut outcomes = Vec::new();
    for trial in 0..TRIALS {
        let permille = if trial % 2 == 0 {
            rng.below(1101)
        } else {
            moments.late_from + rng.below(moments.late_span)
        };
        let delay = full_run * u32::try_from(permille).unwrap() / 1000;
        let m = r.mirror(f, fcal, &format!("kill-{trial}")).await;
        r.set_faults(&m, Faulting::Slow);
        let mut cmd = bin();
        cmd.args(["reconcile", "--config"])
            .arg(R::config(&m))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let killed = tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().unwrap();
            std::thread::sleep(delay);
            let finished = child.try_wait().unwrap().is_some();
            child.kill().unwrap_or_default();
            child.wait().unwrap();
            !finished
        })
        .await
        .unwrap();
        r.set_faults(&m, Faulting::Off);
        let after_kill = r.after_kill(&m, &format!("trial {trial} after the kill"));

        let run = reconcile::<R>(R::config(&m)).await;
        assert_eq!(run.code, 0, "trial {trial} ({delay:?}): {}", run.ctx());
        assert_eq!(run.n("failed"), 0, "trial {trial}: {}", run.ctx());
        assert_eq!(run.n("deleted"), 0, "trial {trial}: {}", run.ctx());
        assert_same_in(
            R::TARGET,
            &reference,
            &r.instances(&m),
            &format!("trial {trial} ({delay:?})"),
        );
        let live = r.no_duplicates(&m, &format!("trial {trial}"));
        assert_eq!(live, n_items, "trial {trial}: live items");
        // And a further pass is a no-op.
        let writes = r.write_count(&m);
        let again = reconcile_ok::<R>(R::config(&m)).await;
        assert_eq!(
            (again.n("created"), again.n("updated"), again.n("deleted")),
            (0, 0, 0),
            "trial {trial}: {}",
            again.ctx()
        );
        assert_eq!(r.write_count(&m), writes, "trial {trial}: no-op wrote");
        outcomes.push((delay.as_millis(), killed, after_kill, run.n("created")));
        r.done(m).await;
    }
    eprintln!(
        "{} kill -9 trials, an uninterrupted slow run taking {full_run:?} \
         (delay ms, killed before exit, items after the kill, created by the clean run):",
        R::NAME
    );
    for o in &outcomes {
        eprintln!("  {o:?}");
    }
    r.done(reference_mirror).await;
    r.done(calib).await;
}

/// With about 20% of the target's calls faulted (seeded), reconcile until
/// a run is clean (at most 10); only item failures may happen meanwhile.
/// The caller then compares the mirror with the fault-free instance set.
#[allow(clippy::print_stderr)]
pub(crate) async fn converge_under_faults<R: Replica>(r: &R, m: &R::Mirror) {
    r.set_faults(m, Faulting::Faulty);
    let mut runs = Vec::new();
    let mut done = false;
    for _ in 0..10 {
        let run = reconcile::<R>(R::config(m)).await;
        runs.push((run.code, run.report["calendars"][0]["sinks"].clone()));
        if run.code == 0 {
            done = true;
            break;
        }
        assert_eq!(
            run.code,
            1,
            "only item failures are expected: {}",
            run.ctx()
        );
    }
    r.set_faults(m, Faulting::Off);
    let statuses = r.statuses(m);
    let calls = statuses.len();
    let faulted = statuses.iter().filter(|&&s| s == 429 || s >= 500).count();
    eprintln!(
        "{} faults: {} run(s), {faulted} faulted calls of {calls}",
        R::NAME,
        runs.len(),
    );
    assert!(done, "no clean reconcile within 10 runs: {runs:#?}");
    assert!(faulted > 0, "faults were injected");
}

/// Event ids of live single timed events (not series, not exceptions).
pub(crate) fn single_event_ids(f: &FeishuEmulator, cal: &str) -> Vec<String> {
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

/// A `reconcile` that must succeed with no item failure.
pub(crate) async fn reconcile_clean<R: Replica>(config: &Path) -> Run {
    let r = reconcile_ok::<R>(config).await;
    assert_eq!(r.n("failed"), 0, "{}", r.ctx());
    r
}

/// A further clean pass writes nothing to the target.
async fn next_pass_writes_nothing<R: Replica>(r: &R, m: &R::Mirror, what: &str) {
    let writes = r.write_count(m);
    let again = reconcile_clean::<R>(R::config(m)).await;
    assert_eq!(
        r.write_count(m),
        writes,
        "{what}: the next pass wrote: {}",
        again.ctx()
    );
}

/// What a user does on the target between two passes, then a reconcile
/// with `on_target_delete` = `restore` or `respect` (the Feishu calendar
/// holds `bridge_core::sample::events(30, 5, ..)`-like data with at least
/// three single timed events).
///
/// 1. The user deletes one mirrored event. `restore` writes it back (one
///    drift rewrite); `respect` writes nothing and keeps it deleted (one
///    tombstone).
/// 2. The user edits a second event and deletes a third in one go. The
///    edit is overwritten in both modes; `restore` gives back the instance
///    set of before, `respect` the same without the deleted event.
///
/// Each time a further pass writes nothing.
pub(crate) async fn user_edit_and_delete<R: Replica>(
    r: &R,
    f: &FeishuEmulator,
    fcal: &str,
    on_target_delete: &'static str,
) {
    const EDITED: &str = "Edited on the target";
    let restore = match on_target_delete {
        "restore" => true,
        "respect" => false,
        other => panic!("on_target_delete {other:?}"),
    };
    let m = r
        .mirror_with(
            f,
            fcal,
            &format!("user-{on_target_delete}"),
            on_target_delete,
        )
        .await;
    reconcile_clean::<R>(R::config(&m)).await;
    let keys = single_event_ids(f, fcal);
    assert!(keys.len() >= 3, "three single events: {keys:?}");

    // 1. One deletion.
    let first = r.item_id(&m, &keys[0]);
    r.user_delete(&m, &first);
    assert!(!r.is_live(&m, &first, &keys[0]), "deleted by the user");
    let writes = r.write_count(&m);
    let run = reconcile_clean::<R>(R::config(&m)).await;
    if restore {
        assert!(r.is_live(&m, &first, &keys[0]), "restored: {}", run.ctx());
        assert_eq!(run.n("drift_rewrites"), 1, "{}", run.ctx());
    } else {
        assert!(
            !r.is_live(&m, &first, &keys[0]),
            "left deleted: {}",
            run.ctx()
        );
        assert_eq!(
            r.write_count(&m),
            writes,
            "respect writes nothing: {}",
            run.ctx()
        );
        assert_eq!(run.n("tombstoned"), 1, "{}", run.ctx());
    }
    r.no_duplicates(&m, &format!("after {on_target_delete}"));
    next_pass_writes_nothing(r, &m, on_target_delete).await;

    // 2. An edit and a deletion at once.
    let before = r.instances(&m);
    let (edited, deleted) = (r.item_id(&m, &keys[1]), r.item_id(&m, &keys[2]));
    r.user_edit(&m, &edited, EDITED);
    assert!(r.has_summary(&m, EDITED), "edited by the user");
    r.user_delete(&m, &deleted);
    let run = reconcile_clean::<R>(R::config(&m)).await;
    assert!(
        !r.has_summary(&m, EDITED),
        "the edit is overwritten: {}",
        run.ctx()
    );
    let after = r.instances(&m);
    let gone = keys[2].strip_suffix("_0").unwrap_or(&keys[2]);
    if restore {
        assert_same_in(R::TARGET, &before, &after, "restored");
    } else {
        assert!(!after.iter().any(|i| i.ident == gone), "left deleted");
        let kept: Vec<Inst> = before.into_iter().filter(|i| i.ident != gone).collect();
        assert_eq!(after.len(), kept.len());
        assert_same_in(R::TARGET, &kept, &after, "respected");
    }
    r.no_duplicates(&m, &format!("after the edit ({on_target_delete})"));
    next_pass_writes_nothing(r, &m, on_target_delete).await;
    assert_eq!(
        r.is_live(&m, &first, &keys[0]),
        restore,
        "the first deletion"
    );
    r.check_requests(&m);
    r.done(m).await;
}

// ----- the harness the replica targets' modules share ------------------------------

/// The sample data starts here (Unix seconds, 2025-10-09).
pub(crate) const BASE: i64 = 1_760_000_000;
/// Every mapping case of the golden fixtures, as a Feishu list response.
const EXAMPLE: &str = include_str!("../../examples/feishu-events.json");
/// The comparison window: 2025-01-01 .. 2026-04-01 UTC (the golden cases'
/// year and the first half year of the sample data, which crosses the 2025
/// autumn and 2026 spring DST changes of New York and Berlin).
pub(crate) const FROM: i64 = 1_735_689_600;
pub(crate) const TO: i64 = 1_775_001_600;

/// The Feishu emulator of a replica test (webhook retries fast when the
/// test pushes).
pub(crate) async fn feishu(webhook: bool) -> FeishuEmulator {
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

/// A tenant: a user whose primary calendar holds `events`; returns the
/// user's open id and the calendar id.
pub(crate) fn tenant(f: &FeishuEmulator, events: Vec<Event>) -> (String, String) {
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
pub(crate) fn golden_input(case: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(case.join("input.json")).unwrap();
    match serde_json::from_str::<EventListResponse>(&text) {
        Ok(r) => r.data.map(|d| d.items).unwrap_or_default(),
        Err(_) => serde_json::from_str(&text).unwrap(),
    }
}

/// The golden cases rendered with privacy `full`, sorted by name, except
/// those whose `expected.json` has the key `skip` (saying why a target
/// cannot show them yet, e.g. `skip_google`).
pub(crate) fn golden_cases(skip: Option<&str>) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("expected.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["privacy"] == "full" && skip.is_none_or(|k| v.get(k).is_none()))
        })
        .collect();
    cases.sort();
    cases
}

/// The mapping cases (the example file plus the input of every golden
/// case of [`golden_cases`], each event id once) and `n` sample events
/// (seed 42).
pub(crate) fn sample_tenant(n: usize, skip: Option<&str>) -> Vec<Event> {
    let r: EventListResponse = serde_json::from_str(EXAMPLE).unwrap();
    let mut v = r.data.map(|d| d.items).unwrap_or_default();
    let mut ids: BTreeSet<String> = v.iter().filter_map(|e| e.event_id.clone()).collect();
    for case in golden_cases(skip) {
        for e in golden_input(&case) {
            if ids.insert(e.event_id.clone().unwrap()) {
                v.push(e);
            }
        }
    }
    v.extend(bridge_core::sample::events(n, 42, BASE));
    v
}

/// A start or end: an all-day date (ends exclusive) or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum T {
    Day(NaiveDate),
    At(i64),
}

impl T {
    /// The instant used for window filtering (all-day: midnight UTC).
    pub(crate) fn secs(self) -> i64 {
        match self {
            T::Day(d) => d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp(),
            T::At(t) => t,
        }
    }
}

/// One instance of an instance set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Inst {
    pub(crate) ident: String,
    pub(crate) start: T,
    pub(crate) end: T,
    pub(crate) summary: String,
}

fn feishu_t(ti: &TimeInfo, is_end: bool) -> T {
    if let Some(ts) = ti.timestamp {
        return T::At(ts.0);
    }
    let d = NaiveDate::parse_from_str(ti.date.as_deref().unwrap(), "%Y-%m-%d").unwrap();
    // Feishu's all-day end date is the last day (inclusive).
    T::Day(if is_end { d.succ_opt().unwrap() } else { d })
}

/// A golden `expected.json` time: a date or an RFC 3339 instant.
fn golden_t(s: &str) -> T {
    if s.len() == 10 {
        T::Day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    } else {
        T::At(DateTime::parse_from_rfc3339(s).unwrap().timestamp())
    }
}

/// The uid part of a Feishu event id (`<uid>_<time>`).
pub(crate) fn uid_of(event_id: &str) -> &str {
    event_id.rsplit_once('_').map_or(event_id, |(u, _)| u)
}

/// The Feishu instance set in `[from, to)` (by start): the emulator's own
/// `instance_view` in 10-day windows, plus live exceptions whose master is
/// absent from `seeded` (Feishu lists them standalone; `instance_view` only
/// applies exceptions through their master).
pub(crate) async fn feishu_instances(
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

/// Explains the difference of two instance lists (as multisets, first few).
fn diff(expected: &[Inst], got: &[Inst], target: &str) -> String {
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
        "expected {} instances, got {}; {} missing in {target}, {} extra in {target}\n\
         missing (first 10): {:#?}\nextra (first 10): {:#?}",
        e.len(),
        g.len(),
        missing.len(),
        extra.len(),
        &missing[..missing.len().min(10)],
        &extra[..extra.len().min(10)]
    )
}

/// The two instance lists are equal, or the difference is shown.
pub(crate) fn assert_same_in(target: &str, expected: &[Inst], got: &[Inst], what: &str) {
    assert!(expected == got, "{what}: {}", diff(expected, got, target));
}

/// For every golden case of [`golden_cases`] (all loaded by
/// [`sample_tenant`]): the target's instances (`instances(from, to)`) of
/// its uids in its window equal its hand-written `expected.json`. Returns
/// the names of the cases checked.
pub(crate) fn check_golden(
    target: &str,
    skip: Option<&str>,
    instances: impl Fn(i64, i64) -> Vec<Inst>,
) -> Vec<String> {
    let mut checked = Vec::new();
    for case in golden_cases(skip) {
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
        // Every identity the case's events can have on the target (uid, or
        // the full id of an exception without master), so extras show up.
        let mut idents: BTreeSet<String> = expected.iter().map(|i| i.ident.clone()).collect();
        for id in golden_input(&case).into_iter().filter_map(|e| e.event_id) {
            idents.insert(uid_of(&id).to_owned());
            idents.insert(id);
        }
        let got: Vec<Inst> = instances(from, to)
            .into_iter()
            .filter(|i| idents.contains(&i.ident))
            .collect();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        assert_same_in(target, &expected, &got, &format!("golden case {name}"));
        checked.push(name);
    }
    checked
}

/// Waits (at most `timeout`) until `ok`.
pub(crate) async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `auth <kind> --sink <sink>`, plays the browser (without following
/// redirects: the emulator approves at once and redirects to the loopback
/// listener), and returns the authorize URL and the command's stdout.
pub(crate) async fn authorize(config: &Path, kind: &str, sink: &str) -> (String, String) {
    let (child, url, reader) = crate::feishu::start_auth(
        &[
            "auth",
            kind,
            "--sink",
            sink,
            "--port",
            "0",
            "--timeout",
            "20",
        ],
        config,
        Stdio::piped(),
    )
    .await;
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
        "auth {kind} failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (url, printed)
}

/// `run` with webhook delivery over a mirror `m` whose config has a
/// `[server]` and `delivery = "webhook"` (the Feishu emulator `f` pushing
/// `fcal`'s changes): the start-up pass mirrors everything, and a renamed
/// event, pushed, reaches the target with no duplicate.
pub(crate) async fn webhook_push<R: Replica>(r: &R, f: &FeishuEmulator, fcal: &str, m: &R::Mirror) {
    const RENAMED: &str = "Renamed, pushed";
    let id = single_event_ids(f, fcal).remove(0);
    let old = f
        .events(fcal)
        .into_iter()
        .find(|e| e.event_id.as_deref() == Some(&id))
        .and_then(|e| e.summary)
        .unwrap();
    let daemon = Daemon::start(R::config(m));
    daemon.push_from(f);
    // The start-up pass mirrors everything.
    wait_for("the initial mirror", Duration::from_secs(20), || {
        r.has_summary(m, &old)
    })
    .await;
    let before = f.deliveries().len();
    f.update_event(fcal, &id, |e| e.summary = Some(RENAMED.into()));
    let deliveries = f
        .wait_for_deliveries(before + 1, Duration::from_secs(5))
        .await;
    assert!(
        deliveries.iter().skip(before).any(|d| d.delivered_ok),
        "the push was delivered: {deliveries:?}"
    );
    wait_for(
        &format!("the change in {}", R::NAME),
        Duration::from_secs(10),
        || r.has_summary(m, RENAMED),
    )
    .await;
    assert!(!r.has_summary(m, &old) || old == RENAMED);
    r.no_duplicates(m, "after the push");
    daemon.stop();
}
