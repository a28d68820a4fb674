//! The EWS client with NTLM against the EWS emulator (whose NTLM is its
//! own, written from MS-NLMP): a handshake per connection, a wrong password
//! that pauses, and connections dropped mid-handshake that never pass for
//! a wrong password.

use std::time::Duration;

use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_http::{RetryPolicy, Secret};
use bridge_sinks::ews::ntlm::Account;
use bridge_sinks::ews::{ClientConfig, Credentials, EwsClient, EwsError};

const GET_FOLDER: &str = "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id=\"calendar\"/></m:FolderIds></m:GetFolder>";

fn client(emu: &EwsEmulator, username: &str, password: &str) -> EwsClient {
    let cfg = ClientConfig {
        url: emu.ews_url(),
        mailbox: "alice@example.com".into(),
        impersonation: true,
        version: "Exchange2016".into(),
        max_concurrency: 2,
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
    };
    let creds = Credentials::Ntlm {
        username: username.into(),
        account: Account::parse(username, None, Some("BRIDGE01")).unwrap(),
        password: Secret::new(password),
    };
    EwsClient::new(cfg, creds).unwrap()
}

fn status_count(emu: &EwsEmulator, status: u16) -> usize {
    emu.calls().iter().filter(|c| c.status == status).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn ntlm_logs_on_and_a_wrong_password_pauses() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client(&emu, "EXAMPLE\\svc-bridge", "correct horse");
    let answer = c.call("GetFolder", GET_FOLDER).await.unwrap();
    assert_eq!(answer.name, "GetFolderResponse");
    // At least one CHALLENGE. How many more depends on whether reqwest put
    // the connection back in its pool before the AUTHENTICATE (a busy
    // runtime may not have): the sink then handshakes again, and CI under
    // load has seen more than three. The count is not a property to assert.
    assert!(status_count(&emu, 401) >= 1, "a CHALLENGE");
    // Several requests at once: at most one handshake per connection.
    let calls = futures_calls(&c, 6).await;
    assert!(calls.iter().all(Result::is_ok), "{calls:?}");

    let wrong = client(&emu, "EXAMPLE\\svc-bridge", "wrong");
    let e = wrong.call("GetFolder", GET_FOLDER).await.unwrap_err();
    assert!(e.pauses(), "{e:?}");
    assert_eq!(
        e,
        EwsError::Unauthorized(
            "the NTLM credentials of EXAMPLE\\svc-bridge were refused (401)".into()
        )
    );
    // The password fixed in place (as a changed password_file does).
    wrong.set_password(Secret::new("correct horse"));
    wrong.call("GetFolder", GET_FOLDER).await.unwrap();
    emu.shutdown().await;
}

async fn futures_calls(c: &EwsClient, n: usize) -> Vec<Result<(), EwsError>> {
    futures_util::future::join_all(
        (0..n).map(|_| async { c.call("GetFolder", GET_FOLDER).await.map(|_| ()) }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_dropped_mid_handshake_is_not_a_wrong_password() {
    let emu = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let c = client(&emu, "svc-bridge@example.com", "correct horse");
    // The first CHALLENGE closes its connection: the AUTHENTICATE goes out
    // on a new one, is refused there, and the handshake starts over.
    emu.close_after_challenge(1);
    c.call("GetFolder", GET_FOLDER).await.unwrap();
    // CHALLENGE (closed), the refused AUTHENTICATE, the second CHALLENGE.
    assert!(status_count(&emu, 401) >= 3, "{:?}", emu.calls());
    // Every CHALLENGE closes: never a pause, a transient failure.
    emu.close_after_challenge(usize::MAX);
    let d = client(&emu, "svc-bridge@example.com", "correct horse");
    let e = d.call("GetFolder", GET_FOLDER).await.unwrap_err();
    assert!(!e.pauses() && e.is_transient(), "{e:?}");
    emu.shutdown().await;
}
