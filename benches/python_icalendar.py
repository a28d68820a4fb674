#!/usr/bin/env python3
"""Baseline for the mapping benchmark: the same Feishu events turned into one
VCALENDAR by Python `icalendar` (the reference library), timed end to end
(JSON parse, building the components, VTIMEZONEs, serialization).

    cargo run --release --example gen_sample -- 10000 > /tmp/sample.json
    target/pyenv/bin/python benches/python_icalendar.py /tmp/sample.json

It does the same work as the Rust mapper: masters with RRULE and EXDATE,
exceptions with RECURRENCE-ID, all-day events with exclusive DTEND, attendees,
organizer, VALARMs, conference line. Prints events per second (best of 3).
"""
from __future__ import annotations

import json
import sys
import time
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import icalendar

DTSTAMP = datetime(2025, 1, 1, tzinfo=timezone.utc)
CUTYPE = {"user": "INDIVIDUAL", "chat": "GROUP", "resource": "ROOM", "third_party": "INDIVIDUAL"}
PARTSTAT = {"needs_action": "NEEDS-ACTION", "accept": "ACCEPTED", "tentative": "TENTATIVE", "decline": "DECLINED"}


def when(ti: dict, end: bool = False):
    if ti.get("date"):
        d = date.fromisoformat(ti["date"])
        return d + timedelta(days=1) if end else d
    tz = ti.get("timezone") or "UTC"
    return datetime.fromtimestamp(int(ti["timestamp"]), ZoneInfo(tz))


def convert(text: str) -> bytes:
    items = json.loads(text)["data"]["items"]
    cal = icalendar.Calendar()
    cal.add("prodid", "-//bench//python icalendar//EN")
    cal.add("version", "2.0")
    cal.add("method", "PUBLISH")
    masters, cancelled = {}, {}
    for ev in items:
        uid, orig = ev["event_id"].rsplit("_", 1)
        if ev.get("status") == "cancelled":
            cancelled.setdefault(uid, []).append(int(orig))
        elif orig == "0" and ev.get("recurrence"):
            masters[uid] = ev
    for ev in items:
        uid, orig = ev["event_id"].rsplit("_", 1)
        if ev.get("status") == "cancelled":
            continue
        e = icalendar.Event()
        e.add("uid", uid)
        e.add("dtstamp", DTSTAMP)
        start = when(ev["start_time"])
        e.add("dtstart", start)
        e.add("dtend", when(ev["end_time"], end=True))
        if orig == "0" and ev.get("recurrence"):
            e.add("rrule", icalendar.vRecur.from_ical(ev["recurrence"]))
            for t in cancelled.get(uid, []):
                e.add("exdate", datetime.fromtimestamp(t, start.tzinfo) if isinstance(start, datetime) else start)
        elif orig != "0" and uid in masters:
            m = when(masters[uid]["start_time"])
            e.add("recurrence-id", datetime.fromtimestamp(int(orig), m.tzinfo) if isinstance(m, datetime) else m)
        e.add("summary", ev.get("summary", ""))
        desc = ev.get("description", "")
        vchat = ev.get("vchat") or {}
        if vchat.get("meeting_url"):
            desc += f"\n\nVideo meeting: {vchat['meeting_url']}"
            e.add("conference", vchat["meeting_url"], parameters={"VALUE": "URI", "FEATURE": "VIDEO"})
        if desc:
            e.add("description", desc)
        loc = ev.get("location") or {}
        if loc.get("name"):
            e.add("location", ", ".join(x for x in (loc.get("name"), loc.get("address")) if x))
        if ev.get("app_link"):
            e.add("url", ev["app_link"])
        if ev.get("status") in ("confirmed", "tentative"):
            e.add("status", ev["status"].upper())
        if ev.get("visibility") in ("public", "private"):
            e.add("class", ev["visibility"].upper())
        if ev.get("free_busy_status") == "free":
            e.add("transp", "TRANSPARENT")
        if ev.get("create_time"):
            e.add("created", datetime.fromtimestamp(int(ev["create_time"]), timezone.utc))
        org = ev.get("event_organizer") or {}
        if org.get("user_id"):
            e.add("organizer", icalendar.vCalAddress(f"mailto:{org['user_id']}@user.feishu.invalid"),
                  parameters={"CN": org.get("display_name", "")})
        for a in ev.get("attendees") or []:
            if a.get("rsvp_status") == "removed":
                continue
            addr = a.get("third_party_email") or f"{a.get('user_id') or a.get('room_id') or a.get('chat_id')}@x.feishu.invalid"
            e.add("attendee", icalendar.vCalAddress(f"mailto:{addr}"), parameters={
                "CN": a.get("display_name") or addr, "CUTYPE": CUTYPE.get(a.get("type"), "UNKNOWN"),
                "PARTSTAT": PARTSTAT.get(a.get("rsvp_status"), "NEEDS-ACTION"),
                "ROLE": "OPT-PARTICIPANT" if a.get("is_optional") else "REQ-PARTICIPANT"})
        for r in ev.get("reminders") or []:
            alarm = icalendar.Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", ev.get("summary") or "Reminder")
            alarm.add("trigger", timedelta(minutes=-int(r["minutes"])))
            e.add_component(alarm)
        cal.add_component(e)
    if hasattr(cal, "add_missing_timezones"):
        cal.add_missing_timezones()
    return cal.to_ical()


def main() -> None:
    text = open(sys.argv[1], encoding="utf-8").read()
    n = len(json.loads(text)["data"]["items"])
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        out = convert(text)
        best = min(best, time.perf_counter() - t0)
    print(f"python icalendar {icalendar.__version__}: {n} events in {best:.3f} s "
          f"= {n / best:,.0f} events/s ({len(out):,} bytes)")


if __name__ == "__main__":
    main()
