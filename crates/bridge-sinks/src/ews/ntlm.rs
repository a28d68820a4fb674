//! NTLM (NTLMv2, MS-NLMP) HTTP authentication for EWS.
//!
//! The messages and their crypto come from the `ntlmclient` crate (0.2,
//! CC0-1.0, about 1,300 lines: `md4`, `md-5`, `hmac`, `des` from RustCrypto,
//! no C build). `sspi` 0.23 (Devolutions, MIT/Apache) also speaks NTLM but
//! brings a whole SSPI stack for one handshake: Kerberos (`picky`, pinned
//! release candidates of `picky` and `rsa`), a DNS resolver (`hickory`),
//! PKCS#11 (`cryptoki`), smart cards, and `aws-lc-rs` (a C/assembly build)
//! by default; `ntlmclient` does only what is needed here. What is ours: the account forms (`DOMAIN\user`,
//! `user@domain`), the flags we ask for, using the server's
//! `MsvAvTimestamp` as the blob's time (MS-NLMP 3.1.5.1.2), and the HTTP
//! side below. Not sent: a MIC and channel bindings (`MsvAvChannelBindings`,
//! Extended Protection); a server that requires them refuses the logon
//! with 401, which pauses the sink like a wrong password.
//!
//! # Connections
//!
//! NTLM authenticates a TCP connection, not a request: `NEGOTIATE` → 401
//! with the `CHALLENGE` → `AUTHENTICATE` must share one connection, and the
//! server then serves that connection as the user without another header.
//! A pooling client (reqwest, hyper-util's legacy client) says nothing about
//! which connection a request takes, so each [`Session`] owns its
//! connection: one HTTP/1.1 connection made with hyper's
//! `client::conn::http1` (TCP, or TLS through `tokio-rustls` with the
//! `webpki-roots` trust roots reqwest's `rustls-tls` uses, SNI from the host,
//! ALPN `http/1.1`), its `SendRequest` and the spawned task that drives it.
//! The NEGOTIATE, the AUTHENTICATE and every later request of the session
//! go out on it by construction; a session serves one request at a time,
//! and the sessions are at most as many as the requests the client lets in
//! flight (idle ones are reused).
//!
//! A 401 to the AUTHENTICATE is therefore the server's verdict on the
//! password (the sink pauses). When the connection ends (the server's
//! `Connection: close`, an error, EOF, a timeout), the session forgets it
//! and the next request opens a new one and authenticates it; a request
//! that never went out because the idle connection had closed is sent on
//! the new one. If the server closes the connection between its CHALLENGE
//! and the AUTHENTICATE, the password was never checked: that is
//! [`Outcome::Dropped`], a transient failure, never a pause. A 401 on an
//! authenticated connection (the server forgot it) authenticates a new one.
//! Connecting (TCP and TLS) has the configured timeout, and so has each HTTP
//! exchange (sending the request and reading the whole answer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bridge_http::{Answer, Secret, TransportError};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderMap};
use hyper_util::rt::TokioIo;
use ntlmclient::{Flags, Message, TargetInfoEntry, TargetInfoType};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls;

/// An NTLM account as the handshake sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name as sent (`user`, or `user@domain` in UPN form).
    pub user: String,
    /// The NetBIOS domain (empty with a UPN).
    pub domain: String,
    pub workstation: String,
}

impl Account {
    /// From the configured `username` (`DOMAIN\user`, `user@domain` or
    /// `user`) and optional `domain`; `Err` says what does not fit.
    pub fn parse(
        username: &str,
        domain: Option<&str>,
        workstation: Option<&str>,
    ) -> Result<Self, String> {
        let username = username.trim();
        let domain = domain.map(str::trim).filter(|d| !d.is_empty());
        let (user, dom) = match username.split_once('\\') {
            Some((d, u)) => {
                if d.is_empty() || u.is_empty() || u.contains('\\') {
                    return Err(format!(
                        "{username:?} is not DOMAIN\\user, user@domain or user"
                    ));
                }
                if let Some(other) = domain
                    && !other.eq_ignore_ascii_case(d)
                {
                    return Err(format!(
                        "{username:?} names the domain {d:?} but domain = {other:?}"
                    ));
                }
                (u.to_owned(), d.to_owned())
            }
            // A UPN is sent whole with an empty domain (MS-NLMP 3.1.5.1.2:
            // the DC resolves it), unless a domain is set explicitly.
            None => (username.to_owned(), domain.unwrap_or_default().to_owned()),
        };
        if user.is_empty() || user.chars().any(char::is_control) {
            return Err(format!("{username:?} is not a user name"));
        }
        Ok(Self {
            user,
            domain: dom,
            workstation: workstation.map(str::trim).unwrap_or_default().to_owned(),
        })
    }

