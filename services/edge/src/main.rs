//! `cloudcam-edge`: the edge agent binary. See the library docs.

use clap::Parser;
use cloudcam_edge::{AgentError, EdgeConfig};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    about = "cloudcam edge agent: pushes a site's cameras to the cloud over connections it opens"
)]
struct Args {
    /// TOML configuration file (see config/edge.toml); environment: CLOUDCAM_EDGE_*.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The cloud's public URL (https://…), for enrollment and the agent's connection.
    #[arg(long)]
    server: Option<String>,
    /// The one-time enrollment token the cloud showed for this site.
    #[arg(long)]
    enroll_token: Option<String>,
    /// Where the site credential is kept (default: cloudcam-edge.json).
    #[arg(long)]
    state_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cloudcam_core::telemetry::init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cloudcam-edge stopped");
            // A refused credential needs a person (a new enrollment); a supervisor restarting
            // the agent at once would not help.
            if e.downcast_ref::<AgentError>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut cfg: EdgeConfig = cloudcam_core::config::load("edge", args.config.as_deref())?;
    if let Some(server) = args.server {
        cfg.server = server;
    }
    if let Some(token) = args.enroll_token {
        cfg.enroll_token = token;
    }
    if let Some(path) = args.state_file {
        cfg.state_file = path;
    }
    gstreamer::init()?;
    // TLS for the agent's connection (wss://); the enrollment's client brings its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let enrollment = cloudcam_edge::enrollment(&cfg).await?;
    tracing::info!(site = %enrollment.site_id, name = %enrollment.site_name, server = %enrollment.server, "cloudcam-edge starting");
    cloudcam_edge::run(cfg, enrollment, shutdown()).await
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
}
