//! Sign-in (throttled), session tokens ([`Sessions`]), and the [`Authed`] extractor every
//! protected handler takes. A token is 32 random bytes, stored only as its SHA-256 under
//! `cloudcam:token:` with an expiry, so any signal instance accepts it and a leaked state dump
//! reveals none. A token names its user's session epoch; the user's record decides, on every
//! request, whether the user is still enabled and the epoch still current, and what role the
//! caller has.
//!
//! Where a browser cannot send a header (an `<img>`, a download link, the WebSocket), it asks
//! for a signed URL instead ([`Sessions::sign`]): the path of one resource, the user, their
//! session epoch and an expiry minutes away, under an HMAC-SHA256 with a key every signal
//! instance shares (created once in the shared state). Tokens are never accepted in a query.

use crate::config::AuthSettings;
use crate::error::ApiError;
pub use crate::users::Caller;
use crate::users::{Role, Users};
use actix_web::{FromRequest, HttpRequest, dev::Payload, http::Method, web};
use cloudcam_core::state::{StateStore, get_json, set_json};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// Failed sign-ins a client address or a user name gets before each further one makes it wait.
const FREE_FAILURES: i64 = 5;
/// The wait doubles per further failure up to this.
const MAX_DELAY_S: u64 = 300;
/// Failures are forgotten this long after the first of them.
const FAILURE_WINDOW: Duration = Duration::from_secs(900);

/// The URL-signing key every signal instance uses.
const SIGNING_KEY: &str = "cloudcam:url-signing-key";

/// Paths a signed URL may be made for: what a browser fetches without headers.
fn signable(path: &str) -> bool {
    if path == "/api/v1/ws" {
        return true;
    }
    let Some(rest) = path.strip_prefix("/api/v1/cameras/") else {
        return false;
    };
    matches!(
        rest.split_once('/'),
        Some((id, "snapshot" | "clip")) if !id.is_empty() && !id.contains('/')
    )
}

/// How a secret handed out (a token, an enrollment token, an agent credential) is stored: its
/// SHA-256, in hex.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn token_key(token: &str) -> String {
    format!("cloudcam:token:{}", sha256_hex(token))
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

/// The wait after `failures` failed sign-ins (from the `FREE_FAILURES`th on): 1 s, doubling
/// per further failure, up to `MAX_DELAY_S`.
fn delay_after(failures: i64) -> Duration {
    let doublings = (failures - FREE_FAILURES).clamp(0, 16) as u32;
    Duration::from_secs((1u64 << doublings).min(MAX_DELAY_S))
}

/// One client address or user name being counted: its failure counter (an atomic counter
/// with an expiry) and the key that holds when its next attempt may come (ms since the epoch).
struct Throttle {
    count: String,
    until: String,
}

impl Throttle {
    fn new(subject: &str) -> Self {
        Self {
            count: format!("cloudcam:signin-failures:{subject}"),
            until: format!("cloudcam:signin-wait:{subject}"),
        }
    }
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

/// What a signed URL request names.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// The path to sign: `/api/v1/ws`, `/api/v1/cameras/{id}/snapshot` or
    /// `/api/v1/cameras/{id}/clip`.
    pub path: String,
}

/// A URL that works without a header until it expires (minutes).
#[derive(Serialize, ToSchema)]
pub struct SignedUrl {
    /// The path with its signature (`?user=…&exp=…&sig=…`); append further query parameters
    /// (`&from=…&to=…` for a clip) after it.
    pub url: String,
    pub expires_at_ms: i64,
}

/// Sign-in and the tokens it hands out.
#[derive(Clone)]
pub struct Sessions {
    state: Arc<dyn StateStore>,
    users: Users,
    settings: AuthSettings,
    signing_key: Arc<tokio::sync::OnceCell<Vec<u8>>>,
}

/// What a request authenticated with: a session token, or a signed URL for one user and epoch.
#[derive(Clone)]
pub enum Credential {
    Token(String),
    Signed { user: String, epoch: u64 },
}

impl Sessions {
    pub fn new(state: Arc<dyn StateStore>, users: Users, settings: AuthSettings) -> Self {
        Self {
            state,
            users,
            settings,
            signing_key: Default::default(),
        }
    }

    async fn key(&self) -> Result<&[u8], ApiError> {
        let key =
            self.signing_key
                .get_or_try_init(|| async {
                    let fresh = cloudcam_core::random_hex(32).into_bytes();
                    self.state.set_nx(SIGNING_KEY, &fresh, None).await?;
                    self.state.get(SIGNING_KEY).await?.ok_or_else(|| {
                        ApiError::Busy("the URL-signing key is being created".into())
                    })
                })
                .await?;
        Ok(key)
    }

    fn mac(key: &[u8], user: &str, epoch: u64, path: &str, exp: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(format!("{user}\n{epoch}\n{path}\n{exp}").as_bytes());
        mac
    }

