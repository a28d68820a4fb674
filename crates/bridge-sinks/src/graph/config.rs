//! `[[sinks]] kind = "graph"`: the TOML table, its validation (every
//! problem with its key path), construction and the health check of
//! `feishu-bridge check`. The authorization capability (`auth graph`) is in
//! [`super::authorize`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bridge_core::Privacy;
use bridge_http::{CallStats, RetryPolicy, Secret};
use serde::Deserialize;

use super::auth::{Certificate, Credentials, DEFAULT_AUTHORITY};
use super::client::{ClientConfig, DEFAULT_BASE_URL, GraphClient, Method, Request};
use super::sink::{GraphSink, GraphSinkConfig, OnTargetDelete, TargetCalendar};
use super::token_name;
use crate::config::{
    Check, Ctx, StoredToken, TargetToml, ValidatedTarget, check_name, privacy, privacy_name,
    required, secret,
};

/// The commented `[[sinks]]` table `init` writes.
pub const STARTER: &str = r#"[[sinks]]
kind = "graph"
name = "exchange"                 # sink id "graph:exchange"
tenant_id = "replace-me"          # Entra ID tenant (directory) id
client_id = "replace-me"          # app registration with Calendars.ReadWrite (application)
client_secret = "replace-me"      # or certificate_file + private_key_file
mailbox = "someone@example.com"   # user id or UPN whose calendar receives the mirror
calendar = "primary"              # or a calendar name (create_calendar = true creates it)
privacy = "full"                  # full | redacted | busy
"#;

