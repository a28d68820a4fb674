//! What one sink sees of a calendar: its filters (which events it gets)
//! and transforms (how they look), the same for every kind of sink. Pure:
//! the binary reads them from the generic keys of a `[[sinks]]` table, the
//! engine applies them per sink before content hashing, so a changed
//! transform rewrites exactly the events whose output changes.

pub use regex::Regex;

/// A title pattern (the `regex` crate's syntax), or why it is not one.
pub fn title_regex(pattern: &str) -> Result<Regex, String> {
    // The regex crate's message spans lines (a caret under the spot).
    Regex::new(pattern).map_err(|e| e.to_string().replace('\n', " "))
}

use crate::model::{CanonicalEvent, Class, Party};

/// Which events a sink gets. Every filter is off by default.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Skip events this Feishu user (open id) declined: the syncing
    /// identity (Feishu's listing does not say who "you" are).
    pub declined_by: Option<String>,
    /// Skip free (transparent) events.
    pub skip_free: bool,
    /// Skip private events.
    pub skip_private: bool,
    /// Skip all-day events.
    pub skip_all_day: bool,
    /// Only events whose title matches.
    pub include_title: Option<Regex>,
    /// Skip events whose title matches.
    pub exclude_title: Option<Regex>,
    /// The sink's time frame, in days before and after now (either side
    /// unbounded when unset). Outside it nothing is written or deleted.
    pub past_days: Option<u32>,
    pub future_days: Option<u32>,
}

/// What happens to reminders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reminders {
    #[default]
    Keep,
    Drop,
    /// One reminder this many minutes before the start.
    Default(i64),
}

/// A new title.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Title {
    #[default]
    Keep,
    Prefix(String),
    Template(Template),
}

/// How events look in a sink. Everything is kept by default.
#[derive(Debug, Clone, Default)]
pub struct Transform {
    pub title: Title,
    /// The title of private events (instead of theirs).
    pub private_title: Option<String>,
    pub drop_description: bool,
    pub drop_location: bool,
    pub drop_attendees: bool,
    pub reminders: Reminders,
    /// Drop the Feishu app link (URL, and the `Feishu:` line of targets that
    /// write it into the description).
    pub drop_app_link: bool,
}

/// A sink's filters and transforms.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub filter: Filter,
    pub transform: Transform,
}

/// A title template: text with `{title}`, `{location}` and `{organizer}`;
/// `{{` and `}}` are braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Title,
    Location,
    Organizer,
}

impl std::str::FromStr for Template {
    type Err = String;

    /// Parsed by hand: three placeholders and two escapes need no template
    /// engine, and a bad one must be named in the config error.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("{{{name} is not closed")),
                        }
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(match name.as_str() {
                        "title" => Piece::Title,
                        "location" => Piece::Location,
                        "organizer" => Piece::Organizer,
                        other => {
                            return Err(format!(
                                "{{{other}}} is not a placeholder (one of {{title}}, {{location}}, {{organizer}})"
                            ));
                        }
                    });
                }
                '}' => return Err("a lone } (write }} for a brace)".to_owned()),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if !pieces.contains(&Piece::Title) {
            return Err("it has no {title}".to_owned());
        }
        Ok(Template(pieces))
    }
}

impl Template {
    fn render(&self, ev: &CanonicalEvent) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Title => out.push_str(&ev.summary),
                Piece::Location => {
                    out.push_str(ev.location.as_deref().unwrap_or_default());
                }
                Piece::Organizer => {
                    out.push_str(ev.organizer.as_ref().map_or("", party_name));
                }
            }
        }
        out
    }
}

fn party_name(p: &Party) -> &str {
    p.name.as_deref().unwrap_or(&p.address)
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.declined_by.is_none()
            && !self.skip_free
            && !self.skip_private
            && !self.skip_all_day
            && self.include_title.is_none()
            && self.exclude_title.is_none()
            && self.past_days.is_none()
            && self.future_days.is_none()
    }

    /// The filter that leaves `ev` out of the sink (its config key), if one
    /// does. The time frame is not one of them: see [`View::frame`].
    pub fn excludes(&self, ev: &CanonicalEvent) -> Option<&'static str> {
        if let Some(me) = &self.declined_by
            && declined(ev, me)
        {
            return Some("declined_by");
        }
        if self.skip_free && ev.transparent {
            return Some("skip_free");
        }
        if self.skip_private && ev.class == Some(Class::Private) {
            return Some("skip_private");
        }
        if self.skip_all_day && ev.start.is_date() {
            return Some("skip_all_day");
        }
        if let Some(re) = &self.include_title
            && !re.is_match(&ev.summary)
        {
            return Some("include_title");
        }
        if let Some(re) = &self.exclude_title
            && re.is_match(&ev.summary)
        {
            return Some("exclude_title");
        }
        None
    }
}

/// Whether the Feishu user `open_id` is an attendee of `ev` who declined.
fn declined(ev: &CanonicalEvent, open_id: &str) -> bool {
    let address = crate::map::feishu_user_address(open_id);
    ev.attendees
        .iter()
        .any(|a| a.address == address && a.partstat == crate::model::PartStat::Declined)
}

impl Transform {
    fn is_empty(&self) -> bool {
        self.title == Title::Keep
            && self.private_title.is_none()
            && !self.drop_description
            && !self.drop_location
            && !self.drop_attendees
            && self.reminders == Reminders::Keep
            && !self.drop_app_link
    }

