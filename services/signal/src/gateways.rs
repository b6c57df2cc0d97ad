//! The gateway pass: keeps every camera's mountpoint present on its gateway (a restarted
//! gateway forgets them), reports for each camera a mountpoint Janus refuses to create, and
//! moves the mountpoints of a gateway that stays down to the others. A camera's main
//! mountpoint follows the video codec its camera sends (H.264, or H.265 for the browsers
//! that decode it) and audio codec (the G.711 it sends as it is, else Opus), and one from
//! before live audio gets its audio stream.

use crate::cameras::Cameras;
use crate::error::ApiError;
use crate::model::Mountpoint;
use cloudcam_core::camera::CameraStatus;
use cloudcam_core::codec::AudioCodec;
use std::collections::HashMap;
use std::time::Duration;

#[derive(Clone)]
pub struct Gateways {
    cameras: Cameras,
    every: Duration,
}

impl Gateways {
    pub fn new(cameras: Cameras, every: Duration) -> Self {
        Self { cameras, every }
    }

    /// One pass over every camera's mountpoint: a fixed number of reads of the shared state,
    /// one `list` per gateway, and a `create` only for what a gateway is missing.
    pub async fn pass(&self) -> Result<(), ApiError> {
        let store = &self.cameras.store;
        let ids = store.ids().await?;
        let (mut mountpoints, errors, statuses) = tokio::try_join!(
            store.mountpoints(&ids),
            store.mountpoint_errors(&ids),
            store.statuses(&ids)
        )?;
        if self.reshape(&ids, &mountpoints, statuses).await {
            mountpoints = store.mountpoints(&ids).await?;
        }
        let cams: Vec<(String, Mountpoint)> = ids
            .iter()
            .cloned()
            .zip(mountpoints)
            .filter_map(|(id, mp)| Some((id, mp?)))
            .collect();
        let refs: Vec<&Mountpoint> = cams.iter().map(|(_, mp)| mp).collect();
        let pool = self.cameras.pool();
        let outcomes = pool.reconcile(&refs).await;
        let known: HashMap<&str, Option<String>> =
            ids.iter().map(String::as_str).zip(errors).collect();
        for (id, mp) in &cams {
            let parts = mp.parts();
            let now = if let Some(reason) = outcomes
                .iter()
                .find_map(|o| parts.iter().find_map(|p| o.failed.get(&p.id)))
            {
                Some(reason.clone())
            } else if outcomes
                .iter()
                .any(|o| parts.iter().all(|p| o.present.contains(&p.id)))
            {
                None
            } else {
                // Its gateway did not answer: nothing new is known.
                continue;
            };
            if known.get(id.as_str()).cloned().flatten() != now {
                if let Some(reason) = &now {
                    tracing::warn!(camera = %id, gateway = %mp.gateway, %reason, "janus cannot create the mountpoint");
                }
                store.set_mountpoint_error(id, now.as_deref()).await?;
            }
        }
        self.failover(&cams).await;
        Ok(())
    }

    /// Re-creates the main mountpoint of every camera whose video codec (as its status says)
    /// is not the one its mountpoint takes, or that has no live-audio stream yet; whether any
    /// was.
    async fn reshape(
        &self,
        ids: &[String],
        mountpoints: &[Option<Mountpoint>],
        statuses: Vec<Option<CameraStatus>>,
    ) -> bool {
        let mut changed = false;
        for ((id, mp), status) in ids.iter().zip(mountpoints).zip(statuses) {
            let Some(mp) = mp else { continue };
            let h265 = match status.as_ref().map(|s| s.codec.as_str()) {
                Some("H265") => Some(true),
                Some("H264") => Some(false),
                _ => None,
            };
            // G.711 goes to browsers as it is; Opus too, and AAC is made Opus.
            let audio = status
                .as_ref()
                .and_then(|s| AudioCodec::from_name(&s.audio_codec))
                .map(|c| c.mountpoint_codec().map_or("", AudioCodec::name))
                .filter(|a| mp.audio_port.is_some() && *a != mp.audio_codec);
            let (why, done) = if let Some(h265) = h265.filter(|h| *h != mp.h265) {
                (
                    "the camera's video codec",
                    self.cameras.follow_codec(id, h265).await,
                )
            } else if let Some(audio) = audio {
                (
                    "the camera's audio codec",
                    self.cameras.follow_audio(id, audio).await,
                )
            } else if mp.audio_port.is_none() {
                ("live audio", self.cameras.give_live_audio(id).await)
            } else {
                continue;
            };
            match done {
                Ok(true) => {
                    changed = true;
                    tracing::info!(camera = %id, "mountpoint re-created for {why}")
                }
                Ok(false) => {}
                // A full port range stays full until an administrator widens it.
                Err(e) if e.code() == "no_capacity" => {
                    tracing::debug!(camera = %id, error = %e, "no port for {why}")
                }
                Err(e) => {
                    // Part of it may have been done: read it again either way.
                    changed = true;
                    tracing::warn!(camera = %id, error = %e, "cannot re-create the mountpoint for {why}")
                }
            }
        }
        changed
    }

    /// Re-creates the mountpoints of every gateway down for longer than `failover_after_ms` on
    /// the least loaded healthy gateway, and points the cameras' RTP there. Viewers of those
    /// cameras see their view end and reconnect (the UI does so by itself) to the new gateway.
    async fn failover(&self, cams: &[(String, Mountpoint)]) {
        let pool = self.cameras.pool();
        let after = pool.failover_after();
        let mut placed: Vec<Mountpoint> = cams.iter().map(|(_, mp)| mp.clone()).collect();
        for (i, (id, mp)) in cams.iter().enumerate() {
            let from = pool.gateway(&mp.gateway);
            if !from.failed_for(after) {
                continue;
            }
            let refs: Vec<&Mountpoint> = placed.iter().collect();
            let Some(to) = pool.place(&refs, Some(&from.settings.name)) else {
                continue;
            };
            let moved = Mountpoint {
                gateway: to.settings.name.clone(),
                ..mp.clone()
            };
            if let Err(e) = pool.ensure(&moved).await {
                tracing::warn!(camera = %id, gateway = %to.settings.name, error = %e, "cannot move the mountpoint");
                continue;
            }
            match self.cameras.move_mountpoint(id, &moved).await {
                Ok(true) => {
                    tracing::info!(camera = %id, from = %from.settings.name, to = %moved.gateway, "mountpoint moved to another gateway");
                    placed[i] = moved;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(camera = %id, error = %e, "cannot move the mountpoint"),
            }
        }
    }

    /// Runs [`Gateways::pass`] every `reconcile_interval_ms`.
    pub fn spawn(self) {
        let every = self.every;
        cloudcam_core::ops::spawn_pass("janus mountpoints", every, move || {
            let gateways = self.clone();
            async move { gateways.pass().await }
        });
    }
}
