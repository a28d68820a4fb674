//! A source of one calendar whose listing is what the test put there (by
//! editing the events under the lock), always complete, without a sync
//! token. The sink tests use "Team" (`feishu_cal_1`, [`calendar`]).

use std::sync::Mutex;

use async_trait::async_trait;
use bridge_core::feishu::Event;
use bridge_engine::{CalendarMeta, Listing, Source, SourceError};

#[derive(Debug)]
pub(crate) struct StaticSource(pub(crate) Mutex<Vec<Event>>, CalendarMeta);

impl StaticSource {
    /// `events` in [`calendar`].
    pub(crate) fn new(events: Vec<Event>) -> Self {
        Self::in_calendar(calendar(), events)
    }

    pub(crate) fn in_calendar(calendar: CalendarMeta, events: Vec<Event>) -> Self {
        Self(Mutex::new(events), calendar)
    }
}

/// The one calendar's metadata.
pub(crate) fn calendar() -> CalendarMeta {
    CalendarMeta {
        id: "feishu_cal_1".into(),
        name: "Team".into(),
        timezone: Some("Asia/Shanghai".into()),
    }
}

#[async_trait]
impl Source for StaticSource {
    async fn calendars(&self) -> Result<Vec<CalendarMeta>, SourceError> {
        Ok(vec![self.1.clone()])
    }
    async fn list(&self, _: &str, _: Option<&str>) -> Result<Listing, SourceError> {
        Ok(Listing {
            events: self.0.lock().unwrap().clone(),
            sync_token: None,
            complete: true,
            calls: 1,
        })
    }
}
