//! What the targets' configurations share: the context a validation reads
//! (its key path, the configuration file's directory, a file reader),
//! privacy, `*_file` secrets, sink names, and the lines a health check
//! reports to `feishu-bridge check`.
//!
//! Each target module has a `config` submodule with its TOML struct
//! (`deny_unknown_fields`), a validation that reports every problem with its
//! key path and returns a validated value, and construction from that value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bridge_core::Privacy;
use bridge_target::{Sink, StateStore};

use crate::feed::{FeedBook, FeedSink};

/// Reads a file named by the configuration.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

/// Where a target's configuration is validated. Files (secrets, keys) are
/// read only through `read`, so a validation is a pure function of the
/// configuration and this context (tests hand it an in-memory file system).
pub struct Ctx<'a> {
    prefix: String,
    base: &'a Path,
    read: ReadFile<'a>,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("prefix", &self.prefix)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl<'a> Ctx<'a> {
    /// `prefix` is the key path of the target's table (`sinks[1]`); `base`
    /// the directory relative file names resolve against.
    pub fn new(prefix: impl Into<String>, base: &'a Path, read: ReadFile<'a>) -> Self {
        Self {
            prefix: prefix.into(),
            base,
            read,
        }
    }

    /// The key path of `key` in the target's table: `sinks[1].calendar_id`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    /// The key path of the target's table itself: `sinks[1]`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A path from the configuration, relative to its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// The content of a file named by the configuration (resolved first).
    pub fn read(&self, p: &Path) -> std::io::Result<String> {
        (self.read)(&self.resolve(p))
    }
}

/// The privacy profile `value` names; a problem at `key` otherwise.
pub fn privacy(value: &str, key: &str, problems: &mut Vec<String>) -> Option<Privacy> {
    match value.parse() {
        Ok(p) => Some(p),
        Err(_) => {
            problems.push(format!(
                "{key}: {value:?} is not one of \"full\", \"redacted\", \"busy\""
            ));
            None
        }
    }
}

/// The configuration's name of a privacy profile.
pub fn privacy_name(p: Privacy) -> &'static str {
    match p {
        Privacy::Full => "full",
        Privacy::Redacted => "redacted",
        Privacy::Busy => "busy",
    }
}

/// A secret given inline or as `<key>_file` (its content, trimmed); at most
/// one may be set. `key` is the full key path.
pub fn secret(
    ctx: &Ctx<'_>,
    inline: Option<&str>,
    file: Option<&Path>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match (inline, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{key} and {key}_file are both set; keep one"));
            None
        }
        (Some(s), None) => Some(s.to_owned()),
        (None, Some(f)) => match ctx.read(f) {
            Ok(s) if s.trim().is_empty() => {
                problems.push(format!("{key}_file: {} is empty", ctx.resolve(f).display()));
                None
            }
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) => {
                problems.push(format!(
                    "{key}_file: cannot read {}: {e}",
                    ctx.resolve(f).display()
                ));
                None
            }
        },
        (None, None) => None,
    }
}

/// A required value at `key` (the full key path): its trimmed text, or a
/// problem "`key`: missing (`why`)" when it is absent or blank.
pub fn required(
    value: Option<&str>,
    key: &str,
    why: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Some(v.to_owned()),
        _ => {
            problems.push(format!("{key}: missing ({why})"));
            None
        }
    }
}

/// A required [`secret`]: a problem "`key`: missing (or set `key`_file);
/// `why`" when neither is set.
pub fn required_secret(
    ctx: &Ctx<'_>,
    inline: Option<&str>,
    file: Option<&Path>,
    key: &str,
    why: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    let value = secret(ctx, inline, file, key, problems);
    if value.is_none() && file.is_none() {
        problems.push(format!("{key}: missing (or set {key}_file); {why}"));
    }
    value
}

/// The root certificates (DER) of a `ca_file` (PEM; `key` is its full key
/// path), trusted besides the built-in ones; a problem when it cannot be
/// read, is not PEM, or holds no certificate.
pub fn ca_roots(
    ctx: &Ctx<'_>,
    file: Option<&Path>,
    key: &str,
    problems: &mut Vec<String>,
) -> Vec<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let Some(file) = file else {
        return Vec::new();
    };
    let shown = ctx.resolve(file).display().to_string();
    let text = match ctx.read(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{key}: cannot read {shown}: {e}"));
            return Vec::new();
        }
    };
    let roots: Result<Vec<Vec<u8>>, _> = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect();
    match roots {
        Ok(r) if r.is_empty() => {
            problems.push(format!(
                "{key}: {shown} holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)"
            ));
            Vec::new()
        }
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("{key}: {shown} is not a PEM certificate file: {e}"));
            Vec::new()
        }
    }
}

