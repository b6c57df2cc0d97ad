//! Every service's `/metrics` passes `promtool check metrics`; key series move as they should
//! (frames while live, reconnects after a camera restart, the spool while S3 is away); a real
//! Prometheus scrapes all three services, every target is up, and every PromQL expression in
//! every dashboard under `grafana/` returns data; `/readyz` names a dependency that is down.

use cloudcam_tests::stack::{TestEnv, metric, workspace};
use cloudcam_tests::{Api, Browser, wait_for};
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `promtool check metrics` on the page at `url`.
async fn promtool_check(url: &str) -> anyhow::Result<()> {
    let text = reqwest::get(url).await?.text().await?;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics {url}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every `expr` in a Grafana dashboard, with the panel title it belongs to.
fn expressions(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(Value::String(e)) = m.get("expr") {
                out.push((title.to_string(), e.clone()));
            }
            for child in m.values() {
                expressions(child, title, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| expressions(c, title, out)),
        _ => {}
    }
}

async fn readyz(url: &str) -> anyhow::Result<(u16, Value)> {
    let res = reqwest::get(url).await?;
    Ok((res.status().as_u16(), res.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_every_dashboard_query_returns_data() -> anyhow::Result<()> {
    let env = TestEnv::new("observability")?;
    let mut garage = env.garage().await?;
    let mut camsim = env
        .camsim(&["yard:width=640,height=360,fps=25,gop=25"], None)
        .await?;
    let p = env.platform_with(Some(&garage)).await?;
    let recorder = env
        .recorder("recorder-1", &p.kafka, &p.redis, &garage, 2)
        .await?;
    let signal_metrics = format!("{}/metrics", p.signal.internal);
    let prometheus = env
        .prometheus(&[
            ("signal", &signal_metrics),
            ("ingest", &p.ingest.metrics),
            ("recorder", &recorder.metrics),
        ])
        .await?;

    let api = Api::login(&p.signal.base).await?;
    let cam = api
        .create_camera(json!({"name": "Yard", "url": camsim.url("yard"), "recording": true}))
        .await?;
    let id = cam["id"].as_str().unwrap().to_string();
    api.wait_state(&id, "live", Duration::from_secs(20)).await?;

    // Frames rise while the camera is live.
    let frames = format!("cloudcam_ingest_camera_frames_total{{camera=\"{id}\"}}");
    let first = wait_for("frames counted", Duration::from_secs(15), || async {
        metric(&p.ingest.metrics, &frames)
            .await
            .filter(|f| *f > 0.0)
    })
    .await?;
    wait_for("frames to rise", Duration::from_secs(15), || async {
        metric(&p.ingest.metrics, &frames)
            .await
            .filter(|f| *f > first)
    })
    .await?;

    // Reconnects increment after camsim restarts.
    let reconnects = format!("cloudcam_ingest_camera_reconnects_total{{camera=\"{id}\"}}");
    let before = metric(&p.ingest.metrics, &reconnects).await.unwrap_or(0.0);
    camsim.kill();
    camsim.start().await?;
    wait_for(
        "a reconnect to be counted",
        Duration::from_secs(30),
        || async {
            metric(&p.ingest.metrics, &reconnects)
                .await
                .filter(|r| *r > before)
        },
    )
    .await?;
    api.wait_state(&id, "live", Duration::from_secs(30)).await?;

    // The spool grows while S3 is stopped, /readyz says which dependency is down, and both
    // recover when it is back.
    let spooled = "cloudcam_recorder_spool{unit=\"segments\"}";
    wait_for("a segment stored", Duration::from_secs(30), || async {
        let v = api
            .call(
                "GET",
                &format!("/cameras/{id}/recordings?from=0&to={}", i64::MAX / 2),
                None,
            )
            .await
            .ok()?
            .1;
        (!v["segments"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    let recorder_ready = recorder.metrics.replace("/metrics", "/readyz");
    let (status, _) = readyz(&recorder_ready).await?;
    assert_eq!(
        status, 200,
        "the recorder is ready with every dependency up"
    );
    garage.kill();
    wait_for("the spool to grow", Duration::from_secs(30), || async {
        metric(&recorder.metrics, spooled)
            .await
            .filter(|n| *n >= 2.0)
    })
    .await?;
    let (status, body) = readyz(&recorder_ready).await?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["checks"]["media"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{body}"
    );
    assert_eq!(body["checks"]["kafka"], "ok", "{body}");
    assert_eq!(body["checks"]["redis"], "ok", "{body}");
    garage.start().await?;
    wait_for("the spool to drain", Duration::from_secs(60), || async {
        metric(&recorder.metrics, spooled)
            .await
            .filter(|n| *n == 0.0)
    })
    .await?;
    wait_for(
        "the recorder to be ready",
        Duration::from_secs(20),
        || async { (readyz(&recorder_ready).await.ok()?.0 == 200).then_some(()) },
    )
    .await?;
    for url in [
        &p.signal.internal.clone(),
        &p.ingest.metrics.replace("/metrics", ""),
    ] {
        let (status, body) = readyz(&format!("{url}/readyz")).await?;
        assert_eq!(status, 200, "{url}: {body}");
    }

    // A viewer, so the viewer and WebSocket series exist.
    let browser = Browser::launch(&env.dir).await?;
    browser
        .watch_via_api(&p.signal.base, &api.token, &id)
        .await?;
    wait_for(
        "the viewer to be counted",
        Duration::from_secs(20),
        || async {
            let v = format!("cloudcam_signal_viewers{{camera=\"{id}\"}}");
            metric(&signal_metrics, &v).await.filter(|n| *n == 1.0)
        },
    )
    .await?;

    for url in [&signal_metrics, &p.ingest.metrics, &recorder.metrics] {
        promtool_check(url).await?;
    }

    // Prometheus scrapes every service.
    wait_for("every target up", Duration::from_secs(30), || async {
        let targets = prometheus.targets().await.ok()?;
        (targets.len() == 3 && targets.iter().all(|(_, h)| h == "up")).then_some(())
    })
    .await?;
    // The camera dashboard's variable lists the camera.
    let values: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/label/camera/values", prometheus.url))
        .query(&[("match[]", "cloudcam_ingest_camera_state")])
        .send()
        .await?
        .json()
        .await?;
    assert!(
        values["data"].as_array().unwrap().contains(&json!(id)),
        "{values}"
    );
    // Every expression of every dashboard returns data.
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace().join("grafana/dashboards"))? {
        let path = entry?.path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let mut exprs = Vec::new();
        expressions(&dashboard["panels"], "", &mut exprs);
        assert!(!exprs.is_empty(), "{path:?} has no queries");
        for (panel, expr) in exprs {
            let expr = expr
                .replace("$__rate_interval", "30s")
                .replace("$camera", &id);
            let result = wait_for(
                &format!("data for {panel:?} ({expr}) in {path:?}"),
                Duration::from_secs(30),
                || async {
                    let r = prometheus.query(&expr).await.ok()?;
                    (!r.is_empty()).then_some(r)
                },
            )
            .await?;
            print_result(&panel, &expr, &result);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} dashboard queries");
    // … and the data is right.
    let value = |r: Vec<Value>| -> f64 { r[0]["value"][1].as_str().unwrap().parse().unwrap() };
    assert_eq!(
        value(prometheus.query("sum(cloudcam_ingest_camera_up)").await?),
        1.0
    );
    assert_eq!(
        value(
            prometheus
                .query("sum(cloudcam_signal_janus_mountpoints)")
                .await?
        ),
        1.0
    );
    assert_eq!(
        value(prometheus.query("sum(cloudcam_signal_viewers)").await?),
        1.0
    );
    let reconnects =
        format!("sum(increase(cloudcam_ingest_camera_reconnects_total{{camera=\"{id}\"}}[5m]))");
    assert!(value(prometheus.query(&reconnects).await?) > 0.0);

    // Every log line of the workers that names the camera carries it as its `camera` field.
    for log in [p.ingest.proc.log_text(), recorder.proc.log_text()] {
        for line in strip_ansi(&log).lines().filter(|l| l.contains(&id)) {
            assert!(
                line.contains(&format!("camera={id}")),
                "no camera field: {line}"
            );
        }
    }
    browser.close().await;
    Ok(())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn print_result(panel: &str, expr: &str, result: &[Value]) {
    let values: Vec<String> = result
        .iter()
        .map(|r| r["value"][1].as_str().unwrap_or("?").to_string())
        .collect();
    println!("{panel}: {expr} → {values:?}");
}
