use std::path::Path;

use super::*;

/// Validates `toml` (a `kind = "google"` table without `kind`) as
/// `sinks[2]` of /etc/fb/bridge.toml, with `files` as the file system.
fn validate(toml: &str, files: &[(&str, &str)]) -> Result<Validated, Vec<String>> {
    let read = |p: &Path| {
        files
            .iter()
            .find(|(name, _)| Path::new(name) == p)
            .map(|(_, text)| (*text).to_owned())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    let ctx = Ctx::new("sinks[2]", Path::new("/etc/fb"), &read);
    let config: Config = serde_json::from_value(serde_json::from_str(toml).unwrap()).unwrap();
    config.validate(&ctx)
}

const KEY: &str = r#"{"type": "service_account", "client_email": "sa@p.iam.gserviceaccount.com",
    "private_key": "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"}"#;

#[test]
fn a_secret_file_is_read_relative_to_the_config_and_never_shown() {
    let v = validate(
        r#"{"calendar_id": "primary", "client_id": "c", "client_secret_file": "gsecret"}"#,
        &[("/etc/fb/gsecret", "s3cret\n")],
    )
    .unwrap();
    assert!(
        matches!(&v.auth, Auth::Installed { client_secret, .. } if client_secret.expose() == "s3cret")
    );
    assert!(!format!("{v:?}").contains("s3cret"));
    assert_eq!(v.token_name().as_deref(), Some("google_refresh:google"));
    assert!(v.credentials(None).is_none(), "not authorized yet");
    assert!(
        v.credentials(Some(r#"{"refresh_token": "r"}"#)).is_some(),
        "the stored token is read back"
    );
    assert_eq!(
        v.check_token(r#"{"refresh_token": ""}"#).unwrap_err(),
        crate::config::TokenRefused::Invalid("empty refresh_token".into())
    );
}

#[test]
fn the_service_account_key_is_read_through_the_context() {
    let all = validate(
        r#"{"create_calendars": true, "service_account_key_file": "key.json"}"#,
        &[("/etc/fb/key.json", KEY)],
    );
    // The key text is not an RSA key: the problem names the file.
    match all {
        Ok(v) => assert!(matches!(v.auth, Auth::ServiceAccount { .. })),
        Err(p) => assert!(
            p.iter()
                .all(|p| p.starts_with("sinks[2].service_account_key_file: /etc/fb/key.json: ")),
            "{p:?}"
        ),
    }
    let p = validate(
        r#"{"create_calendars": true, "service_account_key_file": "gone.json"}"#,
        &[],
    )
    .unwrap_err();
    assert_eq!(
        p,
        ["sinks[2].service_account_key_file: cannot read /etc/fb/gone.json: entity not found"]
    );
}
