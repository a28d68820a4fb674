//! The TOML configuration (architecture.md section 6).
//!
//! Loading: TOML is parsed, every string gets `${ENV}` interpolation (with the
//! key path named when a variable is missing), then the typed structs are read
//! with `deny_unknown_fields`, then [`Config::validate`] reports every semantic
//! problem at once. Secrets may be given inline or through a `*_file` variant
//! (the file's content, trimmed); they are redacted in `Debug`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bridge_feishu::auth::Secret;
use serde::Deserialize;

use crate::sinks::Target;

// Explicit paths: the fuzz crate includes this file by `#[path]`, where a
// plain `mod read;` would be looked up next to its own target file.
#[path = "config/read.rs"]
mod read;
#[path = "config/rooms.rs"]
pub(crate) mod rooms;
#[path = "config/view.rs"]
mod view;

pub(crate) use read::read_table;

/// Why a configuration cannot be used; each line names its key path.
#[derive(Debug)]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    pub(crate) problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration {}:", self.file.display())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The sections other than `[[sinks]]` (each read on its own).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) store: StoreConfig,
    pub(crate) feishu: FeishuConfig,
    pub(crate) server: ServerConfig,
    pub(crate) sync: SyncConfig,
}

/// How the engine syncs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncConfig {
    /// Mirror only events from this many days ago (unset: all history).
    pub(crate) window_past_days: Option<u32>,
    /// ... up to this many days ahead (unset: everything).
    pub(crate) window_future_days: Option<u32>,
    /// The deletion budget: more deletions than this in one pass stop it.
    #[serde(default = "default_max_delete_count")]
    pub(crate) max_delete_count: usize,
    /// ... or more than this share of a calendar's events (percent).
    #[serde(default = "default_max_delete_percent")]
    pub(crate) max_delete_percent: f64,
    /// The daemon's periodic full reconcile, in hours.
    #[serde(default = "default_full_reconcile_hours")]
    pub(crate) full_reconcile_hours: u64,
    /// Poll interval when `delivery = "poll"`, in seconds.
    #[serde(default = "default_poll_seconds")]
    pub(crate) poll_seconds: u64,
    /// Quiet time after a hint before its calendar is synced, in ms.
    #[serde(default = "default_debounce_ms")]
    pub(crate) debounce_ms: u64,
    /// ... but at most this long after the first pending hint, in ms.
    #[serde(default = "default_debounce_max_ms")]
    pub(crate) debounce_max_ms: u64,
    /// The first retry of a failed sink write, in seconds (doubling, at most 6 h).
    #[serde(default = "default_retry_base_seconds")]
    pub(crate) retry_base_seconds: u64,
    /// Attendees: `"changed"` reads them for new or changed events, `"none"`
    /// never.
    #[serde(default)]
    pub(crate) attendees: AttendeesSetting,
    /// A full reconcile reads again the attendees of events starting within
    /// this many days (room bookings settle late).
    #[serde(default = "default_attendee_refresh_days")]
    pub(crate) attendee_refresh_days: u32,
    /// ... at most this many events per calendar and pass.
    #[serde(default = "default_attendee_refresh_budget")]
    pub(crate) attendee_refresh_budget: usize,
}

/// `sync.attendees`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AttendeesSetting {
    #[default]
    Changed,
    None,
}

fn default_attendee_refresh_days() -> u32 {
    14
}
fn default_attendee_refresh_budget() -> usize {
    200
}

fn default_debounce_max_ms() -> u64 {
    2000
}
fn default_retry_base_seconds() -> u64 {
    60
}

fn default_debounce_ms() -> u64 {
    250
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            window_past_days: None,
            window_future_days: None,
            max_delete_count: default_max_delete_count(),
            max_delete_percent: default_max_delete_percent(),
            full_reconcile_hours: default_full_reconcile_hours(),
            poll_seconds: default_poll_seconds(),
            debounce_ms: default_debounce_ms(),
            debounce_max_ms: default_debounce_max_ms(),
            retry_base_seconds: default_retry_base_seconds(),
            attendees: AttendeesSetting::default(),
            attendee_refresh_days: default_attendee_refresh_days(),
            attendee_refresh_budget: default_attendee_refresh_budget(),
        }
    }
}

