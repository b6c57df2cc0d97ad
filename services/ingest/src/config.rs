//! Configuration of the ingest worker (`[camera]` is also embedded in signal's single-process
//! mode).

use cloudcam_core::bus::KafkaSettings;
use cloudcam_core::config::{RedisSettings, Validate};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Identity of this worker in events and status; default `ingest-<hostname>-<pid>`.
    pub worker_id: String,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_listen: String,
    /// The RTSP re-stream server (`host:port`); cameras are served at `/cam/<camera id>`.
    pub restream_listen: String,
    /// Host name put in re-stream URLs; empty means the host of `restream_listen`.
    pub restream_advertise: String,
    /// The credential re-stream clients (recorders) must present.
    pub restream_auth: cloudcam_core::config::RestreamAuth,
    /// Where pushed cameras are taken (`rtsp://`, or `rtsps://` with a certificate).
    pub push: crate::push::PushSettings,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    /// Where snapshots go (S3, or a local directory).
    pub media: cloudcam_core::media::MediaSettings,
    pub camera: CameraSettings,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            worker_id: String::new(),
            metrics_listen: "127.0.0.1:9101".into(),
            restream_listen: "127.0.0.1:9554".into(),
            restream_advertise: String::new(),
            restream_auth: Default::default(),
            push: Default::default(),
            kafka: KafkaSettings::default(),
            redis: RedisSettings::default(),
            media: Default::default(),
            camera: CameraSettings::default(),
        }
    }
}

impl Validate for IngestConfig {
    fn validate(&self) -> Result<(), String> {
        self.metrics_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("metrics_listen {:?}: {e}", self.metrics_listen))?;
        self.restream_auth.validate()?;
        self.push.validate()?;
        self.camera.validate()
    }
}

impl IngestConfig {
    pub fn worker_id(&self) -> String {
        if self.worker_id.is_empty() {
            default_worker_id()
        } else {
            self.worker_id.clone()
        }
    }
}

pub fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("ingest-{host}-{}", std::process::id())
}

/// How each camera is pulled and watched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraSettings {
    /// RTSP transport: `tcp` (default; interleaved, works through NAT) or `udp`, or `auto`.
    pub transport: String,
    /// Jitter-buffer latency of cameras pulled over UDP (over TCP nothing is reordered).
    pub latency_ms: u32,
    /// The camera's H.264 RTP goes to Janus as the camera sent it (no re-payloading) while it
    /// repeats its parameter sets before every IDR frame and no packet is larger than this
    /// many bytes (RTP header included); 0 re-payloads every camera. See `ingest::forward`.
    pub forward_max_packet: usize,
    /// A camera that has not produced a frame this long after connecting is reported.
    pub connect_timeout_ms: u64,
    /// A session the camera answered (RTSP PLAY) on which no frame arrives this long after is
    /// silent and retried (at once the first time after a good session).
    pub first_frame_timeout_ms: u64,
    /// A live camera with no frame for this long is reported stalled and reconnected.
    pub stall_timeout_ms: u64,
    /// First reconnect delay; doubles on each failure up to `backoff_max_ms`.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How often a live camera's health is published.
    pub health_interval_ms: u64,
    /// How often a live camera's snapshot is refreshed; 0 takes them only on request.
    pub snapshot_interval_ms: u64,
    /// On a planned move (rebalance, graceful stop) the old worker keeps a live camera's
    /// re-stream up until the new owner is live and the re-stream's clients (recorders) have
    /// moved over, but at most this long; 0 stops it at once (break before make).
    pub handover_timeout_ms: u64,
}

impl Default for CameraSettings {
    fn default() -> Self {
        Self {
            transport: "tcp".into(),
            latency_ms: 50,
            forward_max_packet: 1400,
            connect_timeout_ms: 8000,
            first_frame_timeout_ms: 1500,
            stall_timeout_ms: 5000,
            backoff_initial_ms: 1000,
            backoff_max_ms: 30000,
            health_interval_ms: 2000,
            snapshot_interval_ms: 60_000,
            handover_timeout_ms: 10_000,
        }
    }
}

impl CameraSettings {
    /// How long a stored status lives unless refreshed (a dead worker's cameras stop looking
    /// live after it).
    pub fn status_ttl(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms * 3 + 10_000)
    }

    /// How often an idle camera (owned, not pulled) re-stores its unchanged status: a third of
    /// its lifetime, so thousands of idle cameras cost few writes.
    pub fn idle_refresh(&self) -> Duration {
        self.status_ttl() / 3
    }

    pub fn handover_timeout(&self) -> Duration {
        Duration::from_millis(self.handover_timeout_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.transport.as_str(), "tcp" | "udp" | "auto") {
            return Err(format!(
                "camera.transport must be tcp, udp or auto, not {:?}",
                self.transport
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_max_ms < self.backoff_initial_ms {
            return Err("camera.backoff_initial_ms must be > 0 and <= backoff_max_ms".into());
        }
        if self.stall_timeout_ms < 500 || self.connect_timeout_ms < 500 {
            return Err("camera.stall_timeout_ms and connect_timeout_ms must be >= 500".into());
        }
        if self.first_frame_timeout_ms < 200
            || self.first_frame_timeout_ms > self.connect_timeout_ms
        {
            return Err(
                "camera.first_frame_timeout_ms must be >= 200 and <= connect_timeout_ms".into(),
            );
        }
        if self.handover_timeout_ms > 60_000 {
            return Err("camera.handover_timeout_ms must be <= 60000".into());
        }
        if self.health_interval_ms < 100 {
            return Err("camera.health_interval_ms must be >= 100".into());
        }
        Ok(())
    }

    /// The delay before reconnect attempt `attempt` (1-based): capped exponential.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(16);
        let ms = self
            .backoff_initial_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_exponential() {
        let s = CameraSettings::default();
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(2), Duration::from_secs(2));
        assert_eq!(s.backoff(4), Duration::from_secs(8));
        assert_eq!(s.backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn bad_transport_is_rejected() {
        let s = CameraSettings {
            transport: "carrier-pigeon".into(),
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("transport"));
    }
}

#[cfg(test)]
mod reference {
    use super::*;

    #[test]
    fn reference_config_parses_and_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/ingest.toml");
        // As shipped, it has no re-stream password, and is refused.
        let err = cloudcam_core::config::load::<IngestConfig>(
            "ingest-reference-test",
            Some(path.as_ref()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("restream_auth"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let own = cloudcam_core::config::edited_copy(
            path.as_ref(),
            "password = \"\"",
            "password = \"a-long-restream-password\"",
            dir.path(),
        )
        .unwrap();
        let cfg: IngestConfig = cloudcam_core::config::load("ingest-reference-test", Some(&own))
            .expect("config/ingest.toml loads");
        assert_eq!(
            cfg.camera.stall_timeout_ms,
            CameraSettings::default().stall_timeout_ms
        );
    }
}