/// A problem at `key` (the full key path) unless `name` is [`valid_name`].
pub fn check_name(name: &str, key: &str, problems: &mut Vec<String>) {
    if !valid_name(name) {
        problems.push(format!(
            "{key}: {name:?} is not a sink name (letters, digits, '-', '_', '.')"
        ));
    }
}

/// Whether a sink name is usable in ids, token names and the CLI.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// What [`writable_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Writable {
    /// The directory exists and a file can be created in it.
    Exists,
    /// It does not exist; the first write creates it under this existing,
    /// writable ancestor.
    WouldCreate(PathBuf),
}

/// Whether a file can be created in `dir`, without creating `dir` (`check`
/// changes nothing): a missing directory is judged by its nearest existing
/// ancestor. The probe file it writes is removed.
pub fn writable_dir(dir: &Path) -> std::io::Result<Writable> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            existing.display()
        )));
    }
    probe(existing)?;
    Ok(if existing == dir {
        Writable::Exists
    } else {
        Writable::WouldCreate(existing.to_owned())
    })
}

fn probe(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let probe = dir.join(format!(".feishu-bridge-check-{}.tmp", std::process::id()));
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(b"feishu-bridge check\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&probe);
    result?;
    removed
}

/// How a health check judged one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of a health check: a judgement, or an indented note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Line(Level, String),
    Note(String),
}

impl Check {
    pub fn ok(detail: impl Into<String>) -> Self {
        Self::Line(Level::Ok, detail.into())
    }

    pub fn warn(detail: impl Into<String>) -> Self {
        Self::Line(Level::Warn, detail.into())
    }

    pub fn fail(detail: impl Into<String>) -> Self {
        Self::Line(Level::Fail, detail.into())
    }
}

/// A target's table in the configuration: read with `deny_unknown_fields`,
/// then validated into what its module builds from. With the consts, this
/// is all the binary's registry of kinds needs of a module: one line there
/// (`kind::<<module>::config::Config>()`) adds the kind.
pub trait TargetToml: serde::de::DeserializeOwned {
    type Validated: ValidatedTarget + 'static;

    /// The `kind` of its `[[sinks]]` table.
    const KIND: &'static str;
    /// Whether `feishu-bridge auth <kind>` applies to it.
    const AUTH: bool = false;
    /// The commented `[[sinks]]` table `init` writes for it.
    const STARTER: &'static str;

