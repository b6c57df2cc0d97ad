//! A small client of signal's REST API.

use crate::contract::Contract;
use crate::procs::wait_for;
use crate::stack::{ADMIN_PASSWORD, ADMIN_USER};
use anyhow::{Result, bail};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    /// Every response is checked against signal's OpenAPI document.
    pub contract: std::sync::Arc<Contract>,
}

impl Api {
    /// Signs in as the test administrator.
    pub async fn login(base: &str) -> Result<Self> {
        Self::login_as(base, ADMIN_USER, ADMIN_PASSWORD).await
    }

    pub async fn login_as(base: &str, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::new();
        let res: Value = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(token) = res["token"].as_str() else {
            bail!("no token in {res}");
        };
        let contract = std::sync::Arc::new(Contract::fetch(&http, base).await?);
        contract.check("POST", "/api/v1/login", 200, &res)?;
        Ok(Self {
            base: base.to_string(),
            token: token.to_string(),
            http,
            contract,
        })
    }

    /// Any request, returning status and body (JSON, or `Null` when empty). The response is
    /// checked against the API contract.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        self.call_with(method, path, body, &[]).await
    }

    /// [`Api::call`] with extra request headers (`If-Match`, say).
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        let (status, _, value) = self.request(method, path, body, headers).await?;
        Ok((status, value))
    }

    /// Any request, returning status, response headers and body, checked against the contract.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
        let mut req = self
            .http
            .request(method.parse()?, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let headers = res.headers().clone();
        let json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let status = res.status().as_u16();
        let text = res.text().await?;
        if !json {
            // Media (clips, snapshots) and empty bodies: nothing to check against a schema.
            let value = if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            };
            return Ok((status, headers, value));
        }
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        self.contract
            .check(method, &format!("/api/v1{path}"), status, &value)?;
        Ok((status, headers, value))
    }

    /// p50 and p99 in ms of `n` sequential GETs of `path` (the body read in full).
    pub async fn latency(&self, path: &str, n: usize) -> Result<(f64, f64)> {
        let mut ms = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            let res = self
                .http
                .get(format!("{}/api/v1{path}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await?;
            anyhow::ensure!(res.status().is_success(), "GET {path}: {}", res.status());
            let _ = res.bytes().await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
        Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
    }

    /// Creates a camera and returns its id.
    pub async fn create_camera_id(&self, body: Value) -> Result<String> {
        let cam = self.create_camera(body).await?;
        cam["id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("a created camera without an id: {cam}"))
    }

    pub async fn create_camera(&self, body: Value) -> Result<Value> {
        let (status, v) = self.call("POST", "/cameras", Some(body)).await?;
        if status != 201 {
            bail!("creating a camera answered {status}: {v}");
        }
        Ok(v)
    }

    pub async fn camera(&self, id: &str) -> Result<Value> {
        let (status, v) = self.call("GET", &format!("/cameras/{id}"), None).await?;
        if status != 200 {
            bail!("GET camera answered {status}: {v}");
        }
        Ok(v)
    }

    /// Downloads the clip of camera `id` over `[from, to)` into `path`; its bounds as signal
    /// cut it (rounded out to keyframes).
    pub async fn clip(
        &self,
        id: &str,
        (from, to): (i64, i64),
        path: &std::path::Path,
    ) -> Result<(i64, i64)> {
        let res = self
            .http
            .get(format!(
                "{}/api/v1/cameras/{id}/clip?from={from}&to={to}&download=true",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await?;
        if res.status() != 200 {
            bail!("GET clip answered {}: {}", res.status(), res.text().await?);
        }
        let header = |n: &str| -> Result<i64> {
            Ok(res
                .headers()
                .get(n)
                .ok_or_else(|| anyhow::anyhow!("no {n}"))?
                .to_str()?
                .parse()?)
        };
        let bounds = (
            header("x-cloudcam-clip-start-ms")?,
            header("x-cloudcam-clip-end-ms")?,
        );
        std::fs::write(path, res.bytes().await?)?;
        Ok(bounds)
    }

    /// Asks for a snapshot of the camera now and waits for it (the JPEG's bytes).
    pub async fn take_snapshot(&self, id: &str, timeout: Duration) -> Result<Vec<u8>> {
        let (status, v) = self
            .call("POST", &format!("/cameras/{id}/snapshot"), None)
            .await?;
        if status != 202 {
            bail!("POST snapshot answered {status}: {v}");
        }
        wait_for("a snapshot", timeout, || async {
            let res = self
                .http
                .get(format!("{}/api/v1/cameras/{id}/snapshot", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .ok()?;
            if res.status() != 200 {
                return None;
            }
            res.bytes().await.ok().map(|b| b.to_vec())
        })
        .await
    }

    /// Waits until the camera's recording reaches past `t_ms` (its last span ends later).
    pub async fn wait_recorded_past(&self, id: &str, t_ms: i64, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("camera {id} to be recorded past {t_ms}"),
            timeout,
            || async {
                let v = self.recordings(id).await.ok()?;
                let end = v["spans"].as_array()?.last()?["end_ms"].as_i64()?;
                (end > t_ms).then_some(())
            },
        )
        .await
    }

    /// The camera's recordings (its segment index) over the last hour and the next.
    pub async fn recordings(&self, id: &str) -> Result<Value> {
        let to = crate::procs::now_ms() + 3_600_000;
        let (status, v) = self
            .call(
                "GET",
                &format!("/cameras/{id}/recordings?from=0&to={to}"),
                None,
            )
            .await?;
        if status != 200 {
            bail!("GET recordings answered {status}: {v}");
        }
        Ok(v)
    }

    /// Waits until the camera's status is `state`; returns the camera.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Result<Value> {
        let last = std::sync::Mutex::new(Value::Null);
        let res = wait_for(&format!("camera {id} to be {state}"), timeout, || async {
            let cam = self.camera(id).await.ok()?;
            let ok = cam["status"]["state"] == state;
            *last.lock().unwrap() = cam.clone();
            ok.then_some(cam)
        })
        .await;
        match res {
            Ok(v) => Ok(v),
            Err(e) => bail!("{e}; last seen: {}", last.lock().unwrap()["status"]),
        }
    }
}

/// The `p` quantile (0..=1) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}
