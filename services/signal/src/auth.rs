//! Sign-in and session tokens ([`Sessions`]), and the [`Authed`] extractor every protected
//! handler takes. The bootstrap administrator comes from configuration; a token is
//! 32 random bytes, stored only as its SHA-256 under `cloudcam:token:` with an expiry, so any
//! signal instance accepts it and a leaked state dump reveals none.

use crate::config::AuthSettings;
use crate::error::ApiError;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use cloudcam_core::state::{StateStore, get_json, set_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

fn token_key(token: &str) -> String {
    format!(
        "cloudcam:token:{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// Compares secrets by their digests, so timing does not reveal a common prefix.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// What a successful sign-in returns.
#[derive(Serialize, ToSchema)]
pub struct LoginReply {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub user: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Sign-in and the tokens it hands out.
#[derive(Clone)]
pub struct Sessions {
    state: Arc<dyn StateStore>,
    settings: AuthSettings,
}

impl Sessions {
    pub fn new(state: Arc<dyn StateStore>, settings: AuthSettings) -> Self {
        Self { state, settings }
    }

    pub async fn login(&self, body: &Login) -> Result<LoginReply, ApiError> {
        let auth = &self.settings;
        if body.username != auth.admin_user || !same_secret(&body.password, &auth.admin_password) {
            tracing::warn!(user = %body.username, "failed sign-in");
            return Err(ApiError::BadLogin);
        }
        let token = cloudcam_core::random_hex(32);
        let session = Session {
            user: body.username.clone(),
        };
        set_json(
            &*self.state,
            &token_key(&token),
            &session,
            Some(Duration::from_secs(auth.token_ttl_s)),
        )
        .await?;
        tracing::info!(user = %session.user, "signed in");
        Ok(LoginReply {
            token,
            user: session.user,
            expires_in: auth.token_ttl_s,
        })
    }

    pub async fn logout(&self, authed: &Authed) -> Result<(), ApiError> {
        self.state.del(&token_key(&authed.token)).await?;
        Ok(())
    }

    async fn verify(&self, token: &str) -> Result<Option<Session>, ApiError> {
        Ok(get_json(&*self.state, &token_key(token)).await?)
    }
}

/// A request that carried a valid token: `Authorization: Bearer <token>`, or `?token=` for the
/// WebSocket (browsers cannot set headers on it).
pub struct Authed {
    pub session: Session,
    token: String,
}

fn token_of(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        && let Some(t) = h.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let sessions = req.app_data::<web::Data<Sessions>>().cloned();
        let token = token_of(req);
        Box::pin(async move {
            let (Some(sessions), Some(token)) = (sessions, token) else {
                return Err(ApiError::Unauthorized);
            };
            sessions
                .verify(&token)
                .await?
                .map(|session| Authed { session, token })
                .ok_or(ApiError::Unauthorized)
        })
    }
}