    /// Every problem with its key path (through `ctx`).
    fn validate(&self, ctx: &Ctx<'_>) -> Result<Self::Validated, Vec<String>>;
}

/// What a validated target tells the binary without being built: its
/// identity, the lines it adds to `status` and `check`, its optional
/// authorization capability, and how it is built.
#[async_trait::async_trait]
pub trait ValidatedTarget: Send + Sync + std::fmt::Debug + AsAny {
    /// The `kind` of its `[[sinks]]` table.
    fn kind(&self) -> &'static str;
    /// Its `name`, for kinds that have one (unique per kind; `--sink NAME`).
    fn name(&self) -> Option<&str> {
        None
    }
    /// The sink id its records carry: `<kind>:<name>` (a kind without a
    /// name says what else identifies it).
    fn id(&self) -> String {
        format!("{}:{}", self.kind(), self.name().unwrap_or_default())
    }
    /// How `check` names it after `sinks[i]`: its id, or its kind when it
    /// has no name.
    fn label(&self) -> String {
        match self.name() {
            Some(_) => self.id(),
            None => self.kind().to_owned(),
        }
    }
    /// Where it writes, one line for `status`.
    fn describe(&self) -> String;
    /// The store's name of the token its authorization leaves.
    fn token_name(&self) -> Option<String> {
        None
    }
    /// The health check of `feishu-bridge check` (no side effect beyond
    /// what the sink itself would do); `stored` is its token.
    async fn healthcheck(&self, stored: StoredToken) -> Vec<Check>;
    /// Local directories it writes into, created by `check --fix`.
    fn directories(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// What `auth <kind>` does for it (`None`: nothing to authorize).
    fn authorization(&self) -> Option<Authorization> {
        None
    }
    /// Where an event of source calendar `calendar` lives on this target,
    /// lines for `explain` (file, feed, calendar, mailbox, the item's id and
    /// version); `remote` is what the engine recorded, `None` when nothing
    /// was written.
    fn explain(&self, _calendar: &str, _remote: Option<&bridge_target::RemoteRef>) -> Vec<String> {
        Vec::new()
    }
    /// The sink, from what the binary provides (`env`). A sink without the
    /// credentials it needs is built paused.
    fn build(&self, env: BuildEnv) -> Arc<dyn BuiltTarget>;
    /// How it holds a meeting room's bookings (`None`: room bookings cannot
    /// be written to it).
    fn room_place(&self) -> Option<RoomPlace> {
        None
    }
    /// Problems of a `[rooms]` mapping onto it that only its kind knows
    /// (the generic ones, by [`RoomPlace`], are the binary's): `place` is the
    /// mapping's non-empty `mailbox` or `calendar_id` when its place is
    /// [`RoomPlace::Named`], `pick` how the mapping picks its rooms.
    fn check_room(
        &self,
        _label: &str,
        _pick: Option<RoomPick<'_>>,
        _place: Option<&str>,
        _problems: &mut Vec<String>,
    ) {
    }
    /// What a room's bookings are written to; `place` as in
    /// [`ValidatedTarget::check_room`]. Only called when
    /// [`ValidatedTarget::room_place`] is some.
    fn room(&self, _env: RoomEnv, _place: Option<&str>) -> Result<RoomTarget, String> {
        Err(format!(
            "room bookings cannot be written to a {} sink",
            self.kind()
        ))
    }
}

/// How a kind holds a meeting room's bookings (`[rooms]` mappings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPlace {
    /// Each room is one busy-only file or feed of the sink; `why` is said of
    /// a `mailbox` or `calendar_id` given anyway.
    OfTheSink { why: &'static str },
    /// Each room is a calendar of its own on the service, named by the
    /// mapping's `key` (`"mailbox"` or `"calendar_id"`); `why` is said of
    /// the other key.
    Named {
        key: &'static str,
        why: &'static str,
    },
}

/// How a `[rooms]` mapping picks its rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomPick<'a> {
    /// One room by its Feishu room id.
    Room(&'a str),
    /// By custom id or level.
    Other,
}

/// What the binary provides to build a room's target.
#[derive(Debug, Clone)]
pub struct RoomEnv {
    /// What [`ValidatedTarget::build`] would get (a fresh feed book).
    pub sink: BuildEnv,
    /// The sink as the daemon runs it, when it does.
    pub running: Option<Arc<dyn BuiltTarget>>,
    /// The state of a sink written into the room's own calendar, a scope
    /// of its own per sink and place.
    pub room_state: Arc<dyn StateStore>,
}

/// What the room system writes a room's bookings to.
#[derive(Debug)]
pub enum RoomTarget {
    /// A busy-only projection (a file, a feed); `what` for `rooms list`.
    Projection {
        target: Arc<dyn bridge_target::Projection>,
        what: String,
    },
    /// A replica writing into the room's own calendar, with the service's
    /// lookup of the room's busy times.
    Replica {
        replica: Arc<dyn bridge_target::Replica>,
        busy: Option<BusyLookup>,
        what: String,
    },
}

/// The busy intervals (unix seconds) of a room between two instants.
pub type BusyFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<(i64, i64)>, String>> + Send>>;

/// A service's lookup of a room's busy times (freeBusy, getSchedule, …).
#[derive(Clone)]
pub struct BusyLookup {
    /// The service's name of it, for logs.
    pub what: &'static str,
    pub f: Arc<dyn Fn(i64, i64) -> BusyFuture + Send + Sync>,
}

impl std::fmt::Debug for BusyLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusyLookup")
            .field("what", &self.what)
            .finish()
    }
}

/// Any type, seen as [`std::any::Any`] (tests look at a kind's own
/// validated value through it).
pub trait AsAny {
    fn as_any(&self) -> &dyn std::any::Any;
}

impl<T: std::any::Any> AsAny for T {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// What the binary provides to build any target.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    /// The sink's own state, namespaced for its id.
    pub state: Arc<dyn StateStore>,
    /// What the store holds under [`ValidatedTarget::token_name`].
    pub token: Option<String>,
    /// The daemon's book of served feeds.
    pub feeds: Arc<FeedBook>,
    /// The directory next to the store, for files a sink keeps.
    pub data_dir: PathBuf,
}

/// What a built target answers the binary: its sink, its API calls, the
/// token hand-over and, for the feed kind, the feed sink.
pub trait BuiltTarget: Send + Sync + std::fmt::Debug {
    fn sink(&self) -> Arc<dyn Sink>;
    /// API calls by endpoint template and HTTP status, for `/metrics`
    /// (kinds without an API: none).
    fn calls(&self) -> BTreeMap<(String, u16), u64> {
        BTreeMap::new()
    }
    /// The first half of the daemon's token hand-over: the token is checked
    /// here; once the binary stored it under [`ValidatedTarget::token_name`]
    /// it calls the returned [`TakeToken`], which gives it to the sink (a
    /// sink paused for authorization resumes).
    fn check_token(&self, _token: &str) -> Result<TakeToken<'_>, TokenRefused> {
        Err(TokenRefused::NotUsed(format!(
            "sink {} takes no token",
            self.sink().id()
        )))
    }
    /// The feed sink, for kind "feed" (`feeds list`, the daemon's routes).
    fn feed(&self) -> Option<Arc<FeedSink>> {
        None
    }
}