fn default_max_delete_count() -> usize {
    50
}
fn default_max_delete_percent() -> f64 {
    10.0
}
fn default_full_reconcile_hours() -> u64 {
    6
}
fn default_poll_seconds() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreConfig {
    #[serde(default = "default_store_path")]
    pub(crate) path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("state/bridge.redb")
}

/// Which calendars to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Calendars {
    /// The app's (or user's) primary calendar.
    Primary,
    /// Every calendar the identity can list.
    All,
    /// These calendar ids.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for Calendars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::One(s) if s == "primary" => Ok(Calendars::Primary),
            Raw::One(s) if s == "all" => Ok(Calendars::All),
            Raw::One(s) => Err(serde::de::Error::custom(format!(
                "expected \"primary\", \"all\" or a list of calendar ids, found {s:?}"
            ))),
            Raw::Many(v) => Ok(Calendars::List(v)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Delivery {
    LongConnection,
    Webhook,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IdentityConfig {
    Tenant,
    User,
}

fn default_identity() -> IdentityConfig {
    IdentityConfig::Tenant
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeishuConfig {
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// Browser authorize host; derived from `base_url` when absent.
    pub(crate) accounts_url: Option<String>,
    pub(crate) app_id: String,
    pub(crate) app_secret: Option<Secret>,
    pub(crate) app_secret_file: Option<PathBuf>,
    #[serde(default = "default_calendars")]
    pub(crate) calendars: Calendars,
    #[serde(default = "default_delivery")]
    pub(crate) delivery: Delivery,
    /// Whose token reads the calendars: the app's (`tenant`, default) or the
    /// user's authorized with `feishu-bridge auth feishu` (`user`).
    #[serde(default = "default_identity")]
    pub(crate) identity: IdentityConfig,
    pub(crate) encrypt_key: Option<Secret>,
    pub(crate) encrypt_key_file: Option<PathBuf>,
    pub(crate) verification_token: Option<Secret>,
    pub(crate) verification_token_file: Option<PathBuf>,
    /// Where the user tokens are kept until the store holds them.
    pub(crate) user_token_file: Option<PathBuf>,
    #[serde(default = "default_per_second")]
    pub(crate) rate_limit_per_second: u32,
    #[serde(default = "default_per_minute")]
    pub(crate) rate_limit_per_minute: u32,
}

fn default_base_url() -> String {
    bridge_feishu::client::FEISHU_BASE_URL.to_owned()
}
fn default_calendars() -> Calendars {
    Calendars::Primary
}
fn default_delivery() -> Delivery {
    Delivery::LongConnection
}
fn default_per_second() -> u32 {
    50
}
fn default_per_minute() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// Webhook, `/healthz`, `/metrics`.
    #[serde(default = "default_listen")]
    pub(crate) listen: String,
    /// The admin endpoint; must be a loopback address.
    #[serde(default = "default_admin_listen")]
    pub(crate) admin_listen: String,
    /// The public root of the served feeds behind a reverse proxy
    /// (`https://cal.example.com`); without it, `http://<listen>`.
    #[serde(default)]
    pub(crate) public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            public_url: None,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:8789".to_owned()
}

fn default_listen() -> String {
    "127.0.0.1:8787".to_owned()
}

/// Replaces `${NAME}` in every string; `$${` escapes a literal `${`.
type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn interpolate(value: &mut toml::Value, path: &str, env: Env<'_>, problems: &mut Vec<String>) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(v) => *s = v,
            Err(var) => problems.push(format!("{path}: environment variable {var} is not set")),
        },
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), env, problems);
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(v, &p, env, problems);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        if rest[..i].ends_with('$') {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            continue;
        }
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("in {s:?} (unclosed ${{)"));
        };
        let name = &after[..end];
        match env(name) {
            Some(v) => out.push_str(&v),
            None => return Err(name.to_owned()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A secret given inline or as `*_file`; exactly one may be set.
fn secret(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
    base: &Path,
    problems: &mut Vec<String>,
) -> Option<Secret> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key} and {key}_file are both set; keep one"));
            None
        }
        (Some(s), None) => Some(s.clone()),
        (None, Some(f)) => {
            let path = if f.is_absolute() {
                f.clone()
            } else {
                base.join(f)
            };
            match std::fs::read_to_string(&path) {
                Ok(s) if s.trim().is_empty() => {
                    problems.push(format!("{key}_file: {} is empty", path.display()));
                    None
                }
                Ok(s) => Some(Secret::new(s.trim())),
                Err(e) => {
                    problems.push(format!("{key}_file: cannot read {}: {e}", path.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// The Feishu part, with secrets resolved.
#[derive(Debug, Clone)]
pub(crate) struct FeishuResolved {
    pub(crate) base_url: String,
    pub(crate) accounts_url: String,
    pub(crate) app_id: String,
    pub(crate) app_secret: Secret,
    pub(crate) encrypt_key: Option<Secret>,
    pub(crate) verification_token: Option<Secret>,
    pub(crate) user_token_file: PathBuf,
}

/// A loaded, validated configuration.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) feishu: FeishuResolved,
    /// The `[[sinks]]`, validated, in file order.
    pub(crate) sinks: Vec<Configured>,
    /// `[rooms]`, when the bridge acts as a room system.
    pub(crate) rooms: Option<rooms::RoomsConfig>,
}

/// One `[[sinks]]` entry, validated.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    /// Position in `[[sinks]]`.
    pub(crate) index: usize,
    pub(crate) target: Target,
    /// Its filters and transforms (`[sinks.filter]`, `[sinks.transform]`),
    /// generic to every kind.
    pub(crate) view: bridge_core::view::View,
}

impl Configured {
    /// How `check` names it: `sinks[1] google:work`.
    pub(crate) fn what(&self) -> String {
        format!("sinks[{}] {}", self.index, self.target.label())
    }
}

fn accounts_for(base: &str) -> String {
    if base.contains("open.feishu.cn") {
        "https://accounts.feishu.cn".to_owned()
    } else if base.contains("open.larksuite.com") {
        "https://accounts.larksuite.com".to_owned()
    } else {
        base.to_owned()
    }
}

/// Reads, interpolates, parses and validates `path`.
pub(crate) fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let fail = |problems: Vec<String>| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
    parse(&text, path)
}

pub(crate) fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    parse_with_env(text, path, &|name| std::env::var(name).ok())
}

pub(crate) fn parse_with_env(text: &str, path: &Path, env: Env<'_>) -> Result<Loaded, ConfigError> {
    let fail = |problems: Vec<String>| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let mut value: toml::Value =
        toml::from_str(text).map_err(|e| fail(vec![read::syntax(text, &e)]))?;
    let mut problems = Vec::new();
    interpolate(&mut value, "", env, &mut problems);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let toml::Value::Table(mut root) = value else {
        return Err(fail(vec!["not valid TOML: not a table".to_owned()]));
    };
    let raw_sinks = root.remove("sinks");
    let raw_rooms = root.remove("rooms");
    let config = read_config(root, &mut problems);
    // One rule for every relative path of the file (store, directories,
    // `*_file`): relative to the file's own directory, made absolute so it
    // holds whatever the working directory (systemd gives none).
    let absolute = path
        .canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned());
    let base = absolute.parent().unwrap_or(Path::new("/"));
    let sinks = read_sinks(raw_sinks, base, &mut problems);
    let rooms = raw_rooms.and_then(|r| rooms::read(r, &sinks, &mut problems));
    if let (Some(_), Some(c)) = (&rooms, &config)
        && c.feishu.delivery == Delivery::Poll
    {
        problems.push(
            "rooms: room events arrive by push only; set feishu.delivery to \"webhook\" or \"long_connection\""
                .to_owned(),
        );
    }
    let Some(mut config) = config else {
        return Err(fail(problems));
    };
    let f = &config.feishu;
    let app_secret = secret(
        &f.app_secret,
        &f.app_secret_file,
        "feishu.app_secret",
        base,
        &mut problems,
    );
    let encrypt_key = secret(
        &f.encrypt_key,
        &f.encrypt_key_file,
        "feishu.encrypt_key",
        base,
        &mut problems,
    );
    let verification_token = secret(
        &f.verification_token,
        &f.verification_token_file,
        "feishu.verification_token",
        base,
        &mut problems,
    );
    // A `*_file` that could not be read was reported above; do not also call it missing.
    config.validate(
        &mut problems,
        app_secret.is_some() || f.app_secret_file.is_some(),
        verification_token.is_some() || f.verification_token_file.is_some(),
    );
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    if config.store.path.is_relative() {
        config.store.path = base.join(&config.store.path);
    }
    let f = &config.feishu;
    let user_token_file = f
        .user_token_file
        .clone()
        .map(|p| base.join(p))
        .unwrap_or_else(|| {
            config
                .store
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join("feishu-user-token.json")
        });
    Ok(Loaded {
        feishu: FeishuResolved {
            base_url: f.base_url.trim_end_matches('/').to_owned(),
            accounts_url: f
                .accounts_url
                .clone()
                .unwrap_or_else(|| accounts_for(&f.base_url)),
            app_id: f.app_id.clone(),
            app_secret: app_secret.unwrap_or_default(),
            encrypt_key,
            verification_token,
            user_token_file,
        },
        sinks,
        rooms,
        config,
    })
}

