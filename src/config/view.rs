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
    let filter = match table.remove("filter") {
        None => Some(FilterToml::default()),
        Some(v) => super::read::read_table::<FilterToml>(v, &format!("{path}.filter"), problems),
    };
    let transform = match table.remove("transform") {
        None => Some(TransformToml::default()),
        Some(v) => {
            super::read::read_table::<TransformToml>(v, &format!("{path}.transform"), problems)
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
