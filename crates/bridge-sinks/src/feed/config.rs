//! `[[sinks]] kind = "feed"`: the TOML table, its validation, construction
//! and health check.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use bridge_core::Privacy;
use bridge_target::StateStore;
use serde::Deserialize;

use super::{Calendars, FeedBook, FeedSink};
use crate::config::{
    Check, Ctx, StoredToken, TargetToml, ValidatedTarget, check_name, privacy, privacy_name,
};

/// The commented `[[sinks]]` table `init` writes.
pub const STARTER: &str = r#"[[sinks]]
kind = "feed"
name = "team"                     # sink id "feed:team"; served at /feeds/<secret>.ics by `run`
calendars = "all"                 # or a list of calendar ids
privacy = "busy"                  # full | redacted | busy
# combine = true                  # one feed of all its calendars
"#;

/// `calendars = "all"` or a list of ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CalendarsToml {
    Word(String),
    List(Vec<String>),
}

/// The table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sink id in the store is `feed:<name>`.
    pub name: String,
    /// Which source calendars get a feed (one feed per calendar).
    #[serde(default = "default_calendars")]
    pub calendars: CalendarsToml,
    /// One feed (one address) of all of them instead.
    #[serde(default)]
    pub combine: bool,
    #[serde(default = "default_privacy")]
    pub privacy: String,
    /// REFRESH-INTERVAL and X-PUBLISHED-TTL, in minutes (0: left out).
    #[serde(default = "default_refresh")]
    pub refresh_interval_minutes: u32,
}

fn default_calendars() -> CalendarsToml {
    CalendarsToml::Word("all".to_owned())
}
fn default_privacy() -> String {
    "full".to_owned()
}
fn default_refresh() -> u32 {
    60
}

/// A validated feed sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub name: String,
    pub calendars: Calendars,
    /// One feed of every calendar (`combine = true`).
    pub combine: bool,
    pub privacy: Privacy,
    pub refresh_minutes: Option<u32>,
}

/// Longest REFRESH-INTERVAL accepted: a week.
const MAX_REFRESH_MINUTES: u32 = 7 * 24 * 60;

impl TargetToml for Config {
    type Validated = Validated;
    const KIND: &'static str = "feed";
    const STARTER: &'static str = STARTER;

    fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
        let mut problems = Vec::new();
        check_name(&self.name, &ctx.key("name"), &mut problems);
        let calendars = match &self.calendars {
            CalendarsToml::Word(w) if w == "all" => Some(Calendars::All),
            CalendarsToml::Word(w) => {
                problems.push(format!(
                    "{}: {w:?} is neither \"all\" nor a list of calendar ids",
                    ctx.key("calendars")
                ));
                None
            }
            CalendarsToml::List(ids) if ids.is_empty() => {
                problems.push(format!(
                    "{}: the list is empty (\"all\" for every calendar)",
                    ctx.key("calendars")
                ));
                None
            }
            CalendarsToml::List(ids) => {
                let mut set = BTreeSet::new();
                for (i, id) in ids.iter().enumerate() {
                    if id.trim().is_empty() {
                        problems.push(format!(
                            "{}: empty calendar id",
                            ctx.key(&format!("calendars[{i}]"))
                        ));
                    } else if !set.insert(id.clone()) {
                        problems.push(format!(
                            "{}: {id:?} is listed twice",
                            ctx.key(&format!("calendars[{i}]"))
                        ));
                    }
                }
                Some(Calendars::List(set))
            }
        };
        if self.refresh_interval_minutes > MAX_REFRESH_MINUTES {
            problems.push(format!(
                "{}: {} is more than a week ({MAX_REFRESH_MINUTES} minutes)",
                ctx.key("refresh_interval_minutes"),
                self.refresh_interval_minutes
            ));
        }
        let privacy = privacy(&self.privacy, &ctx.key("privacy"), &mut problems);
        match (calendars, privacy) {
            (Some(calendars), Some(privacy)) if problems.is_empty() => Ok(Validated {
                name: self.name.clone(),
                calendars,
                combine: self.combine,
                privacy,
                refresh_minutes: Some(self.refresh_interval_minutes).filter(|m| *m > 0),
            }),
            _ => Err(problems),
        }
    }
}

impl Validated {
    /// The sink: tokens kept in `state`, bodies served through `book` and
    /// kept in `cache_dir` (so a restart serves the last good body before
    /// the first pass).
    pub fn build(
        &self,
        state: Arc<dyn StateStore>,
        book: Arc<FeedBook>,
        cache_dir: Option<PathBuf>,
    ) -> FeedSink {
        FeedSink {
            id: self.id(),
            name: self.name.clone(),
            privacy: self.privacy,
            refresh_minutes: self.refresh_minutes,
            calendars: self.calendars.clone(),
            combine: self.combine,
            parts: std::sync::Mutex::default(),
            state,
            book,
            cache_dir,
            rendered: std::sync::Mutex::default(),
            index_lock: tokio::sync::Mutex::const_new(()),
        }
    }
}

/// A built feed sink: the daemon serves it, `feeds list` lists it.
#[derive(Debug)]
struct Built(Arc<FeedSink>);

impl crate::config::BuiltTarget for Built {
    fn sink(&self) -> Arc<dyn bridge_target::Sink> {
        self.0.clone()
    }

    fn feed(&self) -> Option<Arc<FeedSink>> {
        Some(self.0.clone())
    }
}

