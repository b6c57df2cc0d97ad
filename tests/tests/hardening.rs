//! The platform as an attacker meets it, driven from outside (HTTP, WebSocket, RTSP) on real
//! components: one check per defence. Throttled sign-in; no known password works; stored
//! camera credentials never follow a URL to another host; credential parameters in a camera
//! URL stay secret; no tokens in query strings, and signed URLs bound to one path and a few
//! seconds here; security headers and the WebSocket `Origin` check; bounded views and offers;
//! bounded metric labels; checked clip ranges; metrics and readiness only on the internal
//! listener; errors without internal addresses; clip scratch left by a dead process swept.

use cloudcam_tests::stack::{
    ADMIN_PASSWORD, ADMIN_USER, REDIS_PASSWORD, TestEnv, binary, workspace,
};
use cloudcam_tests::{Api, WsClient, wait_for};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAMERA_PASSWORD: &str = "Cam-Pass-4471";
const QUERY_SECRET: &str = "Query-Secret-9923";

/// An RTSP server that answers every request 401 with a Basic challenge (the attacker's
/// "camera") and keeps everything it was sent.
async fn fake_rtsp() -> anyhow::Result<(u16, Arc<Mutex<String>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Mutex::new(String::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = conn.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let request: Vec<u8> = buf.drain(..end + 4).collect();
                        let request = String::from_utf8_lossy(&request).into_owned();
                        keep.lock().unwrap().push_str(&request);
                        let cseq = request
                            .lines()
                            .find_map(|l| l.strip_prefix("CSeq:"))
                            .map_or("1", str::trim)
                            .to_string();
                        let reply = format!(
                            "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"
                        );
                        if conn.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Ok((port, seen))
}

async fn status_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Runs `cloudcam-signal` with `password` and returns whether it refused to start, and its
/// output.
async fn signal_refuses(password: &str) -> anyhow::Result<(bool, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(binary("cloudcam-signal")?)
            .arg("--config")
            .arg(workspace().join("config/signal.toml"))
            .env("CLOUDCAM_SIGNAL_AUTH__ADMIN_PASSWORD", password)
            .env(
                "CLOUDCAM_SIGNAL_LISTEN",
                format!("127.0.0.1:{}", cloudcam_tests::free_port()),
            )
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    Ok((
        !out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_defence_holds_from_outside() -> anyhow::Result<()> {
    let env = TestEnv::new("hardening")?;
    // No known password works: the reference configuration's example and short ones are
    // refused at start.
    for bad in ["change-me-please", "short", ""] {
        let (refused, out) = signal_refuses(bad).await?;
        assert!(refused, "signal started with admin password {bad:?}: {out}");
        assert!(out.contains("admin_password"), "{out}");
    }

    // Clip scratch left by a process that died is swept when signal starts.
    let tmp = env.dir.join("tmp");
    let stale = tmp.join("cloudcam-clips/999999999-left-behind");
    std::fs::create_dir_all(&stale)?;
    std::fs::write(stale.join("seg000000.mp4"), b"partial")?;

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
                ("CLOUDCAM_SIGNAL_AUTH__SIGNED_URL_TTL_S", "3"),
                ("CLOUDCAM_SIGNAL_MAX_VIEWS_PER_SOCKET", "2"),
                ("CLOUDCAM_SIGNAL_MAX_VIEWS_PER_USER", "3"),
                ("CLOUDCAM_SIGNAL_OFFER_TIMEOUT_MS", "4000"),
            ],
        )
        .await?;
    let ingest = env.ingest("ingest-1", &kafka, &redis, None).await?;
    assert!(
        !stale.exists(),
        "the dead process's clip scratch is still there"
    );

    // The internal plane authenticates: Janus's API wants its api_secret, Redis its password
    // (the platform above runs with both).
    let reply: Value = reqwest::Client::new()
        .post(&janus.url)
        .json(&json!({"janus": "create", "transaction": "t"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        reply["janus"], "error",
        "Janus created a session without the secret: {reply}"
    );
    assert_eq!(reply["error"]["code"], 403, "{reply}");
    let open = redis.url.replace(&format!(":{REDIS_PASSWORD}@"), "");
    let mut con = redis::Client::open(open.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let refused: redis::RedisResult<Option<String>> = redis::cmd("GET")
        .arg("cloudcam:users")
        .query_async(&mut con)
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("NOAUTH")),
        "Redis answered without its password: {refused:?}"
    );
    let base = &signal.base;
    let http = reqwest::Client::new();
    let admin = Api::login(base).await?;
    let camsim = env
        .camsim(&["a:width=320,height=240,fps=15,gop=15"], None)
        .await?;

    // Stored credentials never follow a URL to another host.
    let (rogue_port, rogue_seen) = fake_rtsp().await?;
    let cam = admin
        .create_camera(json!({
            "name": "Door", "url": camsim.url("a"), "username": "viewer",
            "password": CAMERA_PASSWORD, "always_on": true
        }))
        .await?;
    let door = cam["id"].as_str().unwrap().to_string();
    let rogue_url = format!("rtsp://127.0.0.1:{rogue_port}/stream");
    let (status, moved) = admin
        .call(
            "PATCH",
            &format!("/cameras/{door}"),
            Some(json!({"url": rogue_url})),
        )
        .await?;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["has_password"], false, "{moved}");
    assert_eq!(moved["username"], Value::Null, "{moved}");
    admin
        .wait_state(&door, "auth_failed", Duration::from_secs(30))
        .await?;
    let sent = rogue_seen.lock().unwrap().clone();
    assert!(
        sent.contains("rtsp://"),
        "ingest never reached the new host"
    );
    assert!(
        !sent.to_ascii_lowercase().contains("authorization"),
        "credentials were sent to the new host: {sent}"
    );

    // Credential parameters of a URL's query are secrets: gone from what the API returns,
    // added back only where ingest pulls.
    let (qs_port, qs_seen) = fake_rtsp().await?;
    let qs = admin
        .create_camera(json!({
            "name": "Vendor",
            "url": format!("rtsp://127.0.0.1:{qs_port}/live?channel=1&user=ops&pwd={QUERY_SECRET}"),
            "always_on": true
        }))
        .await?;
    let qs_id = qs["id"].as_str().unwrap().to_string();
    assert_eq!(
        qs["url"],
        format!("rtsp://127.0.0.1:{qs_port}/live?channel=1")
    );
    assert_eq!(qs["has_password"], true);
    wait_for(
        "ingest to pull with the secret parameters",
        Duration::from_secs(30),
        || async { qs_seen.lock().unwrap().contains(QUERY_SECRET).then_some(()) },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; the camera was sent: {}", qs_seen.lock().unwrap()))?;
    let failed = admin
        .wait_state(&qs_id, "auth_failed", Duration::from_secs(30))
        .await?;

    // No tokens in query strings; signed URLs work for one path, only to read, and expire.
    let token = admin.token.clone();
    let got = status_of(
        http.get(format!("{base}/api/v1/cameras?token={token}"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(got.0, 401, "a query-string token was accepted: {}", got.1);
    let got = status_of(
        http.delete(format!("{base}/api/v1/cameras/{door}?token={token}"))
            .send()
            .await?,
    )
    .await;
    assert_eq!(got.0, 401, "{}", got.1);
    let (status, signed) = admin
        .call(
            "POST",
            "/signed-urls",
            Some(json!({"path": format!("/api/v1/cameras/{door}/snapshot")})),
        )
        .await?;
    assert_eq!(status, 200, "{signed}");
    let url = signed["url"].as_str().unwrap().to_string();
    let signature = url.rsplit("sig=").next().unwrap().to_string();
    assert!(!url.contains(&token), "a signed URL carries the token");
    // Accepted (no snapshot has been taken: 404, not 401).
    let got = status_of(http.get(format!("{base}{url}")).send().await?).await;
    assert_eq!(got.0, 404, "{}", got.1);
    assert_eq!(got.1["error"]["code"], "not_found", "{}", got.1);
    // Not for another camera, not to change anything.
    let other = url.replace(&door, &qs_id);
    let got = status_of(http.get(format!("{base}{other}")).send().await?).await;
    assert_eq!(got.0, 401, "a signature worked for another path: {}", got.1);
    let got = status_of(http.post(format!("{base}{url}")).send().await?).await;
    assert_eq!(got.0, 401, "a signature worked for a POST: {}", got.1);
    let (status, body) = admin
        .call(
            "POST",
            "/signed-urls",
            Some(json!({"path": format!("/api/v1/cameras/{door}")})),
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("not_signable"))
    );
    // The WebSocket: signed URL yes, query token no.
    let (_, ws_signed) = admin
        .call("POST", "/signed-urls", Some(json!({"path": "/api/v1/ws"})))
        .await?;
    let mut ws = WsClient::connect_url(base, ws_signed["url"].as_str().unwrap()).await?;
    ws.next_where(Duration::from_secs(5), |m| m["type"] == "hello")
        .await?;
    ws.close().await;
    assert!(
        WsClient::connect_url(base, &format!("/api/v1/ws?token={token}"))
            .await
            .is_err(),
        "a WebSocket opened with a query-string token"
    );
    // Expired after its few seconds.
    wait_for(
        "the signed URL to expire",
        Duration::from_secs(10),
        || async {
            let res = http.get(format!("{base}{url}")).send().await.ok()?;
            (res.status() == 401).then_some(())
        },
    )
    .await?;

    // Security headers on the UI; no inline script for the CSP to allow.
    let res = http.get(format!("{base}/")).send().await?;
    let h = res.headers().clone();
    let csp = h["content-security-policy"].to_str()?.to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    let page = res.text().await?;
    assert!(!page.contains("<script>"), "inline script in the page");

    // The WebSocket refuses another site's pages.
    let ws_url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        ws_url.as_str(),
    )?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    req.headers_mut()
        .insert("origin", "http://evil.example".parse()?);
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403)
        }
        other => panic!(
            "a cross-site WebSocket was not refused: {:?}",
            other.map(|_| ())
        ),
    }

    // Bounded views: two per socket, three per user; an unanswered offer expires.
    let (status, _) = admin
        .call(
            "PATCH",
            &format!("/cameras/{door}"),
            Some(json!({"url": camsim.url("a")})),
        )
        .await?;
    assert_eq!(status, 200);
    admin
        .wait_state(&door, "live", Duration::from_secs(30))
        .await?;
    let mut first = WsClient::connect(base, &token).await?;
    first.watch(&door).await?;
    first.watch(&door).await?;
    let refused = first.watch(&door).await.unwrap_err().to_string();
    assert!(refused.contains("too_many_views"), "{refused}");
    let mut second = WsClient::connect(base, &token).await?;
    second.watch(&door).await?;
    let refused = second.watch(&door).await.unwrap_err().to_string();
    assert!(refused.contains("too_many_views"), "{refused}");
    let expired = first
        .next_where(Duration::from_secs(15), |m| {
            m["type"] == "view_state" && m["state"] == "ended"
        })
        .await?;
    assert!(
        expired["reason"]
            .as_str()
            .unwrap_or("")
            .contains("not answered"),
        "{expired}"
    );

    // Made-up methods, unauthenticated, add no metric series; metrics and readiness are not
    // on the public listener.
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("XYZ{i}").as_bytes())?;
        http.request(method, format!("{base}/api/v1/cameras"))
            .send()
            .await?;
    }
    let metrics = http
        .get(format!("{}/metrics", signal.internal))
        .send()
        .await?
        .text()
        .await?;
    assert!(!metrics.contains("XYZ"), "made-up methods became series");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    for path in ["/metrics", "/readyz"] {
        let res = http.get(format!("{base}{path}")).send().await?;
        assert_eq!(res.status(), 404, "{path} on the public listener");
    }
    let res = http
        .get(format!("{}/readyz", signal.internal))
        .send()
        .await?;
    assert_eq!(res.status(), 200);

    // Clip ranges: checked arithmetic and a maximum length, a clear error either way.
    for (range, mentions) in [
        (format!("from={}&to={}", i64::MIN, i64::MAX), "from"),
        (format!("from=0&to={}", i64::MAX), "one hour"),
    ] {
        let (status, body) = admin
            .call("GET", &format!("/cameras/{door}/clip?{range}"), None)
            .await?;
        assert_eq!(status, 400, "{range}: {body}");
        assert_eq!(body["error"]["code"], "invalid_range");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(mentions),
            "{body}"
        );
    }

    // Failures of internal services reach clients without their addresses.
    drop(janus);
    let mut ws = WsClient::connect(base, &token).await?;
    let mut errors = Vec::new();
    for _ in 0..3 {
        if let Err(e) = ws.watch(&door).await {
            errors.push(e.to_string());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!errors.is_empty(), "views opened without a gateway");
    for e in &errors {
        assert!(
            !e.contains("127.0.0.1"),
            "an internal address reached a client: {e}"
        );
    }

    // Sign-in is throttled per user name and per client address, with a growing delay;
    // failures are logged without what an attacker typed verbatim. Three client addresses
    // (all loopback) keep the two apart.
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(Some(std::net::IpAddr::from([127, 0, 0, last])))
            .build()
    };
    let (a, b, c) = (from(1)?, from(2)?, from(3)?);
    let login = |client: &reqwest::Client, user: &str, password: &str| {
        client
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
    };
    let forged = format!("intruder\nFORGED LOG LINE{}", "x".repeat(500));
    assert_eq!(login(&a, &forged, "nope").await?.status(), 401);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            login(&b, ADMIN_USER, "wrong-password")
                .await?
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "{statuses:?}");
    // Each further failure (once the delay has passed) doubles the delay: 1, 2, 4 s.
    for delay in [2, 4] {
        wait_for("the delay to pass", Duration::from_secs(20), || async {
            let res = login(&b, ADMIN_USER, "wrong-password").await.ok()?;
            (res.status() == 401).then_some(())
        })
        .await?;
        let res = login(&b, ADMIN_USER, "wrong-password").await?;
        assert_eq!(res.status(), 429);
        let retry: u64 = res.headers()["retry-after"].to_str()?.parse()?;
        assert!(
            (delay - 1..=delay).contains(&retry),
            "Retry-After {retry}, not {delay}"
        );
    }
    // Per user name: the right password, from another address, waits too.
    let (status, body) = status_of(login(&c, ADMIN_USER, ADMIN_PASSWORD).await?).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_attempts"))
    );
    // Per address: another user name from the throttled address waits too.
    assert_eq!(login(&b, "someone-else", "x").await?.status(), 429);
    // An untouched address and user are not affected.
    assert_eq!(login(&a, "someone-else", "x").await?.status(), 401);
    wait_for("the delay to pass", Duration::from_secs(20), || async {
        let res = login(&c, ADMIN_USER, ADMIN_PASSWORD).await.ok()?;
        (res.status() == 200).then_some(())
    })
    .await?;
    let log = signal.log_text();
    assert!(log.contains("failed sign-in"), "failures are not logged");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED LOG LINE")),
        "a user name forged a log line"
    );
    assert!(
        !log.contains(&"x".repeat(100)),
        "unbounded input in the log"
    );

    // The secrets appear nowhere: responses, statuses, logs, Kafka.
    let everything = [
        signal.log_text(),
        ingest.proc.log_text(),
        failed.to_string(),
        admin.call("GET", "/cameras", None).await?.1.to_string(),
        metrics,
    ]
    .concat();
    for secret in [CAMERA_PASSWORD, QUERY_SECRET, signature.as_str()] {
        assert!(!everything.contains(secret), "{secret} leaked");
    }
    for m in cloudcam_tests::kafka::read_all(
        &kafka.brokers,
        &[cloudcam_proto::CAMERAS_TOPIC, cloudcam_proto::EVENTS_TOPIC],
    )? {
        let m = String::from_utf8_lossy(&m);
        assert!(!m.contains(QUERY_SECRET) && !m.contains(CAMERA_PASSWORD));
    }
    Ok(())
}
