//! Reading back the video (and audio) of a recorded MP4 segment, one access unit at a time.
//!
//! The recorder measures what it salvaged from a killed writer with it, and signal cuts clips
//! with it. Each file is read on its own, so its timestamps are its own (a segment's start in
//! wall-clock time is in the recording index, not in the file): nothing depends on how a
//! file's header states its duration.

use crate::codec::VideoCodec;
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

/// A track of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// Hands each video access unit of `mp4` to `f`, in order, parsed (so keyframes are flagged
/// from the bitstream: a buffer without `DELTA_UNIT` starts a GOP). Stops early when `f`
/// breaks. Fails when the file cannot be read or reading takes longer than `timeout`.
pub fn read_video(
    mp4: &Path,
    timeout: Duration,
    mut f: impl FnMut(&gst::Sample) -> ControlFlow<()>,
) -> Result<(), ReadError> {
    read_media(mp4, timeout, false, |_, sample| f(sample))
}

/// [`read_video`], and with `audio` also the frames of the file's first audio track, as they
/// are (`Track::Audio`). Each track's frames come in order; the two tracks interleave roughly
/// as the file stores them.
pub fn read_media(
    mp4: &Path,
    timeout: Duration,
    audio: bool,
    mut f: impl FnMut(Track, &gst::Sample) -> ControlFlow<()>,
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
    let sink = || gst_app::AppSink::builder().sync(false).max_buffers(64);
    // The audio sink stays unlinked in a file without audio: it must not hold the pipeline's
    // state change waiting for a preroll.
    let (sink, audio_sink) = (sink().build(), audio.then(|| sink().async_(false).build()));
    pipeline
        .add_many([&src, &demux, sink.upcast_ref()])
        .map_err(|e| err(&e))?;
    if let Some(a) = &audio_sink {
        pipeline.add(a).map_err(|e| err(&e))?;
    }
    src.link(&demux).map_err(|e| err(&e))?;
    {
        let pipeline = pipeline.downgrade();
        let (sink, audio_sink) = (sink.clone(), audio_sink.clone());
        demux.connect_pad_added(move |_, pad| {
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
            let kind = caps
                .as_ref()
                .and_then(|c| c.structure(0))
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            if kind.starts_with("audio/") {
                // Taken as stored: the first audio track only.
                if let Some(target) = audio_sink.as_ref().and_then(|a| a.static_pad("sink"))
                    && !target.is_linked()
                {
                    let _ = pad.link(&target);
                }
                return;
            }
            let Some(codec) = crate::codec::VideoCodec::from_media_type(&kind) else {
                return;
            };
            let Ok(parse) = gst::ElementFactory::make(codec.parser()).build() else {
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
    let sinks: Vec<(Track, gst_app::AppSink)> = std::iter::once((Track::Video, sink))
        .chain(audio_sink.map(|a| (Track::Audio, a)))
        .collect();
    let result = pump(&pipeline, &sinks, timeout, &mut f, &err).and_then(|finished| {
        finished
            .then_some(())
            .ok_or(ReadError::Timeout(name.clone()))
    });
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// `sample` with its times on the file's timeline. The demuxer gives each track's times as
/// stored and places the track with its segment: a track that starts later than the file
/// (an edit list's empty edit, as in a clip whose audio begins after its video) comes with a
/// segment that says so, and its times are moved by that much here. (Recorded segments are
/// fragmented files without edit lists: there the two are the same.)
fn on_timeline(sample: gst::Sample) -> gst::Sample {
    let (Some(buffer), Some(segment)) = (
        sample.buffer(),
        sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>()),
    ) else {
        return sample;
    };
    let Some(pts) = buffer.pts() else {
        return sample;
    };
    let Some(placed) = segment.to_running_time(pts) else {
        return sample;
    };
    if placed == pts {
        return sample;
    }
    let shift = |t: gst::ClockTime| {
        let ns = t.nseconds() as i128 + placed.nseconds() as i128 - pts.nseconds() as i128;
        gst::ClockTime::from_nseconds(ns.max(0) as u64)
    };
    let mut moved = buffer.copy();
    {
        let b = moved.make_mut();
        b.set_pts(placed);
        b.set_dts(buffer.dts().map(shift));
    }
    let caps = sample.caps_owned();
    let out = gst::Sample::builder().buffer(&moved);
    match &caps {
        Some(caps) => out.caps(caps).build(),
        None => out.build(),
    }
}

/// Pulls from every sink until each that is linked has ended (the video sink always is, once
/// the file is read); a sink nothing was linked to (a file without audio) does not count.
fn pump(
    pipeline: &gst::Pipeline,
    sinks: &[(Track, gst_app::AppSink)],
    timeout: Duration,
    f: &mut impl FnMut(Track, &gst::Sample) -> ControlFlow<()>,
    err: &dyn Fn(&dyn std::fmt::Display) -> ReadError,
) -> Result<bool, ReadError> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| err(&e))?;
    let bus = pipeline.bus().expect("pipeline bus");
    let deadline = Instant::now() + timeout;
    let linked = |s: &gst_app::AppSink| s.static_pad("sink").is_some_and(|p| p.is_linked());
    loop {
        // Drain whatever is ready on any sink (a full one would hold up the demuxer). One sink
        // is waited on; with two, neither is (the other may be the one with data), and the
        // loop pauses briefly when both are empty.
        let wait = if sinks.len() == 1 { 100 } else { 0 };
        let mut pulled = false;
        for (track, sink) in sinks {
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(wait)) {
                pulled = true;
                if f(*track, &on_timeline(sample)).is_break() {
                    return Ok(true);
                }
            }
        }
        if pulled {
            continue;
        }
        if sinks[0].1.is_eos() && sinks[1..].iter().all(|(_, s)| !linked(s) || s.is_eos()) {
            return Ok(true);
        }
        if sinks.len() > 1 {
            std::thread::sleep(Duration::from_millis(2));
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

/// The span of the video in an MP4 file (from its first frame to the end of its last), and
/// its codec; `None` when it holds none.
pub fn video_span(
    mp4: &Path,
    timeout: Duration,
) -> Result<Option<(Duration, VideoCodec)>, ReadError> {
    let mut span: Option<(u64, u64)> = None;
    let mut codec = VideoCodec::default();
    read_video(mp4, timeout, |sample| {
        if let Some(c) = sample
            .caps()
            .and_then(|c| c.structure(0))
            .and_then(|s| VideoCodec::from_media_type(s.name()))
        {
            codec = c;
        }
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
    Ok(span.map(|(s, e)| (Duration::from_nanos(e - s), codec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A track that starts later than the file (an empty edit in its edit list) is read where
    /// it starts, not from the file's start.
    #[test]
    fn a_track_that_starts_later_is_read_where_it_starts() {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("late-audio.mp4");
        let p = gst::parse::launch(&format!(
            "videotestsrc num-buffers=50 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! x264enc key-int-max=25 speed-preset=ultrafast tune=zerolatency ! h264parse \
             ! m.video_0 audiotestsrc num-buffers=10 samplesperbuffer=1024 \
             timestamp-offset=600000000 ! audio/x-raw,rate=8000,channels=1 ! avenc_aac \
             ! aacparse ! m.audio_0 mp4mux name=m ! filesink location=\"{}\"",
            file.display()
        ))
        .unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let ended = p.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        p.set_state(gst::State::Null).unwrap();
        assert!(matches!(ended.unwrap().view(), gst::MessageView::Eos(_)));
        let (mut video, mut audio) = (None, None);
        read_media(&file, Duration::from_secs(10), true, |track, s| {
            let pts = s.buffer().and_then(|b| b.pts());
            match track {
                Track::Video => video = video.or(pts),
                Track::Audio => audio = audio.or(pts),
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(video.map(|t| t.mseconds()), Some(0));
        let audio = audio.expect("audio").mseconds();
        assert!(audio.abs_diff(600) <= 5, "the audio starts at {audio} ms");
    }
}
