//! Recording survives its failures: S3 (Garage) away for a minute, and the recorder killed with
//! SIGKILL mid-segment while segments wait in its spool; and retention deletes old footage.

use cloudcam_tests::media::decode;
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, wait_for};
use object_store::ObjectStoreExt;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_s3_goes_away_and_the_recorder_is_killed() -> anyhow::Result<()> {
    let env = TestEnv::new("recording_durability")?;
    let mut garage = env.garage().await?;
    let camsim = env
        .camsim(&["dock:width=640,height=360,fps=25,gop=25"], None)
        .await?;
    let p = env.platform_with(Some(&garage)).await?;
    let mut recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 2)
        .await?;
    let api = Api::login(&p.signal.base).await?;
    let cam = api
        .create_camera(json!({"name": "Dock", "url": camsim.url("dock"), "recording": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    wait_for("three stored segments", Duration::from_secs(60), || async {
        let v = api.recordings(&id).await.ok()?;
        (v["segments"].as_array()?.len() >= 3).then_some(())
    })
    .await?;

    // S3 goes away for a minute: segments pile up in the spool, and the metric says so.
    garage.kill();
    let outage = Instant::now();
    let outage_ms = cloudcam_tests::procs::now_ms();
    let spooled = "cloudcam_recorder_spool{unit=\"segments\"}";
    wait_for("the spool to grow", Duration::from_secs(30), || async {
        (recorder.metric(spooled).await? >= 5.0).then_some(())
    })
    .await?;
    // Meanwhile the recorder dies mid-segment and comes back, still without S3.
    let waiting = recorder.metric(spooled).await.unwrap_or(0.0);
    recorder.proc.kill();
    let killed_at = cloudcam_tests::procs::now_ms();
    recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 2)
        .await?;
    wait_for(
        "the new recorder to spool more",
        Duration::from_secs(60),
        || async { (recorder.metric(spooled).await? >= waiting + 3.0).then_some(()) },
    )
    .await?;
    let remaining = Duration::from_secs(60).saturating_sub(outage.elapsed());
    wait_for(
        "a minute of outage",
        remaining + Duration::from_secs(1),
        || async { (outage.elapsed() >= Duration::from_secs(60)).then_some(()) },
    )
    .await?;
    garage.start().await?;
    let back_ms = cloudcam_tests::procs::now_ms();
    wait_for("the spool to drain", Duration::from_secs(120), || async {
        (recorder.metric(spooled).await? == 0.0).then_some(())
    })
    .await?;

    // Recording goes on past S3's return; then it is turned off, so that the index and the
    // bucket can be compared at rest.
    api.wait_recorded_past(&id, back_ms, Duration::from_secs(30))
        .await?;
    recorder.stop_and_drain(&api, &[&id]).await?;

    // Every segment of the whole period is indexed and in S3, none twice, none overlapping.
    let v = api.recordings(&id).await?;
    let segments = v["segments"].as_array().unwrap().clone();
    let spans = v["spans"].as_array().unwrap().clone();
    for w in segments.windows(2) {
        assert!(
            w[1]["start_ms"].as_i64() >= w[0]["end_ms"].as_i64().map(|e| e - 40),
            "overlapping segments {} and {}",
            w[0]["key"],
            w[1]["key"]
        );
    }
    // The only gap is where the recorder was killed. The segment it was writing was kept up
    // to its last whole fragment (a second): the recording before the gap reaches the kill.
    assert_eq!(spans.len(), 2, "spans: {spans:?}");
    let before = killed_at - spans[0]["end_ms"].as_i64().unwrap();
    let gap = spans[1]["start_ms"].as_i64().unwrap() - spans[0]["end_ms"].as_i64().unwrap();
    println!(
        "recorder SIGKILL: recording before it ends {before} ms before the kill; gap {gap} ms"
    );
    assert!(
        before <= 1_500,
        "the half-written segment was not kept: {spans:?} ({killed_at})"
    );
    assert!(gap <= 8_000, "gap of {gap} ms around the kill");
    assert!(
        spans[0]["end_ms"].as_i64().unwrap() <= killed_at
            && spans[1]["start_ms"].as_i64().unwrap() >= killed_at - 2_000,
        "the gap {spans:?} is not where the recorder was killed ({killed_at})"
    );
    // Recording covered the whole outage: from before S3 left until after it came back.
    assert!(
        spans[0]["start_ms"].as_i64().unwrap() < outage_ms
            && spans[1]["end_ms"].as_i64().unwrap() > back_ms,
        "spans {spans:?} do not cover the outage ({outage_ms}..{back_ms})"
    );
    let store = garage.store()?;
    let objects = garage.objects_matching_index(&api, &id).await?;
    for (i, o) in objects.iter().enumerate() {
        let bytes = store.get(&o.location).await?.bytes().await?;
        let file = env.dir.join(format!("s3-{i}.mp4"));
        std::fs::write(&file, &bytes)?;
        let d = decode(&file)?;
        assert!(
            d.starts_with_keyframe && d.frames > 0,
            "{} is not a whole segment",
            o.location
        );
    }
    // Nothing unfinished is left behind in the spool either.
    let leftovers: Vec<_> = walk(&recorder.spool)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "open"))
        .collect();
    assert!(leftovers.is_empty(), "spool still holds {leftovers:?}");
    Ok(())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_segments() -> anyhow::Result<()> {
    let env = TestEnv::new("recording_retention")?;
    let garage = env.garage().await?;
    let camsim = env
        .camsim(&["gate:width=320,height=240,fps=25,gop=25"], None)
        .await?;
    let p = env.platform_with(Some(&garage)).await?;
    let _recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 2)
        .await?;
    let api = Api::login(&p.signal.base).await?;
    // 0.005 h = 18 s.
    let cam = api
        .create_camera(json!({"name": "Gate", "url": camsim.url("gate"), "recording": true, "retention_hours": 0.005}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    let first = wait_for("a first segment", Duration::from_secs(60), || async {
        let v = api.recordings(&id).await.ok()?;
        v["segments"].as_array()?.first().cloned()
    })
    .await?;
    let key = object_store::path::Path::from(first["key"].as_str().unwrap());
    let store = garage.store()?;
    store.head(&key).await?;
    wait_for(
        "the first segment to expire",
        Duration::from_secs(60),
        || async {
            let v = api.recordings(&id).await.ok()?;
            let gone_from_index = v["segments"]
                .as_array()?
                .iter()
                .all(|s| s["key"] != first["key"]);
            let gone_from_s3 = matches!(
                store.head(&key).await,
                Err(object_store::Error::NotFound { .. })
            );
            (gone_from_index && gone_from_s3).then_some(())
        },
    )
    .await?;
    let v = api.recordings(&id).await?;
    let now = cloudcam_tests::procs::now_ms();
    let segments = v["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "recording goes on");
    for s in segments {
        assert!(
            s["end_ms"].as_i64().unwrap() > now - 18_000 - 3_000,
            "segment {} outlived its retention",
            s["key"]
        );
    }
    Ok(())
}
