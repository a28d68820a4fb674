//! The one registry of target kinds (`[[sinks]] kind = "..."`).
//!
//! Each kind is a module of `bridge-sinks` that owns its TOML table, its
//! validation (every problem with its key path), construction, health check,
//! its `status` and `explain` lines, its `init` starter and, optionally,
//! authorization and the token hand-over (the traits `TargetToml`,
//! `ValidatedTarget` and `BuiltTarget`). A kind is one line of [`KINDS`];
//! nothing else in the binary names a kind.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use bridge_engine::Sink;
use bridge_sinks::config::{
    Authorization, BuildEnv, BuiltTarget, Check, Ctx, StoredToken, TargetToml, TokenRefused,
    ValidatedTarget,
};
use bridge_sinks::{ews, feed, google, graph, ics};
use bridge_store::Store;

/// Every kind, in the order `init` and the error messages list them.
pub(crate) const KINDS: &[Kind] = &[
    kind::<ics::config::Config>(),
    kind::<google::config::Config>(),
    kind::<feed::config::Config>(),
    kind::<graph::config::Config>(),
    kind::<ews::config::Config>(),
];

/// One kind of target: what its module declares, and how its table is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    /// Its `kind` name.
    pub(crate) name: &'static str,
    /// Whether `auth <kind>` applies to it.
    pub(crate) auth: bool,
    /// The commented `[[sinks]]` table `init` writes.
    pub(crate) starter: &'static str,
    read: fn(toml::Value, &Ctx<'_>, &mut Vec<String>) -> Option<Target>,
}

/// The registry entry of the kind whose table is `C`.
pub(crate) const fn kind<C: TargetToml>() -> Kind {
    Kind {
        name: C::KIND,
        auth: C::AUTH,
        starter: C::STARTER,
        read: validate::<C>,
    }
}

/// The commented `[[sinks]]` table `init` writes for `kind`.
pub(crate) fn starter(kind: &str) -> Option<&'static str> {
    KINDS.iter().find(|k| k.name == kind).map(|k| k.starter)
}

/// A validated target, of any kind.
#[derive(Debug, Clone)]
pub(crate) struct Target(Arc<dyn ValidatedTarget>);

/// A built sink, with what its kind needs later (the token hand-over).
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    built: Arc<dyn BuiltTarget>,
    /// Where the store keeps its token (kinds that keep one).
    token_name: Option<String>,
}

/// Reads the table of `kind` (without its `kind` key) with its module's
/// `Config` and validates it; problems carry `ctx`'s key path.
pub(crate) fn read(
    kind: &str,
    table: toml::Value,
    ctx: &Ctx<'_>,
    problems: &mut Vec<String>,
) -> Option<Target> {
    read_in(KINDS, kind, table, ctx, problems)
}

fn read_in(
    kinds: &[Kind],
    kind: &str,
    table: toml::Value,
    ctx: &Ctx<'_>,
    problems: &mut Vec<String>,
) -> Option<Target> {
    match kinds.iter().find(|k| k.name == kind) {
        Some(k) => (k.read)(table, ctx, problems),
        None => {
            let known: Vec<String> = kinds.iter().map(|k| format!("{:?}", k.name)).collect();
            problems.push(format!(
                "{}: {kind:?} is not a sink kind (one of {})",
                ctx.key("kind"),
                known.join(", ")
            ));
            None
        }
    }
}

fn validate<C: TargetToml>(
    table: toml::Value,
    ctx: &Ctx<'_>,
    problems: &mut Vec<String>,
) -> Option<Target> {
    let config: C = crate::config::read_table(table, ctx.prefix(), problems)?;
    match config.validate(ctx) {
        Ok(v) => Some(Target(Arc::new(v))),
        Err(p) => {
            problems.extend(p);
            None
        }
    }
}

impl Target {
    /// What every kind answers through its module.
    pub(crate) fn config(&self) -> &dyn ValidatedTarget {
        self.0.as_ref()
    }

    /// Its module's own validated value (`None` for another kind).
    #[cfg(test)]
    pub(crate) fn downcast<T: 'static>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
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
    pub(crate) async fn stored_token(&self, store: &Store) -> anyhow::Result<Option<String>> {
        match self.config().token_name() {
            Some(name) => store
                .get_token(&name)
                .await
                .with_context(|| format!("cannot read the token {name} from the store")),
            None => Ok(None),
        }
    }

    /// The sink, by its module, with its state in `store` under its id. A
    /// sink without the credentials it needs is built paused. Feeds publish
    /// into `feeds`, the book the daemon serves, and keep their bodies in
    /// `feeds/<name>/` next to the store.
    pub(crate) async fn build(
        &self,
        store: &Store,
        feeds: &Arc<feed::FeedBook>,
    ) -> anyhow::Result<Handle> {
        let env = self.build_env(store, feeds).await?;
        Ok(Handle {
            built: self.config().build(env),
            token_name: self.config().token_name(),
        })
    }

