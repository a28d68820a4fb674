//! `[[sinks]] kind = "ics"`: the TOML table, its validation, construction
//! and health check.

use std::path::PathBuf;

use bridge_core::Privacy;
use serde::Deserialize;

use super::IcsSink;
use crate::config::{
    Check, Ctx, StoredToken, TargetToml, ValidatedTarget, Writable, privacy, privacy_name,
    writable_dir,
};

/// The commented `[[sinks]]` table `init` writes.
pub const STARTER: &str = r#"[[sinks]]
kind = "ics"
dir = "out/ics"                   # one .ics file per calendar, replaced atomically
privacy = "full"                  # full | redacted | busy
"#;

/// The table as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One `.ics` file per source calendar goes here.
    pub dir: PathBuf,
    #[serde(default = "default_privacy")]
    pub privacy: String,
}

fn default_privacy() -> String {
    "full".to_owned()
}

/// A validated ICS sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    /// Resolved against the configuration file's directory.
    pub dir: PathBuf,
    /// `dir` as written: the sink id keeps it, so resolving relative
    /// directories against the configuration (not the working directory)
    /// does not rename an existing sink and orphan its records.
    pub written: PathBuf,
    pub privacy: Privacy,
}

impl TargetToml for Config {
    type Validated = Validated;
    const KIND: &'static str = "ics";
    const STARTER: &'static str = STARTER;

    fn validate(&self, ctx: &Ctx<'_>) -> Result<Validated, Vec<String>> {
        let mut problems = Vec::new();
        let privacy = privacy(&self.privacy, &ctx.key("privacy"), &mut problems);
        match privacy {
            Some(privacy) if problems.is_empty() => Ok(Validated {
                dir: ctx.resolve(&self.dir),
                written: self.dir.clone(),
                privacy,
            }),
            _ => Err(problems),
        }
    }
}

impl Validated {
    pub fn build(&self) -> IcsSink {
        IcsSink::new(&self.dir, self.privacy).with_id(self.id())
    }
}

#[async_trait::async_trait]
impl ValidatedTarget for Validated {
    fn kind(&self) -> &'static str {
        "ics"
    }

    fn build(
        &self,
        env: crate::config::BuildEnv,
    ) -> std::sync::Arc<dyn crate::config::BuiltTarget> {
        let _ = env;
        std::sync::Arc::new(crate::config::Plain(std::sync::Arc::new(self.build())))
    }

    fn room_place(&self) -> Option<crate::config::RoomPlace> {
        Some(crate::config::RoomPlace::OfTheSink {
            why: "the room is one busy-only file in the sink's dir",
        })
    }

    fn room(
        &self,
        _env: crate::config::RoomEnv,
        _place: Option<&str>,
    ) -> Result<crate::config::RoomTarget, String> {
        // The room's file: busy-only whatever the sink's privacy.
        Ok(crate::config::RoomTarget::Projection {
            target: std::sync::Arc::new(IcsSink::new(&self.dir, Privacy::Busy)),
            what: format!("busy-only ICS file in {}", self.dir.display()),
        })
    }

    /// `ics:<dir as written>`.
    fn id(&self) -> String {
        format!("ics:{}", self.written.display())
    }

    fn directories(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn explain(&self, calendar: &str, _remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        vec![format!(
            "ICS file {}",
            self.dir.join(super::file_name(calendar)).display()
        )]
    }

    fn describe(&self) -> String {
        format!(
            "ICS files in {}, privacy {}",
            self.dir.display(),
            privacy_name(self.privacy)
        )
    }

    /// Whether a file can be written in the directory (created if missing).
    async fn healthcheck(&self, _stored: StoredToken) -> Vec<Check> {
        vec![match writable_dir(&self.dir) {
            Ok(Writable::Exists) => Check::ok(format!(
                "{} is writable (privacy {})",
                self.dir.display(),
                privacy_name(self.privacy)
            )),
            Ok(Writable::WouldCreate(parent)) => Check::ok(format!(
                "{} does not exist yet; the first sync creates it ({} is writable; privacy {})",
                self.dir.display(),
                parent.display(),
                privacy_name(self.privacy)
            )),
            Err(e) => Check::fail(format!("{} is not writable: {e}", self.dir.display())),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn validate(toml_privacy: &str) -> Result<Validated, Vec<String>> {
        let read = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let ctx = Ctx::new("sinks[3]", Path::new("/etc"), &read);
        Config {
            dir: "out".into(),
            privacy: toml_privacy.into(),
        }
        .validate(&ctx)
    }

    #[test]
    fn privacy_is_typed_once_and_named_by_its_key() {
        let v = validate("redacted").unwrap();
        assert_eq!(v.privacy, Privacy::Redacted);
        assert_eq!(v.id(), "ics:out");
        assert_eq!(
            validate("secret").unwrap_err(),
            ["sinks[3].privacy: \"secret\" is not one of \"full\", \"redacted\", \"busy\""]
        );
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_directory_under_a_file_is_not_writable() {
        let base = std::env::temp_dir().join(format!("fb-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        assert_eq!(
            writable_dir(&base.join("new/dir")).unwrap(),
            Writable::WouldCreate(base.clone())
        );
        assert!(!base.join("new").exists(), "check creates nothing");
        assert_eq!(writable_dir(&base).unwrap(), Writable::Exists);
        assert!(
            std::fs::read_dir(&base).unwrap().next().is_none(),
            "the probe file is removed"
        );
        let file = base.join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(writable_dir(&file.join("ics")).is_err());
        let sink = Validated {
            dir: file.join("ics"),
            written: file.join("ics"),
            privacy: Privacy::Busy,
        };
        let lines = block_on(sink.healthcheck(StoredToken::Value(None)));
        assert!(
            matches!(&lines[..], [Check::Line(crate::config::Level::Fail, m)] if m.contains("is not writable")),
            "{lines:?}"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
