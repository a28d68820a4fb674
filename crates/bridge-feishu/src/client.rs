//! The Feishu calendar v4 HTTP client: identities, paging, sync tokens,
//! retries, throttling.
//!
//! Every call goes through [`FeishuClient::call`], on the shared HTTP layer
//! (`bridge-http`): proactive per-endpoint rate limiting, the token of the
//! chosen identity (a tenant token dropped and fetched again once on
//! 99991663 / 99991664 / 99991671, a user token refreshed once on 99991668 /
//! 99991677), then bounded retries: throttling answers wait
//! `x-ogw-ratelimit-reset` seconds (else `Retry-After`), 5xx / timeouts /
//! truncated answers back off exponentially with jitter. What an answer
//! means is decided here ([`FeishuCall`]); URLs are built by
//! [`FeishuClient::cal_path`], [`urlencode`] and [`api_url`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bridge_core::feishu::{Attendee, AttendeePage, Calendar, CalendarPage, Event, EventPage};
use bridge_http::{
    Answer, Auth, Backoff, CallStats, Exchange, HttpClient, Jitter, Limiter, RetryPolicy,
    ServerWait, ServiceStats, SlidingWindows, TransportError, Verdict,
};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::auth::{Secret, TenantToken, UserAuth};
use crate::error::{CURSOR_EXPIRED, FeishuError, TENANT_TOKEN_INVALID, USER_TOKEN_INVALID, log_id};
use crate::ratelimit::RateLimits;

/// Feishu (China) API host.
pub const FEISHU_BASE_URL: &str = "https://open.feishu.cn";
/// Lark (international) API host.
pub const LARK_BASE_URL: &str = "https://open.larksuite.com";
/// Largest page of list-events.
pub const EVENTS_PAGE_SIZE: u32 = 1000;
/// Largest page of list-attendees.
pub const ATTENDEES_PAGE_SIZE: u32 = 100;
/// Feishu's limit of attendees per event (calendar-event-attendee/introduction);
/// a listing stops there even if a page still claims more.
pub const MAX_ATTENDEES: usize = 3000;
/// Largest page of instances.
pub const INSTANCES_PAGE_SIZE: u32 = 500;

/// How to reach Feishu and how hard to try.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub app_id: String,
    pub app_secret: Secret,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Retries of one call after transient failures.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait honoured from `x-ogw-ratelimit-reset`.
    pub max_throttle_wait: Duration,
    /// The waits of one call add up to at most this.
    pub max_total_wait: Duration,
    pub rate_limits: RateLimits,
    /// Count calls into this registry (shared with other clients) instead
    /// of one of the client's own.
    pub call_stats: Option<Arc<CallStats>>,
}

impl ClientConfig {
    pub fn new(base_url: &str, app_id: &str, app_secret: Secret) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            app_id: app_id.to_owned(),
            app_secret,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_retries: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_throttle_wait: Duration::from_secs(60),
            max_total_wait: Duration::from_secs(300),
            rate_limits: RateLimits::default(),
            call_stats: None,
        }
    }
}

/// Whose token a call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// The app inside the tenant (tenant_access_token).
    Tenant,
    /// The authorized user (user_access_token); required for subscriptions.
    User,
}

/// The events of a calendar as listed: complete (every page read).
#[derive(Debug, Clone, Default)]
pub struct EventListing {
    pub items: Vec<Event>,
    /// The token for the next delta (sent with the last page).
    pub sync_token: Option<String>,
    pub pages: u32,
}

/// The attendees of one event as listed.
#[derive(Debug, Clone, Default)]
pub struct AttendeeListing {
    pub items: Vec<Attendee>,
    /// Calls made (one per page).
    pub pages: u32,
    /// More than [`MAX_ATTENDEES`] were offered; the rest was not read.
    pub truncated: bool,
}

/// The calendar list as listed.
#[derive(Debug, Clone, Default)]
pub struct CalendarListing {
    pub calendars: Vec<Calendar>,
    pub sync_token: Option<String>,
}

/// One list-events request.
#[derive(Debug, Clone, Default)]
pub struct ListEventsQuery {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub sync_token: Option<String>,
    pub anchor_time: Option<i64>,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
}

/// The Feishu client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FeishuClient {
    http: HttpClient,
    cfg: ClientConfig,
    tenant: TenantToken,
    user: Option<Arc<UserAuth>>,
}

/// Feishu's gateway announces the seconds until its window resets here
/// (feishu-api.md §10.1); it is read before `Retry-After`.
const RESET_HEADERS: &[&str] = &["x-ogw-ratelimit-reset"];

