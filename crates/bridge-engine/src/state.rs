//! The targets' state ([`StateStore`]) over the store's named-state table.

use async_trait::async_trait;
use bridge_store::Store;
use bridge_target::{StateError, StateStore};

/// The state of one sink: entry `key` of kind `name` is the store's named
/// state `<name>:<sink id>:<key>` (the names the Google sink has always
/// used, so existing stores keep their created calendars).
#[derive(Debug, Clone)]
pub struct SinkState {
    store: Store,
    sink_id: String,
}

impl SinkState {
    pub fn new(store: Store, sink_id: impl Into<String>) -> Self {
        Self {
            store,
            sink_id: sink_id.into(),
        }
    }

    fn name(&self, name: &str, key: &str) -> String {
        format!("{name}:{}:{key}", self.sink_id)
    }
}

fn err(e: bridge_store::StoreError) -> StateError {
    StateError(e.to_string())
}

#[async_trait]
impl StateStore for SinkState {
    async fn get(&self, name: &str, key: &str) -> Result<Option<String>, StateError> {
        self.store
            .get_state(&self.name(name, key))
            .await
            .map_err(err)
    }

    async fn put(&self, name: &str, key: &str, value_json: &str) -> Result<(), StateError> {
        self.store
            .put_state(&self.name(name, key), value_json)
            .await
            .map_err(err)
    }

    async fn delete(&self, name: &str, key: &str) -> Result<bool, StateError> {
        self.store
            .delete_state(&self.name(name, key))
            .await
            .map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_are_scoped_to_the_sink() {
        let store = Store::in_memory().await.unwrap();
        let a = SinkState::new(store.clone(), "google:a");
        let b = SinkState::new(store.clone(), "google:b");
        a.put("google_calendar", "cal1", r#"{"id":"x"}"#)
            .await
            .unwrap();
        assert_eq!(
            a.get("google_calendar", "cal1").await.unwrap().as_deref(),
            Some(r#"{"id":"x"}"#)
        );
        assert_eq!(b.get("google_calendar", "cal1").await.unwrap(), None);
        assert!(
            store
                .get_state("google_calendar:google:a:cal1")
                .await
                .unwrap()
                .is_some()
        );
        assert!(a.delete("google_calendar", "cal1").await.unwrap());
        assert_eq!(a.get("google_calendar", "cal1").await.unwrap(), None);
    }
}
