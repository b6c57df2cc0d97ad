//! Sign-in (throttled), session tokens ([`Sessions`]), and the [`Authed`] extractor every
//! protected handler takes. A token is 32 random bytes, stored only as its SHA-256 under
//! `cloudcam:token:` with an expiry, so any signal instance accepts it and a leaked state dump
//! reveals none. A token names its user's session epoch; the user's record decides, on every
//! request, whether the user is still enabled and the epoch still current, and what role the
//! caller has.

use crate::config::AuthSettings;
use crate::error::ApiError;
pub use crate::users::Caller;
use crate::users::{Role, Users};
use actix_web::{FromRequest, HttpRequest, dev::Payload, http::Method, web};
use cloudcam_core::state::{StateStore, get_json, set_json};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// Failed sign-ins a client address or a user name gets before each further one makes it wait.
const FREE_FAILURES: u32 = 5;
/// The wait doubles per further failure up to this.
const MAX_DELAY_S: u64 = 300;
/// Failures are forgotten after this long without one.
const FAILURE_WINDOW: Duration = Duration::from_secs(900);

fn token_key(token: &str) -> String {
    format!(
        "cloudcam:token:{}",
        hex::encode(Sha256::digest(token.as_bytes()))
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    user: String,
    epoch: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

/// What a successful sign-in returns.
#[derive(Serialize, ToSchema)]
pub struct LoginReply {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub user: String,
    pub role: Role,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Recent failed sign-ins of one client address or user name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Failures {
    count: u32,
    /// No attempt is answered before this (ms since the epoch).
    until_ms: i64,
}

/// Arbitrary input made safe for a log line: no control characters, at most 64 characters.
pub fn loggable(input: &str) -> String {
    let mut s: String = input
        .chars()
        .take(64)
        .flat_map(char::escape_debug)
        .collect();
    if input.chars().count() > 64 {
        s.push('…');
    }
    s
}

/// Sign-in and the tokens it hands out.
#[derive(Clone)]
pub struct Sessions {
    state: Arc<dyn StateStore>,
    users: Users,
    settings: AuthSettings,
}

impl Sessions {
    pub fn new(state: Arc<dyn StateStore>, users: Users, settings: AuthSettings) -> Self {
        Self {
            state,
            users,
            settings,
        }
    }

    /// Signs in from `client` (its address). Answers 429 with `Retry-After` while the address
    /// or the user name is being throttled.
    pub async fn login(&self, client: &str, body: &Login) -> Result<LoginReply, ApiError> {
        let keys = [
            format!("cloudcam:signin-failures:ip:{client}"),
            format!(
                "cloudcam:signin-failures:user:{}",
                hex::encode(&Sha256::digest(body.username.as_bytes())[..16])
            ),
        ];
        let now = cloudcam_core::now_ms();
        for key in &keys {
            let f: Failures = get_json(&*self.state, key).await?.unwrap_or_default();
            if f.until_ms > now {
                return Err(ApiError::Throttled(
                    ((f.until_ms - now) as u64).div_ceil(1000),
                ));
            }
        }
        let Some(user) = self
            .users
            .authenticate(&body.username, &body.password)
            .await?
        else {
            tracing::warn!(user = %loggable(&body.username), %client, "failed sign-in");
            for key in &keys {
                let mut f: Failures = get_json(&*self.state, key).await?.unwrap_or_default();
                f.count += 1;
                if f.count >= FREE_FAILURES {
                    let delay = (1u64 << (f.count - FREE_FAILURES).min(16)).min(MAX_DELAY_S);
                    f.until_ms = now + delay as i64 * 1000;
                }
                set_json(&*self.state, key, &f, Some(FAILURE_WINDOW)).await?;
            }
            return Err(ApiError::BadLogin);
        };
        self.state.del(&keys[1]).await?;
        let token = cloudcam_core::random_hex(32);
        let session = Session {
            user: user.name.clone(),
            epoch: user.epoch,
        };
        set_json(
            &*self.state,
            &token_key(&token),
            &session,
            Some(Duration::from_secs(self.settings.token_ttl_s)),
        )
        .await?;
        tracing::info!(user = %user.name, "signed in");
        Ok(LoginReply {
            token,
            user: user.name,
            role: user.role,
            expires_in: self.settings.token_ttl_s,
        })
    }

    pub async fn logout(&self, authed: &Authed) -> Result<(), ApiError> {
        self.state.del(&token_key(&authed.token)).await?;
        Ok(())
    }

    /// The caller a token stands for now, if it is still valid: the token exists, its user is
    /// enabled and its epoch current.
    pub async fn verify(&self, token: &str) -> Result<Option<Caller>, ApiError> {
        let Some(session) = get_json::<Session>(&*self.state, &token_key(token)).await? else {
            return Ok(None);
        };
        Ok(self
            .users
            .get(&session.user)
            .await?
            .filter(|u| !u.disabled && u.epoch == session.epoch)
            .map(|u| Caller {
                name: u.name,
                role: u.role,
            }))
    }
}

/// A request that carried a valid token: `Authorization: Bearer <token>`, or `?token=` on a
/// request that changes nothing (a browser cannot set headers on a WebSocket, `<img>` or
/// download).
pub struct Authed {
    pub caller: Caller,
    pub token: String,
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
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
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
                .map(|caller| Authed { caller, token })
                .ok_or(ApiError::Unauthorized)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_get_no_control_characters() {
        assert_eq!(loggable("bob\n2026 fake entry"), "bob\\n2026 fake entry");
        assert_eq!(loggable(&"x".repeat(100)).chars().count(), 65);
    }

    #[test]
    fn query_tokens_only_for_requests_that_change_nothing() {
        let get = actix_web::test::TestRequest::get()
            .uri("/api/v1/ws?token=abc")
            .to_http_request();
        assert_eq!(token_of(&get).as_deref(), Some("abc"));
        let delete = actix_web::test::TestRequest::delete()
            .uri("/api/v1/cameras/x?token=abc")
            .to_http_request();
        assert_eq!(token_of(&delete), None);
    }
}
