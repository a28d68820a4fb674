//! Event pushes: change aggregation (§7.2), v1/v2 envelopes, dispatch to the
//! webhook or long-connection transport (which log to the outbox).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bridge_core::feishu::RsvpStatus;
use serde_json::{Value, json};

use super::model::{ChangeKind, Changes, EventChange, Store};
use super::outbox::Transport;
use super::util::{now_ms, rand_hex};
use super::{Inner, lock, webhook, ws};

#[derive(Debug)]
struct Pending {
    kind: Option<ChangeKind>,
    rsvp_infos: Vec<(String, RsvpStatus)>,
}

/// Aggregation buffers.
#[derive(Debug, Default)]
pub(crate) struct PushState {
    pending: std::sync::Mutex<HashMap<(String, String), Pending>>,
}

/// §7.2 merge rules for two changes of the same event within one window.
/// `None` means "nothing to push".
pub(crate) fn merge(old: Option<ChangeKind>, new: ChangeKind) -> Option<ChangeKind> {
    use ChangeKind::{Create, Delete, Rsvp, Update};
    match (old, new) {
        (None, n) => Some(n),
        (Some(Create), Delete) => None,
        (Some(Create), Update | Rsvp | Create) => Some(Create),
        (Some(Delete), Update | Rsvp | Delete) => Some(Delete),
        (Some(Delete), Create) => Some(Update),
        (Some(Update), Delete) => Some(Delete),
        (Some(Update), Update | Rsvp | Create) => Some(Update),
        (Some(Rsvp), Rsvp) => Some(Rsvp),
        (Some(Rsvp), Update | Create) => Some(Update),
        (Some(Rsvp), Delete) => Some(Delete),
    }
}

fn user_ids(store: &Store, open_id: &str) -> Value {
    match store.users.get(open_id) {
        Some(u) => json!({"union_id": u.union_id, "user_id": u.user_id, "open_id": u.open_id}),
        None => json!({"union_id": "", "user_id": "", "open_id": open_id}),
    }
}

/// Hands a mutation's changes to the push machinery: event changes are
/// aggregated per calendar + event, calendar-list changes and room bookings
/// are scheduled.
pub(crate) fn announce(inner: &Arc<Inner>, changes: Changes) {
    super::rooms::on_changes(inner, &changes);
    let cfg = inner.config();
    let (subscribed, calendar_pushes): (Vec<EventChange>, Vec<Vec<String>>) = {
        let store = lock(&inner.store);
        let subscribed = changes
            .events
            .into_iter()
            .filter(|c| {
                store
                    .event_subs
                    .iter()
                    .any(|(cal, _)| *cal == c.calendar_id)
            })
            .collect();
        let cal_pushes = changes
            .calendars
            .iter()
            .map(|c| store.calendar_list_subscribers(c))
            .filter(|users| !users.is_empty())
            .collect();
        (subscribed, cal_pushes)
    };
    for users in calendar_pushes {
        let body = {
            let store = lock(&inner.store);
            json!({ "user_id_list": users.iter().map(|u| user_ids(&store, u)).collect::<Vec<_>>() })
        };
        emit_v2(inner, "calendar.calendar.changed_v4", body);
    }
    for change in subscribed {
        record(inner, change, cfg.aggregation_window);
    }
    for (event_id, room_id) in changes.bookings {
        let delay = cfg.room_booking_delay;
        let inner2 = Arc::clone(inner);
        inner.kit.spawn(async move {
            tokio::time::sleep(delay).await;
            let changes = lock(&inner2.store).finish_booking(&event_id, &room_id);
            announce(&inner2, changes);
        });
    }
}

fn record(inner: &Arc<Inner>, change: EventChange, window: Duration) {
    if window.is_zero() {
        flush(
            inner,
            &change.calendar_id,
            &change.event_id,
            Pending {
                kind: Some(change.kind),
                rsvp_infos: change.rsvp_infos,
            },
        );
        return;
    }
    let key = (change.calendar_id.clone(), change.event_id.clone());
    let mut pending = lock(&inner.push.pending);
    if let Some(p) = pending.get_mut(&key) {
        p.kind = merge(p.kind, change.kind);
        if change.kind == ChangeKind::Rsvp {
            p.rsvp_infos = change.rsvp_infos;
        }
        return;
    }
    pending.insert(
        key.clone(),
        Pending {
            kind: Some(change.kind),
            rsvp_infos: change.rsvp_infos,
        },
    );
    drop(pending);
    let inner2 = Arc::clone(inner);
    inner.kit.spawn(async move {
        tokio::time::sleep(window).await;
        let p = lock(&inner2.push.pending).remove(&key);
        if let Some(p) = p {
            flush(&inner2, &key.0, &key.1, p);
        }
    });
}

