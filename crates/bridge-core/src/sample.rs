//! Deterministic sample Feishu events covering every mapping case, for the
//! benchmarks, the demo tenant and load tests. Pure: the same `(count, seed)`
//! always yields the same events.

use crate::feishu::{
    Attendee, AttendeeType, Event, EventOrganizer, EventStatus, FreeBusyStatus, Location, Reminder,
    RsvpStatus, TimeInfo, UnixSeconds, VcType, Vchat, Visibility,
};

const ZONES: [&str; 6] = [
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "UTC",
    "America/Los_Angeles",
];
const TITLES: [&str; 8] = [
    "Weekly sync",
    "产品评审会议",
    "1:1, Li Lei; budget",
    "Design review",
    "客户拜访 — Shanghai office",
    "Sprint planning",
    "All hands",
    "面试：后端工程师",
];

/// A small deterministic PRNG (SplitMix64), enough for sample data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

fn timed(at: i64, tz: &str) -> TimeInfo {
    TimeInfo {
        date: None,
        timestamp: Some(UnixSeconds(at)),
        timezone: Some(tz.to_owned()),
    }
}

fn day(at: i64) -> TimeInfo {
    let d = chrono::DateTime::from_timestamp(at, 0)
        .unwrap_or_default()
        .date_naive();
    TimeInfo {
        date: Some(d.format("%Y-%m-%d").to_string()),
        timestamp: None,
        timezone: Some("UTC".to_owned()),
    }
}

/// The instant `weeks` weeks after `at` at the same wall-clock time in `tz`
/// (what a weekly rule produces across DST changes).
fn weeks_later(at: i64, tz: &str, weeks: i64) -> i64 {
    use chrono::TimeZone;
    let Ok(tz) = tz.parse::<chrono_tz::Tz>() else {
        return at + weeks * 7 * 86_400;
    };
    let local = tz.timestamp_opt(at, 0).single().map(|d| d.naive_local());
    local
        .and_then(|l| {
            tz.from_local_datetime(&(l + chrono::Duration::weeks(weeks)))
                .earliest()
        })
        .map_or(at + weeks * 7 * 86_400, |d| d.timestamp())
}

fn uid(rng: &mut Rng, i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        rng.next_u64() as u32,
        rng.below(0x1_0000),
        rng.below(0x1000),
        rng.below(0x1000),
        i
    )
}

fn attendees(rng: &mut Rng) -> Vec<Attendee> {
    let statuses = [
        RsvpStatus::Accept,
        RsvpStatus::NeedsAction,
        RsvpStatus::Tentative,
        RsvpStatus::Decline,
    ];
    let mut v = Vec::new();
    for k in 0..(2 + rng.below(4)) {
        v.push(Attendee {
            kind: Some(AttendeeType::User),
            attendee_id: Some(format!("user_{k}")),
            user_id: Some(format!("ou_{:016x}", rng.next_u64())),
            display_name: Some(format!("User {k}")),
            rsvp_status: Some(statuses[rng.below(4) as usize].clone()),
            is_optional: Some(rng.below(4) == 0),
            ..Attendee::default()
        });
    }
    v.push(Attendee {
        kind: Some(AttendeeType::Resource),
        attendee_id: Some("resource_1".to_owned()),
        room_id: Some(format!("omm_{:016x}", rng.next_u64())),
        display_name: Some("F3-301 会议室 (10)".to_owned()),
        rsvp_status: Some(RsvpStatus::Accept),
        ..Attendee::default()
    });
    v.push(Attendee {
        kind: Some(AttendeeType::ThirdParty),
        attendee_id: Some("third_party_1".to_owned()),
        third_party_email: Some("partner@example.com".to_owned()),
        rsvp_status: Some(RsvpStatus::NeedsAction),
        ..Attendee::default()
    });
    v
}

