//! Inspecting the daemon while it runs (issue 16, item 1): `status`,
//! `explain`, `reconcile --dry-run`, `--calendar` and `--allow-mass-delete`
//! work while `run` holds the store, through its authenticated admin
//! endpoint, with the same output and `--json` schema as without a daemon.

use std::path::Path;

use bridge_core::feishu::Event;
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator};

use crate::daemon::{Daemon, daemon_config};
use crate::feishu::{bin, event, temp_dir};

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn run(config: &Path, args: &[&str]) -> Out {
    let mut cmd = bin();
    cmd.args(args).arg("--config").arg(config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The keys of a JSON value, recursively (the schema, not the values).
fn shape(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().take(1).map(shape).collect())
        }
        _ => serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_explain_and_reconcile_variants_work_while_the_daemon_runs() {
    let emu = FeishuEmulator::start(FeishuConfig::default())
        .await
        .unwrap();
    let cal = emu.create_calendar("Team");
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(emu.create_event(
            &cal,
            Event {
                ..event(&format!("Meeting {i}"), 1_760_000_000 + i * 3600)
            },
        ));
    }
    let dir = temp_dir("inspect");
    let (config, _ics) = daemon_config(&dir, &emu, &cal, "poll");
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        config_text.replace("[sync]\n", "[sync]\nmax_delete_count = 3\n"),
    )
    .unwrap();
    let r = run(&config, &["reconcile"]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    let event_id = ids[0].clone();

    // Without a daemon: the reference outputs.
    let status_alone = run(&config, &["status", "--json"]).await;
    let explain_alone = run(&config, &["explain", &event_id]).await;
    let explain_json_alone = run(&config, &["explain", &event_id, "--json"]).await;
    let dry_alone = run(&config, &["reconcile", "--dry-run", "--json"]).await;
    assert_eq!(status_alone.code, Some(0), "{}", status_alone.stderr);
    assert_eq!(explain_alone.code, Some(0), "{}", explain_alone.stderr);

    let daemon = Daemon::start(&config);
    // The daemon holds the store; every command still answers.
    // (Once its start-up pass is done: until then the calendar shows a
    // pending hint, which a stopped store does not have.)
    let started = std::time::Instant::now();
    let b: serde_json::Value = loop {
        let status = run(&config, &["status", "--json"]).await;
        assert_eq!(status.code, Some(0), "{}", status.stderr);
        let b: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        if b["calendars"][0]["pending"].is_null() {
            break b;
        }
        assert!(started.elapsed().as_secs() < 20, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let a: serde_json::Value = serde_json::from_str(&status_alone.stdout).unwrap();
    assert_eq!(shape(&a), shape(&b), "same --json schema");
    assert_eq!(a["calendars"][0]["id"], b["calendars"][0]["id"]);
    let human = run(&config, &["status"]).await;
    assert_eq!(human.code, Some(0), "{}", human.stderr);
    assert!(human.stdout.contains(&cal), "{}", human.stdout);

    let explain = run(&config, &["explain", &event_id]).await;
    assert_eq!(explain.code, Some(0), "{}", explain.stderr);
    // Same text, but for relative times ("3s ago") that moved on.
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains(" ago") && !l.contains("in "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&explain.stdout), strip(&explain_alone.stdout));
    let explain_json = run(&config, &["explain", &event_id, "--json"]).await;
    let a: serde_json::Value = serde_json::from_str(&explain_json_alone.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_str(&explain_json.stdout).unwrap();
    assert_eq!(shape(&a), shape(&b));

    let dry = run(&config, &["reconcile", "--dry-run", "--json"]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let a: serde_json::Value = serde_json::from_str(&dry_alone.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap();
    assert_eq!(shape(&a), shape(&b));
    let r = run(&config, &["reconcile", "--calendar", &cal]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("unchanged 12"), "{}", r.stdout);

    // A mass delete is held back by the budget (3), then approved without
    // stopping the daemon.
    for id in &ids[..10] {
        emu.delete_event(&cal, id);
    }
    let r = run(&config, &["reconcile", "--calendar", &cal]).await;
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    let r = run(&config, &["reconcile", "--allow-mass-delete"]).await;
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("deleted 10"), "{}", r.stdout);

    // Anything but those commands is refused by the daemon.
    let token = std::fs::read_to_string(dir.join("state/daemon-admin.token")).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{}/admin/run", daemon.admin))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"argv": ["check"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/admin/run", daemon.admin))
        .json(&serde_json::json!({"argv": ["status"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the admin token is required");
    daemon.stop();
    emu.shutdown().await;
}
