//! Recordings: the segment index of a camera over a time range, and clips cut from the stored
//! segments without re-encoding (also what the web UI plays back). Snapshots too.
//!
//! A clip is made by downloading the segments of one continuous span and reading them one by
//! one, each placed at its start in the index (a file's own timestamps only order the frames
//! within it), in one pass that holds back the current GOP until the next keyframe shows where
//! the clip starts, and remuxes the access units between the keyframes around the requested
//! range into one MP4 (`appsrc ! mp4mux`). Its bounds are the range rounded out to keyframes,
//! and a clip stops at the first gap in the recording.
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
use gstreamer_app as gst_app;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use std::ops::ControlFlow;
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
        let files: Vec<(PathBuf, u64, u64)> = span
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    dir.join(format!("seg{i:06}.mp4")),
                    ((s.start_ms - base) * 1_000_000) as u64,
                    ((s.end_ms - base) * 1_000_000) as u64,
                )
            })
            .collect();
        let range = (
            ((from - base).max(0) * 1_000_000) as u64,
            ((to - base) * 1_000_000) as u64,
        );
        let out = dir.join("clip.mp4");
        let cut = tokio::task::spawn_blocking(move || remux(&files, range, &out))
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

/// The clip being written: access units go in, retimed to start at the clip's first keyframe.
struct ClipWriter {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    /// Where the clip starts (on the span's scale); `None` while the first GOP is held back.
    start: Option<u64>,
    /// The held-back GOP: the latest keyframe at or before the range's start and what follows.
    gop: Vec<gst::Buffer>,
    last_dts: u64,
}

impl ClipWriter {
    fn new(out: &Path) -> anyhow::Result<Self> {
        let pipeline = gst::parse::launch(&format!(
            "appsrc name=src format=time block=true max-bytes=8000000 ! mux.video_0 \
             mp4mux name=mux faststart=true ! filesink location=\"{}\"",
            out.display()
        ))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
        let src = pipeline
            .by_name("src")
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
            .ok_or_else(|| anyhow::anyhow!("no appsrc"))?;
        Ok(Self {
            pipeline,
            src,
            start: None,
            gop: Vec::new(),
            last_dts: 0,
        })
    }

    /// Takes one access unit, timed on the span's scale; `Break` once the clip is complete
    /// (a keyframe at or after `to`).
    fn take(
        &mut self,
        caps: Option<&gst::CapsRef>,
        buf: gst::Buffer,
        (from, to): (u64, u64),
    ) -> anyhow::Result<ControlFlow<u64>> {
        if self.src.caps().is_none()
            && let Some(caps) = caps
        {
            // The first file's caps hold for the clip (in-band parameter sets follow changes).
            self.src.set_caps(Some(&caps.to_owned()));
            self.pipeline.set_state(gst::State::Playing)?;
        }
        let pts = buf.pts().map(|p| p.nseconds()).unwrap_or(0);
        let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
        match self.start {
            None if key && pts <= from => {
                self.gop.clear();
                self.gop.push(buf);
            }
            None if key => {
                let start = self
                    .gop
                    .first()
                    .and_then(|b| b.pts())
                    .map_or(pts, |p| p.nseconds());
                self.start = Some(start);
                for held in std::mem::take(&mut self.gop) {
                    self.push(held, start)?;
                }
                return self.take(caps, buf, (from, to));
            }
            // Frames before the first keyframe cannot be decoded.
            None if self.gop.is_empty() => {}
            None => self.gop.push(buf),
            Some(start) if key && pts >= to && pts > start => return Ok(ControlFlow::Break(pts)),
            Some(start) => self.push(buf, start)?,
        }
        Ok(ControlFlow::Continue(()))
    }

    fn push(&mut self, mut buf: gst::Buffer, start: u64) -> anyhow::Result<()> {
        {
            let b = buf.make_mut();
            let pts = b.pts().map_or(0, |p| p.nseconds()).saturating_sub(start);
            // Decode times never go back, also where reordered frames meet the clip's start.
            let dts = b
                .dts()
                .map_or(pts, |d| d.nseconds().saturating_sub(start))
                .max(self.last_dts);
            self.last_dts = dts;
            b.set_pts(gst::ClockTime::from_nseconds(pts));
            b.set_dts(gst::ClockTime::from_nseconds(dts));
        }
        self.src.push_buffer(buf)?;
        Ok(())
    }

    /// Flushes what is held back and finishes the file; returns where the clip starts.
    fn finish(mut self) -> anyhow::Result<u64> {
        let start = match self.start {
            Some(start) => start,
            None => {
                let start = self
                    .gop
                    .first()
                    .and_then(|b| b.pts())
                    .ok_or_else(|| anyhow::anyhow!("the recording has no keyframe"))?
                    .nseconds();
                for held in std::mem::take(&mut self.gop) {
                    self.push(held, start)?;
                }
                start
            }
        };
        self.src.end_of_stream()?;
        let bus = self.pipeline.bus().expect("pipeline bus");
        let ended = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = self.pipeline.set_state(gst::State::Null);
        match ended.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(start),
            Some(gst::MessageView::Error(e)) => Err(anyhow::anyhow!("{}", e.error())),
            _ => Err(anyhow::anyhow!("writing the clip timed out")),
        }
    }
}

