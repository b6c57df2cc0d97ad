//! camsim: a simulated IP camera for people and tests.
//!
//! One process serves any number of streams (RTSP paths) from gstreamer-rtsp-server:
//!
//! * `live` streams encode a test pattern (size, fps, GOP, H.264 profile, clock overlay), or
//!   H.265 / MJPEG to play a camera cloudcam cannot relay;
//! * `replay` streams loop H.264 access units held in memory without encoding anything, cheap
//!   enough to simulate hundreds of cameras. The access units come from an Annex-B file
//!   (`file=`) or are encoded once at start-up.
//!
//! Optional RTSP authentication (basic or digest) applies to every path of the process.
//!
//! ```text
//! camsim --port 8554 --stream cam1 --stream "cam2:width=1280,height=720,fps=30,gop=60"
//!        --stream "hevc:codec=h265" --stream "r1:mode=replay" --username u --password p --auth digest
//! ```
//!
//! `stamp=wall` writes the capture time into each frame as a pixel code (see [`stamp`]), for
//! glass-to-glass measurements.

mod replay;
mod stamp;
mod stream;

use anyhow::{Context, Result};
use clap::Parser;
use gstreamer as gst;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{self as rtsp_server};
use stream::StreamSpec;

#[derive(Parser, Debug)]
#[command(about = "A simulated IP camera (RTSP server)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    /// RTSP port.
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// Serve `GET /sessions` (playing RTSP sessions per path, as JSON) on this port.
    #[arg(long)]
    stats_port: Option<u16>,
    /// A stream: `PATH[:key=value,...]`; keys: mode (live|replay), codec (h264|h265|mjpeg),
    /// width, height, fps, gop (frames), profile (baseline|main|high), overlay (true|false), audio (aac|aac-latm|pcmu|pcma|opus|none),
    /// audio_rate (Hz, 48000), seconds (replay loop length), file (Annex-B H.264 for replay), stamp (none|wall|MS: a
    /// machine-readable pixel clock in the bottom rows of every frame, live streams only).
    #[arg(long = "stream", required = true)]
    streams: Vec<String>,
    /// Require this user name (with --password) on every path.
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// basic or digest.
    #[arg(long, default_value = "digest")]
    auth: String,
}

mod sessions;

fn main() -> Result<()> {
    let args = Args::parse();
    gst::init()?;
    let main_loop = gst::glib::MainLoop::new(None, false);
    let server = rtsp_server::RTSPServer::new();
    server.set_address(&args.address);
    server.set_service(&args.port.to_string());
    let mounts = server.mount_points().context("no mount points")?;

    let auth = match (&args.username, &args.password) {
        (Some(user), Some(pass)) => Some(make_auth(user, pass, &args.auth)?),
        _ => None,
    };
    if let Some(auth) = &auth {
        server.set_auth(Some(auth));
    }

    for raw in &args.streams {
        let spec: StreamSpec = raw.parse()?;
        let factory = match spec.mode {
            stream::Mode::Live => stream::live_factory(&spec)?,
            stream::Mode::Replay => replay::factory(&spec)?,
        };
        if auth.is_some() {
            factory.add_role_from_structure(
                &gst::Structure::builder("user")
                    .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        mounts.add_factory(&format!("/{}", spec.path), factory);
        println!(
            "camsim: rtsp://{}:{}/{} ({})",
            args.address, args.port, spec.path, raw
        );
    }
    if let Some(port) = args.stats_port {
        sessions::serve(&server, &args.address, port)?;
    }
    let _source = server.attach(None).context("cannot listen")?;
    println!("camsim: ready");
    main_loop.run();
    Ok(())
}

fn make_auth(user: &str, pass: &str, method: &str) -> Result<rtsp_server::RTSPAuth> {
    let auth = rtsp_server::RTSPAuth::new();
    let token = rtsp_server::RTSPToken::builder()
        .field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        .build();
    match method {
        "basic" => {
            auth.set_supported_methods(gstreamer_rtsp::RTSPAuthMethod::Basic);
            let basic = rtsp_server::RTSPAuth::make_basic(user, pass);
            auth.add_basic(basic.as_str(), &token);
        }
        "digest" => {
            auth.set_supported_methods(gstreamer_rtsp::RTSPAuthMethod::Digest);
            auth.add_digest(user, pass, &token);
        }
        other => anyhow::bail!("unknown auth method {other:?}; use basic or digest"),
    }
    Ok(auth)
}
