//! A local Exchange Web Services server (SOAP 1.1 over axum, in-process,
//! `127.0.0.1:0`), written from the shared notes `sinks-api.md` part B (B.13
//! is its fidelity checklist) and Microsoft's schema, not from any client.
//!
//! * **Endpoint** `POST /EWS/Exchange.asmx` (`text/xml`): a SOAP 1.1
//!   envelope whose `t:RequestServerVersion` names a known version; the
//!   answer's header carries `t:ServerVersionInfo` (15.1.2507, Exchange
//!   2016). Every element is checked against the XSD sequences of the
//!   operations a calendar client uses (`xml::check_order`): an unknown or
//!   out-of-order element is a SOAP fault `ErrorSchemaValidation` with the
//!   line, HTTP 500, as Exchange answers.
//! * **Auth**: HTTP Basic or NTLM (`ntlm`: NTLMv2 per connection, in
//!   [`EwsConfig::ntlm_domain`]) with a configured account (acting as its own
//!   mailbox, or impersonating another when the account holds the
//!   ApplicationImpersonation role), or an OAuth bearer token from
//!   `POST /{tenant}/oauth2/v2.0/token` (client-credentials grant, scope
//!   `<resource>/.default`). App tokens must impersonate
//!   (`t:ExchangeImpersonation/t:ConnectingSID/t:PrimarySmtpAddress`): an app
//!   without `full_access_as_app` gets `ErrorImpersonateUserDenied`, an
//!   unknown mailbox `ErrorNonExistentMailbox` (SOAP faults, HTTP 500). A
//!   wrong password or token is HTTP 401.
//! * **Operations**: CreateItem, UpdateItem (SetItemField / DeleteItemField,
//!   `ConflictResolution` with the ChangeKey: a stale one under
//!   NeverOverwrite or AutoResolve is `ErrorIrresolvableConflict`), DeleteItem,
//!   GetItem, FindItem (`CalendarView`: singles, occurrences and exceptions,
//!   masters left out, deleted occurrences honoured; `IndexedPageItemView`
//!   with a `Restriction` on extended properties or the subject), SyncFolderItems
//!   (opaque state, `MaxChangesReturned` 1..=512) and GetFolder on the
//!   calendar. Ids are opaque; every write gives a new ChangeKey (an
//!   occurrence's change also changes its master's). Calendar writes need
//!   their `SendMeeting…` attribute. Each item of a batch has its own
//!   ResponseMessage, in order.
//! * **Recurrence**: the six patterns × three ranges expanded with the
//!   `rrule` crate in the IANA zone of the item's `StartTimeZone` (a Windows
//!   id, mapped through CLDR `windowsZones`); a DayOfMonth beyond the month
//!   is its last day, as EWS documents. `OccurrenceItemId` addresses an
//!   occurrence by its 1-based `InstanceIndex`; updating one makes an
//!   exception, deleting one a deleted occurrence. Setting a master's
//!   Recurrence, Start or End drops its exceptions and deleted occurrences.
//! * **Extended properties** are stored per (property set, name, type) and
//!   returned only when `AdditionalProperties` names them.
//! * **Faults** (the kit's dice and `fail_next`): `ErrorServerBusy` with
//!   `BackOffMilliseconds` (SOAP fault, HTTP 500), 503, 503 with
//!   `Connection: close`, slow answers; and a concurrency cap per server
//!   ([`EwsConfig::max_concurrency`], 27 as observed on Exchange Online)
//!   above which requests get `ErrorServerBusy`.
//!
//! # Control API (`/_emulator/…`, JSON, no auth, not recorded)
//!
//! | Method + path | Body | Answer |
//! |---|---|---|
//! | `GET /_emulator/items?mailbox=` | — | `[StoredItem]` |
//! | `GET /_emulator/view?mailbox=&start=&end=` | — | `[Instance]` (CalendarView) |
//! | `PATCH /_emulator/items/{id}` | `{subject?, location?, start?, end?}` | `{}`: a user's edit (item or occurrence id) |
//! | `DELETE /_emulator/items/{id}` | — | `{}`: a user's delete (item or occurrence id) |
//! | `GET`/`DELETE /_emulator/calls` | — | `[CallRecord]` (with request bodies) / `{}` |
//! | `PUT /_emulator/faults` | `Faults` | `{}` |
//! | `POST /_emulator/fail_next` | `{path_contains, n?, fault: server_busy\|unavailable\|close\|slow, back_off_ms?, delay_ms?}` | `{}` |
//! | `POST /_emulator/reset` | — | `{}` |

