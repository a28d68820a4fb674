//! `[[sinks]] kind = "google"`: the TOML table, its validation (every
//! problem with its key path), construction and health check. The
//! authorization capability is in [`super::authorize`].

use std::path::PathBuf;
use std::time::Duration;

use bridge_core::Privacy;
use serde::Deserialize;

use super::auth::{Credentials, DEFAULT_AUTH_URL, DEFAULT_TOKEN_URL, Secret, ServiceAccountKey};
use super::client::{ApiRequest, DEFAULT_BASE_URL, GoogleClient, GoogleClientConfig, Method};
use super::sink::{GoogleSink, GoogleSinkConfig, OnTargetDelete, TargetCalendar, token_name};
use crate::config::{
    Authorization, Check, Ctx, StoredToken, TargetToml, ValidatedTarget, check_name, privacy,
    privacy_name, required_secret,
};

/// The commented `[[sinks]]` table `init` writes.
pub const STARTER: &str = r#"[[sinks]]
kind = "google"
name = "google"                   # sink id "google:google"
calendar_id = "primary"           # or create_calendars = true
client_id = "replace-me.apps.googleusercontent.com"   # an OAuth client of type "Desktop app"
client_secret = "replace-me"      # then: feishu-bridge auth google
privacy = "full"                  # full | redacted | busy
# on_target_delete = "restore"    # or "respect"
"#;

/// The table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sink id in the store is `google:<name>`.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_privacy")]
    pub privacy: String,
    /// The target calendar (exactly one of this and `create_calendars`).
    pub calendar_id: Option<String>,
    /// One dedicated calendar per source calendar.
    #[serde(default)]
    pub create_calendars: bool,
    /// Installed-app OAuth client (refresh token from `auth google`).
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "secret_string")]
    pub client_secret: Option<Secret>,
    pub client_secret_file: Option<PathBuf>,
    /// A service account instead of `client_id`.
    pub service_account_key_file: Option<PathBuf>,
    /// Domain-wide delegation: the user the service account acts for.
    pub subject: Option<String>,
    pub token_url: Option<String>,
    pub auth_url: Option<String>,
    /// Host root (`https://www.googleapis.com`).
    pub base_url: Option<String>,
    /// Client-side limit; 0 = none.
    pub requests_per_second: Option<f64>,
    #[serde(default = "default_true")]
    pub batch: bool,
    #[serde(default)]
    pub write_attendees: bool,
    #[serde(default = "default_on_target_delete")]
    pub on_target_delete: String,
}

fn secret_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(Secret::new))
}

fn default_name() -> String {
    "google".to_owned()
}
fn default_privacy() -> String {
    "full".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_on_target_delete() -> String {
    "restore".to_owned()
}

/// How a Google sink authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// An installed (desktop) OAuth client; the refresh token `auth google`
    /// obtains is in the store under [`Validated::token_name`].
    Installed {
        client_id: String,
        client_secret: Secret,
    },
    /// A service account key file, optionally impersonating `subject`.
    ServiceAccount {
        key: ServiceAccountKey,
        key_file: PathBuf,
        subject: Option<String>,
    },
}

/// A validated Google sink.
#[derive(Debug, Clone)]
pub struct Validated {
    pub name: String,
    /// `google:<name>`.
    pub id: String,
    pub privacy: Privacy,
    /// `None`: one dedicated calendar per source calendar.
    pub calendar_id: Option<String>,
    pub auth: Auth,
    /// Authorization endpoint of `auth google`.
    pub auth_url: String,
    pub client: GoogleClientConfig,
    pub batch: bool,
    pub write_attendees: bool,
    pub on_target_delete: OnTargetDelete,
}

impl TargetToml for Config {
    type Validated = Validated;
    const KIND: &'static str = "google";
    const AUTH: bool = true;
    const STARTER: &'static str = STARTER;

