//! Edge sites: places whose cameras the cloud cannot reach (behind NAT, no inbound port), each
//! served by one edge agent (`cloudcam-edge`) that dials out to signal and pushes the site's
//! cameras to their ingest workers while they are wanted.
//!
//! A site is made by a member or an administrator, who is given a one-time **enrollment
//! token** (shown once, valid for an hour, stored only as its SHA-256). The agent trades it
//! for the site's **agent credential** (`<site id>.<secret>`, stored as its SHA-256), which it
//! keeps and presents on every connection. Making a new enrollment token lets a new agent
//! replace the old one; revoking ends the agent's credential (its connection closes within a
//! second) and, through [`crate::cameras::Cameras::revoke_site`], every push credential it was
//! given. The site's owner and administrators see and manage it.
//!
//! Keys: `cloudcam:sites` (set of ids), `cloudcam:site:<id>` (the record),
//! `cloudcam:user-sites:<name>` (a member's sites), `cloudcam:site-cameras:<id>` (set of
//! camera ids), `cloudcam:enroll-token:<sha256>` (site id, with expiry),
//! `cloudcam:site-agent:<id>` (the connected agent's presence, with expiry, refreshed by the
//! signal instance holding its connection).

use crate::auth::sha256_hex as sha256;
use crate::error::ApiError;
use crate::users::{Caller, Role};
use cloudcam_core::state::StateStore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

const SITES: &str = "cloudcam:sites";
/// The most sites one member (or administrator) may own.
pub const MAX_SITES_PER_OWNER: usize = 100;
/// How long an enrollment token is good for.
pub const ENROLL_TTL: Duration = Duration::from_secs(3600);
/// How long an agent's presence outlives its last refresh (refreshed every second while its
/// connection lives; deleted when it closes).
pub const PRESENCE_TTL: Duration = Duration::from_secs(5);

fn site_key(id: &str) -> String {
    format!("cloudcam:site:{id}")
}
fn user_sites_key(user: &str) -> String {
    format!("cloudcam:user-sites:{user}")
}
fn site_cameras_key(id: &str) -> String {
    format!("cloudcam:site-cameras:{id}")
}
fn enroll_key(token: &str) -> String {
    format!("cloudcam:enroll-token:{}", sha256(token))
}
fn presence_key(id: &str) -> String {
    format!("cloudcam:site-agent:{id}")
}

/// A site as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteRecord {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub created_ms: i64,
    /// SHA-256 of the enrolled agent's credential; empty while no agent is enrolled (never
    /// enrolled, or revoked).
    #[serde(default)]
    pub credential_sha256: String,
    #[serde(default)]
    pub enrolled_ms: i64,
}

impl SiteRecord {
    fn authorize(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.is_admin() || self.owner == caller.name {
            Ok(())
        } else {
            Err(ApiError::SiteNotFound(self.id.clone()))
        }
    }
}

/// The connected agent, as the signal instance holding its connection last wrote it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentPresence {
    /// The agent's version.
    pub version: String,
    /// Where it connected from.
    pub address: String,
    pub connected_ms: i64,
    pub updated_ms: i64,
    /// The cameras it pushes now.
    pub pushing: Vec<String>,
    /// Cameras it was asked to push but cannot, and why (never a credential or URL).
    #[serde(default)]
    pub failing: HashMap<String, String>,
    /// Its uplink's use by pushes, bits per second.
    pub uplink_bps: u64,
    /// Tells the connections of one site apart (a newer one replaces an older one); kept in
    /// the shared state, never shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub session: String,
}

/// A one-time enrollment token and the command that uses it (shown once).
#[derive(Clone, Serialize, ToSchema)]
pub struct Enrollment {
    pub token: String,
    pub expires_ms: i64,
    /// What to run on the site.
    pub command: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("token", &"<redacted>")
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// A site as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteView {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub created_ms: i64,
    /// An agent holds a valid credential for the site.
    pub enrolled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrolled_ms: Option<i64>,
    /// Its agent is connected now.
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentPresence>,
    /// The site's cameras.
    pub cameras: Vec<String>,
    /// Only in the answer that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment: Option<Enrollment>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    pub name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    #[serde(default)]
    pub version: String,
}

