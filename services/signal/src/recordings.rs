//! Recordings: the segment index of a camera over a time range, and clips cut from the stored
//! segments without re-encoding (also what the web UI plays back). Snapshots too.
//!
//! A clip is made by downloading the segments of one continuous span, reading them as one
//! stream (`splitmuxsrc`), finding the keyframes around the requested range (a parse-only
//! pass), and remuxing the access units between them into one MP4 (`mp4mux`). Its bounds are
//! the range rounded out to keyframes, and a clip stops at the first gap in the recording.
//!
//! Clips are cut in a scratch directory per export (`<tmp>/cloudcam-clips/<pid>-…`) and
//! streamed from disk; the directory goes when the response ends or the client goes away, and
//! directories of processes that died are swept when signal starts. At most a configured
//! number of exports run at once.

use crate::error::ApiError;
use crate::model::Need;
use crate::store::CameraStore;
use crate::users::Caller;
use cloudcam_core::media::{Segment, segments, snapshot_key, spans};
use cloudcam_core::state::StateStore;
use gstreamer as gst;
use gstreamer::prelude::*;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

/// Segments closer than this count as one continuous span.
const CONTINUOUS_MS: i64 = 500;
/// Longest clip served at once.
pub const MAX_CLIP_MS: i64 = 3600 * 1000;

