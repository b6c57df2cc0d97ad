//! The single-machine mode: `cloudcam-standalone` (signal, an ingest worker and a recorder in
//! one process, no Kafka, no Redis) relays a camera to Janus, records it to the local media
//! directory, and serves the same API and contract as the fleet.

use cloudcam_tests::procs::{Proc, free_port, free_udp_range};
use cloudcam_tests::stack::{ADMIN_PASSWORD, JANUS_ADMIN_KEY, JANUS_API_SECRET, TestEnv, binary};
use cloudcam_tests::{Api, wait_for};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_relays_and_records_a_camera() -> anyhow::Result<()> {
    let env = TestEnv::new("standalone")?;
    let camsim = env
        .camsim(
            &["demo:mode=replay,width=320,height=240,fps=15,gop=15"],
            None,
        )
        .await?;
    let janus = env.janus().await?;
    let port = free_port();
    let rtp = free_udp_range(10);
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(binary("cloudcam-standalone")?);
    cmd.env("RUST_LOG", "info")
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__INTERNAL_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__AUTH__ADMIN_PASSWORD",
            ADMIN_PASSWORD,
        )
        .env("CLOUDCAM_STANDALONE_SIGNAL__JANUS__URL", &janus.url)
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__JANUS__ADMIN_KEY",
            JANUS_ADMIN_KEY,
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__JANUS__API_SECRET",
            JANUS_API_SECRET,
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__JANUS__RTP_PORT_MIN",
            rtp.to_string(),
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__JANUS__RTP_PORT_MAX",
            (rtp + 9).to_string(),
        )
        .env(
            "CLOUDCAM_STANDALONE_SIGNAL__MEDIA__LOCAL_DIR",
            env.dir.join("media"),
        )
        .env(
            "CLOUDCAM_STANDALONE_RECORDER__SPOOL_DIR",
            env.dir.join("spool"),
        )
        .env("CLOUDCAM_STANDALONE_RECORDER__SEGMENT_SECONDS", "2")
        .env(
            "CLOUDCAM_STANDALONE_RESTREAM_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "CLOUDCAM_STANDALONE_PUSH__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        );
    let _cloudcam = Proc::spawn("cloudcam-standalone", &env.dir, &mut cmd)?;
    wait_for("cloudcam-standalone", Duration::from_secs(30), || async {
        let res = reqwest::get(format!("{base}/healthz")).await.ok()?;
        res.status().is_success().then_some(())
    })
    .await?;
    let api = Api::login(&base).await?;
    let cam = api
        .create_camera(json!({"name": "Demo", "url": camsim.url("demo"), "recording": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    let live = api.wait_state(&id, "live", Duration::from_secs(30)).await?;
    assert_eq!(live["status"]["width"], 320, "{live}");
    assert!(live["served_by"]["gateway_error"].is_null(), "{live}");
    assert_eq!(live["served_by"]["gateway"], "janus-1", "{live}");
    wait_for(
        "RTP at the camera's Janus mountpoint",
        Duration::from_secs(10),
        || async {
            let mps = janus.mountpoints().await.ok()?;
            let age = mps.first()?["media"][0]["age_ms"].as_u64()?;
            (mps.len() == 1 && age < 1000).then_some(())
        },
    )
    .await?;
    wait_for("a recorded segment", Duration::from_secs(40), || async {
        let (s, v) = api
            .call(
                "GET",
                &format!("/cameras/{id}/recordings?from=0&to={}", i64::MAX / 2),
                None,
            )
            .await
            .ok()?;
        (s == 200 && !v["segments"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    Ok(())
}
