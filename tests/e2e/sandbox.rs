//! `feishu-bridge sandbox` as a newcomer uses it (issue 16, item 11): it
//! starts, writes a configuration every command accepts, and stops on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::feishu::{bin, temp_dir};

#[test]
fn the_sandbox_serves_a_tenant_that_every_command_works_against() {
    let dir = temp_dir("sandbox").join("sbx");
    let mut child = bin()
        .args(["sandbox", "--events", "20", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        banner.push_str(&line);
        banner.push('\n');
        if line == "ready" {
            break;
        }
    }
    assert!(banner.contains("Ctrl-C stops it"), "{banner}");
    let config = dir.canonicalize().unwrap().join("feishu-bridge.toml");
    assert!(
        banner.contains(&format!("--config {}", config.display())),
        "{banner}"
    );
    let explain_line = banner
        .lines()
        .find(|l| l.contains("feishu-bridge explain"))
        .unwrap();
    let event_id = explain_line.split_whitespace().last().unwrap().to_owned();

    let run = |args: &[&str]| {
        let out = bin()
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (code, out) = run(&["check"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["reconcile"]);
    assert_eq!(code, Some(0), "{out}");
    // Every target emulator that exists is there and written: Google, EWS,
    // Graph, the ICS files and the feed.
    for sink in ["google:sandbox", "ews:exchange", "graph:m365", "feed:team"] {
        assert!(
            out.contains(&format!("{sink}:  created 20")),
            "{sink}:\n{out}"
        );
    }
    let (code, out) = run(&["feeds", "list"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("/feeds/") && out.contains(".ics"), "{out}");
    let (code, out) = run(&["explain", &event_id]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(&["reconcile"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains("created 1"),
        "a second pass writes nothing:\n{out}"
    );

    // Ctrl-C: the emulators stop, the directory is kept.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(config.is_file());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("stopping the emulators")),
        "{rest:?}"
    );
}
