//! Benchmark: glass-to-glass delay of live view, and how fresh a cold start is, through the
//! real stack (Kafka, Redis, Janus, signal, ingest, camsim) into headless Chromium.
//!
//! camsim stamps each frame's capture time as a pixel code (`stamp=wall`); the browser reads it
//! back from every decoded frame and compares with its own clock (same machine). While N
//! other cameras are relayed (camsim replay streams, always on; every camera pulled over UDP,
//! see below), it prints:
//!
//! * capture → decoded by a plain GStreamer client of the camera itself and of the ingest's
//!   re-stream: what the camera (encoder) and the ingest hop take before Janus and the browser;
//! * for a warm camera (1280x720, 25 fps), per playout setting (browser default, then low
//!   latency): capture → last packet received, → decoded, → expected on screen, p50/p95/p99
//!   over the window, and the drift (median to display in the last tenth of the window minus
//!   the first tenth);
//! * for an on-demand camera that is idle before each try while its encoder keeps running (a
//!   second RTSP client holds it, as a real camera's encoder runs whoever watches): frames
//!   decoded that were captured before the watch (stale), and watch → first decoded frame and
//!   → first frame captured after the watch.
//!
//!   cargo run -p cloudcam-tests --bin bench_glass [-- SECONDS [OTHER_CAMERAS [COLD_TRIES [low]]]]
//!
//! With `low`, only the low-latency window is measured (for a long drift run).
//!
//! `SECONDS` (default 60) is each warm window; 1800 gives the 30-minute drift.

use cloudcam_tests::glass::{self, Frame, Glass};
use cloudcam_tests::stack::{RESTREAM_PASSWORD, TestEnv};
use cloudcam_tests::{Api, Browser, wait_for};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(60);
    let others: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(16);
    let tries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let low_only = args.next().is_some_and(|a| a == "low");
    let env = TestEnv::new("bench_glass")?;
    let mut streams = vec![
        "glass:width=1280,height=720,fps=25,gop=25,stamp=wall".to_string(),
        "cold:width=1280,height=720,fps=25,gop=25,stamp=wall".to_string(),
    ];
    streams.extend(
        (0..others).map(|i| format!("r{i}:mode=replay,width=1280,height=720,fps=25,gop=50")),
    );
    let stream_refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&stream_refs, None).await?;
    // camsim's RTSP server delivers over TCP the rest of each frame with the next one (see
    // camsim's stream.rs): the cameras are pulled over UDP, so that the figures are cloudcam's
    // path and not that artefact of the simulated camera.
    let mut platform = env
        .platform_tuned(
            None,
            &[("CLOUDCAM_SIGNAL_DEMAND_GRACE_MS", "500")],
            &[("CLOUDCAM_INGEST_CAMERA__TRANSPORT", "udp")],
        )
        .await?;
    let signal = &platform.signal;
    let api = Api::login(&signal.base).await?;
    let mut other_ids = Vec::new();
    for i in 0..others {
        let path = format!("r{i}");
        other_ids.push(
            api.create_camera_id(
                json!({"name": path, "url": camsim.url(&path), "always_on": true}),
            )
            .await?,
        );
    }
    let warm = api
        .create_camera_id(json!({"name": "glass", "url": camsim.url("glass"), "always_on": true}))
        .await?;
    let cold = api
        .create_camera_id(json!({"name": "cold", "url": camsim.url("cold")}))
        .await?;
    let _holder = glass::hold(&env.dir, &camsim.url("cold"))?;
    api.wait_state(&warm, "live", Duration::from_secs(30))
        .await?;
    for id in &other_ids {
        api.wait_state(id, "live", Duration::from_secs(60)).await?;
    }
    println!(
        "{others} other cameras relayed; warm camera 1280x720, 25 fps, GOP 1 s; window {secs} s"
    );

    // Where the delay builds up before the browser: the same frames decoded by a plain
    // GStreamer client of the camera itself, and of the ingest's re-stream (one more copy of
    // what the relay sends Janus).
    let restream = api.camera(&warm).await?["status"]["restream_url"]
        .as_str()
        .unwrap_or_default()
        .replacen(
            "rtsp://",
            &format!("rtsp://cloudcam:{RESTREAM_PASSWORD}@"),
            1,
        );
    for (label, url, transport) in [
        ("camera (UDP)", camsim.url("glass"), "udp"),
        ("ingest's re-stream (TCP)", restream, "tcp"),
    ] {
        let delays = tokio::task::spawn_blocking(move || {
            glass::rtsp_delays(&url, transport, 250, Duration::from_secs(30))
        })
        .await??;
        println!(
            "capture → decoded by a GStreamer client of the {label}: {}",
            show(delays)
        );
    }
    let browser = Browser::launch(&env.dir).await?;
    browser.goto(&format!("{}/healthz", signal.base)).await?;

    for (label, watch) in [
        ("browser's own playout delay", json!({"low_latency": false})),
        (
            "low latency (playout delay 0..100 ms)",
            json!({"low_latency": true}),
        ),
    ] {
        if low_only && watch["low_latency"] == false {
            continue;
        }
        let frames = warm_window(&browser, &api.token, &warm, watch, secs).await?;
        report(label, &frames);
    }

    let mut stale_tries = 0;
    let (mut first_any, mut first_fresh) = (Vec::new(), Vec::new());
    for n in 0..tries {
        api.wait_state(&cold, "idle", Duration::from_secs(30))
            .await?;
        let view = Glass::open(&browser, &api.token, &cold, json!({})).await?;
        let (frames, clicked, fresh) = view.until_fresh_frame(Duration::from_secs(15)).await?;
        view.close().await?;
        let fresh =
            fresh.ok_or_else(|| anyhow::anyhow!("no frame captured after the watch in 15 s"))?;
        let before = &frames[..fresh];
        let stale = before.iter().filter(|f| f.stamp.is_some()).count();
        let unreadable = before.len() - stale;
        if stale > 0 {
            stale_tries += 1;
        }
        let any = frames[0].decode - clicked;
        let fresh_ms = frames[fresh].decode - clicked;
        println!(
            "cold try {}: first decoded frame {any:.0} ms, first fresh frame {fresh_ms:.0} ms after the watch; before it {stale} stale and {unreadable} unreadable frames",
            n + 1
        );
        first_any.push(any);
        first_fresh.push(fresh_ms);
    }
    let med = |v: Vec<f64>| glass::percentiles(v).map_or(f64::NAN, |p| p[0]);
    println!(
        "cold (encoder running, GOP 1 s), {tries} tries: {stale_tries} showed stale frames; watch → first decoded frame median {:.0} ms, → first fresh frame median {:.0} ms",
        med(first_any),
        med(first_fresh)
    );

    // Through an ingest failover: a second worker joins; the warm camera's owner is killed
    // while a low-latency view plays; once the view shows fresh frames again, the same window.
    let kafka = &platform.kafka;
    let mut second = env
        .ingest_with(
            "ingest-2",
            kafka,
            &platform.redis,
            None,
            &[("CLOUDCAM_INGEST_CAMERA__TRANSPORT", "udp")],
        )
        .await?;
    wait_for(
        "ingest-2 to own cameras",
        Duration::from_secs(60),
        || async {
            let mut owned = 0;
            for id in &other_ids {
                let cam = api.camera(id).await.ok()?;
                owned += usize::from(
                    cam["served_by"]["ingest"] == "ingest-2" && cam["status"]["state"] == "live",
                );
            }
            (owned > 0).then_some(())
        },
    )
    .await?;
    let owner = api.camera(&warm).await?["served_by"]["ingest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let view = Glass::open(&browser, &api.token, &warm, json!({})).await?;
    view.until_fresh_frame(Duration::from_secs(20)).await?;
    if owner == "ingest-2" {
        second.proc.kill();
    } else {
        platform.ingest.proc.kill();
    }
    let killed = cloudcam_tests::procs::now_ms() as f64;
    let resumed = wait_for(
        "fresh frames after the kill",
        Duration::from_secs(30),
        || async {
            let taken = view.take().await.ok()?;
            taken
                .frames
                .iter()
                .find(|f| f.stamp.is_some_and(|s| s > killed))
                .map(|f| f.decode - killed)
        },
    )
    .await?;
    view.close().await?;
    println!(
        "ingest failover ({owner} killed): the view showed fresh frames again {resumed:.0} ms after the kill"
    );
    let frames = warm_window(&browser, &api.token, &warm, json!({}), secs.min(60)).await?;
    report("low latency, after the failover", &frames);
    browser.close().await;
    Ok(())
}

