//! A camera that dies and comes back: the camera returns to live by itself and an open viewer in
//! the web UI resumes without a page reload.

use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, Browser};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_restart_recovers_by_itself_and_the_viewer_resumes() -> anyhow::Result<()> {
    let env = TestEnv::new("camera_restart")?;
    let mut camsim = env
        .camsim(&["yard:width=640,height=360,fps=25,gop=25"], None)
        .await?;
    let p = env.platform().await?;
    let signal = &p.signal;
    let api = Api::login(&signal.base).await?;
    let cam = api
        .create_camera(json!({"name": "Yard", "url": camsim.url("yard"), "always_on": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    api.wait_state(&id, "live", Duration::from_secs(20)).await?;

    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&signal.base).await?;
    browser
        .wait_element(".camera[data-state=live]", Duration::from_secs(20))
        .await?;
    browser.click(".camera[data-state=live] .watch").await?;
    let playing = browser.wait_frames(0, 25, Duration::from_secs(15)).await?;

    camsim.kill();
    // Reported down (stalled or unreachable, depending on how the socket dies) …
    cloudcam_tests::wait_for(
        "the camera to be reported down",
        Duration::from_secs(15),
        || async {
            let cam = api.camera(&id).await.ok()?;
            let state = cam["status"]["state"].as_str()?.to_string();
            (state == "unreachable" || state == "stalled").then_some(())
        },
    )
    .await?;
    browser
        .wait_element(
            ".camera[data-state=unreachable], .camera[data-state=stalled]",
            Duration::from_secs(10),
        )
        .await?;
    let frozen = browser.video_stats().await?;

    // … and back once the camera is.
    camsim.start().await?;
    let back = api.wait_state(&id, "live", Duration::from_secs(20)).await?;
    assert!(back["status"]["reconnects"].as_u64().unwrap_or(0) >= 1);
    let resumed = browser
        .wait_frames(frozen.frames_decoded, 50, Duration::from_secs(20))
        .await?;
    assert!(resumed.frames_decoded > playing.frames_decoded);
    browser.screenshot("resumed").await?;
    browser.close().await;
    Ok(())
}
