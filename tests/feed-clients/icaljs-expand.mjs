// Expands an iCalendar feed with Mozilla's ical.js (npm "ical.js", the parser Thunderbird uses).
// Adapted from ../shared/feed-clients/icaljs-expand.mjs (ours) to print JSON lines.
// Usage: node icaljs-expand.mjs <http(s)-url | file.ics> <fromISO> <toISO>   (ISO with Z)
// Prints one JSON object per instance overlapping [from, to): uid, start, end (UTC ISO
// "YYYY-MM-DDTHH:MM:SSZ" for date-times, "YYYY-MM-DD" for dates), summary, rid.
// Run from a directory whose node_modules holds ical.js (tests copy it to target/node).
import ICAL from 'ical.js';
import { readFile } from 'node:fs/promises';

const [src, from, to] = process.argv.slice(2);
const text = /^https?:\/\//.test(src) ? await (await fetch(src)).text() : await readFile(src, 'utf8');
const root = new ICAL.Component(ICAL.parse(text));
// ical.js only knows registered zones; without this every TZID time is "floating".
for (const tz of root.getAllSubcomponents('vtimezone')) ICAL.TimezoneService.register(new ICAL.Timezone(tz));

const masters = new Map();
const overrides = [];
for (const c of root.getAllSubcomponents('vevent')) {
  if (c.hasProperty('recurrence-id')) overrides.push(c);
  else masters.set(c.getFirstPropertyValue('uid'), new ICAL.Event(c));
}
for (const o of overrides) masters.get(o.getFirstPropertyValue('uid'))?.relateException(new ICAL.Event(o));

const lo = Date.parse(from) / 1000, hi = Date.parse(to) / 1000;
const unix = (t) => (t.isDate ? Date.UTC(t.year, t.month - 1, t.day) / 1000 : t.toUnixTime());
const iso = (t) => {
  const p = (n) => String(n).padStart(2, '0');
  if (t.isDate) return `${t.year}-${p(t.month)}-${p(t.day)}`;
  return new Date(t.toUnixTime() * 1000).toISOString().replace('.000Z', 'Z');
};
for (const ev of masters.values()) {
  const rows = [];
  if (!ev.isRecurring()) rows.push({ s: ev.startDate, e: ev.endDate, sum: ev.summary, rid: '' });
  else {
    const it = ev.iterator(); // applies RRULE/RDATE/EXDATE; unbounded without COUNT/UNTIL
    for (let t = it.next(); t && unix(t) < hi + 86400 * 2; t = it.next()) {
      const d = ev.getOccurrenceDetails(t); // swaps in the RECURRENCE-ID override, if any
      rows.push({ s: d.startDate, e: d.endDate, sum: d.item.summary, rid: d.recurrenceId.toString() });
    }
  }
  for (const r of rows) {
    if (unix(r.e) <= lo || unix(r.s) >= hi) continue;
    console.log(JSON.stringify({ uid: ev.uid, start: iso(r.s), end: iso(r.e), summary: r.sum ?? '', rid: r.rid }));
  }
}