#[async_trait::async_trait]
impl ValidatedTarget for Validated {
    fn kind(&self) -> &'static str {
        "feed"
    }

    fn build(
        &self,
        env: crate::config::BuildEnv,
    ) -> std::sync::Arc<dyn crate::config::BuiltTarget> {
        let dir = env.data_dir.join("feeds").join(&self.name);
        Arc::new(Built(Arc::new(self.build(env.state, env.feeds, Some(dir)))))
    }

    fn room_place(&self) -> Option<crate::config::RoomPlace> {
        Some(crate::config::RoomPlace::OfTheSink {
            why: "the room is one busy-only feed of the sink",
        })
    }

    /// A room's feed is one address per room: the sink must publish the
    /// room ids (they are the feed's calendar ids) one by one.
    fn check_room(
        &self,
        label: &str,
        pick: Option<crate::config::RoomPick<'_>>,
        _place: Option<&str>,
        problems: &mut Vec<String>,
    ) {
        use crate::config::RoomPick;
        if self.combine {
            problems.push(format!(
                "{label}.sink: feed {:?} has combine = true; a room needs a feed of its own (combine = false)",
                self.name
            ));
        }
        match (&self.calendars, pick) {
            (Calendars::All, _) | (_, None) => {}
            (Calendars::List(ids), Some(RoomPick::Room(r))) if ids.iter().any(|i| i == r) => {}
            (Calendars::List(_), Some(RoomPick::Room(r))) => problems.push(format!(
                "{label}.sink: feed {:?} does not publish {r:?}; add the room id to its calendars",
                self.name
            )),
            (Calendars::List(_), Some(RoomPick::Other)) => problems.push(format!(
                "{label}.sink: feed {:?} lists its calendars, so it cannot publish rooms found by level or custom id; \
                 use calendars = \"all\" or map each room_id",
                self.name
            )),
        }
    }

    /// The feed the daemon serves, or one built for the command.
    fn room(
        &self,
        env: crate::config::RoomEnv,
        _place: Option<&str>,
    ) -> Result<crate::config::RoomTarget, String> {
        let feed = match env.running.and_then(|b| b.feed()) {
            Some(f) => f,
            None => ValidatedTarget::build(self, env.sink)
                .feed()
                .ok_or("a feed sink built as another kind")?,
        };
        Ok(crate::config::RoomTarget::Projection {
            target: feed,
            what: format!(
                "busy-only feed {:?}, one address per room (`feeds list`, calendar = the room id)",
                self.name
            ),
        })
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn label(&self) -> String {
        format!("feed {}", self.name)
    }

    fn explain(&self, _calendar: &str, _remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        vec![format!(
            "ICS feed {}{}, served by the daemon (`feishu-bridge feeds list` gives its address)",
            self.name,
            if self.combine { " (combined)" } else { "" }
        )]
    }

    fn describe(&self) -> String {
        format!(
            "ICS feed {}{} of {}, privacy {} (`feeds list` for its addresses)",
            self.name,
            if self.combine { " (combined)" } else { "" },
            match &self.calendars {
                Calendars::All => "every calendar".to_owned(),
                Calendars::List(ids) => format!("{} calendar(s)", ids.len()),
            },
            privacy_name(self.privacy)
        )
    }

    /// Nothing to reach: the daemon serves it.
    async fn healthcheck(&self, _stored: StoredToken) -> Vec<Check> {
        vec![Check::ok(format!(
            "served by the daemon at /feeds/<token>.ics (privacy {})",
            privacy_name(self.privacy)
        ))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn validate(table: &str) -> Result<Validated, Vec<String>> {
        let read = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let ctx = Ctx::new("sinks[2]", Path::new("/etc"), &read);
        let c: Config = toml::from_str(table).map_err(|e| vec![e.to_string()])?;
        c.validate(&ctx)
    }

    #[test]
    fn defaults_and_lists() {
        let v = validate("name = \"team\"").unwrap();
        assert_eq!(v.calendars, Calendars::All);
        assert_eq!(v.privacy, Privacy::Full);
        assert_eq!(v.refresh_minutes, Some(60));
        assert_eq!(v.id(), "feed:team");
        let v = validate(
            "name = \"b\"\ncalendars = [\"c1\", \"c2\"]\nprivacy = \"busy\"\nrefresh_interval_minutes = 0",
        )
        .unwrap();
        assert_eq!(
            v.calendars,
            Calendars::List(["c1".to_owned(), "c2".to_owned()].into())
        );
        assert_eq!(v.refresh_minutes, None);
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let e = validate(
            "name = \"a b\"\ncalendars = [\"c1\", \"\", \"c1\"]\nprivacy = \"open\"\nrefresh_interval_minutes = 20000",
        )
        .unwrap_err();
        assert_eq!(
            e,
            [
                "sinks[2].name: \"a b\" is not a sink name (letters, digits, '-', '_', '.')",
                "sinks[2].calendars[1]: empty calendar id",
                "sinks[2].calendars[2]: \"c1\" is listed twice",
                "sinks[2].refresh_interval_minutes: 20000 is more than a week (10080 minutes)",
                "sinks[2].privacy: \"open\" is not one of \"full\", \"redacted\", \"busy\"",
            ]
        );
        assert_eq!(
            validate("name = \"a\"\ncalendars = \"some\"").unwrap_err(),
            ["sinks[2].calendars: \"some\" is neither \"all\" nor a list of calendar ids"]
        );
        assert!(validate("name = \"a\"\ncombine = true").unwrap().combine);
        assert!(validate("name = \"a\"\ncombined = true").is_err());
    }
}