    /// Every problem with its key path. The service account key and a
    /// `client_secret_file` are read through `ctx`.
    fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
        let mut problems = Vec::new();
        let key = |k: &str| ctx.key(k);
        check_name(&self.name, &key("name"), &mut problems);
        let privacy = privacy(&self.privacy, &key("privacy"), &mut problems);
        let calendar_id = match (&self.calendar_id, self.create_calendars) {
            (Some(_), true) => {
                problems.push(format!(
                    "{} and {}: set one of them, not both",
                    key("calendar_id"),
                    key("create_calendars")
                ));
                None
            }
            (None, false) => {
                problems.push(format!(
                    "{}: missing (the target calendar, e.g. \"primary\"), or set {} = true",
                    key("calendar_id"),
                    key("create_calendars")
                ));
                None
            }
            (Some(id), false) if id.trim().is_empty() => {
                problems.push(format!("{}: must not be empty", key("calendar_id")));
                None
            }
            (Some(id), false) => Some(id.clone()),
            (None, true) => None,
        };
        let on_target_delete = match self.on_target_delete.parse::<OnTargetDelete>() {
            Ok(v) => v,
            Err(_) => {
                problems.push(format!(
                    "{}: {:?} is not one of \"restore\", \"respect\"",
                    key("on_target_delete"),
                    self.on_target_delete
                ));
                OnTargetDelete::default()
            }
        };
        let mut url = |k: &str, v: &Option<String>, default: &str| -> String {
            let v = v.as_deref().unwrap_or(default).trim_end_matches('/');
            match url::Url::parse(v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(format!("{}: {v:?} is not an http(s) URL", key(k))),
            }
            v.to_owned()
        };
        let token_url = url("token_url", &self.token_url, DEFAULT_TOKEN_URL);
        let auth_url = url("auth_url", &self.auth_url, DEFAULT_AUTH_URL);
        let mut base_url = url("base_url", &self.base_url, DEFAULT_BASE_URL);
        // The API root written out is accepted too.
        if let Some(root) = base_url.strip_suffix("/calendar/v3") {
            base_url = root.to_owned();
        }
        let requests_per_second = self.requests_per_second.unwrap_or(10.0);
        if !requests_per_second.is_finite() || requests_per_second < 0.0 {
            problems.push(format!(
                "{}: {requests_per_second} must be 0 (no limit) or more",
                key("requests_per_second")
            ));
        }
        let auth = self.auth(ctx, &mut problems);
        match (auth, privacy) {
            (Some(auth), Some(privacy)) if problems.is_empty() => Ok(Validated {
                id: format!("google:{}", self.name),
                name: self.name.clone(),
                privacy,
                calendar_id,
                auth,
                auth_url,
                client: GoogleClientConfig {
                    base_url,
                    token_url,
                    requests_per_second,
                    ..GoogleClientConfig::default()
                },
                batch: self.batch,
                write_attendees: self.write_attendees,
                on_target_delete,
            }),
            _ => Err(problems),
        }
    }
}

