//! The ingest worker: the shared owner loop ([`cloudcam_core::owner`]) over the consumer group
//! `cloudcam-ingest`, with one [`CameraActor`] per owned camera (and one more for its substream).
//!
//! A revoked camera is handed over: its actor stops feeding Janus at once and keeps only the
//! re-stream up until the new owner is live and the recorders have cut over to the new
//! re-stream (bounded by `handover_timeout_ms`), so a planned move leaves no gap in the
//! recording and the camera is pulled twice only for that moment. A graceful stop leaves the
//! group first and hands every camera over the same way. Cameras whose partitions were lost
//! with the group session (Kafka away) keep running.

use crate::camera::{CameraActor, HandOver, Shared, Stop, TakeBack, UpdateSpec};
use crate::config::CameraSettings;
use crate::report::Reporter;
use actix::prelude::*;
use async_trait::async_trait;
use cloudcam_core::bus::Bus;
use cloudcam_core::camera::substream_spec;
use cloudcam_core::owner::{Member, Members};
use cloudcam_core::state::StateStore;
use cloudcam_proto::v1::CameraSpec;
use futures::future::join_all;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Consumer group of the ingest workers over the desired-state topic.
pub const GROUP: &str = "cloudcam-ingest";

/// Runs the worker until `shutdown` resolves; then hands over or stops every camera and
/// returns. Must run inside an actix system.
pub async fn run(
    worker_id: String,
    settings: CameraSettings,
    restream: Option<Arc<crate::restream::Restream>>,
    store: Option<Arc<dyn object_store::ObjectStore>>,
    bus: Arc<dyn Bus>,
    state: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    gstreamer::init()?;
    let status_ttl = settings.status_ttl();
    let shared = Shared {
        worker_id: worker_id.clone(),
        settings,
        reporter: Reporter::start(bus.clone(), state.clone(), status_ttl),
        state: state.clone(),
        restream,
        store,
    };
    crate::report::describe();
    tracing::info!(worker = %worker_id, "ingest worker running");
    cloudcam_core::owner::run(
        Cameras(shared),
        worker_id.clone(),
        GROUP,
        bus,
        state,
        shutdown,
    )
    .await?;
    tracing::info!(worker = %worker_id, "ingest worker stopped");
    Ok(())
}

/// How the owner loop makes and drives camera actors.
struct Cameras(Shared);

impl Members for Cameras {
    fn kind(&self) -> &'static str {
        "ingest"
    }

    fn serves(&self, _: &CameraSpec) -> bool {
        true
    }

    fn start(&self, spec: CameraSpec) -> Box<dyn Member> {
        let sub = substream_spec(&spec).map(|s| self.actor(s));
        Box::new(Camera {
            main: self.actor(spec),
            sub: Mutex::new(sub),
            cameras: Cameras(self.0.clone()),
        })
    }

    fn handover_wait(&self) -> Duration {
        self.0.settings.handover_timeout() + Duration::from_millis(500)
    }

    fn changed(&self, serving: usize) {
        crate::report::OWNED.set(serving as f64);
    }
}

impl Cameras {
    fn actor(&self, spec: CameraSpec) -> Addr<CameraActor> {
        CameraActor::new(spec, self.0.clone()).start()
    }
}

/// A camera as the owner loop sees it: the actor of its main stream and, when it has one, the
/// actor of its substream (started, changed and stopped with the camera's spec; moved with it).
struct Camera {
    main: Addr<CameraActor>,
    sub: Mutex<Option<Addr<CameraActor>>>,
    cameras: Cameras,
}

impl Camera {
    fn actors(&self) -> Vec<Addr<CameraActor>> {
        let sub = self.sub.lock().unwrap().clone();
        std::iter::once(self.main.clone()).chain(sub).collect()
    }
}

#[async_trait]
impl Member for Camera {
    fn update(&self, spec: CameraSpec) {
        let mut sub = self.sub.lock().unwrap();
        match (substream_spec(&spec), sub.take()) {
            (Some(s), Some(actor)) => {
                actor.do_send(UpdateSpec(s));
                *sub = Some(actor);
            }
            (Some(s), None) => *sub = Some(self.cameras.actor(s)),
            (None, Some(actor)) => actor.do_send(Stop),
            (None, None) => {}
        }
        self.main.do_send(UpdateSpec(spec));
    }

    async fn stop(&self) {
        join_all(self.actors().iter().map(|a| a.send(Stop))).await;
    }

    async fn hand_over(&self) {
        join_all(self.actors().iter().map(|a| a.send(HandOver))).await;
    }

    async fn take_back(&self) -> bool {
        let taken = join_all(self.actors().iter().map(|a| a.send(TakeBack))).await;
        taken.into_iter().all(|t| t.unwrap_or(false))
    }

    fn alive(&self) -> bool {
        self.main.connected()
    }
}
