#!/usr/bin/env python3
"""Independent cross-check of the ICS files written for the golden cases.

For every `crates/bridge-core/tests/golden/<case>/` that holds an `output.ics`:

1. byte-level lint: CRLF line endings only, no physical line longer than 75 octets
   (CRLF excluded), valid UTF-8, and no fold that splits a UTF-8 sequence;
2. parse with `icalendar`, expand with `recurring_ical_events` over the case window and
   compare the (uid, start, end, summary) instances with `expected.json`, both as a set
   and as a multiset (a duplicated instance fails); once as RFC 5545 reads the file, and
   once with the non-standard X-WR-TIMEZONE applied (unless the case says
   "skip_x_wr_timezone", with why);
3. every VTIMEZONE, rebuilt from the component itself (not looked up by name), must give the
   same UTC offsets as `zoneinfo` at every instance start/end in that zone and at hourly
   samples across each year the events touch; every TZID parameter needs a VTIMEZONE.

Also failing: values icalendar could not parse, two VEVENTs with the same UID and
RECURRENCE-ID, floating (zone-less) date-times, and RECURRENCE-ID/EXDATE values whose type
(DATE vs DATE-TIME) differs from the master's DTSTART. recurring_ical_events would silently
merge duplicates and pin floating times to the window's zone, so these are checked on the
parsed file before expansion.

Requirements: tests/crosscheck/requirements.txt (pip install -r ...).

Usage: check_ics.py [--case NAME] [--golden DIR]
Exit status is 0 only if every checked case passes (and at least one case was checked).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "crates" / "bridge-core" / "tests" / "golden"
MAX_OCTETS = 75


# ---------------------------------------------------------------------------- step 1
def lint_bytes(data: bytes) -> list[str]:
    """Line endings, line length and UTF-8 integrity of the raw file."""
    errors = []
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        errors.append(f"file is not valid UTF-8: {e}")
    if not data.endswith(b"\r\n"):
        errors.append("file does not end with CRLF")
    lines = data.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for no, line in enumerate(lines, 1):
        if b"\n" in line or b"\r" in line:
            errors.append(f"line {no}: bare CR or LF (line ending is not CRLF)")
        if len(line) > MAX_OCTETS:
            errors.append(f"line {no}: {len(line)} octets > {MAX_OCTETS}: {line[:40]!r}...")
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            errors.append(f"line {no}: does not decode on its own (fold splits a UTF-8 character)")
    return errors


# ---------------------------------------------------------------------------- step 2
def norm_time(value) -> date | datetime:
    """Dates stay dates; datetimes become UTC-aware datetimes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"floating (zone-less) date-time {value.isoformat()}")
        return value.astimezone(timezone.utc)
    return value


def parse_expected_time(text: str) -> date | datetime:
    if "T" not in text:
        return date.fromisoformat(text)
    return norm_time(datetime.fromisoformat(text))


def sort_key(inst: tuple) -> tuple:
    return (inst[0], inst[1].isoformat(), inst[3])


def fmt(inst: tuple) -> str:
    uid, start, end, summary = inst
    return f"uid={uid} start={start.isoformat()} end={end.isoformat()} summary={summary!r}"


def occurrence_end(ev):
    start = ev["DTSTART"].dt
    if "DTEND" in ev:
        return ev["DTEND"].dt
    if "DURATION" in ev:
        return start + ev["DURATION"].dt
    return start + timedelta(days=1) if not isinstance(start, datetime) else start


def compare_instances(cal, expected: dict, strict: bool = False) -> tuple[list[str], list]:
    """Expand the calendar over the window and diff against expected instances.

    By default as `recurring_ical_events.of` does, which first moves UTC values into the
    zone of the non-standard X-WR-TIMEZONE (`x_wr_timezone`); `strict` expands the file
    as RFC 5545 reads it, ignoring X-WR-TIMEZONE.
    """
    errors = []
    w_start, w_end = (datetime.fromisoformat(x) for x in expected["window"])
    query = recurring_ical_events.CalendarQuery(cal) if strict else recurring_ical_events.of(cal)
    occurrences = query.between(w_start, w_end)
    got = Counter()
    for ev in occurrences:
        try:
            got[(str(ev["UID"]), norm_time(ev["DTSTART"].dt), norm_time(occurrence_end(ev)),
                 str(ev.get("SUMMARY", "")))] += 1
        except (KeyError, ValueError) as e:
            errors.append(f"occurrence of {ev.get('UID')}: {e}")
    want = Counter()
    for i in expected["instances"]:
        want[(i["uid"], parse_expected_time(i["start"]), parse_expected_time(i["end"]),
              i["summary"])] += 1
    for inst in sorted(set(want) - set(got), key=sort_key):
        errors.append(f"missing:    {fmt(inst)}")
    for inst in sorted(set(got) - set(want), key=sort_key):
        errors.append(f"unexpected: {fmt(inst)}")
    for inst in sorted(set(got) & set(want), key=sort_key):
        if got[inst] != want[inst]:
            errors.append(f"count {got[inst]} (expected {want[inst]}): {fmt(inst)}")
    return errors, occurrences


