//! `cloudcam-signal`. With no Kafka configured it also runs an ingest worker in the same
//! process over the in-process bus (the single-machine default).

use actix_web::{App, HttpServer, web};
use clap::Parser;
use cloudcam_core::config::{load, state_from_settings};
use cloudcam_signal::app::{self, AppState};
use cloudcam_signal::config::SignalConfig;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "cloudcam signal: API, WebSocket signalling, web UI")]
struct Args {
    /// TOML configuration file (see config/signal.toml); environment: CLOUDCAM_SIGNAL_*.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    cloudcam_core::telemetry::init();
    let args = Args::parse();
    let cfg: SignalConfig = load("signal", args.config.as_deref())?;
    // Clips are cut with GStreamer (and the embedded ingest worker uses it).
    gstreamer::init()?;
    let bus = cloudcam_core::bus::from_settings(&cfg.kafka).await?;
    let state = state_from_settings(&cfg.redis).await?;
    let embedded = cfg.kafka.brokers.is_empty();
    let store = cloudcam_core::media::from_settings(&cfg.media)?;
    let app = Arc::new(AppState::new(
        cfg.clone(),
        bus.clone(),
        state.clone(),
        store.clone(),
    ));
    cloudcam_signal::metrics::describe();
    app::spawn_event_relay(app.clone())?;
    app::spawn_reconciler(app.clone());
    cloudcam_signal::demand::spawn(app.clone());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (rec_stop_tx, rec_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let recorder = if embedded {
        tracing::info!("no Kafka configured: running a recorder in this process");
        let shared = cloudcam_recorder::shared(
            cfg.recorder.clone(),
            "recorder-embedded".into(),
            bus.clone(),
            state.clone(),
            store.clone(),
        )?;
        Some(actix_rt::spawn(cloudcam_recorder::run(
            shared,
            bus.clone(),
            async move {
                let _ = rec_stop_rx.await;
            },
        )))
    } else {
        None
    };
    let ingest = if embedded {
        tracing::info!("no Kafka configured: running an ingest worker in this process");
        let worker_id = cloudcam_ingest::config::default_worker_id();
        let restream = cloudcam_ingest::restream::Restream::start(&cfg.restream_listen, "")?;
        Some(actix_rt::spawn(cloudcam_ingest::run(
            worker_id,
            cfg.ingest.clone(),
            Some(Arc::new(restream)),
            Some(store.clone()),
            bus.clone(),
            state.clone(),
            async move {
                let _ = stop_rx.await;
            },
        )))
    } else {
        None
    };

    let data = web::Data::from(app.clone());
    let max_body = cfg.max_body_bytes;
    let readiness = app::readiness(&app);
    let server = HttpServer::new(move || {
        let readiness = readiness.clone();
        App::new()
            .app_data(data.clone())
            .wrap(actix_web::middleware::from_fn(
                cloudcam_signal::metrics::http_timer,
            ))
            .wrap(actix_web::middleware::Logger::new("%U %s %Dms").exclude("/metrics"))
            .configure(move |c| app::routes(c, max_body, readiness))
    })
    .bind(&cfg.listen)?;
    for addr in server.addrs() {
        tracing::info!("listening on http://{addr}/");
    }
    server.run().await?;
    let _ = stop_tx.send(());
    let _ = rec_stop_tx.send(());
    if let Some(recorder) = recorder {
        let _ = recorder.await;
    }
    if let Some(ingest) = ingest {
        let _ = ingest.await;
    }
    Ok(())
}