mod availability;
mod model;
mod ntlm;
mod ops;
mod xml;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::kit::control::{CtlError, CtlResult, ModelError, bad, ok, ok_json};
use crate::kit::ids::{now_secs, rand_urlsafe};
use crate::kit::{
    self, Call, Dice, Effect, Exchange, Fault, Kit, RandomFaults, Service, bearer, duration_ms,
    lock,
};
pub use model::{Exception, Fields, Folder, Instance, Pattern, Range, Recurrence, StoredItem};
use ops::Acting;
use xml::{El, SOAP, T, esc};

/// A Basic-auth account.
#[derive(Debug, Clone)]
pub struct EwsUser {
    pub username: String,
    pub password: String,
    /// Its own mailbox (SMTP address).
    pub mailbox: String,
    /// Holds the ApplicationImpersonation role.
    pub can_impersonate: bool,
}

/// An app registration for the client-credentials grant.
#[derive(Debug, Clone)]
pub struct EwsApp {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Granted the `full_access_as_app` permission (may impersonate).
    pub full_access_as_app: bool,
}

/// Emulator configuration.
#[derive(Debug, Clone)]
pub struct EwsConfig {
    pub users: Vec<EwsUser>,
    pub apps: Vec<EwsApp>,
    /// Mailboxes without a Basic account of their own.
    pub mailboxes: Vec<String>,
    pub token_ttl: Duration,
    /// Requests served at once before `ErrorServerBusy` (27).
    pub max_concurrency: usize,
    /// Largest IndexedPageItemView page (1000).
    pub max_page: usize,
    /// The NetBIOS domain of NTLM logons (`EXAMPLE\\svc-bridge`); a user may
    /// also log on with its mailbox as UPN and no domain.
    pub ntlm_domain: String,
    /// The DNS domain the CHALLENGE names (also accepted as the domain).
    pub ntlm_dns_domain: String,
}

impl Default for EwsConfig {
    fn default() -> Self {
        Self {
            users: vec![EwsUser {
                username: "svc-bridge".into(),
                password: "correct horse".into(),
                mailbox: "svc-bridge@example.com".into(),
                can_impersonate: true,
            }],
            apps: vec![EwsApp {
                tenant: "contoso".into(),
                client_id: "app-client".into(),
                client_secret: "app-secret".into(),
                full_access_as_app: true,
            }],
            mailboxes: vec!["alice@example.com".into()],
            token_ttl: Duration::from_secs(3600),
            max_concurrency: 27,
            max_page: 1000,
            ntlm_domain: "EXAMPLE".into(),
            ntlm_dns_domain: "example.com".into(),
        }
    }
}

/// Random faults on the EWS endpoint; probabilities in `0.0..=1.0`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// `ErrorServerBusy` with `BackOffMilliseconds = back_off_ms`.
    pub busy_rate: f64,
    pub back_off_ms: u64,
    /// HTTP 503.
    pub unavailable_rate: f64,
    /// Answer normally after `slow_delay`.
    pub slow_rate: f64,
    #[serde(with = "duration_ms")]
    pub slow_delay: Duration,
    pub seed: Option<u64>,
}

/// A deterministic fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// SOAP fault `ErrorServerBusy` (HTTP 500) with `BackOffMilliseconds`.
    ServerBusy { back_off_ms: u64 },
    /// HTTP 503.
    Unavailable,
    /// HTTP 503 with `Connection: close`.
    Close,
    /// Answer normally after this delay.
    Slow(Duration),
}

impl Fault for FaultKind {
    fn effect(&self) -> Effect {
        match self {
            Self::Slow(d) => Effect::Delay(*d),
            _ => Effect::Answer,
        }
    }
}

