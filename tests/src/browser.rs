//! Headless Chromium (Debian's), driven over the DevTools protocol with chromiumoxide.

use crate::procs::wait_for;
use anyhow::{Context, Result, anyhow};
use chromiumoxide::browser::{Browser as CdpBrowser, BrowserConfig};
use chromiumoxide::page::{Page, ScreenshotParams};
use futures::StreamExt;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHROMIUM: &str = "/usr/lib/chromium/chromium";

pub struct Browser {
    browser: CdpBrowser,
    handler: tokio::task::JoinHandle<()>,
    pub page: Page,
    dir: PathBuf,
}

/// What a WebRTC viewer in the page receives (`window.cloudcamView.pc`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct VideoStats {
    pub frames_decoded: u64,
    pub width: u32,
    pub height: u32,
    pub codec: String,
}

/// Decoded-video statistics of a view (`__VIEW__`) shown in a video element (`__VIDEO__`).
const STATS_JS: &str = r#"(async () => {
  const view = __VIEW__;
  const video = __VIDEO__;
  const out = { framesDecoded: 0, width: video ? video.videoWidth : 0, height: video ? video.videoHeight : 0, codec: '' };
  if (!view || !view.pc) return out;
  const stats = await view.pc.getStats();
  let codecId = null;
  stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') { out.framesDecoded = s.framesDecoded || 0; codecId = s.codecId; out.width = out.width || s.frameWidth || 0; out.height = out.height || s.frameHeight || 0; } });
  stats.forEach((s) => { if (s.id === codecId) out.codec = s.mimeType; });
  return out;
})()"#;

/// The open view's received audio: packets, codec, decoded samples and getStats's level.
const AUDIO_JS: &str = r#"(async () => {
  const out = { packets: 0, codec: '', samples: 0, level: 0 };
  const view = window.cloudcamView;
  if (!view || !view.pc) return out;
  const stats = await view.pc.getStats();
  let codecId = null;
  stats.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') { out.packets = s.packetsReceived || 0; out.samples = s.totalSamplesReceived || 0; out.level = s.audioLevel || 0; codecId = s.codecId; } });
  stats.forEach((s) => { if (s.id === codecId) out.codec = s.mimeType; });
  return out;
})()"#;

/// The RMS level (0..1) of the open view's audio as the page hears it, through Web Audio
/// (getStats's `audioLevel` stays 0 where Chromium plays no sound); -1 without an audio track.
const AUDIO_LEVEL_JS: &str = r#"(async () => {
  const view = window.cloudcamView;
  const track = view && view.pc.getReceivers().map((r) => r.track).find((t) => t && t.kind === 'audio');
  if (!track) return -1;
  if (!window.testAudio || window.testAudio.track !== track) {
    const ctx = new AudioContext();
    await ctx.resume();
    const analyser = ctx.createAnalyser();
    ctx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    window.testAudio = { track, analyser };
  }
  const data = new Float32Array(window.testAudio.analyser.fftSize);
  window.testAudio.analyser.getFloatTimeDomainData(data);
  return Math.sqrt(data.reduce((sum, x) => sum + x * x, 0) / data.length);
})()"#;

/// What the open view has received of the camera's audio.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AudioStats {
    pub packets: u64,
    pub codec: String,
    pub samples: u64,
    pub level: f64,
}

