//! Configuration of the recorder (`[recorder]` is also embedded in signal's single-process mode).

use cloudcam_core::bus::KafkaSettings;
use cloudcam_core::config::{RedisSettings, Validate};
use cloudcam_core::media::MediaSettings;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderConfig {
    /// Identity in logs and events; empty means `recorder-<pid>`.
    pub id: String,
    /// Where `/metrics` and `/healthz` are served.
    pub metrics_listen: String,
    pub kafka: KafkaSettings,
    pub redis: RedisSettings,
    pub media: MediaSettings,
    pub recorder: RecorderSettings,
}

impl Validate for RecorderConfig {
    fn validate(&self) -> Result<(), String> {
        self.metrics_listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("metrics_listen {:?}: {e}", self.metrics_listen))?;
        self.recorder.restream_auth.validate()?;
        self.recorder.validate()
    }
}

/// How cameras are recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecorderSettings {
    /// Target segment length; segments are cut at the first keyframe after it.
    pub segment_seconds: u64,
    /// Local spool: finished segments wait here until they are in the media store.
    pub spool_dir: String,
    /// When the spool holds more than this, the oldest segments are dropped (and counted).
    pub spool_max_bytes: u64,
    /// Recording pauses while the spool's filesystem has less free space than this (and
    /// resumes by itself when there is room again), so a full disk never leaves half-made
    /// segments.
    pub spool_min_free_bytes: u64,
    /// How often retention is applied.
    pub retention_interval_ms: u64,
    /// A re-stream silent this long (beyond a segment) is reconnected; a moved re-stream that
    /// brings no keyframe this long after it is pulled is given up and tried again.
    pub stall_timeout_ms: u64,
    /// A recording handed to another recorder (a recorder joined, or this one stops
    /// gracefully) goes on until the other one holds the stream, at most this long; the
    /// other one waits as long to hear where it ended. At most 10 s (what a taking-over
    /// recorder keeps in memory is bounded at 12 s).
    pub handover_timeout_ms: u64,
    /// The credential the ingest workers' re-streams require.
    pub restream_auth: cloudcam_core::config::RestreamAuth,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            segment_seconds: 10,
            spool_dir: "spool".into(),
            spool_max_bytes: 2 * 1024 * 1024 * 1024,
            spool_min_free_bytes: 256 * 1024 * 1024,
            retention_interval_ms: 60_000,
            stall_timeout_ms: 10_000,
            handover_timeout_ms: 8_000,
            restream_auth: Default::default(),
        }
    }
}

impl RecorderSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_seconds == 0
            || self.segment_seconds * 1000 > cloudcam_core::media::MAX_SEGMENT_MS as u64 / 2
        {
            return Err("recorder.segment_seconds must be between 1 and 300".into());
        }
        if self.spool_max_bytes < 1024 * 1024 {
            return Err("recorder.spool_max_bytes must be at least 1 MiB".into());
        }
        if self.retention_interval_ms < 100 || self.stall_timeout_ms < 1000 {
            return Err(
                "recorder.retention_interval_ms must be >= 100 and stall_timeout_ms >= 1000".into(),
            );
        }
        if self.handover_timeout_ms > 10_000 {
            return Err("recorder.handover_timeout_ms must be <= 10000".into());
        }
        Ok(())
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            metrics_listen: "127.0.0.1:9102".into(),
            kafka: KafkaSettings::default(),
            redis: RedisSettings::default(),
            media: MediaSettings::default(),
            recorder: RecorderSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_config_parses_and_validates() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/recorder.toml");
        // As shipped, it has no re-stream password, and is refused.
        let err = cloudcam_core::config::load::<RecorderConfig>(
            "recorder-reference-test",
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
        let cfg: RecorderConfig =
            cloudcam_core::config::load("recorder-reference-test", Some(&own))
                .expect("config/recorder.toml loads");
        assert_eq!(cfg.recorder.segment_seconds, 10);
    }
}