impl RandomFaults for Faults {
    type Fault = FaultKind;
    fn seed(&self) -> Option<u64> {
        self.seed
    }
    fn roll(&self, dice: &mut Dice) -> Option<FaultKind> {
        dice.first([
            (
                self.busy_rate,
                FaultKind::ServerBusy {
                    back_off_ms: self.back_off_ms,
                },
            ),
            (self.unavailable_rate, FaultKind::Unavailable),
            (self.slow_rate, FaultKind::Slow(self.slow_delay)),
        ])
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct FaultSpec {
    fault: String,
    #[serde(default)]
    back_off_ms: Option<u64>,
    #[serde(default)]
    delay_ms: Option<u64>,
}

impl TryFrom<FaultSpec> for FaultKind {
    type Error = String;
    fn try_from(s: FaultSpec) -> Result<Self, String> {
        Ok(match s.fault.as_str() {
            "server_busy" => Self::ServerBusy {
                back_off_ms: s.back_off_ms.unwrap_or(0),
            },
            "unavailable" => Self::Unavailable,
            "close" => Self::Close,
            "slow" => Self::Slow(Duration::from_millis(s.delay_ms.unwrap_or(1000))),
            other => return Err(format!("unknown fault {other:?}")),
        })
    }
}

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The EWS operation (`CreateItem`, …) of an answered SOAP request.
    pub operation: Option<String>,
    /// Per-item response codes, in order (or the fault's code).
    pub codes: Vec<String>,
    /// Items a write operation carried.
    pub writes: usize,
    /// The mailbox the request acted on.
    pub mailbox: Option<String>,
    /// `X-AnchorMailbox`.
    pub anchor_mailbox: Option<String>,
    /// The request body (SOAP requests that reached the handler).
    pub body: Option<String>,
    pub at_ms: i64,
}

impl Call for CallRecord {
    fn path(&self) -> &str {
        &self.path
    }
}

/// What the handler tells the call log (a response extension).
#[derive(Debug, Clone, Default)]
struct Noted {
    operation: Option<String>,
    codes: Vec<String>,
    writes: usize,
    mailbox: Option<String>,
    body: Option<String>,
}

#[derive(Debug)]
struct AppToken {
    client_id: String,
    expires: i64,
}

pub(crate) struct Inner {
    kit: Kit<Inner>,
    cfg: Mutex<EwsConfig>,
    store: Mutex<model::Store>,
    tokens: Mutex<HashMap<String, AppToken>>,
    in_flight: AtomicUsize,
    /// NTLM's per-connection state.
    ntlm: ntlm::NtlmServer,
    /// The next CHALLENGEs that close their connection (a fault).
    close_after_challenge: AtomicUsize,
}

pub(crate) struct Seen {
    anchor: Option<String>,
}

impl Service for Inner {
    const NAME: &'static str = "ews";
    type Faults = Faults;
    type Fault = FaultKind;
    type FaultSpec = FaultSpec;
    type Call = CallRecord;
    type Seen = Seen;

    fn kit(&self) -> &Kit<Self> {
        &self.kit
    }

    fn see(&self, req: &Request) -> Seen {
        Seen {
            anchor: req
                .headers()
                .get("x-anchormailbox")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    fn random_faults_apply(&self, path: &str) -> bool {
        path.starts_with("/EWS/")
    }

    fn fault_answer(&self, fault: &FaultKind, _seen: &Seen) -> Response {
        match fault {
            FaultKind::ServerBusy { back_off_ms } => server_busy(*back_off_ms),
            FaultKind::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
            }
            FaultKind::Close => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONNECTION, "close")],
                "Service Unavailable",
            )
                .into_response(),
            FaultKind::Slow(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }

