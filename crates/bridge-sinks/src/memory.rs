//! An in-memory replica: the smallest target behind the seam, used by the
//! engine's own tests (and a template for a new replica). It keeps every
//! written item under a remote id of its own, adopts an item it already
//! holds for the same key (as real replicas do through their tags), and can
//! be told to fail the next writes or to pause.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bridge_core::plan::Op;
use bridge_core::{CanonicalEvent, EventKey, Privacy};
use bridge_target::{
    ItemOutcome, RemoteRef, Replica, ReplicaInput, SeriesOutcome, Sink, SinkError, Target,
};

/// What the replica holds for one source item.
#[derive(Debug, Clone, PartialEq)]
pub enum Held {
    /// A single event, a master, an override or an orphan, as shown.
    Event(Box<CanonicalEvent>),
    /// A cancelled occurrence of a master (an EXDATE, in calendar terms).
    Cancelled,
}

#[derive(Debug, Default)]
struct Inner {
    /// Source key -> (remote id, what is held).
    items: BTreeMap<EventKey, (String, Held)>,
    next_id: u64,
    writes: u64,
    /// Transient failures to answer for the next writes.
    fail_next: u32,
    paused: Option<String>,
}

/// The in-memory replica.
#[derive(Debug)]
pub struct MemoryReplica {
    id: String,
    privacy: Privacy,
    inner: Mutex<Inner>,
}

impl MemoryReplica {
    /// A replica with sink id `memory:<name>`.
    pub fn new(name: &str, privacy: Privacy) -> Self {
        Self {
            id: format!("memory:{name}"),
            privacy,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Everything held, by source key.
    pub fn items(&self) -> BTreeMap<EventKey, Held> {
        self.lock()
            .items
            .iter()
            .map(|(k, (_, h))| (k.clone(), h.clone()))
            .collect()
    }

    /// Writes (creates, updates, deletes) done so far.
    pub fn writes(&self) -> u64 {
        self.lock().writes
    }

    /// The next `n` writes fail with a transient error.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }

    /// Pauses the replica (as revoked credentials would) or resumes it.
    pub fn set_paused(&self, reason: Option<&str>) {
        self.lock().paused = reason.map(str::to_owned);
    }
}

impl Sink for MemoryReplica {
    fn target(&self) -> Target<'_> {
        Target::Replica(self)
    }
}

#[async_trait]
impl Replica for MemoryReplica {
    fn id(&self) -> &str {
        &self.id
    }

    fn paused(&self) -> Option<String> {
        self.lock().paused.clone()
    }

    async fn apply(&self, input: ReplicaInput<'_>) -> Vec<SeriesOutcome> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(input.ops.len());
        for so in input.ops {
            let mut items = Vec::with_capacity(so.ops.len());
            for op in &so.ops {
                let result = if let Some(reason) = &inner.paused {
                    Err(SinkError::Paused(reason.clone()))
                } else if inner.fail_next > 0 {
                    inner.fail_next -= 1;
                    Err(SinkError::Transient {
                        message: "injected failure".to_owned(),
                        retry_after: Some(Duration::from_secs(60)),
                    })
                } else {
                    Ok(write(&mut inner, so.series, op, self.privacy))
                };
                items.push(ItemOutcome {
                    op: op.clone(),
                    result,
                });
            }
            out.push(SeriesOutcome {
                uid: so.uid.to_owned(),
                items,
            });
        }
        out
    }
}

/// One write; the remote id of an item already held for the key is kept.
fn write(
    inner: &mut Inner,
    series: Option<&bridge_core::Series<'_>>,
    op: &Op,
    privacy: Privacy,
) -> RemoteRef {
    inner.writes += 1;
    let key = op.key();
    if let Op::Delete(_) = op {
        let id = inner
            .items
            .remove(key)
            .map(|(id, _)| id)
            .unwrap_or_default();
        return RemoteRef { id, etag: None };
    }
    let held = match series.and_then(|s| s.event(key)) {
        Some(ev) => Held::Event(Box::new(
            bridge_core::privacy::project(ev, privacy).into_owned(),
        )),
        None => Held::Cancelled,
    };
    let id = match inner.items.get(key) {
        Some((id, _)) => id.clone(),
        None => {
            inner.next_id += 1;
            format!("m{}", inner.next_id)
        }
    };
    let etag = format!("\"{}\"", inner.writes);
    inner.items.insert(key.clone(), (id.clone(), held));
    RemoteRef {
        id,
        etag: Some(etag),
    }
}

/// `[[sinks]] kind = "memory"`: the in-memory replica as a kind, defined
/// only through the traits of [`crate::config`] (no code elsewhere names
/// it), so one line in a registry of kinds adds it. The binary does not
/// list it: it holds nothing across runs.
pub mod config {
    use std::sync::Arc;

    use bridge_core::Privacy;
    use serde::Deserialize;

    use super::MemoryReplica;
    use crate::config::{
        BuildEnv, BuiltTarget, Check, Ctx, Plain, StoredToken, TargetToml, ValidatedTarget,
        privacy, privacy_name, valid_name,
    };

    /// The commented `[[sinks]]` table `init` would write.
    pub const STARTER: &str = r#"[[sinks]]
kind = "memory"
name = "test"                     # sink id "memory:test"; nothing outlives the process
privacy = "full"                  # full | redacted | busy
"#;

    /// The table as written in the file.
    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        pub name: String,
        #[serde(default)]
        pub privacy: Option<String>,
    }

