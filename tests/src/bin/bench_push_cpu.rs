//! Benchmark: ingest CPU per pushed camera against per pulled camera, and the edge agent's CPU
//! per camera against a `gst-launch-1.0` pusher's, in the same run. N camsim replay streams
//! (1280x720, 25 fps) are
//! 1. pulled by ingest as N always-on cameras;
//! 2. pushed to N push cameras by one `gst-launch-1.0` process that pulls each stream from
//!    camsim and pushes it unmodified with `rtspclientsink` (RTSP RECORD over TCP);
//! 3. pushed by the edge agent (`cloudcam-edge`, enrolled for a site) as N always-on cameras
//!    of that site.
//!
//! Each window relays to Janus and nobody watches. Prints CPU % of one core per camera: ingest
//! per pushed / per pulled (target ≤ 1.1) and agent / gst-launch pusher. Run it on release
//! builds (`CLOUDCAM_BIN_PROFILE=release`, as `scripts/bench.sh` does).
//!
//!   cargo run -p cloudcam-tests --bin bench_push_cpu [-- N [SECONDS]]

use cloudcam_tests::cpu::{cpu_percent, start_gst_launch};
use cloudcam_tests::stack::{TestEnv, add_site};
use cloudcam_tests::{Api, wait_for};
use serde_json::json;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (n, secs) = cloudcam_tests::cpu::bench_args(8)?;
    let window = Duration::from_secs(secs);
    let env = TestEnv::new("bench_push_cpu")?;
    let streams: Vec<String> = (0..n)
        .map(|i| format!("r{i}:mode=replay,width=1280,height=720,fps=25,gop=50,seconds=4"))
        .collect();
    let stream_refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&stream_refs, None).await?;
    let p = env.platform().await?;
    let api = Api::login(&p.signal.base).await?;
    let all_live = |ids: &[String]| {
        let ids = ids.to_vec();
        let api = &api;
        async move {
            for id in &ids {
                api.wait_state(id, "live", Duration::from_secs(60)).await?;
            }
            anyhow::Ok(())
        }
    };

    let mut pulled = Vec::new();
    for i in 0..n {
        pulled.push(
            api.create_camera_id(json!({"name": format!("pulled {i}"), "url": camsim.url(&format!("r{i}")), "always_on": true}))
                .await?,
        );
    }
    all_live(&pulled).await?;
    let pulled_cpu = cpu_percent(p.ingest.proc.pid(), window).await?;
    for id in &pulled {
        api.call("DELETE", &format!("/cameras/{id}"), None).await?;
    }
    wait_for(
        "camsim to be pulled by nobody",
        Duration::from_secs(30),
        || async {
            let mut total = 0;
            for i in 0..n {
                total += camsim.playing(&format!("r{i}")).await;
            }
            (total == 0).then_some(())
        },
    )
    .await?;

    let mut pushed = Vec::new();
    let mut targets = Vec::new();
    for i in 0..n {
        let cam = api
            .create_camera(json!({"name": format!("pushed {i}"), "push": true}))
            .await?;
        let id = cam["id"].as_str().unwrap_or_default().to_string();
        let status = api
            .wait_state(&id, "unreachable", Duration::from_secs(30))
            .await?;
        targets.push((
            status["status"]["push_url"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            cam["push_credential"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            cam["push_credential"]["password"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ));
        pushed.push(id);
    }
    let source = |i: usize| camsim.url(&format!("r{i}"));
    let mut pushers = start_gst_launch(
        &env.dir,
        "pushers",
        n,
        |i| {
            let (url, user, password) = &targets[i];
            // The parameter sets before every keyframe, as the camera sends them and as the
            // edge agent pushes them: the same stream, forwarded as sent by ingest.
            format!(
                "rtspsrc location={} protocols=tcp ! rtph264depay ! h264parse config-interval=-1 \
                 ! rtspclientsink location={url} protocols=tcp user-id={user} user-pw={password}",
                source(i)
            )
        },
        || async {
            for id in &pushed {
                let Ok(cam) = api.camera(id).await else {
                    return false;
                };
                if cam["status"]["state"] != "live" {
                    return false;
                }
            }
            true
        },
    )
    .await?;
    let (pushed_cpu, pusher_cpu) = tokio::try_join!(
        cpu_percent(p.ingest.proc.pid(), window),
        cpu_percent(pushers.pid(), window)
    )?;
    pushers.kill();
    for id in &pushed {
        api.call("DELETE", &format!("/cameras/{id}"), None).await?;
    }

    // The edge agent pushes the same streams as cameras of its site.
    let (site, token) = add_site(&api, "bench site").await?;
    let state = env.dir.join("edge-state.json").display().to_string();
    let agent = env.edge_agent(
        "edge",
        None,
        &[
            "--server",
            &p.signal.base,
            "--enroll-token",
            &token,
            "--state-file",
            &state,
        ],
    )?;
    let mut on_site = Vec::new();
    for i in 0..n {
        on_site.push(
            api.create_camera_id(json!({"name": format!("site {i}"), "site": site, "url": source(i), "always_on": true}))
                .await?,
        );
    }
    all_live(&on_site).await?;
    let (agent_ingest_cpu, agent_cpu) = tokio::try_join!(
        cpu_percent(p.ingest.proc.pid(), window),
        cpu_percent(agent.pid(), window)
    )?;

    let per = |cpu: f64| cpu / n as f64;
    println!("{n} cameras (1280x720, 25 fps replay), ingest CPU over {secs} s, % of one core:");
    println!(
        "  pulled                        : {pulled_cpu:6.1} % total, {:5.2} % per camera",
        per(pulled_cpu)
    );
    println!(
        "  pushed (RTSP RECORD over TCP) : {pushed_cpu:6.1} % total, {:5.2} % per camera",
        per(pushed_cpu)
    );
    println!(
        "  pushed by the edge agent      : {agent_ingest_cpu:6.1} % total, {:5.2} % per camera",
        per(agent_ingest_cpu)
    );
    println!(
        "  ratio pushed / pulled: {:.2} (gst-launch pusher), {:.2} (edge agent) (target <= 1.1)",
        pushed_cpu / pulled_cpu,
        agent_ingest_cpu / pulled_cpu
    );
    println!("Pushers' CPU over {secs} s, % of one core:");
    println!(
        "  gst-launch-1.0 (rtspsrc ! depay ! parse ! rtspclientsink): {pusher_cpu:6.1} % total, {:5.2} % per camera",
        per(pusher_cpu)
    );
    println!(
        "  cloudcam-edge                                           : {agent_cpu:6.1} % total, {:5.2} % per camera",
        per(agent_cpu)
    );
    println!("  ratio agent / gst-launch: {:.2}", agent_cpu / pusher_cpu);
    Ok(())
}
