//! The recorder: the shared owner loop ([`cloudcam_core::owner`]) over the consumer group
//! `cloudcam-recorder`, with one [`RecordingActor`] per owned camera whose recording is on.
//! A recording handed over (its partition moved, or a graceful stop) goes on until the next
//! recorder holds the stream and ends at the keyframe where that one begins (see
//! [`crate::timeline`]); one whose partition was lost with the group session (Kafka away) goes
//! on until another recorder has the camera.

use crate::recording::{HandOver, RecordingActor, Shared, Stop, TakeBack, UpdateSpec};
use actix::prelude::*;
use async_trait::async_trait;
use cloudcam_core::bus::Bus;
use cloudcam_core::owner::{Member, Members};
use cloudcam_proto::v1::CameraSpec;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long a graceful stop waits for the spool to be uploaded.
const SPOOL_DRAIN: Duration = Duration::from_secs(15);

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
    let spool = shared.spool.clone();
    cloudcam_core::owner::run(Recordings(shared), worker_id, GROUP, bus, state, shutdown).await?;
    if !spool.drained(SPOOL_DRAIN).await {
        tracing::warn!(
            "stopping with segments still in the spool; they are uploaded when a recorder starts on it again"
        );
    }
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
        // Both sides of the handover wait at most this long, one after the other.
        Duration::from_millis(2 * self.0.settings.handover_timeout_ms + 1000)
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

    /// Records on until the next recorder holds the stream, then ends where it begins.
    async fn hand_over(&self) {
        let _ = self.0.send(HandOver).await;
    }

    async fn take_back(&self) -> bool {
        self.0.send(TakeBack).await.unwrap_or(false)
    }

    fn alive(&self) -> bool {
        self.0.connected()
    }
}
