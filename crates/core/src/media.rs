//! The media store: recordings and snapshots, in S3-compatible object storage or, in the
//! single-machine default, a local directory — both through `object_store`.
//!
//! Keys: `recordings/<camera>/<start ms>.mp4`, `snapshots/<camera>/latest.jpg`.

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where media goes (the `[media]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSettings {
    /// S3 endpoint (`http://host:3900`); empty selects the local directory.
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
    /// Directory of the local store (single-machine default).
    pub local_dir: String,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            s3_endpoint: String::new(),
            s3_bucket: "cloudcam".into(),
            s3_region: "garage".into(),
            s3_access_key: String::new(),
            s3_secret_key: String::new(),
            local_dir: "media".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("media store: {0}")]
    Store(#[from] object_store::Error),
    #[error("media directory {0}: {1}")]
    Dir(String, std::io::Error),
}

/// Opens the store the settings name.
pub fn from_settings(s: &MediaSettings) -> Result<Arc<dyn ObjectStore>, MediaError> {
    if s.s3_endpoint.is_empty() {
        std::fs::create_dir_all(&s.local_dir)
            .map_err(|e| MediaError::Dir(s.local_dir.clone(), e))?;
        Ok(Arc::new(LocalFileSystem::new_with_prefix(&s.local_dir)?))
    } else {
        Ok(Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&s.s3_endpoint)
                .with_virtual_hosted_style_request(false)
                .with_region(&s.s3_region)
                .with_bucket_name(&s.s3_bucket)
                .with_access_key_id(&s.s3_access_key)
                .with_secret_access_key(&s.s3_secret_key)
                // Fail fast while the store is away: the recorder's spool is the retry.
                .with_retry(object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: std::time::Duration::from_secs(10),
                    backoff: Default::default(),
                })
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_connect_timeout(std::time::Duration::from_secs(3))
                        .with_timeout(std::time::Duration::from_secs(30))
                        .with_allow_http(s.s3_endpoint.starts_with("http://")),
                )
                .build()?,
        ))
    }
}

/// One recorded segment, as indexed in the state store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub camera_id: String,
    /// Key in the media store.
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub bytes: u64,
    pub codec: String,
}

pub fn segment_key(camera_id: &str, start_ms: i64) -> String {
    format!("recordings/{camera_id}/{start_ms}.mp4")
}

pub fn snapshot_key(camera_id: &str) -> String {
    format!("snapshots/{camera_id}/latest.jpg")
}

/// State-store key that asks the owning ingest worker for a snapshot now.
pub fn snapshot_request_key(camera_id: &str) -> String {
    format!("cloudcam:snapshot-request:{camera_id}")
}

/// State-store prefix of a camera's segment index; entries sort by start time.
pub fn index_prefix(camera_id: &str) -> String {
    format!("cloudcam:seg:{camera_id}:")
}

pub fn index_key(camera_id: &str, start_ms: i64) -> String {
    format!("{}{start_ms:015}", index_prefix(camera_id))
}

/// A camera's indexed segments overlapping `[from_ms, to_ms)`, sorted by start.
pub async fn segments(
    state: &dyn crate::state::StateStore,
    camera_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Segment>, crate::state::StateError> {
    let mut out: Vec<Segment> = state
        .scan_prefix(&index_prefix(camera_id))
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<Segment>(&v).ok())
        .filter(|s| s.end_ms > from_ms && s.start_ms < to_ms)
        .collect();
    out.sort_by_key(|s| s.start_ms);
    Ok(out)
}

/// Merges segments into continuous spans (gaps of at most `tolerance_ms` are bridged).
pub fn spans(segments: &[Segment], tolerance_ms: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for s in segments {
        match out.last_mut() {
            Some(last) if s.start_ms - last.1 <= tolerance_ms => last.1 = last.1.max(s.end_ms),
            _ => out.push((s.start_ms, s.end_ms)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start: i64, end: i64) -> Segment {
        Segment {
            camera_id: "c".into(),
            key: segment_key("c", start),
            start_ms: start,
            end_ms: end,
            bytes: 1,
            codec: "H264".into(),
        }
    }

    #[test]
    fn spans_bridge_small_gaps_only() {
        let s = [seg(0, 1000), seg(1020, 2000), seg(5000, 6000)];
        assert_eq!(spans(&s, 100), vec![(0, 2000), (5000, 6000)]);
    }

    #[test]
    fn index_keys_sort_by_time() {
        assert!(index_key("c", 999) < index_key("c", 1000));
    }
}
