//! Fast failover must not mean false evictions. Three ingest workers relay 16 camsim replay
//! cameras (1280x720, 25 fps) while busy-loop processes keep both cores of the machine busy, for
//! two minutes: no worker is evicted from the consumer group (the broker removes nobody, no
//! worker has partitions revoked) and no camera changes worker. Then, still under load, the
//! owner of a camera is SIGKILLed and every one of its cameras is live elsewhere, RTP arriving
//! at Janus, within the failover bound.
//!
//! The same scenario is the false-evictions benchmark: `CLOUDCAM_LOAD_MINUTES=30` keeps the
//! machine busy that long and prints the evictions per hour (`scripts/bench.sh` runs it).

use cloudcam_tests::fleet::{FAILOVER_BOUND, all_live, cameras, owner};
use cloudcam_tests::procs::Proc;
use cloudcam_tests::stack::{Ingest, TestEnv};
use cloudcam_tests::{Api, wait_for};
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

const CAMERAS: usize = 16;
/// How long the machine is kept busy before the kill: two minutes unless
/// `CLOUDCAM_LOAD_MINUTES` says otherwise (the benchmark's longer run).
fn load_for() -> Duration {
    std::env::var("CLOUDCAM_LOAD_MINUTES")
        .ok()
        .and_then(|m| m.parse::<f64>().ok())
        .filter(|m| *m > 0.0)
        .map_or(Duration::from_secs(120), |m| {
            Duration::from_secs_f64(m * 60.0)
        })
}

/// Partitions of the desired-state topic this worker has had revoked since it started.
async fn revoked(worker: &Ingest) -> f64 {
    let Ok(res) = reqwest::get(&worker.metrics).await else {
        return f64::NAN;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.starts_with("cloudcam_bus_partitions_rebalanced_total{")
                && l.contains("kind=\"revoked\"")
                && l.contains("cloudcam.cameras.v1")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Members the group coordinator removed because their session expired.
fn evictions(kafka_log: &std::path::Path) -> usize {
    std::fs::read_to_string(kafka_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("in group cloudcam-ingest has failed, removing it"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_machine_evicts_nobody_and_still_fails_over_fast() -> anyhow::Result<()> {
    let env = TestEnv::new("failover_under_load")?;
    let streams: Vec<String> = (0..CAMERAS)
        .map(|i| format!("r{i}:mode=replay,width=1280,height=720,fps=25,gop=25,seconds=2"))
        .collect();
    let refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&refs, None).await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let gateways = HashMap::from([("janus-1", &janus)]);
    let signal = env.signal(Some(&kafka), Some(&redis), &janus, None).await?;
    let mut workers: HashMap<String, Ingest> = HashMap::new();
    for name in ["ingest-1", "ingest-2", "ingest-3"] {
        workers.insert(name.into(), env.ingest(name, &kafka, &redis, None).await?);
    }
    let api = Api::login(&signal.base).await?;
    for i in 0..CAMERAS {
        api.create_camera(json!({
            "name": format!("cam {i}"), "url": camsim.url(&format!("r{i}")), "always_on": true
        }))
        .await?;
    }
    let settled = wait_for(
        "every camera live with RTP at Janus, on all three workers",
        Duration::from_secs(90),
        || async {
            let cams = all_live(&api, &redis, &gateways, CAMERAS, None).await?;
            let owners: std::collections::HashSet<String> = cams.iter().map(owner).collect();
            (owners.len() == 3).then_some(cams)
        },
    )
    .await?;
    // Joins are over once every worker has had what it will have; a moment for the last
    // cooperative round to end.
    let owners_at = |cams: &[serde_json::Value]| -> HashMap<String, String> {
        cams.iter()
            .map(|c| (c["id"].as_str().unwrap_or("").to_string(), owner(c)))
            .collect()
    };
    let mut before = owners_at(&settled);
    let still = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = owners_at(&cameras(&api).await?);
        if now == before {
            break;
        }
        anyhow::ensure!(Instant::now() < still, "the group did not settle");
        before = now;
    }
    let kafka_log = kafka.proc.as_ref().expect("Kafka runs").log.clone();
    let evicted_before = evictions(&kafka_log);
    let mut revoked_before = HashMap::new();
    for (name, w) in &workers {
        revoked_before.insert(name.clone(), revoked(w).await);
    }

    // Both cores busy, on top of 16 relayed cameras.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut load = Vec::new();
    for i in 0..cores {
        load.push(Proc::spawn(
            &format!("busy-{i}"),
            &env.dir,
            Command::new("sh").args(["-c", "while :; do :; done"]),
        )?);
    }
    let (started, load_for) = (Instant::now(), load_for());
    let mut moves = Vec::new();
    while started.elapsed() < load_for {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(cams) = cameras(&api).await {
            for (id, now) in owners_at(&cams) {
                let was = before.get(&id).cloned().unwrap_or_default();
                if !now.is_empty() && now != was {
                    moves.push(format!(
                        "{id}: {was} -> {now} after {:?}",
                        started.elapsed()
                    ));
                    before.insert(id, now);
                }
            }
        }
    }
    let evicted = evictions(&kafka_log) - evicted_before;
    let mut revoked_during = HashMap::new();
    for (name, w) in &workers {
        revoked_during.insert(name.clone(), revoked(w).await - revoked_before[name]);
    }
    println!(
        "under load for {load_for:?}: {evicted} evictions ({:.1} per hour), revoked partitions {revoked_during:?}, moves {moves:?}",
        evicted as f64 / load_for.as_secs_f64() * 3600.0
    );
    assert_eq!(evicted, 0, "the broker evicted a live worker under load");
    assert!(
        revoked_during.values().all(|r| *r == 0.0),
        "partitions revoked under load: {revoked_during:?}"
    );
    assert!(moves.is_empty(), "cameras moved without a kill: {moves:?}");

    // Still under load: SIGKILL the worker of the first camera.
    let cams = cameras(&api).await?;
    let victim = owner(&cams[0]);
    workers.get_mut(&victim).unwrap().proc.kill();
    let killed = Instant::now();
    wait_for(
        "the killed worker's cameras live elsewhere",
        Duration::from_secs(30),
        || all_live(&api, &redis, &gateways, CAMERAS, Some(&victim)),
    )
    .await?;
    let failover = killed.elapsed();
    println!(
        "failover under load: {} ms (bound {} ms)",
        failover.as_millis(),
        FAILOVER_BOUND.as_millis()
    );
    drop(load);
    assert!(failover <= FAILOVER_BOUND, "failover took {failover:?}");
    Ok(())
}
