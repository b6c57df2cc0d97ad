//! The recorder loop: the `cloudcam-recorder` consumer group over the cameras' desired state;
//! one [`RecordingActor`] per owned camera whose recording is on.

use crate::recording::{RecordingActor, Shared, Stop, UpdateSpec};
use actix::prelude::*;
use cloudcam_core::bus::{Bus, SpecUpdate, owned_in};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

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
    let heartbeat = cloudcam_core::workers::spawn_heartbeat(
        shared.state.clone(),
        "recorder",
        shared.spool.worker_id.clone(),
    );
    actix::spawn(shared.spool.clone().run());
    let mut updates = bus.own_specs(GROUP)?;
    let mut cameras: HashMap<String, (i32, Addr<RecordingActor>)> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            update = updates.recv() => {
                let Some(update) = update else { break };
                match update {
                    SpecUpdate::Upsert { partition, spec } => {
                        let id = spec.camera_id.clone();
                        match (spec.recording, cameras.get(&id)) {
                            (true, Some((_, addr))) if addr.connected() => addr.do_send(UpdateSpec(spec)),
                            (true, _) => {
                                let addr = RecordingActor::new(spec, shared.clone()).start();
                                cameras.insert(id, (partition, addr));
                            }
                            (false, _) => stop(&mut cameras, &id).await,
                        }
                    }
                    SpecUpdate::Deleted { camera_id, .. } => stop(&mut cameras, &camera_id).await,
                    SpecUpdate::Revoked { partitions, done } => {
                        for id in owned_in(&cameras, &partitions) {
                            stop(&mut cameras, &id).await;
                        }
                        done.done();
                    }
                }
                crate::spool::RECORDING.set(cameras.len() as f64);
                cloudcam_core::workers::announce(&heartbeat, cameras.keys());
            }
        }
    }
    for (_, (_, addr)) in cameras.drain() {
        let _ = addr.send(Stop).await;
    }
    Ok(())
}

async fn stop(cameras: &mut HashMap<String, (i32, Addr<RecordingActor>)>, id: &str) {
    if let Some((_, addr)) = cameras.remove(id) {
        let _ = addr.send(Stop).await;
    }
}
