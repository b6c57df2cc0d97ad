//! `cloudcam-recorder`: the recorder binary. See the library docs.

use clap::Parser;
use cloudcam_core::config::load;
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
    let store = cloudcam_core::media::from_settings(&cfg.media)?;
    // `/readyz` answers while the recorder waits for Kafka and Redis.
    let (handle, bus, state) = cloudcam_core::ops::serve_and_connect(
        &cfg.metrics_listen,
        &cfg.kafka,
        &cfg.redis,
        store.clone(),
    )
    .await?;
    let shared = cloudcam_recorder::shared(cfg.recorder.clone(), id, bus.clone(), state, store)?;

    let shutdown = cloudcam_core::ops::shutdown_signal();
    cloudcam_recorder::run(shared, bus, shutdown).await?;
    handle.stop(true).await;
    Ok(())
}