    /// What [`Target::build`] hands its module: the sink's state in `store`
    /// under its id, its stored token, `feeds`, the store's directory.
    pub(crate) async fn build_env(
        &self,
        store: &Store,
        feeds: &Arc<feed::FeedBook>,
    ) -> anyhow::Result<BuildEnv> {
        Ok(BuildEnv {
            state: Arc::new(bridge_engine::SinkState::new(store.clone(), self.id())),
            token: self.stored_token(store).await?,
            feeds: feeds.clone(),
            data_dir: store
                .path()
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .to_owned(),
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
        self.built.sink()
    }

    /// What its module built.
    pub(crate) fn built(&self) -> Arc<dyn BuiltTarget> {
        self.built.clone()
    }

    pub(crate) fn id(&self) -> String {
        self.sink().id().to_owned()
    }

    /// The feed sink, for kind "feed".
    pub(crate) fn feed(&self) -> Option<Arc<feed::FeedSink>> {
        self.built.feed()
    }

    /// Why the sink is paused, if it is.
    pub(crate) fn paused(&self) -> Option<String> {
        self.sink().paused()
    }

    /// The target's API calls by endpoint template and HTTP status, for
    /// `/metrics` (kinds without an API: none).
    pub(crate) fn calls(&self) -> BTreeMap<(String, u16), u64> {
        self.built.calls()
    }

    /// The daemon's token hand-over (`auth <kind>` while the daemon holds
    /// the store): the token is checked, stored, and given to the sink,
    /// which resumes if it was paused for authorization.
    pub(crate) async fn hand_over(&self, store: &Store, token: &str) -> Result<(), TokenRefused> {
        let take = self.built.check_token(token)?;
        let name = self
            .token_name
            .as_deref()
            .ok_or_else(|| TokenRefused::NotUsed(format!("sink {} keeps no token", self.id())))?;
        store
            .put_token(name, token)
            .await
            .map_err(|e| TokenRefused::Failed(format!("cannot store the token: {e}")))?;
        take()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bridge_sinks::memory;

    use super::*;

    fn ctx_read(
        kinds: &[Kind],
        text: &str,
        problems: &mut Vec<String>,
    ) -> Option<(String, Option<Target>)> {
        let mut table: toml::Table = toml::from_str(text).ok()?;
        let Some(toml::Value::String(kind)) = table.remove("kind") else {
            return None;
        };
        let no_files = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let ctx = Ctx::new("sinks[0]", Path::new("/etc/fb"), &no_files);
        let target = read_in(kinds, &kind, toml::Value::Table(table), &ctx, problems);
        Some((kind, target))
    }

    /// A kind written only as a module implementing the traits (the
    /// in-memory replica) is added by one registry line: its table is read
    /// and validated, it is built on the store and written to.
    #[tokio::test]
    async fn a_kind_is_one_registry_line() {
        const WITH_MEMORY: &[Kind] = &[kind::<memory::config::Config>()];
        let k = &WITH_MEMORY[0];
        assert_eq!((k.name, k.auth), ("memory", false));
        assert!(k.starter.contains("kind = \"memory\""));

        let mut problems = Vec::new();
        let (_, target) = ctx_read(
            WITH_MEMORY,
            "kind = \"memory\"\nname = \"t\"\nprivacy = \"full\"\n",
            &mut problems,
        )
        .unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let target = target.unwrap();
        assert_eq!(
            (target.kind(), target.id(), target.name()),
            ("memory", "memory:t".to_owned(), Some("t"))
        );
        assert_eq!(target.describe(), "in-memory replica t, privacy full");
        assert_eq!(
            target
                .downcast::<memory::config::Validated>()
                .map(|v| v.privacy),
            Some(bridge_core::Privacy::Full)
        );

        let store = Store::in_memory().await.unwrap();
        let handle = target.build(&store, &feed::FeedBook::new()).await.unwrap();
        assert_eq!(handle.id(), "memory:t");
        assert!(handle.paused().is_none() && handle.feed().is_none());
        assert!(handle.calls().is_empty());
        assert_eq!(
            handle.hand_over(&store, "{}").await,
            Err(TokenRefused::NotUsed("sink memory:t takes no token".into()))
        );
        let sink = handle.sink();
        let bridge_engine::Target::Replica(replica) = sink.target() else {
            panic!("the memory kind is a replica");
        };
        let key = bridge_core::EventKey::new("u1", 0).unwrap();
        let ops = [bridge_engine::SeriesOps {
            uid: "u1",
            series: None,
            ops: vec![bridge_core::plan::Op::Create(key)],
        }];
        let out = replica
            .apply(bridge_engine::ReplicaInput {
                calendar: &bridge_engine::CalendarMeta {
                    id: "cal1".into(),
                    name: "Team".into(),
                    timezone: None,
                },
                series: &[],
                ops: &ops,
                records: &Default::default(),
                now: 0,
            })
            .await;
        assert_eq!(out[0].items[0].result.as_ref().unwrap().id, "m1");

        // Its problems and the unknown kinds are reported as for any kind.
        let mut problems = Vec::new();
        ctx_read(
            WITH_MEMORY,
            "kind = \"memory\"\nname = \"a b\"\n",
            &mut problems,
        );
        ctx_read(WITH_MEMORY, "kind = \"ics\"\ndir = \"x\"\n", &mut problems);
        assert_eq!(
            problems,
            [
                "sinks[0].name: \"a b\" is not a usable name (letters, digits, '-', '_', '.')",
                "sinks[0].kind: \"ics\" is not a sink kind (one of \"memory\")",
            ]
        );
    }

    #[test]
    fn every_kind_is_listed_once_with_its_starter() {
        let mut names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(names, ["ics", "google", "feed", "graph", "ews"]);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        for k in KINDS {
            assert_eq!(starter(k.name), Some(k.starter));
            assert!(
                k.starter.contains(&format!("kind = {:?}", k.name)),
                "{}",
                k.name
            );
        }
        let auth: Vec<&str> = KINDS.iter().filter(|k| k.auth).map(|k| k.name).collect();
        assert_eq!(auth, ["google", "graph"]);
        assert_eq!(starter("caldav"), None);
    }
}