/// A camera's recordings over a range.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingsView {
    pub segments: Vec<Segment>,
    /// Continuous recorded stretches (small gaps bridged).
    pub spans: Vec<Span>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Span {
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A cut clip: one MP4 on disk and its actual bounds (ms since the epoch). The file (and its
/// export slot) lives as long as this value.
pub struct Clip {
    pub file: tokio::fs::File,
    pub len: u64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Dropped with the clip: removes its scratch directory, frees its export slot.
    pub guard: (tempfile::TempDir, tokio::sync::OwnedSemaphorePermit),
}

#[derive(Clone)]
pub struct Recordings {
    state: Arc<dyn StateStore>,
    media: Arc<dyn object_store::ObjectStore>,
    cameras: CameraStore,
    exports: Arc<tokio::sync::Semaphore>,
    max_exports: usize,
    scratch: PathBuf,
}

/// Where clips are cut.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("cloudcam-clips")
}

/// Removes the scratch directories of processes that no longer run (a signal killed while
/// exporting); returns how many.
fn sweep(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Checks a range and returns its length (no arithmetic on it can overflow).
fn check(from: i64, to: i64) -> Result<i64, ApiError> {
    if from < 0 || to <= from {
        return Err(ApiError::BadRequest(
            "invalid_range",
            "`from` must be ≥ 0 and `to` after it (both in ms since the epoch)".into(),
        ));
    }
    Ok(to - from)
}

impl Recordings {
    pub fn new(
        state: Arc<dyn StateStore>,
        media: Arc<dyn object_store::ObjectStore>,
        max_exports: usize,
    ) -> Self {
        let scratch = scratch_root();
        let swept = sweep(&scratch);
        if swept > 0 {
            tracing::info!(
                swept,
                "removed clip scratch directories left by earlier processes"
            );
        }
        Self {
            cameras: CameraStore::new(state.clone()),
            state,
            media,
            exports: Arc::new(tokio::sync::Semaphore::new(max_exports)),
            max_exports,
            scratch,
        }
    }

    /// Recordings, clips and snapshots need the `playback` grant.
    async fn allowed(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        let stored = self.cameras.require(id).await?;
        stored.record.authorize(caller, Need::Playback).map(|_| ())
    }

    pub async fn list(
        &self,
        caller: &Caller,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<RecordingsView, ApiError> {
        check(from, to)?;
        self.allowed(caller, id).await?;
        let segs = segments(&*self.state, id, from, to).await?;
        let spans = spans(&segs, CONTINUOUS_MS)
            .into_iter()
            .map(|(start_ms, end_ms)| Span { start_ms, end_ms })
            .collect();
        Ok(RecordingsView {
            segments: segs,
            spans,
        })
    }

    pub async fn clip(
        &self,
        caller: &Caller,
        id: &str,
        from: i64,
        to: i64,
    ) -> Result<Clip, ApiError> {
        if check(from, to)? > MAX_CLIP_MS {
            return Err(ApiError::BadRequest(
                "invalid_range",
                "a clip is at most one hour long".into(),
            ));
        }
        self.allowed(caller, id).await?;
        let permit = self.exports.clone().try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "{} clip exports are running on this instance",
                self.max_exports
            ))
        })?;
        let all = segments(&*self.state, id, from, to).await?;
        // One continuous span, starting with the segment that holds `from`.
        let mut span: Vec<Segment> = Vec::new();
        for s in all {
            if span
                .last()
                .is_some_and(|l| s.start_ms - l.end_ms > CONTINUOUS_MS)
            {
                break;
            }
            span.push(s);
        }
        if span.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no recording of camera {id} between {from} and {to}"
            )));
        }
        let media = |e: &dyn std::fmt::Display| ApiError::Media(e.to_string());
        std::fs::create_dir_all(&self.scratch).map_err(|e| media(&e))?;
        // Removed when dropped: on an error below, or with the clip once it is sent.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&self.scratch)
            .map_err(|e| media(&e))?;
        let (start_ms, end_ms) = self.cut(dir.path(), &span, from, to).await?;
        let file = tokio::fs::File::open(dir.path().join("clip.mp4"))
            .await
            .map_err(|e| media(&e))?;
        let len = file.metadata().await.map_err(|e| media(&e))?.len();
        Ok(Clip {
            file,
            len,
            start_ms,
            end_ms,
            guard: (dir, permit),
        })
    }

    /// Cuts `clip.mp4` in `dir`; returns its actual bounds.
    async fn cut(
        &self,
        dir: &Path,
        span: &[Segment],
        from: i64,
        to: i64,
    ) -> Result<(i64, i64), ApiError> {
        let media = |e: &dyn std::fmt::Display| ApiError::Media(e.to_string());
        for (i, s) in span.iter().enumerate() {
            let bytes = self
                .media
                .get(&ObjectPath::from(s.key.as_str()))
                .await
                .map_err(|e| media(&e))?
                .bytes()
                .await
                .map_err(|e| media(&e))?;
            tokio::fs::write(dir.join(format!("seg{i:06}.mp4")), &bytes)
                .await
                .map_err(|e| media(&e))?;
        }
        let base = span[0].start_ms;
        let (from_ns, to_ns) = (
            ((from - base).max(0) * 1_000_000) as u64,
            ((to - base) * 1_000_000) as u64,
        );
        let d = dir.to_path_buf();
        let cut = tokio::task::spawn_blocking(move || remux(&d, from_ns, to_ns))
            .await
            .map_err(|e| media(&e))?
            .map_err(|e| media(&e))?;
        Ok((
            base + (cut.0 / 1_000_000) as i64,
            base + (cut.1 / 1_000_000) as i64,
        ))
    }

    /// The camera's latest snapshot (JPEG).
    pub async fn snapshot(&self, caller: &Caller, id: &str) -> Result<bytes::Bytes, ApiError> {
        self.allowed(caller, id).await?;
        match self.media.get(&ObjectPath::from(snapshot_key(id))).await {
            Ok(r) => r.bytes().await.map_err(|e| ApiError::Media(e.to_string())),
            Err(object_store::Error::NotFound { .. }) => Err(ApiError::NotFound(format!(
                "camera {id} has no snapshot yet"
            ))),
            Err(e) => Err(ApiError::Media(e.to_string())),
        }
    }

    /// Asks the owning ingest worker for a fresh snapshot (taken within a second or so, plus
    /// up to one GOP to reach a keyframe).
    pub async fn request_snapshot(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        self.allowed(caller, id).await?;
        self.state
            .set(
                &cloudcam_core::media::snapshot_request_key(id),
                b"1",
                Some(Duration::from_secs(30)),
            )
            .await?;
        Ok(())
    }
}

/// Runs a pipeline to its end (or fails after a minute).
fn run_to_eos(pipeline: &gst::Pipeline) -> anyhow::Result<()> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().expect("pipeline bus");
    let res = match bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(60),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    ) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(anyhow::anyhow!("{}", e.error())),
            _ => Ok(()),
        },
        None => Err(anyhow::anyhow!("timed out")),
    };
    let _ = pipeline.set_state(gst::State::Null);
    res
}

