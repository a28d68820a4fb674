//! Filters and transforms per sink through the engine: every filter and
//! transform on its own, the other sink unaffected, a changed transform
//! rewriting exactly the affected events, and a filter change held by the
//! deletion budget.

use std::collections::BTreeMap;
use std::sync::Arc;

use bridge_core::feishu::Event;
use bridge_core::plan::Rules;
use bridge_core::view::{Filter, Reminders, Title, Transform, View, title_regex};
use bridge_core::{CanonicalEvent, EventKey, Privacy};
use bridge_engine::{CalendarMeta, CalendarReport, Engine, EngineConfig, Sink};
use bridge_sinks::memory::{Held, MemoryReplica};
use bridge_store::Store;

pub(crate) use crate::static_source::StaticSource;

pub(crate) const NOW: i64 = 1_790_000_000;
pub(crate) const DAY: i64 = 86_400;

pub(crate) fn cal() -> CalendarMeta {
    CalendarMeta {
        id: "cal1".into(),
        name: "Team".into(),
        timezone: Some("UTC".into()),
    }
}

fn ev(uid: &str, summary: &str, start: i64, extra: serde_json::Value) -> Event {
    let mut v = serde_json::json!({
        "event_id": format!("{uid}_0"),
        "summary": summary,
        "description": "Agenda",
        "location": {"name": "Lobby"},
        "start_time": {"timestamp": start.to_string(), "timezone": "UTC"},
        "end_time": {"timestamp": (start + 3600).to_string(), "timezone": "UTC"},
        "status": "confirmed",
        "reminders": [{"minutes": 15}],
        "app_link": format!("https://applink.feishu.cn/client/calendar/event/detail?key={uid}"),
        "attendees": [
            {"type": "user", "attendee_id": "user_me", "user_id": "ou_me", "display_name": "Me", "rsvp_status": "accept"},
            {"type": "resource", "attendee_id": "resource_a", "room_id": "omm_a", "display_name": "Room A", "rsvp_status": "accept"},
        ],
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    serde_json::from_value(v).unwrap()
}

/// The calendar: one event per filter to catch, a series with a declined
/// occurrence, and plain events.
fn calendar() -> Vec<Event> {
    let declined = serde_json::json!([
        {"type": "user", "attendee_id": "user_me", "user_id": "ou_me", "display_name": "Me", "rsvp_status": "decline"},
    ]);
    vec![
        ev("plain", "Design review", NOW + DAY, serde_json::json!({})),
        ev(
            "declined",
            "Vendor pitch",
            NOW + DAY,
            serde_json::json!({"attendees": declined}),
        ),
        ev(
            "free",
            "Focus time",
            NOW + DAY,
            serde_json::json!({"free_busy_status": "free"}),
        ),
        ev(
            "private",
            "Doctor",
            NOW + DAY,
            serde_json::json!({"visibility": "private"}),
        ),
        ev(
            "allday",
            "Holiday",
            0,
            serde_json::json!({"start_time": {"date": "2026-09-21"}, "end_time": {"date": "2026-09-21"}}),
        ),
        ev("lunch", "Team lunch", NOW + 2 * DAY, serde_json::json!({})),
        ev(
            "old",
            "Design review (old)",
            NOW - 100 * DAY,
            serde_json::json!({}),
        ),
        ev(
            "far",
            "Design review (far)",
            NOW + 400 * DAY,
            serde_json::json!({}),
        ),
        ev(
            "series",
            "Standup",
            NOW - 2 * DAY,
            serde_json::json!({"recurrence": "FREQ=DAILY;COUNT=10"}),
        ),
        // One occurrence of the series, declined.
        ev(
            "series",
            "Standup",
            NOW + DAY,
            serde_json::json!({
                "event_id": format!("series_{}", NOW + DAY),
                "is_exception": true,
                "attendees": declined,
            }),
        ),
    ]
}

struct Setup {
    source: Arc<StaticSource>,
    memory: Arc<MemoryReplica>,
    plain: Arc<MemoryReplica>,
    store: Store,
}

impl Setup {
    async fn new() -> Self {
        Self {
            source: Arc::new(StaticSource::in_calendar(cal(), calendar())),
            memory: Arc::new(MemoryReplica::new("filtered", Privacy::Full)),
            plain: Arc::new(MemoryReplica::new("plain", Privacy::Full)),
            store: Store::in_memory().await.unwrap(),
        }
    }

    /// An engine over the same store and sinks, the filtered sink with `view`.
    fn engine(&self, view: View, rules: Rules) -> Engine {
        let mut views = BTreeMap::new();
        views.insert(self.memory.id().to_owned(), view);
        Engine::new(
            self.source.clone(),
            vec![
                self.memory.clone() as Arc<dyn Sink>,
                self.plain.clone() as Arc<dyn Sink>,
            ],
            self.store.clone(),
            EngineConfig {
                rules,
                views,
                ..EngineConfig::default()
            },
        )
    }

    async fn pass(&self, view: View) -> CalendarReport {
        let rules = Rules {
            allow_mass_delete: true,
            ..Rules::default()
        };
        let r = self
            .engine(view, rules)
            .reconcile(None, false, NOW)
            .await
            .unwrap();
        r.into_iter().next().unwrap()
    }
}

fn uids(m: &MemoryReplica) -> Vec<String> {
    let mut v: Vec<String> = m
        .items()
        .iter()
        .filter(|(_, h)| matches!(h, Held::Event(_)))
        .map(|(k, _)| k.to_string())
        .collect();
    v.sort();
    v
}

fn held(m: &MemoryReplica, id: &str) -> CanonicalEvent {
    match m.items().get(&EventKey::parse(id).unwrap()) {
        Some(Held::Event(e)) => (**e).clone(),
        other => panic!("{id}: {other:?}"),
    }
}

fn filter(f: Filter) -> View {
    View {
        filter: f,
        ..View::default()
    }
}

fn transform(t: Transform) -> View {
    View {
        transform: t,
        ..View::default()
    }
}

/// Runs one filter; returns the event ids (keys) the filtered sink lacks.
async fn left_out(f: Filter) -> (Vec<String>, CalendarReport, Setup) {
    let s = Setup::new().await;
    let r = s.pass(filter(f)).await;
    let all = uids(&s.plain);
    let shown = uids(&s.memory);
    let missing = all.into_iter().filter(|k| !shown.contains(k)).collect();
    (missing, r, s)
}

#[tokio::test]
async fn no_view_shows_everything() {
    let s = Setup::new().await;
    s.pass(View::default()).await;
    assert_eq!(uids(&s.memory), uids(&s.plain));
    assert_eq!(uids(&s.plain).len(), 10);
}

#[tokio::test]
async fn declined_by_skips_declined_events_and_hides_a_declined_occurrence() {
    let (missing, r, s) = left_out(Filter {
        declined_by: Some("ou_me".into()),
        ..Filter::default()
    })
    .await;
    assert_eq!(
        missing,
        ["declined_0".to_owned(), format!("series_{}", NOW + DAY)]
    );
    // The occurrence is cancelled in the sink (an EXDATE), not left over.
    let key = EventKey::parse(&format!("series_{}", NOW + DAY)).unwrap();
    assert_eq!(s.memory.items().get(&key), Some(&Held::Cancelled));
    assert_eq!(r.sinks[0].filtered, 2);
    assert_eq!(r.sinks[1].filtered, 0);
}

#[tokio::test]
async fn skip_free_private_and_all_day() {
    for (f, want) in [
        (
            Filter {
                skip_free: true,
                ..Filter::default()
            },
            "free_0",
        ),
        (
            Filter {
                skip_private: true,
                ..Filter::default()
            },
            "private_0",
        ),
        (
            Filter {
                skip_all_day: true,
                ..Filter::default()
            },
            "allday_0",
        ),
    ] {
        let (missing, _, _) = left_out(f).await;
        assert_eq!(missing, [want]);
    }
}

#[tokio::test]
async fn title_regexes_include_and_exclude() {
    let (missing, _, _) = left_out(Filter {
        include_title: Some(title_regex("^Design review").unwrap()),
        ..Filter::default()
    })
    .await;
    assert_eq!(
        missing,
        [
            "allday_0".to_owned(),
            "declined_0".into(),
            "free_0".into(),
            "lunch_0".into(),
            "private_0".into(),
            "series_0".into(),
            format!("series_{}", NOW + DAY),
        ]
    );
    let (missing, _, _) = left_out(Filter {
        exclude_title: Some(title_regex("(?i)lunch|standup").unwrap()),
        ..Filter::default()
    })
    .await;
    // The series goes with its exception.
    assert_eq!(
        missing,
        [
            "lunch_0".to_owned(),
            "series_0".into(),
            format!("series_{}", NOW + DAY)
        ]
    );
}

#[tokio::test]
async fn a_time_frame_leaves_out_what_is_outside_and_never_deletes_it() {
    let (missing, _, s) = left_out(Filter {
        past_days: Some(30),
        future_days: Some(90),
        ..Filter::default()
    })
    .await;
    assert_eq!(missing, ["far_0", "old_0"]);
    // Held items that drift outside the frame stay: a sink given everything
    // first, then a frame, deletes nothing.
    let s2 = Setup {
        source: s.source.clone(),
        memory: s.plain.clone(),
        plain: Arc::new(MemoryReplica::new("other", Privacy::Full)),
        store: s.store.clone(),
    };
    let r = s2
        .pass(filter(Filter {
            past_days: Some(30),
            future_days: Some(90),
            ..Filter::default()
        }))
        .await;
    assert_eq!(r.sinks[0].deleted, 0, "{:?}", r.sinks[0]);
    assert!(uids(&s.plain).contains(&"old_0".to_owned()));
}

#[tokio::test]
async fn each_transform_changes_its_field_only_in_its_sink() {
    let s = Setup::new().await;
    s.pass(transform(Transform {
        title: Title::Prefix("[Feishu] ".into()),
        private_title: Some("Busy".into()),
        drop_description: true,
        drop_location: true,
        drop_attendees: true,
        reminders: Reminders::Default(5),
        drop_app_link: true,
    }))
    .await;
    let e = held(&s.memory, "plain_0");
    assert_eq!(e.summary, "[Feishu] Design review");
    assert!(e.description.is_empty() && e.url.is_none());
    // No location, not even the room the event has.
    assert_eq!(bridge_core::rooms::display_location(&e), None);
    assert!(e.attendees.is_empty());
    assert_eq!(e.alarms, [5]);
    assert_eq!(held(&s.memory, "private_0").summary, "Busy");
    let p = held(&s.plain, "plain_0");
    assert_eq!(p.summary, "Design review");
    assert_eq!(p.description, "Agenda");
    assert_eq!(p.location.as_deref(), Some("Lobby"));
    assert!(p.url.is_some() && !p.attendees.is_empty());
    assert_eq!(p.alarms, [15]);

    // A template; reminders dropped.
    let s = Setup::new().await;
    s.pass(transform(Transform {
        title: Title::Template("{title} @ {location}".parse().unwrap()),
        reminders: Reminders::Drop,
        ..Transform::default()
    }))
    .await;
    let e = held(&s.memory, "plain_0");
    assert_eq!(e.summary, "Design review @ Lobby");
    assert!(e.alarms.is_empty());
}

#[tokio::test]
async fn a_changed_transform_rewrites_exactly_the_affected_events() {
    let s = Setup::new().await;
    s.pass(View::default()).await;
    let r = s.pass(View::default()).await;
    assert_eq!(r.sinks[0].updated, 0);
    // Only the private event has another title now.
    let r = s
        .pass(transform(Transform {
            private_title: Some("Busy".into()),
            ..Transform::default()
        }))
        .await;
    assert_eq!(
        (r.sinks[0].updated, r.sinks[0].created),
        (1, 0),
        "{:?}",
        r.sinks[0]
    );
    assert_eq!(r.sinks[1].updated, 0);
    // The description of every event (the exception included): all of them.
    let r = s
        .pass(transform(Transform {
            private_title: Some("Busy".into()),
            drop_description: true,
            ..Transform::default()
        }))
        .await;
    assert_eq!(r.sinks[0].updated, 10, "{:?}", r.sinks[0]);
    // Unchanged transform: nothing.
    let r = s
        .pass(transform(Transform {
            private_title: Some("Busy".into()),
            drop_description: true,
            ..Transform::default()
        }))
        .await;
    assert_eq!(r.sinks[0].updated, 0);
}

#[tokio::test]
async fn a_filter_change_is_held_by_the_deletion_budget() {
    let s = Setup::new().await;
    s.pass(View::default()).await;
    let held_before = uids(&s.memory);
    assert_eq!(held_before.len(), 10);
    // Leave out most of the calendar with a budget of 2 deletions.
    let only_lunch = filter(Filter {
        include_title: Some(title_regex("lunch").unwrap()),
        ..Filter::default()
    });
    let tight = Rules {
        max_delete_count: 2,
        ..Rules::default()
    };
    let r = s
        .engine(only_lunch.clone(), tight)
        .reconcile(None, false, NOW)
        .await
        .unwrap();
    assert!(r[0].blocked.is_some(), "{r:?}");
    assert_eq!(r[0].sinks[0].deleted, 0);
    assert_eq!(uids(&s.memory), held_before, "nothing deleted");
    // Explicitly allowed: the filtered sink loses them, the other keeps all.
    let r = s
        .engine(
            only_lunch,
            Rules {
                allow_mass_delete: true,
                ..tight
            },
        )
        .reconcile(None, false, NOW)
        .await
        .unwrap();
    assert!(r[0].blocked.is_none());
    assert_eq!(uids(&s.memory), ["lunch_0"]);
    assert_eq!(uids(&s.plain).len(), 10);
}
