//! The feed target, a [`Projection`]: one served iCalendar feed per source
//! calendar at a secret address (`/feeds/<token>.ics`).
//!
//! - A publish renders the calendar's body once, into bytes kept in the
//!   shared [`FeedBook`] with their digest (the ETag) and the time they
//!   changed (`Last-Modified`); the HTTP side only reads the book, so a
//!   request never renders. A pass with nothing to change skips the render
//!   when the book already holds a body of the same settings.
//! - A calendar that fails to sync is not published, so its feed keeps its
//!   last good body. The body is also kept in a cache directory (atomic
//!   writes, 0600) and loaded at start ([`FeedSink::load`]), so a restarted
//!   daemon serves it before Feishu answers.
//! - With `combine = true` the sink serves one feed of all its calendars
//!   (calendar id [`COMBINED`] in its entries): it keeps each calendar's
//!   items (owned copies, taken when they change) and renders them together
//!   on every change of any of them. An event that several calendars hold
//!   (same uid and time) is shown once.
//! - Tokens are 256 random bits (base64url), created on the first publish of
//!   a calendar and kept in the sink's [`StateStore`]; a rotation replaces
//!   the token in the store and the book at once. Logs name the feed and
//!   the calendar, never the token.

pub mod book;
pub mod config;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bridge_core::{Privacy, RenderOptions, render_series_to};
use bridge_target::{Projection, ProjectionInput, Published, Sink, SinkError, StateStore, Target};
use serde::{Deserialize, Serialize};

pub use book::{Body, FeedBook, Served};

/// Which source calendars a feed sink publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calendars {
    All,
    List(BTreeSet<String>),
}

impl Calendars {
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Calendars::All => true,
            Calendars::List(ids) => ids.contains(id),
        }
    }
}

/// The calendar id of a combined feed's single address.
pub const COMBINED: &str = "*";

/// What a combined feed keeps of one calendar.
#[derive(Debug, Default)]
struct Part {
    items: Vec<bridge_core::Item>,
    revisions: HashMap<bridge_core::EventKey, bridge_core::Revision>,
}

/// The items a calendar's series were grouped from (their live events and
/// cancelled occurrences), owned.
fn items_of(series: &[bridge_core::Series<'_>]) -> Vec<bridge_core::Item> {
    use bridge_core::{EventKey, Item};
    let mut out = Vec::new();
    for s in series {
        for ev in s.base.iter().chain(&s.overrides).chain(&s.orphans) {
            out.push(Item::Event(Box::new((*ev).clone())));
        }
        for t in &s.cancelled {
            if let Ok(k) = EventKey::new(s.uid, *t) {
                out.push(Item::Cancelled(k));
            }
        }
    }
    out
}

/// State names in the sink's [`StateStore`].
const TOKEN_STATE: &str = "feed-token";
const INDEX_STATE: &str = "feed-index";
const INDEX_KEY: &str = "calendars";

/// A token as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredFeedToken {
    token: String,
    /// Unix seconds.
    created: i64,
}

/// One address of a feed sink (what `feeds list` shows, with the URL the
/// caller builds from `token`).
#[derive(Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub name: String,
    pub calendar_id: String,
    pub privacy: Privacy,
    /// The secret path segment (`/feeds/<token>.ics`).
    pub token: String,
}

impl std::fmt::Debug for FeedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedEntry")
            .field("name", &self.name)
            .field("calendar_id", &self.calendar_id)
            .field("privacy", &self.privacy)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// A new token: 256 bits from the OS-seeded CSPRNG, base64url without padding.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of a token (43 base64url characters).
pub fn is_token_shaped(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Publishes calendars as served feeds.
pub struct FeedSink {
    id: String,
    name: String,
    privacy: Privacy,
    refresh_minutes: Option<u32>,
    calendars: Calendars,
    combine: bool,
    /// Combined feeds: each calendar's items, by calendar id.
    parts: std::sync::Mutex<std::collections::BTreeMap<String, Part>>,
    state: Arc<dyn StateStore>,
    book: Arc<FeedBook>,
    cache_dir: Option<PathBuf>,
    /// Per calendar: the settings its body in the book was rendered with.
    rendered: std::sync::Mutex<HashMap<String, String>>,
    /// Serializes the read-modify-write of the calendar index.
    index_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for FeedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSink")
            .field("id", &self.id)
            .field("privacy", &self.privacy)
            .field("calendars", &self.calendars)
            .finish_non_exhaustive()
    }
}