/// Gives a checked token to the sink (see [`BuiltTarget::check_token`]).
pub type TakeToken<'a> = Box<dyn FnOnce() -> Result<(), TokenRefused> + Send + 'a>;

/// A built sink that needs nothing more than [`BuiltTarget::sink`].
#[derive(Debug)]
pub struct Plain<S>(pub Arc<S>);

impl<S: Sink + 'static> BuiltTarget for Plain<S> {
    fn sink(&self) -> Arc<dyn Sink> {
        self.0.clone()
    }
}

/// `id, etag E` of a recorded item, or that nothing is written, for
/// [`ValidatedTarget::explain`] lines.
pub fn remote_line(remote: Option<&bridge_target::RemoteRef>, id: &str, etag: &str) -> String {
    match remote.filter(|r| !r.id.is_empty()) {
        Some(r) => format!("{id} {}, {etag} {}", r.id, r.etag.as_deref().unwrap_or("-")),
        None => format!("no {id} yet"),
    }
}

/// A sink's token as `check` finds it in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredToken {
    /// What the store holds under the sink's token name (`None`: nothing,
    /// or no store yet).
    Value(Option<String>),
    /// The store could not be read; the reason.
    Unreadable(String),
    /// A running daemon holds the store.
    StoreLocked,
}

/// The authorization capability of a target (`feishu-bridge auth <kind>`):
/// what it needs, and what it stores.
#[derive(Debug)]
pub enum Authorization {
    /// Nothing to do in a browser (a service account, say); the reason.
    NotNeeded(String),
    /// A consent in the browser through a loopback redirect; the token it
    /// yields is kept in the store under `token_name`.
    Browser {
        token_name: String,
        consent: Box<dyn Consent>,
    },
}

/// One browser consent (OAuth code flow with PKCE through a loopback
/// redirect). The caller listens for the redirect; the target knows its
/// endpoints, scopes and what to keep.
#[async_trait::async_trait]
pub trait Consent: Send + Sync + std::fmt::Debug {
    /// The URL to open for a redirect to `redirect_uri`, and the `state`
    /// the redirect must carry.
    fn start(&mut self, redirect_uri: &str) -> (String, String);
    /// Trades the redirect's code for the token to keep (a JSON document
    /// the target reads back, and the daemon's hand-over takes).
    async fn finish(&self, http: &reqwest::Client, code: &str) -> Result<String, String>;
}

/// Why a running sink did not take a token handed over by `auth <kind>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    /// The token is malformed or empty.
    #[error("{0}")]
    Invalid(String),
    /// The sink authenticates otherwise (a service account).
    #[error("{0}")]
    NotUsed(String),
    /// The sink could not build a client with it.
    #[error("{0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_inline_or_from_one_file() {
        let read = |p: &Path| {
            if p == Path::new("/etc/fb/secret") {
                Ok("  s3cret\n".to_owned())
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            }
        };
        let ctx = Ctx::new("sinks[0]", Path::new("/etc/fb"), &read);
        let mut p = Vec::new();
        let key = ctx.key("client_secret");
        assert_eq!(
            secret(&ctx, None, Some(Path::new("secret")), &key, &mut p).as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            secret(&ctx, Some("a"), None, &key, &mut p).as_deref(),
            Some("a")
        );
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            secret(&ctx, Some("a"), Some(Path::new("x")), &key, &mut p),
            None
        );
        assert_eq!(
            secret(&ctx, None, Some(Path::new("gone")), &key, &mut p),
            None
        );
        assert_eq!(
            p,
            [
                "sinks[0].client_secret and sinks[0].client_secret_file are both set; keep one",
                "sinks[0].client_secret_file: cannot read /etc/fb/gone: entity not found",
            ]
        );
    }

    #[test]
    fn privacy_is_one_of_three() {
        let mut p = Vec::new();
        assert_eq!(privacy("busy", "k", &mut p), Some(Privacy::Busy));
        assert_eq!(privacy("open", "sinks[2].privacy", &mut p), None);
        assert_eq!(
            p,
            ["sinks[2].privacy: \"open\" is not one of \"full\", \"redacted\", \"busy\""]
        );
        for v in [Privacy::Full, Privacy::Redacted, Privacy::Busy] {
            assert_eq!(privacy_name(v).parse::<Privacy>(), Ok(v));
        }
        assert!(valid_name("work-2.a_b") && !valid_name("a b") && !valid_name(""));
    }
}