/// A viewer that uses only the REST token and the WebSocket protocol (not the web UI): it opens
/// the WebSocket, sends `watch`, answers the offer and trickles candidates.
const API_VIEWER_JS: &str = r#"(async (token, cameraId) => {
  // A browser cannot send the token with a WebSocket: it asks for a signed URL.
  const signed = (await (await fetch('/api/v1/signed-urls', { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ path: '/api/v1/ws' }) })).json()).url;
  const ws = new WebSocket(`ws://${location.host}${signed}`);
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error('websocket refused')); });
  const pc = new RTCPeerConnection();
  const view = { pc, ws, viewId: null, messages: [] };
  window.cloudcamView = view;
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  pc.onicecandidate = (e) => {
    if (view.viewId) ws.send(JSON.stringify({ type: 'candidate', view_id: view.viewId, candidate: e.candidate ? e.candidate.toJSON() : null }));
  };
  ws.onmessage = async (ev) => {
    const msg = JSON.parse(ev.data);
    view.messages.push(msg);
    if (msg.type === 'offer') {
      view.viewId = msg.view_id;
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      ws.send(JSON.stringify({ type: 'answer', view_id: msg.view_id, sdp: answer.sdp }));
    }
  };
  ws.send(JSON.stringify({ type: 'watch', camera_id: cameraId }));
  return true;
})"#;

impl Browser {
    /// Opens a page of `base` (signal's origin) and watches `camera_id` with [`API_VIEWER_JS`].
    pub async fn watch_via_api(&self, base: &str, token: &str, camera_id: &str) -> Result<()> {
        self.goto(&format!("{base}/healthz")).await?;
        let call = format!(
            "{API_VIEWER_JS}({}, {})",
            serde_json::to_string(token)?,
            serde_json::to_string(camera_id)?
        );
        let ok: bool = self.eval(&call).await?;
        anyhow::ensure!(ok, "API viewer did not start");
        Ok(())
    }

    /// Every WebSocket message the API viewer received so far.
    pub async fn api_messages(&self) -> Result<Vec<serde_json::Value>> {
        self.eval("window.cloudcamView ? window.cloudcamView.messages : []")
            .await
    }