    fn record(&self, seen: Seen, x: Exchange, resp: &mut Response) -> CallRecord {
        let n = resp
            .extensions()
            .get::<Noted>()
            .cloned()
            .unwrap_or_default();
        CallRecord {
            method: x.method,
            path: x.path,
            status: x.status,
            operation: n.operation,
            codes: n.codes,
            writes: n.writes,
            mailbox: n.mailbox,
            anchor_mailbox: seen.anchor,
            body: n.body,
            at_ms: x.at_ms,
        }
    }
}

const VERSIONS: &[&str] = &[
    "Exchange2007",
    "Exchange2007_SP1",
    "Exchange2010",
    "Exchange2010_SP1",
    "Exchange2010_SP2",
    "Exchange2013",
    "Exchange2013_SP1",
    "Exchange2015",
    "Exchange2016",
    "V2015_10_05",
    "V2016_01_06",
    "V2016_04_13",
    "V2016_07_13",
    "V2016_10_10",
    "V2017_01_07",
    "V2017_04_14",
    "V2017_07_11",
];

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><s:Envelope xmlns:s=\"{SOAP}\"><s:Header><h:ServerVersionInfo MajorVersion=\"15\" MinorVersion=\"1\" MajorBuildNumber=\"2507\" MinorBuildNumber=\"6\" Version=\"V2017_07_11\" xmlns:h=\"{T}\" xmlns=\"{T}\"/></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
}

fn xml_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A SOAP fault (HTTP 500) with an EWS response code and optional
/// `t:MessageXml` values.
fn soap_fault(code: &str, message: &str, values: &[(&str, String)]) -> Response {
    let xml_values: String = values
        .iter()
        .map(|(k, v)| format!("<t:Value Name=\"{k}\">{}</t:Value>", esc(v)))
        .collect();
    let body = format!(
        "<s:Fault><faultcode xmlns:a=\"http://schemas.microsoft.com/exchange/services/2006/types\">a:{code}</faultcode><faultstring xml:lang=\"en-US\">{}</faultstring><detail><e:ResponseCode xmlns:e=\"http://schemas.microsoft.com/exchange/services/2006/errors\">{code}</e:ResponseCode><e:Message xmlns:e=\"http://schemas.microsoft.com/exchange/services/2006/errors\">{}</e:Message><t:MessageXml xmlns:t=\"{T}\">{xml_values}</t:MessageXml></detail></s:Fault>",
        esc(message),
        esc(message)
    );
    let mut resp = xml_response(StatusCode::INTERNAL_SERVER_ERROR, envelope(&body));
    resp.extensions_mut().insert(Noted {
        codes: vec![code.to_owned()],
        ..Noted::default()
    });
    resp
}

fn server_busy(back_off_ms: u64) -> Response {
    soap_fault(
        "ErrorServerBusy",
        "The server cannot service this request right now. Try again later.",
        &[("BackOffMilliseconds", back_off_ms.to_string())],
    )
}

fn unauthorized(scheme: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, scheme.to_owned())],
        "401 Unauthorized",
    )
        .into_response()
}

/// 401 offering NTLM and Basic, as IIS with both enabled answers.
fn unauthorized_offer() -> Response {
    let mut r = unauthorized("NTLM");
    r.headers_mut().append(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Basic realm=\"ews\""),
    );
    r
}

/// Who is calling: a Basic account or an app token.
enum Caller {
    User(EwsUser),
    App(EwsApp),
}

