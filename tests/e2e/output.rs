//! Output as a script or a log shipper sees it: no ANSI in pipes, `-v` /
//! `-q`, `--log` refusing what it cannot honour, JSON logs, and a JSON error
//! object on stdout for `--json` commands (issue 16, item 6).

use crate::feishu::{bin, emulator, temp_dir, write_config};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = bin();
    cmd.args(args).env_remove("RUST_LOG").env_remove("NO_COLOR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_flags_ansi_json_logs_and_json_errors() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    let dir = temp_dir("output");
    let config = write_config(
        &dir,
        &emu,
        &format!("[\"{cal}\"]"),
        &format!(
            "\n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
            dir.join("ics").display()
        ),
    );
    let config = config.to_str().unwrap();

    // An unknown level is refused before anything runs, naming it.
    let r = run(&["--log", "verbose", "check", "--config", config], &[]).await;
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("\"verbose\" is not a level"),
        "the refusal names the word:\n{r}"
    );
    let r = run(
        &["--log", "bridge_engine=loud", "status", "--config", config],
        &[],
    )
    .await;
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("\"loud\" is not a level"), "{r}");

    // -vv shows debug lines; stderr is a pipe here, so no ANSI escape at all.
    let r = run(&["-vv", "reconcile", "--config", config], &[]).await;
    assert_eq!(r.code, 0, "{r}");
    assert!(r.stderr.contains("DEBUG"), "-vv logs at debug:\n{r}");
    assert!(!r.stderr.contains('\u{1b}'), "no ANSI into a pipe:\n{r}");
    assert!(!r.stdout.contains('\u{1b}'), "no ANSI into a pipe:\n{r}");
    // -v wins over RUST_LOG, -q silences everything below errors.
    let r = run(
        &["-v", "reconcile", "--config", config],
        &[("RUST_LOG", "off")],
    )
    .await;
    assert!(r.stderr.contains("INFO"), "-v beats RUST_LOG:\n{r}");
    let r = run(
        &["-q", "reconcile", "--config", config],
        &[("RUST_LOG", "trace")],
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    assert!(
        !r.stderr.contains("INFO") && !r.stderr.contains("DEBUG"),
        "-q logs errors only:\n{r}"
    );

    // JSON logs: every stderr line is one JSON object with a level.
    let r = run(
        &[
            "--log-format",
            "json",
            "-v",
            "reconcile",
            "--config",
            config,
        ],
        &[],
    )
    .await;
    assert_eq!(r.code, 0, "{r}");
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "{r}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}\n{r}"));
        assert!(v["level"].is_string(), "{line}");
    }

    // --json: a failure prints a JSON error object on stdout too.
    let missing = dir.join("nosuch.toml");
    let r = run(
        &["status", "--json", "--config", missing.to_str().unwrap()],
        &[],
    )
    .await;
    assert_eq!(r.code, 2, "{r}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{r}"));
    assert!(
        v["error"].as_str().unwrap().contains("nosuch.toml"),
        "the error names the file:\n{r}"
    );
    assert!(
        r.stderr.contains("error:"),
        "stderr keeps the message:\n{r}"
    );
    emu.shutdown().await;
}

/// Issue 16, item 3: a configuration with a dozen mistakes gets every one of
/// them, with key paths and the expected form, in one run and one clean list.
#[test]
fn a_dozen_config_mistakes_are_reported_in_one_run() {
    let dir = temp_dir("dozen");
    let config = dir.join("feishu-bridge.toml");
    std::fs::write(
        &config,
        "[feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\ndelivery = \"webhok\"\n\
         rate_limit_per_second = \"many\"\ncalendar = [\"c1\"]\n\n\
         [sync]\nmax_delete_count = \"fifty\"\nmax_delete_percent = true\ndebounce = 10\n\n\
         [server]\nlisten = 8787\nadmin_listn = \"127.0.0.1:1\"\n\n[stor]\npath = \"x\"\n\n\
         [[sinks]]\nkind = \"ics\"\ndir = \"out\"\nprivcy = \"busy\"\n\n\
         [[sinks]]\nkind = \"gogle\"\n\n\
         [[sinks]]\nkind = \"ics\"\n",
    )
    .unwrap();
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let want = [
        "- feishu.delivery: \"webhok\" is not one of \"long_connection\", \"webhook\", \"poll\"; did you mean \"webhook\"?",
        "- feishu.rate_limit_per_second: expected a whole number, got \"many\"",
        "- feishu.calendar: unknown key; did you mean \"calendars\"?",
        "- sync.max_delete_count: expected a whole number, got \"fifty\"",
        "- sync.max_delete_percent: expected a number, got true",
        "- sync.debounce: unknown key; did you mean \"debounce_ms\"?",
        "- server.listen: expected a string, got 8787",
        "- server.admin_listn: unknown key; did you mean \"admin_listen\"?",
        "- stor: unknown key; did you mean \"store\"?",
        "- sinks[0].privcy: unknown key; did you mean \"privacy\"?",
        "- sinks[1].kind: \"gogle\" is not a sink kind",
        "- sinks[2].dir: missing",
    ];
    for w in want {
        assert!(stdout.contains(w), "{w} missing in:\n{stdout}");
    }
    // One clean list: the header line and one line per problem, nothing else.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), want.len() + 1, "{stdout}");
    assert!(!stdout.contains("in `feishu`"), "{stdout}");
}
