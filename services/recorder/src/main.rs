//! `cloudcam-recorder`: the recorder binary. See the library docs.

use actix_web::{App, HttpResponse, HttpServer, web};
use clap::Parser;
use cloudcam_core::config::{load, state_from_settings};
use cloudcam_recorder::RecorderConfig;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "cloudcam recorder")]
struct Args {
    /// TOML configuration file (see config/recorder.toml); environment: CLOUDCAM_RECORDER_*.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    cloudcam_core::telemetry::init();
    let args = Args::parse();
    let cfg: RecorderConfig = load("recorder", args.config.as_deref())?;
    let id = if cfg.id.is_empty() {
        format!("recorder-{}", std::process::id())
    } else {
        cfg.id.clone()
    };
    let bus = cloudcam_core::bus::from_settings(&cfg.kafka).await?;
    let state = state_from_settings(&cfg.redis).await?;
    let store = cloudcam_core::media::from_settings(&cfg.media)?;
    let shared = cloudcam_recorder::shared(cfg.recorder.clone(), id, bus.clone(), state, store)?;

    let server = HttpServer::new(|| {
        App::new()
            .route(
                "/metrics",
                web::get().to(|| async {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4")
                        .body(cloudcam_core::metrics::render())
                }),
            )
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().body("ok") }),
            )
    })
    .workers(1)
    .disable_signals()
    .bind(&cfg.metrics_listen)?
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    cloudcam_recorder::run(shared, bus, shutdown).await?;
    handle.stop(true).await;
    Ok(())
}
