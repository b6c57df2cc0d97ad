//! Decoding what cloudcam stored, with GStreamer, to check it frame by frame.

use anyhow::{Result, anyhow};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Frames the decoder produced.
    pub frames: u64,
    /// Whether the first H.264 access unit is a keyframe.
    pub starts_with_keyframe: bool,
    /// Presentation span of the decoded frames (last end − first start).
    pub duration_ms: f64,
    pub width: i32,
    pub height: i32,
    /// The video's codec (`H264`, `H265`); empty for a JPEG.
    pub codec: String,
}

/// Fully decodes an MP4 (H.264 or H.265) or JPEG file.
pub fn decode(path: &Path) -> Result<Decoded> {
    gst::init()?;
    let is_jpeg = path.extension().is_some_and(|e| e == "jpg");
    let mut decoded = Decoded::default();
    let desc = if is_jpeg {
        "filesrc name=src ! jpegdec ! videoconvert ! fakesink name=sink sync=false".to_string()
    } else {
        // The demuxer names the codec; the file is then decoded with that codec's elements.
        let (_, codec) = cloudcam_core::mp4::video_span(path, std::time::Duration::from_secs(30))?
            .ok_or_else(|| anyhow!("{} holds no video", path.display()))?;
        decoded.codec = codec.name().to_string();
        format!(
            "filesrc name=src ! qtdemux ! {} name=parse ! {} ! videoconvert ! fakesink name=sink sync=false",
            codec.parser(),
            codec.decoder()
        )
    };
    let pipeline = reading(&desc, path)?;
    let out = Arc::new(Mutex::new((decoded, None::<u64>, 0u64, false)));
    if let Some(parse) = pipeline.by_name("parse") {
        let out = out.clone();
        parse
            .static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                let mut o = out.lock().unwrap();
                if !o.3
                    && let Some(b) = info.buffer()
                {
                    o.3 = true;
                    o.0.starts_with_keyframe = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
                }
                gst::PadProbeReturn::Ok
            });
    }
    {
        let out = out.clone();
        let pad = pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let mut o = out.lock().unwrap();
            if let Some(b) = info.buffer() {
                o.0.frames += 1;
                if let Some(pts) = b.pts() {
                    let start = o.1.get_or_insert(pts.nseconds()).to_owned();
                    let end = pts.nseconds() + b.duration().map(|d| d.nseconds()).unwrap_or(0);
                    o.2 = o.2.max(end);
                    o.0.duration_ms = (o.2.saturating_sub(start)) as f64 / 1e6;
                }
            }
            if o.0.width == 0
                && let Some(caps) = pad.current_caps()
                && let Some(s) = caps.structure(0)
            {
                o.0.width = s.get::<i32>("width").unwrap_or(0);
                o.0.height = s.get::<i32>("height").unwrap_or(0);
            }
            gst::PadProbeReturn::Ok
        });
    }
    play_to_eos(&pipeline, path, 60)?;
    Ok(out.lock().unwrap().0.clone())
}

/// The pipeline `desc`, its `filesrc name=src` reading `path`.
fn reading(desc: &str, path: &Path) -> Result<gst::Pipeline> {
    let pipeline = gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    pipeline
        .by_name("src")
        .ok_or_else(|| anyhow!("no src in {desc}"))?
        .set_property("location", path.to_string_lossy().as_ref());
    Ok(pipeline)
}

/// Plays `pipeline` (reading `path`) to its end; fails on an error or after `timeout_s`.
fn play_to_eos(pipeline: &gst::Pipeline, path: &Path, timeout_s: u64) -> Result<()> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().unwrap();
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(timeout_s),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let _ = pipeline.set_state(gst::State::Null);
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => {
            Err(anyhow!("{} does not decode: {}", path.display(), e.error()))
        }
        _ => Err(anyhow!("decoding {} timed out", path.display())),
    }
}

/// Decodes the AAC audio track of an MP4; the number of audio frames.
pub fn audio_frames(path: &Path) -> Result<u64> {
    Ok(audio_track(path)?.frames)
}

/// What an MP4's AAC audio track decodes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AudioTrack {
    /// Decoded audio frames (buffers).
    pub frames: u64,
    pub rate: i32,
    pub channels: i32,
    /// Where the first frame plays, from the file's start (edit lists applied).
    pub first_ms: Option<u64>,
}

/// Decodes the AAC audio track of an MP4.
pub fn audio_track(path: &Path) -> Result<AudioTrack> {
    gst::init()?;
    let pipeline = reading(
        "filesrc name=src ! qtdemux name=d d.audio_0 ! aacparse ! avdec_aac ! fakesink name=sink sync=false",
        path,
    )?;
    let track = Arc::new(Mutex::new(AudioTrack::default()));
    {
        let track = track.clone();
        let pad = pipeline
            .by_name("sink")
            .unwrap()
            .static_pad("sink")
            .unwrap();
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let mut t = track.lock().unwrap();
            t.frames += 1;
            if t.first_ms.is_none()
                && let Some(pts) = info.buffer().and_then(|b| b.pts())
                && let Some(ev) = pad.sticky_event::<gst::event::Segment>(0)
                && let Some(segment) = ev.segment().downcast_ref::<gst::ClockTime>()
            {
                t.first_ms = segment.to_running_time(pts).map(|t| t.mseconds());
            }
            if let Some(s) = pad.current_caps().as_ref().and_then(|c| c.structure(0)) {
                t.rate = s.get::<i32>("rate").unwrap_or(0);
                t.channels = s.get::<i32>("channels").unwrap_or(0);
            }
            gst::PadProbeReturn::Ok
        });
    }
    play_to_eos(&pipeline, path, 30)?;
    Ok(track.lock().unwrap().clone())
}

/// The largest hole in a recording index (a segment's start past the end of everything before
/// it; segments of two pipelines may overlap by a moment), and between which segments.
pub fn largest_gap(segments: &[serde_json::Value]) -> (i64, String) {
    let mut covered: Option<(i64, &serde_json::Value)> = None;
    let mut worst = (0, String::new());
    for s in segments {
        let (Some(start), Some(end)) = (s["start_ms"].as_i64(), s["end_ms"].as_i64()) else {
            continue;
        };
        if let Some((until, by)) = covered {
            worst = worst.max((start - until, format!("{} -> {}", by["key"], s["key"])));
        }
        if covered.is_none_or(|(until, _)| end > until) {
            covered = Some((end, s));
        }
    }
    worst
}
