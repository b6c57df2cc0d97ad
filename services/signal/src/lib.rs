//! cloudcam signal: the public edge. REST API (`/api/v1`), WebSocket signalling between browsers
//! and Janus, camera status relay, the web UI, and the Janus pool. Browsers never talk to
//! Janus's API: [`viewer`] does on their behalf after [`auth`] has checked who they are.
//!
//! Layers: [`api`] and [`ws`] are the HTTP and WebSocket edge; [`cameras`], [`demand`],
//! [`gateways`], [`recordings`], [`users`] and [`auth`] are the domain services, each taking its stores
//! ([`store`]) and clients ([`pool`], the bus) explicitly; [`app`] only wires them.

pub mod api;
pub mod app;
pub mod auth;
pub mod cameras;
pub mod config;
pub mod demand;
pub mod edge;
pub mod error;
pub mod gateways;
pub mod janus;
pub mod metrics;
pub mod model;
pub mod pool;
pub mod protocol;
pub mod recordings;
pub mod sites;
pub mod store;
pub mod users;
pub mod viewer;
pub mod web;
pub mod ws;

use std::sync::Arc;

/// The `/readyz` check that holds until the public API listens.
const API_READINESS: &str = "api";

/// Starts the internal listener (`/metrics`, `/readyz`) with no checks yet: [`serve`] adds
/// them, and until then [`cloudcam_core::ops::Readiness::connect`] reports what signal waits
/// for, and `/readyz` holds at 503 until the API listens. Must run inside an actix system.
pub fn serve_internal(
    cfg: &config::SignalConfig,
) -> std::io::Result<cloudcam_core::ops::Readiness> {
    let readiness = cloudcam_core::ops::Readiness::new();
    readiness.pending(API_READINESS, "starting: the API is not listening yet");
    cloudcam_core::ops::serve_metrics(&cfg.internal_listen, readiness.clone())?;
    Ok(readiness)
}

/// Builds signal on the given backends, starts its background passes and binds its HTTP
/// server: the one composition both `cloudcam-signal` and the single-machine binary use. The
/// configured administrator is created first unless that user exists. `readiness` is the
/// internal listener's ([`serve_internal`]); signal's checks are added to it.
pub async fn serve(
    cfg: &config::SignalConfig,
    readiness: &cloudcam_core::ops::Readiness,
    bus: Arc<dyn cloudcam_core::bus::Bus>,
    state: Arc<dyn cloudcam_core::state::StateStore>,
    media: Arc<dyn object_store::ObjectStore>,
) -> anyhow::Result<actix_web::dev::Server> {
    use actix_web::{App, HttpServer, web};
    // Clips are cut with GStreamer.
    gstreamer::init()?;
    metrics::describe();
    let app = Arc::new(app::AppState::new(cfg, bus, state, media));
    app.users
        .bootstrap(&cfg.auth.admin_user, &cfg.auth.admin_password)
        .await
        .map_err(|e| anyhow::anyhow!("creating the administrator: {e}"))?;
    app.spawn_background()?;
    let data = web::Data::from(app.clone());
    let sessions = web::Data::new(app.sessions.clone());
    let max_body = cfg.max_body_bytes;
    app.add_readiness(readiness);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(sessions.clone())
            .wrap(security_headers())
            .wrap(actix_web::middleware::from_fn(metrics::http_timer))
            // The path only: a query may carry a token.
            .wrap(
                actix_web::middleware::Logger::new("%{path}xi %s %Dms")
                    .custom_request_replace("path", |req| req.path().to_owned()),
            )
            .configure(move |c| api::routes(c, max_body))
    })
    .bind(&cfg.listen)?;
    for addr in server.addrs() {
        tracing::info!("listening on http://{addr}/");
    }
    readiness.clear(API_READINESS);
    Ok(server.run())
}

/// Headers on every response: the UI runs only its own script (no inline script, no framing,
/// no referrer leaving the site) and no response is content-sniffed.
fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
             media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ))
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("X-Frame-Options", "DENY"))
}
