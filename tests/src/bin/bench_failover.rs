//! Benchmark: ingest failover and rebalancing on the real stack (Apache Kafka, Redis, Janus,
//! signal, camsim replay cameras). Three workers share N cameras; the worker with the most
//! cameras is SIGKILLed ROUNDS times (and restarted each time). Prints the failover time (kill →
//! every one of its cameras live on another worker with RTP arriving at Janus), median and max,
//! the time for a restarted worker to get cameras back, and the time for a fourth worker to
//! take its share; each as a ratio to the consumer-group session timeout, the baseline that
//! bounds failure detection.
//!
//!   cargo run -p cloudcam-tests --bin bench_failover [-- ROUNDS N_CAMERAS]

use cloudcam_tests::fleet::{all_live, cameras, owner};
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, wait_for};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(12);
    // The consumer-group session timeout the services use by default (`[kafka]` of
    // config/ingest.toml), or the one this run gives them.
    let session_timeout = Duration::from_millis(
        std::env::var("CLOUDCAM_INGEST_KAFKA__SESSION_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
    );
    let env = TestEnv::new("bench_failover")?;
    let streams: Vec<String> = (0..n)
        .map(|i| format!("s{i}:mode=replay,width=320,height=240,fps=15,gop=15"))
        .collect();
    let refs: Vec<&str> = streams.iter().map(String::as_str).collect();
    let camsim = env.camsim(&refs, None).await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let gateways = HashMap::from([("janus-1", &janus)]);
    let signal = env.signal(Some(&kafka), Some(&redis), &janus, None).await?;
    let mut workers = HashMap::new();
    for name in ["ingest-1", "ingest-2", "ingest-3"] {
        workers.insert(
            name.to_string(),
            env.ingest(name, &kafka, &redis, None).await?,
        );
    }
    let api = Api::login(&signal.base).await?;
    for i in 0..n {
        api.create_camera(json!({"name": format!("cam {i}"), "url": camsim.url(&format!("s{i}")), "always_on": true}))
            .await?;
    }
    let spread = |k: usize| {
        let (api, redis, gateways) = (&api, &redis, &gateways);
        async move {
            let cams = all_live(api, redis, gateways, n, None).await?;
            let owners: std::collections::HashSet<String> = cams.iter().map(owner).collect();
            (owners.len() >= k).then_some(cams)
        }
    };
    wait_for(
        "every camera live on three workers",
        Duration::from_secs(90),
        || spread(3),
    )
    .await?;

    let (mut failovers, mut rejoins) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let cams = cameras(&api).await?;
        let mut count: HashMap<String, usize> = HashMap::new();
        for c in &cams {
            *count.entry(owner(c)).or_default() += 1;
        }
        let (victim, moved) = count.into_iter().max_by_key(|(_, k)| *k).unwrap();
        workers.get_mut(&victim).unwrap().proc.kill();
        let t = Instant::now();
        wait_for("failover", Duration::from_secs(60), || {
            all_live(&api, &redis, &gateways, n, Some(&victim))
        })
        .await?;
        failovers.push(t.elapsed());
        workers.insert(
            victim.clone(),
            env.ingest(&victim, &kafka, &redis, None).await?,
        );
        let t = Instant::now();
        wait_for("rejoin", Duration::from_secs(60), || spread(3)).await?;
        rejoins.push(t.elapsed());
        println!(
            "round {round}: killed {victim} ({moved} cameras): failover {} ms, rejoin {} ms",
            failovers[round].as_millis(),
            rejoins[round].as_millis()
        );
    }
    workers.insert(
        "ingest-4".into(),
        env.ingest("ingest-4", &kafka, &redis, None).await?,
    );
    let t = Instant::now();
    wait_for(
        "a fourth worker to take cameras",
        Duration::from_secs(60),
        || spread(4),
    )
    .await?;
    let join = t.elapsed();

    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        (v[v.len() / 2], v[v.len() - 1])
    };
    let (f50, fmax) = stats(&mut failovers);
    let (r50, rmax) = stats(&mut rejoins);
    let ratio = |d: Duration| d.as_secs_f64() / session_timeout.as_secs_f64();
    println!(
        "ingest failover after SIGKILL ({rounds} rounds, {n} cameras, 3 workers): median {} ms, max {} ms; ratio to the {} ms session timeout: {:.2} / {:.2}",
        f50.as_millis(),
        fmax.as_millis(),
        session_timeout.as_millis(),
        ratio(f50),
        ratio(fmax)
    );
    println!(
        "restarted worker gets cameras back: median {} ms, max {} ms",
        r50.as_millis(),
        rmax.as_millis()
    );
    println!(
        "a fourth worker joins and takes its share: {} ms (ratio to the session timeout {:.2})",
        join.as_millis(),
        ratio(join)
    );
    Ok(())
}
