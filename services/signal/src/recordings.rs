//! Recordings: the segment index of a camera over a time range, and clips cut from the stored
//! segments without re-encoding (also what the web UI plays back). Snapshots too.
//!
//! A clip is made by downloading the segments of one continuous span and reading them one by
//! one, each placed at its start in the index (a file's own timestamps only order the frames
//! within it), in one pass that holds back the current GOP until the next keyframe shows where
//! the clip starts, and remuxes the access units between the keyframes around the requested
//! range into one MP4 (`appsrc ! mp4mux`), with the camera's audio as it was recorded (a file
//! without audio is a gap in the clip's audio track). Its bounds are the range rounded out to
//! keyframes, and a clip stops at the first gap in the recording.
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
use cloudcam_core::mp4::Track;
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
/// The camera's audio, where its segments have any, goes along as it was recorded.
struct ClipWriter {
    out: PathBuf,
    /// Built once the clip's start is known (by then both tracks have shown their caps).
    mux: Option<Mux>,
    video_caps: Option<gst::Caps>,
    audio_caps: Option<gst::Caps>,
    /// Where the clip starts (on the span's scale); `None` while the first GOP is held back.
    start: Option<u64>,
    /// The held-back GOP: the latest keyframe at or before the range's start and what follows.
    gop: Vec<gst::Buffer>,
    /// Audio from the held-back GOP's keyframe on.
    held_audio: Vec<gst::Buffer>,
    last_dts: u64,
}

struct Mux {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
}

fn at(t: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(t)
}

fn pts_of(buf: &gst::BufferRef) -> u64 {
    buf.pts().map_or(0, |p| p.nseconds())
}