/// How long a throttled answer asks us to wait.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    bridge_http::retry::server_wait(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        RESET_HEADERS,
        SystemTime::now(),
    )
}

/// `{base_url}{path}`: the one place a request URL is put together.
fn api_url(base_url: &str, path: &str) -> String {
    format!("{base_url}{path}")
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    msg: Option<String>,
}

#[derive(Deserialize)]
struct Body<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct EventData {
    event: Event,
}

#[derive(Deserialize)]
struct PrimaryData {
    #[serde(default)]
    calendars: Vec<PrimaryItem>,
}

#[derive(Deserialize)]
struct PrimaryItem {
    calendar: Calendar,
}

#[derive(Deserialize)]
struct InstancesData {
    #[serde(default)]
    items: Vec<Event>,
    #[serde(default)]
    has_more: bool,
    page_token: Option<String>,
}

impl FeishuClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, FeishuError> {
        url::Url::parse(&cfg.base_url)
            .map_err(|e| FeishuError::Config(format!("Feishu base_url {:?}: {e}", cfg.base_url)))?;
        let policy = RetryPolicy {
            max_retries: cfg.max_retries,
            backoff: Backoff {
                base: cfg.backoff_base,
                max: cfg.backoff_max,
                jitter: Jitter::Equal,
            },
            // The reset time is exact; a little jitter so that workers do
            // not return together.
            server_wait: ServerWait::Instead {
                cap: cfg.max_throttle_wait,
                jitter: Duration::from_millis(50),
            },
            max_total_wait: cfg.max_total_wait,
        };
        // The HTTP layer never follows redirects: a redirect on a token
        // endpoint would leak the app secret to another host.
        let mut http = HttpClient::builder("feishu")
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .retry(policy)
            .limiter(Limiter::Windows(SlidingWindows::new(cfg.rate_limits)));
        if let Some(stats) = &cfg.call_stats {
            http = http.stats(stats.clone());
        }
        let http = http
            .build()
            .map_err(|e| FeishuError::Config(e.to_string()))?;
        Ok(Self {
            http,
            cfg,
            tenant: TenantToken::default(),
            user: None,
        })
    }

    /// Adds the user identity (needed for subscriptions).
    pub fn with_user(mut self, user: Arc<UserAuth>) -> Self {
        self.user = Some(user);
        self
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn http(&self) -> &reqwest::Client {
        self.http.http()
    }

    /// Time left on the cached tenant_access_token, if one is cached.
    pub async fn tenant_token_expires_in(&self) -> Option<Duration> {
        self.tenant.expires_in().await
    }

    /// Calls made so far, by endpoint and status (token calls not
    /// included).
    pub fn stats(&self) -> &ServiceStats {
        self.http.stats()
    }

    async fn token(&self, identity: Identity, force: bool) -> Result<Secret, FeishuError> {
        match identity {
            Identity::Tenant => {
                if force {
                    self.tenant.invalidate().await;
                }
                self.tenant
                    .get(
                        self.http.http(),
                        &self.cfg.base_url,
                        &self.cfg.app_id,
                        &self.cfg.app_secret,
                    )
                    .await
            }
            Identity::User => {
                let user = self.user.as_ref().ok_or(FeishuError::NotAuthorized)?;
                if force {
                    user.force_refresh(self.http.http()).await
                } else {
                    user.access_token(self.http.http()).await
                }
            }
        }
    }

    /// One API call with retries. `endpoint` is the template used for rate
    /// limiting and accounting (`GET /open-apis/calendar/v4/calendars/:id/events`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        identity: Identity,
        method: Method,
        endpoint: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, FeishuError> {
        let auth = IdentityAuth {
            client: self,
            identity,
        };
        let mut call = FeishuCall::<T> {
            url: api_url(&self.cfg.base_url, path),
            method,
            endpoint,
            query,
            identity,
            body: None,
            out: PhantomData,
        };
        self.http.execute(endpoint, 1, &auth, &mut call).await
    }

    /// Like [`Self::call`], with a JSON request body (POST / PATCH).
    pub async fn call_with_body<T: DeserializeOwned>(
        &self,
        identity: Identity,
        method: Method,
        endpoint: &str,
        path: &str,
        query: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<T, FeishuError> {
        let auth = IdentityAuth {
            client: self,
            identity,
        };
        let mut call = FeishuCall::<T> {
            url: api_url(&self.cfg.base_url, path),
            method,
            endpoint,
            query,
            identity,
            body: Some(body.to_string()),
            out: PhantomData,
        };
        self.http.execute(endpoint, 1, &auth, &mut call).await
    }

    fn cal_path(calendar_id: &str) -> String {
        format!(
            "/open-apis/calendar/v4/calendars/{}",
            urlencode(calendar_id)
        )
    }

    // ---- calendars -------------------------------------------------------

    /// The calendar list, every page; with `sync_token`, only what changed.
    pub async fn list_calendars(
        &self,
        identity: Identity,
        sync_token: Option<&str>,
    ) -> Result<CalendarListing, FeishuError> {
        let endpoint = "GET /open-apis/calendar/v4/calendars";
        let mut out = CalendarListing::default();
        let mut page_token: Option<String> = None;
        loop {
            let mut q = vec![("page_size", "1000".to_owned())];
            match (&page_token, sync_token) {
                (Some(p), _) => q.push(("page_token", p.clone())),
                (None, Some(s)) => q.push(("sync_token", s.to_owned())),
                (None, None) => {}
            }
            let page: CalendarPage = self
                .call(
                    identity,
                    Method::GET,
                    endpoint,
                    "/open-apis/calendar/v4/calendars",
                    &q,
                )
                .await?;
            out.calendars.extend(page.calendar_list);
            if !page.has_more {
                out.sync_token = page.sync_token;
                return Ok(out);
            }
            page_token = Some(next_page_token(endpoint, page.page_token, &page_token)?);
        }
    }

    /// The primary calendar(s) of the identity.
    pub async fn primary_calendars(
        &self,
        identity: Identity,
    ) -> Result<Vec<Calendar>, FeishuError> {
        let data: PrimaryData = self
            .call(
                identity,
                Method::POST,
                "POST /open-apis/calendar/v4/calendars/primary",
                "/open-apis/calendar/v4/calendars/primary",
                &[],
            )
            .await?;
        Ok(data.calendars.into_iter().map(|c| c.calendar).collect())
    }

    pub async fn get_calendar(
        &self,
        identity: Identity,
        calendar_id: &str,
    ) -> Result<Calendar, FeishuError> {
        segment_id("calendar id", calendar_id)?;
        self.call(
            identity,
            Method::GET,
            "GET /open-apis/calendar/v4/calendars/:calendar_id",
            &Self::cal_path(calendar_id),
            &[],
        )
        .await
    }

    // ---- events ----------------------------------------------------------

    /// One page of list-events.
    pub async fn list_events_page(
        &self,
        identity: Identity,
        calendar_id: &str,
        query: &ListEventsQuery,
    ) -> Result<EventPage, FeishuError> {
        segment_id("calendar id", calendar_id)?;
        let mut q = Vec::new();
        if let Some(n) = query.page_size {
            q.push(("page_size", n.to_string()));
        }
        for (k, v) in [
            ("page_token", &query.page_token),
            ("sync_token", &query.sync_token),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        for (k, v) in [
            ("anchor_time", query.anchor_time),
            ("start_time", query.start_time),
            ("end_time", query.end_time),
        ] {
            if let Some(v) = v {
                q.push((k, v.to_string()));
            }
        }
        self.call(
            identity,
            Method::GET,
            "GET /open-apis/calendar/v4/calendars/:calendar_id/events",
            &format!("{}/events", Self::cal_path(calendar_id)),
            &q,
        )
        .await
    }

    /// Every event of a calendar (no `sync_token`), or every change since
    /// `sync_token`, reading all pages of 1000. The result is complete or an
    /// error: a page claiming `has_more` without a `page_token` is an error,
    /// never a short listing. An expired token gives
    /// [`FeishuError::CursorExpired`].
    pub async fn list_events(
        &self,
        identity: Identity,
        calendar_id: &str,
        sync_token: Option<&str>,
    ) -> Result<EventListing, FeishuError> {
        let mut items = Vec::new();
        let mut out = self
            .list_events_pages(identity, calendar_id, sync_token, &mut |page| {
                items.extend(page)
            })
            .await?;
        out.items = items;
        Ok(out)
    }

    /// Like [`Self::list_events`], handing each page to `on_page` as it
    /// arrives instead of keeping them all (the returned listing has no
    /// items). A failure after some pages means the listing is incomplete:
    /// callers must not act on the pages they saw.
    pub async fn list_events_pages(
        &self,
        identity: Identity,
        calendar_id: &str,
        sync_token: Option<&str>,
        on_page: &mut (dyn FnMut(Vec<Event>) + Send),
    ) -> Result<EventListing, FeishuError> {
        let endpoint = "GET /open-apis/calendar/v4/calendars/:calendar_id/events";
        let mut out = EventListing::default();
        let mut page_token: Option<String> = None;
        loop {
            let query = ListEventsQuery {
                page_size: Some(EVENTS_PAGE_SIZE),
                page_token: page_token.clone(),
                sync_token: if page_token.is_none() {
                    sync_token.map(str::to_owned)
                } else {
                    None
                },
                ..ListEventsQuery::default()
            };
            let page = self.list_events_page(identity, calendar_id, &query).await?;
            out.pages += 1;
            on_page(page.items);
            if !page.has_more {
                out.sync_token = page.sync_token;
                return Ok(out);
            }
            page_token = Some(next_page_token(endpoint, page.page_token, &page_token)?);
        }
    }

    /// One event; with `need_attendee` Feishu includes up to 100 attendees.
    pub async fn get_event(
        &self,
        identity: Identity,
        calendar_id: &str,
        event_id: &str,
        need_attendee: bool,
    ) -> Result<Event, FeishuError> {
        segment_id("calendar id", calendar_id)?;
        segment_id("event id", event_id)?;
        let mut q = Vec::new();
        if need_attendee {
            q.push(("need_attendee", "true".to_owned()));
            q.push(("max_attendee_num", "100".to_owned()));
        }
        let data: EventData = self
            .call(
                identity,
                Method::GET,
                "GET /open-apis/calendar/v4/calendars/:calendar_id/events/:event_id",
                &format!(
                    "{}/events/{}",
                    Self::cal_path(calendar_id),
                    urlencode(event_id)
                ),
                &q,
            )
            .await?;
        Ok(data.event)
    }

    /// Every attendee of an event (pages of 100), at most Feishu's
    /// [`MAX_ATTENDEES`] per event. A page claiming `has_more` without a
    /// `page_token` is an error, never a short list.
    pub async fn list_attendees(
        &self,
        identity: Identity,
        calendar_id: &str,
        event_id: &str,
    ) -> Result<AttendeeListing, FeishuError> {
        let endpoint =
            "GET /open-apis/calendar/v4/calendars/:calendar_id/events/:event_id/attendees";
        segment_id("calendar id", calendar_id)?;
        segment_id("event id", event_id)?;
        let path = format!(
            "{}/events/{}/attendees",
            Self::cal_path(calendar_id),
            urlencode(event_id)
        );
        let mut out = AttendeeListing::default();
        let mut page_token: Option<String> = None;
        loop {
            let mut q = vec![("page_size", ATTENDEES_PAGE_SIZE.to_string())];
            if let Some(p) = &page_token {
                q.push(("page_token", p.clone()));
            }
            let page: AttendeePage = self
                .call(identity, Method::GET, endpoint, &path, &q)
                .await?;
            out.pages += 1;
            out.items.extend(page.items);
            if out.items.len() >= MAX_ATTENDEES {
                out.truncated = page.has_more || out.items.len() > MAX_ATTENDEES;
                out.items.truncate(MAX_ATTENDEES);
                return Ok(out);
            }
            if !page.has_more {
                return Ok(out);
            }
            page_token = Some(next_page_token(endpoint, page.page_token, &page_token)?);
        }
    }

    /// The occurrences of a recurring event between `start` and `end` (Unix
    /// seconds, at most two years apart).
    pub async fn instances(
        &self,
        identity: Identity,
        calendar_id: &str,
        event_id: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Event>, FeishuError> {
        let endpoint =
            "GET /open-apis/calendar/v4/calendars/:calendar_id/events/:event_id/instances";
        segment_id("calendar id", calendar_id)?;
        segment_id("event id", event_id)?;
        let path = format!(
            "{}/events/{}/instances",
            Self::cal_path(calendar_id),
            urlencode(event_id)
        );
        let mut out = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut q = vec![
                ("start_time", start.to_string()),
                ("end_time", end.to_string()),
                ("page_size", INSTANCES_PAGE_SIZE.to_string()),
            ];
            if let Some(p) = &page_token {
                q.push(("page_token", p.clone()));
            }
            let page: InstancesData = self
                .call(identity, Method::GET, endpoint, &path, &q)
                .await?;
            out.extend(page.items);
            if !page.has_more {
                return Ok(out);
            }
            page_token = Some(next_page_token(endpoint, page.page_token, &page_token)?);
        }
    }

    // ---- subscriptions (user identity only) --------------------------------

    async fn post_user(&self, endpoint: &str, path: &str) -> Result<(), FeishuError> {
        let _: serde_json::Value = self
            .call(Identity::User, Method::POST, endpoint, path, &[])
            .await?;
        Ok(())
    }

    /// Receive `calendar.calendar.event.changed_v4` for this calendar.
    pub async fn subscribe_events(&self, calendar_id: &str) -> Result<(), FeishuError> {
        segment_id("calendar id", calendar_id)?;
        self.post_user(
            "POST /open-apis/calendar/v4/calendars/:calendar_id/events/subscription",
            &format!("{}/events/subscription", Self::cal_path(calendar_id)),
        )
        .await
    }

    pub async fn unsubscribe_events(&self, calendar_id: &str) -> Result<(), FeishuError> {
        segment_id("calendar id", calendar_id)?;
        self.post_user(
            "POST /open-apis/calendar/v4/calendars/:calendar_id/events/unsubscription",
            &format!("{}/events/unsubscription", Self::cal_path(calendar_id)),
        )
        .await
    }

    /// Receive `calendar.calendar.changed_v4` for the user's calendar list.
    pub async fn subscribe_calendar_list(&self) -> Result<(), FeishuError> {
        self.post_user(
            "POST /open-apis/calendar/v4/calendars/subscription",
            "/open-apis/calendar/v4/calendars/subscription",
        )
        .await
    }

    pub async fn unsubscribe_calendar_list(&self) -> Result<(), FeishuError> {
        self.post_user(
            "POST /open-apis/calendar/v4/calendars/unsubscription",
            "/open-apis/calendar/v4/calendars/unsubscription",
        )
        .await
    }
}

/// The token of one identity, renewed on the token-invalid codes.
struct IdentityAuth<'a> {
    client: &'a FeishuClient,
    identity: Identity,
}

impl Auth for IdentityAuth<'_> {
    type Error = FeishuError;

    async fn token(&self) -> Result<Option<Secret>, FeishuError> {
        self.client.token(self.identity, false).await.map(Some)
    }

    async fn renew(&self, _rejected: Option<&Secret>) -> Result<(), FeishuError> {
        self.client.token(self.identity, true).await.map(|_| ())
    }
}

