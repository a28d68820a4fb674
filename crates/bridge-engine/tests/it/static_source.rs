//! A source of fixed events in one calendar, "Team" (`feishu_cal_1`), for
//! the real sinks' tests through the engine. A test changes what Feishu
//! holds by editing the events under the lock.

use std::sync::Mutex;

use async_trait::async_trait;
use bridge_core::feishu::Event;
use bridge_engine::{CalendarMeta, Listing, Source, SourceError};

#[derive(Debug)]
pub(crate) struct StaticSource(pub(crate) Mutex<Vec<Event>>);

impl StaticSource {
    pub(crate) fn new(events: Vec<Event>) -> Self {
        Self(Mutex::new(events))
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
        Ok(vec![calendar()])
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
