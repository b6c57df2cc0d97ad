//! Signal's stores, shaped like its domain, over the shared state's structures:
//!
//! | what | key | structure |
//! |---|---|---|
//! | camera registry | `cloudcam:cameras` | set of ids |
//! | camera record (user-edited) | `cloudcam:camera:<id>` | versioned record (compare-and-set) |
//! | credentials | `cloudcam:secret:<id>` | value |
//! | mountpoint (written by the pool) | `cloudcam:mountpoint:<id>` | value |
//! | mountpoint creation error | `cloudcam:mountpoint-error:<id>` | value |
//! | viewer sessions | `cloudcam:viewers` | sorted set `<camera>/<view>` by expiry |
//! | live demand | `cloudcam:demand` | sorted set of wanted cameras by last viewer seen |
//! | mountpoint ids | `cloudcam:mountpoint-ids` | counter (never reused) |
//! | RTP port claims | `cloudcam:port:<port>` | value set NX, holding the camera id |
//! | one writer per camera | `cloudcam:lease:camera:<id>` | value set NX with expiry |
//! | a user's cameras (owned or shared) | `cloudcam:user-cameras:<user>` | set of ids |
//!
//! No listing scans keys: every one reads a set or a sorted set, then fetches by key.

use crate::error::ApiError;
use crate::model::{CameraRecord, Mountpoint, Stored};
use cloudcam_core::camera::{CameraSecret, CameraStatus, secret_key, status_key, substream_id};
use cloudcam_core::state::{Lease, StateError, StateStore, decode, get_json, set_json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const IDS: &str = "cloudcam:cameras";
/// Cameras whose desired state changed and may not have reached the bus yet.
const SPEC_OUTBOX: &str = "cloudcam:spec-outbox";
const VIEWERS: &str = "cloudcam:viewers";

/// A user's open live views (members: view ids; scores: expiry), for the per-user bound.
fn user_views_key(user: &str) -> String {
    format!("cloudcam:user-views:{user}")
}
const DEMAND: &str = "cloudcam:demand";
const MOUNTPOINT_IDS: &str = "cloudcam:mountpoint-ids";
const PORT_CURSOR: &str = "cloudcam:port-cursor";
const PARTITION_CURSOR: &str = "cloudcam:partition-cursor";
/// Mountpoint ids start above this (Janus's own samples use low ids).
const FIRST_MOUNTPOINT_ID: u64 = 1000;
/// How long one writer may hold a camera before the lease expires by itself.
const LEASE_TTL: Duration = Duration::from_secs(10);
/// How long a writer waits for a camera another writer holds.
const LEASE_WAIT: Duration = Duration::from_secs(5);

fn record_key(id: &str) -> String {
    format!("cloudcam:camera:{id}")
}

fn mountpoint_key(id: &str) -> String {
    format!("cloudcam:mountpoint:{id}")
}

fn mountpoint_error_key(id: &str) -> String {
    format!("cloudcam:mountpoint-error:{id}")
}

fn user_cameras_key(user: &str) -> String {
    format!("cloudcam:user-cameras:{user}")
}

/// Who claims a camera's live-audio RTP port.
pub fn audio_id(camera_id: &str) -> String {
    format!("{camera_id}~audio")
}

fn port_key(port: u16) -> String {
    format!("cloudcam:port:{port}")
}

/// Cameras: registry, records, credentials, mountpoints and statuses.
#[derive(Clone)]
pub struct CameraStore {
    state: Arc<dyn StateStore>,
}

impl CameraStore {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self { state }
    }

    /// Holds the camera against every other writer (in any signal instance) until dropped.
    pub async fn lease(&self, id: &str) -> Result<Lease, StateError> {
        Lease::acquire(
            self.state.clone(),
            format!("cloudcam:lease:camera:{id}"),
            LEASE_TTL,
            LEASE_WAIT,
        )
        .await
    }

    /// Stores a new camera; fails if the id exists.
    pub async fn insert(&self, record: &CameraRecord) -> Result<Option<u64>, StateError> {
        let raw = serde_json::to_vec(record).expect("serializable");
        let id = &record.info.id;
        let version = self.state.put_versioned(&record_key(id), 0, &raw).await?;
        if version.is_some() {
            self.state.set_add(IDS, id).await?;
        }
        Ok(version)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Stored>, StateError> {
        let key = record_key(id);
        match self.state.get_versioned(&key).await? {
            None => Ok(None),
            Some(v) => Ok(Some(Stored {
                version: v.version,
                record: decode(&key, &v.value)?,
            })),
        }
    }

    /// The camera's record, or `camera_not_found`.
    pub async fn require(&self, id: &str) -> Result<Stored, ApiError> {
        self.get(id)
            .await?
            .ok_or_else(|| ApiError::CameraNotFound(id.to_string()))
    }

    /// Replaces the record if it is still at `expected`; the new version, or `None` if another
    /// write came first.
    pub async fn replace(
        &self,
        expected: u64,
        record: &CameraRecord,
    ) -> Result<Option<u64>, StateError> {
        let raw = serde_json::to_vec(record).expect("serializable");
        self.state
            .put_versioned(&record_key(&record.info.id), expected, &raw)
            .await
    }

    /// Removes the record (at `expected`, or any version) and what hangs off it.
    pub async fn remove(&self, id: &str, expected: Option<u64>) -> Result<bool, StateError> {
        if !self.state.del_versioned(&record_key(id), expected).await? {
            return Ok(false);
        }
        self.forget(id).await?;
        Ok(true)
    }

    /// Drops everything kept about a camera that has no record (after a delete, or what a
    /// writer racing a delete left behind).
    pub async fn forget(&self, id: &str) -> Result<(), StateError> {
        self.state.set_remove(IDS, id).await?;
        let sub = substream_id(id);
        if let Some(mp) = self.mountpoint(id).await? {
            self.state
                .del_if_eq(&port_key(mp.port), id.as_bytes())
                .await?;
            if let Some(s) = mp.sub {
                self.state
                    .del_if_eq(&port_key(s.port), sub.as_bytes())
                    .await?;
            }
            if let Some(port) = mp.audio_port {
                self.state
                    .del_if_eq(&port_key(port), audio_id(id).as_bytes())
                    .await?;
            }
        }
        for key in [
            secret_key(id),
            status_key(id),
            status_key(&sub),
            mountpoint_key(id),
            mountpoint_error_key(id),
        ] {
            self.state.del(&key).await?;
        }
        self.state.zrem(DEMAND, &[id.to_string(), sub]).await
    }

    /// Notes that `user` owns or shares the camera, so their listing finds it without reading
    /// every camera.
    pub async fn index_for_user(&self, user: &str, id: &str) -> Result<(), StateError> {
        self.state.set_add(&user_cameras_key(user), id).await
    }

    pub async fn unindex_for_user(&self, user: &str, id: &str) -> Result<(), StateError> {
        self.state.set_remove(&user_cameras_key(user), id).await
    }

    /// The cameras `user` owns or shares that exist, oldest first; ids of cameras deleted
    /// meanwhile are dropped from the index.
    pub async fn user_records(&self, user: &str) -> Result<Vec<Stored>, StateError> {
        let ids = self.state.set_members(&user_cameras_key(user)).await?;
        let records = self.records(&ids).await?;
        if records.len() < ids.len() {
            let present: std::collections::HashSet<&str> =
                records.iter().map(|s| s.record.info.id.as_str()).collect();
            for id in ids.iter().filter(|id| !present.contains(id.as_str())) {
                self.unindex_for_user(user, id).await?;
            }
        }
        Ok(records)
    }

    pub async fn ids(&self) -> Result<Vec<String>, StateError> {
        self.state.set_members(IDS).await
    }

    /// Notes, before publishing, that the camera's desired state is to be published: if the
    /// bus is away (or this process dies), the outbox pass publishes it later.
    pub async fn unpublished(&self, id: &str) -> Result<(), StateError> {
        self.state.set_add(SPEC_OUTBOX, id).await
    }

    /// The camera's desired state, as stored, reached the bus.
    pub async fn published(&self, id: &str) -> Result<(), StateError> {
        self.state.set_remove(SPEC_OUTBOX, id).await
    }

    /// Cameras whose desired state has yet to reach the bus.
    pub async fn outbox(&self) -> Result<Vec<String>, StateError> {
        self.state.set_members(SPEC_OUTBOX).await
    }

    /// Every camera, oldest first (unreadable records are skipped and logged).
    pub async fn all(&self) -> Result<Vec<Stored>, StateError> {
        let ids = self.ids().await?;
        self.records(&ids).await
    }

    /// The records of `ids` that exist, oldest first.
    pub async fn records(&self, ids: &[String]) -> Result<Vec<Stored>, StateError> {
        let keys: Vec<String> = ids.iter().map(|id| record_key(id)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for (key, v) in keys.iter().zip(self.state.mget_versioned(&keys).await?) {
            let Some(v) = v else { continue };
            match decode::<CameraRecord>(key, &v.value) {
                Ok(record) => out.push(Stored {
                    version: v.version,
                    record,
                }),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable camera record"),
            }
        }
        out.sort_by(|a, b| {
            (a.record.info.created_ms, &a.record.info.id)
                .cmp(&(b.record.info.created_ms, &b.record.info.id))
        });
        Ok(out)
    }

    pub async fn secret(&self, id: &str) -> Result<Option<CameraSecret>, StateError> {
        get_json(&*self.state, &secret_key(id)).await
    }

    /// The credentials of `ids`, in order.
    pub async fn secrets(&self, ids: &[String]) -> Result<Vec<Option<CameraSecret>>, StateError> {
        self.json_many(ids, secret_key).await
    }

    pub async fn set_secret(&self, id: &str, s: Option<&CameraSecret>) -> Result<(), StateError> {
        match s {
            Some(s) => set_json(&*self.state, &secret_key(id), s, None).await,
            None => self.state.del(&secret_key(id)).await,
        }
    }

    pub async fn mountpoint(&self, id: &str) -> Result<Option<Mountpoint>, StateError> {
        get_json(&*self.state, &mountpoint_key(id)).await
    }

    pub async fn set_mountpoint(&self, id: &str, mp: &Mountpoint) -> Result<(), StateError> {
        set_json(&*self.state, &mountpoint_key(id), mp, None).await
    }

    /// The mountpoints of `ids`, in order (`None` where a camera has none).
    pub async fn mountpoints(&self, ids: &[String]) -> Result<Vec<Option<Mountpoint>>, StateError> {
        self.json_many(ids, mountpoint_key).await
    }

    /// One camera's status, if a worker has stored one.
    pub async fn status(&self, id: &str) -> Result<Option<CameraStatus>, StateError> {
        Ok(self.statuses(&[id.to_string()]).await?.pop().flatten())
    }

    /// The statuses of `ids`, in order.
    pub async fn statuses(&self, ids: &[String]) -> Result<Vec<Option<CameraStatus>>, StateError> {
        self.json_many(ids, status_key).await
    }

    /// Why each of `ids`' mountpoints could not be created, in order.
    pub async fn mountpoint_errors(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StateError> {
        self.json_many(ids, mountpoint_error_key).await
    }

    /// Why the owning recorder is not recording each camera, where it says so.
    pub async fn recording_problems(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StateError> {
        self.json_many(ids, cloudcam_core::media::recording_problem_key)
            .await
    }

    pub async fn set_mountpoint_error(
        &self,
        id: &str,
        error: Option<&str>,
    ) -> Result<(), StateError> {
        match error {
            Some(e) => set_json(&*self.state, &mountpoint_error_key(id), &e, None).await,
            None => self.state.del(&mountpoint_error_key(id)).await,
        }
    }

    async fn json_many<T: serde::de::DeserializeOwned>(
        &self,
        ids: &[String],
        key: fn(&str) -> String,
    ) -> Result<Vec<Option<T>>, StateError> {
        let keys: Vec<String> = ids.iter().map(|id| key(id)).collect();
        cloudcam_core::state::get_json_many(&*self.state, &keys).await
    }
}

/// Viewer sessions and the live demand they drive.
#[derive(Clone)]
pub struct DemandStore {
    state: Arc<dyn StateStore>,
}

impl DemandStore {
    pub fn new(state: Arc<dyn StateStore>) -> Self {
        Self { state }
    }

    /// Registers (or refreshes) a view until `ttl` from now.
    pub async fn view(
        &self,
        camera_id: &str,
        view_id: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let expires = cloudcam_core::now_ms() + ttl.as_millis() as i64;
        self.state
            .zadd(VIEWERS, &format!("{camera_id}/{view_id}"), expires)
            .await?;
        self.state
            .zadd(&user_views_key(user), view_id, expires)
            .await
    }

    pub async fn unview(
        &self,
        camera_id: &str,
        view_id: &str,
        user: &str,
    ) -> Result<(), StateError> {
        self.state
            .zrem(VIEWERS, &[format!("{camera_id}/{view_id}")])
            .await?;
        self.state
            .zrem(&user_views_key(user), &[view_id.to_string()])
            .await
    }

    /// Live views a user has open on any signal instance (expired ones are dropped first).
    pub async fn user_views(&self, user: &str) -> Result<u64, StateError> {
        let key = user_views_key(user);
        self.state
            .zrem_range_by_score(&key, i64::MIN, cloudcam_core::now_ms())
            .await?;
        self.state.zcard(&key).await
    }

    /// Cameras with at least one live view (expired views are dropped on the way).
    pub async fn watched(&self) -> Result<Vec<String>, StateError> {
        let now = cloudcam_core::now_ms();
        self.state
            .zrem_range_by_score(VIEWERS, i64::MIN, now)
            .await?;
        let mut out: Vec<String> = self
            .state
            .zrange_by_score(VIEWERS, now + 1, i64::MAX)
            .await?
            .into_iter()
            .filter_map(|(m, _)| Some(m.split_once('/')?.0.to_string()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Wanted cameras and when each last had a viewer (ms since the epoch).
    pub async fn wanted(&self) -> Result<HashMap<String, i64>, StateError> {
        Ok(self
            .state
            .zrange_by_score(DEMAND, i64::MIN, i64::MAX)
            .await?
            .into_iter()
            .collect())
    }

    /// Live views of one camera now, on every signal instance.
    pub async fn viewers_of(&self, camera_id: &str) -> Result<usize, StateError> {
        let prefix = format!("{camera_id}/");
        Ok(self
            .state
            .zrange_by_score(VIEWERS, cloudcam_core::now_ms() + 1, i64::MAX)
            .await?
            .iter()
            .filter(|(m, _)| m.starts_with(&prefix))
            .count())
    }

    pub async fn is_wanted(&self, camera_id: &str) -> Result<bool, StateError> {
        Ok(self.wanted_since(camera_id).await?.is_some())
    }

    /// When a wanted camera last had a viewer; `None` if it is not wanted.
    pub async fn wanted_since(&self, camera_id: &str) -> Result<Option<i64>, StateError> {
        self.state.zscore(DEMAND, camera_id).await
    }

    /// Marks the camera wanted, with a viewer seen now.
    pub async fn want(&self, camera_id: &str) -> Result<(), StateError> {
        self.state
            .zadd(DEMAND, camera_id, cloudcam_core::now_ms())
            .await
    }

    /// Notes a viewer seen now, only if the camera is wanted (a release is not undone).
    pub async fn seen(&self, camera_id: &str) -> Result<(), StateError> {
        if self.is_wanted(camera_id).await? {
            self.want(camera_id).await?;
        }
        Ok(())
    }

    pub async fn release(&self, camera_id: &str) -> Result<(), StateError> {
        self.state.zrem(DEMAND, &[camera_id.to_string()]).await
    }
}

/// Mountpoint ids and RTP ports, safe across any number of signal instances: ids come from a
/// counter (never reused), ports are claimed with SET NX and released when the camera goes.
#[derive(Clone)]
pub struct Allocator {
    state: Arc<dyn StateStore>,
    ports: std::ops::RangeInclusive<u16>,
}

impl Allocator {
    pub fn new(state: Arc<dyn StateStore>, ports: std::ops::RangeInclusive<u16>) -> Self {
        Self { state, ports }
    }

    pub async fn next_id(&self) -> Result<u64, StateError> {
        Ok(FIRST_MOUNTPOINT_ID + self.state.incr(MOUNTPOINT_IDS).await? as u64)
    }

    /// Whose turn it is among the desired-state topic's `partitions` to get the next camera.
    pub async fn next_partition(&self, partitions: i32) -> Result<i32, StateError> {
        let turn = self.state.incr(PARTITION_CURSOR).await?;
        Ok(turn.rem_euclid(i64::from(partitions.max(1))) as i32)
    }

    /// Claims a free port for `camera_id`, starting after the last one handed out.
    pub async fn claim_port(&self, camera_id: &str) -> Result<u16, ApiError> {
        let (min, max) = (*self.ports.start(), *self.ports.end());
        let len = u64::from(max - min) + 1;
        let start = self.state.incr(PORT_CURSOR).await? as u64;
        for i in 0..len {
            let port = min + ((start + i) % len) as u16;
            if self
                .state
                .set_nx(&port_key(port), camera_id.as_bytes(), None)
                .await?
            {
                return Ok(port);
            }
        }
        Err(ApiError::BadRequest(
            "no_capacity",
            "every mountpoint port of the Janus pool is in use".into(),
        ))
    }

    pub async fn release_port(&self, camera_id: &str, port: u16) -> Result<(), StateError> {
        self.state
            .del_if_eq(&port_key(port), camera_id.as_bytes())
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcam_core::state::MemoryState;

    #[tokio::test]
    async fn ports_are_claimed_once_and_ids_never_repeat() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::new());
        let a = Allocator::new(state.clone(), 5000..=5002);
        let b = Allocator::new(state, 5000..=5002);
        let mut ports = vec![
            a.claim_port("c1").await.unwrap(),
            b.claim_port("c2").await.unwrap(),
            a.claim_port("c3").await.unwrap(),
        ];
        assert_eq!(b.claim_port("c4").await.unwrap_err().code(), "no_capacity");
        a.release_port("c2", ports[1]).await.unwrap();
        assert_eq!(b.claim_port("c5").await.unwrap(), ports[1]);
        ports.sort();
        assert_eq!(ports, vec![5000, 5001, 5002]);
        let ids = [a.next_id().await.unwrap(), b.next_id().await.unwrap()];
        assert_ne!(ids[0], ids[1]);
    }

    #[tokio::test]
    async fn demand_follows_views_and_releases() {
        let d = DemandStore::new(Arc::new(MemoryState::new()));
        d.view("cam", "v1", "ann", Duration::from_secs(30))
            .await
            .unwrap();
        d.view("gone", "v2", "ann", Duration::ZERO).await.unwrap();
        assert_eq!(d.watched().await.unwrap(), vec!["cam".to_string()]);
        // Per user: only the view that has not expired counts.
        assert_eq!(d.user_views("ann").await.unwrap(), 1);
        d.unview("cam", "v1", "ann").await.unwrap();
        assert_eq!(d.user_views("ann").await.unwrap(), 0);
        d.seen("cam").await.unwrap();
        assert!(!d.is_wanted("cam").await.unwrap());
        d.want("cam").await.unwrap();
        assert!(d.wanted().await.unwrap().contains_key("cam"));
        d.release("cam").await.unwrap();
        assert!(d.wanted().await.unwrap().is_empty());
    }
}
