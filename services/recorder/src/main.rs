//! `cloudcam-recorder`: the recorder binary. See the library docs.

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
    let readiness = cloudcam_core::ops::Readiness::dependencies(
        bus.clone(),
        state.clone(),
        Some(store.clone()),
    );
    let shared = cloudcam_recorder::shared(cfg.recorder.clone(), id, bus.clone(), state, store)?;

    let handle = cloudcam_core::ops::serve_metrics(&cfg.metrics_listen, readiness)?;

    let shutdown = cloudcam_core::ops::shutdown_signal();
    cloudcam_recorder::run(shared, bus, shutdown).await?;
    handle.stop(true).await;
    Ok(())
}
