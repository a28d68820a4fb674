//! What the replica targets' end-to-end tests share (Google, EWS, Graph):
//! the kill -9 trials, the 20%-fault convergence loop and a user's edits
//! and deletions on the target (restore vs respect), driven through a small
//! [`Replica`] trait each target's module implements over its emulator
//! (start a mirror and write its sink table, slow or faulty calls, list the
//! instance set, edit or delete as a user through the emulator's control
//! side).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use bridge_core::feishu::EventStatus;
use bridge_emulators::feishu::FeishuEmulator;

use crate::feishu::bin;

/// One replica target as the shared scenarios drive it.
pub(crate) trait Replica {
    /// A target calendar (or mailbox) and the configuration mirroring into it.
    type Mirror;
    /// One instance of the mirror's instance set.
    type Inst: PartialEq + std::fmt::Debug;
    /// The prefix of the sink id (`google`, `ews`, `graph`), also in messages.
    const NAME: &'static str;

    /// A configuration mirroring `fcal` into a fresh target; `name` names
    /// its directory.
    async fn mirror(&self, f: &FeishuEmulator, fcal: &str, name: &str) -> Self::Mirror;
    fn config(m: &Self::Mirror) -> &Path;
    /// Every call of the target answers slowly (so that a run can be
    /// killed while listing, writing or committing), or no fault at all.
    fn slow(&self, m: &Self::Mirror, on: bool);
    /// Seeded faults on about 20% of the target's calls, or none.
    fn faults(&self, m: &Self::Mirror, on: bool);
    /// The target's faulted calls and all its calls.
    fn faulted(&self, m: &Self::Mirror) -> (usize, usize);
    /// The mirror's instance set within the tests' range.
    fn instances(&self, m: &Self::Mirror) -> Vec<Self::Inst>;
    fn assert_same(expected: &[Self::Inst], got: &[Self::Inst], what: &str);
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
    /// The identity of an instance (the Feishu uid, or the full event id
    /// of an exception without master).
    fn ident(i: &Self::Inst) -> &str;
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

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap()
}

/// One `reconcile --json`.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) report: serde_json::Value,
    stdout: String,
    stderr: String,
    sink: &'static str,
}

impl Run {
    pub(crate) fn ctx(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// A count of the sink's entry in the report.
    pub(crate) fn n(&self, key: &str) -> u64 {
        self.report["calendars"][0]["sinks"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with(self.sink)))
            })
            .and_then(|s| s[key].as_u64())
            .unwrap_or_else(|| panic!("no {key} of the {} sink:\n{}", self.sink, self.ctx()))
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
    r.slow(&calib, true);
    let started = Instant::now();
    let run = reconcile::<R>(R::config(&calib)).await;
    let full_run = started.elapsed();
    r.slow(&calib, false);
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
        r.slow(&m, true);
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
        r.slow(&m, false);
        let after_kill = r.after_kill(&m, &format!("trial {trial} after the kill"));

        let run = reconcile::<R>(R::config(&m)).await;
        assert_eq!(run.code, 0, "trial {trial} ({delay:?}): {}", run.ctx());
        assert_eq!(run.n("failed"), 0, "trial {trial}: {}", run.ctx());
        assert_eq!(run.n("deleted"), 0, "trial {trial}: {}", run.ctx());
        R::assert_same(
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
    r.faults(m, true);
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
    r.faults(m, false);
    let (faulted, calls) = r.faulted(m);
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
async fn reconcile_clean<R: Replica>(config: &Path) -> Run {
    let r = reconcile_ok::<R>(config).await;
    assert_eq!(r.n("failed"), 0, "{}", r.ctx());
    r
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
    let writes = r.write_count(&m);
    let again = reconcile_clean::<R>(R::config(&m)).await;
    assert_eq!(
        r.write_count(&m),
        writes,
        "{on_target_delete}: the next pass wrote: {}",
        again.ctx()
    );

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
        R::assert_same(&before, &after, "restored");
    } else {
        assert!(!after.iter().any(|i| R::ident(i) == gone), "left deleted");
        let kept: Vec<R::Inst> = before.into_iter().filter(|i| R::ident(i) != gone).collect();
        assert_eq!(after.len(), kept.len());
        R::assert_same(&kept, &after, "respected");
    }
    r.no_duplicates(&m, &format!("after the edit ({on_target_delete})"));
    let writes = r.write_count(&m);
    let again = reconcile_clean::<R>(R::config(&m)).await;
    assert_eq!(
        r.write_count(&m),
        writes,
        "{on_target_delete}: the next pass wrote: {}",
        again.ctx()
    );
    assert_eq!(
        r.is_live(&m, &first, &keys[0]),
        restore,
        "the first deletion"
    );
    r.check_requests(&m);
    r.done(m).await;
}
