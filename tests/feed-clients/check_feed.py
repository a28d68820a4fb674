#!/usr/bin/env python3
"""Real subscribers read served feeds and must expand exactly the Feishu instance set.

Driven by tests/e2e/feeds.rs. The manifest lists, per golden case, the URL of the feed
the daemon serves for the calendar holding that case's Feishu events, and the case's
expected.json (instances written by hand from Feishu's semantics). One client per run:

- python: urllib GET (200, ETag, Last-Modified), then conditional GETs (If-None-Match and
  If-Modified-Since must answer 304 with no body); icalendar + recurring-ical-events expand
  the body as RFC 5545 reads it and, unless the case says "skip_x_wr_timezone", with
  X-WR-TIMEZONE applied;
- icaljs: Mozilla's ical.js under Node (icaljs-expand.mjs) fetches the URL and expands;
- khal: vdirsyncer (http storage into a filesystem storage, one pair per case) fetches the
  feeds, then khal lists each case's calendar over the case window. vdirsyncer replaces
  UIDs with hashes, so khal's instances are compared without the UID.

Instances are compared as multisets of (uid, start, end, summary), times in UTC.
Exit status 0 only if every case matches, for every client: there is no list of tolerated
deviations (the feed is written so that every reading of a repeated or skipped wall-clock
time gives Feishu's instants, see bridge_core::ics::exact).

Usage: check_feed.py --client CLIENT --manifest FILE --work DIR [--node-dir DIR] [--bin-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path


def norm(value) -> str:
    """Dates as YYYY-MM-DD, date-times as UTC YYYY-MM-DDTHH:MM:SSZ."""
    if isinstance(value, str):
        if "T" not in value:
            return value
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"floating date-time {value.isoformat()}")
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


def expected_set(expected: dict, with_uid: bool) -> Counter:
    return Counter(
        (i["uid"] if with_uid else None, norm(i["start"]), norm(i["end"]), i["summary"])
        for i in expected["instances"]
    )


def diff(case: str, label: str, got: Counter, want: Counter) -> list[str]:
    errors = []
    for inst in sorted(set(want) - set(got), key=str):
        errors.append(f"{case} [{label}] missing:    {inst}")
    for inst in sorted(set(got) - set(want), key=str):
        errors.append(f"{case} [{label}] unexpected: {inst}")
    for inst in sorted(set(got) & set(want), key=str):
        if got[inst] != want[inst]:
            errors.append(f"{case} [{label}] count {got[inst]} (expected {want[inst]}): {inst}")
    return errors


def get(url: str, headers: dict | None = None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, {k.lower(): v for k, v in res.headers.items()}, res.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ------------------------------------------------------------------------------- python
def check_python(cases: list[dict], _args) -> list[str]:
    import icalendar
    import recurring_ical_events

    errors = []
    for c in cases:
        expected = json.loads(Path(c["expected"]).read_text())
        status, headers, body = get(c["url"])
        if status != 200:
            errors.append(f"{c['case']}: GET answered {status}")
            continue
        ctype = headers.get("content-type", "")
        if ctype != "text/calendar; charset=utf-8":
            errors.append(f"{c['case']}: Content-Type {ctype!r}")
        etag, modified = headers.get("etag"), headers.get("last-modified")
        if not etag or not modified:
            errors.append(f"{c['case']}: no ETag / Last-Modified in {headers}")
            continue
        for cond in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
            s, h, b = get(c["url"], cond)
            if s != 304 or b:
                errors.append(f"{c['case']}: conditional GET {cond} answered {s} with {len(b)} bytes")
            elif h.get("etag") != etag:
                errors.append(f"{c['case']}: 304 with ETag {h.get('etag')} (200 had {etag})")
        cal = icalendar.Calendar.from_ical(body)
        w_start, w_end = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in expected["window"])
        queries = [("rfc5545", recurring_ical_events.CalendarQuery(cal))]
        if not expected.get("skip_x_wr_timezone"):
            queries.append(("x-wr-timezone", recurring_ical_events.of(cal)))
        for label, query in queries:
            got = Counter()
            for ev in query.between(w_start, w_end):
                start = ev["DTSTART"].dt
                if "DTEND" in ev:
                    end = ev["DTEND"].dt
                elif "DURATION" in ev:
                    end = start + ev["DURATION"].dt
                else:
                    end = start if isinstance(start, datetime) else start + timedelta(days=1)
                got[(str(ev["UID"]), norm(start), norm(end), str(ev.get("SUMMARY", "")))] += 1
            errors += diff(c["case"], f"python {label}", got, expected_set(expected, True))
    return errors


# ------------------------------------------------------------------------------- ical.js
def check_icaljs(cases: list[dict], args) -> list[str]:
    errors = []
    script = Path(args.node_dir) / "icaljs-expand.mjs"
    for c in cases:
        expected = json.loads(Path(c["expected"]).read_text())
        out = subprocess.run(
            ["node", str(script), c["url"], *expected["window"]],
            cwd=args.node_dir, capture_output=True, text=True, timeout=120,
        )
        if out.returncode != 0:
            errors.append(f"{c['case']}: ical.js failed: {out.stderr.strip()}")
            continue
        got = Counter()
        for line in out.stdout.splitlines():
            r = json.loads(line)
            got[(r["uid"], norm(r["start"]), norm(r["end"]), r["summary"])] += 1
        errors += diff(c["case"], "ical.js", got, expected_set(expected, True))
    return errors


# ------------------------------------------------------------------------------- khal
def check_khal(cases: list[dict], args) -> list[str]:
    work = Path(args.work)
    bindir = Path(args.bin_dir)
    conf = ["[general]", f'status_path = "{work}/vds-status/"', ""]
    khal = ["[calendars]"]
    for c in cases:
        name = c["case"]
        local = work / "vds" / name
        local.mkdir(parents=True, exist_ok=True)
        conf += [
            f"[pair {name}]", f'a = "{name}_remote"', f'b = "{name}_local"',
            "collections = null", 'conflict_resolution = "a wins"', "",
            f"[storage {name}_remote]", 'type = "http"', f'url = "{c["url"]}"', "",
            f"[storage {name}_local]", 'type = "filesystem"', f'path = "{local}/"',
            'fileext = ".ics"', "",
        ]
        khal += [f"[[{name}]]", f"path = {local}/", "type = calendar"]
    khal += [
        "[locale]", "timeformat = %H:%M:%S", "dateformat = %Y-%m-%d",
        "longdateformat = %Y-%m-%d", "datetimeformat = %Y-%m-%dT%H:%M:%S",
        "longdatetimeformat = %Y-%m-%dT%H:%M:%S", "local_timezone = UTC",
        "default_timezone = UTC", "[sqlite]", f"path = {work}/khal.db",
    ]
    (work / "vdirsyncer.conf").write_text("\n".join(conf) + "\n")
    (work / "khal.conf").write_text("\n".join(khal) + "\n")
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    for step in (["discover"], ["sync"]):
        out = subprocess.run(
            [str(bindir / "vdirsyncer"), "-c", str(work / "vdirsyncer.conf"), *step],
            capture_output=True, text=True, timeout=300, env=env, input="y\n" * 200,
        )
        if out.returncode != 0:
            return [f"vdirsyncer {step[0]} failed: {out.stdout}{out.stderr}"]
    errors = []
    for c in cases:
        expected = json.loads(Path(c["expected"]).read_text())
        w_start, w_end = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in expected["window"])
        # khal's range end is inclusive of that day; the window end is exclusive.
        last = (w_end - timedelta(seconds=1)).strftime("%Y-%m-%d")
        out = subprocess.run(
            [str(bindir / "khal"), "-c", str(work / "khal.conf"), "list", "-a", c["case"],
             "--json", "start", "--json", "end", "--json", "title", "--json", "all-day",
             "--day-format", "", w_start.strftime("%Y-%m-%d"), last],
            capture_output=True, text=True, timeout=120, env=env,
        )
        if out.returncode != 0:
            errors.append(f"{c['case']}: khal failed: {out.stderr.strip()}")
            continue
        # khal prints an event on every day it spans: instances are compared as a set
        # (the other two clients compare multisets).
        got = set()
        for line in out.stdout.splitlines():
            line = line.strip()
            if not line:
                continue
            for r in json.loads(line):
                if r["all-day"] == "True":
                    # khal shows the last day of an all-day event; iCalendar's end is exclusive.
                    start = r["start"]
                    end = (date.fromisoformat(r["end"]) + timedelta(days=1)).isoformat()
                else:
                    start = norm(r["start"] + "+00:00")
                    end = norm(r["end"] + "+00:00")
                got.add((None, start, end, r["title"]))
        want = Counter(set(expected_set(expected, False)))
        errors += diff(c["case"], "khal", Counter(got), want)
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, choices=["python", "icaljs", "khal"])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--node-dir", default="target/node")
    ap.add_argument("--bin-dir", default="target/pyenv/bin")
    args = ap.parse_args()
    cases = json.loads(Path(args.manifest).read_text())["cases"]
    check = {"python": check_python, "icaljs": check_icaljs, "khal": check_khal}[args.client]
    errors = check(cases, args)
    for e in errors:
        print(e)
    print(f"{args.client}: {len(cases)} feeds, {len(errors)} problems")
    return 0 if cases and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
