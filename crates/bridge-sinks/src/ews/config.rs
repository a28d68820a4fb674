//! `[[sinks]] kind = "ews"`: the TOML table, its validation (every problem
//! with its key path), construction and the health check of `check`.

use std::path::PathBuf;
use std::time::Duration;

use bridge_core::Privacy;
use bridge_http::{RetryPolicy, Secret};
use serde::Deserialize;

use super::client::{ClientConfig, Credentials, EwsClient, messages};
use super::sink::{EwsSink, EwsSinkConfig, OnTargetDelete};
use crate::config::{
    Check, Ctx, StoredToken, TargetToml, ValidatedTarget, ca_roots, check_name, privacy,
    privacy_name, required, required_secret,
};

/// The `RequestServerVersion` values of Microsoft's schema.
const VERSIONS: &[&str] = &[
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
    "V2015_10_05",
    "V2016_01_06",
    "V2016_04_13",
    "V2016_07_13",
    "V2016_10_10",
    "V2017_01_07",
    "V2017_04_14",
    "V2017_07_11",
];

/// The commented `[[sinks]]` table `init` writes.
pub const STARTER: &str = r#"[[sinks]]
kind = "ews"
name = "exchange"                 # sink id "ews:exchange"
url = "https://mail.example.com/EWS/Exchange.asmx"
mailbox = "replace-me@example.com"   # whose calendar receives the mirror
auth = "basic"                    # basic | ntlm | oauth (client credentials; needs impersonation = true)
username = "replace-me"           # a service account with the ApplicationImpersonation role
password = "replace-me"           # or password_file = "ews-password"
impersonation = true
privacy = "full"                  # full | redacted | busy
# on_target_delete = "restore"    # or "respect"
# ca_file = "internal-ca.pem"     # an internal CA's root certificates (PEM), trusted besides the public ones
"#;

/// The table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The sink id is `ews:<name>`.
    #[serde(default = "default_name")]
    pub name: String,
    /// `https://<host>/EWS/Exchange.asmx`.
    pub url: Option<String>,
    /// The SMTP address whose calendar receives the mirror.
    pub mailbox: Option<String>,
    /// `basic`, `ntlm` or `oauth`.
    #[serde(default = "default_auth")]
    pub auth: String,
    /// Basic: the account; NTLM: `DOMAIN\\user`, `user@domain` or `user`.
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// NTLM: the NetBIOS domain when `username` does not name it.
    pub domain: Option<String>,
    /// NTLM: the workstation name sent in the AUTHENTICATE (default none).
    pub workstation: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    #[serde(default)]
    pub impersonation: bool,
    #[serde(default = "default_version")]
    pub version: String,
    /// The calendar folder: `"calendar"` (the default) is the mailbox's
    /// calendar; any other value is the display name of a calendar folder
    /// under it.
    pub folder: Option<String>,
    #[serde(default)]
    pub create_folder: bool,
    #[serde(default = "default_privacy")]
    pub privacy: String,
    /// Items per request (1..=100).
    pub batch_size: Option<usize>,
    /// Requests in flight at once (1..=27).
    pub max_concurrency: Option<usize>,
    #[serde(default = "default_on_target_delete")]
    pub on_target_delete: String,
    /// The horizon of a rule EWS has no pattern for (written as single
    /// occurrences): days before and after now.
    pub fallback_past_days: Option<i64>,
    pub fallback_future_days: Option<i64>,
    /// PEM file of root certificates trusted besides the built-in ones
    /// (an internal CA of an on-premises Exchange).
    pub ca_file: Option<PathBuf>,
}

fn default_name() -> String {
    "ews".to_owned()
}
fn default_auth() -> String {
    "basic".to_owned()
}
fn default_version() -> String {
    "Exchange2016".to_owned()
}
fn default_privacy() -> String {
    "full".to_owned()
}
fn default_on_target_delete() -> String {
    "restore".to_owned()
}

/// A validated EWS sink.
#[derive(Debug, Clone)]
pub struct Validated {
    pub name: String,
    /// `ews:<name>`.
    pub id: String,
    pub privacy: Privacy,
    pub credentials: Credentials,
    pub client: ClientConfig,
    pub batch_size: usize,
    pub on_target_delete: OnTargetDelete,
    pub fallback_past_days: i64,
    pub fallback_future_days: i64,
    /// `password_file`, resolved (re-read while paused).
    pub password_file: Option<std::path::PathBuf>,
    /// A named calendar folder under the mailbox's calendar.
    pub folder: Option<String>,
    pub create_folder: bool,
}

