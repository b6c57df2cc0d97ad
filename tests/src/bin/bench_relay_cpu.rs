//! Benchmark: CPU per camera of the ingest worker relaying N camsim replay streams to Janus,
//! against a plain `gst-launch-1.0 rtspsrc ! rtph264depay ! h264parse ! rtph264pay ! udpsink`
//! relay of the same streams (one process, N chains) and against go2rtc relaying them (one
//! RTSP reader each), measured in the same run over windows of the same length. Prints CPU %
//! of one core per camera, resident memory, and the ratios. Run it on release builds
//! (`CLOUDCAM_BIN_PROFILE=release`, as `scripts/bench.sh` does).
//!
//!   cargo run -p cloudcam-tests --bin bench_relay_cpu [-- N [SECONDS]]

use cloudcam_tests::Api;
use cloudcam_tests::cpu::{cpu_percent, measure_go2rtc, measure_gst_launch, rss_mib};
use cloudcam_tests::stack::TestEnv;
use serde_json::json;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (n, secs) = cloudcam_tests::cpu::bench_args(16)?;
    let window = Duration::from_secs(secs);
    let env = TestEnv::new("bench_relay_cpu")?;
    let streams: Vec<String> = (0..n)
        .map(|i| format!("r{i}:mode=replay,width=1280,height=720,fps=25,gop=50,seconds=4"))
        .collect();
    let stream_refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&stream_refs, None).await?;
    // Every stream played by someone (the relay measured), as camsim counts its sessions.
    let every_stream_played = async || {
        let sessions = camsim.sessions().await.unwrap_or_default();
        (0..n).all(|i| sessions.get(&format!("r{i}")).is_some_and(|&s| s > 0))
    };

    // Baseline: gst-launch relaying every stream in one process.
    let (base_cpu, base_rss) = measure_gst_launch(&env.dir, n, window, |i| {
        format!(
            "rtspsrc location={} protocols=tcp latency=50 ! rtph264depay ! h264parse \
             ! rtph264pay pt=96 config-interval=-1 ! udpsink host=127.0.0.1 port={} sync=false async=false",
            camsim.url(&format!("r{i}")),
            cloudcam_tests::free_port()
        )
    }, every_stream_played)
    .await?;

    // go2rtc relaying the same streams, each read by one RTSP client.
    let urls: Vec<String> = (0..n).map(|i| camsim.url(&format!("r{i}"))).collect();
    let (go_cpu, go_rss) = measure_go2rtc(&env.dir, &urls, window, every_stream_played).await?;

    // cloudcam: the ingest worker owning N cameras, relaying to their Janus mountpoints.
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let signal = env.signal(Some(&kafka), Some(&redis), &janus, None).await?;
    let ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let api = Api::login(&signal.base).await?;
    let mut ids = Vec::new();
    for i in 0..n {
        let cam = api
            .create_camera(json!({"name": format!("r{i}"), "url": camsim.url(&format!("r{i}")), "always_on": true}))
            .await?;
        ids.push(cam["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        api.wait_state(id, "live", Duration::from_secs(60)).await?;
    }
    // What ingest relayed over the window proves it was relaying all along.
    let before = relayed(&ingest.metrics).await;
    let ours_cpu = cpu_percent(ingest.proc.pid(), window).await?;
    let packets = relayed(&ingest.metrics).await - before;
    let ours_rss = rss_mib(ingest.proc.pid());

    println!("{n} cameras (1280x720, 25 fps, replay), CPU measured over {secs} s, % of one core:");
    println!(
        "  gst-launch relay : {base_cpu:6.1} % total, {:5.2} % per camera, RSS {base_rss:.0} MiB",
        base_cpu / n as f64
    );
    println!(
        "  cloudcam-ingest  : {ours_cpu:6.1} % total, {:5.2} % per camera, RSS {ours_rss:.0} MiB",
        ours_cpu / n as f64
    );
    println!(
        "    relayed {:.0} RTP packets/s per camera to Janus and the re-stream",
        packets / secs as f64 / n as f64
    );
    println!(
        "  go2rtc relay     : {go_cpu:6.1} % total, {:5.2} % per camera, RSS {go_rss:.0} MiB",
        go_cpu / n as f64
    );
    println!("  ratio ingest / gst-launch: {:.2}", ours_cpu / base_cpu);
    println!("  ratio go2rtc / gst-launch: {:.2}", go_cpu / base_cpu);
    println!("  ratio ingest / go2rtc    : {:.2}", ours_cpu / go_cpu);
    Ok(())
}

/// RTP packets the ingest worker has relayed, all cameras together (from its `/metrics`).
async fn relayed(metrics: &str) -> f64 {
    let Ok(text) = async { reqwest::get(metrics).await?.text().await }.await else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with("cloudcam_ingest_camera_rtp_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