impl Config {
    /// The credentials part: an installed-app client or a service account.
    fn auth(&self, ctx: &Ctx<'_>, problems: &mut Vec<String>) -> Option<Auth> {
        let key = |k: &str| ctx.key(k);
        match (&self.client_id, &self.service_account_key_file) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{} and {}: set one of them, not both",
                    key("client_id"),
                    key("service_account_key_file")
                ));
                None
            }
            (None, None) => {
                problems.push(format!(
                    "{}: missing (an installed-app OAuth client), or set {} (a service account)",
                    key("client_id"),
                    key("service_account_key_file")
                ));
                None
            }
            (Some(client_id), None) => {
                if self.subject.is_some() {
                    problems.push(format!(
                        "{}: only with {} (domain-wide delegation); an installed-app client \
                         acts as the user who ran `feishu-bridge auth google`",
                        key("subject"),
                        key("service_account_key_file")
                    ));
                }
                if client_id.trim().is_empty() {
                    problems.push(format!("{}: must not be empty", key("client_id")));
                }
                let secret = required_secret(
                    ctx,
                    self.client_secret.as_ref().map(Secret::expose),
                    self.client_secret_file.as_deref(),
                    &key("client_secret"),
                    "required with client_id",
                    problems,
                );
                secret.map(|s| Auth::Installed {
                    client_id: client_id.clone(),
                    client_secret: Secret::new(s),
                })
            }
            (None, Some(file)) => {
                for (k, set) in [
                    ("client_secret", self.client_secret.is_some()),
                    ("client_secret_file", self.client_secret_file.is_some()),
                ] {
                    if set {
                        problems.push(format!(
                            "{}: only with {} (a service account needs none)",
                            key(k),
                            key("client_id")
                        ));
                    }
                }
                let path = ctx.resolve(file);
                let text = match ctx.read(file) {
                    Ok(text) => text,
                    Err(e) => {
                        problems.push(format!(
                            "{}: cannot read {}: {e}",
                            key("service_account_key_file"),
                            path.display()
                        ));
                        return None;
                    }
                };
                match ServiceAccountKey::from_json(&text) {
                    Ok(k) => Some(Auth::ServiceAccount {
                        key: k,
                        key_file: path,
                        subject: self.subject.clone().filter(|s| !s.trim().is_empty()),
                    }),
                    Err(e) => {
                        problems.push(format!(
                            "{}: {}: {e}",
                            key("service_account_key_file"),
                            path.display()
                        ));
                        None
                    }
                }
            }
        }
    }
}

impl Validated {
    /// The settings of the sink.
    pub fn sink_config(&self) -> GoogleSinkConfig {
        GoogleSinkConfig {
            id: self.id.clone(),
            privacy: self.privacy,
            target: match &self.calendar_id {
                Some(id) => TargetCalendar::Fixed(id.clone()),
                None => TargetCalendar::CreatePerSource,
            },
            write_attendees: self.write_attendees,
            on_target_delete: self.on_target_delete,
            batch: self.batch,
            client: self.client.clone(),
        }
    }

    /// The sink, with the credentials of [`Validated::credentials`]; without
    /// any it starts paused until [`GoogleSink::set_credentials`].
    pub fn build(
        &self,
        creds: Option<Credentials>,
        state: std::sync::Arc<dyn bridge_target::StateStore>,
    ) -> GoogleSink {
        if creds.is_none() {
            tracing::warn!(sink = %self.id, "{}", self.not_authorized());
        }
        GoogleSink::new(self.sink_config(), creds, state)
    }

    /// What `check` and the logs say about a sink nobody authorized yet.
    pub fn not_authorized(&self) -> String {
        format!(
            "not authorized: run `feishu-bridge auth google --sink {}`",
            self.name
        )
    }
}