impl TargetToml for Config {
    type Validated = Validated;
    const KIND: &'static str = "ews";
    const STARTER: &'static str = STARTER;

    fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
        let mut p = Vec::new();
        let key = |k: &str| ctx.key(k);
        check_name(&self.name, &key("name"), &mut p);
        let privacy = privacy(&self.privacy, &key("privacy"), &mut p);
        let url = match self.url.as_deref().map(str::trim) {
            None | Some("") => {
                p.push(format!(
                    "{}: missing (the EWS endpoint, e.g. \"https://mail.example.com/EWS/Exchange.asmx\")",
                    key("url")
                ));
                String::new()
            }
            Some(u) => {
                match url::Url::parse(u) {
                    Ok(x) if matches!(x.scheme(), "http" | "https") => {}
                    _ => p.push(format!("{}: {u:?} is not an http(s) URL", key("url"))),
                }
                u.to_owned()
            }
        };
        let mailbox = match self.mailbox.as_deref().map(str::trim) {
            Some(m) if m.contains('@') && !m.contains(char::is_whitespace) => m.to_owned(),
            Some(m) => {
                p.push(format!("{}: {m:?} is not an SMTP address", key("mailbox")));
                String::new()
            }
            None => {
                p.push(format!(
                    "{}: missing (the SMTP address whose calendar receives the mirror)",
                    key("mailbox")
                ));
                String::new()
            }
        };
        if !VERSIONS.contains(&self.version.as_str()) {
            p.push(format!(
                "{}: {:?} is not a RequestServerVersion (e.g. \"Exchange2016\", \"Exchange2013_SP1\")",
                key("version"),
                self.version
            ));
        }
        let folder = match self.folder.as_deref().map(str::trim) {
            None | Some("calendar") => None,
            Some("") => {
                p.push(format!(
                    "{}: empty; leave it out for the mailbox's calendar, or name a calendar folder",
                    key("folder")
                ));
                None
            }
            Some(f) if f.chars().any(char::is_control) => {
                p.push(format!("{}: {f:?} has control characters", key("folder")));
                None
            }
            Some(f) => Some(f.to_owned()),
        };
        if self.create_folder && folder.is_none() {
            p.push(format!(
                "{}: needs {} naming a calendar folder (the mailbox's calendar always exists)",
                key("create_folder"),
                key("folder")
            ));
        }
        let batch_size = self.batch_size.unwrap_or(50);
        if !(1..=100).contains(&batch_size) {
            p.push(format!(
                "{}: {batch_size} must be 1 to 100",
                key("batch_size")
            ));
        }
        let max_concurrency = self.max_concurrency.unwrap_or(4);
        if !(1..=27).contains(&max_concurrency) {
            p.push(format!(
                "{}: {max_concurrency} must be 1 to 27 (Exchange's own limit per account)",
                key("max_concurrency")
            ));
        }
        let on_target_delete = match self.on_target_delete.as_str() {
            "restore" => OnTargetDelete::Restore,
            "respect" => OnTargetDelete::Respect,
            other => {
                p.push(format!(
                    "{}: {other:?} is not one of \"restore\", \"respect\"",
                    key("on_target_delete")
                ));
                OnTargetDelete::Restore
            }
        };
        let past = self.fallback_past_days.unwrap_or(365);
        let future = self.fallback_future_days.unwrap_or(730);
        for (k, v) in [
            ("fallback_past_days", past),
            ("fallback_future_days", future),
        ] {
            if !(0..=3650).contains(&v) {
                p.push(format!("{}: {v} must be 0 to 3650 days", key(k)));
            }
        }
        let extra_roots = ca_roots(ctx, self.ca_file.as_deref(), &key("ca_file"), &mut p);
        let credentials = self.credentials(ctx, &mut p);
        match (credentials, privacy) {
            (Some(credentials), Some(privacy)) if p.is_empty() => {
                let impersonation = self.impersonation;
                Ok(Validated {
                    id: format!("ews:{}", self.name),
                    name: self.name.clone(),
                    privacy,
                    credentials,
                    client: ClientConfig {
                        url,
                        mailbox,
                        impersonation,
                        version: self.version.clone(),
                        max_concurrency,
                        timeout: Duration::from_secs(60),
                        retry: RetryPolicy::default(),
                        extra_roots,
                    },
                    batch_size,
                    on_target_delete,
                    fallback_past_days: past,
                    fallback_future_days: future,
                    password_file: self.password_file.as_deref().map(|f| ctx.resolve(f)),
                    folder,
                    create_folder: self.create_folder,
                })
            }
            _ => Err(p),
        }
    }
}

