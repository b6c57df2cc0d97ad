//! Broken cameras are reported with a clear state and reason — wrong password, closed port,
//! MJPEG-only — and an H.265-only camera is live but says why most browsers cannot watch it
//! (one that decodes H.265 is offered it as it is), while a healthy camera beside them keeps
//! streaming to its viewer.

use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, Browser, WsClient, free_port};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_cameras_are_reported_and_do_not_disturb_a_healthy_one() -> anyhow::Result<()> {
    let env = TestEnv::new("camera_failures")?;
    let open = env
        .camsim(
            &[
                "good:width=640,height=360,fps=25,gop=25",
                "hevc:codec=h265,width=320,height=240",
                "mjpeg:codec=mjpeg,width=320,height=240",
            ],
            None,
        )
        .await?;
    let locked = env
        .camsim(
            &["cam:width=320,height=240"],
            Some(("admin", "right-one", "digest")),
        )
        .await?;
    let p = env.platform().await?;
    let (signal, ingest) = (&p.signal, &p.ingest);
    let api = Api::login(&signal.base).await?;

    let good = api
        .create_camera(json!({"name": "Good", "url": open.url("good"), "always_on": true}))
        .await?;
    let good_id = good["id"].as_str().unwrap().to_string();
    api.wait_state(&good_id, "live", Duration::from_secs(20))
        .await?;
    let browser = Browser::launch(&env.dir).await?;
    browser
        .watch_via_api(&signal.base, &api.token, &good_id)
        .await?;
    let before = browser.wait_frames(0, 10, Duration::from_secs(15)).await?;
    let started = Instant::now();

    let closed_port = free_port();
    let cases = [
        (
            json!({"name": "Wrong password", "url": locked.url("cam"), "username": "admin", "password": "wrong-one"}),
            "auth_failed",
            "password",
        ),
        (
            json!({"name": "Closed port", "url": format!("rtsp://127.0.0.1:{closed_port}/x")}),
            "unreachable",
            "cannot reach",
        ),
        (
            json!({"name": "MJPEG only", "url": open.url("mjpeg")}),
            "unsupported_codec",
            "JPEG",
        ),
    ];
    for (body, state, reason_part) in &cases {
        // Always on: these cameras are pulled (and fail) with nobody watching.
        let mut body = body.clone();
        body["always_on"] = json!(true);
        let cam = api.create_camera(body.clone()).await?;
        let id = cam["id"].as_str().unwrap();
        // Reported within 10 s of being added.
        let seen = api.wait_state(id, state, Duration::from_secs(10)).await?;
        let reason = seen["status"]["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(reason_part),
            "{}: reason {reason:?} should mention {reason_part:?}",
            body["name"]
        );
    }

    // An H.265 camera is relayed (and recorded), but says why browsers cannot watch it.
    let hevc = api
        .create_camera(json!({"name": "HEVC only", "url": open.url("hevc"), "always_on": true}))
        .await?;
    let seen = api
        .wait_state(
            hevc["id"].as_str().unwrap(),
            "live",
            Duration::from_secs(10),
        )
        .await?;
    assert_eq!(seen["status"]["codec"], "H265", "{seen}");
    let why = seen["status"]["live_unavailable"].as_str().unwrap_or("");
    assert!(why.contains("H.265"), "{seen}");
    h265_is_offered_to_browsers_that_decode_it(&p, &api, hevc["id"].as_str().unwrap()).await?;

    // The healthy camera never stopped: still live, never reconnected, and its viewer kept
    // decoding frames all along (25 fps, so at least half the elapsed frames).
    let cam = api.camera(&good_id).await?;
    assert_eq!(cam["status"]["state"], "live");
    assert_eq!(cam["status"]["reconnects"], 0);
    let elapsed = started.elapsed().as_secs_f64();
    let after = browser.video_stats().await?;
    let decoded = after.frames_decoded - before.frames_decoded;
    assert!(
        decoded as f64 >= elapsed * 25.0 * 0.5,
        "viewer decoded only {decoded} frames in {elapsed:.1} s"
    );
    assert!(!ingest.proc.log_text().contains("wrong-one"));
    browser.close().await;
    Ok(())
}

/// An H.265 camera's mountpoint comes to take H.265 (signal re-creates it once the camera is
/// known to send it) and ingest feeds it: a browser that says it decodes H.265 is offered it,
/// one that does not is told why it cannot watch. (Chromium here has no HEVC decoder, so the
/// offer and the RTP at Janus are what can be checked.)
async fn h265_is_offered_to_browsers_that_decode_it(
    p: &cloudcam_tests::stack::Platform,
    api: &Api,
    id: &str,
) -> anyhow::Result<()> {
    let mut ws = WsClient::connect(&p.signal.base, &api.token).await?;
    let watch = |codecs: &[&str]| json!({"type": "watch", "camera_id": id, "codecs": codecs});
    ws.send(watch(&[])).await?;
    let refused = ws
        .next_where(Duration::from_secs(10), |m| {
            m["type"] == "error" || m["type"] == "offer"
        })
        .await?;
    assert_eq!(refused["code"], "live_unavailable", "{refused}");
    let offer = cloudcam_tests::wait_for("an H.265 offer", Duration::from_secs(20), || async {
        let mut ws = WsClient::connect(&p.signal.base, &api.token).await.ok()?;
        ws.send(watch(&["h265"])).await.ok()?;
        let m = ws
            .next_where(Duration::from_secs(5), |m| {
                m["type"] == "error" || m["type"] == "offer"
            })
            .await
            .ok()?;
        let sdp = m["sdp"].as_str().unwrap_or_default();
        sdp.contains("H265/90000").then(|| m.clone())
    })
    .await?;
    assert_eq!(offer["stream"], "main", "{offer}");
    // The camera's H.265 reaches its mountpoint. (Janus counts a media's age from the
    // mountpoint's creation until a packet comes, so a young age counts only once the
    // mountpoint, created before the offer, is older than a second.)
    let offered = Instant::now();
    let (_, mountpoint, secret) = p.redis.mountpoint(id).await?;
    cloudcam_tests::wait_for(
        "H.265 RTP at the mountpoint",
        Duration::from_secs(10),
        || async {
            let age = p.janus.media_age_ms(mountpoint, &secret).await.ok()??;
            (offered.elapsed() > Duration::from_millis(1500) && age < 500).then_some(())
        },
    )
    .await?;
    ws.close().await;
    Ok(())
}
