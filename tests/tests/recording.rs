//! Continuous recording to S3 (Garage) on real components: segments decode to the expected frame
//! count, carry the camera's AAC audio (44.1 kHz), start with a keyframe and follow each other
//! without gaps; a clip exported from an arbitrary range is the range rounded out to keyframes,
//! with the audio; a snapshot decodes at the camera's size.

use cloudcam_tests::media::{audio_frames, decode};
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, Browser, wait_for};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::time::Duration;

const FPS: f64 = 25.0;
const FRAME_MS: f64 = 1000.0 / FPS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_to_s3_exports_clips_and_takes_snapshots() -> anyhow::Result<()> {
    let env = TestEnv::new("recording")?;
    let garage = env.garage().await?;
    let camsim = env
        .camsim(
            &["lobby:width=640,height=360,fps=25,gop=25,audio=aac,audio_rate=44100"],
            None,
        )
        .await?;
    let p = env.platform_with(Some(&garage)).await?;
    let _recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 3)
        .await?;
    let api = Api::login(&p.signal.base).await?;
    let cam = api
        .create_camera(json!({"name": "Lobby", "url": camsim.url("lobby"), "recording": true, "retention_hours": 24}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    assert_eq!(cam["recording"], true);
    api.wait_state(&id, "live", Duration::from_secs(20)).await?;

    // Snapshot on demand: a JPEG at the camera's resolution.
    let (status, _) = api
        .call("POST", &format!("/cameras/{id}/snapshot"), None)
        .await?;
    assert_eq!(status, 202);
    let jpeg = wait_for("a snapshot", Duration::from_secs(20), || async {
        let res = api
            .http
            .get(format!("{}/api/v1/cameras/{id}/snapshot", api.base))
            .bearer_auth(&api.token)
            .send()
            .await
            .ok()?;
        if res.status() != 200 {
            return None;
        }
        res.bytes().await.ok()
    })
    .await?;
    let snap = env.dir.join("snapshot.jpg");
    std::fs::write(&snap, &jpeg)?;
    let d = decode(&snap)?;
    assert_eq!((d.width, d.height), (640, 360), "snapshot {d:?}");

    // At least 60 s of recording, as one continuous span.
    let now = cloudcam_tests::procs::now_ms();
    let list = wait_for("60 s of recordings", Duration::from_secs(120), || async {
        let (_, v) = api
            .call(
                "GET",
                &format!("/cameras/{id}/recordings?from=0&to={}", now + 3_600_000),
                None,
            )
            .await
            .ok()?;
        let span = v["spans"].as_array()?.first()?.clone();
        let len = span["end_ms"].as_i64()? - span["start_ms"].as_i64()?;
        (len >= 60_000).then_some(v)
    })
    .await?;
    let spans = list["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1, "one continuous span: {spans:?}");
    let segments: Vec<Value> = list["segments"].as_array().unwrap().clone();
    assert!(segments.len() >= 15, "{} segments", segments.len());

    let store = garage.store()?;
    for (i, s) in segments.iter().enumerate() {
        let key = s["key"].as_str().unwrap();
        let bytes = store
            .get(&object_store::path::Path::from(key))
            .await?
            .bytes()
            .await?;
        let file = env.dir.join(format!("segment-{i}.mp4"));
        std::fs::write(&file, &bytes)?;
        let d = decode(&file)?;
        let indexed_ms = (s["end_ms"].as_i64().unwrap() - s["start_ms"].as_i64().unwrap()) as f64;
        let expected = indexed_ms / FRAME_MS;
        assert!(
            d.starts_with_keyframe,
            "segment {key} starts with a delta frame"
        );
        // The camera's AAC audio is recorded with the video, untouched.
        let audio = audio_frames(&file)?;
        assert!(audio > 0, "segment {key} has no audio");
        assert!(
            (d.frames as f64 - expected).abs() <= 1.5,
            "segment {key}: {} frames decoded, {expected:.1} expected from {indexed_ms} ms",
            d.frames
        );
        if i > 0 {
            let prev_end = segments[i - 1]["end_ms"].as_i64().unwrap();
            let gap = (s["start_ms"].as_i64().unwrap() - prev_end).abs() as f64;
            assert!(
                gap <= FRAME_MS,
                "segment {key} starts {gap} ms away from the previous end"
            );
        }
    }

    // A 15 s clip of an arbitrary range, rounded out to keyframes (GOP 1 s).
    let first = segments[0]["start_ms"].as_i64().unwrap();
    let (from, to) = (first + 7_300, first + 22_300);
    let res = api
        .http
        .get(format!(
            "{}/api/v1/cameras/{id}/clip?from={from}&to={to}&download=true",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await?;
    assert_eq!(res.status(), 200);
    let header = |n: &str| -> i64 { res.headers()[n].to_str().unwrap().parse().unwrap() };
    let (start, end) = (
        header("x-cloudcam-clip-start-ms"),
        header("x-cloudcam-clip-end-ms"),
    );
    assert!(
        start <= from && from - start < 1000 + FRAME_MS as i64,
        "clip starts at {start} for {from}"
    );
    assert!(
        end >= to && end - to < 1000 + FRAME_MS as i64,
        "clip ends at {end} for {to}"
    );
    let clip = env.dir.join("clip.mp4");
    std::fs::write(&clip, res.bytes().await?)?;
    // The clip was cut in a scratch directory that went with the response; so does that of a
    // clip whose client goes away without reading it.
    let scratch = env.dir.join("tmp/cloudcam-clips");
    assert!(scratch.exists(), "no clip scratch at {}", scratch.display());
    let scratch_empty = || async {
        let left = std::fs::read_dir(&scratch).ok()?.count();
        (left == 0).then_some(())
    };
    wait_for(
        "the clip's scratch to go",
        Duration::from_secs(10),
        scratch_empty,
    )
    .await?;
    let abandoned = api
        .http
        .get(format!(
            "{}/api/v1/cameras/{id}/clip?from={from}&to={to}",
            api.base
        ))
        .bearer_auth(&api.token)
        .send()
        .await?;
    assert_eq!(abandoned.status(), 200);
    drop(abandoned);
    wait_for(
        "an abandoned clip's scratch to go",
        Duration::from_secs(10),
        scratch_empty,
    )
    .await?;
    let d = decode(&clip)?;
    assert!(d.starts_with_keyframe);
    let want = (end - start) as f64;
    assert!(
        (d.duration_ms - want).abs() <= 2.0 * FRAME_MS,
        "clip lasts {} ms, its bounds say {want} ms",
        d.duration_ms
    );
    // The camera's audio comes along over the whole clip (AAC at 44.1 kHz: 1024 samples a
    // frame), as it was recorded.
    let audio = audio_frames(&clip)? as f64;
    let expected = want / 1000.0 * 44_100.0 / 1024.0;
    assert!(
        (audio - expected).abs() <= expected * 0.1,
        "the clip has {audio} audio frames, {expected:.0} expected over {want} ms"
    );

    // Playback in the web UI: open the camera's recordings, click the recorded span on the
    // timeline, and watch the position advance across segment boundaries (3 s segments).
    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&p.signal.base).await?;
    browser
        .click(&format!(".camera[data-id='{id}'] .recordings"))
        .await?;
    browser
        .wait_element("#timeline .span", Duration::from_secs(10))
        .await?;
    browser.click("#timeline .span").await?;
    let played: f64 = wait_for(
        "playback past two segment boundaries",
        Duration::from_secs(30),
        || async {
            let t: f64 = browser
                .eval("document.getElementById('playback').currentTime")
                .await
                .ok()?;
            (t >= 7.0).then_some(t)
        },
    )
    .await?;
    let frames: u64 = browser
        .eval("document.getElementById('playback').getVideoPlaybackQuality().totalVideoFrames")
        .await?;
    assert!(
        frames as f64 >= played * FPS * 0.8,
        "{frames} frames decoded in {played} s"
    );
    browser.screenshot("playback").await?;
    browser.close().await;
    Ok(())
}