/// Reads the sections other than `[[sinks]]`, each on its own so that a
/// problem in one does not hide those of the next; problems carry their key
/// paths.
fn read_config(mut root: toml::Table, problems: &mut Vec<String>) -> Option<Config> {
    fn section<T: serde::de::DeserializeOwned + Default>(
        root: &mut toml::Table,
        name: &str,
        problems: &mut Vec<String>,
    ) -> Option<T> {
        match root.remove(name) {
            Some(v) => read_table(v, name, problems),
            None => Some(T::default()),
        }
    }
    let store = section::<StoreConfig>(&mut root, "store", problems);
    let server = section::<ServerConfig>(&mut root, "server", problems);
    let sync = section::<SyncConfig>(&mut root, "sync", problems);
    let feishu = match root.remove("feishu") {
        Some(v) => read_table::<FeishuConfig>(v, "feishu", problems),
        None => {
            problems.push("feishu: missing (the [feishu] table)".to_owned());
            None
        }
    };
    read::unknown_keys(
        &root,
        &["store", "feishu", "server", "sync", "sinks", "rooms"],
        "",
        problems,
    );
    Some(Config {
        store: store?,
        feishu: feishu?,
        server: server?,
        sync: sync?,
    })
}

/// Reads and validates every `[[sinks]]` entry through its kind's module;
/// problems carry their key paths. Names are unique per kind.
fn read_sinks(
    raw: Option<toml::Value>,
    base: &Path,
    problems: &mut Vec<String>,
) -> Vec<Configured> {
    let entries = match raw {
        None => return Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            problems.push(format!(
                "sinks: expected an array of tables ([[sinks]]), found {}",
                other.type_str()
            ));
            return Vec::new();
        }
    };
    let read = |p: &Path| std::fs::read_to_string(p);
    let mut out: Vec<Configured> = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let path = format!("sinks[{index}]");
        let toml::Value::Table(mut table) = entry else {
            problems.push(format!("{path}: expected a table"));
            continue;
        };
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                problems.push(format!(
                    "{path}.kind: expected a string, found {}",
                    other.type_str()
                ));
                continue;
            }
            None => {
                let known: Vec<String> = crate::sinks::KINDS
                    .iter()
                    .map(|k| format!("{:?}", k.name))
                    .collect();
                problems.push(format!(
                    "{path}.kind: missing (one of {})",
                    known.join(", ")
                ));
                continue;
            }
        };
        // The generic keys of every kind, read before the kind sees the table.
        let view = view::take(&mut table, &path, problems);
        let ctx = bridge_sinks::config::Ctx::new(path.as_str(), base, &read);
        match crate::sinks::read(&kind, toml::Value::Table(table), &ctx, problems) {
            Some(target) => {
                if let Some(name) = target.name() {
                    let same = out.iter().find(|c| {
                        c.target.kind() == target.kind() && c.target.name() == Some(name)
                    });
                    if let Some(other) = same {
                        problems.push(format!(
                            "{}: {name:?} is already the name of sinks[{}]; every {} sink needs its own name",
                            ctx.key("name"),
                            other.index,
                            target.kind()
                        ));
                        continue;
                    }
                }
                out.push(Configured {
                    index,
                    target,
                    view: view.unwrap_or_default(),
                });
            }
            None => continue,
        }
    }
    out
}

