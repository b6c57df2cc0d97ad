//! The Janus pool: several gateways, each health-checked; mountpoints (id, RTP port, secret,
//! pin) placed on the healthy gateway with the fewest, and re-created — on the same gateway after
//! a restart, or on another when one stays down. Only this module and [`crate::viewer`] talk to
//! Janus.

use crate::cameras::{CameraRecord, Mountpoint};
use crate::config::{GatewaySettings, JanusSettings};
use crate::error::ApiError;
use crate::janus::{Janus, JanusError};
use serde::Serialize;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Janus's streaming plugin answers this when a mountpoint id is taken.
const ALREADY_EXISTS: i64 = 456;
/// … and this when it does not exist.
const NO_SUCH_MOUNTPOINT: i64 = 455;

/// One gateway and what its health checks found.
pub struct Gateway {
    pub settings: GatewaySettings,
    pub janus: Janus,
    health: Mutex<Health>,
}

struct Health {
    up: bool,
    /// When the gateway started failing its checks.
    down_since: Option<Instant>,
    mountpoints: usize,
}

/// What the API shows of a gateway.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayView {
    pub name: String,
    pub up: bool,
    pub mountpoints: usize,
}

impl Gateway {
    pub fn is_up(&self) -> bool {
        self.health.lock().unwrap().up
    }

    /// Down for longer than `after`: its cameras should move.
    pub fn failed_for(&self, after: Duration) -> bool {
        let h = self.health.lock().unwrap();
        !h.up && h.down_since.is_some_and(|t| t.elapsed() >= after)
    }

    pub fn view(&self) -> GatewayView {
        let h = self.health.lock().unwrap();
        GatewayView {
            name: self.settings.name.clone(),
            up: h.up,
            mountpoints: h.mountpoints,
        }
    }

    fn record(&self, result: Result<usize, &JanusError>) {
        let mut h = self.health.lock().unwrap();
        match result {
            Ok(n) => {
                if !h.up {
                    tracing::info!(gateway = %self.settings.name, mountpoints = n, "janus gateway healthy");
                }
                h.up = true;
                h.down_since = None;
                h.mountpoints = n;
            }
            Err(e) => {
                if h.up || h.down_since.is_none() {
                    tracing::warn!(gateway = %self.settings.name, error = %e, "janus gateway unhealthy");
                }
                h.up = false;
                h.down_since.get_or_insert_with(Instant::now);
            }
        }
        crate::metrics::JANUS_UP
            .with_label_values(&[&self.settings.name])
            .set(f64::from(u8::from(h.up)));
        crate::metrics::JANUS_MOUNTPOINTS
            .with_label_values(&[&self.settings.name])
            .set(h.mountpoints as f64);
    }

    fn create_body(&self, mp: &Mountpoint) -> serde_json::Value {
        json!({
            "request": "create",
            "type": "rtp",
            "id": mp.id,
            "description": format!("cloudcam {}", mp.id),
            "secret": mp.secret,
            "pin": mp.pin,
            "is_private": true,
            "permanent": false,
            "media": [{
                "type": "video",
                "mid": "v",
                "port": mp.port,
                "iface": self.settings.rtp_iface,
                "pt": 96,
                "codec": "h264",
                // Constrained baseline is what every browser accepts; High-profile streams
                // decode fine advertised this way.
                "fmtp": "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
                "bufferkf": true
            }]
        })
    }

