//! Glass-to-glass from Rust: views opened in Chromium through signal's WebSocket API, each
//! recording every decoded frame with the capture time camsim stamped into it (`stamp=wall`,
//! see camsim's `stamp` module) and the browser's receive, decode and display times. The
//! reader itself is `glass.js`.

use crate::{Browser, Proc};
use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const GLASS_JS: &str = include_str!("glass.js");

/// One decoded frame, times in milliseconds since the Unix epoch (the browser's clock, which
/// is the camera's on one machine).
#[derive(Debug, Clone, Deserialize)]
pub struct Frame {
    /// The capture time stamped in the frame; `None` when it carries no readable code.
    pub stamp: Option<f64>,
    pub width: u32,
    pub height: u32,
    /// When its last packet arrived (WebRTC only).
    pub receive: Option<f64>,
    /// When it was handed to the compositor, decoded.
    pub decode: f64,
    /// When it is expected on screen.
    pub display: f64,
}

/// What a view recorded since the last [`Glass::take`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taken {
    /// When the watch was sent.
    pub clicked_at: f64,
    /// Janus's SDP offer, once it came.
    pub offer: Option<String>,
    pub errors: Vec<Value>,
    pub frames: Vec<Frame>,
}

/// A view open in the browser.
pub struct Glass<'a> {
    browser: &'a Browser,
    id: u64,
}

async fn call<T: serde::de::DeserializeOwned>(browser: &Browser, expr: &str) -> Result<T> {
    browser
        .eval(&format!(
            "(async () => {{ {GLASS_JS}; return await {expr}; }})()"
        ))
        .await
}

impl<'a> Glass<'a> {
    /// Sends a watch of `camera_id` (with `watch`'s extra fields) and starts recording frames.
    pub async fn open(
        browser: &'a Browser,
        token: &str,
        camera_id: &str,
        watch: Value,
    ) -> Result<Glass<'a>> {
        let id = call(
            browser,
            &format!(
                "window.cloudcamGlass.open({}, {}, {})",
                serde_json::to_string(token)?,
                serde_json::to_string(camera_id)?,
                watch
            ),
        )
        .await?;
        Ok(Self { browser, id })
    }

    /// The frames decoded since the last call.
    pub async fn take(&self) -> Result<Taken> {
        call(
            self.browser,
            &format!("window.cloudcamGlass.take({})", self.id),
        )
        .await
    }

    /// Stops the view and closes its PeerConnection.
    pub async fn close(self) -> Result<()> {
        call::<Value>(
            self.browser,
            &format!("window.cloudcamGlass.close({})", self.id),
        )
        .await?;
        Ok(())
    }
}

impl Glass<'_> {
    /// Collects the view's frames until one was captured after the watch, or `timeout`:
    /// the frames, the watch time, and the index of the first fresh frame.
    pub async fn until_fresh_frame(
        &self,
        timeout: Duration,
    ) -> Result<(Vec<Frame>, f64, Option<usize>)> {
        let deadline = Instant::now() + timeout;
        let mut frames = Vec::new();
        loop {
            let taken = self.take().await?;
            anyhow::ensure!(taken.errors.is_empty(), "view failed: {:?}", taken.errors);
            frames.extend(taken.frames);
            let fresh = frames
                .iter()
                .position(|f| f.stamp.is_some_and(|s| s >= taken.clicked_at));
            if fresh.is_some() || Instant::now() >= deadline {
                return Ok((frames, taken.clicked_at, fresh));
            }
            // Polling the page, not waiting for a fixed time.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An RTSP client that keeps playing `url` (and so keeps a camsim live stream's encoder
/// running, as a real camera's encoder runs whoever watches).
pub fn hold(dir: &Path, url: &str) -> Result<Proc> {
    Proc::spawn(
        "holder",
        dir,
        std::process::Command::new("gst-launch-1.0").args([
            "-q",
            "rtspsrc",
            &format!("location={url}"),
            "protocols=tcp",
            "!",
            "fakesink",
        ]),
    )
}

/// The time camsim stamped in a decoded 8-bit luma frame (`stride` bytes a row), read the
/// way `glass.js` reads it: the centre of each of the 64 blocks, in the middle of the band.
pub fn read_luma(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
    const BITS: usize = 64;
    const BAND: usize = 16;
    let block = width / BITS;
    let row = height.checked_sub(BAND / 2)?;
    let line = luma.get(row * stride..row * stride + width)?;
    let bits = (0..BITS).fold(0u64, |acc, i| {
        (acc << 1) | u64::from(line[i * block + block / 2] > 128)
    });
    let bytes = bits.to_be_bytes();
    let check = bytes[1..7].iter().fold(0u8, |a, b| a ^ b);
    (bytes[0] == 0xb2 && bytes[7] == check).then_some((bits >> 8) & 0xFFFF_FFFF_FFFF)
}

/// Capture → decoded delays (ms) of the first `frames` stamped frames a plain GStreamer RTSP
/// client decodes from `url` over `transport` (`tcp` or `udp`, no jitter buffer latency): the
/// delay up to a point of the path, for the glass-to-glass split. Blocking; gives up after
/// `timeout`.
pub fn rtsp_delays(
    url: &str,
    transport: &str,
    frames: usize,
    timeout: Duration,
) -> Result<Vec<f64>> {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init()?;
    let pipeline = gst::parse::launch(&format!(
        "rtspsrc location={url} protocols={transport} latency=0 ! rtph264depay ! avdec_h264 max-threads=1 \
         ! videoconvert ! video/x-raw,format=GRAY8 ! fakesink name=sink sync=false"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    let pad = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .ok_or_else(|| anyhow::anyhow!("no sink pad"))?;
    let (tx, rx) = std::sync::mpsc::channel::<f64>();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let size = pad.current_caps().and_then(|caps| {
            let s = caps.structure(0)?;
            Some((s.get::<i32>("width").ok()?, s.get::<i32>("height").ok()?))
        });
        if let (Some((w, h)), Some(buffer)) = (size, info.buffer())
            && let Ok(map) = buffer.map_readable()
        {
            let (w, h) = (w as usize, h as usize);
            if let Some(stamp) = read_luma(&map, w, h, w.div_ceil(4) * 4) {
                let _ = tx.send(crate::procs::now_ms() as f64 - stamp as f64);
            }
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing)?;
    let deadline = Instant::now() + timeout;
    let mut delays = Vec::new();
    while delays.len() < frames {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(d) => delays.push(d),
            Err(_) => break,
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    anyhow::ensure!(
        delays.len() == frames,
        "{} of {frames} stamped frames from {url} in {timeout:?}",
        delays.len()
    );
    Ok(delays)
}

/// Draws the pixel code of `ms` on a `width` x `height` canvas and reads it back with the
/// same reader the views use.
pub async fn read_drawn(
    browser: &Browser,
    ms: u64,
    width: u32,
    height: u32,
) -> Result<Option<f64>> {
    call(
        browser,
        &format!(
            "(() => {{ const c = window.cloudcamGlass.draw({ms}, {width}, {height}); return window.cloudcamGlass.read(c, {width}, {height}); }})()"
        ),
    )
    .await
}

/// Milliseconds between two instants of the same clock, as percentiles of many frames.
pub fn percentiles(mut values: Vec<f64>) -> Option<[f64; 3]> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some([0.5, 0.95, 0.99].map(|p| crate::api::percentile(&values, p)))
}
