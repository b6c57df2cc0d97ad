//! Cameras behind NAT on real components: a site is a network namespace whose firewall drops
//! every connection opened from outside (as a NAT router does), with a camera (camsim) and the
//! edge agent (`cloudcam-edge`) inside. The test first proves the cloud cannot open a
//! connection to the camera. Then: the site is added and its agent enrolled (the token works
//! once), a camera is added by its URL on the site, watched in Chromium at the camera's size
//! and recorded to S3 (Garage) — all through the agent's outbound connections, its pushes over
//! RTSPS with a worker certificate of a private CA the agent is told to trust. The owning
//! ingest worker is killed (the push moves to the other and the viewer resumes), the agent is
//! restarted (resumes from its stored credential), its uplink is cut (the camera shows
//! `offline`, then comes back by itself). An agent's credential gets only its own site's
//! cameras, and their push credentials push nothing else; revoking the site ends the agent and
//! every push credential it had.

use cloudcam_tests::media::{decode, largest_gap};
use cloudcam_tests::netns::NatSite;
use cloudcam_tests::procs::{Proc, free_port, rtsp_pusher};
use cloudcam_tests::stack::{TestEnv, binary};
use cloudcam_tests::tls::push_certificate;
use cloudcam_tests::{Api, Browser, wait_for};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn site_view(api: &Api, id: &str) -> anyhow::Result<Value> {
    let (status, v) = api.call("GET", &format!("/sites/{id}"), None).await?;
    anyhow::ensure!(status == 200, "GET /sites/{id}: {status} {v}");
    Ok(v)
}