impl Inner {
    fn caller(&self, headers: &HeaderMap, conn: ntlm::ConnId) -> Result<Caller, Box<Response>> {
        let cfg = lock(&self.cfg).clone();
        let accounts: Vec<ntlm::Account<'_>> = cfg
            .users
            .iter()
            .map(|u| ntlm::Account {
                username: &u.username,
                upn: &u.mailbox,
                password: &u.password,
            })
            .collect();
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.ntlm.step(
            conn,
            authorization,
            &accounts,
            &cfg.ntlm_domain,
            &cfg.ntlm_dns_domain,
        ) {
            ntlm::Step::Authenticated(i) => return Ok(Caller::User(cfg.users[i].clone())),
            ntlm::Step::Challenge(v) => {
                let mut r = unauthorized(&v);
                let close = v.len() > "NTLM".len()
                    && self
                        .close_after_challenge
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                if close {
                    r.headers_mut().insert(
                        header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                return Err(Box::new(r));
            }
            ntlm::Step::None => {}
        }
        if let Some(token) = bearer(headers) {
            let tokens = lock(&self.tokens);
            let app = tokens
                .get(token)
                .filter(|t| t.expires > now_secs())
                .and_then(|t| cfg.apps.iter().find(|a| a.client_id == t.client_id));
            return match app {
                Some(a) => Ok(Caller::App(a.clone())),
                None => Err(Box::new(unauthorized("Bearer error=\"invalid_token\""))),
            };
        }
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| B64.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let user = basic.and_then(|s| {
            let (u, p) = s.split_once(':')?;
            cfg.users
                .iter()
                .find(|x| x.username.eq_ignore_ascii_case(u) && x.password == p)
                .cloned()
        });
        user.map(Caller::User)
            .ok_or_else(|| Box::new(unauthorized_offer()))
    }

    fn mailbox_exists(&self, mailbox: &str) -> bool {
        let cfg = lock(&self.cfg);
        cfg.mailboxes
            .iter()
            .any(|m| m.eq_ignore_ascii_case(mailbox))
            || cfg
                .users
                .iter()
                .any(|u| u.mailbox.eq_ignore_ascii_case(mailbox))
    }

    /// The acting mailbox after impersonation, or the fault.
    fn acting(&self, caller: &Caller, header: Option<&El>) -> Result<Acting, Box<Response>> {
        let imp = header.and_then(|h| h.child("ExchangeImpersonation"));
        let target = imp.and_then(|i| i.child("ConnectingSID")).and_then(|s| {
            s.children
                .iter()
                .find(|c| {
                    matches!(
                        c.name.as_str(),
                        "PrimarySmtpAddress" | "SmtpAddress" | "PrincipalName"
                    )
                })
                .map(|c| c.text.trim().to_owned())
        });
        let (may, own) = match caller {
            Caller::User(u) => (u.can_impersonate, Some(u.mailbox.clone())),
            Caller::App(a) => (a.full_access_as_app, None),
        };
        match (target, own) {
            (None, Some(own)) => Ok(Acting { mailbox: own }),
            (None, None) => Err(Box::new(soap_fault(
                "ErrorImpersonationFailed",
                "An app-only token must name the mailbox it acts on with ExchangeImpersonation.",
                &[],
            ))),
            (Some(t), _) if !may => Err(Box::new(soap_fault(
                "ErrorImpersonateUserDenied",
                &format!(
                    "The account does not have permission to impersonate the requested user {t}."
                ),
                &[],
            ))),
            (Some(t), _) if !self.mailbox_exists(&t) => Err(Box::new(soap_fault(
                "ErrorNonExistentMailbox",
                &format!("The SMTP address has no mailbox associated with it: {t}."),
                &[],
            ))),
            (Some(t), _) => Ok(Acting { mailbox: t }),
        }
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn ews(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(conn): ConnectInfo<ntlm::ConnId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = InFlight(&inner.in_flight);
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut resp = if now > lock(&inner.cfg).max_concurrency {
        server_busy(500)
    } else {
        handle(&inner, &headers, &text, conn)
    };
    let noted = resp.extensions_mut().get_mut::<Noted>().map(std::mem::take);
    let mut n = noted.unwrap_or_default();
    n.body = Some(text);
    resp.extensions_mut().insert(n);
    resp
}

fn handle(inner: &Inner, headers: &HeaderMap, text: &str, conn: ntlm::ConnId) -> Response {
    let caller = match inner.caller(headers, conn) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let root = match xml::parse(text) {
        Ok(r) => r,
        Err(e) => {
            return soap_fault(
                "ErrorSchemaValidation",
                &format!("The request failed schema validation: {e}"),
                &[("Violation", e)],
            );
        }
    };
    if let Err((line, violation)) = xml::check_order(&root) {
        return soap_fault(
            "ErrorSchemaValidation",
            &format!("The request failed schema validation: {violation}"),
            &[
                ("LineNumber", line.to_string()),
                ("LinePosition", "1".into()),
                ("Violation", violation),
            ],
        );
    }
    let header = root.child("Header");
    let version = header
        .and_then(|h| h.child("RequestServerVersion"))
        .and_then(|v| v.attr("Version"));
    match version {
        Some(v) if VERSIONS.contains(&v) => {}
        _ => {
            return soap_fault(
                "ErrorInvalidServerVersion",
                "The specified server version is invalid.",
                &[],
            );
        }
    }
    let acting = match inner.acting(&caller, header) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(op) = root.child("Body").and_then(|b| b.children.first()) else {
        return soap_fault("ErrorInvalidRequest", "The request has no operation.", &[]);
    };
    let max_page = lock(&inner.cfg).max_page;
    let answer = {
        let mut store = lock(&inner.store);
        match op.name.as_str() {
            "CreateItem" => ops::create_item(&mut store, &acting, op),
            "UpdateItem" => ops::update_item(&mut store, &acting, op),
            "DeleteItem" => ops::delete_item(&mut store, &acting, op),
            "GetItem" => ops::get_item(&store, &acting, op),
            "FindItem" => ops::find_item(&mut store, &acting, op, max_page),
            "SyncFolderItems" => ops::sync_folder_items(&store, &acting, op),
            "GetFolder" => ops::get_folder(&store, &acting, op),
            "FindFolder" => ops::find_folder(&store, &acting, op),
            "CreateFolder" => ops::create_folder(&mut store, &acting, op),
            "GetUserAvailabilityRequest" => {
                availability::get_user_availability(&mut store, &|m| inner.mailbox_exists(m), op)
            }
            other => {
                return soap_fault(
                    "ErrorInvalidRequest",
                    &format!("The operation {other} is not supported by this server."),
                    &[],
                );
            }
        }
    };
    let mut resp = xml_response(StatusCode::OK, envelope(&answer.xml));
    resp.extensions_mut().insert(Noted {
        operation: Some(op.name.clone()),
        codes: answer.codes,
        writes: answer.writes,
        mailbox: Some(acting.mailbox),
        body: None,
    });
    resp
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    scope: Option<String>,
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: TokenForm = match serde_urlencoded_like(&body) {
        Some(f) => f,
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a form",
            );
        }
    };
    // Client credentials also arrive as HTTP Basic.
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| B64.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let (id, secret) = match (&form.client_id, &form.client_secret, basic) {
        (Some(i), Some(s), _) => (i.clone(), s.clone()),
        (_, _, Some((i, s))) => (
            url::form_urlencoded::parse(i.as_bytes())
                .map(|(k, _)| k.into_owned())
                .next()
                .unwrap_or(i),
            s,
        ),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client credentials are missing",
            );
        }
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    if !form
        .scope
        .as_deref()
        .is_some_and(|s| s.ends_with("/.default"))
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "the scope must be <resource>/.default",
        );
    }
    let cfg = lock(&inner.cfg).clone();
    let Some(app) = cfg
        .apps
        .iter()
        .find(|a| a.client_id == id && a.tenant == tenant)
    else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: application not found in the directory",
        );
    };
    if app.client_secret != secret {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let access = rand_urlsafe(64);
    let ttl = i64::try_from(cfg.token_ttl.as_secs()).unwrap_or(3600);
    lock(&inner.tokens).insert(
        access.clone(),
        AppToken {
            client_id: id,
            expires: now_secs() + ttl,
        },
    );
    Json(json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl, "access_token": access}))
        .into_response()
}