/// One Feishu API call: the request, and what an answer means.
struct FeishuCall<'a, T> {
    url: String,
    method: Method,
    endpoint: &'a str,
    query: &'a [(&'a str, String)],
    identity: Identity,
    /// JSON body; `None` sends `{}` on POST and nothing otherwise.
    body: Option<String>,
    out: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Exchange for FeishuCall<'_, T> {
    type Output = T;
    type Error = FeishuError;

    fn request(
        &mut self,
        http: &reqwest::Client,
        _token: Option<&Secret>,
    ) -> reqwest::RequestBuilder {
        let mut req = http
            .request(self.method.clone(), &self.url)
            .query(self.query);
        if let Some(body) = &self.body {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body(body.clone());
        } else if self.method == Method::POST {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body("{}");
        }
        req
    }

    fn classify(&mut self, answer: Result<Answer, TransportError>) -> Verdict<T, FeishuError> {
        let err = match answer {
            Ok(a) => match parse_answer(self.endpoint, &a) {
                Ok(v) => return Verdict::Done(v),
                Err(e) => e,
            },
            Err(e) => FeishuError::Transport {
                endpoint: self.endpoint.to_owned(),
                detail: e.detail(),
                timeout: e.is_timeout(),
            },
        };
        let code = err.code().unwrap_or(0);
        let token_invalid = match self.identity {
            Identity::Tenant => TENANT_TOKEN_INVALID.contains(&code),
            Identity::User => USER_TOKEN_INVALID.contains(&code),
        };
        if token_invalid {
            return Verdict::Renew(err);
        }
        if err.is_transient() {
            let server_wait = if err.is_rate_limited() {
                err.retry_after()
            } else {
                None
            };
            return Verdict::Retry {
                error: err,
                server_wait,
            };
        }
        Verdict::Fail(err)
    }
}