    /// Creates every mountpoint of `cameras` the gateway is missing; returns how many it created.
    async fn reconcile(&self, cameras: &[&CameraRecord]) -> Result<usize, JanusError> {
        let h = self.janus.open().await?;
        let result = async {
            let listed = h.request(json!({"request": "list"})).await?;
            let present: HashSet<u64> = listed
                .get("list")
                .and_then(|l| l.as_array())
                .map(|l| l.iter().filter_map(|m| m.get("id")?.as_u64()).collect())
                .unwrap_or_default();
            // Private mountpoints are not listed: a refused create means present.
            let mut created = 0;
            for cam in cameras {
                if !present.contains(&cam.mountpoint.id) {
                    match h.request(self.create_body(&cam.mountpoint)).await {
                        Ok(_) => created += 1,
                        Err(JanusError::Plugin { code, .. }) if code == ALREADY_EXISTS => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(created)
        }
        .await;
        let _ = h.destroy().await;
        result
    }
}

pub struct Pool {
    pub gateways: Vec<Gateway>,
    settings: JanusSettings,
}

impl Pool {
    pub fn new(settings: JanusSettings) -> Self {
        let gateways = settings
            .pool()
            .into_iter()
            .map(|g| Gateway {
                janus: Janus::new(&g.url),
                settings: g,
                // Assumed up until a check says otherwise, so cameras can be placed at start.
                health: Mutex::new(Health {
                    up: true,
                    down_since: None,
                    mountpoints: 0,
                }),
            })
            .collect();
        Self { gateways, settings }
    }

    /// The gateway a mountpoint is on (records from before the pool name none: the first).
    pub fn gateway(&self, name: &str) -> &Gateway {
        self.gateways
            .iter()
            .find(|g| g.settings.name == name)
            .unwrap_or(&self.gateways[0])
    }

    /// Whether `record`'s mountpoint is on `gateway`.
    fn hosts(&self, gateway: &Gateway, record: &CameraRecord) -> bool {
        std::ptr::eq(self.gateway(&record.mountpoint.gateway), gateway)
    }

    /// The healthy gateway with the fewest of `existing`'s mountpoints, other than `not`.
    pub fn place(&self, existing: &[CameraRecord], not: Option<&str>) -> Option<&Gateway> {
        let load = |g: &Gateway| existing.iter().filter(|r| self.hosts(g, r)).count();
        self.gateways
            .iter()
            .filter(|g| g.is_up() && Some(g.settings.name.as_str()) != not)
            .min_by_key(|g| load(g))
    }

    /// A new mountpoint: the next free id, the lowest free port, on the least loaded healthy
    /// gateway (the first gateway when none is healthy; the reconciler moves it later).
    pub fn allocate(&self, existing: &[CameraRecord]) -> Result<Mountpoint, ApiError> {
        let used: HashSet<u16> = existing.iter().map(|r| r.mountpoint.port).collect();
        let port = (self.settings.rtp_port_min..=self.settings.rtp_port_max)
            .find(|p| !used.contains(p))
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "no_capacity",
                    "every mountpoint port of the Janus pool is in use".into(),
                )
            })?;
        let id = existing
            .iter()
            .map(|r| r.mountpoint.id)
            .max()
            .unwrap_or(1000)
            + 1;
        let gateway = self.place(existing, None).unwrap_or(&self.gateways[0]);
        Ok(Mountpoint {
            id,
            port,
            secret: cloudcam_core::random_hex(16),
            pin: cloudcam_core::random_hex(8),
            gateway: gateway.settings.name.clone(),
        })
    }

    /// Creates the mountpoint on its gateway unless it is there already.
    pub async fn ensure(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let g = self.gateway(&mp.gateway);
        let h = g.janus.open().await?;
        let res = h.request(g.create_body(mp)).await;
        let _ = h.destroy().await;
        match res {
            Ok(_) => Ok(()),
            Err(JanusError::Plugin { code, .. }) if code == ALREADY_EXISTS => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn remove(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let h = self.gateway(&mp.gateway).janus.open().await?;
        let res = h
            .request(json!({"request": "destroy", "id": mp.id, "secret": mp.secret}))
            .await;
        let _ = h.destroy().await;
        match res {
            Ok(_) => Ok(()),
            Err(JanusError::Plugin { code, .. }) if code == NO_SUCH_MOUNTPOINT => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Health-checks every gateway, re-creating the mountpoints each is missing (after a
    /// restart, say). Returns the mountpoints created.
    pub async fn reconcile(&self, cameras: &[CameraRecord]) -> usize {
        let checks = self.gateways.iter().map(|g| async move {
            let mine: Vec<&CameraRecord> = cameras
                .iter()
                .filter(|r| self.hosts(g, r))
                .collect();
            let res = g.reconcile(&mine).await;
            g.record(res.as_ref().map(|_| mine.len()));
            if let Ok(n) = res
                && n > 0
            {
                tracing::info!(gateway = %g.settings.name, created = n, "janus mountpoints re-created");
            }
            res.unwrap_or(0)
        });
        futures::future::join_all(checks).await.into_iter().sum()
    }

    /// Whether any gateway passed its last check.
    pub fn any_up(&self) -> bool {
        self.gateways.iter().any(Gateway::is_up)
    }

    pub fn failover_after(&self) -> Duration {
        Duration::from_millis(self.settings.failover_after_ms)
    }

    pub fn views(&self) -> Vec<GatewayView> {
        self.gateways.iter().map(Gateway::view).collect()
    }
}
