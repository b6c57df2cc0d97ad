//! Push ingest on real components: a camera that sends its stream to cloudcam instead of being
//! pulled. It is added with `push: true`, gets a push credential once, and an encoder
//! (GStreamer's `rtspclientsink`, RTSP RECORD over TCP) pushes H.264 and AAC to the
//! `push_url` its status names: `rtsps://`, as the worker has a push certificate; a push in
//! the clear is refused. It is then like any camera: watched in Chromium at the pushed size,
//! recorded to S3 (Garage) with its audio. A push with a wrong credential and a push
//! with a replaced credential are refused and relay nothing; replacing the credential cuts the
//! push made with the old one, and a second push with the credential takes the camera over
//! from the first. The credential is nowhere but in the answers that made it.

use cloudcam_tests::media::{audio_track, decode};
use cloudcam_tests::procs::{Proc, free_port, rtsp_pusher};
use cloudcam_tests::stack::{TestEnv, metric};
use cloudcam_tests::tls::push_certificate;
use cloudcam_tests::{Api, Browser, wait_for};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::time::Duration;

/// Waits until the server has cut `push`: rtspclientsink either warns that its connection
/// ended and goes on, or fails writing to it and ends, as the cut finds it.
async fn wait_cut(push: &mut Proc, what: &str) -> anyhow::Result<()> {
    wait_for(what, Duration::from_secs(10), || {
        let cut = !push.alive()
            || push
                .log_text()
                .contains("WARNING: from element /GstPipeline:pipeline0/GstRTSPClientSink:push");
        async move { cut.then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_camera_plays_records_and_takes_only_its_credential() -> anyhow::Result<()> {
    let env = TestEnv::new("push_ingest")?;
    let garage = env.garage().await?;
    // The worker takes pushes over RTSPS only.
    let plain = format!("127.0.0.1:{}", free_port());
    let tls_listen = format!("127.0.0.1:{}", free_port());
    let certificate = push_certificate(&env.dir, &["127.0.0.1"])?;
    let mut ingest_env = certificate.ingest_env(&tls_listen);
    ingest_env.push(("CLOUDCAM_INGEST_RESTREAM_LISTEN", plain.clone()));
    let ingest_env: Vec<(&str, &str)> = ingest_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = env.platform_tuned(Some(&garage), &[], &ingest_env).await?;
    let _recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 3)
        .await?;
    let api = Api::login(&p.signal.base).await?;
    let mut responses: Vec<String> = Vec::new();

    // A pushed camera is reached with nothing of a pulled one's.
    for extra in [
        json!({"url": "rtsp://192.0.2.1/stream"}),
        json!({"username": "admin"}),
        json!({"sub_url": "rtsp://192.0.2.1/sub"}),
    ] {
        let mut body = json!({"name": "Encoder", "push": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, err) = api.call("POST", "/cameras", Some(body)).await?;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["error"]["code"], "invalid_push", "{err}");
    }

    let cam = api
        .create_camera(json!({"name": "Encoder", "push": true, "recording": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    assert_eq!(cam["push"], true);
    let user = cam["push_credential"]["username"]
        .as_str()
        .unwrap()
        .to_string();
    let password = cam["push_credential"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(user, id);
    assert!(password.len() >= 32, "{cam}");
    // Shown once: never again.
    let again = api.camera(&id).await?;
    assert!(again.get("push_credential").is_none(), "{again}");
    responses.push(again.to_string());

    // Taken by a worker with nobody watching, and unreachable until something pushes.
    let waiting = api
        .wait_state(&id, "unreachable", Duration::from_secs(20))
        .await?;
    responses.push(waiting.to_string());
    let reason = waiting["status"]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("nothing is pushed"), "{waiting}");
    let push_url = waiting["status"]["push_url"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(
        push_url,
        format!("rtsps://{tls_listen}/push/{id}"),
        "{waiting}"
    );
    let frames = format!("cloudcam_ingest_camera_frames_total{{camera=\"{id}\"}}");

    // A wrong password is refused and nothing is relayed.
    let mut wrong = rtsp_pusher(
        &env.dir,
        "pusher-wrong",
        &push_url,
        (&user, "not-the-password"),
        true,
    )?;
    wrong
        .wait_exit(
            "the push with a wrong password refused",
            Duration::from_secs(15),
        )
        .await?;
    assert!(
        wrong.log_text().contains("Unauthorized"),
        "{}",
        wrong.log_text()
    );

    // Nor is a push in the clear with the right credential: to the RTSPS port, or to the
    // worker's (re-stream) RTSP server.
    for (name, url) in [
        ("pusher-plain", format!("rtsp://{tls_listen}/push/{id}")),
        ("pusher-restream", format!("rtsp://{plain}/push/{id}")),
    ] {
        let mut plain_push = rtsp_pusher(&env.dir, name, &url, (&user, &password), true)?;
        plain_push
            .wait_exit("the push in the clear refused", Duration::from_secs(15))
            .await?;
    }
    assert_eq!(metric(&p.ingest.metrics, &frames).await.unwrap_or(0.0), 0.0);

    // With its credential it is live at the pushed size.
    let mut push = rtsp_pusher(&env.dir, "pusher", &push_url, (&user, &password), true)?;
    let live = api.wait_state(&id, "live", Duration::from_secs(20)).await?;
    responses.push(live.to_string());
    assert_eq!(
        (
            live["status"]["width"].as_u64(),
            live["status"]["height"].as_u64()
        ),
        (Some(640), Some(360)),
        "{live}"
    );
    assert_eq!(live["status"]["codec"], "H264", "{live}");

    // A second push with the credential takes the camera over (a pusher whose earlier
    // connection is half-open is not locked out by it): the first is cut, and the camera is
    // live again from the second.
    let second = rtsp_pusher(
        &env.dir,
        "pusher-second",
        &push_url,
        (&user, &password),
        true,
    )?;
    wait_cut(&mut push, "the server to have cut the first push").await?;
    push.kill();
    let mut push = second;
    api.wait_state(&id, "live", Duration::from_secs(20)).await?;

    // Watched in Chromium like a pulled camera.
    let browser = Browser::launch(&env.dir).await?;
    browser
        .watch_via_api(&p.signal.base, &api.token, &id)
        .await?;
    let first = browser.wait_frames(0, 1, Duration::from_secs(15)).await?;
    let stats = browser
        .wait_frames(first.frames_decoded, 50, Duration::from_secs(10))
        .await?;
    assert_eq!((stats.width, stats.height), (640, 360), "{stats:?}");
    assert_eq!(stats.codec, "video/H264");
    browser.screenshot("pushed-view").await?;
    responses.extend(browser.api_messages().await?.iter().map(Value::to_string));

    // The web UI: the card names where the camera pushes to and offers a new credential; a
    // pushed camera added there shows its credential once.
    browser.sign_in(&p.signal.base).await?;
    let card = format!(".camera[data-id=\"{id}\"]");
    browser
        .wait_element(&format!("{card} .push-credential"), Duration::from_secs(10))
        .await?;
    let shown: String = browser
        .eval(&format!(
            "document.querySelector('{card} .url').textContent"
        ))
        .await?;
    assert_eq!(shown, format!("pushes to {push_url}"));
    browser.fill("#add-name", "Door encoder").await?;
    browser.click("#add-push").await?;
    browser.click("#add-submit").await?;
    browser
        .wait_element("#push-info:not([hidden])", Duration::from_secs(10))
        .await?;
    let (user_shown, password_shown): (String, String) = browser
        .eval("[document.querySelector('#push-user').textContent, document.querySelector('#push-password').textContent]")
        .await?;
    assert_eq!(password_shown.len(), 32, "{password_shown}");
    browser.screenshot("push-credential").await?;
    browser.click("#push-done").await?;
    let cleared: String = browser
        .eval("document.querySelector('#push-password').textContent")
        .await?;
    assert_eq!(cleared, "");
    // Made for the camera the form added, and never shown again.
    let added = api.camera(&user_shown).await?;
    assert_eq!(
        (added["name"].as_str(), added["push"].as_bool()),
        (Some("Door encoder"), Some(true))
    );
    assert!(!added.to_string().contains(&password_shown));
    browser.close().await;

    // Recorded: segments in the bucket, indexed, decoding at the pushed size.
    let recordings = wait_for(
        "three recorded segments",
        Duration::from_secs(60),
        || async {
            let v = api.recordings(&id).await.ok()?;
            (v["segments"].as_array()?.len() >= 3).then_some(v)
        },
    )
    .await?;
    let store = garage.store()?;
    let segment = recordings["segments"][1]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = store
        .get(&object_store::path::Path::from(segment.as_str()))
        .await?
        .bytes()
        .await?;
    let file = env.dir.join("segment.mp4");
    std::fs::write(&file, &bytes)?;
    let d = decode(&file)?;
    assert_eq!((d.width, d.height), (640, 360), "{d:?}");
    assert!(d.frames >= 25, "{d:?}");
    // With the pushed audio.
    let audio = audio_track(&file)?;
    assert_eq!((audio.rate, audio.channels), (48_000, 1), "{audio:?}");
    let now = api.camera(&id).await?;
    // (rtspclientsink packetizes AAC as MP4A-LATM.)
    assert_eq!(now["status"]["audio_codec"], "MP4A-LATM", "{now}");

    // A new credential: the push made with the old one is cut, the old one refused, the new
    // one taken.
    let (status, fresh) = api
        .call("POST", &format!("/cameras/{id}/push-credential"), None)
        .await?;
    assert_eq!(status, 200, "{fresh}");
    let new_password = fresh["push_credential"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_password, password);
    api.wait_state(&id, "unreachable", Duration::from_secs(20))
        .await?;
    wait_cut(
        &mut push,
        "the server to have closed the replaced credential's push",
    )
    .await?;
    push.kill();
    let before = metric(&p.ingest.metrics, &frames).await.unwrap_or(0.0);
    let mut old = rtsp_pusher(&env.dir, "pusher-old", &push_url, (&user, &password), true)?;
    old.wait_exit(
        "the push with the old credential refused",
        Duration::from_secs(15),
    )
    .await?;
    assert_eq!(
        metric(&p.ingest.metrics, &frames).await.unwrap_or(0.0),
        before
    );
    let _push = rtsp_pusher(
        &env.dir,
        "pusher-new",
        &push_url,
        (&user, &new_password),
        true,
    )?;
    api.wait_state(&id, "live", Duration::from_secs(20)).await?;

    // A pulled camera has no push credential to replace.
    let pulled = api
        .create_camera_id(json!({"name": "Pulled", "url": "rtsp://192.0.2.1/stream"}))
        .await?;
    let (status, err) = api
        .call("POST", &format!("/cameras/{pulled}/push-credential"), None)
        .await?;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("not_pushed"))
    );

    // The credentials are nowhere else: API answers, logs.
    for r in &responses {
        assert!(!r.contains(&password), "push password in an answer: {r}");
    }
    for log in [&p.ingest.proc, p.signal.proc.as_ref().unwrap()] {
        let text = log.log_text();
        assert!(
            !text.contains(&password) && !text.contains(&new_password),
            "push password in the log of {}",
            log.name
        );
    }
    Ok(())
}
