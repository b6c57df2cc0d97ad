//! The camera service: adding, changing and removing cameras, what the API shows of them, and
//! the one place a camera's desired state is published.
//!
//! Writes are exact across any number of signal instances: the user-edited record is written
//! with compare-and-set (its version is the API's ETag), and every writer of a camera — a user's
//! change, the demand pass, a gateway failover, a delete — holds the camera's lease while it
//! changes its part and publishes. [`Cameras::publish_held`] always builds the spec from what is
//! stored *now*, so no writer republishes a record it loaded earlier and a deleted camera is
//! never brought back.

use crate::error::ApiError;
use crate::model::{
    CameraInfo, CameraRecord, CameraView, CreateCamera, Grant, Mountpoint, Need, PushCredential,
    ServedBy, Share, Stored, SubMountpoint, UpdateCamera, check_name, check_retention,
    check_site_url, check_sub_url, parse_source,
};
use crate::pool::Pool;
use crate::sites::Sites;
use crate::store::audio_id;
use crate::store::{Allocator, CameraStore, DemandStore};
use crate::users::{Caller, Role, Users};
use cloudcam_core::bus::Bus;
use cloudcam_core::camera::{CameraSecret, CameraStatus, secret_key, substream_id};
use cloudcam_core::state::StateStore;
use cloudcam_core::workers::WorkerInfo;
use cloudcam_proto::v1;
use std::collections::HashMap;
use std::sync::Arc;

/// How often an unconditional update retries after losing a race with another writer.
const UPDATE_ATTEMPTS: usize = 20;

#[derive(Clone)]
pub struct Cameras {
    pub store: CameraStore,
    demand: DemandStore,
    alloc: Allocator,
    pool: Arc<Pool>,
    bus: Arc<dyn Bus>,
    state: Arc<dyn StateStore>,
    users: Users,
    pub sites: Sites,
}

/// A camera with what hangs off its record.
pub struct Camera {
    pub stored: Stored,
    pub mountpoint: Option<Mountpoint>,
}

impl Cameras {
    pub fn new(
        state: Arc<dyn StateStore>,
        bus: Arc<dyn Bus>,
        pool: Arc<Pool>,
        users: Users,
    ) -> Self {
        Self {
            store: CameraStore::new(state.clone()),
            demand: DemandStore::new(state.clone()),
            alloc: Allocator::new(state.clone(), pool.ports()),
            pool,
            bus,
            sites: Sites::new(state.clone()),
            state,
            users,
        }
    }

    /// The camera's record if `caller` may do what `need` asks with it: `camera_not_found`
    /// when they cannot see it, `forbidden` when they see it but may not.
    pub async fn authorize(
        &self,
        caller: &Caller,
        id: &str,
        need: Need,
    ) -> Result<Stored, ApiError> {
        let stored = self.store.require(id).await?;
        stored.record.authorize(caller, need)?;
        Ok(stored)
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A camera and its mountpoint, or `camera_not_found`.
    pub async fn load(&self, id: &str) -> Result<Camera, ApiError> {
        let stored = self.store.require(id).await?;
        Ok(Camera {
            mountpoint: self.store.mountpoint(id).await?,
            stored,
        })
    }

    /// Every camera `caller` may see, as the API shows it, oldest first. A fixed number of
    /// round trips to the shared state, whatever the number of cameras or recordings; a user
    /// other than an administrator reads only the cameras they own or share.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<CameraView>, ApiError> {
        let stored = if caller.is_admin() {
            self.store.all().await?
        } else {
            self.store.user_records(&caller.name).await?
        };
        self.views(caller, stored).await
    }

