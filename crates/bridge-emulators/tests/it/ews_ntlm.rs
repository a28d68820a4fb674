//! The EWS emulator's NTLM checked by a client nobody on this project wrote:
//! Python `requests_ntlm` (pyspnego's NTLMv2, with MIC and channel-binding
//! AV pairs the sink does not send) logs on and reads the calendar folder.
//! Installed by `scripts/test.sh` (pip into `target/pyenv`); the test skips
//! a missing client only when `CI` is unset, in CI it fails.

use std::path::PathBuf;

use bridge_emulators::ews::{EwsConfig, EwsEmulator};

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
}

/// The statuses the script printed, one per request; `None` (with a
/// message on stderr) when the client is not installed outside CI.
#[allow(clippy::print_stderr)]
async fn python_client(url: &str, username: &str, password: &str) -> Option<Vec<u16>> {
    let python = repo("target/pyenv/bin/python");
    let usable = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import requests_ntlm"])
            .status()
            .is_ok_and(|s| s.success());
    if !usable {
        assert!(
            std::env::var_os("CI").is_none(),
            "requests_ntlm missing in target/pyenv (scripts/test.sh installs it)"
        );
        eprintln!(
            "SKIPPED: Python requests_ntlm not installed in target/pyenv (run scripts/test.sh)"
        );
        return None;
    }
    let mut cmd = std::process::Command::new(python);
    cmd.arg(repo("tests/ntlm-client/ews_ntlm.py"))
        .args([url, username, password]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        stdout
            .lines()
            .map(|l| l.trim().parse().expect("a status"))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_requests_ntlm_logs_on_and_a_wrong_password_is_refused() {
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let url = e.ews_url();
    let Some(ok) = python_client(&url, "EXAMPLE\\svc-bridge", "correct horse").await else {
        e.shutdown().await;
        return;
    };
    // GetFolder, then a second request on the authenticated session.
    assert_eq!(ok, [200, 200]);
    let upn = python_client(&url, "svc-bridge@example.com", "correct horse")
        .await
        .unwrap();
    assert_eq!(upn, [200, 200]);
    let wrong = python_client(&url, "EXAMPLE\\svc-bridge", "wrong")
        .await
        .unwrap();
    assert_eq!(wrong, [401]);
    let calls = e.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.operation.as_deref() == Some("GetFolder")),
        "the GetFolders were served"
    );
    e.shutdown().await;
}

// ----- per connection, over HTTP (the messages from the `ntlmclient` crate) -----

const GET_FOLDER: &str = r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Header><t:RequestServerVersion Version="Exchange2016"/></s:Header><s:Body><m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder></s:Body></s:Envelope>"#;

/// One TCP connection of its own (hyper's connection-level client), so
/// which connection carries a request is never up to a pool.
struct Conn {
    tx: hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: String,
}

struct Answer {
    status: u16,
    offers: Vec<String>,
    body: String,
}

impl Conn {
    async fn open(url: &str) -> Conn {
        let host = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap()
            .to_owned();
        let stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Conn { tx, host }
    }

    async fn post(&mut self, auth: Option<&str>) -> Answer {
        use http_body_util::BodyExt as _;
        let mut req = hyper::Request::post("/EWS/Exchange.asmx")
            .header("host", &self.host)
            .header("content-type", "text/xml; charset=utf-8");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                GET_FOLDER.as_bytes(),
            )))
            .unwrap();
        self.tx.ready().await.unwrap();
        let resp = self.tx.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let offers = resp
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            offers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

fn negotiate() -> String {
    use base64::Engine as _;
    let m = ntlmclient::Message::Negotiate(ntlmclient::NegotiateMessage {
        flags: ntlmclient::Flags::NEGOTIATE_UNICODE
            | ntlmclient::Flags::NEGOTIATE_NTLM
            | ntlmclient::Flags::NEGOTIATE_NTLM2_KEY
            | ntlmclient::Flags::REQUEST_TARGET,
        supplied_domain: String::new(),
        supplied_workstation: String::new(),
        os_version: Default::default(),
    });
    format!(
        "NTLM {}",
        base64::engine::general_purpose::STANDARD.encode(m.to_bytes().unwrap())
    )
}

fn authenticate(www_authenticate: &str, password: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let bytes = b64
        .decode(www_authenticate.strip_prefix("NTLM ").expect("a challenge"))
        .unwrap();
    let ntlmclient::Message::Challenge(c) =
        ntlmclient::Message::try_from(bytes.as_slice()).unwrap()
    else {
        panic!("not a CHALLENGE")
    };
    let info: Vec<u8> = c
        .target_information
        .iter()
        .flat_map(ntlmclient::TargetInfoEntry::to_bytes)
        .collect();
    let creds = ntlmclient::Credentials {
        username: "svc-bridge".into(),
        password: password.into(),
        domain: "EXAMPLE".into(),
    };
    let r = ntlmclient::respond_challenge_ntlm_v2(
        c.challenge,
        &info,
        ntlmclient::get_ntlm_time(),
        &creds,
    );
    let m = r.to_message(&creds, "WS", c.flags);
    format!("NTLM {}", b64.encode(m.to_bytes().unwrap()))
}

fn challenge_of(a: &Answer) -> String {
    assert_eq!(a.status, 401);
    a.offers
        .iter()
        .find(|v| v.starts_with("NTLM "))
        .expect("an NTLM CHALLENGE")
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlm_authenticates_a_connection_not_a_request() {
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let url = e.ews_url();
    // Without credentials both schemes are offered.
    let r = Conn::open(&url).await.post(None).await;
    assert_eq!(
        (r.status, r.offers.as_slice()),
        (
            401,
            &["NTLM".to_owned(), "Basic realm=\"ews\"".to_owned()][..]
        )
    );

    let mut a = Conn::open(&url).await;
    let mut b = Conn::open(&url).await;
    let challenge = challenge_of(&a.post(Some(&negotiate())).await);
    let token = authenticate(&challenge, "correct horse");
    // The AUTHENTICATE on another connection finds no CHALLENGE there.
    assert_eq!(b.post(Some(&token)).await.status, 401);
    // On the CHALLENGE's own connection it logs on ...
    let r = a.post(Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("NoError"), "{}", r.body);
    // ... and the connection stays authenticated without a header, while
    // another connection is not.
    assert_eq!(a.post(None).await.status, 200);
    assert_eq!(b.post(None).await.status, 401);

    // A wrong password: 401 and a bare `NTLM` offer.
    let mut c = Conn::open(&url).await;
    let challenge = challenge_of(&c.post(Some(&negotiate())).await);
    let r = c.post(Some(&authenticate(&challenge, "wrong"))).await;
    assert_eq!(
        (r.status, r.offers.as_slice()),
        (401, &["NTLM".to_owned()][..])
    );
    e.shutdown().await;
}
