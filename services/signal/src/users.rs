//! The user service: accounts, roles and passwords (argon2id, hashed off the async runtime).
//!
//! Users live in the shared state: the registry `cloudcam:users` (a set of names) and one
//! record per user, `cloudcam:user:<name>`. Each record carries a session epoch: every token
//! names the epoch it was issued in, so changing or resetting a password, disabling the user or
//! "sign out everywhere" bumps it and revokes every token of that user at once, on every signal
//! instance. The bootstrap administrator of the configuration is created on first start.

use crate::error::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use cloudcam_core::state::{StateStore, get_json, set_json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

const REGISTRY: &str = "cloudcam:users";
const MIN_PASSWORD: usize = 8;
/// Longer passwords are refused rather than hashed (a KDF over megabytes is a DoS).
const MAX_PASSWORD: usize = 256;

fn user_key(name: &str) -> String {
    format!("cloudcam:user:{name}")
}

/// What a user may do in general; per camera, shares grant more (see `access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including users and workers.
    Admin,
    /// Adds cameras (which they own) and shares them.
    Member,
    /// Only what is shared with them.
    Viewer,
}

/// Who is calling, as the domain services see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "only an administrator may do this".into(),
            ))
        }
    }
}

/// A stored account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// The argon2id hash in PHC form.
    password_hash: String,
    pub disabled: bool,
    /// Tokens issued in another epoch are void.
    pub epoch: u64,
    pub created_ms: i64,
}

/// A user as the API shows it (never the hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_ms: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            name: u.name.clone(),
            role: u.role,
            disabled: u.disabled,
            created_ms: u.created_ms,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// 1–64 of `a-z 0-9 . _ -`.
    pub name: String,
    pub password: String,
    pub role: Role,
}

/// An administrator's change to a user; a new password or disabling signs the user out
/// everywhere.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
    pub password: Option<String>,
}

/// A user's change of their own password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current: String,
    pub new: String,
}

pub fn check_user_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "invalid_user_name",
            "a user name is 1 to 64 of a-z, 0-9, '.', '_' and '-'".into(),
        ))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if (MIN_PASSWORD..=MAX_PASSWORD).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "weak_password",
            format!("a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ))
    }
}

/// Hashes off the async runtime: argon2 is meant to cost tens of milliseconds of CPU.
async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|e| ApiError::Media(format!("salt: {e}")))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Media(format!("password hash: {e}")))
    })
    .await
    .map_err(|e| ApiError::Media(e.to_string()))?
}