    /// `DOMAIN\user` or the UPN, for messages.
    pub fn display(&self) -> String {
        if self.domain.is_empty() {
            self.user.clone()
        } else {
            format!("{}\\{}", self.domain, self.user)
        }
    }
}

/// What we ask for: Unicode, NTLM with extended session security, the
/// target info (for NTLMv2), 128-bit. No signing or sealing: EWS runs over
/// HTTP(S), NTLM only authenticates.
fn flags() -> Flags {
    Flags::NEGOTIATE_UNICODE
        | Flags::REQUEST_TARGET
        | Flags::NEGOTIATE_NTLM
        | Flags::NEGOTIATE_ALWAYS_SIGN
        | Flags::NEGOTIATE_NTLM2_KEY
        | Flags::NEGOTIATE_128BIT
}

/// The `Authorization` value of the NEGOTIATE message.
pub fn negotiate() -> String {
    let msg = Message::Negotiate(ntlmclient::NegotiateMessage {
        flags: flags(),
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: Default::default(),
    });
    // Storing fails only for strings that do not fit in a u16 length; the
    // NEGOTIATE has none.
    let bytes = msg.to_bytes().unwrap_or_default();
    format!("NTLM {}", B64.encode(bytes))
}

/// The server's CHALLENGE from a 401's `WWW-Authenticate` values.
pub fn challenge_of<'a>(
    values: impl Iterator<Item = &'a str>,
) -> Result<ntlmclient::ChallengeMessage, String> {
    let mut offered = false;
    for v in values {
        for part in v.split(',') {
            let part = part.trim();
            let Some(rest) = part
                .strip_prefix("NTLM")
                .filter(|r| r.is_empty() || r.starts_with(' '))
            else {
                continue;
            };
            offered = true;
            let token = rest.trim();
            if token.is_empty() {
                continue;
            }
            let bytes = B64
                .decode(token)
                .map_err(|e| format!("the NTLM challenge is not base64: {e}"))?;
            return match Message::try_from(bytes.as_slice()) {
                Ok(Message::Challenge(c)) => Ok(c),
                Ok(other) => Err(format!(
                    "the server answered NTLM message type {} instead of a CHALLENGE",
                    other.message_number()
                )),
                Err(e) => Err(format!("unreadable NTLM CHALLENGE: {e}")),
            };
        }
    }
    Err(if offered {
        "the server answered the NEGOTIATE without a CHALLENGE".to_owned()
    } else {
        "the server does not offer NTLM (no \"WWW-Authenticate: NTLM\")".to_owned()
    })
}

/// The `Authorization` value of the AUTHENTICATE message answering
/// `challenge` (NTLMv2; the blob's time is the server's `MsvAvTimestamp`
/// when it sent one, else ours).
pub fn authenticate(
    account: &Account,
    password: &Secret,
    challenge: &ntlmclient::ChallengeMessage,
) -> Result<String, String> {
    if !challenge.flags.contains(Flags::NEGOTIATE_TARGET_INFO)
        && challenge.target_information.is_empty()
    {
        return Err("the server's CHALLENGE has no target info (NTLMv1 only); refusing to answer it with NTLMv1".into());
    }
    let target_info: Vec<u8> = challenge
        .target_information
        .iter()
        .flat_map(TargetInfoEntry::to_bytes)
        .collect();
    let time = challenge
        .target_information
        .iter()
        .find(|e| e.entry_type == TargetInfoType::Timestamp)
        .and_then(|e| <[u8; 8]>::try_from(e.data.as_slice()).ok())
        .map(i64::from_le_bytes)
        .unwrap_or_else(ntlmclient::get_ntlm_time);
    let creds = ntlmclient::Credentials {
        username: account.user.clone(),
        password: password.expose().to_owned(),
        domain: account.domain.clone(),
    };
    let mut response =
        ntlmclient::respond_challenge_ntlm_v2(challenge.challenge, &target_info, time, &creds);
    // With a server timestamp the LM response is Z(24) (MS-NLMP 3.1.5.1.2);
    // without key exchange there is no encrypted session key to send.
    response.lm_response = vec![0; 24];
    response.session_key.clear();
    let negotiated = (challenge.flags & flags()) | Flags::NEGOTIATE_UNICODE;
    let msg = response.to_message(&creds, &account.workstation, negotiated);
    let bytes = msg
        .to_bytes()
        .map_err(|e| format!("the AUTHENTICATE message: {e}"))?;
    Ok(format!("NTLM {}", B64.encode(bytes)))
}

