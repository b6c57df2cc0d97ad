//! Live demand: viewer sessions in the shared state (with expiry, so they outlive a signal
//! restart and vanish with a dead instance), and the camera's desired state following them.
//! The first viewer publishes `live_demand` at once; it returns to 0 only `demand_grace_ms`
//! after the last viewer left. Every signal instance runs the same idempotent pass.

use crate::app::AppState;
use crate::cameras;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const VIEWER_PREFIX: &str = "cloudcam:viewer:";

fn viewer_key(camera_id: &str, view_id: &str) -> String {
    format!("{VIEWER_PREFIX}{camera_id}:{view_id}")
}

/// When a camera last had a viewer (ms since the epoch).
fn seen_key(camera_id: &str) -> String {
    format!("cloudcam:demand:{camera_id}")
}

/// One open view, registered for as long as it lives; dropping it ends the registration.
pub struct Viewing {
    refresher: tokio::task::JoinHandle<()>,
    app: Arc<AppState>,
    camera_id: String,
    key: String,
}

impl Viewing {
    /// Registers the view and makes sure the camera is wanted (publishing at once if not).
    pub async fn start(app: Arc<AppState>, camera_id: &str, view_id: &str) -> Self {
        let key = viewer_key(camera_id, view_id);
        let ttl = Duration::from_millis(app.config.viewer_ttl_ms);
        let (state, k) = (app.state.clone(), key.clone());
        let refresher = tokio::spawn(async move {
            loop {
                if let Err(e) = state.set(&k, b"1", Some(ttl)).await {
                    tracing::warn!(key = %k, error = %e, "cannot refresh a viewer session");
                }
                tokio::time::sleep(ttl / 3).await;
            }
        });
        let _ = app.state.set(&key, b"1", Some(ttl)).await;
        if let Err(e) = want(&app, camera_id).await {
            tracing::warn!(camera = %camera_id, error = %e, "cannot publish live demand");
        }
        Self {
            refresher,
            app,
            camera_id: camera_id.to_string(),
            key,
        }
    }
}

impl Drop for Viewing {
    fn drop(&mut self) {
        self.refresher.abort();
        let (app, key) = (self.app.clone(), std::mem::take(&mut self.key));
        let camera_id = std::mem::take(&mut self.camera_id);
        tokio::spawn(async move {
            // The grace period runs from the moment the viewer left.
            let _ = seen(&app, &camera_id).await;
            let _ = app.state.del(&key).await;
        });
    }
}

/// Notes that the camera has (or just had) a viewer.
async fn seen(app: &AppState, camera_id: &str) -> Result<(), crate::error::ApiError> {
    let grace = Duration::from_millis(app.config.demand_grace_ms);
    app.state
        .set(
            &seen_key(camera_id),
            cloudcam_core::now_ms().to_string().as_bytes(),
            Some(grace * 2 + Duration::from_secs(60)),
        )
        .await?;
    Ok(())
}

/// Publishes live demand for a camera that has none yet.
async fn want(app: &AppState, camera_id: &str) -> Result<(), crate::error::ApiError> {
    let mut record = cameras::load(app, camera_id).await?;
    watched(app, &mut record).await
}

/// The camera has a viewer: notes when, and publishes live demand unless it has it already.
async fn watched(
    app: &AppState,
    record: &mut cameras::CameraRecord,
) -> Result<(), crate::error::ApiError> {
    seen(app, &record.info.id).await?;
    if record.live_demand == 0 {
        record.live_demand = 1;
        cameras::publish(app, record).await?;
        tracing::info!(camera = %record.info.id, "first viewer: camera wanted");
    }
    Ok(())
}

/// One pass: live demand follows the registered viewers, with the grace period on the way down.
async fn reconcile(app: &AppState) -> Result<(), crate::error::ApiError> {
    let mut with_viewers: HashSet<String> = HashSet::new();
    for (key, _) in app.state.scan_prefix(VIEWER_PREFIX).await? {
        if let Some((camera, _view)) = key[VIEWER_PREFIX.len()..].split_once(':') {
            with_viewers.insert(camera.to_string());
        }
    }
    let grace = app.config.demand_grace_ms as i64;
    let now = cloudcam_core::now_ms();
    for mut record in cameras::all(app).await? {
        let id = record.info.id.clone();
        if with_viewers.contains(&id) {
            watched(app, &mut record).await?;
        } else if record.live_demand > 0 {
            let seen = app
                .state
                .get(&seen_key(&id))
                .await?
                .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
                .unwrap_or(0);
            if now - seen >= grace {
                record.live_demand = 0;
                cameras::publish(app, &record).await?;
                tracing::info!(camera = %id, "no viewer for the grace period: camera released");
            }
        }
    }
    Ok(())
}

/// Runs [`reconcile`] once a second.
pub fn spawn(app: Arc<AppState>) {
    actix_rt::spawn(async move {
        let mut failing = false;
        loop {
            match reconcile(&app).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot reconcile live demand");
                    failing = true;
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}
