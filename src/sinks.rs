//! The one registry of target kinds (`[[sinks]] kind = "..."`).
//!
//! Each kind is a module of `bridge-sinks` that owns its TOML table, its
//! validation (every problem with its key path), construction, health check,
//! its `status` line and, optionally, authorization (the traits
//! `TargetToml` and `ValidatedTarget`). This file holds the list of kinds
//! and the few matches that need the concrete sink types (reading, building,
//! the token hand-over); nothing else in the binary names a kind. Every
//! match is exhaustive, so the compiler lists what a new kind must add.

use std::sync::Arc;

use anyhow::Context;
use bridge_engine::Sink;
use bridge_sinks::config::{
    Authorization, Check, Ctx, StoredToken, TargetToml, TokenRefused, ValidatedTarget,
};
use bridge_sinks::{ews, feed, google, graph, ics};
use bridge_store::Store;

/// Every kind: its `kind` name, and whether `auth <kind>` applies to it.
pub(crate) const KINDS: &[(&str, bool)] = &[
    ("ics", false),
    ("google", true),
    ("feed", false),
    ("graph", true),
    ("ews", false),
];

/// The commented `[[sinks]]` table `init` writes for `kind`.
pub(crate) fn starter(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "ics" => {
            r#"[[sinks]]
kind = "ics"
dir = "out/ics"                   # one .ics file per calendar, replaced atomically
privacy = "full"                  # full | redacted | busy
"#
        }
        "google" => {
            r#"[[sinks]]
kind = "google"
name = "google"                   # sink id "google:google"
calendar_id = "primary"           # or create_calendars = true
client_id = "replace-me.apps.googleusercontent.com"   # an OAuth client of type "Desktop app"
client_secret = "replace-me"      # then: feishu-bridge auth google
privacy = "full"                  # full | redacted | busy
# on_target_delete = "restore"    # or "respect"
"#
        }
        "feed" => {
            r#"[[sinks]]
kind = "feed"
name = "team"                     # sink id "feed:team"; served at /feeds/<secret>.ics by `run`
calendars = "all"                 # or a list of calendar ids
privacy = "busy"                  # full | redacted | busy
# combine = true                  # one feed of all its calendars
"#
        }
        "graph" => {
            r#"[[sinks]]
kind = "graph"
name = "exchange"                 # sink id "graph:exchange"
tenant_id = "replace-me"          # Entra ID tenant (directory) id
client_id = "replace-me"          # app registration with Calendars.ReadWrite (application)
client_secret = "replace-me"      # or certificate_file + private_key_file
mailbox = "someone@example.com"   # user id or UPN whose calendar receives the mirror
calendar = "primary"              # or a calendar name (create_calendar = true creates it)
privacy = "full"                  # full | redacted | busy
"#
        }
        "ews" => {
            r#"[[sinks]]
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
"#
        }
        _ => return None,
    })
}

/// A validated target, by kind.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Ics(ics::config::Validated),
    Google(Box<google::config::Validated>),
    Feed(feed::config::Validated),
    Graph(Box<graph::config::Validated>),
    Ews(Box<ews::config::Validated>),
}

/// A built sink, with what its kind needs later (the token hand-over).
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    Ics(Arc<ics::IcsSink>),
    Google {
        sink: Arc<google::GoogleSink>,
        config: Box<google::config::Validated>,
    },
    Feed(Arc<feed::FeedSink>),
    Graph {
        sink: Arc<graph::GraphSink>,
        config: Box<graph::config::Validated>,
    },
    Ews(Arc<ews::EwsSink>),
}

/// Reads the table of `kind` (without its `kind` key) with its module's
/// `Config` and validates it; problems carry `ctx`'s key path.
pub(crate) fn read(
    kind: &str,
    table: toml::Value,
    ctx: &Ctx<'_>,
    problems: &mut Vec<String>,
) -> Option<Target> {
    Some(match kind {
        "ics" => Target::Ics(validate::<ics::config::Config>(table, ctx, problems)?),
        "google" => Target::Google(Box::new(validate::<google::config::Config>(
            table, ctx, problems,
        )?)),
        "feed" => Target::Feed(validate::<feed::config::Config>(table, ctx, problems)?),
        "graph" => Target::Graph(Box::new(validate::<graph::config::Config>(
            table, ctx, problems,
        )?)),
        "ews" => Target::Ews(Box::new(validate::<ews::config::Config>(
            table, ctx, problems,
        )?)),
        other => {
            let known: Vec<String> = KINDS.iter().map(|(k, _)| format!("{k:?}")).collect();
            problems.push(format!(
                "{}: {other:?} is not a sink kind (one of {})",
                ctx.key("kind"),
                known.join(", ")
            ));
            return None;
        }
    })
}

fn validate<C: TargetToml>(
    table: toml::Value,
    ctx: &Ctx<'_>,
    problems: &mut Vec<String>,
) -> Option<C::Validated> {
    let config: C = crate::config::read_table(table, ctx.prefix(), problems)?;
    config.validate(ctx).map_err(|p| problems.extend(p)).ok()
}