/// Where the sessions connect, from the EWS URL.
#[derive(Debug, Clone)]
struct Origin {
    tls: bool,
    /// The host to resolve and the TLS server name (IPv6 without brackets).
    host: String,
    port: u16,
    /// The `Host` header (`host[:port]`, the port only when not the
    /// scheme's).
    authority: String,
    /// The request target in origin form (`/EWS/Exchange.asmx?…`).
    target: String,
}

impl Origin {
    fn parse(url: &str) -> Result<Self, String> {
        let u = url::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let tls = match u.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("{url:?}: {other} is not http or https")),
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(format!("{url:?} names no host")),
        };
        let port = u
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let shown = u.host_str().unwrap_or(&host);
        let authority = match u.port() {
            Some(p) => format!("{shown}:{p}"),
            None => shown.to_owned(),
        };
        let mut target = u.path().to_owned();
        if let Some(q) = u.query() {
            target.push('?');
            target.push_str(q);
        }
        Ok(Self {
            tls,
            host,
            port,
            authority,
            target,
        })
    }
}

/// The TLS client settings of `https://` URLs: the Mozilla roots of
/// `webpki-roots` (what reqwest's `rustls-tls` trusts) and `extra`, ring
/// as the crypto provider (as in reqwest), ALPN `http/1.1`.
fn tls_config(
    extra: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for der in extra {
        roots
            .add(der.clone())
            .map_err(|e| format!("a trusted root: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A session's connection: hyper's sender and the task driving it.
#[derive(Debug)]
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
    /// NTLM authenticated it (an AUTHENTICATE on it was answered, not 401).
    authed: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection's worth of client: requests on it go one at a time.
#[derive(Debug)]
pub struct Session {
    conn: Option<Conn>,
    /// The [`Sessions::reset`] count it was made under.
    generation: u64,
}

/// The sessions of one EWS client.
#[derive(Debug)]
pub struct Sessions {
    pub account: Account,
    origin: Origin,
    /// `Some` for `https://`.
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Session>>,
    generation: AtomicU64,
    timeout: Duration,
}

/// What a request over NTLM came to: the answer to hand to the caller's
/// classifier, or the handshake's own failure.
#[derive(Debug)]
pub enum Outcome {
    Answer(Result<Answer, TransportError>),
    /// The server did not play NTLM (no challenge, a bad one).
    Protocol(String),
    /// The server closed the connection between its CHALLENGE and the
    /// AUTHENTICATE: it did not keep the connection for the handshake, and
    /// the password was never checked.
    Dropped,
}

/// One HTTP exchange on a session's connection.
enum Sent {
    /// The answer, and whether the connection carries another request.
    Answer { answer: Answer, keep: bool },
    /// The connection had closed before the request went out (nothing was
    /// sent, nothing counted).
    Unsent,
    /// No answer, or one cut short; `closed` when the server closed the
    /// connection (EOF, reset) rather than, say, a timeout.
    Failed { error: TransportError, closed: bool },
}

/// What one request sends, for each exchange of it.
struct Req<'a> {
    body: Bytes,
    headers: &'a [(&'a str, &'a str)],
    record: &'a (dyn Fn(u16) + Sync),
}

const USER_AGENT: &str = concat!("feishu-bridge/", env!("CARGO_PKG_VERSION"));

/// Whether `headers`' `Connection` lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether hyper's error says the server closed the connection.
fn closed_by_server(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return true;
    }
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cur = c.source();
    }
    false
}

fn timed_out(what: &str, after: Duration) -> TransportError {
    TransportError::new(
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {} ms", after.as_millis()),
        ),
        None,
    )
}

