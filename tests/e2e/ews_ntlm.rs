//! The EWS sink with `auth = "ntlm"` end to end: the real binary against
//! the Feishu emulator and the EWS emulator's NTLM (MS-NLMP, per
//! connection). Every request the sink sends is validated against
//! Microsoft's schema (`tests/ews-schema`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_emulators::feishu::{FeishuEmulator, WebhookTarget};

use crate::daemon::Daemon;
use crate::ews::{
    MAILBOX, assert_no_duplicates, assert_same, ews_instances, reconcile, reconcile_ok, schema,
};
use crate::feishu::{bin, temp_dir, write_config};
use crate::replica::{BASE, FROM, TO, feishu, feishu_instances, output, sample_tenant, tenant};

/// A config whose EWS sink logs on with NTLM as `username`, its password
/// in `password_file` (written with `password`); `extra` goes before the
/// sink (daemon settings), `after` after it (another sink).
fn ntlm_config(
    f: &FeishuEmulator,
    fcal: &str,
    e: &EwsEmulator,
    name: &str,
    username: &str,
    password: &str,
    extra: &str,
) -> (PathBuf, PathBuf) {
    let dir = temp_dir(&format!("ews-ntlm-{name}"));
    let password_file = dir.join("ews-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let sink = format!(
        "{extra}\n[[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"{}\"\nmailbox = \"{MAILBOX}\"\n\
         auth = \"ntlm\"\nusername = '{username}'\npassword_file = \"{}\"\nworkstation = \"BRIDGE01\"\n\
         impersonation = true\nfallback_past_days = 1500\n\
         \n[[sinks]]\nkind = \"ics\"\ndir = \"{}\"\n",
        e.ews_url(),
        password_file.display(),
        dir.join("ics").display()
    );
    let config = write_config(&dir, f, &format!("[\"{fcal}\"]"), &sink);
    (config, password_file)
}

