//! Meeting rooms as every target shows them (ICS, Google, and the Exchange
//! targets): pure functions of the canonical event.
//!
//! A Feishu room is a `resource` attendee (CUTYPE=ROOM). Its booking is
//! asynchronous: `needs_action` while Feishu books it, `accept` when booked,
//! `decline` when the booking failed (feishu-api.md §11). A room is shown as
//! booked only when it is: a pending or failed booking carries its state in
//! its label, e.g. `Room A (booking pending)`.

use crate::model::{CanonicalEvent, CuType, PartStat, Party};

/// The state of a room's booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Booking {
    Booked,
    /// Feishu is still booking it (or waits for an approval).
    Pending,
    /// The booking failed (approval refused, restrictions, taken).
    Failed,
}

impl Booking {
    fn of(p: &Party) -> Booking {
        match p.partstat {
            PartStat::Accepted => Booking::Booked,
            PartStat::Declined => Booking::Failed,
            PartStat::NeedsAction | PartStat::Tentative => Booking::Pending,
        }
    }
}

/// One room of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room<'a> {
    /// Its display name (the room id when Feishu gave none).
    pub name: &'a str,
    pub booking: Booking,
}

impl Room<'_> {
    /// The name, marked when the booking is not (yet) done.
    pub fn label(&self) -> String {
        match self.booking {
            Booking::Booked => self.name.to_owned(),
            Booking::Pending => format!("{} (booking pending)", self.name),
            Booking::Failed => format!("{} (booking failed)", self.name),
        }
    }
}

/// The rooms of an event, in Feishu's order.
pub fn rooms(ev: &CanonicalEvent) -> impl Iterator<Item = Room<'_>> {
    ev.attendees
        .iter()
        .filter(|p| p.cutype == CuType::Room)
        .map(|p| Room {
            name: p.name.as_deref().unwrap_or_else(|| room_id(&p.address)),
            booking: Booking::of(p),
        })
}

/// `omm_x` of `mailto:omm_x@room.feishu.invalid`.
fn room_id(address: &str) -> &str {
    let a = address
        .strip_prefix("mailto:")
        .or_else(|| address.strip_prefix("MAILTO:"))
        .unwrap_or(address);
    a.split_once('@').map_or(a, |(id, _)| id)
}

/// The location a target shows: the event's own location, or, when it has
/// none, its rooms that are booked or being booked (labelled), joined with
/// `"; "`. A failed booking is never a location. A blank location (what the
/// `drop_location` transform leaves; mapping never makes one) means no
/// location at all, rooms included.
pub fn display_location(ev: &CanonicalEvent) -> Option<String> {
    match ev.location.as_deref() {
        Some(loc) if loc.trim().is_empty() => return None,
        Some(loc) => return Some(loc.to_owned()),
        None => {}
    }
    let labels: Vec<String> = rooms(ev)
        .filter(|r| r.booking != Booking::Failed)
        .map(|r| r.label())
        .collect();
    (!labels.is_empty()).then(|| labels.join("; "))
}

/// The lines a description lists the rooms with (`Room: Room A`, one per
/// room, failed bookings included and marked); empty without rooms.
pub fn room_lines(ev: &CanonicalEvent) -> Vec<String> {
    rooms(ev).map(|r| format!("Room: {}", r.label())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventTime, Role};
    use crate::{EventKey, model::CanonicalEvent};

    fn party(name: Option<&str>, id: &str, cutype: CuType, partstat: PartStat) -> Party {
        Party {
            address: format!("mailto:{id}@room.feishu.invalid"),
            name: name.map(str::to_owned),
            cutype,
            partstat,
            role: Role::Required,
        }
    }

    fn event(location: Option<&str>, attendees: Vec<Party>) -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::new("u", 0).unwrap(),
            start: EventTime::Utc(0),
            end: EventTime::Utc(3600),
            rrule: None,
            rrule_bound: None,
            summary: "Review".into(),
            description: String::new(),
            location: location.map(str::to_owned),
            geo: None,
            url: None,
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: Vec::new(),
            organizer: None,
            attendees,
            created: None,
        }
    }

    #[test]
    fn booked_rooms_become_the_location_and_pending_ones_are_marked() {
        let ev = event(
            None,
            vec![
                party(
                    Some("Alice"),
                    "ou_a",
                    CuType::Individual,
                    PartStat::Accepted,
                ),
                party(Some("Room A"), "omm_a", CuType::Room, PartStat::Accepted),
                party(Some("Room B"), "omm_b", CuType::Room, PartStat::NeedsAction),
                party(Some("Room C"), "omm_c", CuType::Room, PartStat::Declined),
                party(None, "omm_d", CuType::Room, PartStat::Accepted),
            ],
        );
        assert_eq!(
            display_location(&ev).as_deref(),
            Some("Room A; Room B (booking pending); omm_d")
        );
        assert_eq!(
            room_lines(&ev),
            [
                "Room: Room A",
                "Room: Room B (booking pending)",
                "Room: Room C (booking failed)",
                "Room: omm_d"
            ]
        );
    }

    #[test]
    fn the_event_location_wins_and_a_failed_booking_is_never_a_location() {
        let rooms = vec![party(
            Some("Room A"),
            "omm_a",
            CuType::Room,
            PartStat::Accepted,
        )];
        assert_eq!(
            display_location(&event(Some("Lobby"), rooms.clone())).as_deref(),
            Some("Lobby")
        );
        // A blank location (a transform dropped it): no location at all.
        assert_eq!(display_location(&event(Some("  "), rooms)), None);
        let failed = vec![party(
            Some("Room C"),
            "omm_c",
            CuType::Room,
            PartStat::Declined,
        )];
        assert_eq!(display_location(&event(None, failed)), None);
        assert_eq!(display_location(&event(None, Vec::new())), None);
    }
}
