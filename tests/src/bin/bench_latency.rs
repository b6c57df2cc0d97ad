//! Benchmark: watch request → video playing (third decoded frame) in headless Chromium, through the real stack
//! (Kafka, Redis, Janus, signal, ingest, camsim). 20 tries each with camsim GOP 1 s and 2 s on
//! cameras already pulled (warm), and GOP 1 s on an on-demand camera that is idle before each try
//! (cold: the watch starts the pull), and GOP 1 s on an idle camera of an edge site (cold
//! pushed: the watch makes the site's agent push it; the agent runs here, without a NAT);
//! prints median and p95 of each, the ratio of GOP 2 s to GOP 1 s, of cold to warm, and of
//! cold pushed to cold pulled.
//!
//!   cargo run -p cloudcam-tests --bin bench_latency [-- TRIES]

use cloudcam_tests::stack::{TestEnv, add_site};
use cloudcam_tests::{Api, Browser};
use serde_json::json;
use std::time::Duration;

/// Opens a view, resolves with the milliseconds from `watch` to the third decoded frame, then
/// stops the view and closes its PeerConnection.
const MEASURE_JS: &str = r#"(async (token, cameraId) => {
  const signed = window.benchWs ? null : (await (await fetch('/api/v1/signed-urls', { method: 'POST', headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }, body: JSON.stringify({ path: '/api/v1/ws' }) })).json()).url;
  const ws = window.benchWs || await new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}${signed}`);
    ws.onopen = () => { window.benchWs = ws; resolve(ws); };
    ws.onerror = () => reject(new Error('websocket refused'));
  });
  const pc = new RTCPeerConnection();
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  let viewId = null;
  const t0 = performance.now();
  // Janus hands a new viewer the mountpoint's last keyframe at once, even when the camera is
  // not being pulled: count until the third frame, which only a flowing stream delivers.
  const firstFrame = new Promise((resolve) => {
    let seen = 0;
    const onFrame = () => { seen += 1; if (seen >= 3) resolve(performance.now() - t0); else video.requestVideoFrameCallback(onFrame); };
    video.requestVideoFrameCallback(onFrame);
  });
  pc.ontrack = (e) => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  pc.onicecandidate = (e) => { if (viewId) ws.send(JSON.stringify({ type: 'candidate', view_id: viewId, candidate: e.candidate ? e.candidate.toJSON() : null })); };
  ws.onmessage = async (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === 'offer' && msg.camera_id === cameraId && !viewId) {
      viewId = msg.view_id;
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      ws.send(JSON.stringify({ type: 'answer', view_id: viewId, sdp: answer.sdp }));
    }
  };
  ws.send(JSON.stringify({ type: 'watch', camera_id: cameraId }));
  const timeout = new Promise((resolve) => setTimeout(() => resolve(-1), 10000));
  const ms = await Promise.race([firstFrame, timeout]);
  if (viewId) ws.send(JSON.stringify({ type: 'stop', view_id: viewId }));
  pc.close();
  video.remove();
  return ms;
})"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let tries: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let env = TestEnv::new("bench_latency")?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let camsim = env
        .camsim(
            &[
                "gop1:width=1280,height=720,fps=25,gop=25",
                "gop2:width=1280,height=720,fps=25,gop=50",
                "cold:width=1280,height=720,fps=25,gop=25",
                "site:width=1280,height=720,fps=25,gop=25",
            ],
            None,
        )
        .await?;
    let signal = env
        .signal_with(
            Some(&kafka),
            Some(&redis),
            &[&janus],
            None,
            &[("CLOUDCAM_SIGNAL_DEMAND_GRACE_MS", "500")],
        )
        .await?;
    let _ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let api = Api::login(&signal.base).await?;
    let browser = Browser::launch(&env.dir).await?;
    browser.goto(&format!("{}/healthz", signal.base)).await?;

    // An edge site whose agent pushes its cameras while they are wanted.
    let (site, token) = add_site(&api, "bench site").await?;
    let state = env.dir.join("edge-state.json").display().to_string();
    let _agent = env.edge_agent(
        "edge",
        None,
        &[
            "--server",
            &signal.base,
            "--enroll-token",
            &token,
            "--state-file",
            &state,
        ],
    )?;

    let mut medians = Vec::new();
    for (path, label, warm) in [
        ("gop1", "GOP 1 s, warm", true),
        ("gop2", "GOP 2 s, warm", true),
        ("cold", "GOP 1 s, cold (idle camera)", false),
        (
            "site",
            "GOP 1 s, cold pushed (idle camera of an edge site)",
            false,
        ),
    ] {
        let mut body = json!({"name": path, "url": camsim.url(path), "always_on": warm});
        if path == "site" {
            body["site"] = json!(site);
        }
        let cam = api.create_camera(body).await?;
        let id = cam["id"].as_str().unwrap().to_string();
        let ready = if warm { "live" } else { "idle" };
        api.wait_state(&id, ready, Duration::from_secs(20)).await?;
        let mut samples = Vec::new();
        for _ in 0..tries {
            // A cold camera is released (idle) again before each try.
            api.wait_state(&id, ready, Duration::from_secs(20)).await?;
            let call = format!(
                "{MEASURE_JS}({}, {})",
                serde_json::to_string(&api.token)?,
                serde_json::to_string(&id)?
            );
            let ms: f64 = browser.eval(&call).await?;
            anyhow::ensure!(ms >= 0.0, "no frame within 10 s");
            samples.push(ms);
        }
        samples.sort_by(f64::total_cmp);
        let (p50, p95) = (
            cloudcam_tests::api::percentile(&samples, 0.5),
            cloudcam_tests::api::percentile(&samples, 0.95),
        );
        println!(
            "{label}: watch → video playing (3rd frame) over {tries} tries: median {p50:.0} ms, p95 {p95:.0} ms, min {:.0} ms, max {:.0} ms",
            samples[0],
            samples[samples.len() - 1]
        );
        medians.push(p50);
    }
    println!(
        "ratio of medians, GOP 2 s / GOP 1 s: {:.2}; cold / warm (GOP 1 s): {:.2}; cold pushed / cold pulled: {:.2}",
        medians[1] / medians[0],
        medians[2] / medians[0],
        medians[3] / medians[2]
    );
    browser.close().await;
    Ok(())
}