impl Drop for ClipWriter {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Remuxes the video of `files` (each with its start and end, in nanoseconds from the first
/// one's start; one that ends before what precedes it does repeats it and is skipped)
/// between the keyframes around `[from, to)` on the same scale into `out`; returns the clip's
/// actual bounds on that scale.
fn remux(
    files: &[(PathBuf, u64, u64)],
    (from, to): (u64, u64),
    out: &Path,
) -> anyhow::Result<(u64, u64)> {
    let mut writer = ClipWriter::new(out)?;
    // The end of the latest frame on the span's scale: where the clip ends if the recording
    // does first, and the earliest a following file may start (index times are wall-clock
    // milliseconds, a file's frames are spaced by the camera's clock).
    let mut stream_end = 0u64;
    let mut failed = None;
    let mut end = None;
    for (file, offset, file_end) in files {
        if *file_end <= stream_end {
            continue;
        }
        let offset = (*offset).max(stream_end);
        let mut shift: Option<i128> = None;
        cloudcam_core::mp4::read_video(file, Duration::from_secs(60), |sample| {
            let Some(mut buf) = sample.buffer_owned() else {
                return ControlFlow::Continue(());
            };
            let Some(ts) = buf.dts().or(buf.pts()).map(|t| t.nseconds() as i128) else {
                return ControlFlow::Continue(());
            };
            let shift = *shift.get_or_insert(offset as i128 - ts);
            let on_span = |t: Option<gst::ClockTime>| {
                t.map(|t| {
                    gst::ClockTime::from_nseconds((t.nseconds() as i128 + shift).max(0) as u64)
                })
            };
            {
                let b = buf.make_mut();
                let (pts, dts) = (on_span(b.pts().or(b.dts())), on_span(b.dts()));
                b.set_pts(pts);
                b.set_dts(dts);
            }
            let pts = buf.pts().map_or(0, |p| p.nseconds());
            stream_end = stream_end.max(pts + buf.duration().map_or(0, |d| d.nseconds()));
            match writer.take(sample.caps(), buf, (from, to)) {
                Ok(ControlFlow::Break(at)) => {
                    end = Some(at);
                    ControlFlow::Break(())
                }
                Ok(ControlFlow::Continue(())) => ControlFlow::Continue(()),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if end.is_some() {
            break;
        }
    }
    let start = writer.finish()?;
    Ok((start, end.unwrap_or(stream_end)))
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

    /// Two-second test segments (keyframe every second), written the way the recorder
    /// writes them: fragmented MP4, timestamps from zero.
    fn test_segment(path: &Path) {
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=50 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! x264enc key-int-max=25 speed-preset=ultrafast tune=zerolatency ! h264parse \
             ! mp4mux fragment-duration=1000 streamable=true ! filesink location=\"{}\"",
            path.display()
        ))
        .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let ended = p.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        p.set_state(gst::State::Null).unwrap();
        assert!(matches!(ended.unwrap().view(), gst::MessageView::Eos(_)));
    }

    #[test]
    fn clips_are_cut_at_keyframes_with_segments_placed_by_the_index() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        const S: u64 = 1_000_000_000;
        // The second segment's index start is a little early (wall clock against the
        // camera's): it follows the first one's last frame instead.
        let files: Vec<(PathBuf, u64, u64)> = [0, 2 * S - 5_000_000, 4 * S]
            .iter()
            .enumerate()
            .map(|(i, &at)| (dir.path().join(format!("seg{i}.mp4")), at, at + 2 * S))
            .collect();
        for (f, _, _) in &files {
            test_segment(f);
        }
        let out = dir.path().join("clip.mp4");
        let (start, end) = remux(&files, (2 * S + S / 2, 4 * S + S / 2), &out).unwrap();
        assert_eq!((start, end), (2 * S, 5 * S));
        let mut first = None;
        cloudcam_core::mp4::read_video(&out, Duration::from_secs(10), |s| {
            first = s
                .buffer()
                .map(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
            ControlFlow::Break(())
        })
        .unwrap();
        assert_eq!(first, Some(true), "the clip starts with a keyframe");
        let span = cloudcam_core::mp4::video_span(&out, Duration::from_secs(10))
            .unwrap()
            .unwrap();
        assert_eq!(span.as_nanos() as u64, end - start);

        // A range before the recording starts at its first keyframe; one past its end ends
        // with its last frame.
        let (start, end) = remux(&files, (0, 9 * S), &out).unwrap();
        assert_eq!((start, end), (0, 6 * S));
    }
}
