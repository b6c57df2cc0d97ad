//! The Janus pool: mountpoint allocation (id, RTP port, secret, pin) and a reconciler that
//! re-creates mountpoints a gateway lost (after a restart, say). Only this module and
//! [`crate::viewer`] talk to Janus.

use crate::cameras::{CameraRecord, Mountpoint};
use crate::config::JanusSettings;
use crate::error::ApiError;
use crate::janus::{Janus, JanusError};
use serde_json::json;
use std::collections::HashSet;

/// Janus's streaming plugin answers this when a mountpoint id is taken.
const ALREADY_EXISTS: i64 = 456;
/// … and this when it does not exist.
const NO_SUCH_MOUNTPOINT: i64 = 455;

pub struct Pool {
    pub janus: Janus,
    /// The gateway's name in metrics and logs: its URL's `host:port`.
    pub gateway: String,
    settings: JanusSettings,
}

/// What one reconciler pass found and did on a gateway.
pub struct Reconciled {
    /// Mountpoints the gateway was missing and got back.
    pub created: usize,
    /// Mountpoints on the gateway after the pass.
    pub present: usize,
}

impl Pool {
    pub fn new(settings: JanusSettings) -> Self {
        let gateway = settings
            .url
            .split("://")
            .last()
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        Self {
            janus: Janus::new(&settings.url),
            gateway,
            settings,
        }
    }

    /// Picks the next free mountpoint id and the lowest free port for a new camera.
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
        Ok(Mountpoint {
            id,
            port,
            secret: cloudcam_core::random_hex(16),
            pin: cloudcam_core::random_hex(8),
        })
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

    /// Creates the mountpoint unless the gateway already has it.
    pub async fn ensure(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let h = self.janus.open().await?;
        let res = h.request(self.create_body(mp)).await;
        let _ = h.destroy().await;
        match res {
            Ok(_) => Ok(()),
            Err(JanusError::Plugin { code, .. }) if code == ALREADY_EXISTS => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn remove(&self, mp: &Mountpoint) -> Result<(), JanusError> {
        let h = self.janus.open().await?;
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

    /// Creates every mountpoint the gateway is missing.
    pub async fn reconcile(&self, cameras: &[CameraRecord]) -> Result<Reconciled, JanusError> {
        let h = self.janus.open().await?;
        let result = async {
            let listed = h.request(json!({"request": "list"})).await?;
            let present: HashSet<u64> = listed
                .get("list")
                .and_then(|l| l.as_array())
                .map(|l| l.iter().filter_map(|m| m.get("id")?.as_u64()).collect())
                .unwrap_or_default();
            // Private mountpoints are not listed, so a listed-or-refused create means present.
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
            Ok(Reconciled {
                created,
                present: cameras.len(),
            })
        }
        .await;
        let _ = h.destroy().await;
        result
    }
}
