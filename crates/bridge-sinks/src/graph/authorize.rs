//! `feishu-bridge auth graph`: delegated use for one person, an
//! authorization code with PKCE through a loopback redirect (the `oauth2`
//! crate makes the verifier, challenge and state), the refresh token kept in
//! the store like Google's, and its hand-over to a running sink. App-only
//! sinks need no authorization.

use oauth2::{CsrfToken, PkceCodeChallenge};

use super::auth::DELEGATED_SCOPE;
use super::config::{Auth, Validated};
use super::sink::GraphSink;
use super::token_name;
use crate::config::{Authorization, Consent, TokenRefused};

impl Validated {
    /// What `auth graph` does for this sink.
    pub fn authorize(&self) -> Authorization {
        match &self.auth {
            Auth::Delegated { secret } => Authorization::Browser {
                token_name: token_name(&self.id),
                consent: Box::new(GraphConsent {
                    client_id: self.client_id.clone(),
                    secret: secret.as_ref().map(|s| s.expose().to_owned()),
                    auth_url: self.auth_url.clone(),
                    token_url: self.token_url.clone(),
                    pending: None,
                }),
            },
            _ => Authorization::NotNeeded(format!(
                "Sink {} uses the application permissions of app {} (client credentials): no interactive authorization is needed.",
                self.id, self.client_id
            )),
        }
    }

    /// Checks a token handed over to the running sink.
    pub fn check_token(&self, json: &str) -> Result<super::Credentials, TokenRefused> {
        if !matches!(self.auth, Auth::Delegated { .. }) {
            return Err(TokenRefused::NotUsed(format!(
                "sink {} uses application permissions; it takes no refresh token",
                self.id
            )));
        }
        self.credentials(Some(json))
            .ok_or_else(|| TokenRefused::Invalid("empty refresh_token".to_owned()))
    }
}

/// Gives the running sink a client with the handed-over credentials.
pub fn take_token(
    sink: &GraphSink,
    config: &Validated,
    creds: super::Credentials,
) -> Result<(), TokenRefused> {
    let client = config.client(creds, None).map_err(|e| {
        TokenRefused::Failed(format!(
            "the token was stored, but the sink did not take it: {e}"
        ))
    })?;
    sink.set_client(client);
    Ok(())
}

/// A built graph sink with its configuration, for the token hand-over.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) sink: std::sync::Arc<GraphSink>,
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
        Ok(Box::new(move || {
            take_token(&self.sink, &self.config, creds)
        }))
    }
}

/// The JSON the store keeps.
pub fn token_json(refresh_token: &str) -> String {
    serde_json::json!({ "refresh_token": refresh_token }).to_string()
}

#[derive(Debug)]
struct Pending {
    verifier: String,
    redirect_uri: String,
}

/// One consent of a delegated sink.
#[derive(Debug)]
struct GraphConsent {
    client_id: String,
    secret: Option<String>,
    auth_url: String,
    token_url: String,
    pending: Option<Pending>,
}

#[async_trait::async_trait]
impl Consent for GraphConsent {
    fn start(&mut self, redirect_uri: &str) -> (String, String) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = CsrfToken::new_random().secret().clone();
        let q = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", DELEGATED_SCOPE)
            .append_pair("state", &state)
            .append_pair("code_challenge", challenge.as_str())
            .append_pair("code_challenge_method", "S256")
            .finish();
        self.pending = Some(Pending {
            verifier: verifier.secret().clone(),
            redirect_uri: redirect_uri.to_owned(),
        });
        (format!("{}?{q}", self.auth_url), state)
    }

    async fn finish(&self, http: &reqwest::Client, code: &str) -> Result<String, String> {
        let Some(p) = &self.pending else {
            return Err("the consent was not started".to_owned());
        };
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", self.client_id.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", p.redirect_uri.clone()),
            ("code_verifier", p.verifier.clone()),
            ("scope", DELEGATED_SCOPE.to_owned()),
        ];
        if let Some(s) = &self.secret {
            form.push(("client_secret", s.clone()));
        }
        let resp = http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "token endpoint {}: {}",
                    self.token_url,
                    bridge_http::error_chain(&e)
                )
            })?;
        let status = resp.status().as_u16();
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("token endpoint answer ({status}): {e}"))?;
        if status != 200 {
            return Err(format!(
                "the token endpoint refused the code ({status} {}: {})",
                v["error"].as_str().unwrap_or(""),
                v["error_description"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
        let refresh = v["refresh_token"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(
                "the token endpoint answered without a refresh_token (is offline_access granted?)",
            )?;
        Ok(token_json(refresh))
    }
}
