//! [`Source`] over the Feishu calendar v4 API.

use std::sync::Arc;

use async_trait::async_trait;
use bridge_feishu::FeishuError;
use bridge_feishu::client::{FeishuClient, Identity};

use crate::traits::{CalendarMeta, Listing, Source, SourceError};

/// Which calendars to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Primary,
    All,
    List(Vec<String>),
}

/// Feishu as a source.
#[derive(Debug, Clone)]
pub struct FeishuSource {
    client: Arc<FeishuClient>,
    identity: Identity,
    selection: Selection,
}

impl FeishuSource {
    pub fn new(client: Arc<FeishuClient>, identity: Identity, selection: Selection) -> Self {
        Self {
            client,
            identity,
            selection,
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
        use bridge_core::feishu::CalendarType;
        match &self.selection {
            Selection::Primary => Ok(self
                .client
                .primary_calendars(self.identity)
                .await
                .map_err(source_error)?
                .into_iter()
                .filter_map(meta)
                .collect()),
            Selection::All => Ok(self
                .client
                .list_calendars(self.identity, None)
                .await
                .map_err(source_error)?
                .calendars
                .into_iter()
                .filter(|c| c.is_deleted != Some(true))
                // Google and Exchange calendars cannot be listed (191004).
                .filter(|c| !matches!(c.kind, Some(CalendarType::Google | CalendarType::Exchange)))
                .filter_map(meta)
                .collect()),
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
}