fn serde_urlencoded_like(body: &[u8]) -> Option<TokenForm> {
    let pairs: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| pairs.get(k).cloned();
    if pairs.is_empty() {
        return None;
    }
    Some(TokenForm {
        grant_type: get("grant_type"),
        client_id: get("client_id"),
        client_secret: get("client_secret"),
        scope: get("scope"),
    })
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// A model refusal on the control API.
#[derive(Debug)]
struct CtlRefusal(model::Refusal);

impl std::fmt::Display for CtlRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.0, self.0.1)
    }
}

impl ModelError for CtlRefusal {
    fn is_unknown(&self) -> bool {
        self.0.0 == "ErrorItemNotFound"
    }
}

#[derive(Deserialize)]
struct MailboxQuery {
    mailbox: String,
    start: Option<String>,
    end: Option<String>,
}

/// A user's edit on the control API.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserEdit {
    pub subject: Option<String>,
    pub location: Option<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
}

fn ctl_time(s: Option<&str>, default: DateTime<Utc>) -> Result<DateTime<Utc>, CtlError> {
    match s {
        None => Ok(default),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|e| bad(format!("{s:?}: {e}"))),
    }
}

async fn ctl_items(State(inner): State<Arc<Inner>>, Query(q): Query<MailboxQuery>) -> CtlResult {
    let items: Vec<StoredItem> = lock(&inner.store)
        .items
        .values()
        .filter(|i| i.mailbox.eq_ignore_ascii_case(&q.mailbox))
        .cloned()
        .collect();
    ok_json(&items)
}

