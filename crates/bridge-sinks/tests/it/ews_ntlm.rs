//! The EWS client with NTLM against the EWS emulator (whose NTLM is its
//! own, written from MS-NLMP): one handshake per session, since a session
//! owns its connection; a wrong password that pauses; connections the
//! server drops (after its CHALLENGE, or once authenticated) that never
//! pass for a wrong password; and the same over TLS.
//!
//! A CHALLENGE is a 401 the emulator answers to a NEGOTIATE; with the right
//! password no other request gets a 401, so the 401s count the CHALLENGEs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge_emulators::ews::{EwsConfig, EwsEmulator, FaultKind};
use bridge_http::{RetryPolicy, Secret};
use bridge_sinks::ews::ntlm::{Account, Outcome, Sessions};
use bridge_sinks::ews::{ClientConfig, Credentials, EwsClient, EwsError};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

const GET_FOLDER: &str = "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id=\"calendar\"/></m:FolderIds></m:GetFolder>";

fn config(url: String, max_concurrency: usize) -> ClientConfig {
    ClientConfig {
        url,
        mailbox: "alice@example.com".into(),
        impersonation: true,
        version: "Exchange2016".into(),
        max_concurrency,
        timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_retries: 2,
            backoff: bridge_http::Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
                jitter: bridge_http::Jitter::Equal,
            },
            ..RetryPolicy::default()
        },
        extra_roots: Vec::new(),
    }
}

fn client_at(url: String, max_concurrency: usize, username: &str, password: &str) -> EwsClient {
    let creds = Credentials::Ntlm {
        username: username.into(),
        account: Account::parse(username, None, Some("BRIDGE01")).unwrap(),
        password: Secret::new(password),
    };
    EwsClient::new(config(url, max_concurrency), creds).unwrap()
}

fn client(emu: &EwsEmulator, username: &str, password: &str) -> EwsClient {
    client_at(emu.ews_url(), 2, username, password)
}

/// The CHALLENGEs (and refused AUTHENTICATEs) the emulator answered.
fn challenges(emu: &EwsEmulator) -> usize {
    emu.calls().iter().filter(|c| c.status == 401).count()
}