impl Config {
    fn credentials(&self, ctx: &Ctx<'_>, p: &mut Vec<String>) -> Option<Credentials> {
        let key = |k: &str| ctx.key(k);
        let not_with = |p: &mut Vec<String>, keys: &[(&str, bool)], auth: &str| {
            for (k, set) in keys {
                if *set {
                    p.push(format!("{}: not used with auth = {auth:?}", key(k)));
                }
            }
        };
        match self.auth.as_str() {
            "basic" => {
                not_with(
                    p,
                    &[
                        ("tenant_id", self.tenant_id.is_some()),
                        ("client_id", self.client_id.is_some()),
                        ("client_secret", self.client_secret.is_some()),
                        ("client_secret_file", self.client_secret_file.is_some()),
                        ("token_url", self.token_url.is_some()),
                        ("scope", self.scope.is_some()),
                        ("domain", self.domain.is_some()),
                        ("workstation", self.workstation.is_some()),
                    ],
                    "basic",
                );
                let (username, password) = self.user_and_password(ctx, "basic", p);
                Some(Credentials::Basic {
                    username: username?,
                    password: password?,
                })
            }
            "ntlm" => {
                not_with(
                    p,
                    &[
                        ("tenant_id", self.tenant_id.is_some()),
                        ("client_id", self.client_id.is_some()),
                        ("client_secret", self.client_secret.is_some()),
                        ("client_secret_file", self.client_secret_file.is_some()),
                        ("token_url", self.token_url.is_some()),
                        ("scope", self.scope.is_some()),
                    ],
                    "ntlm",
                );
                let (username, password) = self.user_and_password(ctx, "ntlm", p);
                if let Some(w) = &self.workstation
                    && (w.trim().is_empty() || w.chars().any(|c| c.is_control() || c == '\\'))
                {
                    p.push(format!(
                        "{}: {w:?} is not a workstation name",
                        key("workstation")
                    ));
                }
                if let Some(d) = &self.domain
                    && (d.trim().is_empty() || d.chars().any(|c| c.is_control() || c == '\\'))
                {
                    p.push(format!("{}: {d:?} is not a domain name", key("domain")));
                }
                let username = username?;
                let account = match super::ntlm::Account::parse(
                    &username,
                    self.domain.as_deref(),
                    self.workstation.as_deref(),
                ) {
                    Ok(a) => a,
                    Err(e) => {
                        p.push(format!("{}: {e}", key("username")));
                        return None;
                    }
                };
                Some(Credentials::Ntlm {
                    username,
                    account,
                    password: password?,
                })
            }
            "oauth" => {
                not_with(
                    p,
                    &[
                        ("username", self.username.is_some()),
                        ("password", self.password.is_some()),
                        ("password_file", self.password_file.is_some()),
                        ("domain", self.domain.is_some()),
                        ("workstation", self.workstation.is_some()),
                    ],
                    "oauth",
                );
                if !self.impersonation {
                    p.push(format!(
                        "{}: must be true with auth = \"oauth\" (an app-only token writes into a mailbox through ExchangeImpersonation)",
                        key("impersonation")
                    ));
                }
                let client_id = required(
                    self.client_id.as_deref(),
                    &key("client_id"),
                    "required with auth = \"oauth\"",
                    p,
                );
                let client_secret = required_secret(
                    ctx,
                    self.client_secret.as_deref(),
                    self.client_secret_file.as_deref(),
                    &key("client_secret"),
                    "required with auth = \"oauth\"",
                    p,
                );
                let token_url = match (&self.token_url, &self.tenant_id) {
                    (Some(u), _) => Some(u.trim().to_owned()),
                    (None, Some(t)) if !t.trim().is_empty() => Some(format!(
                        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                        t.trim()
                    )),
                    _ => {
                        p.push(format!(
                            "{}: missing (or set {}); required with auth = \"oauth\"",
                            key("tenant_id"),
                            key("token_url")
                        ));
                        None
                    }
                };
                if let Some(u) = &token_url
                    && !url::Url::parse(u).is_ok_and(|x| matches!(x.scheme(), "http" | "https"))
                {
                    p.push(format!("{}: {u:?} is not an http(s) URL", key("token_url")));
                }
                let scope = self
                    .scope
                    .clone()
                    .unwrap_or_else(|| "https://outlook.office365.com/.default".to_owned());
                Some(Credentials::ClientCredentials {
                    token_url: token_url?,
                    client_id: client_id?,
                    client_secret: Secret::new(client_secret?),
                    scope,
                })
            }
            other => {
                p.push(format!(
                    "{}: {other:?} is not one of \"basic\", \"ntlm\", \"oauth\"",
                    key("auth")
                ));
                None
            }
        }
    }
}