/// An answer's `data`, or the error its status, `code` or body stands for.
fn parse_answer<T: DeserializeOwned>(endpoint: &str, answer: &Answer) -> Result<T, FeishuError> {
    let status = answer.status;
    let headers = &answer.headers;
    let log_id = log_id(headers);
    let bytes = &answer.body;
    let head: Head = match serde_json::from_slice(bytes) {
        Ok(h) => h,
        Err(e) if status >= 400 => {
            return Err(FeishuError::Http {
                endpoint: endpoint.to_owned(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
                log_id,
                retry_after: retry_after(headers),
            })
            .inspect_err(|_| tracing::debug!(error = %e, "non-JSON error body"));
        }
        Err(e) => {
            return Err(FeishuError::Decode {
                endpoint: endpoint.to_owned(),
                status,
                detail: e.to_string(),
                log_id,
            });
        }
    };
    match head.code {
        Some(0) => {}
        Some(CURSOR_EXPIRED) => {
            return Err(FeishuError::CursorExpired {
                endpoint: endpoint.to_owned(),
                log_id,
            });
        }
        Some(code) => {
            return Err(FeishuError::Api {
                endpoint: endpoint.to_owned(),
                code,
                msg: head.msg.unwrap_or_default(),
                status,
                log_id,
                retry_after: retry_after(headers),
            });
        }
        None => {
            return Err(FeishuError::Decode {
                endpoint: endpoint.to_owned(),
                status,
                detail: "the answer has no \"code\"".to_owned(),
                log_id,
            });
        }
    }
    let body: Body<T> = serde_json::from_slice(bytes).map_err(|e| FeishuError::Decode {
        endpoint: endpoint.to_owned(),
        status,
        detail: e.to_string(),
        log_id: log_id.clone(),
    })?;
    match body.data {
        Some(d) => Ok(d),
        // Endpoints answering `data: {}` or no data deserialize from null.
        None => serde_json::from_value(serde_json::Value::Object(Default::default()))
            .or_else(|_| serde_json::from_value(serde_json::Value::Null))
            .map_err(|e| FeishuError::Decode {
                endpoint: endpoint.to_owned(),
                status,
                detail: format!("the answer has no \"data\": {e}"),
                log_id,
            }),
    }
}

/// The continuation token of a page that says `has_more`; a missing or
/// repeated token would make the listing incomplete or endless.
fn next_page_token(
    endpoint: &str,
    token: Option<String>,
    previous: &Option<String>,
) -> Result<String, FeishuError> {
    match token.filter(|t| !t.is_empty()) {
        Some(t) if previous.as_deref() == Some(t.as_str()) => Err(FeishuError::Decode {
            endpoint: endpoint.to_owned(),
            status: 200,
            detail: "the same page_token came back twice; listing stopped".to_owned(),
            log_id: None,
        }),
        Some(t) => Ok(t),
        None => Err(FeishuError::Decode {
            endpoint: endpoint.to_owned(),
            status: 200,
            detail: "has_more is true but there is no page_token; listing is incomplete".to_owned(),
            log_id: None,
        }),
    }
}

/// What a path segment keeps as it is: RFC 3986 unreserved characters.
/// Everything else (`/`, `?`, `#`, `%`, `+`, `@`, spaces, non-ASCII) is
/// percent-encoded, so an id is always exactly one segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment of a Feishu API URL, percent-encoded.
pub(crate) fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// Refuses an id that cannot be one path segment. Encoding is not enough
/// for dot segments: URL parsing (WHATWG, which reqwest applies) resolves
/// `.` and `..` and also their encoded forms `%2e` / `%2E%2e`, so a calendar
/// id of `..` would reach another endpoint whatever its spelling. Such ids
/// (and empty ones) are refused before any request is made.
fn segment_id<'a>(what: &str, id: &'a str) -> Result<&'a str, FeishuError> {
    let decoded_dots = id.to_ascii_lowercase().replace("%2e", ".");
    if id.is_empty() || decoded_dots == "." || decoded_dots == ".." {
        return Err(FeishuError::Config(format!(
            "{what} {id:?} cannot be used in a Feishu API URL (empty or a dot segment)"
        )));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            FeishuClient::cal_path("feishu.cn_x@group.calendar.feishu.cn"),
            "/open-apis/calendar/v4/calendars/feishu.cn_x%40group.calendar.feishu.cn"
        );
    }

    #[test]
    fn incomplete_listings_are_errors() {
        assert!(next_page_token("e", None, &None).is_err());
        assert!(next_page_token("e", Some(String::new()), &None).is_err());
        assert!(next_page_token("e", Some("a".into()), &Some("a".into())).is_err());
        assert_eq!(
            next_page_token("e", Some("b".into()), &Some("a".into())).unwrap(),
            "b"
        );
    }

    #[test]
    fn throttle_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-ogw-ratelimit-reset", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }
}
