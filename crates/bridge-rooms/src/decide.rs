//! The decision for one booking: pure, so every rule is tested here.
//!
//! Order of the checks (all are evaluated, so `explain` lists every reason):
//! the booking horizon (`days_in_advance`, on the first instance), the daily
//! window and `max_duration` (every instance), who may book, conflicts with
//! the ledger of accepted bookings and the target's own busy times (every
//! instance within the horizon). A series is declined when more instances
//! conflict than `max_conflict_instances`; otherwise it is accepted and the
//! conflicting instances are declined one by one (as Exchange room
//! mailboxes do). A booking that passes everything waits for an
//! administrator when the room's approval rule applies.

use chrono::{TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::rules::Effective;

/// One instance of a booking (Unix seconds; `original_time` as Feishu
/// names the instance: 0 for a single event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub start: i64,
    pub end: i64,
    pub original_time: i64,
}

/// A period the room is already taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub start: i64,
    pub end: i64,
    /// Who holds it (`<booking> "summary"`, or the target's name).
    pub holder: String,
}

/// What a decision looks at.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Sorted by start; never empty.
    pub instances: &'a [Instance],
    /// Whether the booking is a recurring series.
    pub series: bool,
    /// Every id Feishu gave of the organizer.
    pub organizer: &'a [String],
    /// The organizer's departments (`None`: not looked up).
    pub organizer_departments: Option<&'a [String]>,
    pub rules: &'a Effective,
    pub tz: Tz,
    pub now: i64,
    /// Accepted bookings of the room (this one excluded) and the target's
    /// own busy periods.
    pub busy: &'a [Busy],
    pub max_conflict_instances: u32,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Accepted,
    Declined,
    /// Waits for `rooms approve|decline`.
    Pending,
}

/// A verdict with its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Why (declines and pending), or notes (accepted with declined instances).
    pub reasons: Vec<String>,
    /// Checks that passed, for `explain`.
    pub passed: Vec<String>,
    /// Instances of an accepted series declined for their conflicts.
    pub declined_instances: Vec<i64>,
}

