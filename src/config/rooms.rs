//! `[rooms]`: the bridge as a third-party room system (README "Meeting
//! rooms"). Read on its own after `[[sinks]]`, whose entries `sink` names.

use bridge_sinks::config::{RoomPick, RoomPlace};
use serde::Deserialize;

use super::{Configured, read_table};

/// The table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsToml {
    /// The zone of the booking rules' times of day.
    timezone: String,
    #[serde(default = "yes")]
    reply: bool,
    #[serde(default)]
    max_conflict_instances: u32,
    #[serde(default = "default_refresh_minutes")]
    refresh_minutes: u64,
    #[serde(default = "default_retry_base_seconds")]
    retry_base_seconds: u64,
}

fn yes() -> bool {
    true
}
fn default_refresh_minutes() -> u64 {
    60
}
fn default_retry_base_seconds() -> u64 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MapToml {
    room_id: Option<String>,
    custom_room_id: Option<String>,
    level_id: Option<String>,
    sink: Option<String>,
    mailbox: Option<String>,
    #[serde(alias = "calendar")]
    calendar_id: Option<String>,
}

/// Which rooms an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomSelector {
    Room(String),
    Custom(String),
    Level(String),
}

/// One `[[rooms.map]]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct RoomMap {
    /// `rooms.map[i]`.
    pub(crate) label: String,
    pub(crate) selector: RoomSelector,
    /// Index into the configuration's `[[sinks]]`.
    pub(crate) sink: Option<usize>,
    /// The room mailbox (EWS, Graph sinks).
    pub(crate) mailbox: Option<String>,
    /// The room's calendar id (Google sinks).
    pub(crate) calendar_id: Option<String>,
}

/// `[rooms]`, validated.
#[derive(Debug, Clone)]
pub(crate) struct RoomsConfig {
    pub(crate) timezone: chrono_tz::Tz,
    pub(crate) reply: bool,
    pub(crate) max_conflict_instances: u32,
    pub(crate) refresh_minutes: u64,
    pub(crate) retry_base_seconds: u64,
    pub(crate) maps: Vec<RoomMap>,
}

