//! Snapshots: a short-lived pipeline on the worker's own re-stream that waits for a keyframe,
//! decodes that one frame to JPEG and stops. Nothing is decoded between snapshots.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Takes one JPEG from `url`, authenticating with `auth` (blocking; call from a blocking task).
pub fn take(
    url: &str,
    auth: &cloudcam_core::config::RestreamAuth,
    codec: cloudcam_core::codec::VideoCodec,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc name=src protocols=tcp latency=0 ! {} ! {} name=parse \
         ! {} ! videoconvert ! jpegenc quality=85 ! appsink name=sink max-buffers=1 sync=false",
        codec.depayloader(),
        codec.parser(),
        codec.decoder()
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let src = pipeline.by_name("src").expect("named src");
    src.set_property("location", url);
    src.set_property("user-id", &auth.user);
    src.set_property("user-pw", &auth.password);
    // Drop everything before the first keyframe: the decoder then never sees a partial GOP.
    let seen_key = Arc::new(AtomicBool::new(false));
    let pad = pipeline
        .by_name("parse")
        .expect("named parse")
        .static_pad("src")
        .expect("src pad");
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buf) = info.buffer() else {
            return gst::PadProbeReturn::Ok;
        };
        if !seen_key.load(Ordering::Relaxed) {
            if buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                return gst::PadProbeReturn::Drop;
            }
            seen_key.store(true, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    let sink = pipeline
        .by_name("sink")
        .expect("named sink")
        .downcast::<gst_app::AppSink>()
        .map_err(|_| anyhow::anyhow!("not an appsink"))?;
    pipeline.set_state(gst::State::Playing)?;
    let sample = sink.try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64));
    let _ = pipeline.set_state(gst::State::Null);
    let sample = sample.ok_or_else(|| anyhow::anyhow!("no frame within {timeout:?}"))?;
    let buf = sample
        .buffer()
        .ok_or_else(|| anyhow::anyhow!("empty sample"))?;
    let map = buf.map_readable()?;
    Ok(map.as_slice().to_vec())
}
