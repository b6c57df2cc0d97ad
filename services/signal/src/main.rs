//! `cloudcam-signal`: the public edge of a fleet (API, WebSocket signalling, web UI, the Janus
//! pool). It runs no ingest worker and no recorder; the single-machine mode that runs all of
//! them in one process is `cloudcam-standalone`.

use clap::Parser;
use cloudcam_core::config::{load, state_from_settings};
use cloudcam_signal::config::SignalConfig;
use std::path::PathBuf;

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
    if cfg.kafka.brokers.is_empty() {
        tracing::warn!(
            "no Kafka configured: no ingest worker will see these cameras (cloudcam-standalone runs everything in one process)"
        );
    }
    let bus = cloudcam_core::bus::from_settings(&cfg.kafka).await?;
    let state = state_from_settings(&cfg.redis).await?;
    let media = cloudcam_core::media::from_settings(&cfg.media)?;
    let server = cloudcam_signal::serve(&cfg, bus, state, media).await?;
    server.await?;
    Ok(())
}