async fn ctl_view(State(inner): State<Arc<Inner>>, Query(q): Query<MailboxQuery>) -> CtlResult {
    let from = ctl_time(q.start.as_deref(), DateTime::<Utc>::MIN_UTC)?;
    let to = ctl_time(q.end.as_deref(), DateTime::<Utc>::MAX_UTC)?;
    let v = lock(&inner.store)
        .calendar_view(&q.mailbox, model::InFolder::Any, from, to)
        .map_err(CtlRefusal)?;
    ok_json(&v)
}

async fn ctl_edit(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Json(e): Json<UserEdit>,
) -> CtlResult {
    user_edit(&inner, &id, e).map_err(CtlRefusal)?;
    ok(json!({}))
}

async fn ctl_delete(State(inner): State<Arc<Inner>>, Path(id): Path<String>) -> CtlResult {
    user_delete(&inner, &id).map_err(CtlRefusal)?;
    ok(json!({}))
}

fn resolve(store: &model::Store, id: &str) -> Result<(String, model::Target), model::Refusal> {
    if let Some(i) = store.items.get(id) {
        return Ok((i.mailbox.clone(), model::Target::Item(id.to_owned())));
    }
    match store.occurrence_ids.get(id) {
        Some((m, t)) => Ok((
            store
                .items
                .get(m)
                .map(|i| i.mailbox.clone())
                .unwrap_or_default(),
            model::Target::Occurrence(m.clone(), *t),
        )),
        None => Err(model::Refusal::new(
            "ErrorItemNotFound",
            format!("no item {id}"),
        )),
    }
}

fn user_edit(inner: &Inner, id: &str, e: UserEdit) -> Result<(), model::Refusal> {
    let mut store = lock(&inner.store);
    let (mailbox, target) = resolve(&store, id)?;
    let set = Fields {
        subject: e.subject,
        location: e.location,
        start: e.start,
        end: e.end,
        ..Fields::default()
    };
    store
        .update(&mailbox, target, None, set, &[], None)
        .map(|_| ())
}

fn user_delete(inner: &Inner, id: &str) -> Result<(), model::Refusal> {
    let mut store = lock(&inner.store);
    let (mailbox, target) = resolve(&store, id)?;
    store.delete(&mailbox, target)
}

fn router(inner: Arc<Inner>) -> Router {
    let api = Router::new()
        .route("/EWS/Exchange.asmx", post(ews))
        .route("/ews/exchange.asmx", post(ews))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .layer(from_fn_with_state(
            Arc::clone(&inner),
            kit::observe::<Inner>,
        ))
        .with_state(Arc::clone(&inner));
    let control = kit::control::router::<Inner>()
        .route("/items", get(ctl_items))
        .route("/view", get(ctl_view))
        .route("/items/{id}", patch(ctl_edit).delete(ctl_delete))
        .with_state(Arc::clone(&inner));
    Router::new().nest("/_emulator", control).merge(api)
}

/// The IANA zone this server expands a Windows zone id in (CLDR
/// `windowsZones`, territory 001), for tests that read its items.
pub fn zone_of(windows: &str) -> Option<chrono_tz::Tz> {
    model::iana(windows)
}

