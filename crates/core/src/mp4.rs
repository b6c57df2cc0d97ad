//! Reading back the video of a recorded MP4 segment, one access unit at a time.
//!
//! The recorder measures what it salvaged from a killed writer with it, and signal cuts clips
//! with it. Each file is read on its own, so its timestamps are its own (a segment's start in
//! wall-clock time is in the recording index, not in the file): nothing depends on how a
//! file's header states its duration.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {0}: {1}")]
    Gst(String, String),
    #[error("reading {0} timed out")]
    Timeout(String),
}

/// Hands each video access unit of `mp4` to `f`, in order, parsed (so keyframes are flagged
/// from the bitstream: a buffer without `DELTA_UNIT` starts a GOP). Stops early when `f`
/// breaks. Fails when the file cannot be read or reading takes longer than `timeout`.
pub fn read_video(
    mp4: &Path,
    timeout: Duration,
    mut f: impl FnMut(&gst::Sample) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    let name = mp4.display().to_string();
    let err = |e: &dyn std::fmt::Display| ReadError::Gst(name.clone(), e.to_string());
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", mp4.to_string_lossy().as_ref())
        .build()
        .map_err(|e| err(&e))?;
    let demux = gst::ElementFactory::make("qtdemux")
        .build()
        .map_err(|e| err(&e))?;
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(64)
        .build();
    pipeline
        .add_many([&src, &demux, sink.upcast_ref()])
        .map_err(|e| err(&e))?;
    src.link(&demux).map_err(|e| err(&e))?;
    {
        let pipeline = pipeline.downgrade();
        let sink = sink.clone();
        demux.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
            let parser = match caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .map(|s| s.name().as_str())
            {
                Some("video/x-h264") => "h264parse",
                Some("video/x-h265") => "h265parse",
                _ => return,
            };
            let Ok(parse) = gst::ElementFactory::make(parser).build() else {
                return;
            };
            if pipeline.add(&parse).is_ok()
                && parse.link(&sink).is_ok()
                && parse.sync_state_with_parent().is_ok()
                && let Some(target) = parse.static_pad("sink")
            {
                let _ = pad.link(&target);
            }
        });
    }
    let result = pump(&pipeline, &sink, timeout, &mut f, &err).and_then(|finished| {
        finished
            .then_some(())
            .ok_or(ReadError::Timeout(name.clone()))
    });
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn pump(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    timeout: Duration,
    f: &mut impl FnMut(&gst::Sample) -> ControlFlow<()>,
    err: &dyn Fn(&dyn std::fmt::Display) -> ReadError,
) -> Result<bool, ReadError> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(&e))?;
    let bus = pipeline.bus().expect("pipeline bus");
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            if f(&sample).is_break() {
                return Ok(true);
            }
            continue;
        }
        if sink.is_eos() {
            return Ok(true);
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = msg.view()
        {
            return Err(err(&e.error()));
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
    }
}

/// The span of the video in an MP4 file (from its first frame to the end of its last);
/// `None` when it holds none.
pub fn video_span(mp4: &Path, timeout: Duration) -> Result<Option<Duration>, ReadError> {
    let mut span: Option<(u64, u64)> = None;
    read_video(mp4, timeout, |sample| {
        if let Some(b) = sample.buffer()
            && let Some(pts) = b.pts()
        {
            let (start, end) = (
                pts.nseconds(),
                (pts + b.duration().unwrap_or_default()).nseconds(),
            );
            span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
        }
        ControlFlow::Continue(())
    })?;
    Ok(span.map(|(s, e)| Duration::from_nanos(e - s)))
}