impl Sessions {
    /// Sessions posting to `url` (`http://` or `https://`) as `account`;
    /// `timeout` bounds connecting and each HTTP exchange.
    pub fn new(account: Account, url: &str, timeout: Duration) -> Result<Self, String> {
        let origin = Origin::parse(url)?;
        let tls = if origin.tls {
            Some(tls_config(&[])?)
        } else {
            None
        };
        Ok(Self {
            account,
            origin,
            tls,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            timeout,
        })
    }

    /// Also trusts these root certificates (DER) for `https://`: a private
    /// CA's (the sink's `ca_file`), or a test's.
    pub fn trusting(mut self, ders: &[Vec<u8>]) -> Result<Self, String> {
        if self.origin.tls && !ders.is_empty() {
            let roots: Vec<_> = ders
                .iter()
                .map(|d| rustls::pki_types::CertificateDer::from(d.clone()))
                .collect();
            self.tls = Some(tls_config(&roots)?);
        }
        Ok(self)
    }

    /// Forgets every authenticated connection (the password changed): idle
    /// sessions now, busy ones when they come back.
    pub fn reset(&self) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::SeqCst);
        idle.clear();
    }

    fn checkout(&self) -> Session {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        idle.pop().unwrap_or_else(|| Session {
            conn: None,
            generation: self.generation.load(Ordering::SeqCst),
        })
    }

    fn checkin(&self, s: Session) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.generation == self.generation.load(Ordering::SeqCst) {
            idle.push(s);
        }
    }

    /// POSTs `body` as the account: on the session's authenticated
    /// connection as is, else (or after a 401 there) through the handshake
    /// on a new one. `record` counts each HTTP exchange (status 0 without
    /// an answer).
    pub async fn post(
        &self,
        body: &str,
        headers: &[(&str, &str)],
        password: &Secret,
        record: &(dyn Fn(u16) + Sync),
    ) -> Outcome {
        let mut session = self.checkout();
        let req = Req {
            body: Bytes::from(body.to_owned()),
            headers,
            record,
        };
        let out = self.post_on(&mut session, &req, password).await;
        self.checkin(session);
        out
    }

    async fn post_on(&self, s: &mut Session, req: &Req<'_>, password: &Secret) -> Outcome {
        if let Some(conn) = s.conn.as_mut().filter(|c| c.authed) {
            match self.exchange(conn, None, req).await {
                Sent::Answer { answer, .. } if answer.status == 401 => {
                    tracing::debug!(
                        "EWS answered 401 on an authenticated NTLM connection; authenticating a new one"
                    );
                    s.conn = None;
                }
                Sent::Answer { answer, keep } => {
                    if !keep {
                        s.conn = None;
                    }
                    return Outcome::Answer(Ok(answer));
                }
                // The server closed the idle connection: nothing went out,
                // the request goes on a new one.
                Sent::Unsent => s.conn = None,
                Sent::Failed { error, .. } => {
                    s.conn = None;
                    return Outcome::Answer(Err(error));
                }
            }
        }
        self.handshake(s, req, password).await
    }

    /// NEGOTIATE, CHALLENGE, AUTHENTICATE (carrying the request) on the
    /// session's open unauthenticated connection, else on a new one.
    async fn handshake(&self, s: &mut Session, req: &Req<'_>, password: &Secret) -> Outcome {
        let mut conn = match s.conn.take() {
            Some(c) if !c.authed && !c.send.is_closed() => c,
            _ => match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    (req.record)(0);
                    return Outcome::Answer(Err(e));
                }
            },
        };
        let negotiate = negotiate();
        let mut sent = self
            .exchange(&mut conn, Some(negotiate.as_str()), req)
            .await;
        if matches!(sent, Sent::Unsent) {
            // The reused connection had closed: once more on a new one.
            conn = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    (req.record)(0);
                    return Outcome::Answer(Err(e));
                }
            };
            sent = self
                .exchange(&mut conn, Some(negotiate.as_str()), req)
                .await;
        }
        let (first, keep) = match sent {
            Sent::Answer { answer, keep } if answer.status == 401 => (answer, keep),
            // Anything but a 401 (a fault, a 503) is the request's answer;
            // an open connection serves the next handshake.
            Sent::Answer { answer, keep } => {
                if keep {
                    s.conn = Some(conn);
                }
                return Outcome::Answer(Ok(answer));
            }
            Sent::Unsent => {
                return Outcome::Answer(Err(TransportError::new(
                    "the server closed a new connection before the request went out",
                    None,
                )));
            }
            Sent::Failed { error, .. } => return Outcome::Answer(Err(error)),
        };
        let challenge = match challenge_of(
            first
                .headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        ) {
            Ok(c) => c,
            Err(e) => return Outcome::Protocol(e),
        };
        if !keep {
            // `Connection: close` on the CHALLENGE: an AUTHENTICATE on
            // another connection would find no challenge there.
            tracing::debug!("EWS closed the connection after its NTLM CHALLENGE");
            return Outcome::Dropped;
        }
        let token = match authenticate(&self.account, password, &challenge) {
            Ok(t) => t,
            Err(e) => return Outcome::Protocol(e),
        };
        match self.exchange(&mut conn, Some(token.as_str()), req).await {
            Sent::Answer { answer, keep } => {
                // A 401 here is the server's verdict on the credentials:
                // the AUTHENTICATE went out on the CHALLENGE's connection.
                if answer.status != 401 && keep {
                    conn.authed = true;
                    s.conn = Some(conn);
                }
                Outcome::Answer(Ok(answer))
            }
            Sent::Unsent | Sent::Failed { closed: true, .. } => {
                tracing::debug!("EWS closed the connection before the NTLM AUTHENTICATE");
                Outcome::Dropped
            }
            Sent::Failed { error, .. } => Outcome::Answer(Err(error)),
        }
    }

    /// A new connection to the origin (TCP, TLS for `https://`, the HTTP/1.1
    /// handshake), within the timeout.
    async fn connect(&self) -> Result<Conn, TransportError> {
        let o = &self.origin;
        let to = format!("{}:{}", o.host, o.port);
        let connect = async {
            let tcp = TcpStream::connect((o.host.as_str(), o.port))
                .await
                .map_err(|e| {
                    TransportError::new(
                        std::io::Error::new(e.kind(), format!("connecting to {to}: {e}")),
                        None,
                    )
                })?;
            // Requests are written whole; no point waiting for more.
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => start(TokioIo::new(tcp)).await,
                Some(cfg) => {
                    let name =
                        rustls::pki_types::ServerName::try_from(o.host.clone()).map_err(|e| {
                            TransportError::new(format!("{:?} as a TLS name: {e}", o.host), None)
                        })?;
                    let tls = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                        .connect(name, tcp)
                        .await
                        .map_err(|e| {
                            TransportError::new(
                                std::io::Error::new(e.kind(), format!("TLS with {to}: {e}")),
                                None,
                            )
                        })?;
                    start(TokioIo::new(tls)).await
                }
            }
        };
        tokio::time::timeout(self.timeout, connect)
            .await
            .unwrap_or_else(|_| Err(timed_out(&format!("connecting to {to}"), self.timeout)))
    }

    /// One request on `conn` (with `Authorization: auth` when given), its
    /// answer read whole, within the timeout.
    async fn exchange(&self, conn: &mut Conn, auth: Option<&str>, req: &Req<'_>) -> Sent {
        let mut b = hyper::Request::post(self.origin.target.as_str())
            .header(header::HOST, self.origin.authority.as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .header(header::CONTENT_TYPE, "text/xml; charset=utf-8");
        for (k, v) in req.headers {
            b = b.header(*k, *v);
        }
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        let request = match b.body(Full::new(req.body.clone())) {
            Ok(r) => r,
            Err(e) => {
                (req.record)(0);
                return Sent::Failed {
                    error: TransportError::new(e, None),
                    closed: false,
                };
            }
        };
        let deadline = Instant::now() + self.timeout;
        // Wait until the connection takes a request: hyper's task marks it
        // ready once the previous answer is done with, and fails this when
        // the connection has closed (then nothing was sent).
        match tokio::time::timeout_at(deadline, conn.send.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Sent::Unsent,
            Err(_) => {
                (req.record)(0);
                return Sent::Failed {
                    error: timed_out("waiting for the EWS connection", self.timeout),
                    closed: false,
                };
            }
        }
        let resp =
            match tokio::time::timeout_at(deadline, conn.send.try_send_request(request)).await {
                Ok(Ok(r)) => r,
                Ok(Err(mut e)) => {
                    if e.take_message().is_some() {
                        return Sent::Unsent;
                    }
                    (req.record)(0);
                    let error = e.into_error();
                    let closed = closed_by_server(&error);
                    return Sent::Failed {
                        error: TransportError::new(error, None),
                        closed,
                    };
                }
                Err(_) => {
                    (req.record)(0);
                    return Sent::Failed {
                        error: timed_out("the EWS request", self.timeout),
                        closed: false,
                    };
                }
            };
        let status = resp.status().as_u16();
        (req.record)(status);
        let keep = !connection_has(resp.headers(), "close")
            && (resp.version() != hyper::Version::HTTP_10
                || connection_has(resp.headers(), "keep-alive"));
        let (parts, body) = resp.into_parts();
        match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Sent::Answer {
                answer: Answer {
                    status,
                    headers: parts.headers,
                    body: collected.to_bytes(),
                },
                keep,
            },
            Ok(Err(e)) => {
                let closed = closed_by_server(&e);
                Sent::Failed {
                    error: TransportError::new(e, Some(status)),
                    closed,
                }
            }
            Err(_) => Sent::Failed {
                error: TransportError::new(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "reading the answer timed out after {} ms",
                            self.timeout.as_millis()
                        ),
                    ),
                    Some(status),
                ),
                closed: false,
            },
        }
    }
}

