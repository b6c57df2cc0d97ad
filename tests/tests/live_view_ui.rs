//! Through the web UI, on real components: sign in, add a camsim camera with the form, open the
//! live view, and watch H.264 frames decode in headless Chromium; a view that falls behind is
//! opened again by itself. Main and sub streams: the live wall shows substreams, full screen the
//! main stream (switchable), each pulled only while wanted; an H.265 camera is watched through
//! its H.264 substream.

use cloudcam_tests::stack::Camsim;
use cloudcam_tests::{Api, Browser, TestEnv};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_camera_in_the_ui_and_watch_it_live() -> anyhow::Result<()> {
    let env = TestEnv::new("live_view_ui")?;
    let camsim = env
        .camsim(
            &[
                "front:width=640,height=360,fps=25,gop=25",
                "yard:width=1280,height=720,fps=25,gop=25",
                "yard-sub:width=640,height=360,fps=25,gop=25",
                "hevc:width=1280,height=720,fps=25,gop=25,codec=h265",
                "hevc-sub:width=640,height=360,fps=25,gop=25",
                "talk:width=320,height=180,fps=10,gop=10,audio=aac,audio_rate=44100",
                "g711:width=320,height=180,fps=10,gop=10,audio=pcma",
                "voip:width=320,height=180,fps=10,gop=10,audio=opus",
            ],
            None,
        )
        .await?;
    // A short grace, so a stream nobody wants any more is seen released.
    let p = env
        .platform_tuned(None, &[("CLOUDCAM_SIGNAL_DEMAND_GRACE_MS", "2000")], &[])
        .await?;
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

    main_and_sub_streams(&browser, &api, &camsim).await?;
    live_audio(&browser, &api, &camsim).await?;
    browser.close().await;
    Ok(())
}

/// The camera's audio in the live view: AAC as Opus (WebRTC has no AAC), G.711 and Opus as
/// they are sent; muted until the viewer turns it on.
async fn live_audio(browser: &Browser, api: &Api, camsim: &Camsim) -> anyhow::Result<()> {
    // AAC is encoded to Opus; Opus goes as it is, and G.711 too once signal has made the camera's
    // mountpoint take it (the first view may hear it as Opus; the page reopens the view when
    // the mountpoint is re-created).
    let cameras = [
        ("talk", "MPEG4-GENERIC", "audio/opus"),
        ("g711", "PCMA", "audio/PCMA"),
        ("voip", "OPUS", "audio/opus"),
    ];
    for (path, sent, codec) in cameras {
        let id = api
            .create_camera_id(json!({"name": path, "url": camsim.url(path)}))
            .await?;
        browser
            .click(&format!(".camera[data-id='{id}'] .watch"))
            .await?;
        browser.wait_frames(0, 10, Duration::from_secs(20)).await?;
        let audio = cloudcam_tests::wait_for(
            &format!("{path}: 100 audio packets in {codec}"),
            Duration::from_secs(30),
            || async {
                let a = browser.wait_audio(0, Duration::from_secs(1)).await.ok()?;
                (a.codec == codec && a.packets >= 100).then_some(a)
            },
        )
        .await?;
        assert!(audio.samples > 0, "{path}: nothing decoded: {audio:?}");
        let cam = api.camera(&id).await?;
        assert_eq!(cam["status"]["audio_codec"], sent, "{cam}");
        // camsim's audio is a tone: what the page hears is not silence.
        let heard = browser.wait_audible(0.01, Duration::from_secs(10)).await?;
        assert!(heard <= 1.0, "{path}: RMS {heard}");
        let muted: bool = browser
            .eval("document.getElementById('video').muted")
            .await?;
        assert!(muted, "{path}: live audio must start muted");
        browser
            .wait_element("#player-mute:not([hidden])", Duration::from_secs(10))
            .await?;
        browser.click("#player-mute").await?;
        let muted: bool = browser
            .eval("document.getElementById('video').muted")
            .await?;
        assert!(!muted, "{path}: unmuting did not take");
        browser.click("#player-mute").await?;
        browser.click("#player-close").await?;
    }
    Ok(())
}

/// Waits until camsim plays `path` to `n` RTSP sessions.
async fn playing(camsim: &Camsim, path: &str, n: u64) -> anyhow::Result<()> {
    cloudcam_tests::wait_for(
        &format!("camsim's {path} to have {n} session(s)"),
        Duration::from_secs(20),
        || async { (camsim.playing(path).await == n).then_some(()) },
    )
    .await
}

