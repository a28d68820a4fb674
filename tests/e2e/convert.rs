//! `feishu-bridge convert` as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_feishu-bridge"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn converts_the_example_file() {
    let out = bin()
        .args(["convert", "--input"])
        .arg(repo("examples/feishu-events.json"))
        .args([
            "--name",
            "Team calendar",
            "--dtstamp",
            "2025-01-01T00:00:00Z",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ics = text(&out.stdout);
    assert!(
        ics.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"),
        "{ics}"
    );
    assert!(ics.contains("\r\nX-WR-CALNAME:Team calendar\r\n"));
    assert!(ics.contains("\r\nMETHOD:PUBLISH\r\n"));
    assert!(ics.contains("\r\nDTSTAMP:20250101T000000Z\r\n"));
    assert!(ics.contains("\r\nBEGIN:VTIMEZONE\r\nTZID:America/New_York\r\n"));
    assert!(ics.contains("\r\nRECURRENCE-ID;TZID="));
    assert!(ics.contains("\r\nEXDATE;TZID="));
    assert_eq!(ics.matches("BEGIN:VEVENT").count(), 19);
    // Same input, same DTSTAMP: byte-identical output.
    let again = bin()
        .args(["convert", "-i"])
        .arg(repo("examples/feishu-events.json"))
        .args(["--name", "Team calendar", "--dtstamp", "1735689600"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, again.stdout);
}

#[test]
fn reads_stdin_with_dash_or_no_flag() {
    let events = r#"[{"event_id":"u1_0","summary":"Hi","start_time":{"timestamp":"1735689600","timezone":"UTC"},"end_time":{"timestamp":"1735693200","timezone":"UTC"}}]"#;
    for args in [&["convert"][..], &["convert", "--input", "-"][..]] {
        let out = run_stdin(args, events);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let ics = text(&out.stdout);
        assert!(ics.contains("\r\nUID:u1\r\n"), "{ics}");
        assert!(ics.contains("\r\nDTSTART:20250101T000000Z\r\n"), "{ics}");
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
}

#[test]
fn invalid_json_exits_2_with_line_and_column() {
    let out = run_stdin(&["convert"], "{\n  \"code\": 0,\n  \"data\": [\n}");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("invalid JSON at line 4, column 1"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn feishu_error_envelope_exits_2_naming_code_and_msg() {
    let out = run_stdin(
        &["convert"],
        r#"{"code":99991663,"msg":"Invalid access token for authorization"}"#,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("code 99991663"), "{err}");
    assert!(
        err.contains("Invalid access token for authorization"),
        "{err}"
    );
}

#[test]
fn a_bad_event_is_a_warning_and_the_rest_is_converted() {
    let input = r#"{"code":0,"data":{"items":[
        {"event_id":"good_0","summary":"Good","start_time":{"date":"2025-03-10"},"end_time":{"date":"2025-03-10"}},
        {"event_id":"nostart_0","summary":"No start"},
        {"event_id":"garbled","summary":"Bad id","start_time":{"date":"2025-03-10"},"end_time":{"date":"2025-03-10"}},
        {"event_id":"badtime_0","start_time":{"timestamp":"noon"}}
    ]}}"#;
    let out = run_stdin(&["convert"], input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: event nostart_0: not converted: start_time is missing"),
        "{err}"
    );
    assert!(
        err.contains("warning: event garbled: not converted"),
        "{err}"
    );
    assert!(
        err.contains("warning: event badtime_0: not converted"),
        "{err}"
    );
    let ics = text(&out.stdout);
    assert_eq!(ics.matches("BEGIN:VEVENT").count(), 1);
    assert!(
        ics.contains("DTSTART;VALUE=DATE:20250310\r\nDTEND;VALUE=DATE:20250311\r\n"),
        "{ics}"
    );
}

#[test]
fn privacy_busy_hides_text() {
    let out = bin()
        .args(["convert", "--privacy", "busy", "--input"])
        .arg(repo("examples/feishu-events.json"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let ics = text(&out.stdout);
    for prop in [
        "DESCRIPTION",
        "LOCATION",
        "ATTENDEE",
        "ORGANIZER",
        "URL:",
        "CONFERENCE",
        "BEGIN:VALARM",
    ] {
        assert!(!ics.contains(&format!("\n{prop}")), "{prop} leaked: {ics}");
    }
    assert!(
        ics.lines()
            .filter(|l| l.starts_with("SUMMARY:"))
            .all(|l| l == "SUMMARY:Busy\r" || l == "SUMMARY:Busy")
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["convert", "--privacy", "secret"][..],
        &["convert", "--input", "/nonexistent/file.json"][..],
        &["convert", "--timezone", "Mars/Olympus"][..],
        &["no-such-command"][..],
    ] {
        let out = run_stdin(args, "[]");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn one_page_of_several_is_converted_with_a_warning_and_exit_1() {
    let page = r#"{"code":0,"msg":"success","data":{"has_more":true,"page_token":"p2","items":[
        {"event_id":"e1_0","summary":"Planning","status":"confirmed",
         "start_time":{"timestamp":"1760000000","timezone":"Asia/Shanghai"},
         "end_time":{"timestamp":"1760003600","timezone":"Asia/Shanghai"}}]}}"#;
    let out = run_stdin(&["convert"], page);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("SUMMARY:Planning"));
    let err = text(&out.stderr);
    assert!(
        err.contains("stdin is one page of several (\"has_more\": true)"),
        "{err}"
    );
    // The last page converts quietly.
    let out = run_stdin(
        &["convert"],
        &page.replace("\"has_more\":true", "\"has_more\":false"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn an_empty_secret_file_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("fb-e2e-{}-empty-secret", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "\n").unwrap();
    std::fs::write(
        dir.join("c.toml"),
        "[feishu]\napp_id = \"cli_x\"\napp_secret_file = \"secret\"\ncalendars = \"primary\"\n\
         delivery = \"poll\"\n\n[[sinks]]\nkind = \"ics\"\ndir = \"out\"\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(dir.join("c.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "- feishu.app_secret_file: {} is empty",
            dir.canonicalize().unwrap().join("secret").display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("app_secret is missing"), "{stdout}");
}