/// `count` events (masters, exceptions, cancelled occurrences, all-day,
/// attendees, meetings, reminders) starting around `base` (Unix seconds).
pub fn events(count: usize, seed: u64, base: i64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(count);
    let mut i = 0;
    while out.len() < count {
        let id = uid(&mut rng, i);
        let tz = ZONES[rng.below(ZONES.len() as u64) as usize];
        // Half-hour aligned start within ~a year of `base`.
        let start = base + (rng.below(365 * 48) as i64) * 1800;
        let len = 1800 * (1 + rng.below(4) as i64);
        let title = TITLES[rng.below(TITLES.len() as u64) as usize];
        let mut ev = Event {
            event_id: Some(format!("{id}_0")),
            organizer_calendar_id: Some("feishu.cn_sample@group.calendar.feishu.cn".to_owned()),
            summary: Some(format!("{title} #{i}")),
            description: Some(format!(
                "Agenda for #{i}:\n1. status\n2. risks, blockers; next steps"
            )),
            start_time: Some(timed(start, tz)),
            end_time: Some(timed(start + len, tz)),
            status: Some(EventStatus::Confirmed),
            visibility: Some(Visibility::Default),
            free_busy_status: Some(FreeBusyStatus::Busy),
            reminders: Some(vec![Reminder { minutes: Some(15) }]),
            create_time: Some(UnixSeconds(base - 86_400)),
            event_organizer: Some(EventOrganizer {
                user_id: Some(format!("ou_{:016x}", rng.next_u64())),
                display_name: Some("Li Lei".to_owned()),
            }),
            app_link: Some(format!(
                "https://applink.feishu.cn/client/calendar/event/detail?key={id}&originalTime=0"
            )),
            ..Event::default()
        };
        match i % 10 {
            0 => {
                // Weekly master with a moved exception and a cancelled occurrence.
                ev.recurrence = Some("FREQ=WEEKLY;INTERVAL=1;COUNT=20".to_owned());
                let moved_orig = weeks_later(start, tz, 1);
                let cancelled_orig = weeks_later(start, tz, 2);
                out.push(ev.clone());
                if out.len() < count {
                    let mut ex = ev.clone();
                    ex.event_id = Some(format!("{id}_{moved_orig}"));
                    ex.recurrence = None;
                    ex.is_exception = Some(true);
                    ex.recurring_event_id = Some(format!("{id}_0"));
                    ex.summary = Some(format!("{title} #{i} (moved)"));
                    ex.start_time = Some(timed(moved_orig + 3600, tz));
                    ex.end_time = Some(timed(moved_orig + 3600 + len, tz));
                    out.push(ex);
                }
                if out.len() < count {
                    // A cancelled occurrence is a stored exception like any
                    // other, with its original times and status cancelled.
                    let mut gone = ev.clone();
                    gone.event_id = Some(format!("{id}_{cancelled_orig}"));
                    gone.recurrence = None;
                    gone.is_exception = Some(true);
                    gone.recurring_event_id = Some(format!("{id}_0"));
                    gone.status = Some(EventStatus::Cancelled);
                    gone.start_time = Some(timed(cancelled_orig, tz));
                    gone.end_time = Some(timed(cancelled_orig + len, tz));
                    out.push(gone);
                }
                i += 1;
                continue;
            }
            1 => {
                ev.start_time = Some(day(start));
                ev.end_time = Some(day(start + 86_400 * rng.below(3) as i64));
                ev.free_busy_status = Some(FreeBusyStatus::Free);
            }
            2 => {
                ev.attendees = Some(attendees(&mut rng));
                ev.vchat = Some(Vchat {
                    vc_type: Some(VcType::Vc),
                    meeting_url: Some(format!(
                        "https://vc.feishu.cn/j/{}",
                        rng.below(1_000_000_000)
                    )),
                    ..Vchat::default()
                });
                ev.location = Some(Location {
                    name: Some("F3-301 会议室".to_owned()),
                    address: Some("北京市海淀区".to_owned()),
                    latitude: Some(39.98),
                    longitude: Some(116.31),
                });
            }
            3 => {
                ev.visibility = Some(Visibility::Private);
                ev.reminders = Some(vec![
                    Reminder {
                        minutes: Some(1440),
                    },
                    Reminder { minutes: Some(-30) },
                ]);
            }
            4 => {
                ev.recurrence = Some("FREQ=DAILY;UNTIL=20301231T155959Z".to_owned());
            }
            5 => {
                ev.vchat = Some(Vchat {
                    vc_type: Some(VcType::ThirdParty),
                    description: Some("Zoom".to_owned()),
                    meeting_url: Some("https://example.zoom.us/j/123456789".to_owned()),
                    ..Vchat::default()
                });
            }
            _ => {}
        }
        out.push(ev);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_all_mappable() {
        let a = events(500, 7, 1_735_689_600);
        assert_eq!(a.len(), 500);
        assert_eq!(a, events(500, 7, 1_735_689_600));
        let mapped = crate::map_events(&a);
        assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
        assert!(mapped.warnings.is_empty(), "{:?}", mapped.warnings);
        let cancelled = mapped
            .items
            .iter()
            .filter(|i| matches!(i, crate::Item::Cancelled(_)))
            .count();
        assert!(cancelled >= 10);
    }
}