    /// A validated in-memory target.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Validated {
        pub name: String,
        pub privacy: Privacy,
    }

    impl TargetToml for Config {
        type Validated = Validated;
        const KIND: &'static str = "memory";
        const STARTER: &'static str = STARTER;

        fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
            let mut p = Vec::new();
            if !valid_name(&self.name) {
                p.push(format!(
                    "{}: {:?} is not a usable name (letters, digits, '-', '_', '.')",
                    ctx.key("name"),
                    self.name
                ));
            }
            let privacy = privacy(
                self.privacy.as_deref().unwrap_or("full"),
                &ctx.key("privacy"),
                &mut p,
            );
            match privacy {
                Some(privacy) if p.is_empty() => Ok(Validated {
                    name: self.name.clone(),
                    privacy,
                }),
                _ => Err(p),
            }
        }
    }

    #[async_trait::async_trait]
    impl ValidatedTarget for Validated {
        fn kind(&self) -> &'static str {
            "memory"
        }

        fn name(&self) -> Option<&str> {
            Some(&self.name)
        }

        fn describe(&self) -> String {
            format!(
                "in-memory replica {}, privacy {}",
                self.name,
                privacy_name(self.privacy)
            )
        }

        async fn healthcheck(&self, _stored: StoredToken) -> Vec<Check> {
            vec![Check::ok("in memory: nothing to reach")]
        }

        /// It keeps nothing in the store: `env` is not needed.
        fn build(&self, _env: BuildEnv) -> Arc<dyn BuiltTarget> {
            Arc::new(Plain(Arc::new(MemoryReplica::new(
                &self.name,
                self.privacy,
            ))))
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::BTreeMap;
        use std::path::Path;

        use bridge_core::EventKey;
        use bridge_core::plan::Op;
        use bridge_target::{
            CalendarMeta, ReplicaInput, SeriesOps, StateError, StateStore, Target,
        };

        use super::*;
        use crate::config::{BuildEnv, Ctx};

        /// A state store that keeps nothing (the memory kind never asks).
        #[derive(Debug)]
        struct NoState;

        #[async_trait::async_trait]
        impl StateStore for NoState {
            async fn get(&self, _name: &str, _key: &str) -> Result<Option<String>, StateError> {
                Ok(None)
            }
            async fn put(&self, _name: &str, _key: &str, _value: &str) -> Result<(), StateError> {
                Ok(())
            }
            async fn delete(&self, _name: &str, _key: &str) -> Result<bool, StateError> {
                Ok(false)
            }
        }

        fn read(text: &str) -> Result<Validated, Vec<String>> {
            let no_files = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
            let ctx = Ctx::new("sinks[0]", Path::new("/etc/fb"), &no_files);
            let config: Config = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
            config.validate(&ctx)
        }

        /// A kind defined only through the traits is read from TOML,
        /// validated, built and written to through the seam.
        #[tokio::test]
        async fn the_memory_kind_goes_through_the_traits() {
            let v = read("name = \"test\"\nprivacy = \"busy\"\n").unwrap();
            let t: &dyn ValidatedTarget = &v;
            assert_eq!(
                (t.kind(), t.id(), t.label()),
                ("memory", "memory:test".to_owned(), "memory:test".to_owned())
            );
            assert_eq!(t.describe(), "in-memory replica test, privacy busy");
            assert!(t.token_name().is_none() && t.authorization().is_none());
            let built = t.build(BuildEnv {
                state: Arc::new(NoState),
                token: None,
                feeds: crate::feed::FeedBook::new(),
                data_dir: ".".into(),
            });
            assert!(built.calls().is_empty() && built.feed().is_none());
            assert_eq!(
                built.check_token("{}").err().map(|e| e.to_string()),
                Some("sink memory:test takes no token".to_owned())
            );
            let sink = built.sink();
            assert_eq!((sink.id(), sink.paused()), ("memory:test", None));
            let Target::Replica(replica) = sink.target() else {
                panic!("the memory kind is a replica");
            };
            let cal = CalendarMeta {
                id: "cal1".into(),
                name: "Team".into(),
                timezone: None,
            };
            let key = EventKey::new("u1", 0).unwrap();
            let records = BTreeMap::new();
            let apply = |op: Op| {
                let ops = [SeriesOps {
                    uid: "u1",
                    series: None,
                    ops: vec![op],
                }];
                let records = &records;
                let cal = &cal;
                async move {
                    replica
                        .apply(ReplicaInput {
                            calendar: cal,
                            series: &[],
                            ops: &ops,
                            records,
                            now: 0,
                        })
                        .await
                }
            };
            let written = apply(Op::Create(key.clone())).await;
            let remote = written[0].items[0].result.clone().unwrap();
            assert_eq!(remote.id, "m1");
            // The delete finds what the create left under the same id.
            let deleted = apply(Op::Delete(key)).await;
            assert_eq!(deleted[0].items[0].result.clone().unwrap().id, "m1");
        }

        #[test]
        fn memory_problems_carry_their_key_paths() {
            assert_eq!(
                read("name = \"a b\"\nprivacy = \"open\"\n").unwrap_err(),
                [
                    "sinks[0].name: \"a b\" is not a usable name (letters, digits, '-', '_', '.')",
                    "sinks[0].privacy: \"open\" is not one of \"full\", \"redacted\", \"busy\"",
                ]
            );
            assert!(read("name = \"x\"\ncolour = 1\n").is_err());
            assert!(STARTER.contains("kind = \"memory\""));
        }
    }
}
