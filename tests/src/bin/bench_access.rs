//! Benchmark: the cost of authorization, on the real stack (Apache Kafka, Redis, Janus, signal,
//! one ingest worker). A member owns N cameras (default 1,000) and shares 10 of them with a
//! viewer. Printed: `GET /cameras` p50/p99 for the administrator (all N), the member (all N, as
//! owner) and the viewer (10), and the ratio viewer / administrator (target: ≤ 1, the viewer's
//! listing is no slower); then sign-in latency (the argon2id cost) against `GET /me` with a
//! token in the same run.
//!
//!   CLOUDCAM_BIN_PROFILE=release cargo run --release -p cloudcam-tests --bin bench_access [-- N]

use cloudcam_tests::api::percentile;
use cloudcam_tests::stack::TestEnv;
use cloudcam_tests::{Api, wait_for};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password-1";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let env = TestEnv::new("bench_access")?;
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
            ],
        )
        .await?;
    let _ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    let admin = Api::login(&signal.base).await?;
    for (name, role) in [("member", "member"), ("viewer", "viewer")] {
        let (status, body) = admin
            .call(
                "POST",
                "/users",
                Some(json!({"name": name, "password": PASSWORD, "role": role})),
            )
            .await?;
        anyhow::ensure!(status == 201, "creating {name}: {body}");
    }
    let member = Api::login_as(&signal.base, "member", PASSWORD).await?;
    let viewer = Api::login_as(&signal.base, "viewer", PASSWORD).await?;

    let calls = (0..n).map(|i| {
        let member = member.clone();
        async move {
            member
                .create_camera(
                    json!({"name": format!("cam {i}"), "url": format!("rtsp://127.0.0.1:9/c{i}")}),
                )
                .await
        }
    });
    let cams: Vec<serde_json::Value> = futures::stream::iter(calls)
        .buffer_unordered(8)
        .try_collect()
        .await?;
    for cam in cams.iter().step_by(n / 10) {
        let id = cam["id"].as_str().unwrap();
        let (status, body) = member
            .call(
                "PUT",
                &format!("/cameras/{id}/shares/viewer"),
                Some(json!({"live": true})),
            )
            .await?;
        anyhow::ensure!(status == 200, "sharing: {body}");
    }
    wait_for(
        "the viewer to list 10 cameras",
        Duration::from_secs(60),
        || async {
            let (s, v) = viewer.call("GET", "/cameras", None).await.ok()?;
            (s == 200 && v.as_array()?.len() == 10).then_some(())
        },
    )
    .await?;

    let rounds = 100;
    let (admin_p50, admin_p99) = admin.latency("/cameras", rounds).await?;
    let (member_p50, member_p99) = member.latency("/cameras", rounds).await?;
    let (viewer_p50, viewer_p99) = viewer.latency("/cameras", rounds).await?;
    let (me_p50, _) = viewer.latency("/me", rounds).await?;
    let mut sign_in = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let res = admin
            .http
            .post(format!("{}/api/v1/login", signal.base))
            .json(&json!({"username": "member", "password": PASSWORD}))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 200, "sign-in: {}", res.status());
        let _ = res.bytes().await?;
        sign_in.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    sign_in.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let sign_in_p50 = percentile(&sign_in, 0.5);

    println!("bench_access: {n} cameras owned by a member, 10 shared with a viewer");
    println!(
        "  GET /cameras  administrator (all {n}): p50 {admin_p50:7.2} ms  p99 {admin_p99:7.2} ms"
    );
    println!(
        "  GET /cameras  member (owns all {n})  : p50 {member_p50:7.2} ms  p99 {member_p99:7.2} ms"
    );
    println!(
        "  GET /cameras  viewer (10 shared)     : p50 {viewer_p50:7.2} ms  p99 {viewer_p99:7.2} ms"
    );
    println!(
        "  ratio viewer / administrator p50: {:.3} (target <= 1)",
        viewer_p50 / admin_p50
    );
    println!(
        "  sign-in p50 {sign_in_p50:.1} ms (argon2id) vs GET /me p50 {me_p50:.2} ms: ratio {:.0}",
        sign_in_p50 / me_p50
    );
    Ok(())
}
