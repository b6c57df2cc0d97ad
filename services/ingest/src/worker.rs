//! The worker loop: turns ownership changes from the consumer group into camera actors.
//! Revoked partitions stop their actors (and pipelines) before the loop reads anything else, so a
//! camera moves between workers without being pulled twice for longer than a moment.

use crate::camera::{CameraActor, Shared, Stop, UpdateSpec};
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
    let mut cameras: HashMap<String, (i32, Addr<CameraActor>)> = HashMap::new();
    tracing::info!(worker = %worker_id, "ingest worker running");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            update = updates.recv() => {
                let Some(update) = update else { break };
                apply(update, &mut cameras, &shared).await;
                crate::report::OWNED.set(cameras.len() as f64);
                cloudcam_core::workers::announce(&heartbeat, cameras.keys());
            }
        }
    }
    for (_, (_, addr)) in cameras.drain() {
        let _ = addr.send(Stop).await;
    }
    tracing::info!(worker = %worker_id, "ingest worker stopped");
    Ok(())
}

async fn apply(
    update: SpecUpdate,
    cameras: &mut HashMap<String, (i32, Addr<CameraActor>)>,
    shared: &Shared,
) {
    match update {
        SpecUpdate::Upsert { partition, spec } => {
            let id = spec.camera_id.clone();
            match cameras.get(&id) {
                Some((_, addr)) if addr.connected() => addr.do_send(UpdateSpec(spec)),
                _ => {
                    let addr = CameraActor::new(spec, shared.clone()).start();
                    cameras.insert(id, (partition, addr));
                }
            }
        }
        SpecUpdate::Deleted { camera_id, .. } => {
            if let Some((_, addr)) = cameras.remove(&camera_id) {
                let _ = addr.send(Stop).await;
            }
        }
        SpecUpdate::Revoked { partitions, done } => {
            let ids = owned_in(cameras, &partitions);
            // Stop them all at once, and only then let the group hand them to another worker.
            let stops = ids
                .iter()
                .filter_map(|id| cameras.remove(id))
                .map(|(_, a)| a.send(Stop));
            futures::future::join_all(stops).await;
            if !ids.is_empty() {
                tracing::info!(cameras = ids.len(), "revoked cameras stopped");
            }
            done.done();
        }
    }
}