fn hhmm(s: i64) -> String {
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

fn local(tz: Tz, t: i64) -> String {
    tz.timestamp_opt(t, 0)
        .single()
        .map(|d| d.format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Seconds since local midnight of `t`, and the local date.
fn time_of_day(tz: Tz, t: i64) -> Option<(i64, chrono::NaiveDate)> {
    let d = tz.timestamp_opt(t, 0).single()?;
    Some((i64::from(d.num_seconds_from_midnight()), d.date_naive()))
}

/// Why an instance falls outside the daily window, if it does.
fn outside_window(tz: Tz, i: &Instance, start_s: i64, end_s: i64) -> Option<String> {
    let (s_tod, s_day) = time_of_day(tz, i.start)?;
    let (mut e_tod, e_day) = time_of_day(tz, i.end)?;
    if e_day != s_day {
        // Ending exactly at midnight counts as 24:00 of the start day.
        if e_tod == 0 && e_day == s_day.succ_opt()? {
            e_tod = 86_400;
        } else {
            return Some(format!(
                "outside the daily window {}–{} ({tz}): {} to {} spans more than one day",
                hhmm(start_s),
                hhmm(end_s),
                local(tz, i.start),
                local(tz, i.end)
            ));
        }
    }
    (s_tod < start_s || e_tod > end_s).then(|| {
        format!(
            "outside the daily window {}–{} ({tz}): {} to {}",
            hhmm(start_s),
            hhmm(end_s),
            local(tz, i.start),
            local(tz, i.end)
        )
    })
}

/// Decides one booking.
pub fn decide(r: &Request<'_>) -> Outcome {
    let mut reasons = Vec::new();
    let mut passed = Vec::new();
    let first = r.instances[0];
    let t = &r.rules.time;
    let horizon_end = r.now + t.days_in_advance * 86_400;
    if t.enabled {
        if first.start > horizon_end {
            reasons.push(format!(
                "beyond the booking horizon: starts {}, more than {} days ahead (rule from {})",
                local(r.tz, first.start),
                t.days_in_advance,
                r.rules.time_from
            ));
        } else {
            passed.push(format!("within the {}-day horizon", t.days_in_advance));
        }
        let window = r
            .instances
            .iter()
            .find_map(|i| outside_window(r.tz, i, t.start_s, t.end_s));
        match window {
            Some(w) => reasons.push(format!("{w} (rule from {})", r.rules.time_from)),
            None => passed.push(format!(
                "inside the daily window {}–{}",
                hhmm(t.start_s),
                hhmm(t.end_s)
            )),
        }
        let longest = r
            .instances
            .iter()
            .map(|i| i.end - i.start)
            .max()
            .unwrap_or(0);
        if longest > t.max_duration_hours * 3600 {
            reasons.push(format!(
                "longer than max_duration {} h: {} min (rule from {})",
                t.max_duration_hours,
                longest / 60,
                r.rules.time_from
            ));
        } else {
            passed.push(format!("not longer than {} h", t.max_duration_hours));
        }
    } else {
        passed.push("no time restrictions (time_switch off)".into());
    }

    let s = &r.rules.scope;
    if s.allow_all {
        passed.push("everyone may book".into());
    } else {
        let listed = s
            .users
            .iter()
            .any(|ids| ids.iter().any(|id| r.organizer.contains(id)));
        let in_dept = r
            .organizer_departments
            .is_some_and(|d| d.iter().any(|d| s.departments.contains(d)));
        if listed || in_dept {
            passed.push(if listed {
                "the organizer is an allowed user".into()
            } else {
                "the organizer is in an allowed department".into()
            });
        } else {
            let who = r.organizer.first().map_or("(unknown)", String::as_str);
            let depts = match r.organizer_departments {
                None if !s.departments.is_empty() => "; departments could not be read",
                _ => "",
            };
            reasons.push(format!(
                "the organizer {who} may not book this room: not among the {} allowed users or {} allowed departments{depts} (rule from {})",
                s.users.len(),
                s.departments.len(),
                r.rules.scope_from
            ));
        }
    }

    // Conflicts, instance by instance within the horizon.
    let mut conflicts: Vec<(Instance, &Busy)> = Vec::new();
    for i in r.instances {
        if t.enabled && i.start > horizon_end {
            continue;
        }
        if let Some(b) = r.busy.iter().find(|b| b.start < i.end && i.start < b.end) {
            conflicts.push((*i, b));
        }
    }
    let describe = |(i, b): &(Instance, &Busy)| {
        format!("{} conflicts with {}", local(r.tz, i.start), b.holder)
    };
    let mut declined_instances = Vec::new();
    if conflicts.is_empty() {
        passed.push("no conflicts".into());
    } else if r.series && conflicts.len() <= r.max_conflict_instances as usize {
        passed.push(format!(
            "{} conflicting instance(s), within max_conflict_instances {}",
            conflicts.len(),
            r.max_conflict_instances
        ));
        for c in &conflicts {
            declined_instances.push(c.0.original_time);
        }
    } else {
        let list: Vec<String> = conflicts.iter().map(describe).collect();
        if r.series {
            reasons.push(format!(
                "{} instance(s) conflict, more than max_conflict_instances {}: {}",
                conflicts.len(),
                r.max_conflict_instances,
                list.join("; ")
            ));
        } else {
            reasons.push(format!("conflict: {}", list.join("; ")));
        }
    }

    if !reasons.is_empty() {
        return Outcome {
            verdict: Verdict::Declined,
            reasons,
            passed,
            declined_instances: Vec::new(),
        };
    }
    let notes: Vec<String> = conflicts
        .iter()
        .map(|c| format!("instance declined: {}", describe(c)))
        .collect();
    let a = &r.rules.approval;
    let longest = r
        .instances
        .iter()
        .map(|i| i.end - i.start)
        .max()
        .unwrap_or(0);
    if a.enabled && (a.every_booking || longest as f64 > a.meeting_duration_hours * 3600.0) {
        let mut reasons = vec![format!(
            "needs approval ({}; approvers {}; rule from {}): decide with `feishu-bridge rooms approve|decline`",
            if a.every_booking {
                "every booking".to_owned()
            } else {
                format!("longer than {} h", a.meeting_duration_hours)
            },
            if a.approvers.is_empty() {
                "none listed".to_owned()
            } else {
                a.approvers.join(", ")
            },
            r.rules.approval_from
        )];
        reasons.extend(notes);
        return Outcome {
            verdict: Verdict::Pending,
            reasons,
            passed,
            declined_instances,
        };
    }
    Outcome {
        verdict: Verdict::Accepted,
        reasons: notes,
        passed,
        declined_instances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ApprovalRule, ScopeRule, TimeRule};

    const NOW: i64 = 1_760_000_000; // 2025-10-09 16:53:20 +08:00
    const DAY: i64 = 86_400;

    fn at(day: i64, h: i64, m: i64) -> i64 {
        // Midnight of 2025-10-10 in Asia/Shanghai.
        1_760_025_600 + day * DAY + h * 3600 + m * 60
    }

    fn rules() -> Effective {
        Effective {
            time: TimeRule {
                enabled: true,
                days_in_advance: 30,
                start_s: 8 * 3600,
                end_s: 20 * 3600,
                max_duration_hours: 2,
                ..TimeRule::default()
            },
            ..Effective::default()
        }
    }

    fn run(inst: &[Instance], rules: &Effective, busy: &[Busy], series: bool, max: u32) -> Outcome {
        decide(&Request {
            instances: inst,
            series,
            organizer: &["ou_a".to_owned()],
            organizer_departments: None,
            rules,
            tz: chrono_tz::Asia::Shanghai,
            now: NOW,
            busy,
            max_conflict_instances: max,
        })
    }

    fn one(s: i64, e: i64) -> Vec<Instance> {
        vec![Instance {
            start: s,
            end: e,
            original_time: 0,
        }]
    }

    #[test]
    fn a_free_slot_inside_every_rule_is_accepted() {
        let o = run(&one(at(1, 10, 0), at(1, 11, 0)), &rules(), &[], false, 0);
        assert_eq!(o.verdict, Verdict::Accepted, "{o:?}");
    }

    #[test]
    fn each_rule_declines_with_its_reason() {
        let r = rules();
        let o = run(&one(at(1, 7, 0), at(1, 8, 0)), &r, &[], false, 0);
        assert!(o.reasons[0].contains("daily window 08:00–20:00"), "{o:?}");
        let o = run(&one(at(1, 10, 0), at(1, 13, 0)), &r, &[], false, 0);
        assert!(o.reasons[0].contains("max_duration 2 h"), "{o:?}");
        let o = run(&one(at(40, 10, 0), at(40, 11, 0)), &r, &[], false, 0);
        assert!(o.reasons[0].contains("horizon"), "{o:?}");
        let mut r2 = r.clone();
        r2.scope = ScopeRule {
            allow_all: false,
            users: vec![vec!["ou_b".into()]],
            ..ScopeRule::default()
        };
        let o = run(&one(at(1, 10, 0), at(1, 11, 0)), &r2, &[], false, 0);
        assert!(o.reasons[0].contains("may not book"), "{o:?}");
        assert_eq!(o.verdict, Verdict::Declined);
        let busy = [Busy {
            start: at(1, 10, 30),
            end: at(1, 12, 0),
            holder: "x".into(),
        }];
        let o = run(&one(at(1, 10, 0), at(1, 11, 0)), &r, &busy, false, 0);
        assert!(o.reasons[0].starts_with("conflict"), "{o:?}");
        // Touching is not overlapping.
        let busy = [Busy {
            start: at(1, 11, 0),
            end: at(1, 12, 0),
            holder: "x".into(),
        }];
        assert_eq!(
            run(&one(at(1, 10, 0), at(1, 11, 0)), &r, &busy, false, 0).verdict,
            Verdict::Accepted
        );
        // Ending at midnight is inside a window ending at 24:00.
        let mut r3 = r.clone();
        r3.time.end_s = 86_400;
        assert_eq!(
            run(&one(at(1, 23, 0), at(2, 0, 0)), &r3, &[], false, 0).verdict,
            Verdict::Accepted
        );
    }

    #[test]
    fn series_follow_max_conflict_instances() {
        let inst: Vec<Instance> = (1..=4)
            .map(|d| Instance {
                start: at(d, 10, 0),
                end: at(d, 11, 0),
                original_time: at(d, 10, 0),
            })
            .collect();
        let busy = [Busy {
            start: at(2, 10, 0),
            end: at(2, 11, 0),
            holder: "x".into(),
        }];
        let o = run(&inst, &rules(), &busy, true, 0);
        assert_eq!(o.verdict, Verdict::Declined, "{o:?}");
        let o = run(&inst, &rules(), &busy, true, 1);
        assert_eq!(o.verdict, Verdict::Accepted, "{o:?}");
        assert_eq!(o.declined_instances, vec![at(2, 10, 0)]);
    }

    #[test]
    fn approval_makes_it_pending() {
        let mut r = rules();
        r.approval = ApprovalRule {
            enabled: true,
            every_booking: true,
            meeting_duration_hours: 99.0,
            approvers: vec!["ou_boss".into()],
        };
        let o = run(&one(at(1, 10, 0), at(1, 11, 0)), &r, &[], false, 0);
        assert_eq!(o.verdict, Verdict::Pending);
        r.approval.every_booking = false;
        r.approval.meeting_duration_hours = 1.5;
        assert_eq!(
            run(&one(at(1, 10, 0), at(1, 11, 0)), &r, &[], false, 0).verdict,
            Verdict::Accepted
        );
    }
}
