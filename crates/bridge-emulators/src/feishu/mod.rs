//! A faithful local Feishu / Lark server (axum, in-process, `127.0.0.1:0`).
//!
//! Modelled on the shared notes `feishu-api.md` (§1–§12) and the original
//! Feishu pages, not on any client:
//!
//! * **Auth** — `POST /open-apis/auth/v3/{tenant,app}_access_token/internal`
//!   (top-level fields; the same token while ≥ 30 min remain), OAuth v2
//!   `GET /open-apis/authen/v1/authorize` (302 as the auto-login user, codes of
//!   64 `[A-Za-z0-9-_]` chars, 5 min, single use, PKCE `S256`/`plain`) and
//!   `POST /open-apis/authen/v2/oauth/token` (JSON or form; `authorization_code`
//!   and `refresh_token` with single-use rotation), `GET /open-apis/authen/v1/user_info`.
//! * **Calendar v4** — list calendars (paging + sync deltas with `is_deleted`),
//!   `calendars/primary`, `calendars/primarys`, get calendar, list events (full,
//!   `anchor_time`, `start_time`+`end_time`, `sync_token` deltas where deleted
//!   events come back as `{event_id, status:"cancelled"}`), get event,
//!   attendees, instances (RRULE expansion in the event's zone), instance_view,
//!   reply, and the four subscription endpoints (user token only).
//! * **Every OpenAPI call** — `Authorization: Bearer`, `X-Tt-Logid`, the
//!   `{code,msg,data}` envelope, the documented codes and HTTP statuses, the
//!   per-app + endpoint sliding-window limit (HTTP 429 / 99991400 with
//!   `x-ogw-ratelimit-limit` and `x-ogw-ratelimit-reset`), injected faults.
//! * **Meeting rooms** (`rooms` module, `rooms.md` §9) — vc/v1 rooms, levels,
//!   search and reserve configs; the legacy `meeting_room` building / room
//!   lists; third-party rooms with their v1 events, `summary` / `freebusy`
//!   batch_get and `instance/reply`; contact v3 get user (departments).
//! * **Pushes** — `calendar.calendar.event.changed_v4` aggregated per calendar +
//!   event within [`FeishuConfig::aggregation_window`] (§7.2 merge rules),
//!   `calendar.calendar.changed_v4`, third-party room events (v1), reserve
//!   config events and arbitrary v1/v2 events, delivered by webhook (optional
//!   AES + signature, 3 s timeout, retry schedule) or over the long connection
//!   (`POST /callback/ws/endpoint`, `GET /ws/v2`, `pbbp2` frames, acks,
//!   redelivery).
//!
//! # Emulator choices where the docs say UNCONFIRMED
//!
//! * Token errors (99991661/99991663/99991668/99991671/99991677) are HTTP 400.
//!   A tenant token on a user-only endpoint is 99991663 ("doesn't accept
//!   tenant token", §2.4).
//! * Deleted events (and events an attendee was removed from) appear in
//!   `sync_token` deltas as `{event_id, status:"cancelled"}`; cancelled
//!   exceptions appear as full items with `status:"cancelled"`.
//! * `recurring_event_id` of exceptions is the master's full id (`<uid>_0`).
//! * `start_time`+`end_time` mode answers `has_more:false` with no tokens even
//!   when truncated at `page_size`.
//! * Webhook: `X-Lark-Request-Timestamp` is in seconds; timestamp and nonce are
//!   always sent, `X-Lark-Signature` only when an encrypt key is configured.
//! * Long connection: a `{"code":500}` ack or no ack within
//!   [`FeishuConfig::ws_ack_timeout`] is redelivered on the retry schedule; a
//!   dropped socket re-queues the message for the next connection at once.
//!   Tickets are single use (5 min); a bad ticket fails the handshake with
//!   `Handshake-Status: 403`, `Handshake-Autherrcode: 1000040351`.
//! * Bad app credentials: `auth/v3` answers HTTP 400 code 99991543, the WS
//!   endpoint HTTP 200 code 99991543 (a client error, per the SDKs).
//!
//! # Visibility model
//!
//! A tenant token sees every calendar (user primaries, shared calendars, the
//! app's own primary); a user token sees its own primary plus every shared
//! calendar, and gets 191002 on other users' primaries. Room (resource)
//! calendars are readable by all but not part of calendar lists. An event
//! appears on its organizer calendar and on the calendars of its user and room
//! attendees (same `event_id`), so invitations produce `create` pushes on the
//! invitee's calendar and removals `delete` pushes.
//!
//! # Control API (`/_emulator/…`, JSON in and out, no auth, not recorded)
//!
//! `calls`, `faults`, `fail_next` and `reset` are the kit's common routes;
//! the rest is Feishu's own.
//!
//! | Method + path | Body | Answer |
//! |---|---|---|
//! | `POST /_emulator/users` | `{name}` | `{open_id, primary_calendar_id}` |
//! | `POST /_emulator/users/{open_id}/tokens` | `{scope?}` | `{access_token, refresh_token}` |
//! | `POST /_emulator/auto_login` | `{open_id}` | `{}` |
//! | `POST /_emulator/calendars` | `{summary}` | `{calendar_id}` |
//! | `DELETE /_emulator/calendars/{cal}` | — | `{}` |
//! | `POST /_emulator/calendars/{cal}/subscribers` | `{open_id}` | `{}` (event subscription without the API) |
//! | `GET /_emulator/calendars/{cal}/events` | — | `[Event]` |
//! | `POST /_emulator/calendars/{cal}/events` | `Event` | `{event_id}` |
//! | `POST /_emulator/calendars/{cal}/events/bulk` | `[Event]` | `{loaded}` |
//! | `PATCH /_emulator/calendars/{cal}/events/{id}` | JSON merge patch of `Event` | `{}` |
//! | `DELETE /_emulator/calendars/{cal}/events/{id}` | — | `{}` |
//! | `POST …/events/{id}/move` | `{original_time, start, end, summary?}` | `{event_id}` |
//! | `POST …/events/{id}/cancel` | `{original_time}` | `{event_id}` |
//! | `POST …/events/{id}/attendees` | `Attendee` | `{}` |
//! | `POST …/events/{id}/rooms` | `{room_id, name}` | `{}` |
//! | `POST …/events/{id}/rooms/{room_id}/status` | `{rsvp_status}` | `{}` (the booking settles now) |
//! | `POST …/events/{id}/reply` | `{open_id, rsvp_status}` | `{}` |
//! | `POST /_emulator/tokens/expire` | `{kind: tenant\|user\|refresh\|sync\|page}` | `{}` |
//! | `PUT /_emulator/faults` | `Faults` (durations in ms) | `{}` |
//! | `POST /_emulator/fail_next` | `{path_contains, n, fault: status429\|status5xx\|slow\|token_expired\|truncated, reset_secs?, delay_ms?}` | `{}` |
//! | `PUT /_emulator/webhook` | `{url, encrypt_key?, verification_token}` or `null` | `{}` |
//! | `POST /_emulator/webhook/verify` | — | `{verified, error?}` |
//! | `POST /_emulator/ws/drop` | — | `{}` |
//! | `POST /_emulator/room_levels` | `{name, parent_id?, custom_group_id?}` | `{room_level_id}` |
//! | `POST /_emulator/rooms` | `{name, capacity?, description?, custom_room_id?, room_level_id?, third_party?}` | `{room_id}` |
//! | `PATCH /_emulator/reserve_configs/{id}` | as `PATCH reserve_configs/:id` | `{}` or `{error}` (the `vc.reserve_config.updated_v1` push follows) |
//! | `GET /_emulator/room_replies` | — | `[RoomReply]` |
//! | `POST /_emulator/emit/room_event` | `{kind: created\|updated\|deleted, uid, original_time, start_ms, end_ms, room_ids, organizer_open_id}` | `{uuid}` |
//! | `POST /_emulator/emit/reserve_config` | event body | `{event_id}` |
//! | `POST /_emulator/emit/v2` | `{event_type, event}` | `{event_id}` |
//! | `POST /_emulator/emit/v1` | event body | `{uuid}` |
//! | `GET`/`DELETE /_emulator/calls` | — | `[CallRecord]` / `{}` |
//! | `POST /_emulator/reset` | — | `{}`: forgets calls, random faults and queued one-shots |
//! | `GET /_emulator/deliveries` | — | `[Delivery]` |
//! | `GET /_emulator/state` | — | users, calendars, version, live WS connections |

