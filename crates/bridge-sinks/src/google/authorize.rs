//! The authorization capability of a Google sink: `auth google` (an
//! installed-app consent in the browser; a service account needs none), the
//! token the store keeps, the credentials read back from it, and the
//! hand-over of a new token to a running sink.

use super::auth::{Authorization as Pending, CALENDAR_SCOPE, Credentials, InstalledApp, Secret};
use super::config::{Auth, Validated};
use super::sink::{GoogleSink, stored_refresh_token, token_name};
use crate::config::{Authorization, Consent, TokenRefused};

impl Validated {
    /// What `auth google` does for this sink.
    pub fn authorize(&self) -> Authorization {
        match &self.auth {
            Auth::ServiceAccount { key, .. } => Authorization::NotNeeded(format!(
                "Sink {} uses the service account {}: no interactive authorization is needed.",
                self.id, key.client_email
            )),
            Auth::Installed {
                client_id,
                client_secret,
            } => Authorization::Browser {
                token_name: token_name(&self.id),
                consent: Box::new(GoogleConsent {
                    app: InstalledApp {
                        client_id: client_id.clone(),
                        client_secret: Some(client_secret.clone()),
                        auth_url: self.auth_url.clone(),
                        token_url: self.client.token_url.clone(),
                    },
                    pending: None,
                }),
            },
        }
    }

    /// The credentials of the sink: its service account, or the refresh
    /// token in `stored` (the JSON the store keeps; `None`: not authorized).
    pub fn credentials(&self, stored: Option<&str>) -> Option<Credentials> {
        match &self.auth {
            Auth::ServiceAccount { key, subject, .. } => Some(Credentials::ServiceAccount {
                key: key.clone(),
                subject: subject.clone(),
            }),
            Auth::Installed {
                client_id,
                client_secret,
            } => stored
                .and_then(stored_refresh_token)
                .map(|t| Credentials::RefreshToken {
                    client_id: client_id.clone(),
                    client_secret: Some(client_secret.clone()),
                    refresh_token: Secret::new(t),
                }),
        }
    }

    /// The credentials of a token handed over to the running sink (the
    /// daemon's hand-over, while it holds the store), checked before the
    /// token is stored.
    pub fn check_token(&self, json: &str) -> Result<Credentials, TokenRefused> {
        if let Auth::ServiceAccount { .. } = self.auth {
            return Err(TokenRefused::NotUsed(format!(
                "sink {} uses a service account; it takes no refresh token",
                self.id
            )));
        }
        self.credentials(Some(json))
            .ok_or_else(|| TokenRefused::Invalid("empty refresh_token".to_owned()))
    }
}

/// Gives the running `sink` the credentials of [`Validated::check_token`]
/// (once the token is stored); a sink paused for authorization resumes.
pub fn take_token(sink: &GoogleSink, creds: Credentials) -> Result<(), TokenRefused> {
    sink.set_credentials(creds).map_err(|e| {
        TokenRefused::Failed(format!(
            "the token was stored, but the sink did not take it: {e}"
        ))
    })
}

/// A built google sink with its configuration, for the token hand-over.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) sink: std::sync::Arc<GoogleSink>,
    pub(crate) config: Validated,
}

impl crate::config::BuiltTarget for Built {
    fn sink(&self) -> std::sync::Arc<dyn bridge_target::Sink> {
        self.sink.clone()
    }

    fn calls(&self) -> std::collections::BTreeMap<(String, u16), u64> {
        self.sink.calls()
    }

    fn check_token(&self, token: &str) -> Result<crate::config::TakeToken<'_>, TokenRefused> {
        let creds = self.config.check_token(token)?;
        Ok(Box::new(move || take_token(&self.sink, creds)))
    }
}

/// The JSON the store keeps for a refresh token.
pub fn token_json(refresh_token: &str) -> String {
    serde_json::json!({ "refresh_token": refresh_token }).to_string()
}

/// The installed-app consent of one sink.
#[derive(Debug)]
struct GoogleConsent {
    app: InstalledApp,
    pending: Option<Pending>,
}

#[async_trait::async_trait]
impl Consent for GoogleConsent {
    fn start(&mut self, redirect_uri: &str) -> (String, String) {
        let pending = self.app.authorize(redirect_uri, &[CALENDAR_SCOPE]);
        let started = (pending.url.clone(), pending.state.clone());
        self.pending = Some(pending);
        started
    }

    async fn finish(&self, http: &reqwest::Client, code: &str) -> Result<String, String> {
        let Some(pending) = &self.pending else {
            return Err("the consent was not started".to_owned());
        };
        let refresh = self
            .app
            .exchange_code(http, pending, code)
            .await
            .map_err(|e| format!("cannot exchange the code at {}: {e}", self.app.token_url))?;
        Ok(token_json(refresh.expose()))
    }
}