fn flush(inner: &Arc<Inner>, calendar_id: &str, event_id: &str, p: Pending) {
    let Some(kind) = p.kind else {
        tracing::debug!(
            calendar_id,
            event_id,
            "changes cancelled out; nothing pushed"
        );
        return;
    };
    let body = {
        let store = lock(&inner.store);
        let users = store.subscribers(calendar_id);
        if users.is_empty() {
            return;
        }
        let mut event = json!({
            "calendar_id": calendar_id,
            "user_id_list": users.iter().map(|u| user_ids(&store, u)).collect::<Vec<_>>(),
            "calendar_event_id": event_id,
            "change_type": kind.as_str(),
        });
        if kind == ChangeKind::Rsvp {
            event["rsvp_infos"] = p
                .rsvp_infos
                .iter()
                .map(|(u, s)| json!({"from_user_id": user_ids(&store, u), "rsvp_status": s.as_str()}))
                .collect();
        }
        event
    };
    emit_v2(inner, "calendar.calendar.event.changed_v4", body);
}

fn verification_token(inner: &Inner) -> String {
    inner
        .config()
        .webhook
        .map(|w| w.verification_token)
        .unwrap_or_default()
}

/// Wraps `event` in a v2 envelope and dispatches it.
pub(crate) fn emit_v2(inner: &Arc<Inner>, event_type: &str, event: Value) -> String {
    let cfg = inner.config();
    let id = rand_hex(32);
    let payload = json!({
        "schema": "2.0",
        "header": {
            "event_id": id,
            "event_type": event_type,
            "create_time": now_ms().to_string(),
            "token": verification_token(inner),
            "app_id": cfg.app_id,
            "tenant_key": cfg.tenant_key,
        },
        "event": event,
    });
    dispatch(inner, id.clone(), event_type.to_owned(), payload);
    id
}

/// Wraps `event` in a v1 envelope (adding `app_id`/`tenant_key` when absent)
/// and dispatches it.
pub(crate) fn emit_v1(inner: &Arc<Inner>, mut event: Value) -> String {
    let cfg = inner.config();
    if let Some(obj) = event.as_object_mut() {
        obj.entry("app_id").or_insert_with(|| json!(cfg.app_id));
        obj.entry("tenant_key")
            .or_insert_with(|| json!(cfg.tenant_key));
    }
    let event_type = event
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("event_callback")
        .to_owned();
    let uuid = rand_hex(32);
    let ts = format!("{:.7}", now_ms() as f64 / 1000.0);
    let payload = json!({
        "ts": ts,
        "uuid": uuid,
        "token": verification_token(inner),
        "type": "event_callback",
        "event": event,
    });
    dispatch(inner, uuid.clone(), event_type, payload);
    uuid
}

fn dispatch(inner: &Arc<Inner>, id: String, event_type: String, payload: Value) {
    let cfg = inner.config();
    let transport = if cfg.long_connection {
        Transport::Ws
    } else if cfg.webhook.is_some() {
        Transport::Webhook
    } else {
        tracing::debug!(%event_type, "no webhook and no long connection configured; push dropped");
        return;
    };
    let msg = Arc::new(inner.outbox.open(id, event_type, transport, payload));
    tracing::debug!(event_id = %msg.id, event_type = %msg.event_type, ?transport, "push queued");
    let inner2 = Arc::clone(inner);
    match transport {
        Transport::Webhook => inner.kit.spawn(webhook::deliver(inner2, msg)),
        Transport::Ws => inner.kit.spawn(ws::deliver(inner2, msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChangeKind::*;

    #[test]
    fn documented_merge_rules() {
        assert_eq!(merge(Some(Create), Delete), None);
        assert_eq!(merge(Some(Create), Update), Some(Create));
        assert_eq!(merge(Some(Delete), Update), Some(Delete));
        assert_eq!(merge(Some(Update), Delete), Some(Delete));
        assert_eq!(merge(Some(Update), Update), Some(Update));
        assert_eq!(merge(Some(Rsvp), Rsvp), Some(Rsvp));
        assert_eq!(merge(None, Update), Some(Update));
    }
}