mod api;
mod auth;
mod control;
mod faults;
mod http;
mod model;
mod outbox;
mod paging;
mod push;
mod recur;
pub mod rooms;
mod util;
pub mod webhook;
pub mod ws;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use bridge_core::feishu::{Attendee, Calendar, Event, RsvpStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub(crate) use crate::kit::lock;
use crate::kit::{self, Kit, Lane};
pub use faults::{FaultKind, Faults};
pub use http::{CallRecord, TokenKind};
pub use model::EmulatorError;
pub use outbox::{Attempt, Delivery, Transport};
pub use webhook::{CryptoError, VerifyError};

/// Where webhook pushes go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookTarget {
    pub url: String,
    #[serde(default)]
    pub encrypt_key: Option<String>,
    #[serde(default)]
    pub verification_token: String,
}

/// `ClientConfig` handed out by the long-connection endpoint and in pongs
/// (all seconds; `reconnect_count < 0` = unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsClientConfig {
    pub reconnect_count: i64,
    pub reconnect_interval: u64,
    pub reconnect_nonce: u64,
    pub ping_interval: u64,
}

impl Default for WsClientConfig {
    fn default() -> Self {
        Self {
            reconnect_count: -1,
            reconnect_interval: 120,
            reconnect_nonce: 30,
            ping_interval: 120,
        }
    }
}