/// What an agent gets for its enrollment token: its credential, once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Enrolled {
    pub site_id: String,
    pub site_name: String,
    /// Presented as `Authorization: Bearer <credential>` on the agent's connection.
    pub credential: String,
}

#[derive(Clone)]
pub struct Sites {
    state: Arc<dyn StateStore>,
}

impl Sites {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self { state }
    }

    async fn record(&self, id: &str) -> Result<Option<SiteRecord>, ApiError> {
        Ok(cloudcam_core::state::get_json(&*self.state, &site_key(id)).await?)
    }

    async fn put(&self, site: &SiteRecord) -> Result<(), ApiError> {
        Ok(cloudcam_core::state::set_json(&*self.state, &site_key(&site.id), site, None).await?)
    }

    /// The site if `caller` may manage it (its owner, administrators); else `site_not_found`.
    pub async fn authorize(&self, caller: &Caller, id: &str) -> Result<SiteRecord, ApiError> {
        let site = self
            .record(id)
            .await?
            .ok_or_else(|| ApiError::SiteNotFound(id.into()))?;
        site.authorize(caller)?;
        Ok(site)
    }

    pub async fn create(
        &self,
        caller: &Caller,
        body: CreateSite,
        server: &str,
    ) -> Result<SiteView, ApiError> {
        if caller.role == Role::Viewer {
            return Err(ApiError::Forbidden(
                "a viewer cannot add sites; ask an administrator for the member role".into(),
            ));
        }
        let name = crate::model::check_name(&body.name)?;
        let owned = self
            .state
            .set_members(&user_sites_key(&caller.name))
            .await?
            .len();
        if owned >= MAX_SITES_PER_OWNER {
            return Err(ApiError::Conflict(format!(
                "at most {MAX_SITES_PER_OWNER} sites per member; delete one first"
            )));
        }
        let id = format!("s{}", &cloudcam_core::random_hex(6));
        let site = SiteRecord {
            id: id.clone(),
            name,
            owner: caller.name.clone(),
            created_ms: cloudcam_core::now_ms(),
            credential_sha256: String::new(),
            enrolled_ms: 0,
        };
        self.put(&site).await?;
        self.state.set_add(SITES, &id).await?;
        self.state
            .set_add(&user_sites_key(&caller.name), &id)
            .await?;
        tracing::info!(site = %id, name = %site.name, owner = %caller.name, "site added");
        let mut view = self.view(site).await?;
        view.enrollment = Some(self.enrollment(&id, server).await?);
        Ok(view)
    }

    /// A new one-time enrollment token for the site: the agent that uses it replaces any
    /// enrolled one.
    pub async fn new_enrollment(
        &self,
        caller: &Caller,
        id: &str,
        server: &str,
    ) -> Result<SiteView, ApiError> {
        let site = self.authorize(caller, id).await?;
        let mut view = self.view(site).await?;
        view.enrollment = Some(self.enrollment(id, server).await?);
        tracing::info!(site = %id, by = %caller.name, "enrollment token made");
        Ok(view)
    }

    async fn enrollment(&self, id: &str, server: &str) -> Result<Enrollment, ApiError> {
        let token = cloudcam_core::random_hex(24);
        self.state
            .set(&enroll_key(&token), id.as_bytes(), Some(ENROLL_TTL))
            .await?;
        Ok(Enrollment {
            command: format!("cloudcam-edge --server {server} --enroll-token {token}"),
            expires_ms: cloudcam_core::now_ms() + ENROLL_TTL.as_millis() as i64,
            token,
        })
    }

    /// Trades a one-time enrollment token for the site's agent credential (the token is
    /// spent whatever happens next; an earlier agent's credential stops working).
    pub async fn enroll(&self, body: EnrollRequest) -> Result<Enrolled, ApiError> {
        let key = enroll_key(&body.token);
        let refused = || {
            ApiError::BadRequest(
                "invalid_enrollment",
                "the enrollment token is unknown, used or expired; make a new one for the site"
                    .into(),
            )
        };
        let Some(id) = self.state.get(&key).await? else {
            return Err(refused());
        };
        // Spent by exactly one caller.
        if !self.state.del_if_eq(&key, &id).await? {
            return Err(refused());
        }
        let id = String::from_utf8_lossy(&id).into_owned();
        let Some(mut site) = self.record(&id).await? else {
            return Err(refused());
        };
        let credential = format!("{id}.{}", cloudcam_core::random_hex(32));
        site.credential_sha256 = sha256(&credential);
        site.enrolled_ms = cloudcam_core::now_ms();
        self.put(&site).await?;
        tracing::info!(site = %id, version = %body.version, "edge agent enrolled");
        Ok(Enrolled {
            site_id: id,
            site_name: site.name,
            credential,
        })
    }

    /// The site whose agent credential this is (`None`: unknown or revoked).
    pub async fn authenticate(&self, credential: &str) -> Result<Option<SiteRecord>, ApiError> {
        let Some((id, _)) = credential.split_once('.') else {
            return Ok(None);
        };
        Ok(self.record(id).await?.filter(|s| {
            !s.credential_sha256.is_empty() && s.credential_sha256 == sha256(credential)
        }))
    }

    /// Ends the site's agent credential; returns the site's cameras (whose push credentials
    /// the caller replaces).
    pub async fn revoke(&self, caller: &Caller, id: &str) -> Result<Vec<String>, ApiError> {
        let mut site = self.authorize(caller, id).await?;
        site.credential_sha256.clear();
        site.enrolled_ms = 0;
        self.put(&site).await?;
        tracing::info!(site = %id, by = %caller.name, "edge agent revoked");
        self.cameras(id).await
    }

    /// Deletes a site without cameras.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let site = self.authorize(caller, id).await?;
        if !self.cameras(id).await?.is_empty() {
            return Err(ApiError::Conflict(format!(
                "site {id} still has cameras; delete or move them first"
            )));
        }
        self.state.del(&site_key(id)).await?;
        self.state.set_remove(SITES, id).await?;
        self.state
            .set_remove(&user_sites_key(&site.owner), id)
            .await?;
        self.state.del(&presence_key(id)).await?;
        tracing::info!(site = %id, by = %caller.name, "site deleted");
        Ok(())
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<SiteView, ApiError> {
        let site = self.authorize(caller, id).await?;
        self.view(site).await
    }

    /// The sites `caller` may see (every one for an administrator, else their own).
    pub async fn list(&self, caller: &Caller) -> Result<Vec<SiteView>, ApiError> {
        let ids = if caller.is_admin() {
            self.state.set_members(SITES).await?
        } else {
            self.state
                .set_members(&user_sites_key(&caller.name))
                .await?
        };
        let keys: Vec<String> = ids.iter().map(|id| site_key(id)).collect();
        let mut sites: Vec<SiteRecord> = cloudcam_core::state::get_json_many(&*self.state, &keys)
            .await?
            .into_iter()
            .flatten()
            .collect();
        sites.sort_by_key(|s: &SiteRecord| s.created_ms);
        // Every site's view at once (the commands share one connection, one round trip).
        futures::future::try_join_all(sites.into_iter().map(|site| self.view(site))).await
    }

    async fn view(&self, site: SiteRecord) -> Result<SiteView, ApiError> {
        let (agent, mut cameras) =
            tokio::try_join!(self.presence(&site.id), self.cameras(&site.id))?;
        let agent = agent.map(|mut a| {
            a.session.clear();
            a
        });
        cameras.sort();
        Ok(SiteView {
            enrolled: !site.credential_sha256.is_empty(),
            enrolled_ms: (site.enrolled_ms > 0).then_some(site.enrolled_ms),
            online: agent.is_some(),
            agent,
            cameras,
            enrollment: None,
            id: site.id,
            name: site.name,
            owner: site.owner,
            created_ms: site.created_ms,
        })
    }

    /// The site's cameras.
    pub async fn cameras(&self, id: &str) -> Result<Vec<String>, ApiError> {
        Ok(self.state.set_members(&site_cameras_key(id)).await?)
    }

    pub async fn add_camera(&self, id: &str, camera: &str) -> Result<(), ApiError> {
        Ok(self.state.set_add(&site_cameras_key(id), camera).await?)
    }

    pub async fn remove_camera(&self, id: &str, camera: &str) -> Result<(), ApiError> {
        Ok(self.state.set_remove(&site_cameras_key(id), camera).await?)
    }

    /// The site's connected agent, if any.
    pub async fn presence(&self, id: &str) -> Result<Option<AgentPresence>, ApiError> {
        Ok(cloudcam_core::state::get_json(&*self.state, &presence_key(id)).await?)
    }

    /// The connected agents of these sites (`None` where none is).
    pub async fn presences(&self, ids: &[String]) -> Result<Vec<Option<AgentPresence>>, ApiError> {
        let keys: Vec<String> = ids.iter().map(|id| presence_key(id)).collect();
        Ok(cloudcam_core::state::get_json_many(&*self.state, &keys).await?)
    }

    /// Notes the site's agent as connected (refreshed every second by its connection).
    pub async fn set_presence(&self, id: &str, p: &AgentPresence) -> Result<(), ApiError> {
        Ok(
            cloudcam_core::state::set_json(&*self.state, &presence_key(id), p, Some(PRESENCE_TTL))
                .await?,
        )
    }

    /// The connection `session` of the site's agent closed: it is no longer present, unless a
    /// newer connection replaced it.
    pub async fn clear_presence(&self, id: &str, session: &str) -> Result<(), ApiError> {
        if self
            .presence(id)
            .await?
            .is_some_and(|p| p.session == session)
        {
            self.state.del(&presence_key(id)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcam_core::state::MemoryState;

    fn caller(name: &str, role: Role) -> Caller {
        Caller {
            name: name.into(),
            role,
        }
    }

    #[tokio::test]
    async fn an_enrollment_token_works_once_and_revoking_ends_the_credential() {
        let sites = Sites::new(Arc::new(MemoryState::new()));
        let alice = caller("alice", Role::Member);
        let site = sites
            .create(
                &alice,
                CreateSite {
                    name: "Shop".into(),
                },
                "https://cloud",
            )
            .await
            .unwrap();
        let enrollment = site.enrollment.expect("shown once");
        assert!(enrollment.command.contains(&enrollment.token));
        assert!(!format!("{enrollment:?}").contains(&enrollment.token));
        let request = || EnrollRequest {
            token: enrollment.token.clone(),
            version: "test".into(),
        };
        let enrolled = sites.enroll(request()).await.unwrap();
        assert_eq!(enrolled.site_id, site.id);
        let err = sites.enroll(request()).await.err().unwrap();
        assert_eq!(err.code(), "invalid_enrollment");
        let found = sites.authenticate(&enrolled.credential).await.unwrap();
        assert_eq!(found.map(|s| s.id), Some(site.id.clone()));
        assert!(sites.authenticate("nope").await.unwrap().is_none());
        assert!(
            sites
                .authenticate(&format!("{}.wrong", site.id))
                .await
                .unwrap()
                .is_none()
        );
        // Only its owner and administrators see it.
        let bob = caller("bob", Role::Member);
        assert_eq!(
            sites.get(&bob, &site.id).await.err().unwrap().code(),
            "site_not_found"
        );
        assert!(sites.list(&bob).await.unwrap().is_empty());
        assert_eq!(sites.list(&alice).await.unwrap().len(), 1);
        // A member owns a bounded number of sites.
        for _ in 1..MAX_SITES_PER_OWNER {
            let shop = CreateSite {
                name: "Shop".into(),
            };
            sites.create(&alice, shop, "https://cloud").await.unwrap();
        }
        let shop = CreateSite {
            name: "One too many".into(),
        };
        let err = sites
            .create(&alice, shop, "https://cloud")
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("at most 100 sites"), "{err}");
        assert_eq!(sites.list(&alice).await.unwrap().len(), MAX_SITES_PER_OWNER);
        sites.revoke(&alice, &site.id).await.unwrap();
        assert!(
            sites
                .authenticate(&enrolled.credential)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!sites.get(&alice, &site.id).await.unwrap().enrolled);
    }
}