/// Reads and validates `[rooms]`; problems carry their key paths.
pub(crate) fn read(
    raw: toml::Value,
    sinks: &[Configured],
    problems: &mut Vec<String>,
) -> Option<RoomsConfig> {
    // `[[rooms.map]]` entries are read one by one, so that a mistake in one
    // hides neither the others nor the section's own problems.
    let before = problems.len();
    let mut raw = raw;
    let raw_maps = match raw.as_table_mut().and_then(|t| t.remove("map")) {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            problems.push(format!(
                "rooms.map: expected an array of tables ([[rooms.map]]), found {}",
                other.type_str()
            ));
            Vec::new()
        }
    };
    let t: Option<RoomsToml> = read_table(raw, "rooms", problems);
    let entries: Vec<(usize, MapToml)> = raw_maps
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| Some((i, read_table(v, &format!("rooms.map[{i}]"), problems)?)))
        .collect();
    let t = t?;
    let timezone = match t.timezone.parse::<chrono_tz::Tz>() {
        Ok(tz) => Some(tz),
        Err(_) => {
            problems.push(format!(
                "rooms.timezone: {:?} is not an IANA time zone (e.g. \"Asia/Shanghai\")",
                t.timezone
            ));
            None
        }
    };
    if t.refresh_minutes == 0 {
        problems.push("rooms.refresh_minutes: must be at least 1".to_owned());
    }
    if t.retry_base_seconds == 0 {
        problems.push("rooms.retry_base_seconds: must be at least 1".to_owned());
    }
    if entries.is_empty() && problems.len() == before {
        problems.push(
            "rooms.map: no room mapped (add [[rooms.map]] with room_id, custom_room_id or level_id)"
                .to_owned(),
        );
    }
    let mut maps = Vec::new();
    let mut places: std::collections::BTreeMap<(usize, String), String> =
        std::collections::BTreeMap::new();
    for (i, m) in &entries {
        let label = format!("rooms.map[{i}]");
        let given: Vec<(&str, &String)> = [
            ("room_id", &m.room_id),
            ("custom_room_id", &m.custom_room_id),
            ("level_id", &m.level_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let selector = match given.as_slice() {
            [] => {
                problems.push(format!(
                    "{label}: needs one of room_id, custom_room_id or level_id"
                ));
                None
            }
            [(k, v)] if v.trim().is_empty() => {
                problems.push(format!("{label}.{k}: empty"));
                None
            }
            [("room_id", v)] => {
                if !v.starts_with("omm_") {
                    problems.push(format!(
                        "{label}.room_id: {v:?} is not a room id (they start with \"omm_\")"
                    ));
                }
                Some(RoomSelector::Room((*v).clone()))
            }
            [("custom_room_id", v)] => Some(RoomSelector::Custom((*v).clone())),
            [("level_id", v)] => {
                if !v.starts_with("omb_") && v.as_str() != "0" {
                    problems.push(format!(
                        "{label}.level_id: {v:?} is not a room level id (\"omb_…\", or \"0\" for the whole tenant)"
                    ));
                }
                Some(RoomSelector::Level((*v).clone()))
            }
            more => {
                let keys: Vec<&str> = more.iter().map(|(k, _)| *k).collect();
                problems.push(format!(
                    "{label}: {} given; use exactly one",
                    keys.join(" and ")
                ));
                None
            }
        };
        let sink = match &m.sink {
            None => None,
            Some(name) => {
                let hits: Vec<usize> = sinks
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        let t = &c.target;
                        t.label() == *name
                            || t.id() == *name
                            || t.name()
                                .is_some_and(|n| format!("{}:{n}", t.kind()) == *name)
                    })
                    .map(|(i, _)| i)
                    .collect();
                match hits.as_slice() {
                    [i] => Some(*i),
                    [] => {
                        let known: Vec<String> = sinks
                            .iter()
                            .map(|c| format!("{:?}", c.target.label()))
                            .collect();
                        problems.push(format!(
                            "{label}.sink: {name:?} names no [[sinks]] entry (configured: {})",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ));
                        None
                    }
                    _ => {
                        problems.push(format!(
                            "{label}.sink: {name:?} names more than one [[sinks]] entry; use its id (e.g. \"ics:<dir>\")"
                        ));
                        None
                    }
                }
            }
        };
        if let Some(i) = sink {
            check_target(&label, &sinks[i].target, selector.as_ref(), m, problems);
            // One room per mailbox or calendar: two rooms in one calendar
            // would read each other's bookings as foreign busy times.
            if let Some(place) = m.mailbox.as_ref().or(m.calendar_id.as_ref()) {
                if let Some(other) = places.get(&(i, place.to_lowercase())) {
                    problems.push(format!(
                        "{label}: {place:?} on this sink is already the target of {other}; each room needs its own"
                    ));
                } else {
                    places.insert((i, place.to_lowercase()), label.clone());
                }
            }
        } else if m.mailbox.is_some() || m.calendar_id.is_some() {
            problems.push(format!(
                "{label}: mailbox and calendar_id need a sink that uses them"
            ));
        }
        if let Some(selector) = selector {
            maps.push(RoomMap {
                label,
                selector,
                sink,
                mailbox: m.mailbox.clone(),
                calendar_id: m.calendar_id.clone(),
            });
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(RoomsConfig {
        timezone: timezone?,
        reply: t.reply,
        max_conflict_instances: t.max_conflict_instances,
        refresh_minutes: t.refresh_minutes,
        retry_base_seconds: t.retry_base_seconds,
        maps,
    })
}

/// A mapping key and its value.
type Key<'a> = (&'a str, &'a Option<String>);

/// What a sink needs of a room mapping, by its module's [`RoomPlace`]: one
/// file or feed per room (ICS, feeds), or the room's own calendar named by
/// a key (a Google calendar id, an EWS or Graph room mailbox), one room per
/// entry; then what its module checks itself.
fn check_target(
    label: &str,
    target: &crate::sinks::Target,
    selector: Option<&RoomSelector>,
    m: &MapToml,
    problems: &mut Vec<String>,
) {
    let kind = target.kind();
    let config = target.config();
    let pick = selector.map(|s| match s {
        RoomSelector::Room(r) => RoomPick::Room(r),
        RoomSelector::Custom(_) | RoomSelector::Level(_) => RoomPick::Other,
    });
    let both: [Key<'_>; 2] = [("mailbox", &m.mailbox), ("calendar_id", &m.calendar_id)];
    let (needs, why) = match config.room_place() {
        Some(RoomPlace::OfTheSink { why }) => (None, why),
        Some(RoomPlace::Named { key, why }) => (both.iter().find(|(k, _)| *k == key), why),
        None => {
            problems.push(format!(
                "{label}.sink: room bookings cannot be written to a {kind} sink"
            ));
            return;
        }
    };
    let a = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    for (k, v) in &both {
        if v.is_some() && needs.is_none_or(|(n, _)| n != k) {
            problems.push(format!(
                "{label}.{k}: does not apply to {a} {kind} sink ({why})"
            ));
        }
    }
    let Some((k, v)) = needs else {
        config.check_room(label, pick, None, problems);
        return;
    };
    match v.as_deref().map(str::trim) {
        None => problems.push(format!(
            "{label}.{k}: required for {a} {kind} sink (the room's {})",
            if *k == "mailbox" {
                "mailbox, e.g. \"room-a@example.com\""
            } else {
                "calendar id, e.g. \"c_abc@group.calendar.google.com\""
            }
        )),
        Some("") => problems.push(format!("{label}.{k}: empty")),
        Some(v) => config.check_room(label, pick, Some(v), problems),
    }
    if matches!(selector, Some(RoomSelector::Level(_))) {
        problems.push(format!(
            "{label}.level_id: {a} {kind} sink takes one room per entry (its own {k}); use room_id or custom_room_id"
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    const HEAD: &str = "[feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\ncalendars = [\"c1\"]\n\n[[sinks]]\nkind = \"ics\"\ndir = \"/tmp/x\"\n\n";

    #[test]
    fn a_valid_rooms_section() {
        let l = parse(
            &format!(
                "{HEAD}[rooms]\ntimezone = \"Asia/Shanghai\"\nreply = false\nmax_conflict_instances = 2\n\n\
                 [[rooms.map]]\nroom_id = \"omm_1\"\nsink = \"ics\"\n\n[[rooms.map]]\nlevel_id = \"omb_2\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        let r = l.rooms.unwrap();
        assert!(!r.reply);
        assert_eq!(r.max_conflict_instances, 2);
        assert_eq!(r.maps[0].selector, RoomSelector::Room("omm_1".into()));
        assert_eq!(r.maps[0].sink, Some(0));
        assert_eq!(r.maps[1].selector, RoomSelector::Level("omb_2".into()));
        assert_eq!(r.maps[1].sink, None);
    }

    #[test]
    fn every_problem_with_its_key_path() {
        let e = parse(
            &format!(
                "{HEAD}[rooms]\ntimezone = \"Mars/Olympus\"\nrefresh_minutes = 0\n\n\
                 [[rooms.map]]\nroom_id = \"x\"\ncustom_room_id = \"y\"\n\n\
                 [[rooms.map]]\nroom_id = \"omm_1\"\nsink = \"ews:exchange\"\nmailbox = \"a@b\"\n\n\
                 [[rooms.map]]\nlevel_id = \"omm_3\"\nsink = \"ics\"\nmailbox = \"a@b\"\n\n\
                 [[rooms.map]]\nsink = \"ics\"\nflavour = 1\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "rooms.timezone: \"Mars/Olympus\" is not an IANA time zone",
            "rooms.refresh_minutes: must be at least 1",
            "rooms.map[0]: room_id and custom_room_id given; use exactly one",
            "rooms.map[1].sink: \"ews:exchange\" names no [[sinks]] entry",
            "rooms.map[2].level_id: \"omm_3\" is not a room level id",
            "rooms.map[2].mailbox: does not apply to an ics sink",
            "rooms.map[3].flavour: unknown key",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    const REPLICAS: &str = "[[sinks]]\nkind = \"google\"\nname = \"g\"\ncalendar_id = \"primary\"\nclient_id = \"x.apps.googleusercontent.com\"\nclient_secret = \"s\"\n\n\
        [[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"https://mail.example.com/EWS/Exchange.asmx\"\nmailbox = \"m@example.com\"\nauth = \"basic\"\nusername = \"u\"\npassword = \"p\"\nimpersonation = true\n\n\
        [[sinks]]\nkind = \"graph\"\nname = \"gr\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"s\"\nmailbox = \"m@example.com\"\n\n\
        [[sinks]]\nkind = \"feed\"\nname = \"doors\"\ncalendars = \"all\"\n\n\
        [[sinks]]\nkind = \"feed\"\nname = \"some\"\ncalendars = [\"c1\"]\ncombine = true\n\n";

    #[test]
    fn replica_and_feed_room_targets() {
        let ok = parse(
            &format!(
                "{HEAD}{REPLICAS}[rooms]\ntimezone = \"UTC\"\n\
                 [[rooms.map]]\nroom_id = \"omm_1\"\nsink = \"google:g\"\ncalendar_id = \"c_1@group.calendar.google.com\"\n\
                 [[rooms.map]]\nroom_id = \"omm_2\"\nsink = \"ews:ex\"\nmailbox = \"room-2@example.com\"\n\
                 [[rooms.map]]\ncustom_room_id = \"B-3\"\nsink = \"graph:gr\"\nmailbox = \"room-3@example.com\"\n\
                 [[rooms.map]]\nlevel_id = \"omb_4\"\nsink = \"feed:doors\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = ok.rooms.unwrap();
        assert_eq!(
            r.maps[0].calendar_id.as_deref(),
            Some("c_1@group.calendar.google.com")
        );
        assert_eq!(r.maps[1].mailbox.as_deref(), Some("room-2@example.com"));
        assert_eq!(r.maps[3].sink, Some(4));

        let e = parse(
            &format!(
                "{HEAD}{REPLICAS}[rooms]\ntimezone = \"UTC\"\n\
                 [[rooms.map]]\nroom_id = \"omm_1\"\nsink = \"google:g\"\n\
                 [[rooms.map]]\nroom_id = \"omm_2\"\nsink = \"ews:ex\"\nmailbox = \"room-two\"\ncalendar_id = \"x\"\n\
                 [[rooms.map]]\nlevel_id = \"omb_3\"\nsink = \"graph:gr\"\nmailbox = \"room-3@example.com\"\n\
                 [[rooms.map]]\nroom_id = \"omm_4\"\nsink = \"graph:gr\"\nmailbox = \"ROOM-3@example.com\"\n\
                 [[rooms.map]]\nroom_id = \"omm_5\"\nsink = \"feed:doors\"\nmailbox = \"a@b\"\n\
                 [[rooms.map]]\nroom_id = \"omm_6\"\nsink = \"ews:ex\"\n\
                 [[rooms.map]]\nroom_id = \"omm_7\"\nsink = \"feed:some\"\n"
            ),
            Path::new("t.toml"),
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "rooms.map[0].calendar_id: required for a google sink",
            "rooms.map[1].mailbox: \"room-two\" is not an SMTP address",
            "rooms.map[1].calendar_id: does not apply to an ews sink",
            "rooms.map[2].level_id: a graph sink takes one room per entry",
            "rooms.map[3]: \"ROOM-3@example.com\" on this sink is already the target of rooms.map[2]",
            "rooms.map[4].mailbox: does not apply to a feed sink",
            "rooms.map[5].mailbox: required for an ews sink",
            "rooms.map[6].sink: feed \"some\" has combine = true",
            "rooms.map[6].sink: feed \"some\" does not publish \"omm_7\"",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let env = |name: &str| name.starts_with("FEISHU_").then(|| "x".to_owned());
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rooms.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let l = crate::config::parse_with_env(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.rooms.unwrap().maps.len(), 2);
    }

    #[test]
    fn rooms_need_pushes() {
        let e = parse(
            &format!(
                "{}delivery = \"poll\"\n[rooms]\ntimezone = \"UTC\"\n[[rooms.map]]\nroom_id = \"omm_1\"\n",
                HEAD.replace("[[sinks]]\nkind = \"ics\"\ndir = \"/tmp/x\"\n\n", "")
            ),
            Path::new("t.toml"),
        )
        .unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with("rooms: room events arrive by push only")),
            "{:?}",
            e.problems
        );
    }
}
