//! A damaged, foreign or newer store under every command that opens it
//! (`check`, `status`, `reconcile`, `run`): one clear line that says what
//! to do, no panic, never a silently re-created store (issue #10, item 7).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::feishu::{bin, temp_dir, write_config};

const KINDS: [&str; 9] = [
    "0-byte file",
    "truncated",
    "random bytes",
    "zeroed header",
    "flipped bits in data pages",
    "a text file",
    "an SQLite file",
    "a directory",
    "a newer schema",
];

fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn damage(path: &Path, good: &[u8], kind: &str) {
    if path.is_dir() {
        std::fs::remove_dir_all(path).unwrap();
    } else {
        let _ = std::fs::remove_file(path);
    }
    let bytes = match kind {
        "0-byte file" => Vec::new(),
        "truncated" => good[..good.len() / 2].to_vec(),
        "random bytes" => noise(good.len(), 0x2545_f491_4f6c_dd1d),
        "zeroed header" => {
            let mut b = good.to_vec();
            b[..512].fill(0);
            b
        }
        "flipped bits in data pages" => {
            let mut b = good.to_vec();
            let mut at = b.len() / 4;
            while at + 4096 < b.len() {
                for j in [1024, 2048, 3000] {
                    b[at + j] ^= 0x5a;
                }
                at += 4096;
            }
            b
        }
        "a text file" => b"just some notes, not a database\n".to_vec(),
        "an SQLite file" => {
            let mut b = b"SQLite format 3\0".to_vec();
            b.resize(8192, 0);
            b
        }
        "a directory" => {
            std::fs::create_dir_all(path.join("inside")).unwrap();
            return;
        }
        "a newer schema" => {
            std::fs::write(path, good).unwrap();
            let db = redb::Database::open(path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            txn.commit().unwrap();
            return;
        }
        other => panic!("unknown kind {other}"),
    };
    std::fs::write(path, bytes).unwrap();
}

/// Runs a one-shot command, or the daemon until it exits by itself (it
/// must: the store cannot be used), within a generous bound; `None` when
/// it had to be killed.
fn run(cmd: &mut Command) -> (Output, bool) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), true);
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            return (child.wait_with_output().unwrap(), false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_reports_a_damaged_store_in_one_clear_line() {
    let emu = crate::feishu::emulator().await;
    let cal = emu.create_calendar("Team");
    let base = chrono::Utc::now().timestamp() - 10 * 86_400;
    emu.bulk_load(&cal, bridge_core::sample::events(400, 3, base));
    let dir = temp_dir("store-damage");
    let extra = format!(
        "\n[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        dir.join("ics").display()
    );
    let config = write_config(&dir, &emu, &format!("[\"{cal}\"]"), &extra);
    let store = dir.join("state/bridge.redb");
    let out = bin()
        .args(["reconcile", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = std::fs::read(&store).unwrap();

    let mut failures = Vec::new();
    for kind in KINDS {
        for command in ["check", "status", "reconcile", "run"] {
            damage(&store, &good, kind);
            let before = std::fs::read(&store).ok();
            let (out, stopped) = run(bin().args([command, "--config"]).arg(&config));
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let all = format!("{stdout}{stderr}");
            let advice = if kind == "a newer schema" {
                "upgrade feishu-bridge"
            } else {
                "restore it from a backup, or move it aside and run `feishu-bridge reconcile`"
            };
            let advice_alt = "restore the store from a backup, or move this aside and run `feishu-bridge reconcile`";
            // The command's own report; the daemon's log may repeat it.
            let lines: Vec<&str> = all
                .lines()
                .filter(|l| l.contains(advice) || l.contains(advice_alt))
                .filter(|l| !l.contains(" ERROR ") && !l.contains("\u{1b}[31mERROR"))
                .collect();
            let problem = if !stopped {
                Some("still running after 30 s with the damaged store")
            } else if out.status.success() {
                Some("exit 0")
            } else if all.contains("panicked") || all.contains("RUST_BACKTRACE") {
                Some("a panic was printed")
            } else if lines.len() != 1 {
                Some("not exactly one line with the advice")
            } else if matches!(
                kind,
                "0-byte file" | "a text file" | "an SQLite file" | "random bytes"
            ) && std::fs::read(&store).ok() != before
            {
                Some("the file was changed")
            } else if kind == "a directory" && !store.join("inside").is_dir() {
                Some("the directory was changed")
            } else {
                None
            };
            if let Some(p) = problem {
                failures.push(format!(
                    "{kind} / {command}: {p} (exit {:?}):\n{all}",
                    out.status.code()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs:\n{}",
        failures.len(),
        KINDS.len() * 4,
        failures.join("\n")
    );
    emu.shutdown().await;
}
