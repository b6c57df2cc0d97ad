//! Benchmark: the control plane at fleet size, on the real stack (Apache Kafka, Redis, Janus,
//! signal, two ingest workers). Three points in one run, each with the same measurements:
//!
//! 1. 10 cameras, empty segment index (the baseline),
//! 2. 1,000 cameras (on demand, none pulled), one day of 10 s segments indexed for one of them,
//! 3. the same, plus a month of 10 s segments indexed for 4 more (~1 M entries).
//!
//! The day's recordings query returns the same day (8,640 segments) at points 2 and 3: from a
//! one-day index, then from a month-long one.
//!
//! Printed: `GET /cameras` p50/p99, a day's `GET …/recordings` p50/p99, camera creation rate,
//! and idle CPU (% of one core) of signal, each ingest worker and Redis; then the ratios of
//! point 3 to point 2 (what the index costs) and of point 2 to point 1.
//!
//!   CLOUDCAM_BIN_PROFILE=release cargo run --release -p cloudcam-tests --bin bench_control_plane
//!     [-- N_CAMERAS SEGMENTS_PER_CAMERA IDLE_SECONDS]

use cloudcam_tests::cpu::cpu_percent;
use cloudcam_tests::procs::now_ms;
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, wait_for};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use std::time::{Duration, Instant};

struct Point {
    label: String,
    list_p50: f64,
    list_p99: f64,
    day_p50: f64,
    day_p99: f64,
    signal_cpu: f64,
    ingest_cpu: f64,
    redis_cpu: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let per_camera: i64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(259_200);
    let idle = Duration::from_secs(args.next().map(|a| a.parse()).transpose()?.unwrap_or(20));
    let env = TestEnv::new("bench_control_plane")?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let janus = env.janus().await?;
    let signal = env
        .signal_with(
            Some(&kafka),
            Some(&redis),
            &[&janus],
            None,
            &[
                ("RUST_LOG", "warn"),
                ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MIN", "20000"),
                ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MAX", "21999"),
                ("CLOUDCAM_SIGNAL_JANUS__RECONCILE_INTERVAL_MS", "3000"),
            ],
        )
        .await?;
    let i1 = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let i2 = env.ingest("ingest-2", &kafka, &redis, None).await?;
    let api = Api::login(&signal.base).await?;
    let redis_pid = redis.pid()?;
    let signal_pid = signal.proc.as_ref().map(|p| p.pid()).unwrap_or(0);
    let (i1_pid, i2_pid) = (i1.proc.pid(), i2.proc.pid());

    let create = |from: usize, to: usize| {
        let api = api.clone();
        async move {
            let started = Instant::now();
            let calls = (from..to).map(|i| {
                let api = api.clone();
                async move {
                    api.create_camera(
                        json!({"name": format!("cam {i}"), "url": format!("rtsp://127.0.0.1:9/c{i}")}),
                    )
                    .await
                }
            });
            // Eight clients creating at once.
            let done: Vec<serde_json::Value> = futures::stream::iter(calls)
                .buffer_unordered(8)
                .try_collect()
                .await?;
            let ids: Vec<String> = done
                .into_iter()
                .map(|c| c["id"].as_str().unwrap().to_string())
                .collect();
            let rate = (to - from) as f64 / started.elapsed().as_secs_f64();
            Ok::<_, anyhow::Error>((ids, rate))
        }
    };

    let measure = |label: String, ids: Vec<String>, day_camera: String| {
        let api = api.clone();
        async move {
            // Let the passes settle before measuring idle.
            wait_for(
                "signal to list every camera",
                Duration::from_secs(60),
                || async {
                    let (s, v) = api.call("GET", "/cameras", None).await.ok()?;
                    (s == 200 && v.as_array()?.len() == ids.len()).then_some(())
                },
            )
            .await?;
            let (list_p50, list_p99) = api.latency("/cameras", 100).await?;
            let now = now_ms();
            let day = format!(
                "/cameras/{}/recordings?from={}&to={}",
                day_camera,
                now - 15 * 86_400_000,
                now - 14 * 86_400_000
            );
            let (day_p50, day_p99) = api.latency(&day, 100).await?;
            let (s, i_a, i_b, r) = tokio::join!(
                cpu_percent(signal_pid, idle),
                cpu_percent(i1_pid, idle),
                cpu_percent(i2_pid, idle),
                cpu_percent(redis_pid, idle),
            );
            Ok::<_, anyhow::Error>(Point {
                label,
                list_p50,
                list_p99,
                day_p50,
                day_p99,
                signal_cpu: s?,
                ingest_cpu: i_a?.max(i_b?),
                redis_cpu: r?,
            })
        }
    };

    let (mut ids, rate_small) = create(0, 10).await?;
    let p1 = measure(
        format!("{} cameras, empty index", ids.len()),
        ids.clone(),
        ids[0].clone(),
    )
    .await?;
    let (more, rate) = create(10, n).await?;
    ids.extend(more);
    // The day the recordings query asks for, indexed alone for one camera (8,640 segments):
    // the same answer as point 3's, from a small index.
    let day_start = now_ms() - 15 * 86_400_000;
    redis.fill_index(&ids[4], day_start, 8_640).await?;
    let p2 = measure(
        format!("{n} cameras, one day indexed"),
        ids.clone(),
        ids[4].clone(),
    )
    .await?;

    // A month of 10 s segments for 4 cameras, written straight into their sorted sets.
    let t0 = now_ms() - per_camera * 10_000;
    for cam in ids.iter().take(4) {
        redis.fill_index(cam, t0, per_camera).await?;
    }
    let p3 = measure(
        format!("{n} cameras, {} index entries", 4 * per_camera + 8_640),
        ids.clone(),
        ids[0].clone(),
    )
    .await?;

    println!(
        "control plane (release build: {})",
        std::env::var("CLOUDCAM_BIN_PROFILE").unwrap_or("debug".into())
    );
    println!(
        "  camera creation: {rate_small:.0}/s (first 10), {rate:.0}/s (up to {n}), 8 concurrent clients"
    );
    for p in [&p1, &p2, &p3] {
        println!(
            "  {:<40} GET /cameras p50 {:6.1} ms p99 {:6.1} ms | a day's recordings p50 {:5.1} ms p99 {:5.1} ms | idle CPU signal {:4.1} % ingest {:4.1} % redis {:4.1} %",
            p.label,
            p.list_p50,
            p.list_p99,
            p.day_p50,
            p.day_p99,
            p.signal_cpu,
            p.ingest_cpu,
            p.redis_cpu
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "  index cost (point 3 / point 2): GET /cameras p50 x{:.2} p99 x{:.2}, day p50 x{:.2}, idle CPU signal x{:.2} redis x{:.2}",
        ratio(p3.list_p50, p2.list_p50),
        ratio(p3.list_p99, p2.list_p99),
        ratio(p3.day_p50, p2.day_p50),
        ratio(p3.signal_cpu, p2.signal_cpu),
        ratio(p3.redis_cpu, p2.redis_cpu)
    );
    println!(
        "  fleet cost (point 2 / point 1): GET /cameras p50 x{:.2}, idle CPU signal x{:.2} ingest x{:.2}",
        ratio(p2.list_p50, p1.list_p50),
        ratio(p2.signal_cpu, p1.signal_cpu),
        ratio(p2.ingest_cpu, p1.ingest_cpu)
    );
    Ok(())
}