/// The frames of one view of `camera` over `secs` seconds, from 2 s after its first stamped
/// frame (the start-up is the cold measurement's business).
async fn warm_window(
    browser: &Browser,
    token: &str,
    camera: &str,
    watch: Value,
    secs: u64,
) -> anyhow::Result<Vec<Frame>> {
    let view = Glass::open(browser, token, camera, watch).await?;
    let start = wait_for("stamped frames", Duration::from_secs(20), || async {
        let taken = view.take().await.ok()?;
        taken
            .frames
            .iter()
            .find_map(|f| f.stamp)
            .map(|s| s + 2000.0)
    })
    .await?;
    let end = start + secs as f64 * 1000.0;
    let mut frames = Vec::new();
    loop {
        // Collected every few seconds so the page holds little.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let taken = view.take().await?;
        anyhow::ensure!(taken.errors.is_empty(), "view failed: {:?}", taken.errors);
        let done = taken.frames.iter().any(|f| f.decode >= end);
        frames.extend(
            taken
                .frames
                .into_iter()
                .filter(|f| (start..end).contains(&f.decode)),
        );
        if done {
            break;
        }
    }
    view.close().await?;
    Ok(frames)
}

fn show(delays: Vec<f64>) -> String {
    match glass::percentiles(delays) {
        Some([p50, p95, p99]) => format!("p50 {p50:.0} / p95 {p95:.0} / p99 {p99:.0} ms"),
        None => "n/a".into(),
    }
}

fn report(label: &str, frames: &[Frame]) {
    let stamped: Vec<&Frame> = frames.iter().filter(|f| f.stamp.is_some()).collect();
    let delays = |at: &dyn Fn(&Frame) -> Option<f64>| -> Vec<f64> {
        stamped
            .iter()
            .filter_map(|f| Some(at(f)? - f.stamp?))
            .collect()
    };
    println!(
        "{label}: {} frames ({} with a readable stamp)",
        frames.len(),
        stamped.len()
    );
    println!("  capture → received  {}", show(delays(&|f| f.receive)));
    println!(
        "  capture → decoded   {}",
        show(delays(&|f| Some(f.decode)))
    );
    println!(
        "  capture → displayed {}",
        show(delays(&|f| Some(f.display)))
    );
    let tenth = stamped.len() / 10;
    if tenth > 0 {
        let median = |fs: &[&Frame]| {
            glass::percentiles(fs.iter().map(|f| f.display - f.stamp.unwrap()).collect())
                .map_or(f64::NAN, |p| p[0])
        };
        let (first, last) = (
            median(&stamped[..tenth]),
            median(&stamped[stamped.len() - tenth..]),
        );
        println!(
            "  drift to display: first tenth median {first:.0} ms, last tenth {last:.0} ms ({:+.0} ms)",
            last - first
        );
    }
}