#[async_trait::async_trait]
impl ValidatedTarget for Validated {
    fn kind(&self) -> &'static str {
        "google"
    }

    fn build(
        &self,
        env: crate::config::BuildEnv,
    ) -> std::sync::Arc<dyn crate::config::BuiltTarget> {
        let creds = self.credentials(env.token.as_deref());
        std::sync::Arc::new(super::authorize::Built {
            sink: std::sync::Arc::new(self.build(creds, env.state)),
            config: self.clone(),
        })
    }

    fn room_place(&self) -> Option<crate::config::RoomPlace> {
        Some(crate::config::RoomPlace::Named {
            key: "calendar_id",
            why: "a Google room calendar is named by calendar_id",
        })
    }

    /// A sink writing into the room's calendar, and its freeBusy.
    fn room(
        &self,
        env: crate::config::RoomEnv,
        place: Option<&str>,
    ) -> Result<crate::config::RoomTarget, String> {
        use std::sync::Arc;
        let calendar = place.ok_or("no calendar_id")?.to_owned();
        let mut rc = self.clone();
        rc.calendar_id = Some(calendar.clone());
        let creds = rc.credentials(env.sink.token.as_deref());
        let client = creds
            .clone()
            .map(|cr| GoogleClient::new(rc.client.clone(), cr))
            .transpose()
            .map_err(|e| e.to_string())?;
        let cal = calendar.clone();
        let busy = crate::config::BusyLookup {
            what: "Google freeBusy",
            f: Arc::new(move |from, to| {
                let (client, cal) = (client.clone(), cal.clone());
                Box::pin(async move {
                    let client = client.ok_or(
                        "the Google sink is not authorized (run `feishu-bridge auth google`)",
                    )?;
                    super::freebusy::busy(&client, &cal, from, to)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        };
        Ok(crate::config::RoomTarget::Replica {
            replica: Arc::new(rc.build(creds, env.room_state)),
            busy: Some(busy),
            what: format!("Google calendar {calendar:?} of {}", self.id),
        })
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn explain(&self, _calendar: &str, remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        vec![format!(
            "Google Calendar {}, {}",
            self.calendar_id
                .as_deref()
                .unwrap_or("created for this source calendar"),
            crate::config::remote_line(remote, "event", "etag")
        )]
    }

    fn describe(&self) -> String {
        format!(
            "Google Calendar {}, privacy {}",
            self.calendar_id
                .as_deref()
                .unwrap_or("(one created per source calendar)"),
            privacy_name(self.privacy)
        )
    }

    fn token_name(&self) -> Option<String> {
        Some(token_name(&self.id))
    }

    fn authorization(&self) -> Option<Authorization> {
        Some(self.authorize())
    }

    /// The health check of `feishu-bridge check`: the credentials (the
    /// service account, or the token the store holds), an access token from
    /// the token endpoint, and the target calendar. A quick client: one
    /// retry, short timeouts.
    async fn healthcheck(&self, stored: StoredToken) -> Vec<Check> {
        let mut out = Vec::new();
        let creds = match (&self.auth, stored) {
            (Auth::ServiceAccount { key, key_file, .. }, _) => {
                out.push(Check::ok(format!(
                    "service account {} ({})",
                    key.client_email,
                    key_file.display()
                )));
                self.credentials(None)
            }
            (Auth::Installed { .. }, StoredToken::StoreLocked) => {
                out.push(Check::warn(
                    "the refresh token is in the store, which the running daemon holds; not checked",
                ));
                return out;
            }
            (Auth::Installed { .. }, StoredToken::Unreadable(e)) => {
                out.push(Check::fail(e));
                return out;
            }
            (Auth::Installed { .. }, StoredToken::Value(json)) => self.credentials(json.as_deref()),
        };
        let Some(creds) = creds else {
            out.push(Check::fail(self.not_authorized()));
            return out;
        };
        let mut cfg = self.client.clone();
        cfg.max_retries = 1;
        cfg.max_backoff = Duration::from_secs(2);
        cfg.timeout = Duration::from_secs(15);
        let client = match GoogleClient::new(cfg, creds) {
            Ok(c) => c,
            Err(e) => {
                out.push(Check::fail(e.to_string()));
                return out;
            }
        };
        if let Err(e) = client.access_token().await {
            out.push(Check::fail(format!(
                "no access token from {}: {e}",
                self.client.token_url
            )));
            return out;
        }
        out.push(Check::ok(format!(
            "access token obtained from {}",
            self.client.token_url
        )));
        out.push(match &self.calendar_id {
            Some(id) => match client
                .execute(ApiRequest::new(Method::Get, super::calendar_path(id)))
                .await
            {
                Ok(resp) => Check::ok(format!(
                    "calendar {id} reachable ({:?})",
                    resp.body["summary"].as_str().unwrap_or_default()
                )),
                Err(e) => Check::fail(format!("calendar {id}: {e}")),
            },
            None => Check::Note(
                "(create_calendars: a calendar per source calendar is created on the first sync)"
                    .to_owned(),
            ),
        });
        out
    }
}

#[cfg(test)]
mod tests;