async fn calls(c: &EwsClient, n: usize) -> Vec<Result<(), EwsError>> {
    futures_util::future::join_all(
        (0..n).map(|_| async { c.call("GetFolder", GET_FOLDER).await.map(|_| ()) }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlm_logs_on_once_per_session_and_a_wrong_password_pauses() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client(&emu, "EXAMPLE\\svc-bridge", "correct horse");
    let answer = c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(answer.name, "GetFolderResponse");
    assert_eq!(challenges(&emu), 1, "{:?}", emu.calls());
    // Later requests of the session go out on its connection, without a
    // header and without another handshake.
    for _ in 0..5 {
        c.call("GetFolder", GET_FOLDER).await.unwrap();
    }
    assert_eq!(challenges(&emu), 1, "{:?}", emu.calls());
    // Counted per exchange: the CHALLENGE's 401, then six 200s.
    let counted = c.calls();
    assert_eq!(counted.get(&("GetFolder".to_owned(), 401u16)), Some(&1));
    assert_eq!(counted.get(&("GetFolder".to_owned(), 200u16)), Some(&6));

    let wrong = client(&emu, "EXAMPLE\\svc-bridge", "wrong");
    let e = wrong.call("GetFolder", GET_FOLDER).await.unwrap_err();
    assert!(e.pauses(), "{e:?}");
    assert_eq!(
        e,
        EwsError::Unauthorized(
            "the NTLM credentials of EXAMPLE\\svc-bridge were refused (401)".into()
        )
    );
    // The CHALLENGE and the refused AUTHENTICATE, once: no retry.
    assert_eq!(challenges(&emu), 3, "{:?}", emu.calls());
    // The password fixed in place (as a changed password_file does).
    wrong.set_password(Secret::new("correct horse"));
    wrong.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 4, "{:?}", emu.calls());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_take_one_challenge_per_session() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client_at(emu.ews_url(), 4, "svc-bridge@example.com", "correct horse");
    // Eight in flight, four at a time: at most four sessions, each logged
    // on once.
    let first = calls(&c, 8).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    let n = challenges(&emu);
    assert!((1..=4).contains(&n), "{n} CHALLENGEs: {:?}", emu.calls());
    // The sessions are reused: a rerun never makes more than four in all
    // (how many the first run needed depends on scheduling; a session is
    // made only when none is idle, so never more than the requests in
    // flight), and one request at a time takes an idle one.
    let again = calls(&c, 8).await;
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    let n = challenges(&emu);
    assert!((1..=4).contains(&n), "{n} CHALLENGEs: {:?}", emu.calls());
    for _ in 0..8 {
        c.call("GetFolder", GET_FOLDER).await.unwrap();
    }
    assert_eq!(challenges(&emu), n, "{:?}", emu.calls());
    let served = emu
        .calls()
        .iter()
        .filter(|x| x.operation.as_deref() == Some("GetFolder"))
        .count();
    assert_eq!(served, 24);
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_closed_after_the_challenge_is_transient_not_a_wrong_password() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client(&emu, "svc-bridge@example.com", "correct horse");
    // The first CHALLENGE closes its connection: the AUTHENTICATE never goes
    // out, the retry logs on on a new connection.
    emu.close_after_challenge(1);
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 2, "{:?}", emu.calls());
    // Every CHALLENGE closes: a transient failure that says why, never a
    // pause.
    emu.close_after_challenge(usize::MAX);
    let d = client(&emu, "svc-bridge@example.com", "correct horse");
    let e = d.call("GetFolder", GET_FOLDER).await.unwrap_err();
    assert!(!e.pauses() && e.is_transient(), "{e:?}");
    assert!(
        e.to_string()
            .contains("did not keep the connection for the NTLM handshake"),
        "{e}"
    );
    // A CHALLENGE per attempt (the first and two retries), and no
    // AUTHENTICATE: it would have gone out on a connection with no
    // CHALLENGE.
    assert_eq!(challenges(&emu), 2 + 3, "{:?}", emu.calls());
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_authenticated_connection_is_authenticated_again() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client(&emu, "EXAMPLE\\svc-bridge", "correct horse");
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 1);
    // The server answers 503 and closes the authenticated connection: the
    // retry authenticates a new one.
    emu.fail_next("/EWS/", 1, FaultKind::Close);
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 2, "{:?}", emu.calls());
    assert_eq!(emu.calls().iter().filter(|x| x.status == 503).count(), 1);
    emu.shutdown().await;
}

/// A front on 127.0.0.1 that relays each connection to `upstream` on a
/// connection of its own (so NTLM's per-connection state holds), after a
/// TLS handshake when it has an acceptor, and can cut every connection it
/// relays (a server or proxy dropping idle connections).
struct Front {
    addr: SocketAddr,
    relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Front {
    async fn start(upstream: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let relays: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let r = Arc::clone(&relays);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let tls = tls.clone();
                // The relay starts once `cut` can see it.
                let (go, listed) = tokio::sync::oneshot::channel::<()>();
                let relay = tokio::spawn(async move {
                    if listed.await.is_err() {
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    match tls {
                        Some(acceptor) => {
                            if let Ok(mut client) = acceptor.accept(client).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        }
                        None => {
                            let mut client = client;
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    }
                });
                r.lock().unwrap().push(relay);
                let _ = go.send(());
            }
        });
        Self {
            addr,
            relays,
            accept,
        }
    }

    /// Closes every relayed connection, both ways.
    fn cut(&self) {
        for relay in self.relays.lock().unwrap().drain(..) {
            relay.abort();
        }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}/EWS/Exchange.asmx", self.addr)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

fn upstream(emu: &EwsEmulator) -> SocketAddr {
    let base = emu.base_url();
    base.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_the_server_closed_is_replaced_and_authenticated() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let front = Front::start(upstream(&emu), None).await;
    let c = client_at(front.url("http"), 1, "EXAMPLE\\svc-bridge", "correct horse");
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 1);
    // The idle authenticated connection goes away. Whether the session
    // notices before sending (a new connection at once) or on the answer
    // that never comes (a retry), the next request logs on on a new one.
    front.cut();
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 2, "{:?}", emu.calls());
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(challenges(&emu), 2, "{:?}", emu.calls());
    drop(front);
    emu.shutdown().await;
}

