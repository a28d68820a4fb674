//! Where a room's accepted bookings are written: the seam.
//!
//! [`RoomCalendar`] is what the room logic needs of a target: publish the
//! room's accepted bookings (the whole set, so a freed slot disappears) and,
//! where the target can say so, the room calendar's own busy times.
//!
//! Two implementations: [`ProjectionRoom`] (any [`Projection`], the ICS
//! target or a feed, publishes the room as one busy-only calendar, which is
//! also the room's feed for door displays) and
//! [`crate::replica::ReplicaRoom`] (Google calendars, EWS and Graph room
//! mailboxes: each booking an event of the room's calendar, and
//! [`RoomCalendar::busy`] answered from Google freeBusy or Graph
//! `getSchedule`).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bridge_core::Item;
use bridge_core::feishu::{Event, TimeInfo, UnixSeconds};
use bridge_target::{CalendarMeta, Projection, ProjectionInput};

use crate::decide::Busy;

/// One accepted instance to show on the room's calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booked {
    /// Stable per instance: `<uid>_<original_time>`.
    pub id: String,
    pub start: i64,
    pub end: i64,
}

/// A room's target.
#[async_trait]
pub trait RoomCalendar: Send + Sync + fmt::Debug {
    /// How `rooms list` names it.
    fn describe(&self) -> String;

    /// Writes the room's accepted bookings (all of them).
    async fn publish(
        &self,
        room_id: &str,
        room_name: &str,
        timezone: &str,
        booked: &[Booked],
        now: i64,
    ) -> Result<(), String>;

    /// The target's own busy periods over `[from, to)`, when it can say
    /// (`None`: it cannot; a projection only shows what we wrote).
    async fn busy(
        &self,
        _room_id: &str,
        _from: i64,
        _to: i64,
    ) -> Option<Result<Vec<Busy>, String>> {
        None
    }
}

/// A [`Projection`] showing a room as one busy-only calendar.
#[derive(Debug, Clone)]
pub struct ProjectionRoom {
    target: Arc<dyn Projection>,
    what: String,
}

impl ProjectionRoom {
    /// `target` should render busy-only (the binary builds the ICS target
    /// with `privacy = "busy"` for rooms).
    pub fn new(target: Arc<dyn Projection>, what: impl Into<String>) -> Self {
        Self {
            target,
            what: what.into(),
        }
    }
}

/// The room as a calendar, and its accepted instances as busy-only items:
/// one standalone event each, under `<id>_0` (with `-` for `_` in the id,
/// so the id is one uid).
pub(crate) fn busy_calendar(
    room_id: &str,
    room_name: &str,
    timezone: &str,
    booked: &[Booked],
) -> Result<(CalendarMeta, Vec<Item>), String> {
    let events: Vec<Event> = booked
        .iter()
        .map(|b| Event {
            event_id: Some(format!("{}_0", b.id.replace('_', "-"))),
            summary: Some("Busy".into()),
            start_time: Some(time(b.start, timezone)),
            end_time: Some(time(b.end, timezone)),
            ..Event::default()
        })
        .collect();
    let mapped = bridge_core::map_events(&events);
    if let Some(e) = mapped.errors.first() {
        return Err(format!("cannot render booking: {e}"));
    }
    let calendar = CalendarMeta {
        id: room_id.to_owned(),
        name: room_name.to_owned(),
        timezone: Some(timezone.to_owned()),
    };
    Ok((calendar, mapped.items))
}

fn time(secs: i64, tz: &str) -> TimeInfo {
    TimeInfo {
        date: None,
        timestamp: Some(UnixSeconds(secs)),
        timezone: Some(tz.to_owned()),
    }
}

#[async_trait]
impl RoomCalendar for ProjectionRoom {
    fn describe(&self) -> String {
        self.what.clone()
    }

    async fn publish(
        &self,
        room_id: &str,
        room_name: &str,
        timezone: &str,
        booked: &[Booked],
        now: i64,
    ) -> Result<(), String> {
        // Each instance becomes a standalone busy event: the room shows
        // what was accepted, instance by instance.
        let (calendar, items) = busy_calendar(room_id, room_name, timezone, booked)?;
        let series = bridge_core::series::group(&items);
        self.target
            .publish(ProjectionInput {
                calendar: &calendar,
                series: &series,
                revisions: &HashMap::new(),
                changed: true,
                now,
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