    /// `ev` as the sink shows it.
    pub fn apply(&self, ev: &CanonicalEvent) -> CanonicalEvent {
        let mut out = ev.clone();
        match (&self.private_title, ev.class) {
            (Some(t), Some(Class::Private)) => out.summary = t.clone(),
            _ => match &self.title {
                Title::Keep => {}
                Title::Prefix(p) => out.summary = format!("{p}{}", ev.summary),
                Title::Template(t) => out.summary = t.render(ev),
            },
        }
        if self.drop_description {
            out.description.clear();
        }
        if self.drop_location {
            // Blank, not absent: no location is shown, not even the rooms
            // (`rooms::display_location`).
            out.location = Some(String::new());
            out.geo = None;
        }
        if self.drop_attendees {
            out.attendees.clear();
            out.organizer = None;
        }
        match self.reminders {
            Reminders::Keep => {}
            Reminders::Drop => out.alarms.clear(),
            Reminders::Default(m) => out.alarms = vec![m],
        }
        if self.drop_app_link {
            out.url = None;
        }
        out
    }
}

impl View {
    /// Nothing filtered, nothing transformed: the sink sees the calendar
    /// as it is (and the engine copies nothing).
    pub fn is_identity(&self) -> bool {
        self.filter.is_empty() && self.transform.is_empty()
    }

    /// The sink's own time frame, `(past_days, future_days)`, when it has one.
    pub fn frame(&self) -> Option<(Option<u32>, Option<u32>)> {
        (self.filter.past_days.is_some() || self.filter.future_days.is_some())
            .then_some((self.filter.past_days, self.filter.future_days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKey;
    use crate::model::{CuType, EventTime, PartStat, Role};

    fn ev() -> CanonicalEvent {
        CanonicalEvent {
            key: EventKey::new("u", 0).unwrap(),
            start: EventTime::Utc(0),
            end: EventTime::Utc(3600),
            rrule: None,
            rrule_bound: None,
            summary: "Standup".into(),
            description: "Notes".into(),
            location: Some("Lobby".into()),
            geo: None,
            url: Some("https://applink.feishu.cn/x".into()),
            conference: None,
            status: None,
            class: None,
            transparent: false,
            alarms: vec![15, 5],
            organizer: Some(Party {
                address: "mailto:ou_a@user.feishu.invalid".into(),
                name: Some("Ann".into()),
                cutype: CuType::Individual,
                partstat: PartStat::Accepted,
                role: Role::Required,
            }),
            attendees: vec![Party {
                address: "mailto:ou_me@user.feishu.invalid".into(),
                name: Some("Me".into()),
                cutype: CuType::Individual,
                partstat: PartStat::Declined,
                role: Role::Required,
            }],
            created: None,
        }
    }

    #[test]
    fn each_filter_names_itself() {
        let e = ev();
        let f = |f: Filter| f.excludes(&e);
        assert_eq!(f(Filter::default()), None);
        assert_eq!(
            f(Filter {
                declined_by: Some("ou_me".into()),
                ..Filter::default()
            }),
            Some("declined_by")
        );
        assert_eq!(
            f(Filter {
                declined_by: Some("ou_a".into()),
                ..Filter::default()
            }),
            None
        );
        assert_eq!(
            f(Filter {
                include_title: Some(Regex::new("^Review").unwrap()),
                ..Filter::default()
            }),
            Some("include_title")
        );
        assert_eq!(
            f(Filter {
                exclude_title: Some(Regex::new("(?i)standup").unwrap()),
                ..Filter::default()
            }),
            Some("exclude_title")
        );
        let mut p = ev();
        p.class = Some(Class::Private);
        p.transparent = true;
        p.start = EventTime::Date(chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap());
        let skip = |f: Filter| f.excludes(&p);
        assert_eq!(
            skip(Filter {
                skip_private: true,
                ..Filter::default()
            }),
            Some("skip_private")
        );
        assert_eq!(
            skip(Filter {
                skip_free: true,
                ..Filter::default()
            }),
            Some("skip_free")
        );
        assert_eq!(
            skip(Filter {
                skip_all_day: true,
                ..Filter::default()
            }),
            Some("skip_all_day")
        );
    }

    #[test]
    fn transforms_change_only_what_they_name() {
        let e = ev();
        let t = Transform {
            title: Title::Template(
                "[F] {title} @ {location} by {organizer} {{x}}"
                    .parse()
                    .unwrap(),
            ),
            ..Transform::default()
        };
        assert_eq!(t.apply(&e).summary, "[F] Standup @ Lobby by Ann {x}");
        let t = Transform {
            title: Title::Prefix("Feishu: ".into()),
            drop_description: true,
            drop_location: true,
            drop_attendees: true,
            reminders: Reminders::Default(10),
            drop_app_link: true,
            ..Transform::default()
        };
        let out = t.apply(&e);
        assert_eq!(out.summary, "Feishu: Standup");
        assert!(out.description.is_empty() && out.url.is_none());
        assert_eq!(crate::rooms::display_location(&out), None);
        assert!(out.attendees.is_empty() && out.organizer.is_none());
        assert_eq!(out.alarms, [10]);
        let drop = Transform {
            reminders: Reminders::Drop,
            private_title: Some("Busy".into()),
            title: Title::Prefix("x ".into()),
            ..Transform::default()
        };
        assert!(drop.apply(&e).alarms.is_empty());
        assert_eq!(drop.apply(&e).summary, "x Standup");
        let mut p = ev();
        p.class = Some(Class::Private);
        assert_eq!(drop.apply(&p).summary, "Busy");
        assert!(Transform::default().is_empty());
    }

    #[test]
    fn bad_templates_are_named() {
        for (t, want) in [
            ("{title", "not closed"),
            ("{when} {title}", "{when} is not a placeholder"),
            ("}", "lone }"),
            ("no title", "no {title}"),
        ] {
            let e = t.parse::<Template>().unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
