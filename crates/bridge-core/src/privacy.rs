//! Privacy profiles: how much of an event a target shows. One pure
//! projection shared by every target (the ICS renderer, Google, ...), so a
//! profile means the same everywhere.
//!
//! - `full`: everything;
//! - `redacted`: times, recurrence, summary (private events: "Busy"), status
//!   and transparency;
//! - `busy`: times, recurrence and transparency, summary "Busy".
//!
//! The class (public / private) is kept under every profile: it only ever
//! hides more (Google's `visibility`); whether a target writes it as a
//! property of its own (ICS `CLASS`) is the target's rule.

use std::borrow::Cow;

use crate::model::{CanonicalEvent, Class};

/// How much of each event a target shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privacy {
    /// Everything.
    #[default]
    Full,
    /// Times, summary and status only; private events show as "Busy".
    Redacted,
    /// Times and recurrence only; every summary is "Busy".
    Busy,
}

impl std::str::FromStr for Privacy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Privacy::Full),
            "redacted" => Ok(Privacy::Redacted),
            "busy" => Ok(Privacy::Busy),
            other => Err(format!(
                "privacy {other:?} is not one of \"full\", \"redacted\", \"busy\""
            )),
        }
    }
}

/// The summary shown in place of a hidden one.
pub const BUSY: &str = "Busy";

/// What `privacy` lets a target see of `ev`. Borrowed under `full`.
pub fn project(ev: &CanonicalEvent, privacy: Privacy) -> Cow<'_, CanonicalEvent> {
    if privacy == Privacy::Full {
        return Cow::Borrowed(ev);
    }
    let summary = match privacy {
        Privacy::Redacted if ev.class != Some(Class::Private) => ev.summary.clone(),
        _ => BUSY.to_owned(),
    };
    Cow::Owned(CanonicalEvent {
        key: ev.key.clone(),
        start: ev.start,
        end: ev.end,
        rrule: ev.rrule.clone(),
        rrule_bound: ev.rrule_bound,
        summary,
        description: String::new(),
        location: None,
        geo: None,
        url: None,
        conference: None,
        status: if privacy == Privacy::Busy {
            None
        } else {
            ev.status
        },
        class: ev.class,
        transparent: ev.transparent,
        alarms: Vec::new(),
        organizer: None,
        attendees: Vec::new(),
        created: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::EventKey;
    use crate::model::{EventTime, Status};

    fn event(class: Option<Class>) -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::new("u", 0).unwrap(),
            start: EventTime::Utc(1_700_000_000),
            end: EventTime::Utc(1_700_003_600),
            rrule: Some("FREQ=DAILY".to_owned()),
            rrule_bound: None,
            summary: "Board meeting".to_owned(),
            description: "Agenda".to_owned(),
            location: Some("Room 1".to_owned()),
            geo: Some((1.0, 2.0)),
            url: Some("https://example.invalid".to_owned()),
            conference: None,
            status: Some(Status::Tentative),
            class,
            transparent: true,
            alarms: vec![15],
            organizer: None,
            attendees: Vec::new(),
            created: Some(1),
        }
    }

    #[test]
    fn full_is_the_event_itself() {
        let ev = event(None);
        assert!(matches!(project(&ev, Privacy::Full), Cow::Borrowed(_)));
    }

    #[test]
    fn redacted_keeps_times_summary_and_status() {
        let p = project(&event(Some(Class::Public)), Privacy::Redacted).into_owned();
        assert_eq!(p.summary, "Board meeting");
        assert_eq!(p.status, Some(Status::Tentative));
        assert_eq!(p.rrule.as_deref(), Some("FREQ=DAILY"));
        assert!(p.transparent);
        assert_eq!(
            (
                p.description.as_str(),
                p.location,
                p.url,
                p.alarms.len(),
                p.created
            ),
            ("", None, None, 0, None)
        );
        let private = project(&event(Some(Class::Private)), Privacy::Redacted).into_owned();
        assert_eq!(private.summary, BUSY);
        assert_eq!(private.class, Some(Class::Private));
    }

    #[test]
    fn busy_keeps_times_only() {
        let p = project(&event(None), Privacy::Busy).into_owned();
        assert_eq!(p.summary, BUSY);
        assert_eq!(p.status, None);
        assert_eq!(p.start, EventTime::Utc(1_700_000_000));
        assert!(p.geo.is_none());
    }

    #[test]
    fn privacy_names() {
        assert_eq!("busy".parse::<Privacy>(), Ok(Privacy::Busy));
        assert!(
            "secret"
                .parse::<Privacy>()
                .unwrap_err()
                .contains("\"secret\"")
        );
    }
}
