//! The control plane across several signal instances on one Kafka and Redis, with two Janus
//! gateways: creations through both never share a mountpoint id or port; concurrent changes of
//! different fields all stay; a stale `If-Match` is refused; a mountpoint Janus cannot create
//! is reported with its camera (not taken as success); a DELETE racing the demand pass and a
//! gateway failover never brings a camera back; and in steady state — 200 cameras, 100,000
//! segment-index entries, the UI open, viewers coming and going, a recorder running — Redis
//! answers no SCAN and no KEYS.
//!
//! One stack serves every part, in order.

use cloudcam_tests::kafka::latest_by_key;
use cloudcam_tests::procs::{free_udp_range, now_ms};
use cloudcam_tests::stack::{Janus, Redis, TestEnv};
use cloudcam_tests::ws::WsClient;
use cloudcam_tests::{Api, Browser, wait_for};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

async fn redis_conn(redis: &Redis) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis.url.as_str())?
        .get_multiplexed_async_connection()
        .await?)
}

/// Mountpoint ids on either gateway.
async fn janus_ids(gateways: &[&Janus]) -> anyhow::Result<HashSet<u64>> {
    let mut ids = HashSet::new();
    for g in gateways {
        if let Ok(list) = g.mountpoint_ids().await {
            ids.extend(list);
        }
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_signal_instances_share_one_exact_control_plane() -> anyhow::Result<()> {
    let env = TestEnv::new("control_plane")?;
    let paths: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let mut streams: Vec<String> = paths
        .iter()
        .map(|p| format!("{p}:mode=replay,width=320,height=240,fps=10,gop=10"))
        .collect();
    streams.push("rec:mode=replay,width=320,height=240,fps=10,gop=10".into());
    let camsim = env
        .camsim(
            &streams.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )
        .await?;
    let kafka = env.kafka().await?;
    let redis = env.redis().await?;
    let garage = env.garage().await?;
    let janus_a = env.janus_named("janus-a").await?;
    let mut janus_b = env.janus_named("janus-b").await?;
    // Each camera claims two ports (video, live audio).
    let rtp = free_udp_range(500);
    let (rtp_min, rtp_max) = (rtp.to_string(), (rtp + 499).to_string());
    let extra = [
        ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MIN", rtp_min.as_str()),
        ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MAX", rtp_max.as_str()),
        ("CLOUDCAM_SIGNAL_JANUS__FAILOVER_AFTER_MS", "1000"),
        ("CLOUDCAM_SIGNAL_DEMAND_GRACE_MS", "1000"),
    ];
    let gateways = [&janus_a, &janus_b];
    let s1 = env
        .signal_named(
            "signal-1",
            Some(&kafka),
            Some(&redis),
            &gateways,
            Some(&garage),
            &extra,
        )
        .await?;
    let s2 = env
        .signal_named(
            "signal-2",
            Some(&kafka),
            Some(&redis),
            &gateways,
            Some(&garage),
            &extra,
        )
        .await?;
    let apis = [Api::login(&s1.base).await?, Api::login(&s2.base).await?];

    // 1. 200 cameras created at once through both instances: 200 ids, mountpoint ids, ports.
    let creates = (0..200).map(|i| {
        let api = apis[i % 2].clone();
        async move {
            api.create_camera(
                json!({"name": format!("cam {i}"), "url": format!("rtsp://127.0.0.1:9/c{i}")}),
            )
            .await
        }
    });
    let created = futures::future::try_join_all(creates).await?;
    let ids: Vec<String> = created
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
    let mut mp_ids = HashSet::new();
    let mut ports = HashSet::new();
    let mut con = redis_conn(&redis).await?;
    for id in &ids {
        let raw: String =
            redis::AsyncCommands::get(&mut con, format!("cloudcam:mountpoint:{id}")).await?;
        let mp: Value = serde_json::from_str(&raw)?;
        mp_ids.insert(mp["id"].as_u64().unwrap());
        ports.insert(mp["port"].as_u64().unwrap());
        ports.insert(mp["audio_port"].as_u64().unwrap());
    }
    assert_eq!(mp_ids.len(), 200, "mountpoint ids given twice");
    assert_eq!(ports.len(), 400, "RTP ports given twice");
    let on_janus = janus_ids(&gateways).await?;
    assert!(
        mp_ids.is_subset(&on_janus),
        "a mountpoint is missing on Janus"
    );
    for api in &apis {
        let (status, list) = api.call("GET", "/cameras", None).await?;
        assert_eq!(status, 200);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 200);
        assert!(
            list.iter()
                .all(|c| c["served_by"]["gateway_error"].is_null()),
            "a mountpoint failed"
        );
    }
    // Watchable: Janus offers a view of cameras made through either instance.
    for (i, id) in ids.iter().take(20).enumerate() {
        let api = &apis[(i + 1) % 2];
        let mut ws = WsClient::connect(&api.base, &api.token).await?;
        let view = ws.watch(id).await?;
        ws.stop(&view).await?;
        ws.close().await;
    }

    // 2. Concurrent changes of different fields through both instances lose nothing.
    let id = &ids[0];
    let path = format!("/cameras/{id}");
    for r in 0..50 {
        let (a, b, c) = tokio::join!(
            apis[0].call("PATCH", &path, Some(json!({"name": format!("round {r}")}))),
            apis[1].call("PATCH", &path, Some(json!({"retention_hours": r + 1}))),
            apis[r % 2].call("PATCH", &path, Some(json!({"always_on": r % 2 == 0}))),
        );
        for res in [a?, b?, c?] {
            assert_eq!(res.0, 200, "{}", res.1);
        }
        let cam = apis[r % 2].camera(id).await?;
        assert_eq!(cam["name"], format!("round {r}"), "round {r}: {cam}");
        assert_eq!(cam["retention_hours"], (r + 1) as f64, "round {r}: {cam}");
        assert_eq!(cam["always_on"], r % 2 == 0, "round {r}: {cam}");
    }
    apis[0]
        .call("PATCH", &path, Some(json!({"always_on": false})))
        .await?;

    // 3. A stale If-Match is refused with 412; the current one works.
    let (_, headers, _) = apis[0].request("GET", &path, None, &[]).await?;
    let etag = headers["etag"].to_str()?.to_string();
    let (status, body) = apis[1]
        .call_with(
            "PATCH",
            &path,
            Some(json!({"name": "exact"})),
            &[("If-Match", &etag)],
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    for method in ["PATCH", "DELETE"] {
        let patch = (method == "PATCH").then(|| json!({"name": "stale"}));
        let (status, body) = apis[0]
            .call_with(method, &path, patch, &[("If-Match", &etag)])
            .await?;
        assert_eq!(status, 412, "{method} with a stale If-Match: {body}");
        assert_eq!(body["error"]["code"], "precondition_failed");
    }
    assert_eq!(apis[0].camera(id).await?["name"], "exact");

    // 4. A mountpoint Janus cannot create (its RTP port is taken) is reported, not accepted.
    let taken = free_udp_range(2);
    let holders = [
        std::net::UdpSocket::bind(("127.0.0.1", taken))?,
        std::net::UdpSocket::bind(("127.0.0.1", taken + 1))?,
    ];
    let (t_min, t_max) = (taken.to_string(), (taken + 1).to_string());
    let narrow = [
        ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MIN", t_min.as_str()),
        ("CLOUDCAM_SIGNAL_JANUS__RTP_PORT_MAX", t_max.as_str()),
    ];
    let s3 = env
        .signal_named(
            "signal-3",
            Some(&kafka),
            Some(&redis),
            &gateways,
            Some(&garage),
            &narrow,
        )
        .await?;
    let api3 = Api::login(&s3.base).await?;
    let cam = api3
        .create_camera(json!({"name": "No port", "url": "rtsp://127.0.0.1:9/np"}))
        .await?;
    let np = cam["id"].as_str().unwrap().to_string();
    let error = cam["served_by"]["gateway_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        !error.is_empty(),
        "a failed create was taken as success: {cam}"
    );
    // Seen from the other instances too, and the gateway is not marked down for it.
    let other = apis[0].camera(&np).await?;
    assert!(other["served_by"]["gateway_error"].is_string(), "{other}");
    let (_, workers) = apis[0].call("GET", "/workers", None).await?;
    assert!(
        workers["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["up"] == true),
        "{workers}"
    );
    drop(holders);
    wait_for(
        "the mountpoint to be created once its port is free",
        Duration::from_secs(15),
        || async {
            let c = apis[1].camera(&np).await.ok()?;
            c["served_by"]["gateway_error"].is_null().then_some(())
        },
    )
    .await?;
    apis[0]
        .call("DELETE", &format!("/cameras/{np}"), None)
        .await?;

    // 5. A DELETE racing the demand pass and a gateway failover never brings a camera back.
    let _ingest = env
        .ingest("ingest-1", &kafka, &redis, Some(&garage))
        .await?;
    let mut racing = Vec::new();
    for p in &paths {
        let c = apis[0]
            .create_camera(json!({"name": p, "url": camsim.url(p)}))
            .await?;
        racing.push(c["id"].as_str().unwrap().to_string());
    }
    let mut viewers = WsClient::connect(&s2.base, &apis[1].token).await?;
    for id in &racing {
        viewers.watch(id).await?;
    }
    for id in &racing {
        apis[0]
            .wait_state(id, "live", Duration::from_secs(30))
            .await?;
    }
    janus_b.proc.kill();
    let deletes = racing.iter().enumerate().map(|(i, id)| {
        let api = apis[i % 2].clone();
        let id = id.clone();
        async move {
            // Spread over the failover (1 s after the gateway's first failed check).
            tokio::time::sleep(Duration::from_millis(300 * i as u64)).await;
            api.call("DELETE", &format!("/cameras/{id}"), None).await
        }
    });
    for res in futures::future::join_all(deletes).await {
        let (status, body) = res?;
        assert_eq!(status, 204, "{body}");
    }
    wait_for(
        "the deleted cameras to stop being pulled",
        Duration::from_secs(20),
        || async {
            for p in &paths {
                if camsim.playing(p).await > 0 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    // The views stay open, so the demand pass keeps seeing them; the failover keeps running.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for id in &racing {
            for api in &apis {
                let (status, _) = api.call("GET", &format!("/cameras/{id}"), None).await?;
                assert_eq!(status, 404, "camera {id} came back");
            }
            let mp: Option<String> =
                redis::AsyncCommands::get(&mut con, format!("cloudcam:mountpoint:{id}")).await?;
            assert!(mp.is_none(), "camera {id} has a mountpoint again");
        }
        for p in &paths {
            assert_eq!(camsim.playing(p).await, 0, "{p} is pulled again");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let latest = latest_by_key(&kafka.brokers, cloudcam_proto::CAMERAS_TOPIC)?;
    for id in &racing {
        assert_eq!(
            latest.get(id),
            Some(&None),
            "the last word on {id} is not a tombstone"
        );
    }
    viewers.close().await;

    // 6. Steady state never walks the keyspace: 100,000 index entries, the UI open, viewers
    // coming and going, a recorder recording.
    let _recorder = env
        .recorder("recorder-1", &kafka, &redis, &garage, 2)
        .await?;
    let rec = apis[0]
        .create_camera(json!({"name": "Recorded", "url": camsim.url("rec"), "recording": true}))
        .await?;
    let rec_id = rec["id"].as_str().unwrap().to_string();
    let day = 24 * 3600 * 1000;
    let t0 = now_ms() - 30 * day;
    for cam in ids.iter().take(4) {
        redis.fill_index(cam, t0, 25_000).await?;
        let n: u64 =
            redis::AsyncCommands::zcard(&mut con, format!("cloudcam:segments:{cam}")).await?;
        assert_eq!(n, 25_000);
    }
    apis[0]
        .wait_state(&rec_id, "live", Duration::from_secs(30))
        .await?;
    let browser = Browser::launch(&env.dir).await?;
    browser.sign_in(&s1.base).await?;
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut con)
        .await?;
    let watched = ids[1].clone();
    let until = Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    while Instant::now() < until {
        let api = &apis[rounds % 2];
        let mut ws = WsClient::connect(&api.base, &api.token).await?;
        let view = ws.watch(&watched).await?;
        let (status, _) = api
            .call(
                "GET",
                &format!("/cameras/{}/recordings?from={}&to={}", ids[0], t0, t0 + day),
                None,
            )
            .await?;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
        ws.stop(&view).await?;
        ws.close().await;
        rounds += 1;
    }
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut con)
        .await?;
    browser.close().await;
    assert!(rounds > 10, "only {rounds} viewer rounds");
    assert!(
        stats.contains("cmdstat_zadd"),
        "the minute saw no traffic: {stats}"
    );
    for forbidden in ["cmdstat_scan:", "cmdstat_keys:"] {
        assert!(
            !stats.contains(forbidden),
            "Redis answered {forbidden} {stats}"
        );
    }
    let (_, recs) = apis[0]
        .call(
            "GET",
            &format!("/cameras/{rec_id}/recordings?from=0&to={}", now_ms() + 1000),
            None,
        )
        .await?;
    assert!(
        !recs["segments"].as_array().unwrap().is_empty(),
        "the recorder indexed nothing: {recs}"
    );
    Ok(())
}
