//! Live demand: viewer sessions in the shared state (with expiry, so they outlive a signal
//! restart and vanish with a dead instance), and the camera's desired state following them.
//! The first viewer makes a camera wanted and publishes at once; it is released only
//! `demand_grace_ms` after the last viewer left. Every signal instance runs the same
//! idempotent pass, which reads only the viewer and demand sets (never every camera).
//!
//! Demand is kept per stream: a camera's main stream by its id, its substream by
//! [`substream_id`] (the camera wall watches the substream, full screen the main stream), and
//! each is pulled only while it is wanted.

use crate::cameras::Cameras;
use crate::error::ApiError;
use crate::model::Mountpoint;
use crate::store::DemandStore;
use cloudcam_core::camera::{CameraState, camera_of};
use cloudcam_core::state::StateStore;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Demand {
    store: DemandStore,
    cameras: Cameras,
    grace_ms: i64,
    viewer_ttl: Duration,
    max_views_per_user: usize,
}

/// One open view, registered for as long as it lives; dropping it ends the registration.
pub struct Viewing {
    refresher: tokio::task::JoinHandle<()>,
    store: DemandStore,
    camera_id: String,
    view_id: String,
    user: String,
}

impl Demand {
    pub fn new(
        state: Arc<dyn StateStore>,
        cameras: Cameras,
        grace: Duration,
        viewer_ttl: Duration,
        max_views_per_user: usize,
    ) -> Self {
        Self {
            store: DemandStore::new(state),
            cameras,
            grace_ms: grace.as_millis() as i64,
            viewer_ttl,
            max_views_per_user,
        }
    }

    /// Registers a view of `user` of one stream (`camera_id` is the camera's id, or its
    /// substream's) and makes sure the stream is wanted (publishing at once if not). Refused
    /// when the user has the most live views allowed open already, on any signal instance.
    /// The first viewer of a stream that is not live gets a mountpoint without any earlier
    /// picture (see [`Demand::forget_past`]); `mountpoint` is that stream's.
    pub async fn start_view(
        &self,
        camera_id: &str,
        view_id: &str,
        user: &str,
        mountpoint: &Mountpoint,
    ) -> Result<Viewing, ApiError> {
        let (store, ttl) = (self.store.clone(), self.viewer_ttl);
        let (c, v, u) = (camera_id.to_string(), view_id.to_string(), user.to_string());
        let live = self
            .cameras
            .store
            .status(camera_id)
            .await?
            .is_some_and(|s| s.state == CameraState::Live);
        // Views of a camera that is not live start one after the other, so that exactly the
        // first one resets the mountpoint, before anyone watches it.
        let lease = if live {
            None
        } else {
            Some(self.cameras.store.lease(camera_id).await?)
        };
        // Registered first, then counted: two views opened at once cannot both slip under.
        store.view(&c, &v, &u, ttl).await?;
        if store.user_views(&u).await? > self.max_views_per_user as u64 {
            store.unview(&c, &v, &u).await?;
            return Err(ApiError::TooManyViews(self.max_views_per_user));
        }
        if lease.is_some() && store.viewers_of(&c).await? == 1 {
            self.forget_past(camera_id, mountpoint).await;
        }
        drop(lease);
        let refresher = tokio::spawn({
            let (store, c, v, u) = (store.clone(), c.clone(), v.clone(), u.clone());
            async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    if let Err(e) = store.view(&c, &v, &u, ttl).await {
                        tracing::warn!(camera = %c, error = %e, "cannot refresh a viewer session");
                    }
                }
            }
        });
        if let Err(e) = self.want(camera_id).await {
            tracing::warn!(camera = %camera_id, error = %e, "cannot publish live demand");
        }
        Ok(Viewing {
            refresher,
            store,
            camera_id: c,
            view_id: v,
            user: u,
        })
    }

    /// Drops what the camera's mountpoint holds from an earlier session. Janus hands every new
    /// viewer the last keyframe it relayed, however old: for a camera that is not live, that
    /// is a picture from before the watch, and the new session's frames would be decoded onto
    /// it until their first keyframe. Re-creating the mountpoint (nobody watches it) empties
    /// it; the first frame the viewer then decodes is the camera's next keyframe.
    async fn forget_past(&self, camera_id: &str, mountpoint: &Mountpoint) {
        let pool = self.cameras.pool();
        let reset = async {
            pool.remove(mountpoint).await?;
            pool.ensure(mountpoint).await
        };
        match reset.await {
            Ok(()) => {
                tracing::debug!(camera = %camera_id, "first viewer of a camera not live: its mountpoint starts empty")
            }
            // The pool's pass re-creates a missing mountpoint; the view may see one old frame.
            Err(e) => {
                tracing::warn!(camera = %camera_id, error = %e, "cannot empty the mountpoint for a fresh start")
            }
        }
    }

    /// The stream has a viewer: it is wanted from now (its camera published unless it was
    /// already).
    async fn want(&self, camera_id: &str) -> Result<(), ApiError> {
        let was = self.store.is_wanted(camera_id).await?;
        self.store.want(camera_id).await?;
        if !was {
            self.cameras.publish(camera_of(camera_id).0).await?;
            tracing::info!(camera = %camera_id, "first viewer: camera wanted");
        }
        Ok(())
    }

    /// One pass: live demand follows the registered viewers, with the grace period on the way
    /// down.
    pub async fn pass(&self) -> Result<(), ApiError> {
        let watched: HashSet<String> = self.store.watched().await?.into_iter().collect();
        let wanted = self.store.wanted().await?;
        let now = cloudcam_core::now_ms();
        for id in &watched {
            if wanted.contains_key(id) {
                self.store.want(id).await?;
            } else if self.cameras.store.get(camera_of(id).0).await?.is_some() {
                self.want(id).await?;
            }
        }
        for (id, seen) in wanted {
            if watched.contains(&id) || now - seen < self.grace_ms {
                continue;
            }
            let camera = camera_of(&id).0;
            let _lease = self.cameras.store.lease(camera).await?;
            // A viewer may have come back while this pass ran.
            let fresh = self.store.wanted_since(&id).await?;
            if fresh.is_some_and(|s| cloudcam_core::now_ms() - s < self.grace_ms) {
                continue;
            }
            self.store.release(&id).await?;
            self.cameras.publish_held(camera).await?;
            tracing::info!(camera = %id, "no viewer for the grace period: camera released");
        }
        Ok(())
    }

    /// Runs [`Demand::pass`] once a second.
    pub fn spawn(self) {
        cloudcam_core::ops::spawn_pass("live demand", Duration::from_secs(1), move || {
            let demand = self.clone();
            async move { demand.pass().await }
        });
    }
}

impl Drop for Viewing {
    fn drop(&mut self) {
        self.refresher.abort();
        let store = self.store.clone();
        let camera_id = std::mem::take(&mut self.camera_id);
        let view_id = std::mem::take(&mut self.view_id);
        let user = std::mem::take(&mut self.user);
        tokio::spawn(async move {
            // The grace period runs from the moment the viewer left.
            let _ = store.seen(&camera_id).await;
            let _ = store.unview(&camera_id, &view_id, &user).await;
        });
    }
}