def prop_values(ev, name: str) -> list:
    """All date/date-time values of a property (EXDATE/RDATE may repeat and hold lists)."""
    raw = ev.get(name)
    if raw is None:
        return []
    out = []
    for item in raw if isinstance(raw, list) else [raw]:
        out += [v.dt for v in item.dts] if hasattr(item, "dts") else [item.dt]
    return out


def check_structure(cal) -> list[str]:
    """Rules the expansion would hide: duplicate components, floating times, mixed types."""
    errors = []
    seen = Counter()
    kinds = {}
    for ev in cal.walk("VEVENT"):
        uid = str(ev.get("UID", ""))
        rid = prop_values(ev, "RECURRENCE-ID")
        seen[(uid, rid[0] if rid else None)] += 1
        if not rid and "DTSTART" in ev:
            kinds[uid] = isinstance(ev["DTSTART"].dt, datetime)
        for name in ("DTSTART", "DTEND", "RECURRENCE-ID", "EXDATE", "RDATE"):
            for v in prop_values(ev, name):
                if isinstance(v, datetime) and v.tzinfo is None:
                    errors.append(f"VEVENT {uid}: floating {name} {v.isoformat()}")
    for (uid, rid), n in seen.items():
        if n > 1:
            errors.append(f"VEVENT uid={uid} recurrence-id={rid} appears {n} times")
    for ev in cal.walk("VEVENT"):
        uid = str(ev.get("UID", ""))
        for name in ("RECURRENCE-ID", "EXDATE"):
            for v in prop_values(ev, name):
                if uid in kinds and isinstance(v, datetime) != kinds[uid]:
                    errors.append(f"VEVENT {uid}: {name} {v} is not the same value type as DTSTART")
    return errors


# ---------------------------------------------------------------------------- step 3
def unfolded_lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    return re.sub(r"\r\n[ \t]", "", text).split("\r\n")


def used_tzids(data: bytes) -> set[str]:
    """TZID parameters from the parameter part (before the first unquoted ':') of each line."""
    tzids = set()
    for line in unfolded_lines(data):
        m = re.match(r'((?:[^:"]|"[^"]*")*):', line)
        if not m:
            continue
        for p in re.finditer(r';TZID=("[^"]*"|[^;:]*)', m.group(1), re.IGNORECASE):
            tzids.add(p.group(1).strip('"'))
    return tzids


def wall_times_by_tzid(components) -> dict[str, set[datetime]]:
    """Naive local wall times of DTSTART/DTEND values, grouped by their zone name."""
    out: dict[str, set[datetime]] = {}
    for ev in components:
        for prop in ("DTSTART", "DTEND", "RECURRENCE-ID"):
            if prop not in ev or not isinstance(ev[prop].dt, datetime):
                continue
            value = ev[prop]
            tzid = value.params.get("TZID") or getattr(value.dt.tzinfo, "key", None)
            if tzid:
                out.setdefault(str(tzid), set()).add(value.dt.replace(tzinfo=None))
    return out


def fmt_offset(delta: timedelta | None) -> str:
    if delta is None:
        return "none"
    minutes = int(delta.total_seconds()) // 60
    return f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def is_unambiguous(wall: datetime, zone: ZoneInfo) -> bool:
    """False for wall times in a DST gap or overlap, whose resolution is convention."""
    a, b = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if a.utcoffset() != b.utcoffset():
        return False
    return a.astimezone(timezone.utc).astimezone(zone).replace(tzinfo=None) == wall


