//! Scale-out and failover on real components: 3 ingest workers, 2 recorders and 2 Janus
//! gateways serve 12 replayed cameras. SIGKILL the worker of a watched camera five times: every
//! camera it had is live elsewhere (RTP arriving at Janus) within the bound, and the Chromium
//! viewer resumes without a reload. A fourth worker joins and takes cameras; camsim's session
//! counts show a moved camera pulled twice only while it is handed over. A recorder is killed and its
//! cameras resume recording on the other with a gap of at most failover + one segment.

use cloudcam_tests::fleet::{FAILOVER_BOUND, cameras, owner};
use cloudcam_tests::stack::{Camsim, Ingest, TestEnv};
use cloudcam_tests::{Api, Browser, wait_for};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CAMERAS: usize = 12;
/// "A moment": on a planned move (a worker joins or rejoins) the old owner keeps a live camera
/// until the new one is live and nobody pulls its re-stream any more (a recorder has cut over
/// at a keyframe): `camera.handover_timeout_ms` at most. A killed worker pulls nothing.
const HANDOVER_BOUND: Duration = Duration::from_secs(10);
const SEGMENT_S: u32 = 2;

/// Samples camsim's sessions every 100 ms; keeps, per path, the longest run with more than one.
fn watch_overlaps(camsim: Arc<Camsim>) -> Arc<Mutex<HashMap<String, Duration>>> {
    let worst: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let w = worst.clone();
    tokio::spawn(async move {
        let mut since: HashMap<String, Instant> = HashMap::new();
        loop {
            if let Ok(s) = camsim.sessions().await {
                for (path, n) in s {
                    if n > 1 {
                        let start = *since.entry(path.clone()).or_insert_with(Instant::now);
                        let mut worst = w.lock().unwrap();
                        let e = worst.entry(path).or_default();
                        *e = (*e).max(start.elapsed());
                    } else {
                        since.remove(&path);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fail_over_join_and_hand_cameras_over() -> anyhow::Result<()> {
    let env = TestEnv::new("scale_out")?;
    let streams: Vec<String> = (0..CAMERAS)
        .map(|i| format!("s{i}:mode=replay,width=320,height=240,fps=15,gop=15"))
        .collect();
    let refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = Arc::new(env.camsim(&refs, None).await?);
    let garage = env.garage().await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus_a = env.janus_named("janus-a").await?;
    let janus_b = env.janus_named("janus-b").await?;
    let gateways = HashMap::from([("janus-a", &janus_a), ("janus-b", &janus_b)]);
    let signal = env
        .signal_with(
            Some(&kafka),
            Some(&redis),
            &[&janus_a, &janus_b],
            Some(&garage),
            &[],
        )
        .await?;
    let mut ingest: HashMap<String, Ingest> = HashMap::new();
    for name in ["ingest-1", "ingest-2", "ingest-3"] {
        ingest.insert(
            name.into(),
            env.ingest(name, &kafka, &redis, Some(&garage)).await?,
        );
    }
    let mut recorders = HashMap::new();
    for name in ["recorder-1", "recorder-2"] {
        recorders.insert(
            name.to_string(),
            env.recorder(name, &kafka, &redis, &garage, SEGMENT_S)
                .await?,
        );
    }
    let api = Api::login(&signal.base).await?;
    let mut ids = Vec::new();
    for i in 0..CAMERAS {
        let cam = api
            .create_camera(json!({
                "name": format!("cam {i}"), "url": camsim.url(&format!("s{i}")),
                "always_on": true, "recording": i < 4
            }))
            .await?;
        ids.push(cam["id"].as_str().unwrap().to_string());
    }
    let overlaps = watch_overlaps(camsim.clone());

    // Every camera live; every worker owns some; RTP arrives at Janus for every one.
    let all_live = |exclude: Option<String>| {
        let (api, redis, gateways) = (&api, &redis, &gateways);
        async move {
            cloudcam_tests::fleet::all_live(api, redis, gateways, CAMERAS, exclude.as_deref()).await
        }
    };
    // (Workers join the group one after another; the first owns everything until the others
    // are in.)
    let cams = wait_for(
        "every camera live with RTP at Janus, on all three workers",
        Duration::from_secs(60),
        || async {
            let cams = all_live(None).await?;
            let owners: std::collections::HashSet<String> = cams.iter().map(owner).collect();
            (owners.len() == 3).then_some(cams)
        },
    )
    .await?;
    // The workers' heartbeats list what each serves: the same 12 cameras, once each.
    let mut expected = ids.clone();
    expected.sort();
    wait_for(
        "the heartbeats to list every camera once",
        Duration::from_secs(10),
        || async {
            let (_, workers) = api.call("GET", "/workers", None).await.ok()?;
            let mut listed: Vec<String> = workers["workers"]
                .as_array()?
                .iter()
                .filter(|w| w["kind"] == "ingest")
                .flat_map(|w| w["cameras"].as_array().cloned().unwrap_or_default())
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect();
            listed.sort();
            (listed == expected).then_some(())
        },
    )
    .await?;
    let per_gateway = cams
        .iter()
        .filter(|c| c["served_by"]["gateway"] == "janus-a")
        .count();
    assert_eq!(per_gateway, CAMERAS / 2, "mountpoints placed by load");

    // A viewer in the web UI.
    let watched = ids[4].clone();
    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&signal.base).await?;
    browser
        .wait_element(
            &format!(".camera[data-id='{watched}'][data-state=live]"),
            Duration::from_secs(20),
        )
        .await?;
    browser
        .click(&format!(".camera[data-id='{watched}'] .watch"))
        .await?;
    browser.wait_frames(0, 25, Duration::from_secs(20)).await?;

    // Five times: SIGKILL the worker of the watched camera.
    let mut failovers = Vec::new();
    let mut rejoins = Vec::new();
    for round in 0..5 {
        let cams = cameras(&api).await?;
        let victim = owner(cams.iter().find(|c| c["id"] == watched.as_str()).unwrap());
        let moved: Vec<String> = cams
            .iter()
            .filter(|c| owner(c) == victim)
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect();
        let before = browser.video_stats().await?.frames_decoded;
        ingest.get_mut(&victim).unwrap().proc.kill();
        let killed = Instant::now();
        wait_for(
            &format!("round {round}: the cameras of {victim} live elsewhere"),
            Duration::from_secs(60),
            || all_live(Some(victim.clone())),
        )
        .await?;
        failovers.push(killed.elapsed());
        if round == 0 {
            // A dead worker's heartbeat expires: it leaves the API's list by itself.
            wait_for(
                "the dead worker to leave /workers",
                Duration::from_secs(15),
                || async {
                    let (_, w) = api.call("GET", "/workers", None).await.ok()?;
                    let listed = w["workers"]
                        .as_array()?
                        .iter()
                        .any(|w| w["id"] == victim.as_str());
                    (!listed).then_some(())
                },
            )
            .await?;
        }
        browser
            .wait_frames(before, 25, Duration::from_secs(20))
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: the viewer did not resume: {e}"))?;
        println!(
            "round {round}: {victim} killed; {} cameras live elsewhere after {} ms",
            moved.len(),
            failovers[round].as_millis()
        );
        // It comes back and takes its share again.
        ingest.insert(
            victim.clone(),
            env.ingest(&victim, &kafka, &redis, Some(&garage)).await?,
        );
        let back = Instant::now();
        wait_for(
            &format!("round {round}: {victim} to own cameras again"),
            Duration::from_secs(60),
            || async {
                let cams = all_live(None).await?;
                cams.iter().any(|c| owner(c) == victim).then_some(())
            },
        )
        .await?;
        rejoins.push(back.elapsed());
    }
    let worst = failovers.iter().max().unwrap();
    let mut sorted = failovers.clone();
    sorted.sort();
    println!(
        "ingest failover after SIGKILL: median {} ms, max {} ms; rejoin {:?}",
        sorted[2].as_millis(),
        worst.as_millis(),
        rejoins.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );
    assert!(*worst <= FAILOVER_BOUND, "failovers {failovers:?}");

    println!(
        "longest double pull per camera (handovers to rejoined workers): {:?}",
        overlaps.lock().unwrap()
    );

    // A fourth worker joins and takes its share; moved cameras are handed over.
    ingest.insert(
        "ingest-4".into(),
        env.ingest("ingest-4", &kafka, &redis, Some(&garage))
            .await?,
    );
    let joined = Instant::now();
    // Every partition holds one camera (new ids fill them in turn), so each of the four owns
    // some once the group has settled.
    wait_for(
        "ingest-4 to own cameras, and every worker some",
        Duration::from_secs(60),
        || async {
            let cams = all_live(None).await?;
            let owners: std::collections::HashSet<String> = cams.iter().map(owner).collect();
            (owners.contains("ingest-4") && owners.len() == 4).then_some(())
        },
    )
    .await?;
    println!(
        "rebalance when a worker joins: {} ms",
        joined.elapsed().as_millis()
    );
    wait_for(
        "the handovers to end (one session per camera)",
        HANDOVER_BOUND,
        || async {
            let s = camsim.sessions().await.ok()?;
            s.values().all(|n| *n <= 1).then_some(())
        },
    )
    .await?;
    let worst_overlap = overlaps.lock().unwrap().clone();
    println!("longest double pull per camera: {worst_overlap:?}");
    assert!(
        worst_overlap.values().all(|d| *d <= HANDOVER_BOUND),
        "a camera was pulled twice for too long: {worst_overlap:?}"
    );

    // SIGKILL the recorder of a recorded camera: the other recorder takes it over. First let
    // the recording settle (the join above may just have moved the camera's ingest worker, which
    // interrupts its re-stream): a segment ending after this moment is indexed.
    let recorded = ids[0].clone();
    let settled = cloudcam_tests::procs::now_ms() + i64::from(SEGMENT_S) * 1000;
    let horizon = settled + 3_600_000;
    wait_for(
        "the recording to settle",
        Duration::from_secs(60),
        || async {
            let (_, v) = api
                .call(
                    "GET",
                    &format!("/cameras/{recorded}/recordings?from=0&to={horizon}"),
                    None,
                )
                .await
                .ok()?;
            (v["spans"].as_array()?.last()?["end_ms"].as_i64()? > settled).then_some(())
        },
    )
    .await?;
    let cam = api.camera(&recorded).await?;
    let victim = cam["served_by"]["recorder"].as_str().unwrap().to_string();
    recorders.get_mut(&victim).unwrap().proc.kill();
    let killed_ms = cloudcam_tests::procs::now_ms();
    let killed = Instant::now();
    wait_for(
        "the other recorder to take the camera",
        Duration::from_secs(60),
        || async {
            let r = api.camera(&recorded).await.ok()?["served_by"]["recorder"].clone();
            (r.is_string() && r != victim.as_str()).then_some(())
        },
    )
    .await?;
    let takeover = killed.elapsed();
    // The killed recorder comes back (same spool) and uploads what it had finished.
    let back = env
        .recorder(&victim, &kafka, &redis, &garage, SEGMENT_S)
        .await?;
    let spooled = "cloudcam_recorder_spool{unit=\"segments\"}";
    wait_for(
        "the restarted recorder's spool to drain",
        Duration::from_secs(30),
        || async { (back.metric(spooled).await? == 0.0).then_some(()) },
    )
    .await?;
    let to = cloudcam_tests::procs::now_ms() + 3_600_000;
    let spans = wait_for("recording to resume", Duration::from_secs(60), || async {
        let (_, v) = api
            .call(
                "GET",
                &format!("/cameras/{recorded}/recordings?from=0&to={to}"),
                None,
            )
            .await
            .ok()?;
        let spans = v["spans"].as_array()?.clone();
        let last_end = spans.last()?["end_ms"].as_i64()?;
        (last_end > killed_ms + 3 * i64::from(SEGMENT_S) * 1000).then_some(spans)
    })
    .await?;
    // The gap around the kill: between the span that ends before it and the next. Failover is
    // from the kill to the first frame recorded by the other recorder.
    let after = spans
        .iter()
        .position(|s| s["start_ms"].as_i64().unwrap() >= killed_ms - 1_000)
        .expect("a span after the kill");
    assert!(after > 0, "nothing recorded before the kill: {spans:?}");
    let resumed = spans[after]["start_ms"].as_i64().unwrap();
    let gap = resumed - spans[after - 1]["end_ms"].as_i64().unwrap();
    let failover = resumed - killed_ms;
    println!(
        "recorder failover: taken over after {} ms, recording again {failover} ms after the kill; index gap {gap} ms",
        takeover.as_millis()
    );
    // One segment (plus one GOP of keyframe alignment) may be lost: the one being written.
    assert!(
        gap <= failover + i64::from(SEGMENT_S) * 1000 + 1000,
        "gap {gap} ms, failover {failover} ms, spans {spans:?}"
    );
    browser.close().await;
    Ok(())
}
