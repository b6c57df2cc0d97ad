//! The signal service's state, routes and background tasks.

use crate::config::SignalConfig;
use crate::error::{ApiError, json_error};
use crate::pool::Pool;
use crate::{auth, cameras, recordings, ws};
use actix_web::{HttpResponse, web};
use cloudcam_core::bus::Bus;
use cloudcam_core::camera::{CameraStatus, status_key};
use cloudcam_core::state::{StateStore, get_json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub struct AppState {
    pub config: SignalConfig,
    pub bus: Arc<dyn Bus>,
    pub state: Arc<dyn StateStore>,
    pub pool: Pool,
    /// Recordings and snapshots.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// Serializes mountpoint allocation within this instance.
    pub alloc_lock: tokio::sync::Mutex<()>,
    /// Camera status changes, for every open WebSocket.
    pub statuses: broadcast::Sender<(String, CameraStatus)>,
}

impl AppState {
    pub fn new(
        config: SignalConfig,
        bus: Arc<dyn Bus>,
        state: Arc<dyn StateStore>,
        store: Arc<dyn object_store::ObjectStore>,
    ) -> Self {
        Self {
            store,
            pool: Pool::new(config.janus.clone()),
            config,
            bus,
            state,
            alloc_lock: tokio::sync::Mutex::new(()),
            statuses: broadcast::channel(1024).0,
        }
    }
}

/// What `/readyz` checks: Kafka, Redis, the media store and at least one healthy Janus gateway.
pub fn readiness(app: &Arc<AppState>) -> cloudcam_core::ops::Readiness {
    let a = app.clone();
    cloudcam_core::ops::Readiness::dependencies(
        app.bus.clone(),
        app.state.clone(),
        Some(app.store.clone()),
    )
    .check("janus", move || {
        let up = a.pool.any_up();
        async move {
            if up {
                Ok(())
            } else {
                Err("no Janus gateway answered its last health check".into())
            }
        }
    })
}

/// Registers the API, WebSocket, metrics, health and web UI routes.
pub fn routes(
    cfg: &mut web::ServiceConfig,
    max_body: usize,
    readiness: cloudcam_core::ops::Readiness,
) {
    cloudcam_core::ops::routes(cfg, readiness);
    let json = web::JsonConfig::default()
        .limit(max_body)
        .error_handler(move |err, _| json_error(err, max_body));
    cfg.app_data(json)
        .app_data(web::PathConfig::default())
        .service(
            web::scope("/api/v1")
                .route("/login", web::post().to(auth::login))
                .route("/logout", web::post().to(auth::logout))
                .route("/cameras", web::get().to(cameras::list))
                .route("/cameras", web::post().to(cameras::create))
                .route("/cameras/{id}", web::get().to(cameras::get))
                .route("/cameras/{id}", web::patch().to(cameras::update))
                .route("/cameras/{id}", web::delete().to(cameras::delete))
                .route("/cameras/{id}/recordings", web::get().to(recordings::list))
                .route("/cameras/{id}/clip", web::get().to(recordings::clip))
                .route(
                    "/cameras/{id}/snapshot",
                    web::get().to(recordings::snapshot),
                )
                .route(
                    "/cameras/{id}/snapshot",
                    web::post().to(recordings::request_snapshot),
                )
                .route("/workers", web::get().to(workers))
                .route("/ws", web::get().to(ws::connect))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound("no such API endpoint".into()))
                })),
        )
        .route("/", web::get().to(crate::web::index))
        .route("/app.js", web::get().to(crate::web::script))
        .route("/style.css", web::get().to(crate::web::style));
}

/// `GET /api/v1/workers`: live ingest workers and recorders (with their cameras) and the Janus
/// gateways (with their health).
async fn workers(app: web::Data<AppState>, _: auth::Authed) -> Result<HttpResponse, ApiError> {
    let workers = cloudcam_core::workers::list(&*app.state).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "workers": workers,
        "gateways": app.pool.views(),
    })))
}

/// Relays camera events from the bus to every WebSocket as full statuses.
pub fn spawn_event_relay(app: Arc<AppState>) -> anyhow::Result<()> {
    let mut events = app.bus.events()?;
    actix_rt::spawn(async move {
        let mut cache: HashMap<String, CameraStatus> = HashMap::new();
        while let Some(ev) = events.recv().await {
            let status = match cache.get_mut(&ev.camera_id) {
                Some(s) => s,
                None => {
                    let stored = get_json::<CameraStatus>(&*app.state, &status_key(&ev.camera_id))
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or_else(CameraStatus::unknown);
                    cache.entry(ev.camera_id.clone()).or_insert(stored)
                }
            };
            status.apply(&ev);
            let _ = app.statuses.send((ev.camera_id.clone(), status.clone()));
        }
    });
    Ok(())
}

/// Keeps every camera's mountpoint present on its gateway (a restarted gateway forgets them),
/// and moves the mountpoints of a gateway that stays down to the others.
pub fn spawn_reconciler(app: Arc<AppState>) {
    actix_rt::spawn(async move {
        let every = Duration::from_millis(app.config.janus.reconcile_interval_ms);
        loop {
            match cameras::all(&app).await {
                Err(e) => tracing::warn!(error = %e, "cannot list cameras to reconcile"),
                Ok(cams) => {
                    app.pool.reconcile(&cams).await;
                    failover(&app, cams).await;
                }
            }
            tokio::time::sleep(every).await;
        }
    });
}

/// Re-creates the mountpoints of every gateway down for longer than `failover_after_ms` on the
/// least loaded healthy gateway, and points the cameras' RTP there. Viewers of those cameras
/// see their view end and reconnect (the UI does so by itself) to the new gateway.
async fn failover(app: &AppState, mut cams: Vec<cameras::CameraRecord>) {
    let after = app.pool.failover_after();
    for i in 0..cams.len() {
        let from = app.pool.gateway(&cams[i].mountpoint.gateway);
        if !from.failed_for(after) {
            continue;
        }
        let Some(to) = app.pool.place(&cams, Some(&from.settings.name)) else {
            continue;
        };
        let mut record = cams[i].clone();
        record.mountpoint.gateway = to.settings.name.clone();
        if let Err(e) = app.pool.ensure(&record.mountpoint).await {
            tracing::warn!(camera = %record.info.id, gateway = %to.settings.name, error = %e, "cannot move the mountpoint");
            continue;
        }
        match cameras::publish(app, &record).await {
            Ok(()) => {
                tracing::info!(camera = %record.info.id, from = %from.settings.name, to = %to.settings.name, "mountpoint moved to another gateway");
                cams[i] = record;
            }
            Err(e) => {
                tracing::warn!(camera = %record.info.id, error = %e, "cannot move the mountpoint")
            }
        }
    }
}