/// Emulator configuration. `Default` gives the documented production values.
#[derive(Debug, Clone)]
pub struct FeishuConfig {
    pub app_id: String,
    pub app_secret: String,
    /// `tenant_key` in push headers.
    pub tenant_key: String,
    pub tenant_token_ttl: Duration,
    pub user_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// Lifetime of OAuth authorization codes (5 min).
    pub auth_code_ttl: Duration,
    /// Event-change aggregation window (3 s; zero = push every change).
    pub aggregation_window: Duration,
    pub webhook: Option<WebhookTarget>,
    /// Deliver pushes over the long connection instead of the webhook.
    pub long_connection: bool,
    /// Delays before retries 1..=4 (webhook and long connection).
    pub webhook_retry_schedule: Vec<Duration>,
    /// WS payloads longer than this many bytes are split into parts.
    pub ws_split_threshold: usize,
    pub ws_ack_timeout: Duration,
    pub ws_client_config: WsClientConfig,
    /// Live WS connections allowed per app (50).
    pub ws_max_connections: usize,
    /// `(per second, per minute)` per app + endpoint; `None` disables.
    pub rate_limit: Option<(u32, u32)>,
    /// Time until an asynchronous room booking resolves.
    pub room_booking_delay: Duration,
}

impl Default for FeishuConfig {
    fn default() -> Self {
        Self {
            app_id: "cli_test_app".into(),
            app_secret: "test_app_secret".into(),
            tenant_key: "emulator_tenant".into(),
            tenant_token_ttl: Duration::from_secs(7200),
            user_token_ttl: Duration::from_secs(7200),
            refresh_token_ttl: Duration::from_secs(604_800),
            auth_code_ttl: Duration::from_secs(300),
            aggregation_window: Duration::from_secs(3),
            webhook: None,
            long_connection: false,
            webhook_retry_schedule: vec![
                Duration::from_secs(15),
                Duration::from_secs(300),
                Duration::from_secs(3600),
                Duration::from_secs(6 * 3600),
            ],
            ws_split_threshold: 16 * 1024,
            ws_ack_timeout: Duration::from_secs(3),
            ws_client_config: WsClientConfig::default(),
            ws_max_connections: 50,
            rate_limit: Some((50, 1000)),
            room_booking_delay: Duration::from_millis(200),
        }
    }
}

/// Kinds of `third_party_meeting_room_event_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEventKind {
    Created,
    Updated,
    Deleted,
}