/// A camera with a 1280x720 main stream and a 640x360 substream, added in the UI, and an H.265
/// camera with an H.264 substream.
async fn main_and_sub_streams(browser: &Browser, api: &Api, camsim: &Camsim) -> anyhow::Result<()> {
    browser.fill("#add-name", "Yard").await?;
    browser.fill("#add-url", &camsim.url("yard")).await?;
    browser
        .fill("#add-sub-url", &camsim.url("yard-sub"))
        .await?;
    browser.click("#add-submit").await?;
    let hevc = api
        .create_camera_id(
            json!({"name": "Hevc", "url": camsim.url("hevc"), "sub_url": camsim.url("hevc-sub")}),
        )
        .await?;
    let (_, cams) = api.call("GET", "/cameras", None).await?;
    let yard = cams
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Yard")
        .expect("the camera added in the UI");
    assert_eq!(yard["sub_url"], camsim.url("yard-sub"), "{yard}");
    // The substream is run by the camera's ingest worker, and not pulled while unwatched.
    assert!(
        ["unknown", "idle"].contains(&yard["sub_status"]["state"].as_str().unwrap_or("")),
        "{yard}"
    );
    let yard = yard["id"].as_str().unwrap().to_string();
    browser
        .wait_element(
            &format!(".camera[data-id='{hevc}'][data-state=idle]"),
            Duration::from_secs(30),
        )
        .await?;
    for path in ["yard", "yard-sub", "hevc", "hevc-sub"] {
        assert_eq!(camsim.playing(path).await, 0, "{path} is pulled unwatched");
    }

    // The live wall: substreams where cameras have them, main streams elsewhere.
    browser.click("#wall-toggle").await?;
    let tile = browser
        .wait_tile_frames(&yard, 25, Duration::from_secs(20))
        .await?;
    assert_eq!((tile.width, tile.height), (640, 360), "{tile:?}");
    let tile = browser
        .wait_tile_frames(&hevc, 25, Duration::from_secs(20))
        .await?;
    assert_eq!((tile.width, tile.height), (640, 360), "{tile:?}");
    assert_eq!(tile.codec, "video/H264", "{tile:?}");
    browser.screenshot("live-wall").await?;
    assert_eq!(camsim.playing("yard-sub").await, 1);
    assert_eq!(camsim.playing("hevc-sub").await, 1);
    assert_eq!(
        camsim.playing("yard").await,
        0,
        "the wall pulled the main stream"
    );
    let sub = api.camera(&yard).await?;
    assert_eq!(sub["sub_status"]["state"], "live", "{sub}");
    assert_eq!(sub["sub_status"]["width"], 640, "{sub}");
    assert_eq!(sub["served_by"]["sub_live_demand"], 1, "{sub}");

    // A click on the tile: full screen, the main stream; the wall's substreams are let go.
    browser
        .click(&format!("#wall .tile[data-id='{yard}']"))
        .await?;
    let stats = browser.wait_frames(0, 25, Duration::from_secs(20)).await?;
    assert_eq!((stats.width, stats.height), (1280, 720), "{stats:?}");
    let stream: String = browser.eval("window.cloudcamView.stream").await?;
    assert_eq!(stream, "main");
    assert_eq!(camsim.playing("yard").await, 1);
    playing(camsim, "yard-sub", 0).await?;

    // Switched to the substream in the player.
    browser.mark_view().await?;
    let _: bool = browser
        .eval("(() => { const s = document.getElementById('player-stream'); s.value = 'sub'; s.dispatchEvent(new Event('change')); return true; })()")
        .await?;
    browser.wait_new_view(Duration::from_secs(5)).await?;
    let stats = browser.wait_frames(0, 25, Duration::from_secs(20)).await?;
    assert_eq!((stats.width, stats.height), (640, 360), "{stats:?}");
    playing(camsim, "yard", 0).await?;
    browser.click("#player-close").await?;
    // Closing the player brought the wall back.
    browser
        .wait_tile_frames(&yard, 25, Duration::from_secs(20))
        .await?;
    browser.click("#wall-toggle").await?;

    // The H.265 camera, asked for its main stream, is watched through its substream (once its
    // main stream is known to be H.265, the card still offers Watch).
    let hevc_card = format!(".camera[data-id='{hevc}']");
    browser.click(&format!("{hevc_card} .watch")).await?;
    let stats = cloudcam_tests::wait_for(
        "the H.265 camera's substream in the player",
        Duration::from_secs(30),
        || async {
            let s = browser.video_stats().await.ok()?;
            let stream: String = browser.eval("window.cloudcamView.stream").await.ok()?;
            (stream == "sub" && s.frames_decoded >= 25).then_some(s)
        },
    )
    .await?;
    assert_eq!((stats.width, stats.height), (640, 360), "{stats:?}");
    assert_eq!(stats.codec, "video/H264", "{stats:?}");
    let cam = api.camera(&hevc).await?;
    assert_eq!(cam["status"]["codec"], "H265", "{cam}");
    assert!(
        cam["status"]["live_unavailable"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{cam}"
    );
    browser.click("#player-close").await?;
    Ok(())
}
