//! One rule for relative paths: relative to the configuration file's
//! directory, whatever the working directory (issue 16, item 2).

use crate::feishu::{bin, emulator, event, temp_dir};

#[tokio::test(flavor = "multi_thread")]
async fn relative_paths_resolve_against_the_config_file_from_any_working_directory() {
    let emu = emulator().await;
    let cal = emu.create_calendar("Team");
    emu.create_event(&cal, event("Planning", 1_760_000_000));
    let dir = temp_dir("paths");
    let conf_dir = dir.join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("secret.txt"), emu.config().app_secret).unwrap();
    let c = emu.config();
    let config = conf_dir.join("feishu-bridge.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"state/bridge.redb\"\n\n[feishu]\nbase_url = \"{}\"\n\
             app_id = \"{}\"\napp_secret_file = \"secret.txt\"\ncalendars = [\"{cal}\"]\n\
             delivery = \"poll\"\n\n[[sinks]]\nkind = \"ics\"\ndir = \"out/ics\"\n",
            emu.base_url(),
            c.app_id,
        ),
    )
    .unwrap();
    // Run from another directory, with the config named relatively to it.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = |args: &'static [&'static str]| {
        let mut cmd = bin();
        cmd.current_dir(&elsewhere)
            .args(args)
            .arg("--config")
            .arg("../etc/feishu-bridge.toml");
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    let out = run(&["reconcile"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        conf_dir.join("state/bridge.redb").is_file(),
        "store beside the config"
    );
    assert!(
        conf_dir.join("out/ics").read_dir().unwrap().count() > 0,
        "ICS files beside the config"
    );
    assert_eq!(
        elsewhere.read_dir().unwrap().count(),
        0,
        "nothing is written in the working directory"
    );
    // `check` shows where the paths resolved.
    let out = run(&["check"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let real = conf_dir.canonicalize().unwrap();
    let store_line = format!(
        "ok    store: {} opens",
        real.join("state/bridge.redb").display()
    );
    assert!(stdout.contains(&store_line), "{stdout}");
    let ics_line = format!("{} is writable", real.join("out/ics").display());
    assert!(stdout.contains(&ics_line), "{stdout}");
    emu.shutdown().await;
}
