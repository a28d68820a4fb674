//! Validates captured EWS requests against Microsoft's schema in this
//! folder (included by path from the test binaries that capture them).
//! Runs `validate.py` with the `lxml` that `scripts/test.sh` installs into
//! `target/pyenv` (or `xmllint` when that is absent), once for every body.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
fn root() -> PathBuf {
    let mut p = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !p.join("tests/ews-schema/ews-validate.xsd").exists() {
        assert!(
            p.pop(),
            "tests/ews-schema not found above {}",
            env!("CARGO_MANIFEST_DIR")
        );
    }
    p
}

/// Panics with the validator's words unless every body is valid.
pub(crate) fn assert_valid(bodies: &[String]) {
    assert!(!bodies.is_empty(), "no request captured");
    let root = root();
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = bodies
        .iter()
        .enumerate()
        .map(|(n, b)| {
            let f = dir.path().join(format!("req-{n:05}.xml"));
            std::fs::write(&f, b).expect("write body");
            f
        })
        .collect();
    let python = root.join("target/pyenv/bin/python");
    let lxml = python.exists()
        && Command::new(&python)
            .args(["-c", "import lxml"])
            .status()
            .is_ok_and(|s| s.success());
    let out = if lxml {
        let mut c = Command::new(&python);
        c.arg(root.join("tests/ews-schema/validate.py"));
        c.args(&files);
        c.output()
    } else {
        let mut c = Command::new("xmllint");
        c.args(["--noout", "--nonet", "--schema"]);
        c.arg(root.join("tests/ews-schema/ews-validate.xsd"));
        c.args(&files);
        c.output()
    }
    .unwrap_or_else(|e| {
        panic!("cannot run the EWS schema validator ({e}); run scripts/test.sh, which installs lxml into target/pyenv")
    });
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("INVALID") || l.contains("error"))
            .take(5)
            .collect();
        let first = bad
            .first()
            .and_then(|l| l.split(".xml").next())
            .and_then(|p| p.rsplit("req-").next())
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| bodies[n].clone())
            .unwrap_or_default();
        panic!(
            "EWS requests fail the schema:\n{}\nfirst invalid request:\n{first}",
            bad.join("\n")
        );
    }
    let _ = Path::new(&root);
}