/// What the cache directory keeps next to a body.
#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    calendar_id: String,
    digest: String,
    last_modified: i64,
    settings: String,
}

fn state_err(e: bridge_target::StateError) -> SinkError {
    SinkError::transient(format!("feed state: {e}"))
}

/// Runs blocking work: on a multi-threaded runtime the worker thread is
/// handed over for it (`block_in_place`), elsewhere it simply runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl FeedSink {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn privacy(&self) -> Privacy {
        self.privacy
    }

    pub fn book(&self) -> &Arc<FeedBook> {
        &self.book
    }

    /// The calendars that have a token, in id order.
    async fn index(&self) -> Result<BTreeSet<String>, SinkError> {
        match self
            .state
            .get(INDEX_STATE, INDEX_KEY)
            .await
            .map_err(state_err)?
        {
            None => Ok(BTreeSet::new()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| SinkError::Permanent(format!("feed index unreadable: {e}"))),
        }
    }

    async fn stored_token(&self, calendar_id: &str) -> Result<Option<String>, SinkError> {
        let Some(json) = self
            .state
            .get(TOKEN_STATE, calendar_id)
            .await
            .map_err(state_err)?
        else {
            return Ok(None);
        };
        let t: StoredFeedToken = serde_json::from_str(&json).map_err(|e| {
            SinkError::Permanent(format!(
                "feed {} token of {calendar_id} unreadable: {e}",
                self.name
            ))
        })?;
        Ok(Some(t.token))
    }

    async fn put_token(&self, calendar_id: &str, token: &str, now: i64) -> Result<(), SinkError> {
        let json = serde_json::to_string(&StoredFeedToken {
            token: token.to_owned(),
            created: now,
        })
        .map_err(|e| SinkError::Permanent(e.to_string()))?;
        self.state
            .put(TOKEN_STATE, calendar_id, &json)
            .await
            .map_err(state_err)
    }

    /// The token of `calendar_id`, created (durably, and in the index) on
    /// first use.
    async fn token_for(&self, calendar_id: &str, now: i64) -> Result<String, SinkError> {
        let _guard = self.index_lock.lock().await;
        if let Some(t) = self.stored_token(calendar_id).await? {
            if self.book.lookup(&t).is_none() {
                self.book.set_token(&self.name, calendar_id, &t);
            }
            return Ok(t);
        }
        let token = new_token();
        self.put_token(calendar_id, &token, now).await?;
        let mut index = self.index().await?;
        if index.insert(calendar_id.to_owned()) {
            let json =
                serde_json::to_string(&index).map_err(|e| SinkError::Permanent(e.to_string()))?;
            self.state
                .put(INDEX_STATE, INDEX_KEY, &json)
                .await
                .map_err(state_err)?;
        }
        self.book.set_token(&self.name, calendar_id, &token);
        tracing::info!(feed = %self.name, calendar = calendar_id, "feed address created");
        Ok(token)
    }

    /// Every address of the feed (calendars published at least once).
    pub async fn entries(&self) -> Result<Vec<FeedEntry>, SinkError> {
        let mut out = Vec::new();
        for calendar_id in self.index().await? {
            if let Some(token) = self.stored_token(&calendar_id).await? {
                out.push(FeedEntry {
                    name: self.name.clone(),
                    calendar_id,
                    privacy: self.privacy,
                    token,
                });
            }
        }
        Ok(out)
    }

    /// Replaces the token of `calendar_id` (every calendar of the feed when
    /// `None`): the old address is dead on return. Returns the new entries.
    pub async fn rotate(
        &self,
        calendar_id: Option<&str>,
        now: i64,
    ) -> Result<Vec<FeedEntry>, SinkError> {
        let _guard = self.index_lock.lock().await;
        let index = self.index().await?;
        let chosen: Vec<String> = match calendar_id {
            Some(c) if index.contains(c) => vec![c.to_owned()],
            Some(c) => {
                return Err(SinkError::Permanent(format!(
                    "feed {} has no address for calendar {c:?} (it has: {})",
                    self.name,
                    index.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            None => index.into_iter().collect(),
        };
        let mut out = Vec::new();
        for c in chosen {
            let token = new_token();
            self.put_token(&c, &token, now).await?;
            self.book.set_token(&self.name, &c, &token);
            tracing::info!(feed = %self.name, calendar = %c, "feed address rotated");
            out.push(FeedEntry {
                name: self.name.clone(),
                calendar_id: c,
                privacy: self.privacy,
                token,
            });
        }
        Ok(out)
    }

    /// Puts the stored tokens and the cached bodies into the book (at the
    /// daemon's start). Returns how many addresses are served.
    pub async fn load(&self) -> Result<usize, SinkError> {
        let entries = self.entries().await?;
        for e in &entries {
            self.book.set_token(&self.name, &e.calendar_id, &e.token);
            if let Some((body, settings)) = self.read_cached(&e.calendar_id) {
                self.book
                    .set_body(&self.name, &e.calendar_id, Arc::new(body));
                self.rendered_settings()
                    .insert(e.calendar_id.clone(), settings);
            }
        }
        Ok(entries.len())
    }

    fn rendered_settings(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.rendered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cache_paths(&self, calendar_id: &str) -> Option<(PathBuf, PathBuf)> {
        let dir = self.cache_dir.as_ref()?;
        let stem = hex::encode(
            &sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                calendar_id.as_bytes(),
            ))[..12],
        );
        Some((
            dir.join(format!("{stem}.ics")),
            dir.join(format!("{stem}.json")),
        ))
    }

    fn read_cached(&self, calendar_id: &str) -> Option<(Body, String)> {
        let (body_path, meta_path) = self.cache_paths(calendar_id)?;
        let meta: CacheMeta =
            serde_json::from_str(&std::fs::read_to_string(meta_path).ok()?).ok()?;
        let bytes = std::fs::read(body_path).ok()?;
        let body = Body::new(bytes, meta.last_modified);
        // A torn or foreign file is not served.
        (meta.calendar_id == calendar_id && body.digest == meta.digest)
            .then_some((body, meta.settings))
    }

    /// Keeps `body` in the cache directory (best effort: a failure only
    /// costs the restart case, and is logged).
    fn write_cached(&self, calendar_id: &str, body: &Body, settings: &str) {
        let Some((body_path, meta_path)) = self.cache_paths(calendar_id) else {
            return;
        };
        let meta = CacheMeta {
            calendar_id: calendar_id.to_owned(),
            digest: body.digest.clone(),
            last_modified: body.last_modified,
            settings: settings.to_owned(),
        };
        let result = (|| -> std::io::Result<()> {
            let dir = body_path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir)?;
            write_atomic(dir, &body_path, &body.bytes)?;
            let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
            write_atomic(dir, &meta_path, &json)
        })();
        if let Err(e) = result {
            tracing::warn!(feed = %self.name, calendar = calendar_id, "cannot keep the feed body in {}: {e}", body_path.display());
        }
    }

    fn settings(&self, input: &ProjectionInput<'_>) -> String {
        use sha2::{Digest, Sha256};
        // v3: the renderer's output rules of the ICS sink's settings tag;
        // the horizon of exact occurrences (bridge_core::ics::exact) moves
        // once a year, and re-renders then.
        let s = format!(
            "v3|{:?}|{:?}|{}|{:?}|{}",
            self.privacy,
            self.refresh_minutes,
            input.calendar.name,
            input.calendar.timezone,
            bridge_core::ics::exact::horizon(input.now)
        );
        hex::encode(Sha256::digest(s.as_bytes()))
    }
}

impl FeedSink {
    /// Renders `series` and puts the body of `key` (a calendar id, or
    /// [`COMBINED`]) into the book and the cache directory; whether its
    /// bytes changed. The same bytes keep their validators.
    fn render_into_book(
        &self,
        key: &str,
        series: &[bridge_core::Series<'_>],
        opts: &RenderOptions,
        current: Option<Arc<Body>>,
        settings: &str,
        same_settings: bool,
    ) -> Result<bool, SinkError> {
        let rendered = blocking(|| -> std::io::Result<Body> {
            let mut buf =
                Vec::with_capacity(current.as_ref().map_or(64 * 1024, |b| b.bytes.len() + 4096));
            let summary = render_series_to(series, opts, &mut buf)?;
            for warning in &summary.warnings {
                tracing::warn!(feed = %self.name, calendar = %key, "{warning}");
            }
            Ok(Body::new(buf, opts.dtstamp))
        })
        .map_err(|e| SinkError::transient(format!("cannot render feed {}: {e}", self.name)))?;
        let changed = current.as_ref().is_none_or(|c| c.digest != rendered.digest);
        let body = match current {
            Some(c) if !changed => c,
            _ => Arc::new(rendered),
        };
        if changed || !same_settings {
            blocking(|| self.write_cached(key, &body, settings));
        }
        self.book.set_body(&self.name, key, body.clone());
        self.rendered_settings()
            .insert(key.to_owned(), settings.to_owned());
        tracing::debug!(feed = %self.name, calendar = %key, changed, bytes = body.bytes.len(), "feed rendered");
        Ok(changed)
    }

    /// `combine = true`: keeps the calendar's items and renders every
    /// calendar's together.
    async fn publish_combined(&self, input: ProjectionInput<'_>) -> Result<Published, SinkError> {
        use sha2::{Digest, Sha256};
        let location = format!("feed:{}", self.name);
        self.token_for(COMBINED, input.now).await?;
        let cal = input.calendar.id.clone();
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = input.changed || !parts.contains_key(&cal);
        if fresh {
            parts.insert(
                cal.clone(),
                Part {
                    items: items_of(input.series),
                    revisions: input.revisions.clone(),
                },
            );
        }
        let ids: Vec<&str> = parts.keys().map(String::as_str).collect();
        let settings = hex::encode(Sha256::digest(
            format!(
                "v3|combined|{:?}|{:?}|{}|{}|{}",
                self.privacy,
                self.refresh_minutes,
                self.name,
                ids.join("\u{0}"),
                bridge_core::ics::exact::horizon(input.now)
            )
            .as_bytes(),
        ));
        let current = self.book.body(&self.name, COMBINED);
        let same_settings = self.rendered_settings().get(COMBINED) == Some(&settings);
        if !fresh && current.is_some() && same_settings {
            return Ok(Published {
                location,
                changed: false,
            });
        }
        let mut revisions = HashMap::new();
        for p in parts.values() {
            revisions.extend(p.revisions.iter().map(|(k, r)| (k.clone(), *r)));
        }
        let series = bridge_core::series::group(parts.values().flat_map(|p| &p.items));
        let opts = RenderOptions {
            name: self.name.clone(),
            privacy: self.privacy,
            dtstamp: input.now,
            refresh_minutes: self.refresh_minutes,
            timezone: None,
            revisions,
        };
        let changed =
            self.render_into_book(COMBINED, &series, &opts, current, &settings, same_settings)?;
        Ok(Published { location, changed })
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::Builder::new()
        .prefix(".feed.tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

impl Sink for FeedSink {
    fn target(&self) -> Target<'_> {
        Target::Projection(self)
    }
}

#[async_trait]
impl Projection for FeedSink {
    fn id(&self) -> &str {
        &self.id
    }

    async fn publish(&self, input: ProjectionInput<'_>) -> Result<Published, SinkError> {
        let cal = &input.calendar.id;
        if !self.calendars.contains(cal) {
            // Not one of this feed's calendars: nothing is published.
            return Ok(Published {
                location: String::new(),
                changed: false,
            });
        }
        if self.combine {
            return self.publish_combined(input).await;
        }
        let location = format!("feed:{}/{cal}", self.name);
        self.token_for(cal, input.now).await?;
        let settings = self.settings(&input);
        let current = self.book.body(&self.name, cal);
        let same_settings = self.rendered_settings().get(cal) == Some(&settings);
        if !input.changed && current.is_some() && same_settings {
            tracing::debug!(feed = %self.name, calendar = %cal, "feed up to date");
            return Ok(Published {
                location,
                changed: false,
            });
        }
        let opts = RenderOptions {
            name: input.calendar.name.clone(),
            privacy: self.privacy,
            dtstamp: input.now,
            refresh_minutes: self.refresh_minutes,
            timezone: input.calendar.timezone.clone(),
            revisions: input.revisions.clone(),
        };
        let changed =
            self.render_into_book(cal, input.series, &opts, current, &settings, same_settings)?;
        Ok(Published { location, changed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use bridge_target::{CalendarMeta, StateError};

    #[derive(Debug, Default)]
    struct MemState(std::sync::Mutex<HashMap<String, String>>);

    #[async_trait]
    impl StateStore for MemState {
        async fn get(&self, name: &str, key: &str) -> Result<Option<String>, StateError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&format!("{name}:{key}"))
                .cloned())
        }
        async fn put(&self, name: &str, key: &str, v: &str) -> Result<(), StateError> {
            self.0
                .lock()
                .unwrap()
                .insert(format!("{name}:{key}"), v.to_owned());
            Ok(())
        }
        async fn delete(&self, name: &str, key: &str) -> Result<bool, StateError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .remove(&format!("{name}:{key}"))
                .is_some())
        }
    }

    fn sink(state: Arc<MemState>, dir: Option<PathBuf>, privacy: Privacy) -> FeedSink {
        config::Validated {
            name: "team".into(),
            calendars: Calendars::List(["cal1".to_owned()].into()),
            combine: false,
            privacy,
            refresh_minutes: Some(30),
        }
        .build(state, FeedBook::new(), dir)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn items() -> Vec<bridge_core::Item> {
        let json = r#"[{"event_id":"e1_0","summary":"Secret plan","description":"d","location":{"name":"Room 1"},
            "start_time":{"timestamp":"1772413200","timezone":"Asia/Shanghai"},
            "end_time":{"timestamp":"1772416800","timezone":"Asia/Shanghai"},"status":"confirmed"}]"#;
        let events: Vec<bridge_core::feishu::Event> = serde_json::from_str(json).unwrap();
        let mapped = bridge_core::map_events(&events);
        assert!(mapped.errors.is_empty(), "{:?}", mapped.errors);
        mapped.items
    }

    fn publish(
        s: &FeedSink,
        id: &str,
        items: &[bridge_core::Item],
        changed: bool,
        now: i64,
    ) -> Published {
        let series = bridge_core::series::group(items);
        let cal = CalendarMeta {
            id: id.into(),
            name: "Team".into(),
            timezone: None,
        };
        let revisions = HashMap::new();
        block_on(s.publish(ProjectionInput {
            calendar: &cal,
            series: &series,
            revisions: &revisions,
            changed,
            now,
        }))
        .unwrap()
    }

    #[test]
    fn publish_renders_once_and_serves_by_token() {
        let state = Arc::new(MemState::default());
        let s = sink(state.clone(), None, Privacy::Full);
        let items = items();
        assert!(publish(&s, "cal1", &items, true, 100).changed);
        let entries = block_on(s.entries()).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(is_token_shaped(&entries[0].token));
        assert!(!format!("{:?}", entries[0]).contains(&entries[0].token));
        let served = s.book.lookup(&entries[0].token).unwrap();
        let body = served.body.clone().unwrap();
        let text = std::str::from_utf8(&body.bytes).unwrap();
        assert!(text.contains("SUMMARY:Secret plan"), "{text}");
        assert!(text.contains("REFRESH-INTERVAL;VALUE=DURATION:PT30M"));
        assert!(text.contains("X-PUBLISHED-TTL:PT30M"));
        // Nothing changed: no render, same validators.
        let p = publish(&s, "cal1", &items, false, 200);
        assert!(!p.changed);
        assert_eq!(p.location, "feed:team/cal1");
        assert_eq!(s.book.body("team", "cal1").unwrap(), body);
        // Not one of its calendars: not published, no token.
        assert_eq!(publish(&s, "other", &items, true, 300).location, "");
        assert_eq!(block_on(s.entries()).unwrap().len(), 1);
    }

    #[test]
    fn a_combined_feed_shows_every_calendar_once() {
        let s = config::Validated {
            name: "all".into(),
            calendars: Calendars::All,
            combine: true,
            privacy: Privacy::Full,
            refresh_minutes: None,
        }
        .build(Arc::new(MemState::default()), FeedBook::new(), None);
        let a = items();
        assert!(publish(&s, "cal1", &a, true, 100).changed);
        let json = r#"[{"event_id":"e2_0","summary":"Other calendar",
            "start_time":{"timestamp":"1772499600","timezone":"Europe/Berlin"},
            "end_time":{"timestamp":"1772503200","timezone":"Europe/Berlin"}}]"#;
        let events: Vec<bridge_core::feishu::Event> = serde_json::from_str(json).unwrap();
        let mut b = bridge_core::map_events(&events).items;
        // The same event in both calendars is shown once.
        b.extend(a.iter().cloned());
        let p = publish(&s, "cal2", &b, true, 200);
        assert!(p.changed);
        assert_eq!(p.location, "feed:all");
        let entries = block_on(s.entries()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].calendar_id, COMBINED);
        let body = s.book.body("all", COMBINED).unwrap();
        let text = std::str::from_utf8(&body.bytes).unwrap();
        assert_eq!(text.matches("SUMMARY:Secret plan").count(), 1, "{text}");
        assert!(text.contains("SUMMARY:Other calendar"));
        assert!(text.contains("BEGIN:VTIMEZONE\r\nTZID:Asia/Shanghai"));
        assert!(text.contains("TZID:Europe/Berlin"));
        assert!(text.contains("X-WR-CALNAME:all"));
        // Nothing changed: not rendered again.
        assert!(!publish(&s, "cal1", &a, false, 300).changed);
        assert_eq!(s.book.body("all", COMBINED).unwrap(), body);
        // A change in one calendar keeps the other's events.
        let p = publish(&s, "cal1", &[], true, 400);
        assert!(p.changed);
        let text = String::from_utf8(s.book.body("all", COMBINED).unwrap().bytes.to_vec()).unwrap();
        assert!(text.contains("SUMMARY:Other calendar"));
        assert_eq!(text.matches("SUMMARY:Secret plan").count(), 1);
    }

    #[test]
    fn busy_feeds_hide_every_detail() {
        let s = sink(Arc::new(MemState::default()), None, Privacy::Busy);
        publish(&s, "cal1", &items(), true, 100);
        let body = s.book.body("team", "cal1").unwrap();
        let text = std::str::from_utf8(&body.bytes).unwrap();
        assert!(text.contains("SUMMARY:Busy"));
        for hidden in [
            "Secret plan",
            "Room 1",
            "DESCRIPTION",
            "LOCATION",
            "ATTENDEE",
        ] {
            assert!(!text.contains(hidden), "{hidden} in {text}");
        }
    }

    #[test]
    fn rotation_kills_the_old_token_and_a_restart_serves_the_cached_body() {
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(MemState::default());
        let s = sink(state.clone(), Some(dir.path().to_owned()), Privacy::Full);
        publish(&s, "cal1", &items(), true, 100);
        let old = block_on(s.entries()).unwrap().remove(0).token;
        let new = block_on(s.rotate(None, 150)).unwrap().remove(0).token;
        assert_ne!(old, new);
        assert!(s.book.lookup(&old).is_none());
        assert!(s.book.lookup(&new).unwrap().body.is_some());
        assert!(block_on(s.rotate(Some("nope"), 150)).is_err());
        // A new process: same state and cache directory, empty book.
        let again = sink(state, Some(dir.path().to_owned()), Privacy::Full);
        assert_eq!(block_on(again.load()).unwrap(), 1);
        assert_eq!(
            again.book.lookup(&new).unwrap().body,
            s.book.body("team", "cal1")
        );
        assert!(again.book.lookup(&old).is_none());
        // The cached body counts as rendered with these settings.
        assert!(!publish(&again, "cal1", &items(), false, 400).changed);
    }
}