impl RoomEventKind {
    /// The event type name.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => "third_party_meeting_room_event_created",
            Self::Updated => "third_party_meeting_room_event_updated",
            Self::Deleted => "third_party_meeting_room_event_deleted",
        }
    }
}

/// Shared server state: the kit's harness plus the Feishu model.
pub(crate) struct Inner {
    pub(crate) kit: Kit<Inner>,
    pub(crate) cfg: Mutex<FeishuConfig>,
    pub(crate) store: Mutex<model::Store>,
    pub(crate) auth: Mutex<auth::TokenStore>,
    pub(crate) limiter: Mutex<faults::RateLimiter>,
    pub(crate) push: push::PushState,
    pub(crate) outbox: outbox::Outbox,
    pub(crate) ws: ws::Hub,
    /// Room registry, booking restrictions, replies (`rooms` module).
    pub(crate) rooms: Mutex<rooms::RoomsState>,
    /// The client of webhook deliveries.
    pub(crate) http: reqwest::Client,
}

impl Inner {
    pub(crate) fn config(&self) -> FeishuConfig {
        lock(&self.cfg).clone()
    }

    pub(crate) fn app_id(&self) -> String {
        lock(&self.cfg).app_id.clone()
    }

    pub(crate) fn tokens(&self) -> paging::Tokens<'_> {
        paging::Tokens(&self.kit.cursors)
    }

    /// Runs a store mutation and announces its changes.
    pub(crate) fn mutate<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut model::Store, i64) -> Result<(T, model::Changes), EmulatorError>,
    ) -> Result<T, EmulatorError> {
        let (value, changes) = {
            let mut store = lock(&self.store);
            f(&mut store, util::now_secs())?
        };
        push::announce(self, changes);
        Ok(value)
    }

    pub(crate) fn issue_user_token(&self, open_id: &str, scope: &str) -> (String, Option<String>) {
        let cfg = self.config();
        lock(&self.auth).issue_user(
            open_id,
            scope,
            &cfg.app_id,
            cfg.user_token_ttl,
            cfg.refresh_token_ttl,
            tokio::time::Instant::now(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn room_event(
        self: &Arc<Self>,
        kind: RoomEventKind,
        uid: &str,
        original_time: i64,
        start_ms: i64,
        end_ms: i64,
        room_ids: &[&str],
        organizer_open_id: &str,
    ) -> String {
        let organizer = {
            let store = lock(&self.store);
            match store.users.get(organizer_open_id) {
                Some(u) => {
                    json!({"open_id": u.open_id, "user_id": u.user_id, "union_id": u.union_id})
                }
                None => json!({"open_id": organizer_open_id, "user_id": "", "union_id": ""}),
            }
        };
        let event = json!({
            "type": kind.event_type(),
            "event_id": format!("{uid}_{original_time}"),
            "event_time": util::now_ms().to_string(),
            "uid": uid,
            "original_time": original_time,
            "start": { "time_stamp": start_ms.to_string() },
            "end": { "time_stamp": end_ms.to_string() },
            "meeting_rooms": room_ids.iter().map(|r| json!({"open_id": r})).collect::<Vec<_>>(),
            "organizer": organizer,
        });
        push::emit_v1(self, event)
    }
}

fn router(inner: Arc<Inner>) -> Router {
    let cal = "/open-apis/calendar/v4/calendars";
    let api: Router<Arc<Inner>> = Router::new()
        .route(
            "/open-apis/auth/v3/tenant_access_token/internal",
            post(auth::tenant_access_token),
        )
        .route(
            "/open-apis/auth/v3/app_access_token/internal",
            post(auth::app_access_token),
        )
        .route("/open-apis/authen/v1/authorize", get(auth::authorize))
        .route("/open-apis/authen/v2/oauth/token", post(auth::oauth_token))
        .route("/open-apis/authen/v1/user_info", get(auth::user_info))
        .route(cal, get(api::list_calendars))
        .route(&format!("{cal}/primary"), post(api::primary))
        .route(&format!("{cal}/primarys"), post(api::primarys))
        .route(
            &format!("{cal}/subscription"),
            post(api::subscribe_calendars),
        )
        .route(
            &format!("{cal}/unsubscription"),
            post(api::unsubscribe_calendars),
        )
        .route(&format!("{cal}/{{calendar_id}}"), get(api::get_calendar))
        .route(
            &format!("{cal}/{{calendar_id}}/events"),
            get(api::list_events),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/instance_view"),
            get(api::instance_view),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/subscription"),
            post(api::subscribe_events),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/unsubscription"),
            post(api::unsubscribe_events),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/{{event_id}}"),
            get(api::get_event),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/{{event_id}}/attendees"),
            get(api::list_attendees),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/{{event_id}}/instances"),
            get(api::instances),
        )
        .route(
            &format!("{cal}/{{calendar_id}}/events/{{event_id}}/reply"),
            post(api::reply),
        )
        .merge(rooms_routes())
        .route("/callback/ws/endpoint", post(ws::endpoint))
        .route_layer(from_fn_with_state(Arc::clone(&inner), http::rate_limit))
        .fallback(http::not_found)
        .layer(from_fn_with_state(
            Arc::clone(&inner),
            kit::observe::<Inner>,
        ));
    Router::new()
        .route("/ws/v2", get(ws::upgrade))
        .nest("/_emulator", control::router())
        .merge(api)
        .with_state(inner)
}

/// The room APIs (`rooms` module).
fn rooms_routes() -> Router<Arc<Inner>> {
    let vc = "/open-apis/vc/v1";
    let mr = "/open-apis/meeting_room";
    Router::new()
        .route(&format!("{vc}/rooms"), get(rooms::list_rooms))
        .route(&format!("{vc}/rooms/mget"), post(rooms::mget_rooms))
        .route(&format!("{vc}/rooms/search"), post(rooms::search_rooms))
        .route(&format!("{mr}/building/list"), get(rooms::legacy_buildings))
        .route(
            &format!("{mr}/building/batch_get"),
            get(rooms::legacy_buildings_get),
        )
        .route(&format!("{mr}/room/list"), get(rooms::legacy_rooms))
        .route(
            &format!("{mr}/room/batch_get"),
            get(rooms::legacy_rooms_get),
        )
        .route(
            &format!("{mr}/room/batch_get_id"),
            get(rooms::legacy_room_ids),
        )
        .route(&format!("{vc}/rooms/{{room_id}}"), get(rooms::get_room))
        .route(&format!("{vc}/room_levels"), get(rooms::list_levels))
        .route(&format!("{vc}/room_levels/mget"), post(rooms::mget_levels))
        .route(
            &format!("{vc}/room_levels/{{room_level_id}}"),
            get(rooms::get_level),
        )
        .route(
            &format!("{vc}/reserve_configs/reserve_scope"),
            get(rooms::reserve_scope),
        )
        .route(
            &format!("{vc}/reserve_configs/{{reserve_config_id}}"),
            axum::routing::patch(rooms::patch_reserve),
        )
        .route(
            &format!("{mr}/summary/batch_get"),
            post(rooms::summary_batch_get),
        )
        .route(
            &format!("{mr}/freebusy/batch_get"),
            get(rooms::freebusy_batch_get),
        )
        .route(&format!("{mr}/instance/reply"), post(rooms::instance_reply))
        .route(
            "/open-apis/contact/v3/users/{user_id}",
            get(rooms::contact_user),
        )
}

/// A running Feishu emulator. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct FeishuEmulator {
    inner: Arc<Inner>,
}

kit::handle_api!(FeishuEmulator, Faults, FaultKind, CallRecord);

fn expect<T>(r: Result<T, EmulatorError>) -> T {
    r.unwrap_or_else(|e| panic!("feishu emulator: {e}"))
}

impl FeishuEmulator {
    /// Binds `127.0.0.1:0` and serves in a background task of the current
    /// tokio runtime.
    pub async fn start(cfg: FeishuConfig) -> std::io::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let inner = Arc::new(Inner {
            kit: Kit::bind(Some(paging::TOKEN_LIFETIME)).await?,
            cfg: Mutex::new(cfg),
            store: Mutex::new(model::Store::default()),
            auth: Mutex::new(auth::TokenStore::default()),
            limiter: Mutex::new(faults::RateLimiter::default()),
            push: push::PushState::default(),
            outbox: outbox::Outbox::default(),
            ws: ws::Hub::default(),
            rooms: Mutex::new(rooms::RoomsState::default()),
            http,
        });
        inner.kit.serve(router(Arc::clone(&inner)));
        Ok(Self { inner })
    }

    /// The current configuration.
    pub fn config(&self) -> FeishuConfig {
        self.inner.config()
    }

    /// Changes the configuration in place (e.g. switch to long connection).
    pub fn update_config(&self, f: impl FnOnce(&mut FeishuConfig)) {
        f(&mut lock(&self.inner.cfg));
    }

    // ----- tenant setup and mutations ---------------------------------------------

    /// Adds a user with a primary calendar; returns the open_id (`ou_…`).
    pub fn add_user(&self, name: &str) -> String {
        lock(&self.inner.store).add_user(name).0
    }

    /// The primary calendar id of a user.
    ///
    /// # Panics
    /// If the user is unknown.
    pub fn primary_calendar(&self, open_id: &str) -> String {
        lock(&self.inner.store)
            .primary_of(open_id)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("feishu emulator: unknown user {open_id}"))
    }

    /// Creates a shared calendar (`feishu.cn_…@group.calendar.feishu.cn`).
    pub fn create_calendar(&self, summary: &str) -> String {
        expect(self.inner.mutate(|s, _| Ok(s.create_calendar(summary))))
    }

    /// Edits a calendar's fields (summary, description, color, …).
    pub fn update_calendar(&self, calendar_id: &str, f: impl FnOnce(&mut Calendar)) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.update_calendar(calendar_id, f)?))),
        );
    }

    /// Deletes a shared calendar (primary calendars cannot be deleted).
    pub fn delete_calendar(&self, calendar_id: &str) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.delete_calendar(calendar_id)?))),
        );
    }

    /// Creates an event; fills `event_id` (`<uid>_0`), `create_time`,
    /// `status`, `app_link`, `organizer_calendar_id` and other server fields.
    /// Attendees in the event are processed as by [`Self::add_attendee`].
    pub fn create_event(&self, calendar_id: &str, event: Event) -> String {
        expect(
            self.inner
                .mutate(|s, now| s.create_event(calendar_id, event, now)),
        )
    }

    /// Edits an event (server-owned fields are restored afterwards). An edit
    /// that only changes user attendees' replies is an `rsvp` change.
    pub fn update_event(&self, calendar_id: &str, event_id: &str, f: impl FnOnce(&mut Event)) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.update_event(calendar_id, event_id, f)?))),
        );
    }

    /// Deletes an event; a master takes its exceptions with it. On an
    /// attendee's calendar this only removes it from that calendar.
    pub fn delete_event(&self, calendar_id: &str, event_id: &str) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.delete_event(calendar_id, event_id)?))),
        );
    }

    /// Moves one occurrence: creates or updates the exception
    /// `<uid>_<original_time>`; returns its id.
    pub fn move_occurrence(
        &self,
        calendar_id: &str,
        master_event_id: &str,
        original_time: i64,
        new_start: i64,
        new_end: i64,
        new_summary: Option<&str>,
    ) -> String {
        expect(self.inner.mutate(|s, now| {
            s.move_occurrence(
                calendar_id,
                master_event_id,
                original_time,
                (new_start, new_end),
                new_summary,
                now,
            )
        }))
    }

    /// Cancels one occurrence (an exception with `status:"cancelled"`).
    pub fn cancel_occurrence(
        &self,
        calendar_id: &str,
        master_event_id: &str,
        original_time: i64,
    ) -> String {
        expect(
            self.inner.mutate(|s, now| {
                s.cancel_occurrence(calendar_id, master_event_id, original_time, now)
            }),
        )
    }

    /// Adds an attendee (ids and defaults filled in). A user attendee gets
    /// the event on their primary calendar; a room attendee is booked
    /// asynchronously.
    pub fn add_attendee(&self, calendar_id: &str, event_id: &str, attendee: Attendee) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.add_attendee(calendar_id, event_id, attendee)?))),
        );
    }

    /// Adds a meeting room: `rsvp_status` `needs_action` now, the room's
    /// booking result (default `accept`) after `room_booking_delay`.
    pub fn add_room(&self, calendar_id: &str, event_id: &str, room_id: &str, name: &str) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.add_room(calendar_id, event_id, room_id, name)?))),
        );
    }

    /// What future bookings of `room_id` end in (`accept` or `decline`).
    pub fn set_room_booking_result(&self, room_id: &str, status: RsvpStatus) {
        let mut store = lock(&self.inner.store);
        store.ensure_room(room_id, room_id);
        if let Some(room) = store.rooms.get_mut(room_id) {
            room.booking_result = status;
        }
    }

    /// Adds a room level under `parent_id` (the tenant root when `None`);
    /// returns its `omb_…` id.
    pub fn add_room_level(&self, name: &str, parent_id: Option<&str>) -> String {
        self.inner
            .add_room_level(name, parent_id, "")
            .unwrap_or_else(|e| panic!("feishu emulator: {e}"))
    }

    /// Registers a room (vc/v1 registry, with its resource calendar);
    /// returns its `omm_…` id. `third_party` rooms are decided by
    /// `instance/reply` and emit the v1 third-party room events.
    pub fn register_room(&self, room: rooms::NewRoom) -> String {
        self.inner
            .add_vc_room(room)
            .unwrap_or_else(|e| panic!("feishu emulator: {e}"))
    }

    /// Changes booking restrictions as `PATCH reserve_configs/:id` would
    /// (validation, defaults for unset fields, the update event).
    ///
    /// # Errors
    /// The Feishu code and message the API would answer.
    pub fn patch_reserve_config(&self, id: &str, body: Value) -> Result<(), String> {
        self.inner
            .patch_reserve_config(id, &body)
            .map_err(|e| e.to_string())
    }

    /// Moves the start of a recurring series by `delta` seconds; its
    /// exceptions keep their times under new original times (replies with
    /// the old ones get 105003).
    pub fn shift_series(&self, calendar_id: &str, master_event_id: &str, delta: i64) {
        expect(self.inner.shift_series(calendar_id, master_event_id, delta));
    }

    /// The user's departments (`open_department_id`s), as the contact API
    /// answers them.
    pub fn set_user_departments(&self, open_id: &str, departments: &[&str]) {
        self.inner.set_user_departments(
            open_id,
            departments.iter().map(|d| (*d).to_owned()).collect(),
        );
    }

    /// Every accepted `instance/reply`, in order.
    pub fn room_replies(&self) -> Vec<rooms::RoomReply> {
        self.inner.room_replies()
    }

    /// The resource calendar of a room, once it exists.
    pub fn room_calendar(&self, room_id: &str) -> Option<String> {
        lock(&self.inner.store)
            .rooms
            .get(room_id)
            .map(|r| r.calendar_id.clone())
    }

    /// Sets the booking status of a room on an event now (`needs_action`,
    /// `accept`, `decline`, `removed`), as a settled booking does.
    pub fn set_room_status(
        &self,
        calendar_id: &str,
        event_id: &str,
        room_id: &str,
        status: RsvpStatus,
    ) {
        expect(self.inner.mutate(|s, _| {
            Ok((
                (),
                s.set_room_status(calendar_id, event_id, room_id, status)?,
            ))
        }));
    }

    /// A user attendee replies (an `rsvp` change).
    pub fn reply_rsvp(&self, calendar_id: &str, event_id: &str, open_id: &str, status: RsvpStatus) {
        expect(
            self.inner
                .mutate(|s, _| Ok(((), s.reply(calendar_id, event_id, open_id, status)?))),
        );
    }

    /// Live items of a calendar (cancelled exceptions included), with
    /// attendees, for assertions.
    pub fn events(&self, calendar_id: &str) -> Vec<Event> {
        lock(&self.inner.store).events_of(calendar_id)
    }

    /// Loads many events fast: no pushes, no attendee propagation.
    pub fn bulk_load(&self, calendar_id: &str, events: Vec<Event>) {
        let now = util::now_secs();
        expect(lock(&self.inner.store).bulk_load(calendar_id, events, now));
    }

    /// Subscribes a user to a calendar's event changes without the API.
    pub fn subscribe_events(&self, open_id: &str, calendar_id: &str) {
        lock(&self.inner.store)
            .event_subs
            .insert((calendar_id.to_owned(), open_id.to_owned()));
    }

    // ----- tokens -------------------------------------------------------------------

    /// Every tenant and app token stops working (99991663).
    pub fn expire_tenant_tokens(&self) {
        lock(&self.inner.auth).expire_tenant_tokens();
    }

    /// Every user access token stops working (99991677).
    pub fn expire_user_tokens(&self) {
        lock(&self.inner.auth).expire_user_tokens();
    }

    /// Every sync token becomes 190008.
    pub fn expire_sync_tokens(&self) {
        self.inner.kit.cursors.expire(Lane::Sync);
    }

    /// Every page token becomes 190008.
    pub fn expire_page_tokens(&self) {
        self.inner.kit.cursors.expire(Lane::Page);
    }

    /// Every active refresh token is revoked (20064).
    pub fn revoke_refresh_tokens(&self) {
        lock(&self.inner.auth).revoke_refresh_tokens();
    }

    /// The user the authorize page logs in as (default: the first user).
    /// An unknown open_id makes the page answer `error=access_denied`.
    pub fn set_auto_login_user(&self, open_id: &str) {
        lock(&self.inner.store).auto_login = Some(open_id.to_owned());
    }

    /// Issues a user token pair directly, as if the OAuth dance happened.
    /// The refresh token is `Some` when `scope` contains `offline_access`.
    pub fn issue_user_token(&self, open_id: &str, scope: &str) -> (String, Option<String>) {
        self.inner.issue_user_token(open_id, scope)
    }

    // ----- pushes -------------------------------------------------------------------

    /// Sets or clears the webhook target.
    pub fn set_webhook(&self, target: Option<WebhookTarget>) {
        lock(&self.inner.cfg).webhook = target;
    }

    /// Sends the URL-verification challenge to the webhook and checks the echo.
    pub async fn verify_webhook(&self) -> Result<(), VerifyError> {
        webhook::verify_url(&self.inner).await
    }

    /// Pushes a `third_party_meeting_room_event_*` (v1 envelope); returns its uuid.
    #[allow(clippy::too_many_arguments)]
    pub fn emit_third_party_room_event(
        &self,
        kind: RoomEventKind,
        uid: &str,
        original_time: i64,
        start_ms: i64,
        end_ms: i64,
        room_ids: &[&str],
        organizer_open_id: &str,
    ) -> String {
        self.inner.room_event(
            kind,
            uid,
            original_time,
            start_ms,
            end_ms,
            room_ids,
            organizer_open_id,
        )
    }

    /// Pushes `vc.reserve_config.updated_v1` (v2); returns its event id.
    pub fn emit_reserve_config_updated(&self, event: Value) -> String {
        push::emit_v2(&self.inner, "vc.reserve_config.updated_v1", event)
    }

    /// Pushes any v2 event; returns its event id.
    pub fn emit_v2(&self, event_type: &str, event: Value) -> String {
        push::emit_v2(&self.inner, event_type, event)
    }

    /// Pushes any v1 event (`event.type` names it); returns its uuid.
    pub fn emit_v1(&self, event: Value) -> String {
        push::emit_v1(&self.inner, event)
    }

    /// Every push message so far with its attempts.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.outbox.deliveries()
    }

    /// Waits until at least `n` push messages exist and all of them are
    /// settled (delivered or given up), or `timeout` passes; returns them.
    pub async fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.deliveries();
            let settled = d.len() >= n && d.iter().all(|x| x.delivered_ok || x.gave_up);
            if settled || tokio::time::Instant::now() >= deadline {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ----- long connection ----------------------------------------------------------

    /// Closes every long connection abruptly (no close frame).
    pub fn drop_ws_connections(&self) {
        self.inner.ws.drop_all();
    }

    /// Number of live long connections.
    pub fn ws_connections(&self) -> usize {
        self.inner.ws.live()
    }

    /// Stops the server, its connections and background tasks.
    pub async fn shutdown(self) {
        self.inner.ws.drop_all();
        self.inner.kit.shutdown().await;
    }
}
