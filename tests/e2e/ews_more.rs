//! More of the EWS sink end to end (issue 12, second session): the real
//! binary as a daemon against the Feishu and EWS emulators. Every request
//! the sink sends is validated against Microsoft's schema
//! (`tests/ews-schema`).

use std::time::{Duration, Instant};

use bridge_emulators::ews::{EwsConfig, EwsEmulator};
use bridge_emulators::feishu::{FeishuConfig, FeishuEmulator, WebhookTarget};

use crate::daemon::Daemon;
use crate::feishu::{bin, temp_dir, write_config};

use crate::ews::schema;

const BASE: i64 = 1_760_000_000;
const MAILBOX: &str = "alice@example.com";

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn subjects(e: &EwsEmulator) -> Vec<String> {
    e.items(MAILBOX)
        .into_iter()
        .filter_map(|i| i.fields.subject)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_a_fixed_password_file_resumes_the_running_daemon() {
    let f = FeishuEmulator::start(FeishuConfig {
        aggregation_window: Duration::from_millis(20),
        webhook_retry_schedule: vec![Duration::from_millis(200); 4],
        ..FeishuConfig::default()
    })
    .await
    .unwrap();
    let user = f.add_user("Li Lei");
    let fcal = f.primary_calendar(&user);
    f.bulk_load(&fcal, bridge_core::sample::events(30, 5, BASE));
    f.subscribe_events(&user, &fcal);
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let dir = temp_dir("ews-password-file");
    let password = dir.join("ews-password");
    std::fs::write(&password, "wrong\n").unwrap();
    let extra = format!(
        "encrypt_key = \"enc-key\"\nverification_token = \"verify-token\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [sync]\ndebounce_ms = 20\npoll_seconds = 3600\n\n\
         [[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"{}\"\nmailbox = \"{MAILBOX}\"\n\
         auth = \"basic\"\nusername = \"svc-bridge\"\npassword_file = \"{}\"\nimpersonation = true\n",
        e.ews_url(),
        password.display()
    );
    let config = write_config(&dir, &f, &format!("[\"{fcal}\"]"), &extra);
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
    wait_for("the refused password", Duration::from_secs(20), || {
        e.calls().iter().any(|c| c.status == 401)
    })
    .await;
    assert!(e.items(MAILBOX).is_empty(), "nothing written while paused");
    // The admin fixes the file; the next pass (a pushed change) resumes.
    std::fs::write(&password, "correct horse\n").unwrap();
    let id = crate::replica::single_event_ids(&f, &fcal)
        .into_iter()
        .next()
        .expect("a single event");
    f.update_event(&fcal, &id, |x| x.summary = Some("After the fix".into()));
    wait_for("the mirror after the fix", Duration::from_secs(20), || {
        subjects(&e).iter().any(|s| s == "After the fix")
    })
    .await;
    // The whole calendar, not only the pushed change.
    assert!(e.items(MAILBOX).len() > 5, "{:?}", subjects(&e));
    daemon.stop();
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ews_a_named_folder_is_created_checked_and_mirrored_into() {
    let f = FeishuEmulator::start(FeishuConfig::default())
        .await
        .unwrap();
    let user = f.add_user("Li Lei");
    let fcal = f.primary_calendar(&user);
    f.bulk_load(&fcal, bridge_core::sample::events(30, 6, BASE));
    let e = EwsEmulator::start(EwsConfig::default()).await.unwrap();
    let dir = temp_dir("ews-folder");
    let extra = format!(
        "\n[[sinks]]\nkind = \"ews\"\nname = \"ex\"\nurl = \"{}\"\nmailbox = \"{MAILBOX}\"\n\
         auth = \"basic\"\nusername = \"svc-bridge\"\npassword = \"correct horse\"\nimpersonation = true\n\
         folder = \"Feishu mirror\"\ncreate_folder = true\n",
        e.ews_url()
    );
    let config = write_config(&dir, &f, &format!("[\"{fcal}\"]"), &extra);
    let run = |args: &'static [&'static str]| {
        let mut cmd = bin();
        cmd.args(args).arg("--config").arg(&config);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        }
    };
    let (code, out) = run(&["check"]).await;
    assert!(
        out.contains("calendar folder \"Feishu mirror\" not found; the first run creates it"),
        "exit {code}: {out}"
    );
    let (code, out) = run(&["reconcile"]).await;
    assert_eq!(code, 0, "{out}");
    let folders = e.folders(MAILBOX);
    assert_eq!(folders.len(), 1, "{out}");
    assert_eq!(folders[0].display_name, "Feishu mirror");
    let items = e.items(MAILBOX);
    assert!(!items.is_empty());
    assert!(
        items
            .iter()
            .all(|i| i.folder.as_deref() == Some(folders[0].id.as_str())),
        "every item in the folder"
    );
    let writes = e.write_count();
    let (code, out) = run(&["reconcile"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(e.write_count(), writes, "a rerun wrote: {out}");
    assert_eq!(e.folders(MAILBOX).len(), 1, "created once");
    let (code, out) = run(&["check"]).await;
    assert!(
        out.contains("calendar folder \"Feishu mirror\" found"),
        "exit {code}: {out}"
    );
    schema::assert_valid(&e.request_bodies());
    f.shutdown().await;
    e.shutdown().await;
}