impl ClipWriter {
    fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            mux: None,
            video_caps: None,
            audio_caps: None,
            start: None,
            gop: Vec::new(),
            held_audio: Vec::new(),
            last_dts: 0,
        }
    }

    /// Starts the muxer: video, and audio if any has been seen.
    fn open(&mut self) -> anyhow::Result<&mut Mux> {
        if self.mux.is_none() {
            let src = "format=time block=true max-bytes=8000000";
            let audio = if self.audio_caps.is_some() {
                format!("appsrc name=audio {src} ! mux.audio_0 ")
            } else {
                String::new()
            };
            let pipeline = gst::parse::launch(&format!(
                "appsrc name=video {src} ! mux.video_0 {audio}\
                 mp4mux name=mux faststart=true ! filesink location=\"{}\"",
                self.out.display()
            ))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
            let appsrc = |name: &str, caps: &Option<gst::Caps>| {
                let src = pipeline
                    .by_name(name)
                    .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
                if let Some(src) = &src {
                    // The first file's caps hold for the clip (in-band parameter sets follow
                    // changes).
                    src.set_caps(caps.as_ref());
                }
                src
            };
            let video = appsrc("video", &self.video_caps)
                .ok_or_else(|| anyhow::anyhow!("no video appsrc"))?;
            let audio = appsrc("audio", &self.audio_caps);
            pipeline.set_state(gst::State::Playing)?;
            self.mux = Some(Mux {
                pipeline,
                video,
                audio,
            });
        }
        Ok(self.mux.as_mut().expect("opened"))
    }

    /// Takes one access unit, timed on the span's scale; `Break` once the clip is complete
    /// (a keyframe at or after `to`).
    fn take(
        &mut self,
        caps: Option<&gst::CapsRef>,
        buf: gst::Buffer,
        (from, to): (u64, u64),
    ) -> anyhow::Result<ControlFlow<u64>> {
        if self.video_caps.is_none() {
            self.video_caps = caps.map(|c| c.to_owned());
        }
        let pts = pts_of(&buf);
        let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
        match self.start {
            None if key && pts <= from => {
                self.gop.clear();
                self.gop.push(buf);
                self.held_audio.retain(|a| pts_of(a) >= pts);
            }
            None if key => {
                let start = self.gop.first().map_or(pts, |k| pts_of(k));
                self.begin(start)?;
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

    /// Takes one audio frame, timed on the span's scale.
    fn take_audio(&mut self, caps: Option<&gst::CapsRef>, buf: gst::Buffer) -> anyhow::Result<()> {
        if self.audio_caps.is_none() && self.mux.is_none() {
            self.audio_caps = caps.map(|c| c.to_owned());
        }
        match self.start {
            None if self.gop.first().is_some_and(|k| pts_of(&buf) >= pts_of(k)) => {
                self.held_audio.push(buf)
            }
            None => {}
            Some(start) => self.push_audio(buf, start)?,
        }
        Ok(())
    }

    /// The clip starts at `start`: what was held back goes out.
    fn begin(&mut self, start: u64) -> anyhow::Result<()> {
        self.start = Some(start);
        self.open()?;
        for held in std::mem::take(&mut self.gop) {
            self.push(held, start)?;
        }
        for held in std::mem::take(&mut self.held_audio) {
            self.push_audio(held, start)?;
        }
        Ok(())
    }

    fn push(&mut self, mut buf: gst::Buffer, start: u64) -> anyhow::Result<()> {
        {
            let b = buf.make_mut();
            let pts = pts_of(b).saturating_sub(start);
            // Decode times never go back, also where reordered frames meet the clip's start.
            let dts = b
                .dts()
                .map_or(pts, |d| d.nseconds().saturating_sub(start))
                .max(self.last_dts);
            self.last_dts = dts;
            b.set_pts(at(pts));
            b.set_dts(at(dts));
        }
        self.open()?.video.push_buffer(buf)?;
        Ok(())
    }

    fn push_audio(&mut self, mut buf: gst::Buffer, start: u64) -> anyhow::Result<()> {
        let pts = pts_of(&buf);
        let Some(src) = self.mux.as_ref().and_then(|m| m.audio.clone()) else {
            return Ok(());
        };
        if pts < start {
            return Ok(());
        }
        {
            let b = buf.make_mut();
            b.set_pts(at(pts - start));
            b.set_dts(at(pts - start));
        }
        src.push_buffer(buf)?;
        Ok(())
    }

    /// A file of the span had no audio: the muxer is told there is none over `[from, to)` on
    /// the span's scale (else it would wait for audio and hold the video back).
    fn audio_gap(&mut self, from: u64, to: u64) {
        if let (Some(start), Some(src)) =
            (self.start, self.mux.as_ref().and_then(|m| m.audio.as_ref()))
            && to > from.max(start)
        {
            let from = from.max(start);
            src.send_event(
                gst::event::Gap::builder(at(from - start))
                    .duration(at(to - from))
                    .build(),
            );
        }
    }

    /// Flushes what is held back and finishes the file; returns where the clip starts.
    fn finish(mut self) -> anyhow::Result<u64> {
        let start = match self.start {
            Some(start) => start,
            None => {
                let start = self
                    .gop
                    .first()
                    .map(|k| pts_of(k))
                    .ok_or_else(|| anyhow::anyhow!("the recording has no keyframe"))?;
                self.begin(start)?;
                start
            }
        };
        let mux = self.mux.take().expect("opened by begin");
        mux.video.end_of_stream()?;
        if let Some(audio) = &mux.audio {
            audio.end_of_stream()?;
        }
        let bus = mux.pipeline.bus().expect("pipeline bus");
        let ended = bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        let _ = mux.pipeline.set_state(gst::State::Null);
        match ended.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => Ok(start),
            Some(gst::MessageView::Error(e)) => Err(anyhow::anyhow!("{}", e.error())),
            _ => Err(anyhow::anyhow!("writing the clip timed out")),
        }
    }
}

impl Drop for ClipWriter {
    fn drop(&mut self) {
        if let Some(mux) = &self.mux {
            let _ = mux.pipeline.set_state(gst::State::Null);
        }
    }
}

/// Remuxes the video and audio of `files` (each with its start and end, in nanoseconds from
/// the first one's start; one that ends before what precedes it does repeats it and is
/// skipped) between the keyframes around `[from, to)` on the same scale into `out`; returns
/// the clip's actual bounds on that scale.
fn remux(
    files: &[(PathBuf, u64, u64)],
    (from, to): (u64, u64),
    out: &Path,
) -> anyhow::Result<(u64, u64)> {
    let mut writer = ClipWriter::new(out);
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
        let file_start = stream_end;
        // A file's own times are placed by its first video frame; audio read before that
        // frame waits for it.
        let mut shift: Option<i128> = None;
        let mut early_audio: Vec<(Option<gst::Caps>, gst::Buffer)> = Vec::new();
        let mut had_audio = false;
        let retime = |buf: &mut gst::Buffer, shift: i128| {
            let on_span = |t: Option<gst::ClockTime>| {
                t.map(|t| at((t.nseconds() as i128 + shift).max(0) as u64))
            };
            let b = buf.make_mut();
            let (pts, dts) = (on_span(b.pts().or(b.dts())), on_span(b.dts()));
            b.set_pts(pts);
            b.set_dts(dts);
        };
        cloudcam_core::mp4::read_media(file, Duration::from_secs(60), true, |track, sample| {
            let Some(mut buf) = sample.buffer_owned() else {
                return ControlFlow::Continue(());
            };
            let caps = sample.caps().map(|c| c.to_owned());
            let result = match track {
                Track::Audio => {
                    had_audio = true;
                    match shift {
                        Some(shift) => {
                            retime(&mut buf, shift);
                            match end {
                                // The video has ended: its audio up to there still comes.
                                Some(at) if pts_of(&buf) >= at => Ok(ControlFlow::Break(at)),
                                _ => writer
                                    .take_audio(caps.as_deref(), buf)
                                    .map(|()| ControlFlow::Continue(())),
                            }
                        }
                        None => {
                            early_audio.push((caps, buf));
                            Ok(ControlFlow::Continue(()))
                        }
                    }
                }
                Track::Video if end.is_some() => return ControlFlow::Continue(()),
                Track::Video => {
                    let Some(ts) = buf.dts().or(buf.pts()).map(|t| t.nseconds() as i128) else {
                        return ControlFlow::Continue(());
                    };
                    let shift = *shift.get_or_insert(offset as i128 - ts);
                    retime(&mut buf, shift);
                    let pts = pts_of(&buf);
                    stream_end = stream_end.max(pts + buf.duration().map_or(0, |d| d.nseconds()));
                    let taken = writer.take(sample.caps(), buf, (from, to));
                    // Audio that came before this file's first frame, now that it is placed.
                    let early = std::mem::take(&mut early_audio);
                    taken.and_then(|flow| {
                        for (caps, mut a) in early {
                            retime(&mut a, shift);
                            writer.take_audio(caps.as_deref(), a)?;
                        }
                        Ok(flow)
                    })
                }
            };
            match result {
                // The clip's last frame: reading goes on for the audio up to its end, which
                // a file may store after the video (a whole fragment's worth).
                Ok(ControlFlow::Break(at)) if end.is_none() => {
                    end = Some(at);
                    ControlFlow::Continue(())
                }
                Ok(ControlFlow::Break(_)) => ControlFlow::Break(()),
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
        if !had_audio {
            writer.audio_gap(file_start, stream_end);
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
        test_segment_with(path, false);
    }

    /// … with AAC audio (44.1 kHz) when `audio`.
    fn test_segment_with(path: &Path, audio: bool) {
        test_segment_at(path, audio.then_some(44_100));
    }

    /// A 2 s segment (25 fps, GOP 1 s) with AAC audio at `audio_rate` if given.
    fn test_segment_at(path: &Path, audio_rate: Option<u32>) {
        let audio = match audio_rate {
            Some(rate) => format!(
                "audiotestsrc num-buffers={} samplesperbuffer=1024 ! audio/x-raw,rate={rate},channels=1 \
                 ! avenc_aac ! aacparse ! m.audio_0 ",
                2 * rate / 1024
            ),
            None => String::new(),
        };
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=50 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! x264enc key-int-max=25 speed-preset=ultrafast tune=zerolatency ! h264parse \
             ! m.video_0 {audio}mp4mux name=m fragment-duration=1000 streamable=true \
             ! filesink location=\"{}\"",
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
        assert_eq!(span.0.as_nanos() as u64, end - start);

        // A range before the recording starts at its first keyframe; one past its end ends
        // with its last frame.
        let (start, end) = remux(&files, (0, 9 * S), &out).unwrap();
        assert_eq!((start, end), (0, 6 * S));
    }

    /// Audio frames (and the span they cover, ns) of a clip.
    fn audio_of(clip: &Path) -> (usize, u64) {
        let pts = audio_pts(clip);
        (pts.len(), pts.last().map_or(0, |(_, end)| *end))
    }

    /// Each audio frame's start and end in `clip`.
    fn audio_pts(clip: &Path) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        cloudcam_core::mp4::read_media(clip, Duration::from_secs(10), true, |track, s| {
            if let (Track::Audio, Some(b)) = (track, s.buffer()) {
                out.push((
                    pts_of(b),
                    pts_of(b) + b.duration().map_or(0, |d| d.nseconds()),
                ));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    const S: u64 = 1_000_000_000;

    /// Three 2 s segments' files in `dir`, indexed one after the other from 0 (not written).
    fn three_segments(dir: &Path) -> Vec<(PathBuf, u64, u64)> {
        [0, 2 * S, 4 * S]
            .iter()
            .enumerate()
            .map(|(i, &at)| (dir.join(format!("seg{i}.mp4")), at, at + 2 * S))
            .collect()
    }

    /// Low-rate audio (8 kHz: 128 ms a frame, a GOP's audio read well ahead of its video)
    /// starts with the clip and runs on without overlaps.
    #[test]
    fn low_rate_audio_is_placed_with_its_video() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = three_segments(dir.path());
        for (file, ..) in &files {
            test_segment_at(file, Some(8_000));
        }
        let out = dir.path().join("clip.mp4");
        let (start, end) = remux(&files, (S + S / 2, 5 * S + S / 2), &out).unwrap();
        assert_eq!((start, end), (S, 6 * S));
        let pts = audio_pts(&out);
        assert!(pts[0].0 < S / 5, "the audio starts at {:?}", pts[0]);
        for w in pts.windows(2) {
            assert!(w[1].0 + S / 100 >= w[0].1, "audio frames overlap: {w:?}");
        }
        let frames = pts.len() as f64;
        let expected = (end - start) as f64 / 1e9 * 8_000.0 / 1024.0;
        assert!(
            (frames - expected).abs() <= 3.0,
            "{frames} audio frames, {expected:.0} expected"
        );
    }

    #[test]
    fn clips_carry_the_recorded_audio_and_a_file_without_audio_is_a_gap() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = three_segments(dir.path());
        test_segment_with(&files[0].0, true);
        test_segment_with(&files[1].0, true);
        let out = dir.path().join("clip.mp4");
        // From the middle of the first segment into the second: 1 s .. 3 s + the GOP.
        let (start, end) = remux(&files[..2], (S + S / 2, 3 * S + S / 2), &out).unwrap();
        assert_eq!((start, end), (S, 4 * S));
        let (frames, audio_end) = audio_of(&out);
        // 44.1 kHz AAC: 1024 samples a frame, ~43 a second; the clip's 3 s carry ~129.
        assert!((120..=135).contains(&frames), "{frames} audio frames");
        assert!(
            audio_end.abs_diff(end - start) < S / 10,
            "audio ends at {audio_end}"
        );

        // The middle segment without audio: the clip is still cut, its audio has a hole.
        test_segment_with(&files[1].0, false);
        test_segment_with(&files[2].0, true);
        let (start, end) = remux(&files, (S / 2, 5 * S + S / 2), &out).unwrap();
        assert_eq!((start, end), (0, 6 * S));
        let (frames, _) = audio_of(&out);
        assert!((160..=180).contains(&frames), "{frames} audio frames");
    }
}