fn launch(desc: &str) -> anyhow::Result<gst::Pipeline> {
    gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))
}

/// Remuxes the segments in `dir` between the keyframes around `[from_ns, to_ns)` (nanoseconds
/// from the start of the first segment) into `dir/clip.mp4`; returns the clip's actual bounds
/// on the same scale.
fn remux(dir: &Path, from_ns: u64, to_ns: u64) -> anyhow::Result<(u64, u64)> {
    let src = format!("splitmuxsrc location=\"{}/seg*.mp4\"", dir.display());
    // Pass 1: where the keyframes are, and where the stream ends.
    let scan = launch(&format!(
        "{src} ! h264parse name=parse ! fakesink sync=false"
    ))?;
    // (keyframe times, end of the last frame, time of the first frame)
    let marks = std::sync::Arc::new(std::sync::Mutex::new((Vec::<u64>::new(), 0u64, u64::MAX)));
    {
        let marks = marks.clone();
        let pad = scan
            .by_name("parse")
            .expect("parse")
            .static_pad("src")
            .expect("src pad");
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buf) = info.buffer()
                && let Some(pts) = buf.pts().or(buf.dts())
            {
                let mut m = marks.lock().expect("marks");
                m.2 = m.2.min(pts.nseconds());
                if !buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    m.0.push(pts.nseconds());
                }
                let end = pts.nseconds() + buf.duration().map(|d| d.nseconds()).unwrap_or(0);
                m.1 = m.1.max(end);
            }
            gst::PadProbeReturn::Ok
        });
    }
    run_to_eos(&scan)?;
    let (keyframes, stream_end, first) = marks.lock().expect("marks").clone();
    // Stored timestamps need not start at zero: measure from the first frame.
    let (from_ns, to_ns) = (first.saturating_add(from_ns), first.saturating_add(to_ns));
    let start = keyframes
        .iter()
        .copied()
        .filter(|&k| k <= from_ns)
        .max()
        .or_else(|| keyframes.first().copied())
        .ok_or_else(|| anyhow::anyhow!("the recording has no keyframe"))?;
    let end = keyframes
        .iter()
        .copied()
        .find(|&k| k >= to_ns && k > start)
        .unwrap_or(stream_end);

    // Pass 2: copy the access units in [start, end); mp4mux starts the track at the first.
    let out = dir.join("clip.mp4");
    let cut = launch(&format!(
        "{src} ! h264parse name=parse ! mp4mux faststart=true ! filesink location=\"{}\"",
        out.display()
    ))?;
    let pad = cut
        .by_name("parse")
        .expect("parse")
        .static_pad("src")
        .expect("src pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        // Demuxed fragments may carry only a DTS on some frames; without B-frames they agree.
        let Some(pts) = info
            .buffer()
            .and_then(|b| b.pts().or(b.dts()))
            .map(|p| p.nseconds())
        else {
            return gst::PadProbeReturn::Drop;
        };
        if pts < start || pts >= end {
            return gst::PadProbeReturn::Drop;
        }
        if let Some(buf) = info.buffer_mut()
            && buf.pts().is_none()
        {
            buf.make_mut().set_pts(gst::ClockTime::from_nseconds(pts));
        }
        gst::PadProbeReturn::Ok
    });
    run_to_eos(&cut)?;
    Ok((start - first, end - first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_removes_only_what_dead_processes_left() {
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("999999999-abc");
        let ours = root.path().join(format!("{}-def", std::process::id()));
        for d in [&dead, &ours] {
            std::fs::create_dir_all(d.join("x")).unwrap();
        }
        assert_eq!(sweep(root.path()), 1);
        assert!(!dead.exists());
        assert!(ours.exists());
    }

    #[test]
    fn ranges_are_checked_without_overflow() {
        assert_eq!(check(0, i64::MAX).unwrap(), i64::MAX);
        assert_eq!(check(-1, 5).unwrap_err().code(), "invalid_range");
        assert_eq!(
            check(i64::MIN, i64::MAX).unwrap_err().code(),
            "invalid_range"
        );
        assert_eq!(check(5, 5).unwrap_err().code(), "invalid_range");
    }
}