    /// What `caller` may do with each camera they can see; `None` for an administrator (who
    /// may do everything with every camera).
    pub async fn grants(
        &self,
        caller: &Caller,
    ) -> Result<Option<HashMap<String, Grant>>, ApiError> {
        if caller.is_admin() {
            return Ok(None);
        }
        let stored = self.store.user_records(&caller.name).await?;
        Ok(Some(
            stored
                .into_iter()
                .filter_map(|s| s.record.grant_for(caller).map(|g| (s.record.info.id, g)))
                .collect(),
        ))
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<CameraView, ApiError> {
        let stored = self.authorize(caller, id, Need::See).await?;
        Ok(self.views(caller, vec![stored]).await?.remove(0))
    }

    async fn views(
        &self,
        caller: &Caller,
        stored: Vec<Stored>,
    ) -> Result<Vec<CameraView>, ApiError> {
        let stored: Vec<(Stored, Grant)> = stored
            .into_iter()
            .filter_map(|s| s.record.grant_for(caller).map(|g| (s, g)))
            .collect();
        let ids: Vec<String> = stored
            .iter()
            .map(|(s, _)| s.record.info.id.clone())
            .collect();
        let sub_ids: Vec<String> = ids.iter().map(|id| substream_id(id)).collect();
        let (statuses, sub_statuses, mountpoints, errors, recording_errors, wanted, workers) = tokio::try_join!(
            self.store.statuses(&ids),
            self.store.statuses(&sub_ids),
            self.store.mountpoints(&ids),
            self.store.mountpoint_errors(&ids),
            self.store.recording_problems(&ids),
            self.demand.wanted(),
            cloudcam_core::workers::list(&*self.state),
        )?;
        let site_ids: Vec<String> = stored
            .iter()
            .filter_map(|(s, _)| s.record.info.site.clone())
            .collect();
        let agents: HashMap<String, Option<crate::sites::AgentPresence>> = site_ids
            .iter()
            .cloned()
            .zip(self.sites.presences(&site_ids).await?)
            .collect();
        let recorders: HashMap<&str, &WorkerInfo> = workers
            .iter()
            .filter(|w| w.kind == "recorder")
            .flat_map(|w| w.cameras.iter().map(move |c| (c.as_str(), w)))
            .collect();
        Ok(stored
            .into_iter()
            .zip(
                statuses
                    .into_iter()
                    .zip(mountpoints.into_iter().zip(errors))
                    .zip(recording_errors.into_iter().zip(sub_statuses)),
            )
            .map(
                |((s, access), ((status, (mp, error)), (recording_error, sub_status)))| {
                    let id = s.record.info.id.clone();
                    let gateway = mp
                        .map(|mp| self.pool.gateway(&mp.gateway).settings.name.clone())
                        .unwrap_or_default();
                    let mut status = status.unwrap_or_else(CameraStatus::unknown);
                    if let Some(site) = &s.record.info.site {
                        let agent = agents.get(site).and_then(Option::as_ref);
                        edge_status(&mut status, &id, site, agent);
                    }
                    CameraView {
                        served_by: ServedBy {
                            ingest: status.worker_id.clone(),
                            gateway,
                            gateway_error: error,
                            recorder: recorders.get(id.as_str()).map(|w| w.id.clone()),
                            recording_error,
                            live_demand: u32::from(wanted.contains_key(&id)),
                            sub_live_demand: u32::from(wanted.contains_key(&substream_id(&id))),
                        },
                        version: s.version,
                        access,
                        sub_status: s
                            .record
                            .info
                            .sub_url
                            .is_some()
                            .then(|| sub_status.unwrap_or_else(CameraStatus::unknown)),
                        info: s.record.info,
                        status,
                        push_credential: None,
                    }
                },
            )
            .collect())
    }

    /// A fresh camera id that falls in the partition whose turn it is, so that cameras fill
    /// the partitions (and so the ingest workers) evenly. A draw hits a given partition with
    /// probability 1/partitions; missing it 64 × partitions times in a row (then any id
    /// does) has odds of e^-64.
    async fn new_id(&self) -> Result<String, ApiError> {
        let partitions = self.bus.camera_partitions();
        let turn = self.alloc.next_partition(partitions).await?;
        let draw = || uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        Ok((0..64 * partitions)
            .map(|_| draw())
            .find(|id| cloudcam_core::bus::camera_partition(id, partitions) == turn)
            .unwrap_or_else(draw))
    }

    pub async fn create(
        &self,
        caller: &Caller,
        body: CreateCamera,
    ) -> Result<CameraView, ApiError> {
        if caller.role == Role::Viewer {
            return Err(ApiError::Forbidden(
                "a viewer cannot add cameras; ask an administrator for the member role".into(),
            ));
        }
        let name = check_name(&body.name)?;
        let retention_hours = check_retention(body.retention_hours)?;
        // Everything is checked before an id is drawn (drawing one takes a partition's turn).
        let site = match &body.site {
            Some(site) => Some(self.sites.authorize(caller, site).await?.id),
            None => None,
        };
        let pulled = if let Some(site) = &site {
            if body.push
                || body.sub_url.is_some()
                || body.username.is_some()
                || body.password.is_some()
            {
                return Err(ApiError::BadRequest(
                    "invalid_field",
                    format!(
                        "a camera on site {site} takes only its url on the site (no push, \
                         sub_url, username or password: credentials stay in the site's agent \
                         configuration)"
                    ),
                ));
            }
            Some((check_site_url(&body.url)?, None, None))
        } else if body.push {
            check_push(&body)?;
            None
        } else {
            if body.url.trim().is_empty() {
                return Err(ApiError::BadRequest(
                    "invalid_field",
                    "missing field `url`: a pulled camera needs its rtsp:// or rtsps:// URL \
                     (a camera that pushes its stream says \"push\": true instead)"
                        .into(),
                ));
            }
            let source = parse_source(&body.url)?;
            let sub_url = body
                .sub_url
                .as_deref()
                .map(check_sub_url)
                .transpose()?
                .flatten();
            let username = body.username.or(source.username).filter(|u| !u.is_empty());
            let password = body.password.or(source.password);
            let secret =
                (username.is_some() || !source.secret_query.is_empty()).then(|| CameraSecret {
                    username: username.clone().unwrap_or_default(),
                    password: password.clone().unwrap_or_default(),
                    query: source.secret_query,
                });
            Some((source.url, sub_url, secret))
        };
        let id = self.new_id().await?;
        // A pushed camera has no URL and a fresh push credential; a site camera has its URL
        // on the site and a push credential for its agent.
        let push = body.push || site.is_some();
        let (url, sub_url, secret) = match pulled {
            Some((url, _, _)) if site.is_some() => (url, None, Some(push_secret(&id))),
            Some(pulled) => pulled,
            None => (String::new(), None, Some(push_secret(&id))),
        };
        let (username, has_password) = shown(secret.as_ref());
        let now = cloudcam_core::now_ms();
        let record = CameraRecord {
            info: CameraInfo {
                id: id.clone(),
                name,
                url,
                push,
                site: site.clone(),
                sub_url,
                has_password,
                username,
                recording: body.recording,
                retention_hours,
                always_on: body.always_on,
                created_ms: now,
                updated_ms: now,
                owner: caller.name.clone(),
            },
            generation: 1,
            source_generation: 1,
            sub_source_generation: 1,
            shares: Default::default(),
        };
        let existing: Vec<Mountpoint> = self
            .store
            .mountpoints(&self.store.ids().await?)
            .await?
            .into_iter()
            .flatten()
            .collect();
        let gateway = self
            .pool
            .place_new(&existing.iter().collect::<Vec<_>>())
            .settings
            .name
            .clone();
        let port = self.alloc.claim_port(&id).await?;
        let mut mountpoint = Mountpoint {
            id: self.alloc.next_id().await?,
            port,
            secret: cloudcam_core::random_hex(16),
            pin: cloudcam_core::random_hex(8),
            gateway,
            sub: None,
            audio_port: None,
            h265: false,
            audio_codec: String::new(),
        };
        let made = async {
            mountpoint.audio_port = Some(self.alloc.claim_port(&audio_id(&id)).await?);
            if record.info.sub_url.is_some() {
                mountpoint.sub = Some(self.new_sub_mountpoint(&id).await?);
            }
            self.store.set_secret(&id, secret.as_ref()).await?;
            self.store.set_mountpoint(&id, &mountpoint).await?;
            self.store.index_for_user(&caller.name, &id).await?;
            if let Some(site) = &site {
                self.sites.add_camera(site, &id).await?;
            }
            if self.store.insert(&record).await?.is_none() {
                return Err(ApiError::Conflict(format!("camera {id} exists already")));
            }
            Ok::<_, ApiError>(())
        }
        .await;
        if let Err(e) = made {
            let _ = self.alloc.release_port(&id, port).await;
            if let Some(sub) = mountpoint.sub {
                let _ = self.alloc.release_port(&substream_id(&id), sub.port).await;
            }
            if let Some(port) = mountpoint.audio_port {
                let _ = self.alloc.release_port(&audio_id(&id), port).await;
            }
            let _ = self.store.forget(&id).await;
            if let Some(site) = &site {
                let _ = self.sites.remove_camera(site, &id).await;
            }
            return Err(e);
        }
        self.ensure_mountpoint(&id, &mountpoint).await;
        self.publish(&id).await?;
        tracing::info!(camera = %id, name = %record.info.name, url = %record.info.url, push = record.info.push, site = ?record.info.site, owner = %caller.name, "camera added");
        let mut view = self.get(caller, &id).await?;
        // A site camera's push credential is its agent's, never shown.
        view.push_credential = secret.filter(|_| body.push).map(|s| PushCredential {
            username: s.username,
            password: s.password,
        });
        Ok(view)
    }

    /// Gives a pushed camera a new push credential, shown in the answer only: the old one
    /// stops working, and a push made with it is cut (the owning worker takes the new one).
    pub async fn new_push_credential(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<CameraView, ApiError> {
        let stored = self.authorize(caller, id, Need::Manage).await?;
        if !stored.record.info.push || stored.record.info.site.is_some() {
            return Err(ApiError::BadRequest(
                "not_pushed",
                format!(
                    "camera {id} is not pushed directly (it is pulled from its url, or its site's \
                     agent pushes it); only such a camera has a push credential"
                ),
            ));
        }
        let secret = self.replace_push_credential(id, &caller.name).await?;
        let mut view = self.get(caller, id).await?;
        view.push_credential = Some(PushCredential {
            username: secret.username,
            password: secret.password,
        });
        Ok(view)
    }

    /// Gives a pushed camera a new push credential (stored, and taken by its owning worker,
    /// which cuts a push made with the old one); returns it.
    async fn replace_push_credential(&self, id: &str, by: &str) -> Result<CameraSecret, ApiError> {
        let secret = push_secret(id);
        let _lease = self.store.lease(id).await?;
        self.store.set_secret(id, Some(&secret)).await?;
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.store.require(id).await?;
            let mut record = stored.record.clone();
            // A new source generation: the owning worker reads the new credential.
            record.source_generation += 1;
            record.generation += 1;
            record.info.updated_ms = cloudcam_core::now_ms();
            if self.store.replace(stored.version, &record).await?.is_none() {
                continue;
            }
            self.publish_held(id).await?;
            tracing::info!(camera = %id, by = %by, "push credential replaced");
            return Ok(secret);
        }
        Err(ApiError::Busy(format!("camera {id} is being changed")))
    }

    /// Revokes the site's agent: its credential ends (its connection closes within a second)
    /// and every camera of the site gets a new push credential, so nothing it was given can
    /// push any more. A new enrollment brings the site back.
    pub async fn revoke_site(
        &self,
        caller: &Caller,
        site: &str,
    ) -> Result<crate::sites::SiteView, ApiError> {
        for id in self.sites.revoke(caller, site).await? {
            match self
                .replace_push_credential(id.as_str(), &caller.name)
                .await
            {
                Ok(_) | Err(ApiError::CameraNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.sites.get(caller, site).await
    }

    /// A new mountpoint (id and RTP port) for the substream of camera `id`.
    async fn new_sub_mountpoint(&self, id: &str) -> Result<SubMountpoint, ApiError> {
        let port = self.alloc.claim_port(&substream_id(id)).await?;
        match self.alloc.next_id().await {
            Ok(mp) => Ok(SubMountpoint { id: mp, port }),
            Err(e) => {
                let _ = self.alloc.release_port(&substream_id(id), port).await;
                Err(e.into())
            }
        }
    }

    /// Gives the camera a substream mountpoint, or takes it away, as its record now says; the
    /// caller holds its lease.
    async fn follow_substream(&self, id: &str, has_sub: bool) -> Result<(), ApiError> {
        let Some(mut mp) = self.store.mountpoint(id).await? else {
            return Ok(());
        };
        match (has_sub, mp.sub) {
            (true, None) => {
                mp.sub = Some(self.new_sub_mountpoint(id).await?);
                self.store.set_mountpoint(id, &mp).await?;
                self.ensure_mountpoint(id, &mp).await;
            }
            (false, Some(sub)) => {
                if let Some(part) = mp.stream(true)
                    && let Err(e) = self.pool.remove(&part).await
                {
                    tracing::warn!(camera = %id, error = %e, "cannot remove the substream's Janus mountpoint");
                }
                mp.sub = None;
                self.store.set_mountpoint(id, &mp).await?;
                self.alloc.release_port(&substream_id(id), sub.port).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Creates the mountpoint on its gateway now, noting for the camera why it cannot be; the
    /// reconciler retries either way.
    async fn ensure_mountpoint(&self, id: &str, mp: &Mountpoint) {
        let error = match self.pool.ensure(mp).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(camera = %id, error = %e, "cannot create the Janus mountpoint yet");
                Some(e.to_string())
            }
        };
        let _ = self.store.set_mountpoint_error(id, error.as_deref()).await;
    }

    /// Applies a change. With `if_match`, only to that version (else `precondition_failed`);
    /// without, retried until it lands on the latest version, so concurrent changes of
    /// different fields all stay.
    pub async fn update(
        &self,
        caller: &Caller,
        id: &str,
        body: UpdateCamera,
        if_match: Option<u64>,
    ) -> Result<CameraView, ApiError> {
        self.authorize(caller, id, Need::Manage).await?;
        let lease = self.store.lease(id).await?;
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.authorize(caller, id, Need::Manage).await?;
            if let Some(v) = if_match
                && v != stored.version
            {
                return Err(ApiError::PreconditionFailed(stored.version));
            }
            let secret = self.store.secret(id).await?;
            let (record, new_secret) = apply(stored.record.clone(), secret.clone(), &body)?;
            // A new substream's mountpoint is claimed before the record says it has one, so a
            // pool without room refuses the change and stores nothing (claiming again is a
            // no-op; one the change then does not keep goes with the camera or its next change).
            if record.info.sub_url.is_some() {
                self.follow_substream(id, true).await?;
            }
            if self.store.replace(stored.version, &record).await?.is_none() {
                if if_match.is_some() {
                    let now = self.store.get(id).await?.map(|s| s.version).unwrap_or(0);
                    return Err(ApiError::PreconditionFailed(now));
                }
                continue;
            }
            if new_secret != secret {
                self.store.set_secret(id, new_secret.as_ref()).await?;
            }
            if record.info.sub_url.is_none() {
                self.follow_substream(id, false).await?;
            }
            self.publish_held(id).await?;
            drop(lease);
            tracing::info!(camera = %id, user = %caller.name, "camera changed");
            return self.get(caller, id).await;
        }
        Err(ApiError::Busy(format!("camera {id} is being changed")))
    }

    pub async fn delete(
        &self,
        caller: &Caller,
        id: &str,
        if_match: Option<u64>,
    ) -> Result<(), ApiError> {
        self.authorize(caller, id, Need::Manage).await?;
        let _lease = self.store.lease(id).await?;
        let camera = self.load(id).await?;
        camera.stored.record.authorize(caller, Need::Manage)?;
        if let Some(v) = if_match
            && v != camera.stored.version
        {
            return Err(ApiError::PreconditionFailed(camera.stored.version));
        }
        if !self.store.remove(id, if_match).await? {
            return Err(ApiError::PreconditionFailed(0));
        }
        self.publish_held(id).await?;
        let record = &camera.stored.record;
        for user in std::iter::once(&record.info.owner).chain(record.shares.keys()) {
            self.store.unindex_for_user(user, id).await?;
        }
        if let Some(site) = &record.info.site {
            self.sites.remove_camera(site, id).await?;
        }
        if let Some(mp) = camera.mountpoint
            && let Err(e) = self.pool.remove(&mp).await
        {
            tracing::warn!(camera = %id, error = %e, "cannot remove the Janus mountpoint");
        }
        tracing::info!(camera = %id, user = %caller.name, "camera deleted");
        Ok(())
    }

    /// Who the camera is shared with (its managers may ask).
    pub async fn shares(&self, caller: &Caller, id: &str) -> Result<Vec<Share>, ApiError> {
        let stored = self.authorize(caller, id, Need::Manage).await?;
        Ok(stored
            .record
            .shares
            .into_iter()
            .map(|(user, grant)| Share::new(user, grant))
            .collect())
    }

    /// Grants `user` what `grant` says on the camera; an empty grant ends the share. A user
    /// whose share ends loses their running views of it within a second.
    pub async fn share(
        &self,
        caller: &Caller,
        id: &str,
        user: &str,
        grant: Grant,
    ) -> Result<Vec<Share>, ApiError> {
        self.authorize(caller, id, Need::Manage).await?;
        let target = self.users.require(user).await?;
        let grant = grant.normalized();
        let _lease = self.store.lease(id).await?;
        for _ in 0..UPDATE_ATTEMPTS {
            let stored = self.authorize(caller, id, Need::Manage).await?;
            if stored.record.info.owner == target.name {
                return Err(ApiError::BadRequest(
                    "invalid_share",
                    format!("{user} owns camera {id}"),
                ));
            }
            let mut record = stored.record.clone();
            if grant.is_empty() {
                record.shares.remove(&target.name);
            } else {
                record.shares.insert(target.name.clone(), grant);
                self.store.index_for_user(&target.name, id).await?;
            }
            if self.store.replace(stored.version, &record).await?.is_none() {
                continue;
            }
            if grant.is_empty() {
                self.store.unindex_for_user(&target.name, id).await?;
            }
            tracing::info!(camera = %id, by = %caller.name, user = %target.name, ?grant, "camera shared");
            return self.shares(caller, id).await;
        }
        Err(ApiError::Busy(format!("camera {id} is being changed")))
    }

    /// Publishes the camera's desired state as stored now, holding its lease.
    pub async fn publish(&self, id: &str) -> Result<(), ApiError> {
        let _lease = self.store.lease(id).await?;
        self.publish_held(id).await
    }

    /// Publishes the camera's desired state as stored now; the caller holds its lease. A
    /// camera without a record gets a tombstone and whatever a racing writer left is dropped.
    ///
    /// The camera goes into the outbox first and leaves it once the bus has the message, so a
    /// change made while Kafka is away (or by a process that dies before publishing) is not
    /// lost: the outbox pass ([`Cameras::publish_outbox`]) publishes it when Kafka is back.
    /// A bus failure is therefore not the caller's: the change is stored and will be published.
    pub async fn publish_held(&self, id: &str) -> Result<(), ApiError> {
        self.store.unpublished(id).await?;
        match self.publish_stored(id).await {
            Err(ApiError::Bus(e)) => {
                crate::metrics::SPECS_DEFERRED.inc();
                tracing::warn!(camera = %id, error = %e, "desired state not published yet; the outbox pass retries");
                Ok(())
            }
            other => other,
        }
    }

    /// Publishes every camera in the outbox (one pass): what changed while the bus was away.
    pub async fn publish_outbox(&self) -> Result<usize, ApiError> {
        let ids = self.store.outbox().await?;
        crate::metrics::SPECS_UNPUBLISHED.set(ids.len() as f64);
        let mut published = 0;
        for id in &ids {
            let _lease = self.store.lease(id).await?;
            self.publish_stored(id).await?;
            tracing::info!(camera = %id, "desired state published from the outbox");
            published += 1;
        }
        crate::metrics::SPECS_UNPUBLISHED.set(0.0);
        Ok(published)
    }

    /// Publishes the camera's desired state as stored now and takes it out of the outbox; the
    /// caller holds its lease.
    async fn publish_stored(&self, id: &str) -> Result<(), ApiError> {
        let spec = self.current_spec(id).await?;
        self.bus.put_spec(id, spec.as_ref()).await?;
        self.store.published(id).await?;
        Ok(())
    }

    /// The camera's desired state as stored now (`None`: it was deleted, and whatever a racing
    /// writer left is dropped).
    async fn current_spec(&self, id: &str) -> Result<Option<v1::CameraSpec>, ApiError> {
        let Some(stored) = self.store.get(id).await? else {
            self.store.forget(id).await?;
            return Ok(None);
        };
        let mountpoint = self.store.mountpoint(id).await?;
        let wanted = (
            self.demand.is_wanted(id).await?,
            self.demand.is_wanted(&substream_id(id)).await?,
        );
        let info = &stored.record.info;
        let has_secret = info.username.is_some() || info.has_password;
        let spec = spec(
            &stored.record,
            mountpoint.as_ref(),
            wanted,
            has_secret,
            &self.pool,
        );
        Ok(Some(spec))
    }

    /// Re-creates the camera's main mountpoint for the video codec its camera turned out to
    /// send (`h265`), under a new id so that a gateway still holding the old one is not taken
    /// for having it, and repoints its RTP. Its viewers, who were getting nothing, reconnect.
    pub async fn follow_codec(&self, id: &str, h265: bool) -> Result<bool, ApiError> {
        let _lease = self.store.lease(id).await?;
        let Some(old) = self.store.mountpoint(id).await? else {
            return Ok(false);
        };
        if old.h265 == h265 || self.store.get(id).await?.is_none() {
            return Ok(false);
        }
        let new = Mountpoint {
            h265,
            ..old.clone()
        };
        self.recreate_main(id, &old, new).await
    }

    /// Re-creates the camera's main mountpoint for the live audio its camera sends:
    /// `audio_codec` is the G.711 it takes as it is (`PCMU`, `PCMA`), or empty for Opus.
    pub async fn follow_audio(&self, id: &str, audio_codec: &str) -> Result<bool, ApiError> {
        let _lease = self.store.lease(id).await?;
        let Some(old) = self.store.mountpoint(id).await? else {
            return Ok(false);
        };
        if old.audio_codec == audio_codec
            || old.audio_port.is_none()
            || self.store.get(id).await?.is_none()
        {
            return Ok(false);
        }
        let new = Mountpoint {
            audio_codec: audio_codec.to_string(),
            ..old.clone()
        };
        self.recreate_main(id, &old, new).await
    }

    /// Gives a camera added before live audio existed its live-audio port, re-creating its
    /// main mountpoint with the audio stream (as [`Cameras::follow_codec`] does).
    pub async fn give_live_audio(&self, id: &str) -> Result<bool, ApiError> {
        let _lease = self.store.lease(id).await?;
        let Some(old) = self.store.mountpoint(id).await? else {
            return Ok(false);
        };
        if old.audio_port.is_some() || self.store.get(id).await?.is_none() {
            return Ok(false);
        }
        let port = self.alloc.claim_port(&audio_id(id)).await?;
        let new = Mountpoint {
            audio_port: Some(port),
            ..old.clone()
        };
        self.recreate_main(id, &old, new).await
    }

    /// Replaces the camera's main mountpoint `old` with `new` under a new id; the caller holds
    /// the camera's lease.
    async fn recreate_main(
        &self,
        id: &str,
        old: &Mountpoint,
        new: Mountpoint,
    ) -> Result<bool, ApiError> {
        let mp = Mountpoint {
            id: self.alloc.next_id().await?,
            ..new
        };
        // Stored first, so a gateway pass reading it from now on creates the new one (which
        // takes the port once the old one is gone).
        self.store.set_mountpoint(id, &mp).await?;
        if let Some(main) = old.stream(false)
            && let Err(e) = self.pool.remove(&main).await
        {
            tracing::warn!(camera = %id, error = %e, "cannot remove the mountpoint of the old codec");
        }
        self.ensure_mountpoint(id, &mp).await;
        self.publish_held(id).await?;
        Ok(true)
    }

    /// Moves a camera's mountpoint to `gateway` (which has created it) and repoints its RTP;
    /// nothing happens to a camera deleted meanwhile.
    pub async fn move_mountpoint(&self, id: &str, to: &Mountpoint) -> Result<bool, ApiError> {
        let _lease = self.store.lease(id).await?;
        if self.store.get(id).await?.is_none() {
            return Ok(false);
        }
        self.store.set_mountpoint(id, to).await?;
        self.publish_held(id).await?;
        Ok(true)
    }
}

/// What a site camera's status says given its site's agent: `offline` while the agent is not
/// connected; the agent's reason while it cannot pull the camera on the site.
fn edge_status(
    status: &mut CameraStatus,
    camera: &str,
    site: &str,
    agent: Option<&crate::sites::AgentPresence>,
) {
    use cloudcam_core::camera::CameraState;
    match agent {
        None => {
            status.state = CameraState::Offline;
            status.reason = format!(
                "the edge agent of site {site} is not connected; the camera comes back when it is"
            );
        }
        Some(agent) if status.state != CameraState::Live => {
            if let Some(why) = agent.failing.get(camera) {
                status.state = CameraState::Unreachable;
                status.reason = format!("the edge agent of site {site} cannot push it: {why}");
            }
        }
        Some(_) => {}
    }
}

/// A URL's scheme, host and port (the default port where none is given).
fn origin(url: &str) -> Option<(String, String, Option<u16>)> {
    let u = url::Url::parse(url).ok()?;
    let port = u.port().or(match u.scheme() {
        "rtsp" => Some(554),
        "rtsps" => Some(322),
        _ => None,
    });
    Some((u.scheme().to_string(), u.host_str()?.to_lowercase(), port))
}

/// What the camera's record shows of its credentials: the user name, and whether a secret
/// (a password or a credential parameter of the URL) is stored.
fn shown(secret: Option<&CameraSecret>) -> (Option<String>, bool) {
    (
        secret.map(|s| s.username.clone()).filter(|u| !u.is_empty()),
        secret.is_some_and(|s| s.values().next().is_some()),
    )
}

/// Applies a change to a record and its credentials.
fn apply(
    mut record: CameraRecord,
    secret: Option<CameraSecret>,
    body: &UpdateCamera,
) -> Result<(CameraRecord, Option<CameraSecret>), ApiError> {
    if let Some(site) = &record.info.site {
        if body.sub_url.is_some() || body.username.is_some() || body.password.is_some() {
            return Err(ApiError::BadRequest(
                "invalid_field",
                format!(
                    "a camera on site {site} has only its url on the site (credentials stay in \
                     the site's agent configuration)"
                ),
            ));
        }
        if let Some(url) = &body.url {
            record.info.url = check_site_url(url)?;
        }
    } else if record.info.push
        && (body.url.is_some()
            || body.sub_url.is_some()
            || body.username.is_some()
            || body.password.is_some())
    {
        return Err(ApiError::BadRequest(
            "invalid_field",
            "a pushed camera has no url, sub_url, username or password; replace its push \
             credential with POST /cameras/{id}/push-credential"
                .into(),
        ));
    }
    let before = (record.info.url.clone(), secret.clone());
    let sub_before = (record.info.sub_url.clone(), secret.clone());
    let mut secret = secret;
    if let Some(name) = &body.name {
        record.info.name = check_name(name)?;
    }
    if let Some(url) = body.url.as_ref().filter(|_| record.info.site.is_none()) {
        let source = parse_source(url)?;
        // Stored credentials go only to the camera they were given for: a URL pointing at
        // another scheme, host or port drops them unless this request brings them again.
        if origin(&source.url) != origin(&record.info.url)
            && source.username.is_none()
            && source.secret_query.is_empty()
            && body.username.is_none()
        {
            secret = None;
        }
        record.info.url = source.url;
        if let Some(u) = source.username {
            let s = secret.get_or_insert_with(Default::default);
            s.username = u;
            s.password = source.password.unwrap_or_default();
        }
        if !source.secret_query.is_empty() {
            secret.get_or_insert_with(Default::default).query = source.secret_query;
        }
    }
    if let Some(u) = &body.username {
        let s = secret.get_or_insert_with(Default::default);
        s.username.clone_from(u);
        if u.is_empty() {
            s.password.clear();
        }
    }
    if let Some(p) = &body.password {
        match secret.as_mut().filter(|s| !s.username.is_empty()) {
            Some(s) => s.password.clone_from(p),
            None => {
                return Err(ApiError::BadRequest(
                    "invalid_field",
                    "a password needs a username".into(),
                ));
            }
        }
    }
    // Nothing left to keep.
    if secret
        .as_ref()
        .is_some_and(|s| s.username.is_empty() && s.query.is_empty())
    {
        secret = None;
    }
    if let Some(sub) = &body.sub_url {
        record.info.sub_url = check_sub_url(sub)?;
    }
    if let Some(rec) = body.recording {
        record.info.recording = rec;
    }
    if let Some(on) = body.always_on {
        record.info.always_on = on;
    }
    if let Some(hours) = body.retention_hours {
        record.info.retention_hours = check_retention(hours)?;
    }
    (record.info.username, record.info.has_password) = shown(secret.as_ref());
    record.info.updated_ms = cloudcam_core::now_ms();
    record.generation += 1;
    if (record.info.url.clone(), secret.clone()) != before {
        record.source_generation += 1;
    }
    if (record.info.sub_url.clone(), secret.clone()) != sub_before {
        record.sub_source_generation += 1;
    }
    Ok((record, secret))
}

/// A pushed camera's create request takes nothing a pulled camera is reached with.
fn check_push(body: &CreateCamera) -> Result<(), ApiError> {
    if !body.url.trim().is_empty()
        || body
            .sub_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
        || body.username.is_some()
        || body.password.is_some()
    {
        return Err(ApiError::BadRequest(
            "invalid_push",
            "a pushed camera takes no url, sub_url, username or password: it pushes to cloudcam \
             with the push credential it is given"
                .into(),
        ));
    }
    Ok(())
}

/// A new push credential for camera `id`: the camera id and a random password (128 bits).
fn push_secret(id: &str) -> CameraSecret {
    CameraSecret {
        username: id.to_string(),
        password: cloudcam_core::random_hex(16),
        query: Vec::new(),
    }
}

/// The desired state published for ingest workers and recorders.
fn spec(
    record: &CameraRecord,
    mountpoint: Option<&Mountpoint>,
    wanted: (bool, bool),
    has_secret: bool,
    pool: &Pool,
) -> v1::CameraSpec {
    let rtp_targets = mountpoint
        .map(|mp| {
            let gateway = pool.gateway(&mp.gateway);
            vec![v1::RtpTarget {
                host: gateway.settings.rtp_host.clone(),
                video_port: u32::from(mp.port),
                gateway: gateway.settings.name.clone(),
                sub_video_port: mp.sub.map_or(0, |s| u32::from(s.port)),
                audio_port: mp.audio_port.map_or(0, u32::from),
                video_codec: if mp.h265 {
                    "H265".into()
                } else {
                    String::new()
                },
                audio_codec: mp.audio_codec.clone(),
            }]
        })
        .unwrap_or_default();
    let info = &record.info;
    v1::CameraSpec {
        schema_version: cloudcam_proto::SCHEMA_VERSION,
        camera_id: info.id.clone(),
        name: info.name.clone(),
        source_url: info.url.clone(),
        credentials_ref: if has_secret {
            secret_key(&info.id)
        } else {
            String::new()
        },
        recording: info.recording,
        retention_hours: (info.retention_hours.ceil()) as u32,
        retention_seconds: (info.retention_hours * 3600.0).round() as u64,
        live_demand: u32::from(wanted.0),
        always_on: info.always_on,
        rtp_targets,
        generation: record.generation,
        source_generation: record.source_generation,
        sub_source_url: info.sub_url.clone().unwrap_or_default(),
        sub_live_demand: u32::from(wanted.1),
        sub_source_generation: record.sub_source_generation,
        push: info.push,
        edge_site: info.site.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JanusSettings;
    use cloudcam_core::bus::MemoryBus;
    use cloudcam_core::state::MemoryState;

    fn service() -> (Cameras, Arc<MemoryBus>) {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        let bus = Arc::new(MemoryBus::new());
        // No Janus answers here: creation notes the gateway error and goes on.
        let janus = JanusSettings {
            url: "http://127.0.0.1:9/janus".into(),
            ..Default::default()
        };
        let pool = Arc::new(Pool::new(janus));
        (
            Cameras::new(state.clone(), bus.clone(), pool, Users::new(state)),
            bus,
        )
    }

    fn admin() -> Caller {
        Caller {
            name: "admin".into(),
            role: Role::Admin,
        }
    }

    fn camera(name: &str) -> CreateCamera {
        CreateCamera {
            name: name.into(),
            url: "rtsp://u:p@cam.local/s".into(),
            push: false,
            site: None,
            sub_url: None,
            username: None,
            password: None,
            recording: false,
            retention_hours: 0.0,
            always_on: false,
        }
    }

    #[tokio::test]
    async fn a_site_camera_is_pushed_by_its_agent_and_shown_offline_without_it() {
        let (cams, bus) = service();
        let member = Caller {
            name: "alice".into(),
            role: Role::Member,
        };
        let site = cams
            .sites
            .create(
                &member,
                crate::sites::CreateSite {
                    name: "Shop".into(),
                },
                "http://cloud",
            )
            .await
            .unwrap();
        let on_site = |url: &str| CreateCamera {
            url: url.into(),
            site: Some(site.id.clone()),
            ..camera("Till")
        };
        // Credentials stay on the site; another member cannot add to the site.
        let err = cams
            .create(&member, on_site("rtsp://u:p@10.0.0.5/s"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "invalid_site_url");
        let bob = Caller {
            name: "bob".into(),
            role: Role::Member,
        };
        let err = cams
            .create(&bob, on_site("rtsp://10.0.0.5/s"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "site_not_found");
        let view = cams
            .create(&member, on_site("rtsp://10.0.0.5/s"))
            .await
            .unwrap();
        let id = view.info.id.clone();
        assert!(view.push_credential.is_none(), "the agent's, never shown");
        assert_eq!(view.info.site.as_deref(), Some(site.id.as_str()));
        // No agent connected: offline, saying why.
        assert_eq!(
            view.status.state,
            cloudcam_core::camera::CameraState::Offline
        );
        assert!(
            view.status.reason.contains(&site.id),
            "{}",
            view.status.reason
        );
        // With its agent connected: what the worker says, unless the agent cannot pull it.
        let mut agent = crate::sites::AgentPresence {
            version: "test".into(),
            address: "192.0.2.7".into(),
            connected_ms: 1,
            updated_ms: 1,
            pushing: Vec::new(),
            failing: Default::default(),
            uplink_bps: 0,
            session: "s".into(),
        };
        cams.sites.set_presence(&site.id, &agent).await.unwrap();
        let shown = cams.get(&member, &id).await.unwrap().status;
        assert_eq!(shown.state, cloudcam_core::camera::CameraState::Unknown);
        agent
            .failing
            .insert(id.clone(), "the camera: Could not connect".into());
        cams.sites.set_presence(&site.id, &agent).await.unwrap();
        let shown = cams.get(&member, &id).await.unwrap().status;
        assert_eq!(shown.state, cloudcam_core::camera::CameraState::Unreachable);
        assert!(
            shown.reason.contains("Could not connect"),
            "{}",
            shown.reason
        );
        let spec = bus.latest_spec(&id).unwrap();
        assert!(spec.push);
        assert_eq!(spec.edge_site, site.id);
        assert_eq!(spec.source_url, "rtsp://10.0.0.5/s");
        assert_eq!(
            cams.sites.cameras(&site.id).await.unwrap(),
            vec![id.clone()]
        );
        // Its own push credential cannot be asked for; revoking the site replaces it.
        let err = cams.new_push_credential(&member, &id).await.err().unwrap();
        assert_eq!(err.code(), "not_pushed");
        let before = cams.store.secret(&id).await.unwrap().unwrap();
        cams.revoke_site(&member, &site.id).await.unwrap();
        let after = cams.store.secret(&id).await.unwrap().unwrap();
        assert_ne!(before.password, after.password);
        assert!(bus.latest_spec(&id).unwrap().source_generation > spec.source_generation);
        // The site keeps its cameras until they are deleted.
        let err = cams.sites.delete(&member, &site.id).await.err().unwrap();
        assert_eq!(err.code(), "conflict");
        cams.delete(&member, &id, None).await.unwrap();
        cams.sites.delete(&member, &site.id).await.unwrap();
    }

    #[tokio::test]
    async fn a_pushed_camera_gets_a_push_credential_once_and_a_new_one_on_request() {
        let (cams, bus) = service();
        let body = CreateCamera {
            url: String::new(),
            push: true,
            ..camera("encoder")
        };
        let created = cams.create(&admin(), body).await.unwrap();
        let id = created.info.id.clone();
        let credential = created.push_credential.expect("shown when made");
        assert_eq!(credential.username, id);
        assert_eq!(credential.password.len(), 32);
        assert!(!format!("{credential:?}").contains(&credential.password));
        assert!(
            cams.get(&admin(), &id)
                .await
                .unwrap()
                .push_credential
                .is_none()
        );
        let spec = bus.latest_spec(&id).unwrap();
        assert!(spec.push);
        assert_eq!(spec.source_url, "");
        assert_eq!(spec.credentials_ref, secret_key(&id));
        let stored = cams.store.secret(&id).await.unwrap().unwrap();
        assert_eq!(stored.password, credential.password);
        // A new credential replaces the stored one and makes the worker read it.
        let fresh = cams.new_push_credential(&admin(), &id).await.unwrap();
        let replaced = fresh.push_credential.unwrap();
        assert_ne!(replaced.password, credential.password);
        assert_eq!(
            cams.store.secret(&id).await.unwrap().unwrap().password,
            replaced.password
        );
        assert!(bus.latest_spec(&id).unwrap().source_generation > spec.source_generation);
        // Nothing of a pulled camera's is taken for it, nor given at creation.
        let change = UpdateCamera {
            url: Some("rtsp://cam.local/s".into()),
            ..Default::default()
        };
        let err = cams.update(&admin(), &id, change, None).await.unwrap_err();
        assert_eq!(err.code(), "invalid_field");
        let body = CreateCamera {
            push: true,
            ..camera("encoder")
        };
        let err = cams.create(&admin(), body).await.unwrap_err();
        assert_eq!(err.code(), "invalid_push");
        // A pulled camera has no push credential.
        let pulled = cams.create(&admin(), camera("p")).await.unwrap().info.id;
        let err = cams
            .new_push_credential(&admin(), &pulled)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "not_pushed");
    }

    #[tokio::test]
    async fn concurrent_changes_of_different_fields_all_stay() {
        let (cams, _) = service();
        let id = cams.create(&admin(), camera("a")).await.unwrap().info.id;
        let rename = UpdateCamera {
            name: Some("b".into()),
            ..Default::default()
        };
        let record = UpdateCamera {
            recording: Some(true),
            ..Default::default()
        };
        let who = admin();
        let (x, y) = tokio::join!(
            cams.update(&who, &id, rename, None),
            cams.update(&who, &id, record, None)
        );
        x.unwrap();
        y.unwrap();
        let got = cams.get(&admin(), &id).await.unwrap();
        assert_eq!((got.info.name.as_str(), got.info.recording), ("b", true));
        assert_eq!(got.version, 3);
    }

    #[tokio::test]
    async fn a_substream_gets_its_own_mountpoint_and_is_pulled_with_the_camera_credentials() {
        let (cams, bus) = service();
        let mut body = camera("a");
        body.sub_url = Some("rtsp://cam.local/sub".into());
        let created = cams.create(&admin(), body).await.unwrap();
        let id = created.info.id;
        assert_eq!(
            created.info.sub_url.as_deref(),
            Some("rtsp://cam.local/sub")
        );
        assert!(created.sub_status.is_some());
        let mp = cams.store.mountpoint(&id).await.unwrap().unwrap();
        let sub = mp.sub.expect("a substream mountpoint");
        assert_ne!((sub.id, sub.port), (mp.id, mp.port));
        let spec = bus.latest_spec(&id).unwrap();
        assert_eq!(spec.sub_source_url, "rtsp://cam.local/sub");
        assert_eq!(spec.rtp_targets[0].sub_video_port, u32::from(sub.port));
        assert_eq!(spec.sub_live_demand, 0);
        // A URL change of the main stream does not restart the substream, and back.
        let generation = spec.sub_source_generation;
        let change = |url: &str, sub: Option<&str>| UpdateCamera {
            url: Some(url.into()),
            sub_url: sub.map(Into::into),
            ..Default::default()
        };
        cams.update(&admin(), &id, change("rtsp://cam.local/s2", None), None)
            .await
            .unwrap();
        let spec = bus.latest_spec(&id).unwrap();
        assert_eq!(spec.sub_source_generation, generation);
        cams.update(
            &admin(),
            &id,
            change("rtsp://cam.local/s2", Some("rtsp://cam.local/sub2")),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            bus.latest_spec(&id).unwrap().sub_source_generation,
            generation + 1
        );
        // Credentials in the substream's URL are refused; removing it frees its port.
        let err = cams
            .update(
                &admin(),
                &id,
                change("rtsp://cam.local/s2", Some("rtsp://x:y@cam.local/sub")),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_sub_url");
        cams.update(&admin(), &id, change("rtsp://cam.local/s2", Some("")), None)
            .await
            .unwrap();
        assert_eq!(cams.store.mountpoint(&id).await.unwrap().unwrap().sub, None);
        let spec = bus.latest_spec(&id).unwrap();
        assert!(spec.sub_source_url.is_empty());
        assert_eq!(spec.rtp_targets[0].sub_video_port, 0);
        let claim = format!("cloudcam:port:{}", sub.port);
        assert_eq!(cams.state.get(&claim).await.unwrap(), None, "port freed");
    }

    #[tokio::test]
    async fn the_main_mountpoint_follows_the_cameras_video_codec() {
        let (cams, bus) = service();
        let mut body = camera("a");
        body.sub_url = Some("rtsp://cam.local/sub".into());
        let id = cams.create(&admin(), body).await.unwrap().info.id;
        let before = cams.store.mountpoint(&id).await.unwrap().unwrap();
        assert!(!before.h265);
        assert!(cams.follow_codec(&id, true).await.unwrap());
        let after = cams.store.mountpoint(&id).await.unwrap().unwrap();
        assert!(after.h265);
        assert_ne!(
            after.id, before.id,
            "a new id: a gateway keeping the old is not fooled"
        );
        assert_eq!((after.port, after.sub), (before.port, before.sub));
        let target = bus.latest_spec(&id).unwrap().rtp_targets[0].clone();
        assert_eq!(target.video_codec, "H265");
        // The substream's mountpoint stays H.264.
        assert!(!after.stream(true).unwrap().h265);
        assert!(
            !cams.follow_codec(&id, true).await.unwrap(),
            "nothing to do"
        );
        assert!(cams.follow_codec(&id, false).await.unwrap());
        assert_eq!(bus.latest_spec(&id).unwrap().rtp_targets[0].video_codec, "");
    }

    #[tokio::test]
    async fn a_camera_from_before_live_audio_is_given_its_audio_stream() {
        let (cams, bus) = service();
        let id = cams.create(&admin(), camera("a")).await.unwrap().info.id;
        let mut old = cams.store.mountpoint(&id).await.unwrap().unwrap();
        old.audio_port = None;
        cams.store.set_mountpoint(&id, &old).await.unwrap();
        assert!(cams.give_live_audio(&id).await.unwrap());
        let now = cams.store.mountpoint(&id).await.unwrap().unwrap();
        let port = now.audio_port.expect("an audio port");
        assert_ne!(now.id, old.id);
        let target = bus.latest_spec(&id).unwrap().rtp_targets[0].clone();
        assert_eq!(target.audio_port, u32::from(port));
        assert!(!cams.give_live_audio(&id).await.unwrap(), "nothing to do");
        // A G.711 camera's mountpoint comes to take it as it is, and back to Opus.
        assert!(cams.follow_audio(&id, "PCMA").await.unwrap());
        let target = bus.latest_spec(&id).unwrap().rtp_targets[0].clone();
        assert_eq!(
            (target.audio_codec.as_str(), target.audio_port),
            ("PCMA", u32::from(port))
        );
        assert!(
            !cams.follow_audio(&id, "PCMA").await.unwrap(),
            "nothing to do"
        );
        assert!(cams.follow_audio(&id, "").await.unwrap());
        assert_eq!(bus.latest_spec(&id).unwrap().rtp_targets[0].audio_codec, "");
    }

    #[tokio::test]
    async fn a_stale_version_is_refused() {
        let (cams, _) = service();
        let created = cams.create(&admin(), camera("a")).await.unwrap();
        let change = || UpdateCamera {
            name: Some("n".into()),
            ..Default::default()
        };
        cams.update(&admin(), &created.info.id, change(), Some(created.version))
            .await
            .unwrap();
        let err = cams
            .update(&admin(), &created.info.id, change(), Some(created.version))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "precondition_failed");
    }

    #[tokio::test]
    async fn a_deleted_camera_is_not_brought_back_by_a_late_writer() {
        let (cams, bus) = service();
        let id = cams.create(&admin(), camera("a")).await.unwrap().info.id;
        let mp = cams.store.mountpoint(&id).await.unwrap().unwrap();
        cams.delete(&admin(), &id, None).await.unwrap();
        // The demand pass and a failover that loaded the camera before the delete.
        cams.publish(&id).await.unwrap();
        assert!(!cams.move_mountpoint(&id, &mp).await.unwrap());
        assert!(cams.store.mountpoint(&id).await.unwrap().is_none());
        assert_eq!(
            cams.get(&admin(), &id).await.unwrap_err().code(),
            "camera_not_found"
        );
        assert!(
            bus.latest_spec(&id).is_none(),
            "the last word is a tombstone"
        );
    }

    #[tokio::test]
    async fn a_failed_mountpoint_is_shown_with_the_camera() {
        let (cams, _) = service();
        let view = cams.create(&admin(), camera("a")).await.unwrap();
        assert!(view.served_by.gateway_error.is_some());
    }

    #[tokio::test]
    async fn a_user_sees_only_what_is_theirs_or_shared() {
        let (cams, _) = service();
        let member = Caller {
            name: "m".into(),
            role: Role::Member,
        };
        let viewer = Caller {
            name: "v".into(),
            role: Role::Viewer,
        };
        for (name, role) in [("m", Role::Member), ("v", Role::Viewer)] {
            cams.users
                .create(
                    &admin(),
                    crate::users::CreateUser {
                        name: name.into(),
                        password: "long enough".into(),
                        role,
                    },
                )
                .await
                .unwrap();
        }
        let a = cams.create(&member, camera("a")).await.unwrap().info.id;
        let b = cams.create(&member, camera("b")).await.unwrap().info.id;
        assert_eq!(
            cams.create(&viewer, camera("c")).await.unwrap_err().code(),
            "forbidden"
        );
        assert!(cams.list(&viewer).await.unwrap().is_empty());
        assert_eq!(
            cams.get(&viewer, &a).await.unwrap_err().code(),
            "camera_not_found"
        );
        let live = Grant {
            live: true,
            ..Default::default()
        };
        let e = cams.share(&viewer, &a, "v", live).await.unwrap_err();
        assert_eq!(e.code(), "camera_not_found");
        cams.share(&member, &a, "v", live).await.unwrap();
        let listed: Vec<String> = cams
            .list(&viewer)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.info.id)
            .collect();
        assert_eq!(listed, vec![a.clone()]);
        assert_eq!(cams.get(&viewer, &a).await.unwrap().access, live);
        assert_eq!(
            cams.get(&viewer, &b).await.unwrap_err().code(),
            "camera_not_found"
        );
        let e = cams
            .update(&viewer, &a, UpdateCamera::default(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "forbidden");
        assert_eq!(cams.list(&member).await.unwrap().len(), 2);
        cams.share(&member, &a, "v", Grant::default())
            .await
            .unwrap();
        assert!(cams.list(&viewer).await.unwrap().is_empty());
    }
}