    /// A URL for `path` that authenticates as `caller` for the configured minutes. What the
    /// caller may do there is decided when it is used, as for a token.
    pub async fn sign(&self, caller: &Caller, path: &str) -> Result<SignedUrl, ApiError> {
        if !signable(path) {
            return Err(ApiError::BadRequest(
                "not_signable",
                "only /api/v1/ws and a camera's snapshot or clip can be signed".into(),
            ));
        }
        let user = self.users.require(&caller.name).await?;
        let exp = cloudcam_core::now_ms() + self.settings.signed_url_ttl_s as i64 * 1000;
        let sig = hex::encode(
            Self::mac(self.key().await?, &user.name, user.epoch, path, exp)
                .finalize()
                .into_bytes(),
        );
        let name: String = url::form_urlencoded::byte_serialize(user.name.as_bytes()).collect();
        Ok(SignedUrl {
            url: format!("{path}?user={name}&exp={exp}&sig={sig}"),
            expires_at_ms: exp,
        })
    }

    /// The caller a signed URL stands for (and its credential, for re-checks), if its
    /// signature holds, it has not expired and its user is enabled. One read of the user.
    async fn verify_signed(
        &self,
        path: &str,
        user: &str,
        exp: i64,
        sig: &str,
    ) -> Result<Option<(Caller, Credential)>, ApiError> {
        if exp < cloudcam_core::now_ms() || !signable(path) {
            return Ok(None);
        }
        let (Ok(sig), Some(u)) = (hex::decode(sig), self.users.get(user).await?) else {
            return Ok(None);
        };
        if Self::mac(self.key().await?, user, u.epoch, path, exp)
            .verify_slice(&sig)
            .is_err()
        {
            return Ok(None);
        }
        let epoch = u.epoch;
        Ok(current_caller(u, epoch).map(|caller| {
            let credential = Credential::Signed {
                user: caller.name.clone(),
                epoch,
            };
            (caller, credential)
        }))
    }

    /// Signs in from `client` (its address). Answers 429 with `Retry-After` while the address
    /// or the user name is being throttled.
    /// Seconds until `t` may try again, if it must wait.
    async fn waiting(&self, t: &Throttle, now: i64) -> Result<Option<u64>, ApiError> {
        let until = self
            .state
            .get(&t.until)
            .await?
            .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok());
        Ok(until
            .filter(|u| *u > now)
            .map(|u| ((u - now) as u64).div_ceil(1000)))
    }

    pub async fn login(&self, client: &str, body: &Login) -> Result<LoginReply, ApiError> {
        let subjects = [
            Throttle::new(&format!("ip:{client}")),
            Throttle::new(&format!(
                "user:{}",
                hex::encode(&Sha256::digest(body.username.as_bytes())[..16])
            )),
        ];
        let now = cloudcam_core::now_ms();
        // Each attempt is counted before its password is checked, as if it failed, so that
        // attempts sent in parallel cannot all slip under the limit: past the free ones, only
        // the one attempt that claims the wait key goes ahead per delay. A refused attempt and
        // a success take their count back.
        let mut counts = Vec::new();
        for t in &subjects {
            let mut wait = self.waiting(t, now).await?;
            if wait.is_none() {
                let n = self
                    .state
                    .incr_by(&t.count, 1, Some(FAILURE_WINDOW))
                    .await?;
                counts.push(n);
                if n > FREE_FAILURES {
                    let delay = delay_after(n - 1);
                    let until = (now + delay.as_millis() as i64).to_string();
                    if !self
                        .state
                        .set_nx(&t.until, until.as_bytes(), Some(delay))
                        .await?
                    {
                        wait = Some(self.waiting(t, now).await?.unwrap_or(1));
                    }
                }
            }
            if let Some(wait) = wait {
                for t in subjects.iter().take(counts.len()) {
                    self.state.incr_by(&t.count, -1, None).await?;
                }
                return Err(ApiError::Throttled(wait.max(1)));
            }
        }
        let Some(user) = self
            .users
            .authenticate(&body.username, &body.password)
            .await?
        else {
            tracing::warn!(user = %loggable(&body.username), %client, "failed sign-in");
            for (t, n) in subjects.iter().zip(&counts) {
                if *n >= FREE_FAILURES {
                    let delay = delay_after(*n);
                    let until = now + delay.as_millis() as i64;
                    self.state
                        .set(&t.until, until.to_string().as_bytes(), Some(delay))
                        .await?;
                }
            }
            return Err(ApiError::BadLogin);
        };
        // The user name's failures are forgotten; the address keeps its earlier ones (a valid
        // account does not reset an address that guesses at others).
        self.state.del(&subjects[1].count).await?;
        self.state.del(&subjects[1].until).await?;
        self.state.incr_by(&subjects[0].count, -1, None).await?;
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
        if let Credential::Token(token) = &authed.credential {
            self.state.del(&token_key(token)).await?;
        }
        Ok(())
    }

    /// The caller a credential stands for now, if it is still valid: the token exists (a
    /// signed URL was checked when it was used), its user is enabled and its epoch current.
    pub async fn verify(&self, credential: &Credential) -> Result<Option<Caller>, ApiError> {
        let session = match credential {
            Credential::Token(token) => {
                match get_json::<Session>(&*self.state, &token_key(token)).await? {
                    Some(s) => s,
                    None => return Ok(None),
                }
            }
            Credential::Signed { user, epoch } => Session {
                user: user.clone(),
                epoch: *epoch,
            },
        };
        Ok(self
            .users
            .get(&session.user)
            .await?
            .and_then(|u| current_caller(u, session.epoch)))
    }
}