async fn check(config: &Path) -> String {
    let mut cmd = bin();
    cmd.args(["check", "--config"]).arg(config);
    let out = output(cmd).await;
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_ntlm_mirrors_the_sample_calendar_and_a_rerun_writes_nothing() {
    let f = feishu(false).await;
    let seeded = sample_tenant(60, None);
    let (_, fcal) = tenant(&f, seeded.clone());
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let (config, _) = ntlm_config(
        &f,
        &fcal,
        &e,
        "mirror",
        "EXAMPLE\\svc-bridge",
        "correct horse",
        "",
    );
    let first = reconcile_ok(&config).await;
    let (created, _, _, _, failed) = first.counts();
    assert!(created > 0 && failed == 0, "{}", first.ctx());
    let expected = feishu_instances(&f, &fcal, &seeded, FROM, TO).await;
    assert_same(&expected, &ews_instances(&e, FROM, TO), "NTLM mirror");
    assert_no_duplicates(&e, "NTLM mirror");
    // The handshake happened (401 with the CHALLENGE), once per session:
    // the sink's sessions own their connections and are at most its
    // `max_concurrency` (4 by default); they carried the rest without one.
    let calls = e.calls();
    let challenges = calls.iter().filter(|c| c.status == 401).count();
    let served = calls.iter().filter(|c| c.operation.is_some()).count();
    assert!(
        (1..=4).contains(&challenges),
        "{challenges} NTLM CHALLENGEs for one sink"
    );
    assert!(
        served > challenges,
        "{served} requests served for {challenges} handshakes"
    );

    let writes = e.write_count();
    let second = reconcile_ok(&config).await;
    let (c, u, d, _, _) = second.counts();
    assert_eq!((c, u, d), (0, 0, 0), "{}", second.ctx());
    assert_eq!(e.write_count(), writes, "the no-op pass wrote to Exchange");

    // A UPN logs on as well; `check` says whose credentials work.
    let (upn_config, _) = ntlm_config(
        &f,
        &fcal,
        &e,
        "upn",
        "svc-bridge@example.com",
        "correct horse",
        "",
    );
    let text = check(&upn_config).await;
    for want in [
        "answers (Exchange 15.1.2507.6)",
        "NTLM credentials of svc-bridge@example.com accepted",
        "calendar of alice@example.com reachable through impersonation",
    ] {
        assert!(text.contains(want), "{want} in:\n{text}");
    }
    let text = check(&config).await;
    assert!(
        text.contains("NTLM credentials of EXAMPLE\\svc-bridge accepted"),
        "{text}"
    );
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_ntlm_wrong_password_pauses_only_this_sink_and_check_says_so() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(20, 9, BASE));
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let (config, _) = ntlm_config(&f, &fcal, &e, "wrong", "EXAMPLE\\svc-bridge", "wrong", "");
    let r = reconcile(&config).await;
    assert_eq!(r.code, 1, "{}", r.ctx());
    let paused = r.sink()["paused"].as_str().unwrap_or_default().to_owned();
    assert!(
        paused.contains("EWS sink ews:ex paused")
            && paused.contains("NTLM credentials of EXAMPLE\\svc-bridge were refused (401)")
            && paused.contains("check the username and password")
            && paused.contains("ews-password changes"),
        "{}",
        r.ctx()
    );
    let ics = config.parent().unwrap().join("ics");
    assert!(
        std::fs::read_dir(&ics).unwrap().count() > 0,
        "the ICS sink wrote"
    );
    assert!(e.items(MAILBOX).is_empty());
    let text = check(&config).await;
    assert!(
        text.contains("credentials refused") && text.contains("NTLM credentials"),
        "{text}"
    );
    f.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_ntlm_connections_closed_after_the_challenge_are_retried_not_paused() {
    let f = feishu(false).await;
    let (_, fcal) = tenant(&f, bridge_core::sample::events(20, 9, BASE));
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    // The first two CHALLENGEs close their connection (a server or proxy
    // that does not keep it for the handshake): the password was never
    // checked, so the sink retries instead of pausing.
    e.close_after_challenge(2);
    let (config, _) = ntlm_config(
        &f,
        &fcal,
        &e,
        "closed",
        "EXAMPLE\\svc-bridge",
        "correct horse",
        "",
    );
    let r = reconcile_ok(&config).await;
    let (created, _, _, _, failed) = r.counts();
    assert!(created > 0 && failed == 0, "{}", r.ctx());
    assert!(r.sink()["paused"].is_null(), "{}", r.ctx());
    // The two closed CHALLENGEs, then at least one that was answered.
    let challenges = e.calls().iter().filter(|c| c.status == 401).count();
    assert!(challenges >= 3, "{challenges} CHALLENGEs");
    assert!(!e.items(MAILBOX).is_empty());
    assert_no_duplicates(&e, "NTLM after dropped handshakes");
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_ntlm_a_fixed_password_file_resumes_the_running_daemon() {
    let f = feishu(true).await;
    let user = f.add_user("Li Lei");
    let fcal = f.primary_calendar(&user);
    f.bulk_load(&fcal, bridge_core::sample::events(30, 5, BASE));
    f.subscribe_events(&user, &fcal);
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let (config, password) = ntlm_config(
        &f,
        &fcal,
        &e,
        "resume",
        "EXAMPLE\\svc-bridge",
        "wrong",
        "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n",
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("delivery = \"poll\"", "delivery = \"webhook\"");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config);
    f.set_webhook(Some(WebhookTarget {
        url: format!("http://{}/webhook/event", daemon.addr),
        encrypt_key: Some("enc-key".into()),
        verification_token: "verify-token".into(),
    }));
    // A refused AUTHENTICATE: a 401 after a CHALLENGE on the connection.
    wait_for("the refused password", Duration::from_secs(20), || {
        e.calls().iter().filter(|c| c.status == 401).count() >= 2
    })
    .await;
    assert!(e.items(MAILBOX).is_empty(), "nothing written while paused");
    std::fs::write(&password, "correct horse\n").unwrap();
    let id = crate::replica::single_event_ids(&f, &fcal)
        .into_iter()
        .next()
        .expect("a single event");
    f.update_event(&fcal, &id, |x| x.summary = Some("After the fix".into()));
    wait_for("the mirror after the fix", Duration::from_secs(30), || {
        e.items(MAILBOX)
            .iter()
            .any(|i| i.fields.subject.as_deref() == Some("After the fix"))
    })
    .await;
    assert!(e.items(MAILBOX).len() > 5, "the whole calendar");
    daemon.stop();
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}