async fn wait_online(api: &Api, id: &str, online: bool) -> anyhow::Result<Value> {
    wait_for(
        &format!("site {id} online={online}"),
        Duration::from_secs(20),
        || async {
            let v = site_view(api, id).await.ok()?;
            (v["online"] == online).then_some(v)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_behind_nat_is_pushed_by_its_edge_agent() -> anyhow::Result<()> {
    let env = TestEnv::new("edge_agent")?;
    let site = NatSite::create()?;

    // The camera, on the site. The cloud cannot open a connection to it; the site can.
    let cam_port = free_port();
    let mut camsim_cmd = site.command(binary("camsim")?);
    camsim_cmd.args([
        "--address",
        "0.0.0.0",
        "--port",
        &cam_port.to_string(),
        "--stats-port",
        &free_port().to_string(),
        "--stream",
        "door:width=640,height=360,fps=25,gop=25",
    ]);
    let _camsim = Proc::spawn("camsim-site", &env.dir, &mut camsim_cmd)?;
    wait_for("camsim on the site", Duration::from_secs(30), || async {
        site.listening(cam_port).then_some(())
    })
    .await?;
    assert!(
        !site.reachable_from_cloud(cam_port),
        "the cloud opened a connection to the camera on the site"
    );

    let garage = env.garage().await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let signal_port = free_port();
    let signal_listen = format!("0.0.0.0:{signal_port}");
    let signal = env
        .signal_with(
            Some(&kafka),
            Some(&redis),
            &[&janus],
            Some(&garage),
            &[("CLOUDCAM_SIGNAL_LISTEN", &signal_listen)],
        )
        .await?;
    // The ingest workers' push mounts are reached from the site at the cloud's address, over
    // RTSPS with a certificate of a private CA, which the agent is told to trust.
    let certificate = push_certificate(&env.dir, &[&site.cloud_ip, "127.0.0.1"])?;
    let push_ca = certificate.ca.display().to_string();
    let mut ingests = Vec::new();
    let start_ingest = |name: &'static str| {
        let listen = format!("0.0.0.0:{}", free_port());
        let (env, kafka, redis, garage, site, certificate) =
            (&env, &kafka, &redis, &garage, &site, &certificate);
        async move {
            let mut settings = certificate.ingest_env(&format!("0.0.0.0:{}", free_port()));
            settings.push(("CLOUDCAM_INGEST_RESTREAM_LISTEN", listen));
            settings.push(("CLOUDCAM_INGEST_RESTREAM_ADVERTISE", site.cloud_ip.clone()));
            let settings: Vec<(&str, &str)> =
                settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.ingest_with(name, kafka, redis, Some(garage), &settings)
                .await
        }
    };
    for name in ["ingest-1", "ingest-2"] {
        ingests.push(Some(start_ingest(name).await?));
    }
    let _recorder = env
        .recorder("recorder-1", &kafka, &redis, &garage, 2)
        .await?;
    let api = Api::login(&signal.base).await?;
    let mut responses: Vec<String> = Vec::new();

    // The site: its enrollment token and command are shown once.
    let (status, made) = api
        .call("POST", "/sites", Some(json!({"name": "Shop"})))
        .await?;
    assert_eq!(status, 201, "{made}");
    let site_id = made["id"].as_str().unwrap().to_string();
    let token = made["enrollment"]["token"].as_str().unwrap().to_string();
    let command = made["enrollment"]["command"].as_str().unwrap();
    assert!(
        command.starts_with("cloudcam-edge --server http") && command.contains(&token),
        "{command}"
    );
    let view = site_view(&api, &site_id).await?;
    assert!(view.get("enrollment").is_none(), "{view}");
    assert_eq!(
        (view["enrolled"].as_bool(), view["online"].as_bool()),
        (Some(false), Some(false))
    );

    // The agent enrolls from the site, through the connection it opens.
    let server = format!("http://{}:{signal_port}", site.cloud_ip);
    let state_file = env.dir.join("edge-state.json");
    let state = state_file.display().to_string();
    // The site's agent, trusting the workers' private CA.
    let agent = |name: &str, args: &[&str]| {
        env.edge_agent_with(
            name,
            Some(&site),
            args,
            &[("CLOUDCAM_EDGE_PUSH_CA", &push_ca)],
        )
    };
    let mut wrong = agent(
        "edge-wrong-token",
        &[
            "--server",
            &server,
            "--enroll-token",
            "not-a-token",
            "--state-file",
            &env.dir.join("none.json").display().to_string(),
        ],
    )?;
    wrong
        .wait_exit(
            "an agent with a wrong token to stop",
            Duration::from_secs(15),
        )
        .await?;
    assert!(
        wrong.log_text().contains("invalid_enrollment")
            || wrong.log_text().contains("unknown, used or expired"),
        "{}",
        wrong.log_text()
    );
    let mut edge = agent(
        "edge",
        &[
            "--server",
            &server,
            "--enroll-token",
            &token,
            "--state-file",
            &state,
        ],
    )?;
    wait_online(&api, &site_id, true).await?;
    // (Its version comes with its first message.)
    let online = wait_for("the agent's version", Duration::from_secs(10), || async {
        let v = site_view(&api, &site_id).await.ok()?;
        (v["agent"]["version"] != "").then_some(v)
    })
    .await?;
    assert_eq!(online["enrolled"], true, "{online}");
    assert_eq!(
        online["agent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{online}"
    );
    assert_eq!(online["agent"]["address"], site.site_ip, "{online}");
    responses.push(online.to_string());
    // The token works once.
    let (status, again) = api
        .call("POST", "/edge/enroll", Some(json!({"token": token})))
        .await?;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (400, Some("invalid_enrollment")),
        "{again}"
    );

    // The camera, added by its address on the site (its credentials would stay on the site).
    let local = format!("rtsp://127.0.0.1:{cam_port}/door");
    let (status, err) = api
        .call(
            "POST",
            "/cameras",
            Some(json!({"name": "Till", "site": site_id, "url": format!("rtsp://admin:pw@127.0.0.1:{cam_port}/door")})),
        )
        .await?;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (400, Some("invalid_site_url")),
        "{err}"
    );
    let cam = api
        .create_camera(json!({"name": "Till", "site": site_id, "url": local, "recording": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    assert!(cam.get("push_credential").is_none(), "{cam}");
    let live = api.wait_state(&id, "live", Duration::from_secs(30)).await?;
    responses.push(live.to_string());
    assert_eq!(
        (
            live["status"]["width"].as_u64(),
            live["status"]["height"].as_u64()
        ),
        (Some(640), Some(360)),
        "{live}"
    );
    // Pushed over RTSPS, the agent validating the worker's certificate.
    let push_url = live["status"]["push_url"].as_str().unwrap_or_default();
    assert!(
        push_url.starts_with(&format!("rtsps://{}:", site.cloud_ip)),
        "{live}"
    );
    let pushing = wait_for(
        "the agent to report its push",
        Duration::from_secs(10),
        || async {
            let v = site_view(&api, &site_id).await.ok()?;
            (v["agent"]["pushing"] == json!([id]) && v["agent"]["uplink_bps"].as_u64()? > 10_000)
                .then_some(v)
        },
    )
    .await?;
    responses.push(pushing.to_string());

    // Watched in Chromium at the camera's size.
    let browser = Browser::launch(&env.dir).await?;
    browser.watch_via_api(&signal.base, &api.token, &id).await?;
    let first = browser.wait_frames(0, 1, Duration::from_secs(15)).await?;
    let stats = browser
        .wait_frames(first.frames_decoded, 50, Duration::from_secs(10))
        .await?;
    assert_eq!((stats.width, stats.height), (640, 360), "{stats:?}");

    // Recorded to S3: segments indexed, in the bucket, decoding at the camera's size.
    let recordings = wait_for("two recorded segments", Duration::from_secs(40), || async {
        let v = api.recordings(&id).await.ok()?;
        (v["segments"].as_array()?.len() >= 2).then_some(v)
    })
    .await?;
    let key = recordings["segments"][1]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let bytes = garage
        .store()?
        .get(&object_store::path::Path::from(key.as_str()))
        .await?
        .bytes()
        .await?;
    let file = env.dir.join("segment.mp4");
    std::fs::write(&file, &bytes)?;
    let d = decode(&file)?;
    assert_eq!((d.width, d.height), (640, 360), "{d:?}");

    // The owning ingest worker dies: the agent pushes to the new owner and the viewer resumes.
    let owner = api.camera(&id).await?["status"]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let index = if owner == "ingest-1" { 0 } else { 1 };
    let killed = std::time::Instant::now();
    ingests[index].take().unwrap().proc.kill();
    let moved = wait_for(
        "the camera live on the other worker",
        Duration::from_secs(30),
        || async {
            let v = api.camera(&id).await.ok()?;
            (v["status"]["state"] == "live" && v["status"]["worker_id"] != owner.as_str())
                .then_some(v)
        },
    )
    .await?;
    responses.push(moved.to_string());
    eprintln!(
        "owning ingest worker killed → live on the other: {} ms",
        killed.elapsed().as_millis()
    );
    let before = browser.video_stats().await?.frames_decoded;
    browser
        .wait_frames(before, 50, Duration::from_secs(20))
        .await?;

    // The agent restarts: offline while it is away, back from its stored credential.
    edge.kill();
    api.wait_state(&id, "offline", Duration::from_secs(10))
        .await?;
    let mut edge = agent("edge-restarted", &["--state-file", &state])?;
    api.wait_state(&id, "live", Duration::from_secs(30)).await?;
    let before = browser.video_stats().await?.frames_decoded;
    browser
        .wait_frames(before, 50, Duration::from_secs(20))
        .await?;

    // The uplink is cut: offline with the reason, and back by itself when it returns.
    let cut = std::time::Instant::now();
    site.cut()?;
    let offline = api
        .wait_state(&id, "offline", Duration::from_secs(8))
        .await?;
    eprintln!("uplink cut → offline: {} ms", cut.elapsed().as_millis());
    assert!(
        offline["status"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("edge agent"),
        "{offline}"
    );
    let restored = std::time::Instant::now();
    site.restore()?;
    api.wait_state(&id, "live", Duration::from_secs(40)).await?;
    eprintln!("uplink back → live: {} ms", restored.elapsed().as_millis());
    let before = browser.video_stats().await?.frames_decoded;
    browser
        .wait_frames(before, 50, Duration::from_secs(20))
        .await?;
    browser.screenshot("edge-view").await?;

    // Planned moves (a worker joins; then the owner stops gracefully): the agent pushes to the
    // new owner before it leaves the old one, and the recording has no hole.
    let joined_ms = cloudcam_tests::procs::now_ms();
    ingests.push(Some(start_ingest("ingest-3").await?));
    wait_for(
        "ingest-3 to be registered",
        Duration::from_secs(20),
        || async {
            let (_, workers) = api.call("GET", "/workers", None).await.ok()?;
            workers.to_string().contains("ingest-3").then_some(())
        },
    )
    .await?;
    api.wait_recorded_past(&id, joined_ms + 4000, Duration::from_secs(30))
        .await?;
    let owner = api.camera(&id).await?["status"]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let stopping = ["ingest-1", "ingest-2", "ingest-3"]
        .iter()
        .position(|n| *n == owner)
        .unwrap();
    let stopped_ms = cloudcam_tests::procs::now_ms();
    let mut owner_proc = ingests[stopping].take().unwrap();
    owner_proc.proc.terminate(Duration::from_secs(30));
    wait_for(
        "the camera live on another worker",
        Duration::from_secs(30),
        || async {
            let v = api.camera(&id).await.ok()?;
            (v["status"]["state"] == "live" && v["status"]["worker_id"] != owner.as_str())
                .then_some(())
        },
    )
    .await?;
    api.wait_recorded_past(&id, stopped_ms + 4000, Duration::from_secs(30))
        .await?;
    let recorded = api.recordings(&id).await?;
    let since: Vec<Value> = recorded["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["end_ms"].as_i64().unwrap_or(0) >= joined_ms - 2000)
        .cloned()
        .collect();
    let (gap, at) = largest_gap(&since);
    eprintln!(
        "planned moves: largest recording gap {gap} ms ({at}) over {} segments",
        since.len()
    );
    // One frame interval (40 ms) and jitter.
    assert!(
        gap <= 120,
        "a planned move left a {gap} ms hole in the recording ({at})"
    );
    let before = browser.video_stats().await?.frames_decoded;
    browser
        .wait_frames(before, 50, Duration::from_secs(20))
        .await?;

    // The UI lists the site with its agent, and the camera's card names the site.
    browser.sign_in(&signal.base).await?;
    let row = format!(".site[data-id=\"{site_id}\"]");
    browser
        .wait_element(&format!("{row} .site-online"), Duration::from_secs(10))
        .await?;
    let card_site: String = browser
        .eval(&format!(
            "document.querySelector('.camera[data-id=\"{id}\"] .url').textContent"
        ))
        .await?;
    assert!(card_site.contains("Shop"), "{card_site}");
    browser.screenshot("edge-sites").await?;
    browser.close().await;

    // Another site's camera, wanted (recording) but never given to this site's agent.
    let (_, other) = api
        .call("POST", "/sites", Some(json!({"name": "Depot"})))
        .await?;
    let other_site = other["id"].as_str().unwrap().to_string();
    let foreign = api
        .create_camera(json!({"name": "Gate", "site": other_site, "url": local, "recording": true}))
        .await?;
    let foreign_id = foreign["id"].as_str().unwrap().to_string();
    // (Waiting for a push at its owner: its status names the push URL.)
    let foreign_url = wait_for(
        "the other site's camera to wait for a push",
        Duration::from_secs(20),
        || async {
            let v = api.camera(&foreign_id).await.ok()?;
            let url = v["status"]["push_url"].as_str()?.to_string();
            (!url.is_empty()).then_some(url)
        },
    )
    .await?;

    // With the site's credential (from the agent's state file), the connection is given the
    // site's own camera only, with a push credential that pushes nothing else.
    edge.kill();
    let credential: Value = serde_json::from_slice(&std::fs::read(&state_file)?)?;
    let credential = credential["credential"].as_str().unwrap().to_string();
    let ws_url = format!("ws://127.0.0.1:{signal_port}/api/v1/edge/ws");
    let mut request = ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {credential}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await?;
    let cameras = wait_for_push(&mut ws).await?;
    let ids: Vec<&str> = cameras
        .iter()
        .filter_map(|c| c["camera_id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{cameras:?}");
    let own = &cameras[0];
    let (user, password) = (
        own["username"].as_str().unwrap().to_string(),
        own["password"].as_str().unwrap().to_string(),
    );
    let mut cross = rtsp_pusher(
        &env.dir,
        "pusher-cross-site",
        &foreign_url,
        (&user, &password),
        false,
    )?;
    cross
        .wait_exit(
            "a push to another site's camera refused",
            Duration::from_secs(15),
        )
        .await?;
    // (The mount of a camera the credential is not for is not even shown to it.)
    let log = cross.log_text();
    assert!(
        log.contains("Unauthorized") || log.contains("Not Found"),
        "{log}"
    );
    let foreign_now = api.camera(&foreign_id).await?;
    assert_ne!(foreign_now["status"]["state"], "live", "{foreign_now}");
    // A wrong agent credential is refused before any WebSocket.
    let mut bad = ws_url.as_str().into_client_request()?;
    bad.headers_mut()
        .insert("authorization", format!("Bearer {site_id}.wrong").parse()?);
    assert!(tokio_tungstenite::connect_async(bad).await.is_err());

    // Revoked: the connection closes, and the push credential it was given pushes nothing.
    let (status, revoked) = api
        .call("POST", &format!("/sites/{site_id}/revoke"), None)
        .await?;
    assert_eq!(
        (status, revoked["enrolled"].as_bool()),
        (200, Some(false)),
        "{revoked}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(tokio_tungstenite::tungstenite::Message::Close(_)) | Err(_) => return true,
                _ => continue,
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the revoked agent's connection stayed open");
    let own_url = api.camera(&id).await?["status"]["push_url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut stale = rtsp_pusher(
        &env.dir,
        "pusher-revoked",
        &own_url,
        (&user, &password),
        false,
    )?;
    stale
        .wait_exit(
            "a push with the revoked credential refused",
            Duration::from_secs(15),
        )
        .await?;
    // The agent itself stops, saying why.
    let mut revoked_agent = agent("edge-revoked", &["--state-file", &state])?;
    revoked_agent
        .wait_exit("the revoked agent to stop", Duration::from_secs(15))
        .await?;
    assert!(
        revoked_agent.log_text().contains("enroll again"),
        "{}",
        revoked_agent.log_text()
    );

    // Secrets stay inside: no push password or agent credential in answers or service logs.
    for r in &responses {
        assert!(
            !r.contains(&password) && !r.contains(&credential),
            "a secret in an answer: {r}"
        );
    }
    let mut logs = vec![signal.proc.as_ref().unwrap().log_text()];
    logs.extend(ingests.iter().flatten().map(|i| i.proc.log_text()));
    for text in logs {
        assert!(
            !text.contains(&password) && !text.contains(&credential),
            "a secret in a log"
        );
    }
    Ok(())
}

/// The next `push` message on an agent connection: the cameras it is to push.
async fn wait_for_push(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the connection closed"))??;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = msg {
            let v: Value = serde_json::from_str(&text)?;
            if v["type"] == "push" && !v["cameras"].as_array().is_none_or(Vec::is_empty) {
                return Ok(v["cameras"].as_array().unwrap().clone());
            }
        }
    }
}