/// Whether `password` matches `phc`; always does the work of one verification.
pub async fn verify_password(phc: Option<String>, password: String) -> bool {
    // A fixed hash for unknown users, so that their sign-in costs what a real one does.
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("salt");
        argon2::Argon2::default()
            .hash_password(b"no such user", &salt)
            .expect("hash")
            .to_string()
    });
    let known = phc.is_some();
    tokio::task::spawn_blocking(move || {
        let phc = phc.unwrap_or_else(|| DUMMY.clone());
        let ok = PasswordHash::new(&phc).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[derive(Clone)]
pub struct Users {
    state: Arc<dyn StateStore>,
}

impl Users {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self { state }
    }

    /// Creates the configured administrator unless a user of that name exists (its password
    /// is then whatever it was last set to).
    pub async fn bootstrap(&self, name: &str, password: &str) -> Result<(), ApiError> {
        if self.get(name).await?.is_some() {
            return Ok(());
        }
        self.insert(CreateUser {
            name: name.into(),
            password: password.into(),
            role: Role::Admin,
        })
        .await
        .map(|_| ())
        .or_else(|e| match e {
            ApiError::Conflict(_) => Ok(()),
            e => Err(e),
        })
    }

    pub async fn get(&self, name: &str) -> Result<Option<User>, ApiError> {
        if check_user_name(name).is_err() {
            return Ok(None);
        }
        Ok(get_json(&*self.state, &user_key(name)).await?)
    }

    pub async fn require(&self, name: &str) -> Result<User, ApiError> {
        self.get(name)
            .await?
            .ok_or_else(|| ApiError::UserNotFound(name.into()))
    }

    /// Every user (administrators only).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<UserView>, ApiError> {
        caller.require_admin()?;
        let mut names = self.state.set_members(REGISTRY).await?;
        names.sort();
        let keys: Vec<String> = names.iter().map(|n| user_key(n)).collect();
        let mut out = Vec::new();
        for (key, raw) in keys.iter().zip(self.state.mget(&keys).await?) {
            if let Some(raw) = raw {
                out.push(UserView::from(&cloudcam_core::state::decode::<User>(
                    key, &raw,
                )?));
            }
        }
        Ok(out)
    }

    /// Adds a user (administrators only).
    pub async fn create(&self, caller: &Caller, body: CreateUser) -> Result<UserView, ApiError> {
        caller.require_admin()?;
        self.insert(body).await
    }

    async fn insert(&self, body: CreateUser) -> Result<UserView, ApiError> {
        check_user_name(&body.name)?;
        check_password(&body.password)?;
        let user = User {
            name: body.name.clone(),
            role: body.role,
            password_hash: hash(body.password).await?,
            disabled: false,
            epoch: 1,
            created_ms: cloudcam_core::now_ms(),
        };
        let raw = serde_json::to_vec(&user).expect("serializable");
        if !self.state.set_nx(&user_key(&user.name), &raw, None).await? {
            return Err(ApiError::Conflict(format!(
                "user {} exists already",
                user.name
            )));
        }
        self.state.set_add(REGISTRY, &user.name).await?;
        tracing::info!(user = %user.name, role = ?user.role, "user created");
        Ok(UserView::from(&user))
    }

    /// An administrator's change. A new password or disabling revokes the user's tokens. An
    /// administrator cannot disable themselves or drop their own role (another one can), so
    /// the last administrator cannot lock everyone out.
    pub async fn update(
        &self,
        caller: &Caller,
        name: &str,
        body: UpdateUser,
    ) -> Result<UserView, ApiError> {
        caller.require_admin()?;
        if caller.name == name
            && (body.disabled == Some(true) || body.role.is_some_and(|r| r != Role::Admin))
        {
            return Err(ApiError::BadRequest(
                "self_lockout",
                "you cannot disable yourself or give up your own administrator role; another \
                 administrator can"
                    .into(),
            ));
        }
        self.apply(name, body).await
    }

    async fn apply(&self, name: &str, body: UpdateUser) -> Result<UserView, ApiError> {
        let mut user = self.require(name).await?;
        if let Some(role) = body.role {
            user.role = role;
        }
        let mut revoke = false;
        if let Some(disabled) = body.disabled {
            revoke |= disabled && !user.disabled;
            user.disabled = disabled;
        }
        if let Some(password) = body.password {
            check_password(&password)?;
            user.password_hash = hash(password).await?;
            revoke = true;
        }
        if revoke {
            user.epoch += 1;
        }
        self.put(&user).await?;
        tracing::info!(user = %name, revoked = revoke, "user changed");
        Ok(UserView::from(&user))
    }

    /// A user's change of their own password, proven by the current one; revokes every token
    /// of theirs (the caller signs in again).
    pub async fn change_password(&self, name: &str, body: ChangePassword) -> Result<(), ApiError> {
        let user = self.require(name).await?;
        if !verify_password(Some(user.password_hash.clone()), body.current).await {
            return Err(ApiError::Forbidden("the current password is wrong".into()));
        }
        self.apply(
            name,
            UpdateUser {
                password: Some(body.new),
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
    }

    /// Signs the user out everywhere (themselves, or anyone for an administrator).
    pub async fn revoke(&self, caller: &Caller, name: &str) -> Result<(), ApiError> {
        if caller.name != name {
            caller.require_admin()?;
        }
        let mut user = self.require(name).await?;
        user.epoch += 1;
        self.put(&user).await?;
        tracing::info!(user = %name, "signed out everywhere");
        Ok(())
    }

    /// The user whose name and password these are, if enabled.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<Option<User>, ApiError> {
        let user = self.get(name).await?;
        let phc = user.as_ref().map(|u| u.password_hash.clone());
        let ok = password.len() <= MAX_PASSWORD && verify_password(phc, password.into()).await;
        Ok(user.filter(|u| ok && !u.disabled))
    }

    async fn put(&self, user: &User) -> Result<(), ApiError> {
        set_json(&*self.state, &user_key(&user.name), user, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcam_core::state::MemoryState;

    #[tokio::test]
    async fn passwords_are_hashed_and_changes_revoke() {
        let users = Users::new(Arc::new(MemoryState::new()));
        users.bootstrap("admin", "correct horse").await.unwrap();
        let admin = users.authenticate("admin", "correct horse").await.unwrap();
        let admin = admin.expect("signs in");
        assert!(admin.password_hash.starts_with("$argon2id$"));
        assert!(
            users
                .authenticate("admin", "wrong one!")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            users
                .authenticate("nobody", "whatever1")
                .await
                .unwrap()
                .is_none()
        );
        users
            .apply(
                "admin",
                UpdateUser {
                    password: Some("battery staple".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let after = users.require("admin").await.unwrap();
        assert_eq!(after.epoch, admin.epoch + 1);
        assert!(
            users
                .authenticate("admin", "correct horse")
                .await
                .unwrap()
                .is_none()
        );
        // Bootstrapping again does not reset the changed password.
        users.bootstrap("admin", "correct horse").await.unwrap();
        assert!(
            users
                .authenticate("admin", "battery staple")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn names_and_passwords_are_checked() {
        let users = Users::new(Arc::new(MemoryState::new()));
        let bad = |name: &str, password: &str| CreateUser {
            name: name.into(),
            password: password.into(),
            role: Role::Viewer,
        };
        let admin = Caller {
            name: "root".into(),
            role: Role::Admin,
        };
        let e = users
            .create(&admin, bad("Bob", "long enough"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_user_name");
        let e = users.create(&admin, bad("bob", "short")).await.unwrap_err();
        assert_eq!(e.code(), "weak_password");
        users
            .create(&admin, bad("bob", "long enough"))
            .await
            .unwrap();
        let e = users
            .create(&admin, bad("bob", "long enough"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "conflict");
        assert_eq!(users.list(&admin).await.unwrap().len(), 1);
        // Only administrators manage users; nobody locks themselves out.
        let bob = Caller {
            name: "bob".into(),
            role: Role::Viewer,
        };
        let e = users
            .create(&bob, bad("eve", "long enough"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden");
        assert_eq!(users.list(&bob).await.unwrap_err().code(), "forbidden");
        users.revoke(&bob, "bob").await.unwrap();
        let e = users.revoke(&bob, "root").await.unwrap_err();
        assert_eq!(e.code(), "forbidden");
        let demote = UpdateUser {
            role: Some(Role::Member),
            ..Default::default()
        };
        let e = users.update(&admin, "root", demote).await.unwrap_err();
        assert_eq!(e.code(), "self_lockout");
    }
}