/// A running EWS emulator. Cheap to clone; clones share one server.
#[derive(Clone)]
pub struct EwsEmulator {
    inner: Arc<Inner>,
}

kit::handle_api!(EwsEmulator, Faults, FaultKind, CallRecord);

impl EwsEmulator {
    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start(cfg: EwsConfig) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            kit: Kit::bind(None).await?,
            cfg: Mutex::new(cfg),
            store: Mutex::new(model::Store::default()),
            tokens: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            ntlm: ntlm::NtlmServer::default(),
            close_after_challenge: AtomicUsize::new(0),
        });
        inner
            .kit
            .serve_with_connect_info::<ntlm::ConnId>(router(Arc::clone(&inner)));
        Ok(Self { inner })
    }

    /// `…/EWS/Exchange.asmx`.
    pub fn ews_url(&self) -> String {
        format!("{}/EWS/Exchange.asmx", self.base_url())
    }

    /// `…/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    pub fn config(&self) -> EwsConfig {
        lock(&self.inner.cfg).clone()
    }

    /// Changes the configuration (accounts, caps) for the next request.
    pub fn update_config(&self, f: impl FnOnce(&mut EwsConfig)) {
        f(&mut lock(&self.inner.cfg));
    }

    /// The next `n` NTLM CHALLENGEs close their connection (`Connection:
    /// close`, then the server closes it), so an AUTHENTICATE can only
    /// arrive on another connection, where it is refused: a proxy or server
    /// that does not keep connections for the handshake.
    pub fn close_after_challenge(&self, n: usize) {
        self.inner.close_after_challenge.store(n, Ordering::SeqCst);
    }

    /// Every access token issued so far expires now.
    pub fn expire_tokens(&self) {
        for t in lock(&self.inner.tokens).values_mut() {
            t.expires = 0;
        }
    }

    /// The stored items (singles and masters) of a mailbox.
    pub fn items(&self, mailbox: &str) -> Vec<StoredItem> {
        lock(&self.inner.store)
            .items
            .values()
            .filter(|i| i.mailbox.eq_ignore_ascii_case(mailbox))
            .cloned()
            .collect()
    }

    /// The calendar folders under `mailbox`'s calendar.
    pub fn folders(&self, mailbox: &str) -> Vec<Folder> {
        lock(&self.inner.store)
            .folders
            .values()
            .filter(|f| f.mailbox.eq_ignore_ascii_case(mailbox))
            .cloned()
            .collect()
    }

    /// What CalendarView shows in `[from, to)`.
    ///
    /// # Panics
    /// If a stored recurrence cannot be expanded (the server refuses those).
    pub fn calendar_view(
        &self,
        mailbox: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Instance> {
        lock(&self.inner.store)
            .calendar_view(mailbox, model::InFolder::Any, from, to)
            .unwrap_or_else(|e| panic!("ews emulator: {}: {}", e.0, e.1))
    }

    /// A user edits an item or one occurrence (by its id, as CalendarView
    /// shows it); the ChangeKey changes. False when the id is unknown.
    pub fn user_edit(&self, id: &str, edit: UserEdit) -> bool {
        user_edit(&self.inner, id, edit).is_ok()
    }

    /// A user deletes an item or one occurrence. False when unknown.
    pub fn user_delete(&self, id: &str) -> bool {
        user_delete(&self.inner, id).is_ok()
    }

    /// The SOAP requests received (bodies of those that reached the handler).
    pub fn request_bodies(&self) -> Vec<String> {
        self.calls().into_iter().filter_map(|c| c.body).collect()
    }

    /// Items carried by write operations (CreateItem, UpdateItem,
    /// DeleteItem), whatever their answer.
    pub fn write_count(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| {
                matches!(
                    c.operation.as_deref(),
                    Some("CreateItem" | "UpdateItem" | "DeleteItem")
                )
            })
            .map(|c| c.writes)
            .sum()
    }

    /// Stops the server.
    pub async fn shutdown(self) {
        self.inner.kit.shutdown().await;
    }
}