impl Config {
    /// `username` and `password` / `password_file` of Basic and NTLM.
    fn user_and_password(
        &self,
        ctx: &Ctx<'_>,
        auth: &str,
        p: &mut Vec<String>,
    ) -> (Option<String>, Option<Secret>) {
        let key = |k: &str| ctx.key(k);
        let why = format!("required with auth = {auth:?}");
        let username = required(self.username.as_deref(), &key("username"), &why, p);
        let password = required_secret(
            ctx,
            self.password.as_deref(),
            self.password_file.as_deref(),
            &key("password"),
            &why,
            p,
        );
        (username, password.map(Secret::new))
    }
}

impl Validated {
    pub fn sink_config(&self) -> EwsSinkConfig {
        EwsSinkConfig {
            id: self.id.clone(),
            privacy: self.privacy,
            on_target_delete: self.on_target_delete,
            batch_size: self.batch_size,
            fallback_past_days: self.fallback_past_days,
            fallback_future_days: self.fallback_future_days,
            client: self.client.clone(),
            password_file: self.password_file.clone(),
            pause_retry: super::sink::PAUSE_RETRY,
            folder: self.folder.clone(),
            create_folder: self.create_folder,
        }
    }

    pub fn build(&self) -> EwsSink {
        EwsSink::new(self.sink_config(), self.credentials.clone())
    }
}

