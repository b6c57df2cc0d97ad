//! The worker loop: turns ownership changes from the consumer group into camera actors.
//!
//! A revoked camera is handed over before the loop reads anything else: its actor stops
//! feeding Janus at once and keeps only the re-stream up until the new owner is live and the
//! recorders have cut over to the new re-stream (bounded by `handover_timeout_ms`), so a
//! planned move leaves no gap in the recording and the camera is pulled twice only for that
//! moment. A graceful stop leaves the group first and hands every camera over the same way.

use crate::camera::{CameraActor, HandOver, Shared, Stop, UpdateSpec};
use crate::config::CameraSettings;
use crate::report::Reporter;
use actix::prelude::*;
use cloudcam_core::bus::{Bus, SpecUpdate, owned_in};
use cloudcam_core::state::StateStore;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Consumer group of the ingest workers over the desired-state topic.
pub const GROUP: &str = "cloudcam-ingest";

/// Runs the worker until `shutdown` resolves; then stops every camera and returns.
/// Must run inside an actix system.
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
        state,
        restream,
        store,
    };
    crate::report::describe();
    let heartbeat =
        cloudcam_core::workers::spawn_heartbeat(shared.state.clone(), "ingest", worker_id.clone());
    let mut updates = bus.own_specs(GROUP)?;
    let mut owned = Owned::default();
    tracing::info!(worker = %worker_id, "ingest worker running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            update = updates.recv() => {
                let Some(update) = update else { break };
                owned.apply(update, &shared).await;
                crate::report::OWNED.set(owned.cameras.len() as f64);
                cloudcam_core::workers::announce(&heartbeat, owned.cameras.keys());
            }
        }
    }
    // Leave the group first (the consumer notices the closed channel), so the cameras' next
    // owners start while this worker still serves them.
    drop(updates);
    let others = cloudcam_core::workers::list(&*shared.state)
        .await
        .map(|ws| {
            ws.iter()
                .any(|w| w.kind == "ingest" && w.id != shared.worker_id)
        })
        .unwrap_or(false);
    if others {
        let ids: Vec<String> = owned.cameras.keys().cloned().collect();
        owned.hand_over(&ids).await;
    }
    for (_, (_, addr)) in owned.cameras.drain() {
        let _ = addr.send(Stop).await;
    }
    let deadline = tokio::time::Instant::now() + shared.settings.handover_timeout();
    while owned.leaving() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for (_, addr) in owned.handing_over.drain() {
        let _ = addr.send(Stop).await;
    }
    tracing::info!(worker = %worker_id, "ingest worker stopped");
    Ok(())
}

/// The cameras this worker owns, and those it is handing over to their next owner.
#[derive(Default)]
struct Owned {
    cameras: HashMap<String, (i32, Addr<CameraActor>)>,
    handing_over: HashMap<String, Addr<CameraActor>>,
}

impl Owned {
    async fn apply(&mut self, update: SpecUpdate, shared: &Shared) {
        self.leaving();
        match update {
            SpecUpdate::Upsert { partition, spec } => {
                let id = spec.camera_id.clone();
                // Back before its handover finished: start afresh.
                if let Some(addr) = self.handing_over.remove(&id) {
                    let _ = addr.send(Stop).await;
                }
                match self.cameras.get(&id) {
                    Some((_, addr)) if addr.connected() => addr.do_send(UpdateSpec(spec)),
                    _ => {
                        let addr = CameraActor::new(spec, shared.clone()).start();
                        self.cameras.insert(id, (partition, addr));
                    }
                }
            }
            SpecUpdate::Deleted { camera_id, .. } => {
                let leaving = self.handing_over.remove(&camera_id);
                let owned = self.cameras.remove(&camera_id).map(|(_, a)| a);
                for addr in leaving.into_iter().chain(owned) {
                    let _ = addr.send(Stop).await;
                }
            }
            SpecUpdate::Revoked { partitions, done } => {
                let ids = owned_in(&self.cameras, &partitions);
                // Every revoked actor has stopped feeding Janus before the group hands the
                // cameras to another worker.
                self.hand_over(&ids).await;
                if !ids.is_empty() {
                    tracing::info!(cameras = ids.len(), "revoked cameras handed over");
                }
                done.done();
            }
        }
    }

    async fn hand_over(&mut self, ids: &[String]) {
        let moving: Vec<(String, Addr<CameraActor>)> = ids
            .iter()
            .filter_map(|id| Some((id.clone(), self.cameras.remove(id)?.1)))
            .collect();
        futures::future::join_all(moving.iter().map(|(_, a)| a.send(HandOver))).await;
        self.handing_over.extend(moving);
    }

    /// Forgets handed-over actors that have finished; how many are still handing over.
    fn leaving(&mut self) -> usize {
        self.handing_over.retain(|_, a| a.connected());
        self.handing_over.len()
    }
}
