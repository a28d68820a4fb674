//! The harness the replica benchmarks share (`benches/{google,ews,graph}.rs`
//! include it with `#[path]`): a Feishu emulator in this process with its
//! limits off and 5,000 deterministic sample events
//! (`bridge_core::sample::events(5000, 42, BASE)`), a configuration mirroring
//! that calendar into one sink, and `reconcile --json` of the real binary
//! (bench profile), timed, with the sink's entry of the report. Each
//! benchmark counts its own emulator's calls.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

pub(crate) const BASE: i64 = 1_760_000_000;
pub(crate) const EVENTS: usize = 5000;

/// The Feishu side of a benchmark.
pub(crate) struct Tenant {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) feishu: FeishuEmulator,
    pub(crate) fcal: String,
    /// A fresh directory for the benchmark's stores and configurations.
    pub(crate) root: PathBuf,
}

impl Tenant {
    /// Starts the Feishu emulator with the sample calendar; `name` names the
    /// temporary directory (`fb-bench-<name>-<pid>`).
    pub(crate) fn start(name: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let feishu = rt
            .block_on(FeishuEmulator::start(FeishuConfig {
                rate_limit: None,
                ..FeishuConfig::default()
            }))
            .expect("start the Feishu emulator");
        let fcal = feishu.create_calendar("Bench 5k");
        feishu.bulk_load(&fcal, bridge_core::sample::events(EVENTS, 42, BASE));
        let root = std::env::temp_dir().join(format!("fb-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Self {
            rt,
            feishu,
            fcal,
            root,
        }
    }

    /// Writes `<dir>/feishu-bridge.toml`: the store in `<dir>/state`, the
    /// sample calendar polled, then `rest` (the sink's table and anything
    /// else after `[feishu]`).
    pub(crate) fn config(&self, dir: &Path, rest: &str) -> PathBuf {
        std::fs::create_dir_all(dir).expect("bench dir");
        let c = self.feishu.config();
        let text = format!(
            "[store]\npath = \"{store}\"\n\n[feishu]\nbase_url = \"{base}\"\napp_id = \"{app}\"\n\
             app_secret = \"{secret}\"\ncalendars = [\"{fcal}\"]\ndelivery = \"poll\"\n\
             user_token_file = \"{tokens}\"\n\n{rest}",
            store = dir.join("state/bridge.redb").display(),
            base = self.feishu.base_url(),
            app = c.app_id,
            secret = c.app_secret,
            fcal = self.fcal,
            tokens = dir.join("state/feishu-user.json").display(),
        );
        let config = dir.join("feishu-bridge.toml");
        std::fs::write(&config, text).expect("write config");
        config
    }

    /// Stops the Feishu emulator and removes the directory.
    pub(crate) fn finish(self) {
        self.rt.block_on(self.feishu.shutdown());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// One timed `reconcile --json`.
pub(crate) struct Reconciled {
    pub(crate) wall: Duration,
    pub(crate) exit: i32,
    /// The sink's entry of the report's only calendar.
    pub(crate) sink: serde_json::Value,
}

impl Reconciled {
    /// A count of the sink's entry (`created`, `updated`, ...).
    pub(crate) fn n(&self, key: &str) -> u64 {
        self.sink[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no {key} in the report: {}", self.sink))
    }
}

/// Runs `reconcile --json` on `config`; `sink` is the prefix of the sink id
/// whose entry is kept (`google`, `ews`, `graph`).
pub(crate) fn reconcile(config: &Path, sink: &str) -> Reconciled {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_feishu-bridge"))
        .args(["reconcile", "--json", "--config"])
        .arg(config)
        .output()
        .expect("run feishu-bridge");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "reconcile printed no JSON ({e}):\n{}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let entry = report["calendars"][0]["sinks"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["sink"].as_str().is_some_and(|n| n.starts_with(sink)))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {sink} sink in the report: {report}\n{stderr}"));
    Reconciled {
        wall,
        exit: out.status.code().unwrap_or(-1),
        sink: entry,
    }
}

pub(crate) fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}
