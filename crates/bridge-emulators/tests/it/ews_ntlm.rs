//! The EWS emulator's NTLM checked by a client nobody on this project wrote:
//! Python `requests_ntlm` (pyspnego's NTLMv2, with MIC and channel-binding
//! AV pairs the sink does not send) logs on and reads the calendar folder.
//! Installed by `scripts/test.sh` (pip into `target/pyenv`); the test skips
//! a missing client only when `CI` is unset, in CI it fails.

use std::path::PathBuf;

use bridge_emulators::ews::{EwsConfig, EwsEmulator};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
}

/// The statuses the script printed, one per request.
async fn python_client(url: &str, username: &str, password: &str) -> Option<Vec<u16>> {
    let python = repo("target/pyenv/bin/python");
    let usable = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import requests_ntlm"])
            .status()
            .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "requests_ntlm missing in target/pyenv (scripts/test.sh installs it)"
        );
        eprintln!(
            "SKIPPED: Python requests_ntlm not installed in target/pyenv (run scripts/test.sh)"
        );
        return None;
    }
    let mut cmd = std::process::Command::new(python);
    cmd.arg(repo("tests/ntlm-client/ews_ntlm.py"))
        .args([url, username, password]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        stdout
            .lines()
            .map(|l| l.trim().parse().expect("a status"))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_requests_ntlm_logs_on_and_a_wrong_password_is_refused() {
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let url = e.ews_url();
    let Some(ok) = python_client(&url, "EXAMPLE\\svc-bridge", "correct horse").await else {
        e.shutdown().await;
        return;
    };
    // GetFolder, then a second request on the authenticated session.
    assert_eq!(ok, [200, 200]);
    let upn = python_client(&url, "svc-bridge@example.com", "correct horse")
        .await
        .unwrap();
    assert_eq!(upn, [200, 200]);
    let wrong = python_client(&url, "EXAMPLE\\svc-bridge", "wrong")
        .await
        .unwrap();
    assert_eq!(wrong, [401]);
    let calls = e.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.operation.as_deref() == Some("GetFolder")),
        "the GetFolders were served"
    );
    e.shutdown().await;
}
