//! `cloudcam-signal`: the public edge of a fleet (API, WebSocket signalling, web UI, the Janus
//! pool). It runs no ingest worker and no recorder; the single-machine mode that runs all of
//! them in one process is `cloudcam-standalone`.

use clap::Parser;
use cloudcam_core::config::load;
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
    let media = cloudcam_core::media::from_settings(&cfg.media)?;
    // The internal listener (`/readyz`) answers while signal waits for Kafka and Redis.
    let readiness = cloudcam_signal::serve_internal(&cfg)?;
    let (bus, state) =
        cloudcam_core::ops::connect_backends(&readiness, &cfg.kafka, &cfg.redis).await;
    let server = cloudcam_signal::serve(&cfg, &readiness, bus, state, media).await?;
    server.await?;
    Ok(())
}