/// The caller `user` is for a credential of `epoch`: none when the user is disabled or the
/// epoch is no longer current.
fn current_caller(user: crate::users::User, epoch: u64) -> Option<Caller> {
    (!user.disabled && user.epoch == epoch).then_some(Caller {
        name: user.name,
        role: user.role,
    })
}

/// A request that carried a valid credential: `Authorization: Bearer <token>`, or a signed
/// URL on a request that changes nothing.
pub struct Authed {
    pub caller: Caller,
    pub credential: Credential,
}

/// What a request presents: a bearer token, or a signed URL's user, expiry and signature.
#[derive(Debug, PartialEq)]
enum Presented {
    Bearer(String),
    Signed { user: String, exp: i64, sig: String },
}

fn presented(req: &HttpRequest) -> Option<Presented> {
    if let Some(h) = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        && let Some(t) = h.strip_prefix("Bearer ")
    {
        return Some(Presented::Bearer(t.trim().to_string()));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let (mut user, mut exp, mut sig) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        match &*k {
            "user" => user = Some(v.into_owned()),
            "exp" => exp = v.parse().ok(),
            "sig" => sig = Some(v.into_owned()),
            _ => {}
        }
    }
    Some(Presented::Signed {
        user: user?,
        exp: exp?,
        sig: sig?,
    })
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let sessions = req.app_data::<web::Data<Sessions>>().cloned();
        let presented = presented(req);
        let path = req.path().to_owned();
        Box::pin(async move {
            let (Some(sessions), Some(presented)) = (sessions, presented) else {
                return Err(ApiError::Unauthorized);
            };
            let authed = match presented {
                Presented::Bearer(token) => {
                    let credential = Credential::Token(token);
                    sessions
                        .verify(&credential)
                        .await?
                        .map(|caller| Authed { caller, credential })
                }
                Presented::Signed { user, exp, sig } => sessions
                    .verify_signed(&path, &user, exp, &sig)
                    .await?
                    .map(|(caller, credential)| Authed { caller, credential }),
            };
            authed.ok_or(ApiError::Unauthorized)
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
    fn no_query_tokens_and_signatures_only_for_requests_that_change_nothing() {
        let token = actix_web::test::TestRequest::get()
            .uri("/api/v1/ws?token=abc")
            .to_http_request();
        assert_eq!(presented(&token), None);
        let signed = "/api/v1/cameras/x/snapshot?user=bob&exp=5&sig=ab";
        let get = actix_web::test::TestRequest::get()
            .uri(signed)
            .to_http_request();
        assert_eq!(
            presented(&get),
            Some(Presented::Signed {
                user: "bob".into(),
                exp: 5,
                sig: "ab".into()
            })
        );
        let delete = actix_web::test::TestRequest::delete()
            .uri(signed)
            .to_http_request();
        assert_eq!(presented(&delete), None);
    }

    #[tokio::test]
    async fn parallel_guesses_do_not_slip_past_the_throttle() {
        let state: Arc<dyn StateStore> = Arc::new(cloudcam_core::state::MemoryState::new());
        let users = Users::new(state.clone());
        users.bootstrap("admin", "the-right-one").await.unwrap();
        let sessions = Sessions::new(state, users, AuthSettings::default());
        let guess = |i: usize| {
            let sessions = sessions.clone();
            async move {
                let body = Login {
                    username: "admin".into(),
                    password: format!("guess-{i}"),
                };
                // Each from its own address: only the user name's throttle applies.
                sessions.login(&format!("10.0.0.{i}"), &body).await
            }
        };
        let answers = futures::future::join_all((0..30).map(guess)).await;
        let checked = answers
            .iter()
            .filter(|a| matches!(a, Err(ApiError::BadLogin)))
            .count();
        let throttled = answers
            .iter()
            .filter(|a| matches!(a, Err(ApiError::Throttled(_))))
            .count();
        // The free attempts, plus the one that claimed the first wait.
        assert!(
            checked <= FREE_FAILURES as usize + 1,
            "{checked} guesses were checked"
        );
        assert_eq!(checked + throttled, 30);
    }

    #[test]
    fn only_header_less_resources_can_be_signed() {
        assert!(signable("/api/v1/ws"));
        assert!(signable("/api/v1/cameras/abc/snapshot"));
        assert!(signable("/api/v1/cameras/abc/clip"));
        assert!(!signable("/api/v1/cameras/abc"));
        assert!(!signable("/api/v1/cameras//clip"));
        assert!(!signable("/api/v1/cameras/a/b/clip"));
        assert!(!signable("/api/v1/users"));
    }
}
