//! `cloudcam-ingest`: the ingest worker binary. See the library docs.

use clap::Parser;
use cloudcam_core::config::load;
use cloudcam_ingest::IngestConfig;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "cloudcam ingest worker")]
struct Args {
    /// TOML configuration file (see config/ingest.toml); environment: CLOUDCAM_INGEST_*.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    cloudcam_core::telemetry::init();
    let args = Args::parse();
    let cfg: IngestConfig = load("ingest", args.config.as_deref())?;
    let worker_id = cfg.worker_id();
    let store = cloudcam_core::media::from_settings(&cfg.media)?;
    // `/readyz` answers while the worker waits for Kafka and Redis.
    let (handle, bus, state) = cloudcam_core::ops::serve_and_connect(
        &cfg.metrics_listen,
        &cfg.kafka,
        &cfg.redis,
        store.clone(),
    )
    .await?;

    let shutdown = cloudcam_core::ops::shutdown_signal();
    gstreamer::init()?;
    let restream = cloudcam_ingest::restream::Restream::start_with(
        &cfg.restream_listen,
        &cfg.restream_advertise,
        cfg.restream_auth.clone(),
        &cfg.push,
    )?;
    cloudcam_ingest::run(
        worker_id,
        cfg.camera,
        Some(std::sync::Arc::new(restream)),
        Some(store),
        bus,
        state,
        shutdown,
    )
    .await?;
    handle.stop(true).await;
    Ok(())
}
