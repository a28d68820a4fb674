//! [`Source`] over the Feishu calendar v4 API.

use std::sync::Arc;

use async_trait::async_trait;
use bridge_feishu::FeishuError;
use bridge_feishu::client::{FeishuClient, Identity};

use crate::traits::{Attendees, CalendarMeta, Listing, Source, SourceError};

/// Which calendars to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Primary,
    All,
    List(Vec<String>),
}

/// How long resolved calendar metadata (names of explicitly listed
/// calendars, the primary calendar) is reused before it is read again.
pub const CALENDAR_META_TTL_SECS: i64 = 24 * 3600;

/// Feishu as a source.
#[derive(Debug, Clone)]
pub struct FeishuSource {
    client: Arc<FeishuClient>,
    identity: Identity,
    selection: Selection,
    /// Where resolved calendar metadata is cached (`calendars = "primary"`
    /// or an explicit list), so that a no-op pass makes listing calls only.
    cache: Option<bridge_store::Store>,
    /// Calendars the last listing left out because their id is unusable.
    skipped: Arc<std::sync::Mutex<Vec<SkippedCalendar>>>,
}

/// A calendar Feishu listed that cannot be mirrored: its id is empty or
/// contains control characters (it could be neither stored nor named in a
/// request or a file). It is left out, and the other calendars go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedCalendar {
    /// The id as listed, escaped for display (`"bad\u{1f}id"`).
    pub id: String,
    /// Its name, if it has one.
    pub name: Option<String>,
    pub reason: &'static str,
}

/// Why a listed calendar id cannot be used, if it cannot.
pub fn unusable_calendar_id(id: &str) -> Option<&'static str> {
    if id.trim().is_empty() {
        Some("its id is empty")
    } else if id.chars().any(char::is_control) {
        Some("its id contains control characters")
    } else {
        None
    }
}

/// Splits listed calendars into the usable ones and the skipped ones.
fn partition(
    cals: impl IntoIterator<Item = bridge_core::feishu::Calendar>,
) -> (Vec<CalendarMeta>, Vec<SkippedCalendar>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for c in cals {
        let id = c.calendar_id.clone().unwrap_or_default();
        match unusable_calendar_id(&id) {
            None => ok.extend(meta(c)),
            Some(reason) => skipped.push(SkippedCalendar {
                id: id.escape_debug().to_string(),
                name: c.summary.filter(|s| !s.is_empty()),
                reason,
            }),
        }
    }
    (ok, skipped)
}

/// The cached form of a resolved selection.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedMeta {
    at: i64,
    calendars: Vec<(String, String, Option<String>)>,
}

impl FeishuSource {
    pub fn new(client: Arc<FeishuClient>, identity: Identity, selection: Selection) -> Self {
        Self {
            client,
            identity,
            selection,
            cache: None,
            skipped: Arc::default(),
        }
    }

    /// The calendars the last listing of the selection left out (only
    /// `calendars = "all"` and `"primary"` list what Feishu has).
    pub fn skipped(&self) -> Vec<SkippedCalendar> {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn note_skipped(&self, skipped: Vec<SkippedCalendar>) {
        for s in &skipped {
            tracing::warn!(
                calendar = %s.id,
                name = s.name.as_deref().unwrap_or(""),
                "calendar skipped: {}; the other calendars are mirrored",
                s.reason
            );
        }
        *self.skipped.lock().unwrap_or_else(|e| e.into_inner()) = skipped;
    }

    /// Caches resolved calendar metadata in `store` (state
    /// `calendar_meta:<selection>`) for [`CALENDAR_META_TTL_SECS`].
    pub fn with_cache(mut self, store: bridge_store::Store) -> Self {
        self.cache = Some(store);
        self
    }

    fn cache_name(&self) -> Option<String> {
        match &self.selection {
            Selection::Primary => Some(format!("calendar_meta:primary:{:?}", self.identity)),
            Selection::All => None,
            Selection::List(ids) => Some(format!("calendar_meta:list:{}", ids.join(","))),
        }
    }

    async fn cached(&self) -> Option<Vec<CalendarMeta>> {
        let store = self.cache.as_ref()?;
        let name = self.cache_name()?;
        let json = store.get_state(&name).await.ok()??;
        let c: CachedMeta = serde_json::from_str(&json).ok()?;
        let now = crate::daemon::unix_now();
        if now < c.at || now - c.at > CALENDAR_META_TTL_SECS {
            return None;
        }
        Some(
            c.calendars
                .into_iter()
                .map(|(id, name, timezone)| CalendarMeta { id, name, timezone })
                .collect(),
        )
    }

    async fn remember(&self, cals: &[CalendarMeta]) {
        let (Some(store), Some(name)) = (self.cache.as_ref(), self.cache_name()) else {
            return;
        };
        let c = CachedMeta {
            at: crate::daemon::unix_now(),
            calendars: cals
                .iter()
                .map(|c| (c.id.clone(), c.name.clone(), c.timezone.clone()))
                .collect(),
        };
        if let Ok(json) = serde_json::to_string(&c)
            && let Err(e) = store.put_state(&name, &json).await
        {
            tracing::warn!(error = %e, "could not cache calendar metadata");
        }
    }

    /// Resolves the selection with the Feishu API.
    async fn resolve(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        use bridge_core::feishu::CalendarType;
        match &self.selection {
            Selection::Primary => {
                let (ok, skipped) = partition(
                    self.client
                        .primary_calendars(self.identity)
                        .await
                        .map_err(source_error)?,
                );
                self.note_skipped(skipped);
                Ok(ok)
            }
            Selection::All => {
                let (ok, skipped) = partition(
                    self.client
                        .list_calendars(self.identity, None)
                        .await
                        .map_err(source_error)?
                        .calendars
                        .into_iter()
                        .filter(|c| c.is_deleted != Some(true))
                        // Google and Exchange calendars cannot be listed (191004).
                        .filter(|c| {
                            !matches!(c.kind, Some(CalendarType::Google | CalendarType::Exchange))
                        }),
                );
                self.note_skipped(skipped);
                Ok(ok)
            }
            Selection::List(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let cal = self
                        .client
                        .get_calendar(self.identity, id)
                        .await
                        .map_err(source_error)?;
                    out.push(meta(cal).unwrap_or_else(|| CalendarMeta {
                        id: id.clone(),
                        name: id.clone(),
                        timezone: None,
                    }));
                }
                Ok(out)
            }
        }
    }

