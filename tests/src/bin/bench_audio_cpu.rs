//! Benchmark: ingest CPU of the live view's audio transcode (the camera's AAC decoded and
//! encoded to Opus, only while someone watches) against the relay of the same cameras, in the
//! same run: N always-on cameras with 48 kHz AAC are first relayed with nobody watching (video
//! to Janus, audio to the re-stream, the transcode shut), then with a viewer each (the
//! transcode on, Opus at every mountpoint's audio port). Prints CPU % of one core per camera
//! in both windows and the transcode's cost as a share of the relay's. Run it on release
//! builds (`CLOUDCAM_BIN_PROFILE=release`, as `scripts/bench.sh` does).
//!
//!   cargo run -p cloudcam-tests --bin bench_audio_cpu [-- N [SECONDS]]

use cloudcam_tests::cpu::cpu_percent;
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, WsClient, wait_for};
use serde_json::json;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (n, secs) = cloudcam_tests::cpu::bench_args(8)?;
    let window = Duration::from_secs(secs);
    let env = TestEnv::new("bench_audio_cpu")?;
    let streams: Vec<String> = (0..n)
        .map(|i| format!("a{i}:width=640,height=360,fps=25,gop=50,audio=aac,audio_rate=48000"))
        .collect();
    let stream_refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&stream_refs, None).await?;
    let p = env.platform().await?;
    let api = Api::login(&p.signal.base).await?;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = api
            .create_camera_id(json!({"name": format!("a{i}"), "url": camsim.url(&format!("a{i}")), "always_on": true}))
            .await?;
        ids.push(id);
    }
    for id in &ids {
        api.wait_state(id, "live", Duration::from_secs(60)).await?;
    }
    // Fresh audio at every mountpoint (`media[1]` is the live audio) within the last second.
    let audio_everywhere = || async {
        let mountpoints = p.janus.mountpoints().await.ok()?;
        let fresh = mountpoints
            .iter()
            .filter(|m| m["media"][1]["age_ms"].as_u64().is_some_and(|a| a < 1000))
            .count();
        (fresh == n).then_some(())
    };
    let relay = cpu_percent(p.ingest.proc.pid(), window).await?;
    // Janus counts a media's age from its creation until a packet arrives: after the window,
    // no mountpoint has had audio (the transcode was shut).
    let quiet = p
        .janus
        .mountpoints()
        .await?
        .iter()
        .all(|m| m["media"][1]["age_ms"].as_u64().is_none_or(|a| a >= 1000));
    anyhow::ensure!(quiet, "live audio reached Janus while nobody watched");

    // A viewer for each camera (a watch registers it; the offer need not be answered).
    let mut ws = WsClient::connect(&p.signal.base, &api.token).await?;
    for id in &ids {
        ws.watch(id).await?;
    }
    wait_for(
        "Opus at every mountpoint",
        Duration::from_secs(30),
        audio_everywhere,
    )
    .await?;
    let watched = cpu_percent(p.ingest.proc.pid(), window).await?;
    ws.close().await;

    let per = |cpu: f64| cpu / n as f64;
    let transcode = (watched - relay).max(0.0);
    println!(
        "{n} cameras (640x360, 25 fps, AAC 48 kHz mono), ingest CPU over {secs} s, % of one core:"
    );
    println!(
        "  relayed, nobody watching (no transcode): {relay:6.1} % total, {:5.2} % per camera",
        per(relay)
    );
    println!(
        "  relayed and watched (AAC → Opus)       : {watched:6.1} % total, {:5.2} % per camera",
        per(watched)
    );
    println!(
        "  audio transcode                         : {transcode:6.1} % total, {:5.2} % per camera",
        per(transcode)
    );
    println!("  ratio transcode / relay: {:.2}", transcode / relay);
    Ok(())
}
