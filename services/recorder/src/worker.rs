//! The recorder: the shared owner loop ([`cloudcam_core::owner`]) over the consumer group
//! `cloudcam-recorder`, with one [`RecordingActor`] per owned camera whose recording is on.
//! A recording handed over (its partition moved) stops at once; one whose partition was lost
//! with the group session (Kafka away) goes on until another recorder has the camera.

use crate::recording::{RecordingActor, Shared, Stop, UpdateSpec};
use actix::prelude::*;
use async_trait::async_trait;
use cloudcam_core::bus::Bus;
use cloudcam_core::owner::{Member, Members};
use cloudcam_proto::v1::CameraSpec;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Consumer group of the recorders over the desired-state topic.
pub const GROUP: &str = "cloudcam-recorder";

/// Runs until `shutdown` resolves; must run inside an actix system.
pub async fn run(
    shared: Shared,
    bus: Arc<dyn Bus>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    gstreamer::init()?;
    crate::spool::describe();
    actix::spawn(shared.spool.clone().run());
    let (worker_id, state) = (shared.spool.worker_id.clone(), shared.state.clone());
    cloudcam_core::owner::run(Recordings(shared), worker_id, GROUP, bus, state, shutdown).await?;
    Ok(())
}

/// How the owner loop makes and drives recording actors.
struct Recordings(Shared);

impl Members for Recordings {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    fn serves(&self, spec: &CameraSpec) -> bool {
        spec.recording
    }

    fn start(&self, spec: CameraSpec) -> Box<dyn Member> {
        Box::new(Recording(RecordingActor::new(spec, self.0.clone()).start()))
    }

    fn handover_wait(&self) -> Duration {
        Duration::ZERO
    }

    fn changed(&self, serving: usize) {
        crate::spool::RECORDING.set(serving as f64);
    }
}

/// A running actor, as the owner loop sees it.
struct Recording(Addr<RecordingActor>);

#[async_trait]
impl Member for Recording {
    fn update(&self, spec: CameraSpec) {
        self.0.do_send(UpdateSpec(spec));
    }

    async fn stop(&self) {
        let _ = self.0.send(Stop).await;
    }

    /// The next recorder starts the camera afresh: this one stops.
    async fn hand_over(&self) {
        let _ = self.0.send(Stop).await;
    }

    fn alive(&self) -> bool {
        self.0.connected()
    }
}
