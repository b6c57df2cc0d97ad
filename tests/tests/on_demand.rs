//! Cameras nobody watches and that do not record are not pulled; the first viewer starts one,
//! and it stops a grace period after the last viewer leaves. Viewer sessions live in Redis with
//! expiry, so a signal restart does not drop a watched camera. And with two Janus gateways, the
//! viewers of a gateway that dies resume on the other by themselves.

use cloudcam_tests::stack::{Camsim, TestEnv};
use cloudcam_tests::{Api, Browser, wait_for};
use serde_json::json;
use std::time::{Duration, Instant};

/// Asserts `path` has `expected` sessions at every look during `period`.
async fn holds(camsim: &Camsim, path: &str, expected: u64, period: Duration, why: &str) {
    let until = Instant::now() + period;
    while Instant::now() < until {
        let n = camsim.playing(path).await;
        assert_eq!(n, expected, "{why}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_pulled_only_while_watched() -> anyhow::Result<()> {
    let env = TestEnv::new("on_demand")?;
    let camsim = env
        .camsim(
            &["lazy:mode=replay,width=640,height=360,fps=15,gop=15"],
            None,
        )
        .await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let grace = Duration::from_secs(2);
    let mut signal = env
        .signal_with(
            Some(&kafka),
            Some(&redis),
            &[&janus],
            None,
            &[
                ("CLOUDCAM_SIGNAL_DEMAND_GRACE_MS", "2000"),
                ("CLOUDCAM_SIGNAL_VIEWER_TTL_MS", "10000"),
            ],
        )
        .await?;
    let _ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let api = Api::login(&signal.base).await?;
    let cam = api
        .create_camera(json!({"name": "Lazy", "url": camsim.url("lazy")}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();

    // Owned by the worker, reported idle, and never pulled.
    let idle = api.wait_state(&id, "idle", Duration::from_secs(20)).await?;
    assert_eq!(idle["served_by"]["ingest"], "ingest-1");
    holds(
        &camsim,
        "lazy",
        0,
        Duration::from_secs(3),
        "an unwatched camera was pulled",
    )
    .await;

    // The first viewer starts it and sees video.
    let browser = Browser::launch(&env.dir).await?;
    let asked = Instant::now();
    browser.watch_via_api(&signal.base, &api.token, &id).await?;
    browser.wait_frames(0, 1, Duration::from_secs(20)).await?;
    println!(
        "cold start: first frame {} ms after watch",
        asked.elapsed().as_millis()
    );
    browser.wait_frames(0, 25, Duration::from_secs(10)).await?;
    assert_eq!(camsim.playing("lazy").await, 1);

    // The viewer leaves: the camera is kept for the grace period, then released.
    browser.goto("about:blank").await?;
    let left = Instant::now();
    holds(
        &camsim,
        "lazy",
        1,
        grace - Duration::from_millis(500),
        "released before the grace period",
    )
    .await;
    wait_for("the session to end", Duration::from_secs(10), || async {
        (camsim.playing("lazy").await == 0).then_some(())
    })
    .await?;
    let released = left.elapsed();
    // (Measured from when the navigation returned, a little after the view really closed.)
    assert!(
        released >= grace - Duration::from_millis(300),
        "released after {released:?}"
    );
    api.wait_state(&id, "idle", Duration::from_secs(10)).await?;

    // A viewer again; then signal dies and comes back. The viewer's session is in Redis, so
    // the new signal keeps the camera pulled beyond the grace period (process memory would not).
    browser.watch_via_api(&signal.base, &api.token, &id).await?;
    browser.wait_frames(0, 10, Duration::from_secs(20)).await?;
    signal.kill();
    signal.start().await?;
    holds(
        &camsim,
        "lazy",
        1,
        grace * 2,
        "a signal restart dropped the viewer",
    )
    .await;
    let (_, cams) = api.call("GET", "/cameras", None).await?;
    assert_eq!(cams[0]["served_by"]["live_demand"], 1, "{cams}");
    browser.close().await;
    // Nobody refreshes that session any more: it expires and the camera is released.
    wait_for(
        "the camera to be released",
        Duration::from_secs(30),
        || async { (camsim.playing("lazy").await == 0).then_some(()) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_move_to_another_gateway_when_one_dies() -> anyhow::Result<()> {
    let env = TestEnv::new("janus_failover")?;
    let camsim = env
        .camsim(
            &[
                "c1:mode=replay,width=640,height=360,fps=15,gop=15",
                "c2:mode=replay,width=640,height=360,fps=15,gop=15",
            ],
            None,
        )
        .await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let mut janus_a = env.janus_named("janus-a").await?;
    let janus_b = env.janus_named("janus-b").await?;
    let signal = env
        .signal_with(Some(&kafka), Some(&redis), &[&janus_a, &janus_b], None, &[])
        .await?;
    let _ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let api = Api::login(&signal.base).await?;
    let mut on = std::collections::HashMap::new();
    for path in ["c1", "c2"] {
        let cam = api
            .create_camera(json!({"name": path, "url": camsim.url(path), "always_on": true}))
            .await?;
        let id = cam["id"].as_str().unwrap().to_string();
        api.wait_state(&id, "live", Duration::from_secs(20)).await?;
        let gw = api.camera(&id).await?["served_by"]["gateway"]
            .as_str()
            .unwrap()
            .to_string();
        on.insert(gw, id);
    }
    // Placed by load: one camera on each gateway.
    assert_eq!(on.len(), 2, "both cameras on one gateway: {on:?}");
    let (_, workers) = api.call("GET", "/workers", None).await?;
    assert_eq!(
        workers["gateways"].as_array().unwrap().len(),
        2,
        "{workers}"
    );
    let id = on["janus-a"].clone();

    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&signal.base).await?;
    browser
        .wait_element(
            &format!(".camera[data-id='{id}'][data-state=live]"),
            Duration::from_secs(20),
        )
        .await?;
    browser
        .click(&format!(".camera[data-id='{id}'] .watch"))
        .await?;
    browser.wait_frames(0, 25, Duration::from_secs(20)).await?;
    browser.mark_view().await?;

    janus_a.proc.kill();
    let killed = Instant::now();
    // The UI reopens the view by itself; the new view plays from janus-b.
    browser.wait_new_view(Duration::from_secs(30)).await?;
    browser.wait_frames(0, 25, Duration::from_secs(30)).await?;
    let resumed = killed.elapsed();
    println!(
        "gateway failover: video resumed {} ms after the kill",
        resumed.as_millis()
    );
    assert!(
        resumed < Duration::from_secs(20),
        "resumed after {resumed:?}"
    );
    assert_eq!(api.camera(&id).await?["served_by"]["gateway"], "janus-b");
    let (_, workers) = api.call("GET", "/workers", None).await?;
    let a = workers["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "janus-a")
        .unwrap()
        .clone();
    assert_eq!(a["up"], false, "{workers}");
    browser.screenshot("resumed-on-janus-b").await?;
    browser.close().await;
    Ok(())
}
