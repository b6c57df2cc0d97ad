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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// The segment index of a camera: a sorted set of segment records scored by start time, so a
/// time range costs O(log n + k) however long the camera has recorded.
pub fn index_key(camera_id: &str) -> String {
    format!("cloudcam:segments:{camera_id}")
}

/// Why the owning recorder is not recording a camera that should be (say, its spool is below
/// the free-space floor): a value with expiry, refreshed while it lasts, removed when it ends.
pub fn recording_problem_key(camera_id: &str) -> String {
    format!("cloudcam:recording-problem:{camera_id}")
}

/// Longest segment the index answers ranges for correctly (a range query looks back this far
/// for segments that started before it and end inside it). Recorders cut far shorter ones.
pub const MAX_SEGMENT_MS: i64 = 10 * 60 * 1000;

/// Adds a segment to its camera's index (replacing any record with the same start).
pub async fn index_segment(
    state: &dyn crate::state::StateStore,
    s: &Segment,
) -> Result<(), crate::state::StateError> {
    let key = index_key(&s.camera_id);
    let member = serde_json::to_string(s).expect("serializable");
    let same_start = state.zrange_by_score(&key, s.start_ms, s.start_ms).await?;
    let stale: Vec<String> = same_start
        .into_iter()
        .map(|(m, _)| m)
        .filter(|m| *m != member)
        .collect();
    state.zrem(&key, &stale).await?;
    state.zadd(&key, &member, s.start_ms).await
}

/// Removes a segment from its camera's index.
pub async fn unindex_segment(
    state: &dyn crate::state::StateStore,
    s: &Segment,
) -> Result<(), crate::state::StateError> {
    let member = serde_json::to_string(s).expect("serializable");
    state.zrem(&index_key(&s.camera_id), &[member]).await
}

/// A camera's indexed segments overlapping `[from_ms, to_ms)`, sorted by start.
pub async fn segments(
    state: &dyn crate::state::StateStore,
    camera_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<Segment>, crate::state::StateError> {
    if to_ms <= from_ms {
        return Ok(Vec::new());
    }
    let lo = from_ms.saturating_sub(MAX_SEGMENT_MS);
    let out: Vec<Segment> = state
        .zrange_by_score(&index_key(camera_id), lo, to_ms.saturating_sub(1))
        .await?
        .into_iter()
        .filter_map(|(m, _)| serde_json::from_str::<Segment>(&m).ok())
        .filter(|s| s.end_ms > from_ms && s.start_ms < to_ms)
        .collect();
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

    #[tokio::test]
    async fn the_index_answers_ranges_and_replaces_by_start() {
        let state = crate::state::MemoryState::new();
        for (a, b) in [(0, 1000), (1000, 2000), (2000, 3000)] {
            index_segment(&state, &seg(a, b)).await.unwrap();
        }
        let mut longer = seg(2000, 3500);
        longer.bytes = 2;
        index_segment(&state, &longer).await.unwrap();
        let got = segments(&state, "c", 1500, 2500).await.unwrap();
        assert_eq!(got, vec![seg(1000, 2000), longer.clone()]);
        unindex_segment(&state, &seg(0, 1000)).await.unwrap();
        assert_eq!(segments(&state, "c", 0, 10_000).await.unwrap().len(), 2);
        assert!(segments(&state, "c", 5, 5).await.unwrap().is_empty());
    }
}
