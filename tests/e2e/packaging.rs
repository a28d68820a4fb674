//! What an admin installs and runs first: `init`, `check` without side
//! effects and `check --fix`, completions, the man page, and the systemd
//! unit in `contrib/` (issue 16, items 7 and 9).

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::feishu::{bin, emulator, temp_dir};

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin().current_dir(dir).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every path under `dir`, sorted (what a command left behind).
fn tree(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if p.is_dir() {
                walk(&p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

#[test]
fn init_writes_a_starter_config_that_check_accepts_and_check_changes_nothing() {
    let dir = temp_dir("pkg-init");
    let out = run_in(&dir, &["init", "--sink", "ics", "--sink", "google"]);
    assert!(out.status.success(), "{}", text(&out));
    let config = std::fs::read_to_string(dir.join("feishu-bridge.toml")).unwrap();
    assert!(config.contains("kind = \"ics\"") && config.contains("kind = \"google\""));
    assert!(
        config.lines().filter(|l| l.contains('#')).count() > 10,
        "commented"
    );

    // Again: refused, the file is kept.
    let out = run_in(&dir, &["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists; pass --force"));
    let out = run_in(&dir, &["init", "--sink", "carrier-pigeon", "-o", "x.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"carrier-pigeon\" is not a sink kind"));

    // `check` accepts the configuration and creates nothing (Feishu is
    // pointed at a closed loopback port: tests touch nothing else; exit 3).
    std::fs::write(
        dir.join("feishu-bridge.toml"),
        config.replace(
            "# base_url = \"https://open.feishu.cn\"",
            "base_url = \"http://127.0.0.1:9\"",
        ),
    )
    .unwrap();
    let before = tree(&dir);
    let out = run_in(&dir, &["check"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(3), "{t}");
    assert!(
        t.contains("ok    config: feishu-bridge.toml is valid"),
        "{t}"
    );
    assert!(
        t.contains("does not exist yet; the first sync creates it"),
        "{t}"
    );
    assert_eq!(tree(&dir), before, "check left something behind:\n{t}");

    // `check --fix` creates the store's and the sinks' directories.
    let out = run_in(&dir, &["check", "--fix"]);
    let t = text(&out);
    assert!(t.contains("ok    fix: created"), "{t}");
    assert!(
        dir.join("state").is_dir() && dir.join("out/ics").is_dir(),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_of_a_sink_dir_under_a_missing_tree_creates_nothing() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("pkg-check");
    let config = crate::feishu::write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        "\n[[sinks]]\nkind = \"ics\"\ndir = \"nosuch-out/a/b\"\n",
    );
    let before = tree(&dir);
    let mut cmd = bin();
    cmd.arg("check").arg("--config").arg(&config);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(tree(&dir), before, "{}", text(&out));
    assert!(!dir.join("nosuch-out").exists());
    emu.shutdown().await;
}

#[test]
fn completions_and_the_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("reconcile") && script.contains("explain"),
            "{shell}"
        );
    }
    let out = bin().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH feishu-bridge"),
        "{page}"
    );
    assert!(page.contains("reconcile"), "subcommands are listed");
}

/// `systemd-analyze verify` (Debian's `systemd` package, installed by
/// `.ci/run`) accepts the unit, and its exposure score stays "OK".
#[test]
fn the_systemd_unit_verifies() {
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if analyze.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI"
        );
        return;
    }
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/feishu-bridge.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("DynamicUser=yes") && text.contains("ProtectSystem=strict"));
    // Verify with the binary under test in place of the installed one.
    let dir = temp_dir("pkg-unit");
    let local = dir.join("feishu-bridge.service");
    std::fs::write(
        &local,
        text.replace(
            "/usr/local/bin/feishu-bridge",
            env!("CARGO_BIN_EXE_feishu-bridge"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&local)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::packaging::text(&out));
    assert!(out.stderr.is_empty(), "{}", crate::packaging::text(&out));
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25"])
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "exposure above 2.5:\n{}",
        crate::packaging::text(&out)
    );
}
