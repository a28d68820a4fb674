//! What the replica targets' end-to-end tests share (Google, EWS, Graph):
//! the kill -9 trials and the 20%-fault convergence loop, driven through a
//! small [`Replica`] trait each target's module implements over its
//! emulator (start a mirror and write its sink table, slow or faulty calls,
//! list the instance set).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

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