    /// Drops cached calendar metadata (a `calendar.calendar.changed_v4`).
    pub async fn forget_calendar_cache(&self) {
        if let (Some(store), Some(name)) = (self.cache.as_ref(), self.cache_name()) {
            let _ = store.delete_state(&name).await;
        }
    }

    pub fn client(&self) -> &Arc<FeishuClient> {
        &self.client
    }
}

fn source_error(e: FeishuError) -> SourceError {
    match e {
        FeishuError::CursorExpired { .. } => SourceError::CursorExpired,
        e if e.is_transient() => SourceError::Unavailable(e.to_string()),
        e => SourceError::Refused(e.to_string()),
    }
}

fn meta(c: bridge_core::feishu::Calendar) -> Option<CalendarMeta> {
    let id = c.calendar_id?;
    let name = c
        .summary_alias
        .filter(|s| !s.is_empty())
        .or(c.summary)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| id.clone());
    Some(CalendarMeta {
        id,
        name,
        timezone: None,
    })
}

#[async_trait]
impl Source for FeishuSource {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        if let Some(c) = self.cached().await {
            return Ok(c);
        }
        let cals = self.resolve().await?;
        self.remember(&cals).await;
        Ok(cals)
    }

    async fn list(
        &self,
        calendar_id: &str,
        sync_token: Option<&str>,
    ) -> Result<Listing, SourceError> {
        let l = self
            .client
            .list_events(self.identity, calendar_id, sync_token)
            .await
            .map_err(source_error)?;
        Ok(Listing {
            events: l.items,
            sync_token: l.sync_token,
            complete: sync_token.is_none(),
            calls: u64::from(l.pages),
        })
    }

    async fn list_pages(
        &self,
        calendar_id: &str,
        sync_token: Option<&str>,
        on_page: &mut (dyn FnMut(Vec<bridge_core::feishu::Event>) + Send),
    ) -> Result<Listing, SourceError> {
        let l = self
            .client
            .list_events_pages(self.identity, calendar_id, sync_token, on_page)
            .await
            .map_err(source_error)?;
        Ok(Listing {
            events: Vec::new(),
            sync_token: l.sync_token,
            complete: sync_token.is_none(),
            calls: u64::from(l.pages),
        })
    }

    async fn attendees(&self, calendar_id: &str, event_id: &str) -> Result<Attendees, SourceError> {
        let l = self
            .client
            .list_attendees(self.identity, calendar_id, event_id)
            .await
            .map_err(source_error)?;
        Ok(Attendees {
            items: l.items,
            calls: u64::from(l.pages),
            truncated: l.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::feishu::Calendar;

    fn cal(id: Option<&str>, summary: &str) -> Calendar {
        Calendar {
            calendar_id: id.map(str::to_owned),
            summary: Some(summary.to_owned()),
            ..Calendar::default()
        }
    }

    #[test]
    fn calendars_with_unusable_ids_are_skipped_and_the_rest_kept() {
        let (ok, skipped) = partition([
            cal(Some("feishu.cn_good@group.calendar.feishu.cn"), "Good"),
            cal(Some(""), "Empty"),
            cal(None, "Missing"),
            cal(Some("bad\u{1f}id"), "Separator"),
            cal(Some("line\nbreak"), "Newline"),
            cal(Some("  "), "Blank"),
            cal(Some("also-good"), ""),
        ]);
        let ids: Vec<&str> = ok.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["feishu.cn_good@group.calendar.feishu.cn", "also-good"]
        );
        assert_eq!(ok[1].name, "also-good");
        let shown: Vec<(&str, &str)> = skipped.iter().map(|s| (s.id.as_str(), s.reason)).collect();
        assert_eq!(
            shown,
            [
                ("", "its id is empty"),
                ("", "its id is empty"),
                ("bad\\u{1f}id", "its id contains control characters"),
                ("line\\nbreak", "its id contains control characters"),
                ("  ", "its id is empty"),
            ]
        );
        assert_eq!(skipped[2].name.as_deref(), Some("Separator"));
    }
}
