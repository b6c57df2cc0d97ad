//! Cameras: their records in the shared state, their desired state on the bus, and the REST
//! handlers of `/api/v1/cameras`.

use crate::app::AppState;
use crate::auth::Authed;
use crate::error::{ApiError, Body};
use actix_web::{HttpResponse, web};
use cloudcam_core::camera::{CameraSecret, CameraStatus, secret_key, status_key};
use cloudcam_core::state::{get_json, set_json};
use cloudcam_core::workers::WorkerInfo;
use cloudcam_proto::v1;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "cloudcam:camera:";

fn record_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// A camera's Janus mountpoint. The secret and pin never leave the signal service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mountpoint {
    pub id: u64,
    pub port: u16,
    pub secret: String,
    pub pin: String,
    /// The gateway of the Janus pool it is on (empty in records from before the pool: the first).
    #[serde(default)]
    pub gateway: String,
}

/// What anyone signed in may see of a camera: no password, no mountpoint secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraInfo {
    pub id: String,
    pub name: String,
    /// Source URL without credentials.
    pub url: String,
    pub username: Option<String>,
    pub has_password: bool,
    pub recording: bool,
    /// How long recordings are kept, in hours; 0 keeps them forever.
    #[serde(default)]
    pub retention_hours: f64,
    /// Pulled even when nobody watches (first frame at once); otherwise on demand.
    #[serde(default)]
    pub always_on: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What signal keeps about a camera (its password lives apart, under `secret_key`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraRecord {
    #[serde(flatten)]
    pub info: CameraInfo,
    pub generation: u64,
    /// Bumped when the source URL or credentials change.
    #[serde(default)]
    pub source_generation: u64,
    pub mountpoint: Mountpoint,
    /// Viewers as last published in the desired state (see `demand`).
    #[serde(default)]
    pub live_demand: u32,
}

/// A camera as the API shows it.
#[derive(Debug, Serialize)]
pub struct CameraView {
    #[serde(flatten)]
    pub info: CameraInfo,
    pub status: CameraStatus,
    pub served_by: ServedBy,
}

/// Which machines serve a camera now.
#[derive(Debug, Serialize)]
pub struct ServedBy {
    /// The ingest worker that owns it (empty until one reports).
    pub ingest: String,
    /// The Janus gateway its mountpoint is on.
    pub gateway: String,
    /// The recorder recording it, if any.
    pub recorder: Option<String>,
    /// Whether viewers keep it pulled right now.
    pub live_demand: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCamera {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub retention_hours: f64,
    #[serde(default)]
    pub always_on: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCamera {
    pub name: Option<String>,
    pub url: Option<String>,
    /// An empty string removes the credentials.
    pub username: Option<String>,
    pub password: Option<String>,
    pub recording: Option<bool>,
    pub retention_hours: Option<f64>,
    pub always_on: Option<bool>,
}

/// A validated source: URL without user info, plus any credentials it carried.
#[derive(Debug, PartialEq)]
pub struct Source {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Accepts `rtsp://` and `rtsps://` URLs with a host; moves embedded credentials out.
pub fn parse_source(raw: &str) -> Result<Source, ApiError> {
    let bad = |msg: String| ApiError::BadRequest("invalid_url", msg);
    let mut url =
        url::Url::parse(raw.trim()).map_err(|e| bad(format!("url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(bad(format!(
            "url must start with rtsp:// or rtsps://, not {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url has no host".into()));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(Source {
        url: url.to_string(),
        username,
        password,
    })
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "invalid_name",
            "name must have 1 to 100 characters".into(),
        ));
    }
    Ok(name.to_string())
}

fn check_retention(hours: f64) -> Result<f64, ApiError> {
    if !hours.is_finite() || !(0.0..=24.0 * 3650.0).contains(&hours) {
        return Err(ApiError::BadRequest(
            "invalid_retention",
            "retention_hours must be between 0 (keep forever) and 87600".into(),
        ));
    }
    Ok(hours)
}

impl CameraRecord {
    /// The desired state published for ingest workers.
    pub fn spec(&self, app: &AppState) -> v1::CameraSpec {
        let gateway = app.pool.gateway(&self.mountpoint.gateway);
        v1::CameraSpec {
            schema_version: cloudcam_proto::SCHEMA_VERSION,
            camera_id: self.info.id.clone(),
            name: self.info.name.clone(),
            source_url: self.info.url.clone(),
            credentials_ref: if self.info.username.is_some() {
                secret_key(&self.info.id)
            } else {
                String::new()
            },
            recording: self.info.recording,
            retention_hours: (self.info.retention_hours.ceil()) as u32,
            retention_seconds: (self.info.retention_hours * 3600.0).round() as u64,
            live_demand: self.live_demand,
            always_on: self.info.always_on,
            rtp_targets: vec![v1::RtpTarget {
                host: gateway.settings.rtp_host.clone(),
                video_port: u32::from(self.mountpoint.port),
                gateway: gateway.settings.name.clone(),
            }],
            generation: self.generation,
            source_generation: self.source_generation,
        }
    }
}

pub async fn load(app: &AppState, id: &str) -> Result<CameraRecord, ApiError> {
    get_json(&*app.state, &record_key(id))
        .await?
        .ok_or_else(|| ApiError::CameraNotFound(id.to_string()))
}

pub async fn all(app: &AppState) -> Result<Vec<CameraRecord>, ApiError> {
    let mut out = Vec::new();
    for (key, raw) in app.state.scan_prefix(PREFIX).await? {
        match serde_json::from_slice::<CameraRecord>(&raw) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(%key, error = %e, "skipping an unreadable camera record"),
        }
    }
    out.sort_by(|a, b| (a.info.created_ms, &a.info.id).cmp(&(b.info.created_ms, &b.info.id)));
    Ok(out)
}

async fn view(
    app: &AppState,
    r: CameraRecord,
    workers: &[WorkerInfo],
) -> Result<CameraView, ApiError> {
    let status = get_json::<CameraStatus>(&*app.state, &status_key(&r.info.id))
        .await?
        .unwrap_or_else(CameraStatus::unknown);
    let recorder = workers
        .iter()
        .find(|w| w.kind == "recorder" && w.cameras.contains(&r.info.id))
        .map(|w| w.id.clone());
    Ok(CameraView {
        served_by: ServedBy {
            ingest: status.worker_id.clone(),
            gateway: app
                .pool
                .gateway(&r.mountpoint.gateway)
                .settings
                .name
                .clone(),
            recorder,
            live_demand: r.live_demand,
        },
        info: r.info,
        status,
    })
}

/// One camera as the API shows it.
async fn view_one(app: &AppState, r: CameraRecord) -> Result<CameraView, ApiError> {
    let workers = cloudcam_core::workers::list(&*app.state).await?;
    view(app, r, &workers).await
}

/// Stores the record and publishes its desired state (no credential or mountpoint change).
pub async fn publish(app: &AppState, record: &CameraRecord) -> Result<(), ApiError> {
    set_json(&*app.state, &record_key(&record.info.id), record, None).await?;
    app.bus
        .put_spec(&record.info.id, Some(&record.spec(app)))
        .await?;
    Ok(())
}

/// Stores the record, its credentials and its mountpoint, then publishes its desired state.
async fn save(
    app: &AppState,
    record: &CameraRecord,
    secret: Option<&CameraSecret>,
) -> Result<(), ApiError> {
    match secret {
        Some(s) => set_json(&*app.state, &secret_key(&record.info.id), s, None).await?,
        None => app.state.del(&secret_key(&record.info.id)).await?,
    }
    if let Err(e) = app.pool.ensure(&record.mountpoint).await {
        // The reconciler retries; the camera is still saved and relayed once Janus is back.
        tracing::warn!(camera = %record.info.id, error = %e, "cannot create the Janus mountpoint yet");
    }
    publish(app, record).await
}

pub async fn list(app: web::Data<AppState>, _: Authed) -> Result<HttpResponse, ApiError> {
    let workers = cloudcam_core::workers::list(&*app.state).await?;
    let mut views = Vec::new();
    for r in all(&app).await? {
        views.push(view(&app, r, &workers).await?);
    }
    Ok(HttpResponse::Ok().json(views))
}

pub async fn get(
    app: web::Data<AppState>,
    _: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let r = load(&app, &id).await?;
    Ok(HttpResponse::Ok().json(view_one(&app, r).await?))
}

pub async fn create(
    app: web::Data<AppState>,
    _: Authed,
    body: Body<CreateCamera>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let name = check_name(&body.name)?;
    let source = parse_source(&body.url)?;
    let username = body.username.or(source.username).filter(|u| !u.is_empty());
    let password = body.password.or(source.password);
    let secret = username.clone().map(|username| CameraSecret {
        username,
        password: password.clone().unwrap_or_default(),
    });
    let now = cloudcam_core::now_ms();
    let _guard = app.alloc_lock.lock().await;
    let mountpoint = app.pool.allocate(&all(&app).await?)?;
    let record = CameraRecord {
        info: CameraInfo {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            name,
            url: source.url,
            has_password: secret.as_ref().is_some_and(|s| !s.password.is_empty()),
            username,
            recording: body.recording,
            retention_hours: check_retention(body.retention_hours)?,
            always_on: body.always_on,
            created_ms: now,
            updated_ms: now,
        },
        generation: 1,
        source_generation: 1,
        mountpoint,
        live_demand: 0,
    };
    save(&app, &record, secret.as_ref()).await?;
    tracing::info!(camera = %record.info.id, name = %record.info.name, url = %record.info.url, "camera added");
    Ok(HttpResponse::Created().json(view_one(&app, record).await?))
}

pub async fn update(
    app: web::Data<AppState>,
    _: Authed,
    id: web::Path<String>,
    body: Body<UpdateCamera>,
) -> Result<HttpResponse, ApiError> {
    let body = body.0;
    let mut record = load(&app, &id).await?;
    let before: (String, Option<CameraSecret>) = (
        record.info.url.clone(),
        get_json(&*app.state, &secret_key(&record.info.id)).await?,
    );
    let mut secret = before.1.clone();
    if let Some(name) = &body.name {
        record.info.name = check_name(name)?;
    }
    if let Some(url) = &body.url {
        let source = parse_source(url)?;
        record.info.url = source.url;
        if let Some(u) = source.username {
            secret = Some(CameraSecret {
                username: u,
                password: source.password.unwrap_or_default(),
            });
        }
    }
    if let Some(u) = &body.username {
        secret = if u.is_empty() {
            None
        } else {
            Some(CameraSecret {
                username: u.clone(),
                password: secret.map(|s| s.password).unwrap_or_default(),
            })
        };
    }
    if let Some(p) = &body.password {
        match secret.as_mut() {
            Some(s) => s.password.clone_from(p),
            None => {
                return Err(ApiError::BadRequest(
                    "invalid_field",
                    "a password needs a username".into(),
                ));
            }
        }
    }
    if let Some(rec) = body.recording {
        record.info.recording = rec;
    }
    if let Some(on) = body.always_on {
        record.info.always_on = on;
    }
    if let Some(hours) = body.retention_hours {
        record.info.retention_hours = check_retention(hours)?;
    }
    record.info.username = secret.as_ref().map(|s| s.username.clone());
    record.info.has_password = secret.as_ref().is_some_and(|s| !s.password.is_empty());
    record.info.updated_ms = cloudcam_core::now_ms();
    record.generation += 1;
    if (record.info.url.clone(), secret.clone()) != before {
        record.source_generation += 1;
    }
    save(&app, &record, secret.as_ref()).await?;
    tracing::info!(camera = %record.info.id, "camera changed");
    Ok(HttpResponse::Ok().json(view_one(&app, record).await?))
}

pub async fn delete(
    app: web::Data<AppState>,
    _: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let record = load(&app, &id).await?;
    app.bus.put_spec(&record.info.id, None).await?;
    app.state.del(&record_key(&record.info.id)).await?;
    app.state.del(&secret_key(&record.info.id)).await?;
    app.state.del(&status_key(&record.info.id)).await?;
    if let Err(e) = app.pool.remove(&record.mountpoint).await {
        tracing::warn!(camera = %record.info.id, error = %e, "cannot remove the Janus mountpoint");
    }
    tracing::info!(camera = %record.info.id, "camera deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_moved_out_of_the_url() {
        let s = parse_source("rtsp://bob:s%40cret@cam.local:554/stream1").unwrap();
        assert_eq!(s.url, "rtsp://cam.local:554/stream1");
        assert_eq!(s.username.as_deref(), Some("bob"));
        assert_eq!(s.password.as_deref(), Some("s@cret"));
    }

    #[test]
    fn only_rtsp_urls_are_accepted() {
        for bad in ["http://cam/x", "cam.local", "rtsp://", "file:///etc/passwd"] {
            let err = parse_source(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_url", "{bad}");
        }
        assert!(parse_source("rtsps://cam:322/x").is_ok());
    }
}
