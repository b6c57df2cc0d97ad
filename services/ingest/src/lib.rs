//! cloudcam ingest worker.
//!
//! Joins the `cloudcam-ingest` consumer group over the cameras' desired state (see
//! [`cloudcam_core::bus`]); for every camera it owns it runs one [`camera::CameraActor`], the
//! shell of the camera's state machine ([`machine::CameraCore`], no I/O), which
//! owns a GStreamer pipeline ([`pipeline`]) pulling the camera's RTSP stream and relaying its
//! H.264 RTP, untouched, to the camera's Janus mountpoint and to the worker's RTSP re-stream
//! ([`restream`]). A pushed camera's stream comes the other way: its encoder or edge agent
//! pushes it to the worker's RTSP server ([`push`]) and the same relay takes it from there.
//! Facts about cameras (state changes, health) go out through [`report`].

pub mod camera;
pub mod config;
pub mod forward;
pub mod machine;
pub mod pipeline;
pub mod push;
pub mod report;
pub mod restream;
pub mod snapshot;
pub mod worker;

pub use config::{CameraSettings, IngestConfig};
pub use worker::run;
