//! The one registry of target kinds (`[[sinks]] kind = "..."`).
//!
//! Each kind is a module of `bridge-sinks` that owns its TOML table, its
//! validation (every problem with its key path), construction, health check
//! and, optionally, authorization. This file holds the list of kinds and
//! one match per capability; nothing else in the binary names a kind.

use std::sync::Arc;

use anyhow::Context;
use bridge_engine::Sink;
use bridge_sinks::config::{Authorization, Check, Ctx, StoredToken, TokenRefused};
use bridge_sinks::{google, ics};
use bridge_store::Store;

/// Every kind: its `kind` name, and whether `auth <kind>` applies to it.
pub(crate) const KINDS: &[(&str, bool)] = &[("ics", false), ("google", true)];

/// A `[[sinks]]` table, as written (read by its kind's module).
#[derive(Debug, Clone)]
pub(crate) enum SinkToml {
    Ics(ics::config::Config),
    Google(Box<google::config::Config>),
}

/// A validated target.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Ics(ics::config::Validated),
    Google(Box<google::config::Validated>),
}

/// A built sink, with what its kind needs later (the token hand-over).
#[derive(Debug, Clone)]
pub(crate) enum Handle {
    Ics(Arc<ics::IcsSink>),
    Google {
        sink: Arc<google::GoogleSink>,
        config: Box<google::config::Validated>,
    },
}

impl SinkToml {
    /// Reads the table of `kind` (without its `kind` key); problems carry
    /// `path` (`sinks[1]`). `None` for an unknown kind.
    pub(crate) fn read(
        kind: &str,
        table: toml::Value,
        path: &str,
        problems: &mut Vec<String>,
    ) -> Option<Self> {
        use crate::config::read_table as read;
        Some(match kind {
            "ics" => Self::Ics(read(table, path, problems)?),
            "google" => Self::Google(Box::new(read(table, path, problems)?)),
            other => {
                let known: Vec<String> = KINDS.iter().map(|(k, _)| format!("{k:?}")).collect();
                problems.push(format!(
                    "{path}.kind: {other:?} is not a sink kind (one of {})",
                    known.join(", ")
                ));
                return None;
            }
        })
    }

    pub(crate) fn validate(&self, ctx: &Ctx<'_>) -> Result<Target, Vec<String>> {
        match self {
            Self::Ics(c) => c.validate(ctx).map(Target::Ics),
            Self::Google(c) => c.validate(ctx).map(|v| Target::Google(Box::new(v))),
        }
    }
}

impl Target {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Ics(_) => "ics",
            Self::Google(_) => "google",
        }
    }

    /// The sink id its records carry.
    pub(crate) fn id(&self) -> String {
        match self {
            Self::Ics(c) => c.id(),
            Self::Google(c) => c.id.clone(),
        }
    }

    /// The `name` key of kinds that have one (unique per kind).
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Self::Ics(_) => None,
            Self::Google(c) => Some(&c.name),
        }
    }

    /// How `check` names it after `sinks[i]`.
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Ics(_) => "ics".to_owned(),
            Self::Google(c) => c.id.clone(),
        }
    }

    /// Where it writes, for `status`.
    pub(crate) fn describe(&self) -> String {
        use bridge_sinks::config::privacy_name;
        match self {
            Self::Ics(c) => format!(
                "ICS files in {}, privacy {}",
                c.dir.display(),
                privacy_name(c.privacy)
            ),
            Self::Google(c) => format!(
                "Google Calendar {}, privacy {}",
                c.calendar_id
                    .as_deref()
                    .unwrap_or("(one created per source calendar)"),
                privacy_name(c.privacy)
            ),
        }
    }

    /// The store's name of the token `auth <kind>` leaves, for kinds that
    /// keep one.
    fn token_name(&self) -> Option<String> {
        match self {
            Self::Ics(_) => None,
            Self::Google(c) => Some(c.token_name()),
        }
    }

    /// The sink. The token its kind keeps is read from `store`; a sink
    /// without the credentials it needs is built paused.
    pub(crate) async fn build(&self, store: &Store) -> anyhow::Result<Handle> {
        let token = match self.token_name() {
            Some(name) => store
                .get_token(&name)
                .await
                .with_context(|| format!("cannot read the token {name} from the store"))?,
            None => None,
        };
        Ok(match self {
            Self::Ics(c) => Handle::Ics(Arc::new(c.build())),
            Self::Google(c) => Handle::Google {
                sink: Arc::new(c.build(c.credentials(token.as_deref()), store.clone())),
                config: c.clone(),
            },
        })
    }

    /// The health check of `check`. `store` is the store when it opened
    /// (`None` when it does not exist yet or a daemon holds it: `locked`).
    pub(crate) async fn healthcheck(&self, store: Option<&Store>, locked: bool) -> Vec<Check> {
        let stored = match (self.token_name(), store) {
            (Some(name), Some(store)) => match store.get_token(&name).await {
                Ok(v) => StoredToken::Value(v),
                Err(e) => StoredToken::Unreadable(format!(
                    "cannot read the token {name} from the store: {e}"
                )),
            },
            _ if locked => StoredToken::StoreLocked,
            _ => StoredToken::Value(None),
        };
        match self {
            Self::Ics(c) => c.healthcheck(),
            Self::Google(c) => c.healthcheck(stored).await,
        }
    }

    /// What `auth <kind>` does for it (`None`: the kind needs nothing).
    pub(crate) fn authorization(&self) -> Option<Authorization> {
        match self {
            Self::Ics(_) => None,
            Self::Google(c) => Some(c.authorization()),
        }
    }
}

impl Handle {
    pub(crate) fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Self::Ics(s) => s.clone(),
            Self::Google { sink, .. } => sink.clone(),
        }
    }

    pub(crate) fn id(&self) -> String {
        self.sink().id().to_owned()
    }

    /// Why the sink is paused, if it is.
    pub(crate) fn paused(&self) -> Option<String> {
        self.sink().paused()
    }

    /// The daemon's token hand-over (`auth <kind>` while the daemon holds
    /// the store): the token is checked, stored, and given to the sink,
    /// which resumes if it was paused for authorization.
    pub(crate) async fn hand_over(&self, store: &Store, token: &str) -> Result<(), TokenRefused> {
        match self {
            Self::Ics(s) => Err(TokenRefused::NotUsed(format!(
                "sink {} takes no token",
                s.id()
            ))),
            Self::Google { sink, config } => {
                let creds = config.check_token(token)?;
                store
                    .put_token(&config.token_name(), token)
                    .await
                    .map_err(|e| TokenRefused::Failed(format!("cannot store the token: {e}")))?;
                google::authorize::take_token(sink, creds)
            }
        }
    }
}