def check_timezones(cal, data: bytes, occurrences) -> list[str]:
    errors = []
    vtimezones = {}
    for comp in cal.walk("VTIMEZONE"):
        tzid = str(comp.get("TZID", ""))
        if tzid in vtimezones:
            errors.append(f"VTIMEZONE {tzid!r} defined more than once")
        vtimezones[tzid] = comp
    for tzid in sorted(used_tzids(data) - set(vtimezones)):
        errors.append(f"TZID {tzid!r} is used but has no VTIMEZONE")

    events = list(cal.walk("VEVENT"))
    walls = wall_times_by_tzid(events + list(occurrences))
    years = set()
    for ev in events + list(occurrences):
        for prop in ("DTSTART", "DTEND"):
            if prop in ev:
                years.add(ev[prop].dt.year)
    for tzid, comp in vtimezones.items():
        try:
            reference = ZoneInfo(tzid)
        except Exception:
            errors.append(f"VTIMEZONE {tzid!r}: not an IANA zone name, cannot verify")
            continue
        try:
            built = comp.to_tz(lookup_tzid=False)  # from the component's own rules
        except Exception as e:
            errors.append(f"VTIMEZONE {tzid!r}: cannot build a tz from it: {e}")
            continue
        wrong = []
        for wall in sorted(walls.get(tzid, ())):
            if not is_unambiguous(wall, reference):
                continue
            mine, ref = wall.replace(tzinfo=built).utcoffset(), wall.replace(tzinfo=reference).utcoffset()
            if mine != ref:
                wrong.append(f"{wall} is {fmt_offset(mine)} (zoneinfo: {fmt_offset(ref)})")
        if wrong:
            errors.append(f"VTIMEZONE {tzid!r}: {len(wrong)} event times get a wrong offset, "
                          f"e.g. {'; '.join(wrong[:3])}")
        bad = []
        for year in sorted(years):
            t = datetime(year, 1, 1, tzinfo=timezone.utc)
            while t.year == year:
                if t.astimezone(built).utcoffset() != t.astimezone(reference).utcoffset():
                    bad.append(t)
                t += timedelta(hours=1)
        if bad:
            errors.append(f"VTIMEZONE {tzid!r}: {len(bad)} hourly samples disagree with zoneinfo, "
                          f"first {bad[0].isoformat()}: {fmt_offset(bad[0].astimezone(built).utcoffset())} "
                          f"(zoneinfo: {fmt_offset(bad[0].astimezone(reference).utcoffset())})")
    return errors


# ---------------------------------------------------------------------------- driver
def check_case(case_dir: Path) -> tuple[list[str], int]:
    data = (case_dir / "output.ics").read_bytes()
    expected = json.loads((case_dir / "expected.json").read_text(encoding="utf-8"))
    errors = lint_bytes(data)
    try:
        cal = icalendar.Calendar.from_ical(data)
    except Exception as e:
        return errors + [f"icalendar cannot parse the file: {e}"], 0
    broken = [f"{comp.name} {comp.get('UID', '')}: cannot parse {prop}: {msg}"
              for comp in cal.walk() for prop, msg in (getattr(comp, "errors", None) or [])]
    if broken:  # expanding a calendar with broken values would only crash
        return errors + broken, 0
    errors += check_structure(cal)
    # Both readings must give the hand-written instances. A case may skip the X-WR-TIMEZONE
    # one, with its reason in "skip_x_wr_timezone": UTC values in the second occurrence of
    # a repeated hour cannot survive it, since Python compares and adds datetimes of one
    # zone by wall-clock time (ignoring `fold`).
    diff, occurrences = compare_instances(cal, expected, strict=True)
    errors += [f"RFC 5545 (X-WR-TIMEZONE ignored): {e}" for e in diff]
    if not expected.get("skip_x_wr_timezone"):
        diff, occurrences = compare_instances(cal, expected)
        errors += diff
    errors += check_timezones(cal, data, occurrences)
    return errors, len(occurrences)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", help="check only this case (directory name)")
    ap.add_argument("--golden", type=Path, default=GOLDEN, help=f"golden directory (default {GOLDEN})")
    args = ap.parse_args()

    if args.case:
        dirs = [args.golden / args.case]
        if not (dirs[0] / "expected.json").is_file():
            print(f"no such case: {dirs[0]}", file=sys.stderr)
            return 2
    else:
        dirs = sorted(p for p in args.golden.iterdir() if (p / "expected.json").is_file())

    failed, checked = [], 0
    for case_dir in dirs:
        name = case_dir.name
        if not (case_dir / "output.ics").is_file():
            if args.case:
                print(f"FAIL {name}  no output.ics")
                failed.append(name)
            else:
                print(f"skip {name}  no output.ics")
            continue
        checked += 1
        try:
            errors, count = check_case(case_dir)
        except Exception as e:  # a crash in one case must not hide the others
            errors, count = [f"checker crashed: {type(e).__name__}: {e}"], 0
        if errors:
            failed.append(name)
            print(f"FAIL {name}  {len(errors)} problem(s)")
            for err in errors:
                print(f"     {err}")
        else:
            print(f"ok  {name}  {count} instances")

    print()
    if failed:
        print(f"{len(failed)} case(s) failed: {', '.join(failed)}")
        return 1
    if checked == 0:
        print("no output.ics found: nothing was checked")
        return 1
    print(f"all {checked} case(s) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
