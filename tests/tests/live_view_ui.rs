//! Through the web UI, on real components: sign in, add a camsim camera with the form, open the
//! live view, and watch H.264 frames decode in headless Chromium; a view that falls behind is
//! opened again by itself.

use cloudcam_tests::{Api, Browser, TestEnv};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_camera_in_the_ui_and_watch_it_live() -> anyhow::Result<()> {
    let env = TestEnv::new("live_view_ui")?;
    let camsim = env
        .camsim(&["front:width=640,height=360,fps=25,gop=25"], None)
        .await?;
    let p = env.platform().await?;
    let signal = &p.signal;

    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&signal.base).await?;
    browser.fill("#add-name", "Front door").await?;
    browser.fill("#add-url", &camsim.url("front")).await?;
    browser.click("#add-submit").await?;

    // The camera appears in the list as idle: nobody watches it and it does not record, so it
    // is not pulled (updates arrive over the WebSocket, without a reload).
    browser
        .wait_element(".camera[data-state=idle]", Duration::from_secs(30))
        .await?;
    let api = Api::login(&signal.base).await?;
    let (_, cams) = api.call("GET", "/cameras", None).await?;
    assert_eq!(cams[0]["name"], "Front door");
    assert_eq!(cams[0]["served_by"]["ingest"], "ingest-1", "{cams}");
    assert_eq!(cams[0]["served_by"]["gateway"], "janus-1", "{cams}");

    // Watching it starts it; the card turns live.
    browser.click(".camera[data-state=idle] .watch").await?;
    browser
        .wait_element(".camera[data-state=live]", Duration::from_secs(20))
        .await?;
    let first = browser.wait_frames(0, 1, Duration::from_secs(15)).await?;
    let stats = browser
        .wait_frames(first.frames_decoded, 50, Duration::from_secs(5))
        .await?;
    assert_eq!((stats.width, stats.height), (640, 360), "{stats:?}");
    assert_eq!(stats.codec, "video/H264", "{stats:?}");
    let shot = browser.screenshot("live-view").await?;
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot looks empty"
    );

    // Views are low-latency by default, and a view the browser holds back too long is opened
    // again by itself (here with a limit every frame exceeds).
    let offer: String = browser
        .eval("window.cloudcamView.pc.remoteDescription.sdp")
        .await?;
    assert!(offer.contains("playout-delay"), "{offer}");
    browser.mark_view().await?;
    let _: f64 = browser
        .eval("(window.cloudcamDelayLimitMs = 0.0001)")
        .await?;
    browser.wait_new_view(Duration::from_secs(20)).await?;
    let _: bool = browser
        .eval("(delete window.cloudcamDelayLimitMs, true)")
        .await?;
    browser.wait_frames(0, 25, Duration::from_secs(15)).await?;

    // Closing the view tears its Janus session down at once (Janus alone would keep it for
    // its 60 s session timeout). Signal's mountpoint reconciler opens a session for a few
    // milliseconds each second, so "no session" is observed between two of those.
    assert!(
        !p.janus.sessions().await?.is_empty(),
        "the viewer has a Janus session"
    );
    browser.click("#player-close").await?;
    cloudcam_tests::wait_for(
        "Janus to have no session",
        Duration::from_secs(3),
        || async { p.janus.sessions().await.ok()?.is_empty().then_some(()) },
    )
    .await?;
    browser.close().await;
    Ok(())
}
