//! cloudcam recorder.
//!
//! Joins the `cloudcam-recorder` consumer group over the cameras' desired state; for every owned
//! camera whose recording is on it runs a [`recording::RecordingActor`], which pulls the owning
//! ingest worker's RTSP re-stream and cuts keyframe-aligned fragmented-MP4 segments into the
//! [`spool`]; the spool's uploader puts them into the media store (S3 or a local directory),
//! indexes them in the shared state and announces them on the bus.

pub mod config;
pub mod recording;
pub mod segmenter;
pub mod spool;
pub mod timeline;
pub mod worker;

pub use config::{RecorderConfig, RecorderSettings};
pub use worker::run;

use cloudcam_core::bus::Bus;
use cloudcam_core::state::StateStore;
use object_store::ObjectStore;
use std::sync::Arc;

/// Builds what every recording actor of this process shares.
pub fn shared(
    settings: RecorderSettings,
    worker_id: String,
    bus: Arc<dyn Bus>,
    state: Arc<dyn StateStore>,
    store: Arc<dyn ObjectStore>,
) -> std::io::Result<recording::Shared> {
    let spool = spool::Spool::new(
        settings.spool_dir.clone().into(),
        store.clone(),
        state.clone(),
        bus,
        settings.spool_max_bytes,
        settings.spool_min_free_bytes,
        worker_id,
    )?;
    Ok(recording::Shared {
        settings,
        state,
        store,
        spool,
    })
}
