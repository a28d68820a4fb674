//! Golden files: `tests/golden/<case>/input.json` (Feishu JSON) must render to
//! `output.ics` byte for byte, with the warnings in `warnings.txt`.
//! `expected.json` holds the hand-written instance set that the independent
//! Python cross-check (`tests/crosscheck/check_ics.py`) verifies against the
//! same `output.ics`; here we read its `privacy` and `calendar_name`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p bridge-core --test it golden` rewrites the
//! outputs; review the diff before committing.

use std::path::{Path, PathBuf};

use bridge_core::{Privacy, RenderOptions, feishu_to_ics, input};

/// DTSTAMP of every golden file: 2025-01-01T00:00:00Z.
const DTSTAMP: i64 = 1_735_689_600;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn render_case(dir: &Path) -> (String, String) {
    let input_text = std::fs::read_to_string(dir.join("input.json")).unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let privacy: Privacy = expected["privacy"]
        .as_str()
        .unwrap_or("full")
        .parse()
        .unwrap();
    let name = expected["calendar_name"]
        .as_str()
        .unwrap_or("Golden")
        .to_owned();
    let parsed = input::parse_events(&input_text).unwrap();
    let opts = RenderOptions {
        name,
        privacy,
        dtstamp: DTSTAMP,
        ..RenderOptions::default()
    };
    let rendered = feishu_to_ics(&parsed.events, &opts);
    let mut warnings = String::new();
    for e in &parsed.errors {
        warnings.push_str(&format!(
            "event {}: not converted: {}\n",
            e.event_id, e.reason
        ));
    }
    for w in &rendered.warnings {
        warnings.push_str(&format!("{w}\n"));
    }
    (rendered.text, warnings)
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = cases();
    assert!(
        all.len() >= 20,
        "expected the golden cases, found {}",
        all.len()
    );
    for dir in all {
        let (ics, warnings) = render_case(&dir);
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (file, actual) in [("output.ics", &ics), ("warnings.txt", &warnings)] {
            let path = dir.join(file);
            if update {
                std::fs::write(&path, actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path).unwrap_or_default();
            if &expected != actual {
                failures.push(format!(
                    "{name}/{file} differs:\n--- expected\n{expected}\n--- actual\n{actual}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn golden_outputs_are_well_formed() {
    for dir in cases() {
        let (ics, _) = render_case(&dir);
        assert!(ics.ends_with("END:VCALENDAR\r\n"));
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "{}: {line:?}", dir.display());
            assert!(!line.contains('\n') && !line.contains('\r'));
        }
        // Every TZID used has its VTIMEZONE.
        let unfolded = icalendar::parser::unfold(&ics);
        for part in unfolded.split("TZID=").skip(1) {
            let tzid: String = part
                .chars()
                .take_while(|c| *c != ':' && *c != ';')
                .collect();
            assert!(
                unfolded.contains(&format!("BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\n")),
                "{}: no VTIMEZONE for {tzid}",
                dir.display()
            );
        }
        // The icalendar crate's parser reads it back.
        icalendar::parser::read_calendar(&unfolded)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
}