impl Target {
    /// What every kind answers through its module.
    pub(crate) fn config(&self) -> &dyn ValidatedTarget {
        match self {
            Self::Ics(c) => c,
            Self::Google(c) => c.as_ref(),
            Self::Feed(c) => c,
            Self::Graph(c) => c.as_ref(),
            Self::Ews(c) => c.as_ref(),
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        self.config().kind()
    }

    /// The sink id its records carry.
    pub(crate) fn id(&self) -> String {
        self.config().id()
    }

    /// The `name` key of kinds that have one (unique per kind).
    pub(crate) fn name(&self) -> Option<&str> {
        self.config().name()
    }

    /// How `check` names it after `sinks[i]`.
    pub(crate) fn label(&self) -> String {
        self.config().label()
    }

    /// Where it writes, for `status`.
    pub(crate) fn describe(&self) -> String {
        self.config().describe()
    }

    /// What `auth <kind>` does for it (`None`: the kind needs nothing).
    pub(crate) fn authorization(&self) -> Option<Authorization> {
        self.config().authorization()
    }

    /// The token its kind keeps, read from `store`.
    async fn stored_token(&self, store: &Store) -> anyhow::Result<Option<String>> {
        match self.config().token_name() {
            Some(name) => store
                .get_token(&name)
                .await
                .with_context(|| format!("cannot read the token {name} from the store")),
            None => Ok(None),
        }
    }

    /// The sink, by its module. A sink without the credentials it needs is
    /// built paused. Feeds publish into `feeds`, the book the daemon
    /// serves, and keep their bodies in `feeds/<name>/` next to the store.
    pub(crate) async fn build(
        &self,
        store: &Store,
        feeds: &Arc<feed::FeedBook>,
    ) -> anyhow::Result<Handle> {
        let token = self.stored_token(store).await?;
        Ok(match self {
            Self::Ics(c) => Handle::Ics(Arc::new(c.build())),
            Self::Google(c) => Handle::Google {
                sink: Arc::new(c.build(
                    c.credentials(token.as_deref()),
                    Arc::new(bridge_engine::SinkState::new(store.clone(), c.id.clone())),
                )),
                config: c.clone(),
            },
            Self::Feed(c) => {
                let dir = store
                    .path()
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("feeds")
                    .join(&c.name);
                Handle::Feed(Arc::new(c.build(
                    Arc::new(bridge_engine::SinkState::new(store.clone(), c.id())),
                    feeds.clone(),
                    Some(dir),
                )))
            }
            Self::Graph(c) => Handle::Graph {
                sink: Arc::new(c.build(
                    token.as_deref(),
                    Arc::new(bridge_engine::SinkState::new(store.clone(), c.id.clone())),
                )),
                config: c.clone(),
            },
            Self::Ews(c) => Handle::Ews(Arc::new(c.build().with_state(Arc::new(
                bridge_engine::SinkState::new(store.clone(), c.id.clone()),
            )))),
        })
    }

    /// The health check of `check`. `store` is the store when it opened
    /// (`None` when it does not exist yet or a daemon holds it: `locked`).
    pub(crate) async fn healthcheck(&self, store: Option<&Store>, locked: bool) -> Vec<Check> {
        let stored = match store {
            Some(store) => match self.stored_token(store).await {
                Ok(v) => StoredToken::Value(v),
                Err(e) => StoredToken::Unreadable(format!("{e:#}")),
            },
            None if locked => StoredToken::StoreLocked,
            None => StoredToken::Value(None),
        };
        self.config().healthcheck(stored).await
    }
}

impl Handle {
    pub(crate) fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Self::Ics(s) => s.clone(),
            Self::Google { sink, .. } => sink.clone(),
            Self::Feed(s) => s.clone(),
            Self::Graph { sink, .. } => sink.clone(),
            Self::Ews(s) => s.clone(),
        }
    }

    pub(crate) fn id(&self) -> String {
        self.sink().id().to_owned()
    }

    /// The feed sink, for kind "feed".
    pub(crate) fn feed(&self) -> Option<&Arc<feed::FeedSink>> {
        match self {
            Self::Feed(s) => Some(s),
            _ => None,
        }
    }

    /// Why the sink is paused, if it is.
    pub(crate) fn paused(&self) -> Option<String> {
        self.sink().paused()
    }

    /// The target's API calls by endpoint template and HTTP status, for
    /// `/metrics` (kinds without an API: none).
    pub(crate) fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        match self {
            Self::Google { sink, .. } => sink.calls(),
            Self::Graph { sink, .. } => sink.calls(),
            Self::Ews(s) => s.calls(),
            Self::Ics(_) | Self::Feed(_) => Default::default(),
        }
    }

    /// The daemon's token hand-over (`auth <kind>` while the daemon holds
    /// the store): the token is checked, stored, and given to the sink,
    /// which resumes if it was paused for authorization.
    pub(crate) async fn hand_over(&self, store: &Store, token: &str) -> Result<(), TokenRefused> {
        match self {
            Self::Google { sink, config } => {
                let creds = config.check_token(token)?;
                let name = google::token_name(&config.id);
                store
                    .put_token(&name, token)
                    .await
                    .map_err(|e| TokenRefused::Failed(format!("cannot store the token: {e}")))?;
                google::authorize::take_token(sink, creds)
            }
            Self::Graph { sink, config } => {
                let creds = config.check_token(token)?;
                let name = graph::token_name(&config.id);
                store
                    .put_token(&name, token)
                    .await
                    .map_err(|e| TokenRefused::Failed(format!("cannot store the token: {e}")))?;
                graph::authorize::take_token(sink, config, creds)
            }
            other => Err(TokenRefused::NotUsed(format!(
                "sink {} takes no token",
                other.id()
            ))),
        }
    }
}