#[async_trait::async_trait]
impl ValidatedTarget for Validated {
    fn kind(&self) -> &'static str {
        "ews"
    }

    fn build(
        &self,
        env: crate::config::BuildEnv,
    ) -> std::sync::Arc<dyn crate::config::BuiltTarget> {
        std::sync::Arc::new(super::Built(std::sync::Arc::new(
            self.build().with_state(env.state),
        )))
    }

    fn room_place(&self) -> Option<crate::config::RoomPlace> {
        Some(crate::config::RoomPlace::Named {
            key: "mailbox",
            why: "a room mailbox is named by mailbox",
        })
    }

    fn check_room(
        &self,
        label: &str,
        _pick: Option<crate::config::RoomPick<'_>>,
        place: Option<&str>,
        problems: &mut Vec<String>,
    ) {
        if let Some(v) = place.filter(|v| !v.contains('@')) {
            problems.push(format!(
                "{label}.mailbox: {v:?} is not an SMTP address (EWS names a room mailbox by its address)"
            ));
        }
    }

    /// A sink writing into the room mailbox, and its availability.
    fn room(
        &self,
        _env: crate::config::RoomEnv,
        place: Option<&str>,
    ) -> Result<crate::config::RoomTarget, String> {
        use std::sync::Arc;
        let mailbox = place.ok_or("no mailbox")?.to_owned();
        let mut rc = self.clone();
        rc.client.mailbox = mailbox.clone();
        let client = Arc::new(
            EwsClient::new(rc.client.clone(), rc.credentials.clone()).map_err(|e| e.to_string())?,
        );
        let room = mailbox.clone();
        let busy = crate::config::BusyLookup {
            what: "EWS GetUserAvailability",
            f: Arc::new(move |from, to| {
                let (client, room) = (client.clone(), room.clone());
                Box::pin(async move {
                    super::availability::busy(&client, &room, from, to)
                        .await
                        .map_err(|e| e.to_string())
                })
            }),
        };
        Ok(crate::config::RoomTarget::Replica {
            replica: Arc::new(rc.build()),
            busy: Some(busy),
            what: format!("room mailbox {mailbox} through {}", self.id),
        })
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn explain(&self, _calendar: &str, remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        vec![format!(
            "EWS {} calendar of {}, {}",
            self.client.url,
            self.client.mailbox,
            crate::config::remote_line(remote, "item", "ChangeKey")
        )]
    }

    fn describe(&self) -> String {
        format!(
            "Exchange (EWS) {} calendar of {}{}, privacy {}",
            self.client.url,
            self.client.mailbox,
            if self.client.impersonation {
                " (impersonated)"
            } else {
                ""
            },
            privacy_name(self.privacy)
        )
    }

    /// Whether the URL answers and which server version, whether the
    /// credentials work, and whether the mailbox's calendar (through
    /// impersonation, when set) is reachable: one `GetFolder`.
    async fn healthcheck(&self, _stored: StoredToken) -> Vec<Check> {
        let mut out = Vec::new();
        let mut cfg = self.client.clone();
        cfg.retry.max_retries = 1;
        cfg.retry.max_total_wait = Duration::from_secs(5);
        cfg.timeout = Duration::from_secs(15);
        let client = match EwsClient::new(cfg, self.credentials.clone()) {
            Ok(c) => c,
            Err(e) => {
                out.push(Check::fail(e.to_string()));
                return out;
            }
        };
        let body = format!(
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id=\"calendar\">{}</t:DistinguishedFolderId></m:FolderIds></m:GetFolder>",
            if self.client.impersonation {
                String::new()
            } else {
                format!(
                    "<t:Mailbox><t:EmailAddress>{}</t:EmailAddress></t:Mailbox>",
                    super::xml::esc(&self.client.mailbox)
                )
            }
        );
        let root = match client.envelope_call("GetFolder", &body).await {
            Ok(r) => r,
            Err(e) => {
                let what = match &e {
                    super::EwsError::Unauthorized(_) | super::EwsError::Token(_) => {
                        "credentials refused"
                    }
                    super::EwsError::Denied { .. } => "mailbox not reachable",
                    super::EwsError::Unavailable(_) => "no answer",
                    _ => "refused",
                };
                out.push(Check::fail(format!("{}: {what}: {e}", self.client.url)));
                return out;
            }
        };
        let version = root
            .path(&["Header", "ServerVersionInfo"])
            .map(|v| {
                format!(
                    "{}.{}.{}.{}",
                    v.attr("MajorVersion").unwrap_or("?"),
                    v.attr("MinorVersion").unwrap_or("?"),
                    v.attr("MajorBuildNumber").unwrap_or("?"),
                    v.attr("MinorBuildNumber").unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "unknown".to_owned());
        out.push(Check::ok(format!(
            "{} answers (Exchange {version})",
            self.client.url
        )));
        out.push(Check::ok(match &self.credentials {
            Credentials::Basic { username, .. } => format!("credentials of {username} accepted"),
            Credentials::Ntlm { account, .. } => {
                format!("NTLM credentials of {} accepted", account.display())
            }
            Credentials::ClientCredentials { client_id, .. } => {
                format!("OAuth token for app {client_id} accepted")
            }
        }));
        let answer = root.child("Body").and_then(|b| b.children.first());
        match answer.map(messages).and_then(|m| m.into_iter().next()) {
            Some(m) if m.ok() => out.push(Check::ok(format!(
                "calendar of {} reachable{}",
                self.client.mailbox,
                if self.client.impersonation {
                    " through impersonation"
                } else {
                    ""
                }
            ))),
            Some(m) => out.push(Check::fail(format!(
                "calendar of {}: {}: {}",
                self.client.mailbox, m.code, m.message
            ))),
            None => out.push(Check::fail("GetFolder answered nothing".to_owned())),
        }
        if let Some(name) = &self.folder {
            out.push(
                match super::folder::find(&client, self.client.impersonation, name).await {
                    Ok(Some(_)) => Check::ok(format!("calendar folder {name:?} found")),
                    Ok(None) if self.create_folder => Check::ok(format!(
                        "calendar folder {name:?} not found; the first run creates it (create_folder = true)"
                    )),
                    Ok(None) => Check::fail(format!(
                        "calendar folder {name:?} not found under the calendar of {}; create it or set create_folder = true",
                        self.client.mailbox
                    )),
                    Err(e) => Check::fail(format!("calendar folder {name:?}: {e}")),
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn validate(toml_text: &str) -> Result<Validated, Vec<String>> {
        let read = |p: &Path| {
            match p.to_str() {
            Some("/etc/fb/pw") => Ok("s3cret\n".to_owned()),
            Some("/etc/fb/ca.pem") => Ok(TEST_ROOT.to_owned()),
            Some("/etc/fb/two.pem") => Ok(format!("{TEST_ROOT}\n{TEST_ROOT}")),
            Some("/etc/fb/key.pem") => Ok(
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"
                    .to_owned(),
            ),
            Some("/etc/fb/broken.pem") => {
                Ok("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_owned())
            }
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
        };
        let ctx = Ctx::new("sinks[2]", Path::new("/etc/fb"), &read);
        let c: Config = toml::from_str(toml_text).map_err(|e| vec![e.to_string()])?;
        c.validate(&ctx)
    }

    /// The test-only root of the TLS tests (`tests/it/tls`).
    const TEST_ROOT: &str = include_str!("../../tests/it/tls/root.pem");

    #[test]
    fn a_ca_file_is_read_as_pem_roots_with_problems_named() {
        let base = "url = \"https://mail.example.com/EWS/Exchange.asmx\"\nmailbox = \"a@example.com\"\nusername = \"svc\"\npassword = \"p\"\nimpersonation = true\n";
        let v = validate(base).unwrap();
        assert!(v.client.extra_roots.is_empty());
        let v = validate(&format!("{base}ca_file = \"ca.pem\"\n")).unwrap();
        assert_eq!(v.client.extra_roots.len(), 1);
        // The DER of the PEM block.
        assert_eq!(v.client.extra_roots[0][0], 0x30, "a DER SEQUENCE");
        let v = validate(&format!("{base}ca_file = \"/etc/fb/two.pem\"\n")).unwrap();
        assert_eq!(v.client.extra_roots.len(), 2);
        for (file, want) in [
            (
                "nope.pem",
                "sinks[2].ca_file: cannot read /etc/fb/nope.pem: ",
            ),
            (
                "key.pem",
                "sinks[2].ca_file: /etc/fb/key.pem holds no certificate",
            ),
            (
                "broken.pem",
                "sinks[2].ca_file: /etc/fb/broken.pem is not a PEM certificate file",
            ),
        ] {
            let e = validate(&format!("{base}ca_file = \"{file}\"\n")).unwrap_err();
            assert!(e.iter().any(|p| p.starts_with(want)), "{want} in {e:#?}");
        }
    }

    #[test]
    fn basic_and_oauth_validate() {
        let v = validate(
            "url = \"https://mail.example.com/EWS/Exchange.asmx\"\nmailbox = \"a@example.com\"\nusername = \"svc\"\npassword_file = \"pw\"\nimpersonation = true\n",
        )
        .unwrap();
        assert_eq!(v.id, "ews:ews");
        assert_eq!(v.batch_size, 50);
        assert_eq!(v.client.version, "Exchange2016");
        assert!(
            matches!(&v.credentials, Credentials::Basic { password, .. } if password.expose() == "s3cret")
        );
        let v = validate(
            "name = \"x\"\nurl = \"https://outlook.office365.com/EWS/Exchange.asmx\"\nmailbox = \"a@example.com\"\nauth = \"oauth\"\ntenant_id = \"contoso\"\nclient_id = \"c\"\nclient_secret = \"s\"\nimpersonation = true\n",
        )
        .unwrap();
        assert!(
            matches!(&v.credentials, Credentials::ClientCredentials { token_url, scope, .. }
            if token_url == "https://login.microsoftonline.com/contoso/oauth2/v2.0/token" && scope == "https://outlook.office365.com/.default")
        );
    }

    #[test]
    fn every_problem_with_its_key() {
        let e = validate(
            "url = \"ftp://x\"\nmailbox = \"nobody\"\nauth = \"oauth\"\nusername = \"u\"\nversion = \"Exchange2099\"\nbatch_size = 0\nfolder = \"\"\non_target_delete = \"ignore\"\nprivacy = \"open\"\n",
        )
        .unwrap_err();
        let want = [
            "sinks[2].privacy:",
            "sinks[2].url: \"ftp://x\" is not an http(s) URL",
            "sinks[2].mailbox: \"nobody\" is not an SMTP address",
            "sinks[2].version: \"Exchange2099\"",
            "sinks[2].folder:",
            "sinks[2].batch_size: 0 must be 1 to 100",
            "sinks[2].on_target_delete:",
            "sinks[2].username: not used with auth = \"oauth\"",
            "sinks[2].impersonation: must be true",
            "sinks[2].client_id: missing",
            "sinks[2].client_secret: missing",
            "sinks[2].tenant_id: missing",
        ];
        for w in want {
            assert!(e.iter().any(|p| p.starts_with(w)), "{w} in {e:#?}");
        }
    }

    #[test]
    fn ntlm_validates() {
        let base = "url = \"https://mail.example.com/EWS/Exchange.asmx\"\nmailbox = \"a@example.com\"\nauth = \"ntlm\"\n";
        let v = validate(&format!(
            "{base}username = \"CONTOSO\\\\svc\"\npassword_file = \"pw\"\nworkstation = \"BRIDGE\"\n"
        ))
        .unwrap();
        let Credentials::Ntlm {
            username,
            account,
            password,
        } = &v.credentials
        else {
            panic!("{:?}", v.credentials)
        };
        assert_eq!(username, "CONTOSO\\svc");
        assert_eq!(
            (
                account.user.as_str(),
                account.domain.as_str(),
                account.workstation.as_str()
            ),
            ("svc", "CONTOSO", "BRIDGE")
        );
        assert_eq!(password.expose(), "s3cret");
        assert_eq!(v.password_file.as_deref(), Some(Path::new("/etc/fb/pw")));
        let v = validate(&format!(
            "{base}username = \"svc@contoso.com\"\npassword = \"p\"\n"
        ))
        .unwrap();
        assert!(
            matches!(&v.credentials, Credentials::Ntlm { account, .. } if account.user == "svc@contoso.com" && account.domain.is_empty())
        );
        let v = validate(&format!(
            "{base}username = \"svc\"\ndomain = \"CONTOSO\"\npassword = \"p\"\n"
        ))
        .unwrap();
        assert!(
            matches!(&v.credentials, Credentials::Ntlm { account, .. } if account.domain == "CONTOSO")
        );
    }

    #[test]
    fn ntlm_problems_with_their_keys() {
        let base = "url = \"https://x/EWS/Exchange.asmx\"\nmailbox = \"a@b\"\nauth = \"ntlm\"\n";
        let e = validate(&format!(
            "{base}client_id = \"c\"\nworkstation = \"\"\ndomain = \"A\\\\B\"\n"
        ))
        .unwrap_err();
        for w in [
            "sinks[2].client_id: not used with auth = \"ntlm\"",
            "sinks[2].username: missing (required with auth = \"ntlm\")",
            "sinks[2].password: missing (or set sinks[2].password_file); required with auth = \"ntlm\"",
            "sinks[2].workstation: \"\" is not a workstation name",
            "sinks[2].domain: \"A\\\\B\" is not a domain name",
        ] {
            assert!(e.iter().any(|p| p.starts_with(w)), "{w} in {e:#?}");
        }
        let e = validate(&format!(
            "{base}username = \"CONTOSO\\\\svc\"\ndomain = \"FABRIKAM\"\npassword = \"p\"\n"
        ))
        .unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.starts_with("sinks[2].username: \"CONTOSO\\\\svc\" names the domain")),
            "{e:#?}"
        );
        let e = validate(&format!(
            "{base}username = \"CONTOSO\\\\\"\npassword_file = \"missing\"\n"
        ))
        .unwrap_err();
        assert!(
            e.iter().any(|p| p.starts_with("sinks[2].password")),
            "{e:#?}"
        );
        let e = validate(
            "url = \"https://x/EWS/Exchange.asmx\"\nmailbox = \"a@b\"\nusername = \"u\"\npassword = \"p\"\ndomain = \"D\"\n",
        )
        .unwrap_err();
        assert!(
            e.iter()
                .any(|p| p.starts_with("sinks[2].domain: not used with auth = \"basic\"")),
            "{e:#?}"
        );
    }

    #[test]
    fn a_named_folder_and_create_folder() {
        let base = "url = \"https://x/EWS/Exchange.asmx\"\nmailbox = \"a@example.com\"\nusername = \"svc\"\npassword = \"p\"\nimpersonation = true\n";
        let v = validate(&format!(
            "{base}folder = \"Feishu\"\ncreate_folder = true\n"
        ))
        .unwrap();
        assert_eq!(
            (v.folder.as_deref(), v.create_folder),
            (Some("Feishu"), true)
        );
        let v = validate(&format!("{base}folder = \"calendar\"\n")).unwrap();
        assert_eq!(v.folder, None);
        let e = validate(&format!("{base}create_folder = true\n")).unwrap_err();
        assert!(e[0].starts_with("sinks[2].create_folder: needs"), "{e:?}");
    }
}
