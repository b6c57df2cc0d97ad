//! The spool: finished segments wait on local disk until they are in the media store, so an
//! unreachable S3 loses nothing. One uploader per recorder process drains it oldest first.
//!
//! A segment is `<name>.mp4` plus `<name>.json` (its [`Segment`] record); the JSON is written
//! only once the MP4 is complete, so an MP4 without JSON is an unfinished file (the recorder
//! died mid-segment) and is never uploaded. Upload, then index, then delete: a crash between
//! the steps re-uploads the same key, so S3 never holds a segment twice.
//!
//! Bound: when the spool holds more than `spool_max_bytes`, the oldest finished segments are
//! dropped and counted (`cloudcam_recorder_spool_dropped_segments_total`): with storage away
//! for long, the newest footage is kept.
//!
//! Floor: below `spool_min_free_bytes` of free space on the spool's filesystem, recording
//! pauses (see [`Spool::below_floor`]); a segment whose record cannot be written (a full disk)
//! is deleted at once, so nothing is left that the uploader would never see.

use cloudcam_core::bus::Bus;
use cloudcam_core::media::{Segment, index_segment, segment_key};
use cloudcam_core::metrics::{register_counter_vec, register_gauge_vec, register_histogram};
use cloudcam_core::outbox::EventOutbox;
use cloudcam_core::state::StateStore;
use cloudcam_proto::v1;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use prometheus::{GaugeVec, Histogram, IntCounterVec};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static UPLOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_recorder_uploads_total",
        "Segment uploads to the media store, by result (ok, error)",
        &["result"],
    )
});
static SEGMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_recorder_segments_total",
        "Segments stored and indexed, per camera",
        &["camera"],
    )
});
static SEGMENT_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_recorder_segment_bytes_total",
        "Bytes of segments stored, per camera",
        &["camera"],
    )
});
pub static RECORDING: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_recorder_cameras",
        "Cameras this recorder records (one actor each)",
    )
});
static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_recorder_spool_dropped_segments_total",
        "Finished segments dropped: reason=spool_full (over spool_max_bytes), spool_write_failed (the disk could not take the segment's record)",
        &["reason"],
    )
});
static SPOOL_FREE: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_recorder_spool_free_bytes",
        "Free space on the spool's filesystem, at the last check",
    )
});
static SPOOL_BELOW_FLOOR: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_recorder_spool_below_floor",
        "1 while the spool's free space is below spool_min_free_bytes (recording paused)",
    )
});
static EVENTS_UNPUBLISHED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_recorder_events_unpublished",
        "Segment announcements waiting for the bus (the latest per camera)",
    )
});
static SPOOL: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_recorder_spool",
        "What waits in the spool: unit=bytes or unit=segments",
        &["unit"],
    )
});
static UPLOAD_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram(
        "cloudcam_recorder_upload_duration_seconds",
        "Time to put one segment into the media store",
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
    )
});
static AVAILABLE_DELAY: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram(
        "cloudcam_recorder_segment_available_delay_seconds",
        "From a segment's end to its being indexed in the media store",
        vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0],
    )
});

/// Registers this recorder's metrics up front, so they are listed before the first segment.
pub fn describe() {
    LazyLock::force(&RECORDING);
    for unit in ["bytes", "segments"] {
        SPOOL.with_label_values(&[unit]).set(0.0);
    }
    LazyLock::force(&SPOOL_FREE);
    LazyLock::force(&SPOOL_BELOW_FLOOR);
    LazyLock::force(&EVENTS_UNPUBLISHED);
    for result in ["ok", "error"] {
        UPLOADS.with_label_values(&[result]).inc_by(0);
    }
    for reason in ["spool_full", "spool_write_failed"] {
        DROPPED.with_label_values(&[reason]).inc_by(0);
    }
    LazyLock::force(&UPLOAD_SECONDS);
    LazyLock::force(&AVAILABLE_DELAY);
    cloudcam_core::metrics::describe();
}