// The TLS test uses a test-only root and a server certificate it signed
// (P-256, for 127.0.0.1 and localhost, valid 2000 to 2100), made once with
// `openssl ca`; nothing outside this test trusts them.
const ROOT: &str = include_str!("tls/root.pem");
const SERVER: &str = include_str!("tls/server.pem");
const SERVER_KEY: &str = include_str!("tls/server-key.pem");

fn der(pem: &str) -> Vec<u8> {
    pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(der(SERVER_KEY).into());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der(SERVER).into()], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlm_over_tls_logs_on_once_and_checks_the_certificate() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let front = Front::start(upstream(&emu), Some(acceptor())).await;
    let url = front.url("https");
    // The SOAP envelope as the client writes it.
    let envelope = client(&emu, "EXAMPLE\\svc-bridge", "correct horse").envelope(GET_FOLDER);
    let account = Account::parse("EXAMPLE\\svc-bridge", None, Some("BRIDGE01")).unwrap();
    let password = Secret::new("correct horse");
    let statuses = Mutex::new(Vec::new());
    let record = |s: u16| statuses.lock().unwrap().push(s);

    // Not trusted: the webpki roots do not know the test root.
    let untrusted = Sessions::new(account.clone(), &url, Duration::from_secs(10)).unwrap();
    match untrusted.post(&envelope, &[], &password, &record).await {
        Outcome::Answer(Err(e)) => assert!(
            e.detail().contains("certificate") || e.detail().contains("issuer"),
            "{}",
            e.detail()
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(challenges(&emu), 0);

    let sessions = Sessions::new(account, &url, Duration::from_secs(10))
        .unwrap()
        .trusting(&[der(ROOT)])
        .unwrap();
    for _ in 0..3 {
        match sessions.post(&envelope, &[], &password, &record).await {
            Outcome::Answer(Ok(a)) => assert_eq!(a.status, 200, "{a:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(challenges(&emu), 1, "{:?}", emu.calls());
    // Connect failure (0), then the CHALLENGE and three answers.
    assert_eq!(*statuses.lock().unwrap(), [0, 401, 200, 200, 200]);
    drop(front);
    emu.shutdown().await;
}

/// `ca_file`'s roots reach both HTTP paths of the client: reqwest's (Basic)
/// and NTLM's own connections. Without them the test root is unknown and
/// nothing is sent; with them the calls go through.
#[tokio::test(flavor = "multi_thread")]
async fn the_ca_file_roots_are_trusted_by_basic_and_ntlm_alike() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let front = Front::start(upstream(&emu), Some(acceptor())).await;
    let basic = || Credentials::Basic {
        username: "svc-bridge".into(),
        password: Secret::new("correct horse"),
    };
    let ntlm = || Credentials::Ntlm {
        username: "EXAMPLE\\svc-bridge".into(),
        account: Account::parse("EXAMPLE\\svc-bridge", None, Some("BRIDGE01")).unwrap(),
        password: Secret::new("correct horse"),
    };
    for (name, creds) in [("basic", basic as fn() -> Credentials), ("ntlm", ntlm)] {
        let untrusted = EwsClient::new(config(front.url("https"), 2), creds()).unwrap();
        let e = untrusted.call("GetFolder", GET_FOLDER).await.unwrap_err();
        assert!(
            e.to_string().contains("UnknownIssuer") && e.to_string().contains("set ca_file"),
            "{name}: {e}"
        );
        assert!(
            !e.pauses(),
            "{name}: an untrusted certificate is not a password problem"
        );
        let calls = emu.calls().len();
        let trusted = EwsClient::new(
            ClientConfig {
                extra_roots: vec![der(ROOT)],
                ..config(front.url("https"), 2)
            },
            creds(),
        )
        .unwrap();
        let answer = trusted.call("GetFolder", GET_FOLDER).await.unwrap();
        assert_eq!(answer.name, "GetFolderResponse", "{name}");
        assert!(emu.calls().len() > calls, "{name}: reached the server");
    }
    drop(front);
    emu.shutdown().await;
}
