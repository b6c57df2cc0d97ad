//! Replay streams: H.264 access units held in memory, pushed in a loop at the stream's frame
//! rate into an `appsrc` (timestamped on push). Nothing is encoded while serving.

use crate::stream::{StreamSpec, h264_encoder, raw_source};
use anyhow::{Context, Result, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{self as rtsp_server};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One loop of encoded video.
struct Clip {
    caps: gst::Caps,
    units: Vec<gst::Buffer>,
}

/// Reads access units from an Annex-B file, or encodes `spec.seconds` of test pattern once.
fn load(spec: &StreamSpec) -> Result<Clip> {
    let source = match &spec.file {
        Some(file) => format!("filesrc location=\"{file}\" ! h264parse"),
        None => format!(
            "{} ! {} ! h264parse",
            raw_source(spec, false, i64::from(spec.seconds * spec.fps)),
            h264_encoder(spec)
        ),
    };
    let launch = format!(
        "{source} ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&launch)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .context("no sink")?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("not an appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let mut units = Vec::new();
    let mut caps = None;
    while let Ok(sample) = sink.pull_sample() {
        if caps.is_none() {
            caps = sample.caps().map(|c| c.to_owned());
        }
        if let Some(buf) = sample.buffer_owned() {
            units.push(buf);
        }
    }
    pipeline.set_state(gst::State::Null)?;
    let Some(first) = units
        .iter()
        .position(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
    else {
        bail!("replay source for {} has no keyframe", spec.path);
    };
    units.drain(..first);
    Ok(Clip {
        caps: caps.context("replay source produced no caps")?,
        units,
    })
}

pub fn factory(spec: &StreamSpec) -> Result<rtsp_server::RTSPMediaFactory> {
    let clip = Arc::new(load(spec)?);
    let frame = Duration::from_nanos(1_000_000_000 / u64::from(spec.fps));
    let factory = rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(
        "( appsrc name=src is-live=true format=time do-timestamp=true \
         ! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 )",
    );
    factory.set_shared(true);
    factory.connect_media_configure(move |_, media| {
        let Some(src) = media
            .element()
            .downcast_ref::<gst::Bin>()
            .and_then(|b| b.by_name_recurse_up("src"))
            .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        else {
            eprintln!("camsim: replay media without appsrc");
            return;
        };
        src.set_caps(Some(&clip.caps));
        let clip = clip.clone();
        let gone = Arc::new(AtomicBool::new(false));
        {
            let gone = gone.clone();
            media.connect_unprepared(move |_| gone.store(true, Ordering::SeqCst));
        }
        std::thread::spawn(move || push_loop(&src, &clip, frame, &gone));
    });
    Ok(factory)
}

/// Pushes the clip in a loop, paced by the wall clock, until the media goes away (`gone`).
///
/// The thread starts when the media is configured, before its pipeline runs: until then (and
/// while a seek flushes it) the appsrc refuses buffers as flushing. Those frames are skipped,
/// as a camera's encoder runs on whether anyone reads it; giving up at the first refusal left
/// a media that never sent a packet, on a session the server had answered.
fn push_loop(src: &gst_app::AppSrc, clip: &Clip, frame: Duration, gone: &AtomicBool) {
    let start = Instant::now();
    for (n, unit) in clip.units.iter().cycle().enumerate() {
        let due = start + frame * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut buf = unit.copy();
        {
            let b = buf.make_mut();
            b.set_pts(gst::ClockTime::NONE);
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(gst::ClockTime::from_nseconds(frame.as_nanos() as u64));
        }
        match src.push_buffer(buf) {
            Ok(_) => {}
            Err(gst::FlowError::Flushing) if !gone.load(Ordering::SeqCst) => {}
            Err(_) => return,
        }
        if gone.load(Ordering::SeqCst) {
            return;
        }
    }
}
