//! `cloudcam-standalone`: the single-machine mode. Signal, one ingest worker and one recorder
//! run in this process over the in-process bus and state (or Redis, if configured) and a local
//! media directory. The fleet binaries (`cloudcam-signal`, `cloudcam-ingest`,
//! `cloudcam-recorder`) know nothing of this composition.

use clap::Parser;
use cloudcam_core::config::{Validate, load};
use cloudcam_ingest::CameraSettings;
use cloudcam_recorder::RecorderSettings;
use cloudcam_signal::config::SignalConfig;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "cloudcam on one machine: signal, ingest and recorder in one process")]
struct Args {
    /// TOML configuration file with `[signal]` (config/signal.toml), `[ingest]` (the `[camera]`
    /// section of config/ingest.toml) and `[recorder]` (config/recorder.toml) sections;
    /// environment: CLOUDCAM_STANDALONE_* (CLOUDCAM_STANDALONE_SIGNAL__AUTH__ADMIN_PASSWORD, …).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The single-machine configuration: signal's, plus the embedded worker's and recorder's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StandaloneConfig {
    signal: SignalConfig,
    /// Camera handling of the embedded ingest worker (see config/ingest.toml).
    ingest: CameraSettings,
    /// The embedded recorder (see config/recorder.toml).
    recorder: RecorderSettings,
    /// RTSP re-stream server of the embedded ingest worker.
    restream_listen: String,
    /// Where the embedded ingest worker takes pushed cameras (see config/ingest.toml).
    push: cloudcam_ingest::push::PushSettings,
}

impl Default for StandaloneConfig {
    fn default() -> Self {
        Self {
            signal: SignalConfig::default(),
            ingest: CameraSettings::default(),
            recorder: RecorderSettings::default(),
            restream_listen: "127.0.0.1:9554".into(),
            push: Default::default(),
        }
    }
}

impl Validate for StandaloneConfig {
    fn validate(&self) -> Result<(), String> {
        self.signal.validate()?;
        self.ingest.validate()?;
        self.recorder.validate()?;
        self.push.validate()?;
        self.restream_listen
            .parse::<std::net::SocketAddr>()
            .map(|_| ())
            .map_err(|e| format!("restream_listen {:?}: {e}", self.restream_listen))
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    cloudcam_core::telemetry::init();
    let args = Args::parse();
    let mut cfg: StandaloneConfig = load("standalone", args.config.as_deref())?;
    // The embedded worker and recorder share a re-stream credential nobody else needs.
    if cfg.recorder.restream_auth.password.is_empty() {
        cfg.recorder.restream_auth.password = cloudcam_core::random_hex(16);
    }
    // The re-stream server is built before any pipeline.
    gstreamer::init()?;
    let readiness = cloudcam_signal::serve_internal(&cfg.signal)?;
    let (bus, state) =
        cloudcam_core::ops::connect_backends(&readiness, &cfg.signal.kafka, &cfg.signal.redis)
            .await;
    let media = cloudcam_core::media::from_settings(&cfg.signal.media)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let shared = cloudcam_recorder::shared(
        cfg.recorder.clone(),
        "recorder-embedded".into(),
        bus.clone(),
        state.clone(),
        media.clone(),
    )?;
    let recorder = actix_rt::spawn(cloudcam_recorder::run(
        shared,
        bus.clone(),
        stopped(stop_rx.clone()),
    ));
    let restream = cloudcam_ingest::restream::Restream::start_with(
        &cfg.restream_listen,
        "",
        cfg.recorder.restream_auth.clone(),
        &cfg.push,
    )?;
    let ingest = actix_rt::spawn(cloudcam_ingest::run(
        cloudcam_ingest::config::default_worker_id(),
        cfg.ingest.clone(),
        Some(Arc::new(restream)),
        Some(media.clone()),
        bus.clone(),
        state.clone(),
        stopped(stop_rx),
    ));
    tracing::info!("single machine: signal, an ingest worker and a recorder in this process");
    cloudcam_signal::serve(&cfg.signal, &readiness, bus, state, media)
        .await?
        .await?;
    let _ = stop_tx.send(true);
    let _ = recorder.await;
    let _ = ingest.await;
    Ok(())
}
