//! The generic keys of every `[[sinks]]` table: `[sinks.filter]` and
//! `[sinks.transform]`. They are read here, before the kind's module sees
//! the table (which never sees them), so every kind has them with no code
//! of its own; the engine applies them per sink (`bridge_core::view`).

use bridge_core::view::{Filter, Regex, Reminders, Template, Title, Transform, View, title_regex};
use serde::Deserialize;

/// `[sinks.filter]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterToml {
    declined_by: Option<String>,
    #[serde(default)]
    skip_free: bool,
    #[serde(default)]
    skip_private: bool,
    #[serde(default)]
    skip_all_day: bool,
    include_title: Option<String>,
    exclude_title: Option<String>,
    past_days: Option<u32>,
    future_days: Option<u32>,
}

/// `[sinks.transform]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransformToml {
    title_prefix: Option<String>,
    title_template: Option<String>,
    private_title: Option<String>,
    #[serde(default)]
    drop_description: bool,
    #[serde(default)]
    drop_location: bool,
    #[serde(default)]
    drop_attendees: bool,
    #[serde(default)]
    reminders: RemindersToml,
    reminder_minutes: Option<i64>,
    #[serde(default)]
    app_link: AppLinkToml,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RemindersToml {
    #[default]
    Keep,
    Drop,
    Default,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AppLinkToml {
    #[default]
    Keep,
    Drop,
}

/// Takes `filter` and `transform` out of a `[[sinks]]` table and reads
/// them; `path` is the table's key path (`sinks[1]`). Every problem is
/// pushed; `None` when there was one.
pub(crate) fn take(
    table: &mut toml::Table,
    path: &str,
    problems: &mut Vec<String>,
) -> Option<View> {
    let before = problems.len();
    // Every key is optional, so what is left once the offending keys are
    // taken out still reads and its semantic problems join the others.
    let filter = match table.remove("filter") {
        None => Some(FilterToml::default()),
        Some(v) => super::read::read_rest::<FilterToml>(v, &format!("{path}.filter"), problems)
            .map(|(f, _)| f),
    };
    let transform = match table.remove("transform") {
        None => Some(TransformToml::default()),
        Some(v) => {
            super::read::read_rest::<TransformToml>(v, &format!("{path}.transform"), problems)
                .map(|(t, _)| t)
        }
    };
    let filter = filter.and_then(|f| filter_of(f, &format!("{path}.filter"), problems));
    let transform = transform.and_then(|t| transform_of(t, &format!("{path}.transform"), problems));
    if problems.len() > before {
        return None;
    }
    Some(View {
        filter: filter?,
        transform: transform?,
    })
}

fn regex(v: Option<String>, key: &str, problems: &mut Vec<String>) -> Option<Regex> {
    let s = v?;
    match title_regex(&s) {
        Ok(r) => Some(r),
        Err(msg) => {
            problems.push(format!("{key}: {s:?} is not a regular expression: {msg}"));
            None
        }
    }
}

fn filter_of(f: FilterToml, path: &str, problems: &mut Vec<String>) -> Option<Filter> {
    if let Some(id) = &f.declined_by
        && id.trim().is_empty()
    {
        problems.push(format!(
            "{path}.declined_by: empty; the open id (ou_...) of the syncing Feishu user"
        ));
    }
    let include_title = regex(f.include_title, &format!("{path}.include_title"), problems);
    let exclude_title = regex(f.exclude_title, &format!("{path}.exclude_title"), problems);
    Some(Filter {
        declined_by: f.declined_by,
        skip_free: f.skip_free,
        skip_private: f.skip_private,
        skip_all_day: f.skip_all_day,
        include_title,
        exclude_title,
        past_days: f.past_days,
        future_days: f.future_days,
    })
}

fn transform_of(t: TransformToml, path: &str, problems: &mut Vec<String>) -> Option<Transform> {
    let title = match (t.title_prefix, t.title_template) {
        (Some(_), Some(_)) => {
            problems.push(format!(
                "{path}.title_prefix and {path}.title_template: set one or neither"
            ));
            Title::Keep
        }
        (Some(p), None) => Title::Prefix(p),
        (None, Some(tpl)) => match tpl.parse::<Template>() {
            Ok(t) => Title::Template(t),
            Err(e) => {
                problems.push(format!("{path}.title_template: {tpl:?}: {e}"));
                Title::Keep
            }
        },
        (None, None) => Title::Keep,
    };
    let reminders = match (t.reminders, t.reminder_minutes) {
        (RemindersToml::Default, Some(m)) if (0..=40_320).contains(&m) => Reminders::Default(m),
        (RemindersToml::Default, Some(m)) => {
            problems.push(format!(
                "{path}.reminder_minutes: {m} is not between 0 and 40320 (four weeks)"
            ));
            Reminders::Keep
        }
        (RemindersToml::Default, None) => {
            problems.push(format!(
                "{path}.reminder_minutes: missing (required with reminders = \"default\")"
            ));
            Reminders::Keep
        }
        (_, Some(_)) => {
            problems.push(format!(
                "{path}.reminder_minutes: only with reminders = \"default\""
            ));
            Reminders::Keep
        }
        (RemindersToml::Keep, None) => Reminders::Keep,
        (RemindersToml::Drop, None) => Reminders::Drop,
    };
    Some(Transform {
        title,
        private_title: t.private_title,
        drop_description: t.drop_description,
        drop_location: t.drop_location,
        drop_attendees: t.drop_attendees,
        reminders,
        drop_app_link: matches!(t.app_link, AppLinkToml::Drop),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bridge_core::view::{Reminders, Title};

    use crate::config::{ConfigError, Loaded, parse};

    const FEISHU: &str = "[feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\n";

    fn load(sinks: &str) -> Result<Loaded, ConfigError> {
        parse(&format!("{FEISHU}{sinks}"), Path::new("test.toml"))
    }

    #[test]
    fn every_key_is_read_for_any_kind() {
        let l = load(
            "[[sinks]]\nkind = \"ics\"\ndir = \"o\"\n\
             [sinks.filter]\ndeclined_by = \"ou_me\"\nskip_free = true\nskip_private = true\n\
             skip_all_day = true\ninclude_title = \"^A\"\nexclude_title = \"B$\"\n\
             past_days = 7\nfuture_days = 30\n\
             [sinks.transform]\ntitle_template = \"[F] {title}\"\nprivate_title = \"Busy\"\n\
             drop_description = true\ndrop_location = true\ndrop_attendees = true\n\
             reminders = \"default\"\nreminder_minutes = 10\napp_link = \"drop\"\n\
             [[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\n\
             client_id = \"c\"\nclient_secret = \"s\"\n\
             [sinks.transform]\ntitle_prefix = \"Feishu: \"\nreminders = \"drop\"\n",
        )
        .unwrap();
        let v = &l.sinks[0].view;
        let f = &v.filter;
        assert_eq!(f.declined_by.as_deref(), Some("ou_me"));
        assert!(f.skip_free && f.skip_private && f.skip_all_day);
        assert_eq!(f.include_title.as_ref().unwrap().as_str(), "^A");
        assert_eq!(f.exclude_title.as_ref().unwrap().as_str(), "B$");
        assert_eq!((f.past_days, f.future_days), (Some(7), Some(30)));
        let t = &v.transform;
        assert!(matches!(t.title, Title::Template(_)));
        assert_eq!(t.private_title.as_deref(), Some("Busy"));
        assert!(t.drop_description && t.drop_location && t.drop_attendees && t.drop_app_link);
        assert_eq!(t.reminders, Reminders::Default(10));
        let g = &l.sinks[1].view;
        assert_eq!(g.transform.title, Title::Prefix("Feishu: ".into()));
        assert_eq!(g.transform.reminders, Reminders::Drop);
        assert!(g.filter.include_title.is_none());
    }

    #[test]
    fn no_keys_is_the_identity() {
        let l = load("[[sinks]]\nkind = \"ics\"\ndir = \"o\"\n").unwrap();
        assert!(l.sinks[0].view.is_identity());
    }

    #[test]
    fn every_problem_at_once_with_its_key_path() {
        let e = load(
            "[[sinks]]\nkind = \"ics\"\ndir = \"o\"\n\
             [[sinks]]\nkind = \"ics\"\ndir = \"p\"\n\
             [sinks.filter]\nskip_fre = true\ninclude_title = \"(\"\npast_days = -1\n\
             declined_by = \" \"\n\
             [sinks.transform]\ntitle_prefix = \"x\"\ntitle_template = \"{when}\"\n\
             reminders = \"sometimes\"\nreminder_minutes = 5\n",
        )
        .unwrap_err();
        let p = e.problems.join("\n");
        for want in [
            "sinks[1].filter.skip_fre: unknown key; did you mean \"skip_free\"?",
            "sinks[1].filter.past_days: expected a whole number",
            "sinks[1].filter.include_title: \"(\" is not a regular expression",
            "sinks[1].filter.declined_by: empty",
            "sinks[1].transform.reminders: \"sometimes\" is not one of \"keep\", \"drop\", \"default\"",
            "sinks[1].transform.title_prefix and sinks[1].transform.title_template: set one or neither",
        ] {
            assert!(p.contains(want), "{want}\nnot in:\n{p}");
        }
        assert!(!p.contains("sinks[0]"), "{p}");
    }

    #[test]
    fn template_and_reminder_problems() {
        let e = load(
            "[[sinks]]\nkind = \"ics\"\ndir = \"o\"\n[sinks.transform]\n\
             title_template = \"{when} {title}\"\nreminders = \"default\"\n",
        )
        .unwrap_err();
        let p = e.problems.join("\n");
        assert!(
            p.contains(
                "sinks[0].transform.title_template: \"{when} {title}\": {when} is not a placeholder"
            ),
            "{p}"
        );
        assert!(
            p.contains("sinks[0].transform.reminder_minutes: missing (required with reminders = \"default\")"),
            "{p}"
        );
    }
}