/// The table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sink id in the store is `graph:<name>`.
    #[serde(default = "default_name")]
    pub name: String,
    /// The directory (tenant) id or a verified domain.
    pub tenant_id: Option<String>,
    /// The app registration's application (client) id.
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    /// A certificate credential: the certificate (PEM) uploaded to the app
    /// registration, and its private key (PKCS#8 PEM).
    pub certificate_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    /// Delegated use for one person (`feishu-bridge auth graph`) instead of
    /// application permissions.
    #[serde(default)]
    pub delegated: bool,
    /// The mailbox: user id or UPN.
    pub mailbox: Option<String>,
    /// `"primary"` (the default calendar) or a calendar name.
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// Create the named calendar when the mailbox has none of that name.
    #[serde(default)]
    pub create_calendar: bool,
    /// `https://graph.microsoft.com`.
    pub base_url: Option<String>,
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    pub token_url: Option<String>,
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize`.
    pub auth_url: Option<String>,
    #[serde(default = "default_privacy")]
    pub privacy: String,
    #[serde(default = "default_on_target_delete")]
    pub on_target_delete: String,
}

fn default_name() -> String {
    "graph".to_owned()
}
fn default_calendar() -> String {
    "primary".to_owned()
}
fn default_privacy() -> String {
    "full".to_owned()
}
fn default_on_target_delete() -> String {
    "restore".to_owned()
}

/// How a Graph sink authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Application permission with a client secret.
    Secret { secret: Secret },
    /// Application permission with a certificate.
    Certificate {
        certificate: Certificate,
        file: PathBuf,
    },
    /// Delegated: the refresh token of `auth graph` (a confidential client
    /// sends its secret too).
    Delegated { secret: Option<Secret> },
}

/// A validated Graph sink.
#[derive(Debug, Clone)]
pub struct Validated {
    pub name: String,
    /// `graph:<name>`.
    pub id: String,
    pub tenant_id: String,
    pub client_id: String,
    pub auth: Auth,
    pub mailbox: String,
    pub calendar: TargetCalendar,
    pub base_url: String,
    pub token_url: String,
    pub auth_url: String,
    pub privacy: Privacy,
    pub on_target_delete: OnTargetDelete,
}

impl TargetToml for Config {
    type Validated = Validated;
    const KIND: &'static str = "graph";
    const AUTH: bool = true;
    const STARTER: &'static str = STARTER;

    fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
        let mut problems = Vec::new();
        let key = |k: &str| ctx.key(k);
        check_name(&self.name, &key("name"), &mut problems);
        let mut need = |k: &str, v: &Option<String>, what: &str| -> String {
            required(v.as_deref(), &key(k), what, &mut problems).unwrap_or_default()
        };
        let tenant_id = need(
            "tenant_id",
            &self.tenant_id,
            "the directory (tenant) id of the app registration",
        );
        let client_id = need(
            "client_id",
            &self.client_id,
            "the application (client) id of the app registration",
        );
        let mailbox = need(
            "mailbox",
            &self.mailbox,
            "the user id or UPN whose calendar is written",
        );
        let privacy = privacy(&self.privacy, &key("privacy"), &mut problems);
        let on_target_delete = self
            .on_target_delete
            .parse::<OnTargetDelete>()
            .unwrap_or_else(|e| {
                problems.push(format!("{}: {e}", key("on_target_delete")));
                OnTargetDelete::default()
            });
        let calendar = match self.calendar.trim() {
            "" => {
                problems.push(format!(
                    "{}: must not be empty (\"primary\" or a calendar name)",
                    key("calendar")
                ));
                TargetCalendar::Primary
            }
            "primary" => {
                if self.create_calendar {
                    problems.push(format!(
                        "{}: only with a calendar name in {}",
                        key("create_calendar"),
                        key("calendar")
                    ));
                }
                TargetCalendar::Primary
            }
            name => TargetCalendar::Named {
                name: name.to_owned(),
                create: self.create_calendar,
            },
        };
        let authority = format!("{DEFAULT_AUTHORITY}/{tenant_id}/oauth2/v2.0");
        let mut url = |k: &str, v: &Option<String>, default: &str| -> String {
            let v = v.as_deref().unwrap_or(default).trim_end_matches('/');
            match url::Url::parse(v) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => problems.push(format!("{}: {v:?} is not an http(s) URL", key(k))),
            }
            v.to_owned()
        };
        let mut base_url = url("base_url", &self.base_url, DEFAULT_BASE_URL);
        if let Some(root) = base_url.strip_suffix("/v1.0") {
            base_url = root.to_owned();
        }
        let token_url = url("token_url", &self.token_url, &format!("{authority}/token"));
        let auth_url = url(
            "auth_url",
            &self.auth_url,
            &format!("{authority}/authorize"),
        );
        let auth = self.auth(ctx, &mut problems);
        match (auth, privacy) {
            (Some(auth), Some(privacy)) if problems.is_empty() => Ok(Validated {
                id: format!("graph:{}", self.name),
                name: self.name.clone(),
                tenant_id,
                client_id,
                auth,
                mailbox,
                calendar,
                base_url,
                token_url,
                auth_url,
                privacy,
                on_target_delete,
            }),
            _ => Err(problems),
        }
    }
}

impl Config {
    fn auth(&self, ctx: &Ctx<'_>, problems: &mut Vec<String>) -> Option<Auth> {
        let key = |k: &str| ctx.key(k);
        let secret = secret(
            ctx,
            self.client_secret.as_deref(),
            self.client_secret_file.as_deref(),
            &key("client_secret"),
            problems,
        );
        let has_secret = self.client_secret.is_some() || self.client_secret_file.is_some();
        let cert = match (&self.certificate_file, &self.private_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                problems.push(format!(
                    "{}: missing (the private key of {})",
                    key("private_key_file"),
                    key("certificate_file")
                ));
                return None;
            }
            (None, Some(_)) => {
                problems.push(format!(
                    "{}: missing (the certificate of {})",
                    key("certificate_file"),
                    key("private_key_file")
                ));
                return None;
            }
            (Some(c), Some(k)) => {
                let read = |f: &PathBuf, name: &str, problems: &mut Vec<String>| match ctx.read(f) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        problems.push(format!(
                            "{}: cannot read {}: {e}",
                            key(name),
                            ctx.resolve(f).display()
                        ));
                        None
                    }
                };
                let (ct, kt) = (
                    read(c, "certificate_file", problems),
                    read(k, "private_key_file", problems),
                );
                match (ct, kt) {
                    (Some(ct), Some(kt)) => match Certificate::from_pem(&ct, &kt) {
                        Ok(cert) => Some((cert, ctx.resolve(c))),
                        Err(e) => {
                            problems.push(format!(
                                "{} / {}: {e}",
                                key("certificate_file"),
                                key("private_key_file")
                            ));
                            return None;
                        }
                    },
                    _ => return None,
                }
            }
        };
        if self.delegated {
            if cert.is_some() {
                problems.push(format!(
                    "{}: not with {} (a delegated sink signs in with `auth graph`)",
                    key("certificate_file"),
                    key("delegated")
                ));
                return None;
            }
            return Some(Auth::Delegated {
                secret: secret.map(Secret::new),
            });
        }
        match (secret, cert) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{} and {}: set one of them, not both",
                    key("client_secret"),
                    key("certificate_file")
                ));
                None
            }
            (Some(s), None) => Some(Auth::Secret {
                secret: Secret::new(s),
            }),
            (None, Some((certificate, file))) => Some(Auth::Certificate { certificate, file }),
            (None, None) => {
                if !has_secret {
                    problems.push(format!(
                        "{}: missing (or {}_file, or {} + {} for a certificate; or {} = true for delegated use with `auth graph`)",
                        key("client_secret"),
                        key("client_secret"),
                        key("certificate_file"),
                        key("private_key_file"),
                        key("delegated")
                    ));
                }
                None
            }
        }
    }
}

/// The refresh token in a stored token JSON (`{"refresh_token": "..."}`).
pub fn stored_refresh_token(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("refresh_token")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl Validated {
    pub fn sink_config(&self) -> GraphSinkConfig {
        GraphSinkConfig {
            id: self.id.clone(),
            privacy: self.privacy,
            calendar: self.calendar.clone(),
            on_target_delete: self.on_target_delete,
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            token_url: self.token_url.clone(),
            mailbox: self.mailbox.clone(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
        }
    }

    /// The credentials: the app's, or the stored refresh token of a
    /// delegated sink (`None`: not authorized yet).
    pub fn credentials(&self, stored: Option<&str>) -> Option<Credentials> {
        let client_id = self.client_id.clone();
        match &self.auth {
            Auth::Secret { secret } => Some(Credentials::Secret {
                client_id,
                secret: secret.clone(),
            }),
            Auth::Certificate { certificate, .. } => Some(Credentials::Certificate {
                client_id,
                certificate: certificate.clone(),
            }),
            Auth::Delegated { secret } => {
                stored
                    .and_then(stored_refresh_token)
                    .map(|t| Credentials::Delegated {
                        client_id,
                        secret: secret.clone(),
                        refresh_token: Secret::new(t),
                    })
            }
        }
    }

    /// What `check` and the logs say about a delegated sink nobody authorized.
    pub fn not_authorized(&self) -> String {
        format!(
            "not authorized: run `feishu-bridge auth graph --sink {}`",
            self.name
        )
    }

    /// A client with `creds`.
    pub fn client(
        &self,
        creds: Credentials,
        stats: Option<Arc<CallStats>>,
    ) -> Result<GraphClient, String> {
        GraphClient::new(self.client_config(), creds, stats).map_err(|e| e.to_string())
    }

    /// The sink; without credentials it starts paused.
    pub fn build(
        &self,
        stored: Option<&str>,
        state: Arc<dyn bridge_target::StateStore>,
    ) -> GraphSink {
        let client = match self.credentials(stored) {
            Some(c) => self.client(c, None),
            None => {
                tracing::warn!(sink = %self.id, "{}", self.not_authorized());
                Err(self.not_authorized())
            }
        };
        GraphSink::new(self.sink_config(), client, state)
    }
}

#[async_trait::async_trait]
impl ValidatedTarget for Validated {
    fn kind(&self) -> &'static str {
        "graph"
    }

    fn build(
        &self,
        env: crate::config::BuildEnv,
    ) -> std::sync::Arc<dyn crate::config::BuiltTarget> {
        Arc::new(super::authorize::Built {
            sink: Arc::new(self.build(env.token.as_deref(), env.state)),
            config: self.clone(),
        })
    }

    fn room_place(&self) -> Option<crate::config::RoomPlace> {
        Some(crate::config::RoomPlace::Named {
            key: "mailbox",
            why: "a room mailbox is named by mailbox",
        })
    }

    /// A sink writing into the room mailbox's default calendar, and its
    /// getSchedule.
    fn room(
        &self,
        env: crate::config::RoomEnv,
        place: Option<&str>,
    ) -> Result<crate::config::RoomTarget, String> {
        let mailbox = place.ok_or("no mailbox")?.to_owned();
        let token = env.sink.token.as_deref();
        let mut rc = self.clone();
        rc.mailbox = mailbox.clone();
        // A room's availability is its default calendar.
        rc.calendar = TargetCalendar::Primary;
        let sink = rc.build(token, env.room_state);
        let client = rc
            .credentials(token)
            .map(|cr| rc.client(cr, None))
            .transpose()
            .map_err(|e| e.to_string())?;
        let room = mailbox.clone();
        let busy = crate::config::BusyLookup {
            what: "Graph getSchedule",
            f: Arc::new(move |from, to| {
                let (client, room) = (client.clone(), room.clone());
                Box::pin(async move {
                    let client = client.ok_or(
                        "the Graph sink is not authorized (run `feishu-bridge auth graph`)",
                    )?;
                    super::schedule::busy(&client, &room, from, to)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        };
        Ok(crate::config::RoomTarget::Replica {
            replica: Arc::new(sink),
            busy: Some(busy),
            what: format!("room mailbox {mailbox} through {}", self.id),
        })
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn explain(&self, _calendar: &str, remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        let cal = match &self.calendar {
            TargetCalendar::Primary => "the default calendar".to_owned(),
            TargetCalendar::Named { name, .. } => format!("calendar {name:?}"),
        };
        vec![format!(
            "Microsoft Graph {cal} of {}, {}",
            self.mailbox,
            crate::config::remote_line(remote, "event", "etag")
        )]
    }

    fn describe(&self) -> String {
        let cal = match &self.calendar {
            TargetCalendar::Primary => "the default calendar".to_owned(),
            TargetCalendar::Named { name, .. } => format!("calendar {name:?}"),
        };
        format!(
            "Microsoft Graph {cal} of {}, privacy {}",
            self.mailbox,
            privacy_name(self.privacy)
        )
    }

    fn token_name(&self) -> Option<String> {
        matches!(self.auth, Auth::Delegated { .. }).then(|| token_name(&self.id))
    }

    fn authorization(&self) -> Option<crate::config::Authorization> {
        Some(self.authorize())
    }

    /// The token, the mailbox and the calendar, with a quick client (one
    /// retry, short timeouts).
    async fn healthcheck(&self, stored: StoredToken) -> Vec<Check> {
        let mut out = Vec::new();
        let stored = match (&self.auth, stored) {
            (Auth::Delegated { .. }, StoredToken::StoreLocked) => {
                out.push(Check::warn("the refresh token is in the store, which the running daemon holds; not checked"));
                return out;
            }
            (Auth::Delegated { .. }, StoredToken::Unreadable(e)) => {
                out.push(Check::fail(e));
                return out;
            }
            (_, StoredToken::Value(v)) => v,
            (_, _) => None,
        };
        match &self.auth {
            Auth::Certificate { certificate, file } => out.push(Check::ok(format!(
                "certificate {} (x5t {})",
                file.display(),
                certificate.x5t
            ))),
            Auth::Secret { .. } => out.push(Check::ok(format!(
                "client secret of app {}",
                self.client_id
            ))),
            Auth::Delegated { .. } => {}
        }
        let Some(creds) = self.credentials(stored.as_deref()) else {
            out.push(Check::fail(self.not_authorized()));
            return out;
        };
        if let Auth::Delegated { .. } = self.auth {
            // Redeeming it here would rotate it (the identity platform
            // answers a new one and may retire the old), and `check` has
            // no place to keep the new one: the sink's next run would hold
            // a retired token.
            out.push(Check::ok("a refresh token from `auth graph` is stored"));
            out.push(Check::Note(
                "(not redeemed by check: Microsoft rotates refresh tokens on use; the sink keeps the newest in its state)".into(),
            ));
            return out;
        }
        let mut cfg = self.client_config();
        cfg.retry.max_retries = 1;
        cfg.retry.max_total_wait = Duration::from_secs(5);
        cfg.timeout = Duration::from_secs(15);
        let client = match GraphClient::new(cfg, creds, None) {
            Ok(c) => c,
            Err(e) => {
                out.push(Check::fail(e.to_string()));
                return out;
            }
        };
        if let Err(e) = client.access_token().await {
            out.push(Check::fail(format!(
                "no access token from {}: {e}",
                self.token_url
            )));
            return out;
        }
        out.push(Check::ok(format!(
            "access token obtained from {}",
            self.token_url
        )));
        let user = client.user_path();
        match client
            .list_all(Request::new(Method::Get, format!("{user}/calendars")).query("$top", "100"))
            .await
        {
            Err(e) => out.push(Check::fail(format!("mailbox {}: {e}", self.mailbox))),
            Ok(cals) => {
                out.push(Check::ok(format!(
                    "mailbox {} reachable ({} calendars)",
                    self.mailbox,
                    cals.len()
                )));
                out.push(match &self.calendar {
                    TargetCalendar::Primary => Check::ok("the default calendar is the target"),
                    TargetCalendar::Named { name, create } => {
                        if cals.iter().any(|c| c["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name))) {
                            Check::ok(format!("calendar {name:?} found"))
                        } else if *create {
                            Check::Note(format!("(calendar {name:?} is created on the first sync)"))
                        } else {
                            Check::fail(format!("mailbox {} has no calendar named {name:?}; create it or set create_calendar = true", self.mailbox))
                        }
                    }
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const KEY: &str = include_str!("../../../bridge-emulators/src/graph/testdata/test-key.pem");
    const CERT: &str = include_str!("../../../bridge-emulators/src/graph/testdata/test-cert.pem");

    fn validate(json: &str) -> Result<Validated, Vec<String>> {
        let read = |p: &Path| match p.to_str() {
            Some("/etc/fb/secret") => Ok("s3cret\n".to_owned()),
            Some("/etc/fb/cert.pem") => Ok(CERT.to_owned()),
            Some("/etc/fb/key.pem") => Ok(KEY.to_owned()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let ctx = Ctx::new("sinks[1]", Path::new("/etc/fb"), &read);
        let c: Config = serde_json::from_str(json).map_err(|e| vec![e.to_string()])?;
        c.validate(&ctx)
    }

    #[test]
    fn a_secret_sink_gets_microsoft_defaults() {
        let v = validate(r#"{"tenant_id": "t1", "client_id": "c1", "client_secret_file": "secret", "mailbox": "a@b.c"}"#).unwrap();
        assert_eq!(v.id, "graph:graph");
        assert_eq!(
            v.token_url,
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        assert_eq!(v.base_url, "https://graph.microsoft.com");
        assert_eq!(v.calendar, TargetCalendar::Primary);
        assert!(matches!(&v.auth, Auth::Secret { secret } if secret.expose() == "s3cret"));
        assert!(v.token_name().is_none());
        let v = validate(r#"{"tenant_id": "t", "client_id": "c", "certificate_file": "cert.pem", "private_key_file": "key.pem", "mailbox": "m", "calendar": "Feishu", "create_calendar": true, "base_url": "http://127.0.0.1:9/v1.0"}"#).unwrap();
        assert!(matches!(v.auth, Auth::Certificate { .. }));
        assert_eq!(v.base_url, "http://127.0.0.1:9");
        assert_eq!(
            v.calendar,
            TargetCalendar::Named {
                name: "Feishu".into(),
                create: true
            }
        );
        let v =
            validate(r#"{"tenant_id": "t", "client_id": "c", "delegated": true, "mailbox": "m"}"#)
                .unwrap();
        assert_eq!(v.token_name().as_deref(), Some("graph_refresh:graph"));
        assert!(v.credentials(None).is_none());
        assert!(v.credentials(Some("{\"refresh_token\":\"r\"}")).is_some());
    }

    #[test]
    fn every_problem_has_its_key_path() {
        let p = validate(r#"{"client_secret": "x", "certificate_file": "cert.pem", "private_key_file": "gone.pem", "privacy": "open", "calendar": "primary", "create_calendar": true, "on_target_delete": "keep"}"#).unwrap_err();
        let all = p.join("\n");
        for want in [
            "sinks[1].tenant_id: missing",
            "sinks[1].client_id: missing",
            "sinks[1].mailbox: missing",
            "sinks[1].privacy: \"open\"",
            "sinks[1].create_calendar: only with a calendar name",
            "sinks[1].on_target_delete: \"keep\"",
            "sinks[1].private_key_file: cannot read /etc/fb/gone.pem",
        ] {
            assert!(all.contains(want), "{want} not in {all}");
        }
        let p = validate(r#"{"tenant_id": "t", "client_id": "c", "mailbox": "m"}"#).unwrap_err();
        assert!(p[0].starts_with("sinks[1].client_secret: missing"), "{p:?}");
        assert!(serde_json::from_str::<Config>(r#"{"mailboxx": 1}"#).is_err());
    }
}
