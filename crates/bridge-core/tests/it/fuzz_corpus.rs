//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`, minimized
//! with `cargo fuzz cmin`) through the same harnesses the fuzzers run, on
//! stable. Each harness asserts its target's invariants: EventKey display /
//! parse round trips; escape / unescape and fold / unfold round trips with
//! lines of at most 75 octets; mapping gives an item or a `MapError` per
//! event and renders folded CRLF lines, never a panic.

use std::path::PathBuf;

use bridge_core::fuzzing;

/// Feeds every file of `fuzz/corpus/<target>` to `harness`; returns how many.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{target}: {} panicked", path.display());
    }
    files.len()
}

#[test]
fn event_key_corpus() {
    assert!(replay("event_key", fuzzing::event_key) >= 10);
}

#[test]
fn ics_text_corpus() {
    assert!(replay("ics_text", fuzzing::ics_text) >= 10);
}

#[test]
fn map_json_corpus() {
    assert!(replay("map_json", fuzzing::map_json) >= 10);
}

#[test]
fn map_structured_corpus() {
    assert!(replay("map_structured", fuzzing::map_structured) >= 10);
}

// Crashes found by the fuzzers, each reduced to its cause.

use bridge_core::feishu::Event;
use bridge_core::model::EventTime;
use bridge_core::{Item, RenderOptions, map_event, recur, render_calendar};

fn event(json: &str) -> Event {
    serde_json::from_str(json).unwrap()
}

fn shanghai(at: i64) -> EventTime {
    EventTime::Zoned {
        at,
        tz: "Asia/Shanghai".parse().unwrap(),
    }
}

/// `map_structured`: `body[..6]` sliced inside a character while looking
/// for the `RRULE:` prefix.
#[test]
fn rule_whose_sixth_byte_is_inside_a_character() {
    let start = shanghai(1_700_000_000);
    let err = recur::normalize("abcd€FREQ=DAILY", &start).unwrap_err();
    assert!(err.contains("no FREQ"), "{err}");
    let n = recur::normalize("rRuLe:FREQ=DAILY", &start).unwrap();
    assert_eq!(n.rule, "FREQ=DAILY");
}

/// `map_structured`: the weekday suffix of a BYDAY item sliced inside a
/// character (`BYDAY=€`).
#[test]
fn byday_ending_inside_a_character() {
    let start = shanghai(1_700_000_000);
    for rule in [
        "FREQ=WEEKLY;BYDAY=€",
        "FREQ=WEEKLY;BYDAY=1é",
        "FREQ=WEEKLY;BYDAY=MO,€",
    ] {
        let err = recur::normalize(rule, &start).unwrap_err();
        assert!(err.contains("BYDAY"), "{rule}: {err}");
    }
    let n = recur::normalize("FREQ=WEEKLY;BYDAY=-1fr", &start).unwrap();
    assert_eq!(n.rule, "FREQ=WEEKLY;BYDAY=-1FR");
}

/// `map_structured`: an all-day date at the end of chrono's range
/// (`+262142-12-31`) overflowed when the exclusive end day was added.
#[test]
fn all_day_dates_beyond_year_9999_are_map_errors() {
    for date in ["+262142-12-31", "+10000-01-01", "-0001-06-01", "0000-12-31"] {
        let ev = event(&format!(
            r#"{{"event_id":"u_0","start_time":{{"date":"{date}"}},"end_time":{{"date":"{date}"}}}}"#
        ));
        let err = map_event(&ev, &mut Vec::new()).unwrap_err();
        assert!(
            err.reason.contains("out of range"),
            "{date}: {}",
            err.reason
        );
    }
    let ev = event(
        r#"{"event_id":"u_0","start_time":{"date":"9999-12-31"},"end_time":{"date":"9999-12-31"}}"#,
    );
    assert!(map_event(&ev, &mut Vec::new()).is_ok());
}

/// `map_structured`: a timed event at chrono's last second in a zone east of
/// UTC panicked in `naive_local()` while rendering (its local time is past
/// chrono's range); an exception key at `i64::MAX` overflowed the all-day
/// RECURRENCE-ID rounding.
#[test]
fn times_at_the_edge_of_chronos_range_render() {
    const LAST: i64 = 8_210_266_876_799;
    let local = shanghai(LAST).local();
    assert_eq!(local, EventTime::Utc(LAST).local(), "falls back to UTC");
    let ev = event(&format!(
        r#"{{"event_id":"u_0","start_time":{{"timestamp":"{LAST}","timezone":"Asia/Shanghai"}},
            "end_time":{{"timestamp":"{LAST}","timezone":"Asia/Shanghai"}}}}"#
    ));
    let item = map_event(&ev, &mut Vec::new()).unwrap();
    let out = render_calendar([&item], &RenderOptions::default());
    assert_eq!(out.vevents, 1);

    let date = EventTime::Date(chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
    assert!(date.same_form(i64::MAX).is_date());
    let master = event(
        r#"{"event_id":"u_0","start_time":{"date":"2025-01-01"},"end_time":{"date":"2025-01-01"},
            "recurrence":"FREQ=DAILY"}"#,
    );
    let exception = event(&format!(
        r#"{{"event_id":"u_{}","start_time":{{"date":"2025-01-02"}},"end_time":{{"date":"2025-01-02"}}}}"#,
        i64::MAX
    ));
    let items: Vec<Item> = [master, exception]
        .iter()
        .map(|e| map_event(e, &mut Vec::new()).unwrap())
        .collect();
    assert_eq!(
        render_calendar(&items, &RenderOptions::default()).vevents,
        2
    );
}

/// `map_structured` (timeouts): an event at chrono's last representable
/// year made the VTIMEZONE generation scan every year up to it (260,000
/// years in 6-hour steps, 7 to 11 s per render in the fuzz build). The
/// range is clamped to the years iCalendar can write.
#[test]
fn far_future_instant_keeps_the_vtimezone_range_to_year_9999() {
    const LAST: i64 = 8_210_266_876_799;
    let ev = |id: &str, at: i64| {
        event(&format!(
            r#"{{"event_id":"{id}","start_time":{{"timestamp":"{at}","timezone":"America/New_York"}},
                "end_time":{{"timestamp":"{at}","timezone":"America/New_York"}}}}"#
        ))
    };
    let items: Vec<Item> = [ev("a_0", 1_700_000_000), ev("b_0", LAST)]
        .iter()
        .map(|e| map_event(e, &mut Vec::new()).unwrap())
        .collect();
    // A hang guard, not a benchmark: about 4 s in a debug build now,
    // minutes before the clamp.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(render_calendar(&items, &RenderOptions::default())));
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("rendered within a minute");
    assert_eq!(out.vevents, 2);
    let vtimezone = &out.text
        [out.text.find("BEGIN:VTIMEZONE").unwrap()..out.text.find("END:VTIMEZONE").unwrap()];
    for line in vtimezone.lines().filter(|l| l.starts_with("DTSTART:")) {
        assert_eq!(
            line.trim_end().len(),
            "DTSTART:YYYYMMDDTHHMMSS".len(),
            "{line}"
        );
    }
}