    pub async fn launch(dir: &Path) -> Result<Self> {
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile)?;
        let config = BrowserConfig::builder()
            .chrome_executable(CHROMIUM)
            .no_sandbox()
            .user_data_dir(&profile)
            .window_size(1280, 900)
            .args([
                "disable-gpu",
                "disable-quic",
                "no-first-run",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "autoplay-policy=no-user-gesture-required",
                "disable-features=WebRtcHideLocalIpsWithMdns",
            ])
            .build()
            .map_err(|e| anyhow!("browser config: {e}"))?;
        let (browser, mut events) = CdpBrowser::launch(config)
            .await
            .context("starting Chromium")?;
        let handler = tokio::spawn(async move { while events.next().await.is_some() {} });
        let page = browser.new_page("about:blank").await?;
        Ok(Self {
            browser,
            handler,
            page,
            dir: dir.to_path_buf(),
        })
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.page.goto(url).await?;
        self.page.wait_for_navigation().await?;
        Ok(())
    }

    /// Opens the web UI at `base` and signs in as the bootstrap administrator.
    /// Signs in to the web UI as the test administrator.
    pub async fn sign_in(&self, base: &str) -> Result<()> {
        use crate::stack::{ADMIN_PASSWORD, ADMIN_USER};
        self.sign_in_as(base, ADMIN_USER, ADMIN_PASSWORD).await
    }

    pub async fn sign_in_as(&self, base: &str, user: &str, password: &str) -> Result<()> {
        self.goto(base).await?;
        self.wait_element("#login-user", Duration::from_secs(10))
            .await?;
        self.fill("#login-user", user).await?;
        self.fill("#login-password", password).await?;
        self.click("#login-submit").await?;
        self.wait_element("#main-view:not([hidden])", Duration::from_secs(10))
            .await
    }

    /// Marks the web UI's open view, so that [`Browser::wait_new_view`] tells a new one.
    pub async fn mark_view(&self) -> Result<()> {
        let _: bool = self.eval("(window.cloudcamView.old = true, true)").await?;
        Ok(())
    }

    /// Waits for the web UI to open a view other than the one marked.
    pub async fn wait_new_view(&self, timeout: Duration) -> Result<()> {
        crate::wait_for("a new view", timeout, || async {
            self.eval::<bool>("!!(window.cloudcamView && !window.cloudcamView.old)")
                .await
                .ok()?
                .then_some(())
        })
        .await
    }

    pub async fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> Result<T> {
        Ok(self.page.evaluate(js).await?.into_value()?)
    }

    /// Types into the element matching `selector`.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<()> {
        self.page
            .find_element(selector)
            .await
            .with_context(|| format!("no element {selector}"))?
            .click()
            .await?
            .type_str(text)
            .await?;
        Ok(())
    }

    /// Clicks the element matching `selector`, waiting (10 s at most) until there is one that
    /// takes the click: the UI re-renders its lists as statuses arrive, so an element found a
    /// moment ago may have just been replaced.
    pub async fn click(&self, selector: &str) -> Result<()> {
        wait_for(
            &format!("a click on {selector}"),
            Duration::from_secs(10),
            || async {
                let element = self.page.find_element(selector).await.ok()?;
                element.click().await.ok().map(|_| ())
            },
        )
        .await
    }

    /// Waits until `selector` matches an element.
    pub async fn wait_element(&self, selector: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("element {selector}"), timeout, || async {
            self.page.find_element(selector).await.ok().map(|_| ())
        })
        .await
    }

    /// The statistics of the open view: the web UI's player, or the API viewer's.
    pub async fn video_stats(&self) -> Result<VideoStats> {
        self.eval(
            &STATS_JS.replace("__VIEW__", "window.cloudcamView").replace(
                "__VIDEO__",
                "document.getElementById('video') || document.querySelector('video')",
            ),
        )
        .await
    }

    /// Waits for the open view to have received `packets` audio packets.
    pub async fn wait_audio(&self, packets: u64, timeout: Duration) -> Result<AudioStats> {
        wait_for(&format!("{packets} audio packets"), timeout, || async {
            let s: AudioStats = self.eval(AUDIO_JS).await.ok()?;
            (s.packets >= packets).then_some(s)
        })
        .await
    }

    /// Waits for the open view's audio to be heard at an RMS level above `level`.
    pub async fn wait_audible(&self, level: f64, timeout: Duration) -> Result<f64> {
        wait_for(&format!("audio above RMS {level}"), timeout, || async {
            let heard: f64 = self.eval(AUDIO_LEVEL_JS).await.ok()?;
            (heard > level).then_some(heard)
        })
        .await
    }

    /// The statistics of the web UI's live-wall tile of `camera_id`.
    pub async fn tile_stats(&self, camera_id: &str) -> Result<VideoStats> {
        let tile = format!("window.cloudcamTiles.get('{camera_id}')");
        self.eval(&STATS_JS.replace("__VIEW__", &tile).replace(
            "__VIDEO__",
            &format!("{tile} && {tile}.el.querySelector('video')"),
        ))
        .await
    }

    /// Waits for the live-wall tile of `camera_id` to decode `frames` frames.
    pub async fn wait_tile_frames(
        &self,
        camera_id: &str,
        frames: u64,
        timeout: Duration,
    ) -> Result<VideoStats> {
        wait_for(
            &format!("{frames} decoded frames in the tile of {camera_id}"),
            timeout,
            || async {
                let s = self.tile_stats(camera_id).await.ok()?;
                (s.frames_decoded >= frames).then_some(s)
            },
        )
        .await
    }

    /// Waits for `frames` more decoded frames than `since`, within `timeout`.
    pub async fn wait_frames(
        &self,
        since: u64,
        frames: u64,
        timeout: Duration,
    ) -> Result<VideoStats> {
        wait_for(
            &format!("{frames} decoded frames after {since}"),
            timeout,
            || async {
                let s = self.video_stats().await.ok()?;
                (s.frames_decoded >= since + frames).then_some(s)
            },
        )
        .await
    }

    /// Saves a PNG screenshot into the test's artifacts.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.png"));
        self.page
            .save_screenshot(ScreenshotParams::builder().build(), &path)
            .await?;
        Ok(path)
    }

    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.handler.abort();
    }
}