/// Extension of the note beside a segment being written: where it starts.
const OPEN: &str = "open";

pub struct Spool {
    pub dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    state: Arc<dyn StateStore>,
    /// Segment announcements: the index (in the shared state) is the record, so they never
    /// hold up the upload of the next segment while Kafka is away.
    events: EventOutbox,
    max_bytes: u64,
    min_free_bytes: u64,
    pub worker_id: String,
    wake: Notify,
    /// What a recorder that died on this spool left half-written (camera, file, start),
    /// listed before anything new is written; salvaged when the uploader starts.
    leftovers: std::sync::Mutex<Vec<(String, PathBuf, Option<i64>)>>,
}

/// A finished segment in the spool.
struct Ready {
    json: PathBuf,
    mp4: PathBuf,
    segment: Segment,
    bytes: u64,
}

impl Spool {
    pub fn new(
        dir: PathBuf,
        store: Arc<dyn ObjectStore>,
        state: Arc<dyn StateStore>,
        bus: Arc<dyn Bus>,
        max_bytes: u64,
        min_free_bytes: u64,
        worker_id: String,
    ) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let leftovers = std::fs::read_dir(&dir)?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .flat_map(|camera| {
                unfinished(&dir.join(&camera))
                    .into_iter()
                    .map(move |(mp4, start)| (camera.clone(), mp4, start))
            })
            .collect();
        Ok(Arc::new(Self {
            dir,
            store,
            state,
            events: EventOutbox::start(bus, EVENTS_UNPUBLISHED.clone()),
            max_bytes,
            min_free_bytes,
            worker_id,
            wake: Notify::new(),
            leftovers: std::sync::Mutex::new(leftovers),
        }))
    }

    /// The directory a camera's recorder writes into.
    pub fn camera_dir(&self, camera_id: &str) -> PathBuf {
        self.dir.join(camera_id)
    }

    /// Hands `camera_id`'s complete segment file `mp4`, `[start_ms, end_ms)`, to the uploader.
    pub fn finish(
        &self,
        camera_id: &str,
        mp4: &Path,
        (start_ms, end_ms): (i64, i64),
        codec: cloudcam_core::codec::VideoCodec,
    ) -> std::io::Result<()> {
        let segment = Segment {
            key: segment_key(camera_id, start_ms),
            camera_id: camera_id.to_string(),
            start_ms,
            end_ms,
            bytes: std::fs::metadata(mp4)?.len(),
            codec: codec.name().into(),
        };
        self.finished(mp4, &segment)
    }

    /// Records that `mp4` is a finished segment, and wakes the uploader. If its record cannot
    /// be written (the disk is full), the segment is deleted and counted as dropped: a file
    /// the uploader would never see is not kept.
    pub fn finished(&self, mp4: &Path, segment: &Segment) -> std::io::Result<()> {
        let json = mp4.with_extension("json");
        let tmp = mp4.with_extension("json.tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec(segment).expect("serializable"))
            .and_then(|()| std::fs::rename(&tmp, &json));
        let _ = std::fs::remove_file(mp4.with_extension(OPEN));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(mp4);
            DROPPED.with_label_values(&["spool_write_failed"]).inc();
            return Err(e);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Notes beside a segment file being written where it starts on the wall clock, so that
    /// what it holds can be kept should the recorder die while writing it.
    pub fn opened(&self, mp4: &Path, start_ms: i64) {
        if let Err(e) = std::fs::write(mp4.with_extension(OPEN), start_ms.to_string()) {
            tracing::warn!(file = %mp4.display(), error = %e, "cannot note where a segment starts");
        }
    }

    /// Deletes a segment file that is not to be kept, with its note.
    pub fn discard(&self, mp4: &Path) {
        let _ = std::fs::remove_file(mp4);
        let _ = std::fs::remove_file(mp4.with_extension(OPEN));
    }

    /// Keeps the whole fragments of `camera_id`'s unfinished segment file `mp4` (its writer
    /// was stopped, or the recorder died) as a segment from `start_ms`; deletes it when it
    /// holds none.
    pub fn salvage(&self, camera_id: &str, mp4: &Path, start_ms: i64) {
        if mp4.with_extension("json").exists() {
            return;
        }
        let kept = match crate::segmenter::salvage(mp4) {
            Ok(Some((d, codec))) if !d.is_zero() => {
                let end_ms = start_ms + d.as_millis() as i64;
                tracing::info!(file = %mp4.display(), start_ms, end_ms, "kept the whole fragments of an unfinished segment");
                self.finish(camera_id, mp4, (start_ms, end_ms), codec)
                    .is_ok()
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(file = %mp4.display(), error = %e, "cannot read an unfinished segment");
                false
            }
        };
        if !kept {
            tracing::info!(file = %mp4.display(), "discarding an unfinished segment without a whole fragment");
            self.discard(mp4);
        }
    }

    /// Bytes free for this process on the spool's filesystem.
    pub fn free_bytes(&self) -> std::io::Result<u64> {
        let s = nix::sys::statvfs::statvfs(&self.dir)?;
        Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
    }

    /// Why recording must pause now, if the spool's filesystem is below the free-space floor.
    pub fn below_floor(&self) -> Option<String> {
        let free = match self.free_bytes() {
            Ok(free) => free,
            Err(e) => return Some(format!("cannot read the spool's free space: {e}")),
        };
        SPOOL_FREE.set(free as f64);
        let below = free < self.min_free_bytes;
        SPOOL_BELOW_FLOOR.set(f64::from(u8::from(below)));
        below.then(|| {
            format!(
                "recording paused: the spool disk has {} MiB free, below its floor of {} MiB",
                free / (1024 * 1024),
                self.min_free_bytes / (1024 * 1024)
            )
        })
    }

    /// Keeps what a recorder that died on this spool was writing (see [`Spool::salvage`]); a
    /// file whose start was never noted is deleted.
    fn salvage_leftovers(&self) {
        let leftovers = std::mem::take(&mut *self.leftovers.lock().expect("leftovers lock"));
        for (camera_id, mp4, start) in leftovers {
            match start {
                Some(start_ms) => self.salvage(&camera_id, &mp4, start_ms),
                None => {
                    tracing::warn!(file = %mp4.display(), "discarding an unfinished segment");
                    let _ = std::fs::remove_file(&mp4);
                }
            }
        }
    }

    fn ready(&self) -> Vec<Ready> {
        let mut out = Vec::new();
        let Ok(cams) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for cam in cams.flatten() {
            let Ok(files) = std::fs::read_dir(cam.path()) else {
                continue;
            };
            for f in files.flatten() {
                let json = f.path();
                if json.extension().is_none_or(|x| x != "json") {
                    continue;
                }
                let mp4 = json.with_extension("mp4");
                let Ok(segment) = std::fs::read(&json)
                    .map_err(|e| e.to_string())
                    .and_then(|b| serde_json::from_slice::<Segment>(&b).map_err(|e| e.to_string()))
                else {
                    tracing::warn!(file = %json.display(), "unreadable spool record; removing it");
                    let _ = std::fs::remove_file(&json);
                    continue;
                };
                let bytes = std::fs::metadata(&mp4).map(|m| m.len()).unwrap_or(0);
                out.push(Ready {
                    json,
                    mp4,
                    segment,
                    bytes,
                });
            }
        }
        out.sort_by_key(|r| r.segment.start_ms);
        out
    }

    /// Waits (at most `within`) until every finished segment is uploaded: a recorder that
    /// stops gracefully leaves nothing behind that only its own restart would upload.
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.ready().is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            self.wake.notify_one();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drains the spool forever: uploads, indexes and announces each finished segment, retrying
    /// with backoff while the store is away.
    pub async fn run(self: Arc<Self>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.salvage_leftovers()).await;
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut ready = self.ready();
            self.enforce_bound(&mut ready);
            let (mut bytes, mut segments) =
                (ready.iter().map(|r| r.bytes).sum::<u64>(), ready.len());
            let gauge = |bytes: u64, segments: usize| {
                SPOOL.with_label_values(&["bytes"]).set(bytes as f64);
                SPOOL.with_label_values(&["segments"]).set(segments as f64);
            };
            gauge(bytes, segments);
            let mut failed = false;
            for r in ready {
                if let Err(e) = self.upload(&r).await {
                    UPLOADS.with_label_values(&["error"]).inc();
                    tracing::warn!(camera = %r.segment.camera_id, key = %r.segment.key, error = %e, "upload failed; keeping the segment in the spool");
                    failed = true;
                    break;
                }
                UPLOADS.with_label_values(&["ok"]).inc();
                // What still waits, as it drains (not what waited when the pass began).
                (bytes, segments) = (bytes.saturating_sub(r.bytes), segments - 1);
                gauge(bytes, segments);
            }
            if failed {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            } else {
                backoff = Duration::from_millis(500);
                let _ = tokio::time::timeout(Duration::from_secs(5), self.wake.notified()).await;
            }
        }
    }

    async fn upload(&self, r: &Ready) -> anyhow::Result<()> {
        let data = tokio::fs::read(&r.mp4).await?;
        let started = Instant::now();
        self.store
            .put(&ObjectPath::from(r.segment.key.as_str()), data.into())
            .await?;
        UPLOAD_SECONDS.observe(started.elapsed().as_secs_f64());
        let s = &r.segment;
        index_segment(&*self.state, s).await?;
        let event = v1::CameraEvent {
            schema_version: cloudcam_proto::SCHEMA_VERSION,
            camera_id: s.camera_id.clone(),
            timestamp_ms: cloudcam_core::now_ms(),
            worker_id: self.worker_id.clone(),
            kind: Some(v1::camera_event::Kind::Segment(v1::SegmentWritten {
                key: s.key.clone(),
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                bytes: s.bytes,
                codec: s.codec.clone(),
                frames: 0,
            })),
        };
        self.events.publish(event);
        let delay = (cloudcam_core::now_ms() - s.end_ms).max(0) as f64 / 1000.0;
        AVAILABLE_DELAY.observe(delay);
        SEGMENTS.with_label_values(&[&s.camera_id]).inc();
        SEGMENT_BYTES
            .with_label_values(&[&s.camera_id])
            .inc_by(s.bytes);
        tracing::info!(camera = %s.camera_id, key = %s.key, bytes = s.bytes, delay_s = delay, "segment stored");
        let _ = tokio::fs::remove_file(&r.json).await;
        let _ = tokio::fs::remove_file(&r.mp4).await;
        Ok(())
    }

    fn enforce_bound(&self, ready: &mut Vec<Ready>) {
        let mut total: u64 = ready.iter().map(|r| r.bytes).sum();
        while total > self.max_bytes && !ready.is_empty() {
            let oldest = ready.remove(0);
            total -= oldest.bytes;
            DROPPED.with_label_values(&["spool_full"]).inc();
            tracing::error!(camera = %oldest.segment.camera_id, key = %oldest.segment.key, "spool full: dropping the oldest segment");
            let _ = std::fs::remove_file(&oldest.json);
            let _ = std::fs::remove_file(&oldest.mp4);
        }
    }
}

/// The segment files in a camera's spool directory that never got their record, with where
/// they start when that was noted. Orphaned notes are removed.
fn unfinished(camera_dir: &Path) -> Vec<(PathBuf, Option<i64>)> {
    let Ok(entries) = std::fs::read_dir(camera_dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in entries.flatten().map(|e| e.path()) {
        let ext = p.extension().and_then(|x| x.to_str());
        if ext == Some("mp4") && !p.with_extension("json").exists() {
            let start = std::fs::read_to_string(p.with_extension(OPEN))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            out.push((p, start));
        } else if ext == Some(OPEN) && !p.with_extension("mp4").exists() {
            let _ = std::fs::remove_file(&p);
        }
    }
    out
}