/// The HTTP/1.1 handshake on `io`, its connection driven by a task of its
/// own.
async fn start<T>(io: T) -> Result<Conn, TransportError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (send, conn) = http1::handshake(io)
        .await
        .map_err(|e| TransportError::new(e, None))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "EWS connection ended");
        }
    });
    Ok(Conn {
        send,
        task,
        authed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_forms() {
        let a = Account::parse("CONTOSO\\svc", None, Some("BRIDGE")).unwrap();
        assert_eq!((a.user.as_str(), a.domain.as_str()), ("svc", "CONTOSO"));
        assert_eq!(a.workstation, "BRIDGE");
        assert_eq!(a.display(), "CONTOSO\\svc");
        let a = Account::parse("svc@contoso.com", None, None).unwrap();
        assert_eq!(
            (a.user.as_str(), a.domain.as_str()),
            ("svc@contoso.com", "")
        );
        let a = Account::parse("svc", Some("CONTOSO"), None).unwrap();
        assert_eq!((a.user.as_str(), a.domain.as_str()), ("svc", "CONTOSO"));
        let a = Account::parse("contoso\\svc", Some("CONTOSO"), None).unwrap();
        assert_eq!(a.domain, "contoso");
        for bad in ["\\svc", "CONTOSO\\", "A\\B\\c", ""] {
            assert!(Account::parse(bad, None, None).is_err(), "{bad:?}");
        }
        let e = Account::parse("CONTOSO\\svc", Some("FABRIKAM"), None).unwrap_err();
        assert!(e.contains("FABRIKAM"), "{e}");
    }

    #[test]
    fn negotiate_is_an_ntlmssp_type_1() {
        let v = negotiate();
        let bytes = B64.decode(v.strip_prefix("NTLM ").unwrap()).unwrap();
        assert_eq!(&bytes[..8], b"NTLMSSP\0");
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        let f = Flags::from_bits_retain(u32::from_le_bytes(bytes[12..16].try_into().unwrap()));
        assert!(f.contains(Flags::NEGOTIATE_UNICODE | Flags::NEGOTIATE_NTLM));
    }

    /// A CHALLENGE built by hand (MS-NLMP 2.2.1.2): header, target name,
    /// flags, challenge, reserved, target info, version, payload.
    fn challenge_bytes(server_challenge: [u8; 8], timestamp: Option<i64>) -> Vec<u8> {
        let utf16 = |s: &str| -> Vec<u8> { s.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let name = utf16("CONTOSO");
        let mut info = Vec::new();
        for (t, v) in [(2u16, utf16("CONTOSO")), (1, utf16("EXCH01"))] {
            info.extend_from_slice(&t.to_le_bytes());
            info.extend_from_slice(&(v.len() as u16).to_le_bytes());
            info.extend_from_slice(&v);
        }
        if let Some(ts) = timestamp {
            info.extend_from_slice(&7u16.to_le_bytes());
            info.extend_from_slice(&8u16.to_le_bytes());
            info.extend_from_slice(&ts.to_le_bytes());
        }
        info.extend_from_slice(&[0, 0, 0, 0]);
        let flags = (Flags::NEGOTIATE_UNICODE
            | Flags::NEGOTIATE_NTLM
            | Flags::NEGOTIATE_TARGET_INFO
            | Flags::NEGOTIATE_NTLM2_KEY)
            .bits();
        let mut m = b"NTLMSSP\0".to_vec();
        m.extend_from_slice(&2u32.to_le_bytes());
        let name_off = 56u32;
        let info_off = name_off + name.len() as u32;
        m.extend_from_slice(&(name.len() as u16).to_le_bytes());
        m.extend_from_slice(&(name.len() as u16).to_le_bytes());
        m.extend_from_slice(&name_off.to_le_bytes());
        m.extend_from_slice(&flags.to_le_bytes());
        m.extend_from_slice(&server_challenge);
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&(info.len() as u16).to_le_bytes());
        m.extend_from_slice(&info_off.to_le_bytes());
        m.extend_from_slice(&[10, 0, 0x61, 0x4a, 0, 0, 0, 15]);
        m.extend_from_slice(&name);
        m.extend_from_slice(&info);
        m
    }

    #[test]
    fn challenge_header_forms() {
        let c = challenge_bytes([1, 2, 3, 4, 5, 6, 7, 8], Some(42));
        let v = format!("NTLM {}", B64.encode(&c));
        let parsed = challenge_of(["Negotiate", v.as_str()].into_iter()).unwrap();
        assert_eq!(parsed.challenge, [1, 2, 3, 4, 5, 6, 7, 8]);
        let e = challenge_of(["Basic realm=\"x\""].into_iter()).unwrap_err();
        assert!(e.contains("does not offer NTLM"), "{e}");
        let e = challenge_of(["NTLM"].into_iter()).unwrap_err();
        assert!(e.contains("without a CHALLENGE"), "{e}");
        let e = challenge_of(["NTLM !!!"].into_iter()).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
    }

    /// The AUTHENTICATE's NTLMv2 response checks out against MS-NLMP 3.3.2
    /// computed here with the RustCrypto primitives, and carries the
    /// server's timestamp.
    #[test]
    fn authenticate_answers_with_ntlmv2() {
        use hmac::{Hmac, Mac};
        let server = [9, 8, 7, 6, 5, 4, 3, 2];
        let c = challenge_bytes(server, Some(0x01d9_0000_0000_0000));
        let Message::Challenge(ch) = Message::try_from(c.as_slice()).unwrap() else {
            panic!("not a challenge")
        };
        let account = Account::parse("CONTOSO\\svc", None, Some("WS")).unwrap();
        let v = authenticate(&account, &Secret::new("Pa55w0rd"), &ch).unwrap();
        let bytes = B64.decode(v.strip_prefix("NTLM ").unwrap()).unwrap();
        let Message::Authenticate(m) = Message::try_from(bytes.as_slice()).unwrap() else {
            panic!("not an authenticate")
        };
        assert_eq!(
            (
                m.user_name.as_str(),
                m.domain_name.as_str(),
                m.workstation_name.as_str()
            ),
            ("svc", "CONTOSO", "WS")
        );
        assert_eq!(m.lm_response, vec![0; 24]);
        let (proof, blob) = m.ntlm_response.split_at(16);
        assert_eq!(&blob[..2], &[1, 1]);
        assert_eq!(
            i64::from_le_bytes(blob[8..16].try_into().unwrap()),
            0x01d9_0000_0000_0000
        );
        let nt_hash = {
            use md4::Digest;
            let pw: Vec<u8> = "Pa55w0rd"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect();
            md4::Md4::digest(&pw)
        };
        let mut k = <Hmac<md5::Md5> as Mac>::new_from_slice(&nt_hash).unwrap();
        k.update(
            &"SVCCONTOSO"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<_>>(),
        );
        let ntowf = k.finalize().into_bytes();
        let mut h = <Hmac<md5::Md5> as Mac>::new_from_slice(&ntowf).unwrap();
        h.update(&server);
        h.update(blob);
        assert_eq!(proof, h.finalize().into_bytes().as_slice());
    }

    #[test]
    fn origins_of_ews_urls() {
        for (url, tls, host, port, authority, target) in [
            (
                "https://mail.contoso.com/EWS/Exchange.asmx",
                true,
                "mail.contoso.com",
                443,
                "mail.contoso.com",
                "/EWS/Exchange.asmx",
            ),
            (
                "http://127.0.0.1:8080/ews/exchange.asmx?x=1",
                false,
                "127.0.0.1",
                8080,
                "127.0.0.1:8080",
                "/ews/exchange.asmx?x=1",
            ),
            (
                "https://[::1]:8443/EWS/Exchange.asmx",
                true,
                "::1",
                8443,
                "[::1]:8443",
                "/EWS/Exchange.asmx",
            ),
        ] {
            let o = Origin::parse(url).unwrap();
            assert_eq!(
                (
                    o.tls,
                    o.host.as_str(),
                    o.port,
                    o.authority.as_str(),
                    o.target.as_str()
                ),
                (tls, host, port, authority, target),
                "{url}"
            );
        }
        let e = Origin::parse("ftp://x/EWS").unwrap_err();
        assert!(e.contains("not http or https"), "{e}");
        assert!(Origin::parse("not a url").is_err());
    }

    /// Reads one request (head and `Content-Length` body) from `sock`.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    }

    /// A server that answers the NEGOTIATE with a CHALLENGE and then drops
    /// the connection without announcing it (no `Connection: close`): the
    /// AUTHENTICATE finds no connection, which is [`Outcome::Dropped`]
    /// (transient), never a refused password, and no other connection is
    /// tried within the request.
    #[tokio::test]
    async fn a_connection_dropped_after_the_challenge_is_dropped_not_refused() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/EWS/Exchange.asmx",
            listener.local_addr().unwrap()
        );
        let challenge = B64.encode(challenge_bytes([1; 8], Some(ntlmclient::get_ntlm_time())));
        let accepted = std::sync::Arc::new(AtomicU64::new(0));
        let counted = std::sync::Arc::clone(&accepted);
        let server = tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                let request = read_request(&mut sock).await;
                assert!(request.starts_with("POST /EWS/Exchange.asmx HTTP/1.1\r\n"));
                assert!(request.contains("authorization: NTLM "), "{request}");
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: NTLM {challenge}\r\nContent-Length: 0\r\n\r\n"
                );
                sock.write_all(answer.as_bytes()).await.unwrap();
                sock.shutdown().await.unwrap();
            }
        });
        let account = Account::parse("CONTOSO\\svc", None, None).unwrap();
        let sessions = Sessions::new(account, &url, Duration::from_secs(10)).unwrap();
        let statuses = Mutex::new(Vec::new());
        let record = |s: u16| statuses.lock().unwrap().push(s);
        let out = sessions
            .post("<x/>", &[], &Secret::new("pw"), &record)
            .await;
        assert!(matches!(out, Outcome::Dropped), "{out:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(statuses.lock().unwrap().first(), Some(&401));
        server.abort();
    }

    #[test]
    fn connection_tokens() {
        let mut h = HeaderMap::new();
        assert!(!connection_has(&h, "close"));
        h.append(header::CONNECTION, "Keep-Alive, Close".parse().unwrap());
        assert!(connection_has(&h, "close") && connection_has(&h, "keep-alive"));
        assert!(!connection_has(&h, "upgrade"));
    }

    #[test]
    fn an_ntlmv1_only_challenge_is_refused() {
        let mut c = challenge_bytes([0; 8], None);
        // Clear NEGOTIATE_TARGET_INFO and the target info length.
        let f = u32::from_le_bytes(c[20..24].try_into().unwrap())
            & !Flags::NEGOTIATE_TARGET_INFO.bits();
        c[20..24].copy_from_slice(&f.to_le_bytes());
        c[40..44].copy_from_slice(&[0, 0, 0, 0]);
        let Message::Challenge(ch) = Message::try_from(c.as_slice()).unwrap() else {
            panic!("not a challenge")
        };
        let account = Account::parse("svc", None, None).unwrap();
        let e = authenticate(&account, &Secret::new("x"), &ch).unwrap_err();
        assert!(e.contains("NTLMv1"), "{e}");
    }
}