impl Config {
    /// Semantic checks; every problem is pushed with its key path.
    fn validate(&self, problems: &mut Vec<String>, has_secret: bool, has_token: bool) {
        let f = &self.feishu;
        if url::Url::parse(&f.base_url).is_err() {
            problems.push(format!("feishu.base_url: {:?} is not a URL", f.base_url));
        }
        if f.app_id.trim().is_empty() {
            problems.push("feishu.app_id: must not be empty".to_owned());
        }
        if !has_secret {
            problems.push("feishu.app_secret: missing (or set feishu.app_secret_file)".to_owned());
        }
        if let Calendars::List(ids) = &f.calendars {
            if ids.is_empty() {
                problems.push("feishu.calendars: the list is empty".to_owned());
            }
            for (i, id) in ids.iter().enumerate() {
                if id.trim().is_empty() {
                    problems.push(format!("feishu.calendars[{i}]: empty calendar id"));
                }
            }
        }
        if f.delivery == Delivery::Webhook && !has_token {
            problems
                .push("feishu.verification_token: required when delivery = \"webhook\"".to_owned());
        }
        let sync = &self.sync;
        if !(0.0..=100.0).contains(&sync.max_delete_percent) {
            problems.push(format!(
                "sync.max_delete_percent: {} is not a percentage (0 to 100)",
                sync.max_delete_percent
            ));
        }
        if sync.window_past_days.is_some() != sync.window_future_days.is_some() {
            problems.push(
                "sync.window_past_days and sync.window_future_days: set both or neither".to_owned(),
            );
        }
        if sync.full_reconcile_hours == 0 {
            problems.push("sync.full_reconcile_hours: must be at least 1".to_owned());
        }
        if sync.poll_seconds == 0 {
            problems.push("sync.poll_seconds: must be at least 1".to_owned());
        }
        if sync.retry_base_seconds == 0 {
            problems.push("sync.retry_base_seconds: must be at least 1".to_owned());
        }
        match self.server.admin_listen.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => {}
            Ok(a) => problems.push(format!(
                "server.admin_listen: {a} is not a loopback address; the admin endpoint \
                 must not be reachable from the network"
            )),
            Err(_) => problems.push(format!(
                "server.admin_listen: {:?} is not an address like 127.0.0.1:8789",
                self.server.admin_listen
            )),
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "server.listen: {:?} is not an address like 127.0.0.1:8787",
                self.server.listen
            ));
        }
        if let Some(u) = &self.server.public_url {
            match url::Url::parse(u) {
                Ok(p)
                    if matches!(p.scheme(), "http" | "https")
                        && p.host().is_some()
                        && p.query().is_none()
                        && p.fragment().is_none() => {}
                _ => problems.push(format!(
                    "server.public_url: {u:?} is not an http(s) URL like https://cal.example.com \
                     (no query or fragment)"
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Loaded, ConfigError> {
        parse(s, Path::new("test.toml"))
    }

    #[test]
    fn minimal_config() {
        let l =
            parse_str("[feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\ncalendars = [\"c1\"]\n")
                .unwrap();
        assert_eq!(l.feishu.accounts_url, "https://accounts.feishu.cn");
        assert_eq!(
            l.config.feishu.calendars,
            Calendars::List(vec!["c1".into()])
        );
        assert_eq!(l.config.feishu.delivery, Delivery::LongConnection);
        assert!(!format!("{l:?}").contains("\"s\""), "secret redacted");
    }

    #[test]
    fn env_interpolation_names_the_key() {
        let e = parse_str(
            "[feishu]\napp_id = \"cli_a\"\napp_secret = \"${FB_TEST_SURELY_UNSET_VAR}\"\n",
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            vec!["feishu.app_secret: environment variable FB_TEST_SURELY_UNSET_VAR is not set"]
        );
        assert_eq!(expand("a$${b}c", &|_| None).unwrap(), "a${b}c");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let e = parse_str(
            "[feishu]\napp_id = \"a\"\napp_secret = \"s\"\n[[sinks]]\nkind = \"ics\"\ndir = \"out\"\nprivcy = \"busy\"\n",
        )
        .unwrap_err();
        assert!(e.problems[0].starts_with("sinks[0]"), "{:?}", e.problems);
        assert!(e.problems[0].contains("privcy"), "{:?}", e.problems);
    }

    #[test]
    fn public_url_is_an_http_url_without_query() {
        let base = "[feishu]\napp_id = \"a\"\napp_secret = \"s\"\n[server]\npublic_url = ";
        let ok = parse_str(&format!("{base}\"https://cal.example.com/\"\n")).unwrap();
        assert_eq!(
            ok.config.server.public_url.as_deref(),
            Some("https://cal.example.com/")
        );
        for bad in ["\"cal.example.com\"", "\"ftp://x\"", "\"https://x/?a=1\""] {
            let e = parse_str(&format!("{base}{bad}\n")).unwrap_err();
            assert!(
                e.problems
                    .iter()
                    .any(|p| p.starts_with("server.public_url:")),
                "{bad}: {:?}",
                e.problems
            );
        }
    }

    #[test]
    fn every_semantic_problem_at_once() {
        let e = parse_str(
            "[feishu]\nbase_url = \"nope\"\napp_id = \"\"\ndelivery = \"webhook\"\ncalendars = []\n\
             [server]\nlisten = \"everywhere\"\n[[sinks]]\nkind = \"ics\"\ndir = \"o\"\nprivacy = \"secret\"\n",
        )
        .unwrap_err();
        let all = e.to_string();
        for key in [
            "feishu.base_url",
            "feishu.app_id",
            "feishu.app_secret",
            "feishu.calendars",
            "feishu.verification_token",
            "server.listen",
            "sinks[0].privacy",
        ] {
            assert!(all.contains(key), "{key} missing in:\n{all}");
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    /// A dozen mistakes of every sort, each reported in one run with its key
    /// path, in words, with a suggestion for near misses.
    #[test]
    fn every_mistake_at_once() {
        let text = "\
[feishu]
app_id = \"cli_a\"
app_secret = \"s\"
delivery = \"webhok\"
rate_limit_per_second = \"many\"
calendar = [\"c1\"]

[sync]
max_delete_count = \"fifty\"
max_delete_percent = true
debounce = 10

[server]
listen = 8787
admin_listn = \"127.0.0.1:1\"

[stor]
path = \"x\"

[[sinks]]
kind = \"ics\"
dir = \"out\"
privcy = \"busy\"

[[sinks]]
kind = \"gogle\"

[[sinks]]
kind = \"google\"
calendar_id = \"primary\"
client_id = \"c\"
client_secret = \"s\"
batch = \"yes\"
requests_per_second = \"ten\"

[[sinks]]
kind = \"ics\"
";
        let e = parse(text, Path::new("test.toml")).unwrap_err();
        let mut got = e.problems.clone();
        got.sort();
        let mut want = vec![
            "feishu.delivery: \"webhok\" is not one of \"long_connection\", \"webhook\", \"poll\"; did you mean \"webhook\"?",
            "feishu.rate_limit_per_second: expected a whole number, got \"many\"",
            "feishu.calendar: unknown key; did you mean \"calendars\"?",
            "sync.max_delete_count: expected a whole number, got \"fifty\"",
            "sync.max_delete_percent: expected a number, got true",
            "sync.debounce: unknown key; did you mean \"debounce_ms\"?",
            "server.listen: expected a string, got 8787",
            "server.admin_listn: unknown key; did you mean \"admin_listen\"?",
            "stor: unknown key; did you mean \"store\"?",
            "sinks[0].privcy: unknown key; did you mean \"privacy\"?",
            "sinks[1].kind: \"gogle\" is not a sink kind (one of \"ics\", \"google\", \"feed\", \"graph\", \"ews\")",
            "sinks[2].batch: expected true or false, got \"yes\"",
            "sinks[2].requests_per_second: expected a number, got \"ten\"",
            "sinks[3].dir: missing",
        ];
        want.sort();
        assert_eq!(got, want, "{e}");
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let e = parse(
            "[feishu]\napp_id = \"a\"\nbad = = 1\n",
            Path::new("test.toml"),
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.problems[0].starts_with("not valid TOML: line 3, column 7: "),
            "{e}"
        );
        assert!(!e.problems[0].contains('\n'), "one line: {e}");
    }
}

#[cfg(test)]
mod google_tests {
    use super::*;
    use bridge_sinks::google;
    use bridge_sinks::google::config::Auth as GoogleAuth;

    /// A Google sink of a loaded configuration, with its position.
    #[derive(Debug)]
    struct Indexed<'a> {
        index: usize,
        sink: &'a google::config::Validated,
    }

    impl std::ops::Deref for Indexed<'_> {
        type Target = google::config::Validated;
        fn deref(&self) -> &Self::Target {
            self.sink
        }
    }

    /// The `kind = "google"` sinks, in file order.
    fn google_sinks(l: &Loaded) -> Vec<Indexed<'_>> {
        l.sinks
            .iter()
            .filter_map(|c| {
                Some(Indexed {
                    index: c.index,
                    sink: c.target.downcast::<google::config::Validated>()?,
                })
            })
            .collect()
    }

    const FEISHU: &str = "[feishu]\napp_id = \"cli_a\"\napp_secret = \"s\"\n";

    fn with_sinks(sinks: &str) -> Result<Loaded, ConfigError> {
        parse(&format!("{FEISHU}{sinks}"), Path::new("test.toml"))
    }

    fn problems(sinks: &str) -> Vec<String> {
        match with_sinks(sinks) {
            Ok(_) => panic!("accepted:\n{sinks}"),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn an_installed_app_sink_with_defaults() {
        let l = with_sinks(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\n\
             client_id = \"c.apps.googleusercontent.com\"\nclient_secret = \"gs3cret\"\n",
        )
        .unwrap();
        let google = google_sinks(&l);
        let [g] = google.as_slice() else {
            panic!("{google:?}")
        };
        assert_eq!(g.id, "google:google");
        assert_eq!(g.index, 0);
        assert_eq!(g.calendar_id.as_deref(), Some("primary"));
        assert_eq!(g.privacy, bridge_core::Privacy::Full);
        assert_eq!(g.client.base_url, "https://www.googleapis.com");
        assert_eq!(g.client.token_url, google::DEFAULT_TOKEN_URL);
        assert_eq!(g.auth_url, google::DEFAULT_AUTH_URL);
        assert_eq!(g.client.requests_per_second, 10.0);
        assert!(g.batch && !g.write_attendees);
        assert_eq!(g.on_target_delete, google::OnTargetDelete::Restore);
        assert!(
            matches!(&g.auth, GoogleAuth::Installed { client_id, .. } if client_id == "c.apps.googleusercontent.com")
        );
        assert!(!format!("{l:?}").contains("gs3cret"), "secret redacted");
    }

    #[test]
    fn every_option_is_read() {
        let l = with_sinks(
            "[[sinks]]\nkind = \"ics\"\ndir = \"o\"\n\
             [[sinks]]\nkind = \"google\"\nname = \"work\"\nprivacy = \"busy\"\n\
             create_calendars = true\nclient_id = \"c\"\nclient_secret = \"s\"\n\
             token_url = \"http://127.0.0.1:9/token\"\nauth_url = \"http://127.0.0.1:9/auth\"\n\
             base_url = \"http://127.0.0.1:9/calendar/v3/\"\nrequests_per_second = 0\n\
             batch = false\nwrite_attendees = true\non_target_delete = \"respect\"\n",
        )
        .unwrap();
        let g = &google_sinks(&l)[0];
        assert_eq!((g.index, g.id.as_str()), (1, "google:work"));
        assert_eq!(g.calendar_id, None);
        assert_eq!(g.privacy, bridge_core::Privacy::Busy);
        assert_eq!(g.client.base_url, "http://127.0.0.1:9");
        assert_eq!(g.client.token_url, "http://127.0.0.1:9/token");
        assert_eq!(g.auth_url, "http://127.0.0.1:9/auth");
        assert_eq!(g.client.requests_per_second, 0.0);
        assert!(!g.batch && g.write_attendees);
        assert_eq!(g.on_target_delete, google::OnTargetDelete::Respect);
    }

    #[test]
    fn every_google_problem_at_once_with_its_key() {
        let p = problems(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\ncreate_calendars = true\n\
             client_id = \"c\"\nsubject = \"u@example.com\"\nprivacy = \"open\"\n\
             on_target_delete = \"ignore\"\ntoken_url = \"nope\"\nrequests_per_second = -1\n",
        );
        let all = p.join("\n");
        for needle in [
            "sinks[0].calendar_id and sinks[0].create_calendars: set one of them, not both",
            "sinks[0].subject: only with sinks[0].service_account_key_file",
            "sinks[0].client_secret: missing",
            "sinks[0].privacy: \"open\"",
            "sinks[0].on_target_delete: \"ignore\"",
            "sinks[0].token_url: \"nope\" is not an http(s) URL",
            "sinks[0].requests_per_second",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
    }

    #[test]
    fn credentials_and_target_are_required_and_exclusive() {
        let all = problems("[[sinks]]\nkind = \"google\"\n").join("\n");
        assert!(all.contains("sinks[0].calendar_id: missing"), "{all}");
        assert!(all.contains("sinks[0].client_id: missing"), "{all}");
        let all = problems(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nservice_account_key_file = \"/nonexistent/key.json\"\n",
        )
        .join("\n");
        assert!(
            all.contains("sinks[0].client_id and sinks[0].service_account_key_file"),
            "{all}"
        );
    }

    #[test]
    fn names_are_unique_and_plain() {
        let sink = |name: &str| {
            format!(
                "[[sinks]]\nkind = \"google\"\nname = \"{name}\"\ncalendar_id = \"primary\"\n\
                 client_id = \"c\"\nclient_secret = \"s\"\n"
            )
        };
        let all = problems(&format!("{}{}", sink("a"), sink("a"))).join("\n");
        assert!(
            all.contains("sinks[1].name: \"a\" is already the name of sinks[0]"),
            "{all}"
        );
        let all = problems(&sink("a b")).join("\n");
        assert!(
            all.contains("sinks[0].name: \"a b\" is not a sink name"),
            "{all}"
        );
        let l = with_sinks(&format!("{}{}", sink("a"), sink("b"))).unwrap();
        assert_eq!(google_sinks(&l).len(), 2);
    }

    #[test]
    fn the_service_account_key_file_must_parse() {
        let dir = std::env::temp_dir().join(format!("fb-gcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.json");
        std::fs::write(&key, r#"{"type": "authorized_user"}"#).unwrap();
        let sinks = format!(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\n\
             service_account_key_file = \"{}\"\nclient_secret = \"s\"\n",
            key.display()
        );
        let all = problems(&sinks).join("\n");
        assert!(
            all.contains(&format!(
                "sinks[0].service_account_key_file: {}: ",
                key.display()
            )),
            "{all}"
        );
        assert!(all.contains("service_account"), "{all}");
        assert!(
            all.contains("sinks[0].client_secret: only with sinks[0].client_id"),
            "{all}"
        );
        let missing = dir.join("missing.json");
        let all = problems(&format!(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\n\
             service_account_key_file = \"{}\"\n",
            missing.display()
        ))
        .join("\n");
        assert!(
            all.contains(&format!(
                "sinks[0].service_account_key_file: cannot read {}",
                missing.display()
            )),
            "{all}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_google_keys_are_refused() {
        let p = problems(
            "[[sinks]]\nkind = \"google\"\ncalendar_id = \"primary\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\nrefresh_token = \"r\"\n",
        );
        assert!(
            p[0].starts_with("sinks[0]") && p[0].contains("refresh_token"),
            "{p:?}"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped examples parse (with their environment variables set).
    #[test]
    fn shipped_examples_are_valid() {
        let env = |name: &str| {
            [
                "FEISHU_APP_SECRET",
                "FEISHU_ENCRYPT_KEY",
                "FEISHU_VERIFICATION_TOKEN",
                "GOOGLE_CLIENT_SECRET",
                "GRAPH_CLIENT_SECRET",
                "EWS_PASSWORD",
            ]
            .contains(&name)
            .then(|| "x".to_owned())
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in [
            "ics-only.toml",
            "webhook.toml",
            "google.toml",
            "graph.toml",
            "ews.toml",
        ] {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            parse_with_env(&text, &path, &env).unwrap_or_else(|e| panic!("{e}"));
        }
        // The long-connection example names a secret file that exists only on a server.
        let path = dir.join("long-connection.toml");
        let e = parse_with_env(&std::fs::read_to_string(&path).unwrap(), &path, &env).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert!(
            e.problems[0].starts_with("feishu.app_secret_file: cannot read"),
            "{e}"
        );
    }
}
