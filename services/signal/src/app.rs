//! Wiring: builds the domain services from the backends chosen in `main` and starts the
//! background passes. Nothing here holds domain logic; handlers ([`crate::api`],
//! [`crate::ws`]) take what they need from [`AppState`].

use crate::auth::Sessions;
use crate::cameras::Cameras;
use crate::config::SignalConfig;
use crate::demand::Demand;
use crate::gateways::Gateways;
use crate::pool::Pool;
use crate::recordings::Recordings;
use crate::store::CameraStore;
use crate::users::Users;
use cloudcam_core::bus::Bus;
use cloudcam_core::camera::CameraStatus;
use cloudcam_core::state::StateStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub struct AppState {
    pub cameras: Cameras,
    pub demand: Demand,
    pub recordings: Recordings,
    pub gateways: Gateways,
    pub sessions: Sessions,
    pub users: Users,
    pub max_views_per_socket: usize,
    pub offer_timeout: Duration,
    pub playout: crate::config::PlayoutSettings,
    /// Live workers (for `GET /workers`).
    pub state: Arc<dyn StateStore>,
    pub bus: Arc<dyn Bus>,
    pub media: Arc<dyn object_store::ObjectStore>,
    /// Camera status changes, for every open WebSocket.
    pub statuses: broadcast::Sender<(String, CameraStatus)>,
}

impl AppState {
    pub fn new(
        config: &SignalConfig,
        bus: Arc<dyn Bus>,
        state: Arc<dyn StateStore>,
        media: Arc<dyn object_store::ObjectStore>,
    ) -> Self {
        let pool = Arc::new(Pool::new(config.janus.clone()));
        let users = Users::new(state.clone());
        let cameras = Cameras::new(state.clone(), bus.clone(), pool, users.clone());
        Self {
            demand: Demand::new(
                state.clone(),
                cameras.clone(),
                Duration::from_millis(config.demand_grace_ms),
                Duration::from_millis(config.viewer_ttl_ms),
                config.max_views_per_user,
            ),
            gateways: Gateways::new(
                cameras.clone(),
                Duration::from_millis(config.janus.reconcile_interval_ms),
            ),
            recordings: Recordings::new(state.clone(), media.clone(), config.max_clip_exports),
            sessions: Sessions::new(state.clone(), users.clone(), config.auth.clone()),
            users,
            max_views_per_socket: config.max_views_per_socket,
            offer_timeout: Duration::from_millis(config.offer_timeout_ms),
            playout: config.playout.clone(),
            cameras,
            state,
            bus,
            media,
            statuses: broadcast::channel(1024).0,
        }
    }

    pub fn pool(&self) -> &Pool {
        self.cameras.pool()
    }

    /// Starts the event relay, the gateway pass, the demand pass and the outbox pass.
    pub fn spawn_background(&self) -> anyhow::Result<()> {
        spawn_event_relay(
            self.bus.clone(),
            self.cameras.store.clone(),
            self.statuses.clone(),
        )?;
        self.gateways.clone().spawn();
        self.demand.clone().spawn();
        let cameras = self.cameras.clone();
        cloudcam_core::ops::spawn_pass("spec outbox", Duration::from_secs(1), move || {
            let cameras = cameras.clone();
            async move { cameras.publish_outbox().await }
        });
        Ok(())
    }

    /// Adds what `/readyz` checks: Kafka, Redis, the media store and at least one healthy
    /// gateway.
    pub fn add_readiness(self: &Arc<Self>, readiness: &cloudcam_core::ops::Readiness) {
        let a = self.clone();
        readiness.add_dependencies(
            self.bus.clone(),
            self.state.clone(),
            Some(self.media.clone()),
        );
        readiness.add("janus", move || {
            let up = a.pool().any_up();
            async move {
                if up {
                    Ok(())
                } else {
                    Err("no Janus gateway answered its last health check".into())
                }
            }
        });
    }
}

/// Relays camera events from the bus to every WebSocket as full statuses.
fn spawn_event_relay(
    bus: Arc<dyn Bus>,
    store: CameraStore,
    statuses: broadcast::Sender<(String, CameraStatus)>,
) -> anyhow::Result<()> {
    let mut events = bus.events()?;
    actix_rt::spawn(async move {
        let mut cache: HashMap<String, CameraStatus> = HashMap::new();
        while let Some(ev) = events.recv().await {
            let status = match cache.get_mut(&ev.camera_id) {
                Some(s) => s,
                None => {
                    let stored = store
                        .status(&ev.camera_id)
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(CameraStatus::unknown);
                    cache.entry(ev.camera_id.clone()).or_insert(stored)
                }
            };
            status.apply(&ev);
            let _ = statuses.send((ev.camera_id.clone(), status.clone()));
        }
    });
    Ok(())
}
