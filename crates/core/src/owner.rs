//! The owner loop that ingest workers and recorders share: it turns what the consumer group
//! says (cameras of owned partitions, revocations) into one member per camera, keeps the
//! worker's heartbeat listing what it serves, and decides what happens to a camera that is no
//! longer this worker's.
//!
//! - *Planned move* (a rebalance takes partitions away): every revoked member is handed over
//!   before the group may give its partitions to another worker (the revocation waits for
//!   it). What handing over means is the member's: an ingest camera keeps its re-stream until
//!   the new owner is live, a recording stops.
//! - *Lost assignment* (the group session ended without a rebalance: Kafka away longer than
//!   the session timeout, or this process stalled): the members keep running, since nobody
//!   else may have the cameras. Each is handed over as soon as another worker of the same kind
//!   lists the camera in its heartbeat, and kept as this worker's own again when the group
//!   gives its partition back.
//! - *Graceful stop*: the loop leaves the group first, then hands every member over when
//!   another worker of its kind is there to take them (else stops them), and waits for the
//!   handovers (bounded).

use crate::bus::{Bus, SpecUpdate};
use crate::state::StateStore;
use crate::workers;
use async_trait::async_trait;
use cloudcam_proto::v1::CameraSpec;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// One camera served by this worker (an actor, in practice).
#[async_trait]
pub trait Member: Send + Sync + 'static {
    /// A new desired state of the camera.
    fn update(&self, spec: CameraSpec);
    /// Stops the member; resolves once it is down.
    async fn stop(&self);
    /// The camera moved to another worker: give it up (resolves once that has begun); the
    /// member ends by itself, and says so through [`Member::alive`].
    async fn hand_over(&self);
    /// The camera's partition came back while the member hands it over: go on serving it as
    /// before if it still can (`true`), without a break; `false` and it is stopped, and a new
    /// member starts.
    async fn take_back(&self) -> bool {
        false
    }
    fn alive(&self) -> bool;
}

/// What kind of worker runs the loop, and how its members are made.
pub trait Members: Send + 'static {
    /// `ingest` or `recorder`: the kind in the workers' registry.
    fn kind(&self) -> &'static str;
    /// Whether this kind serves the camera at all (a recorder only records what records).
    fn serves(&self, spec: &CameraSpec) -> bool;
    fn start(&self, spec: CameraSpec) -> Box<dyn Member>;
    /// How long a graceful stop waits for its handovers.
    fn handover_wait(&self) -> Duration;
    /// The members changed: `serving` cameras now (owned and kept after a lost assignment).
    fn changed(&self, _serving: usize) {}
}

struct Entry {
    partition: i32,
    member: Box<dyn Member>,
}

/// How often members kept after a lost assignment look for a worker that took them.
const ORPHAN_CHECK: Duration = Duration::from_secs(1);

/// Runs until `shutdown` resolves (or the bus ends); must run inside the async runtime that
/// the members' actors live on.
pub async fn run(
    members: impl Members,
    worker_id: String,
    group: &str,
    bus: Arc<dyn Bus>,
    state: Arc<dyn StateStore>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::bus::BusError> {
    let kind = members.kind();
    let heartbeat = workers::spawn_heartbeat(state.clone(), kind, worker_id.clone());
    let mut updates = bus.own_specs(group)?;
    let mut owner = Owner {
        members,
        owned: HashMap::new(),
        orphans: HashMap::new(),
        leaving: HashMap::new(),
    };
    let mut orphan_check = tokio::time::interval(ORPHAN_CHECK);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            update = updates.recv() => {
                let Some(update) = update else { break };
                owner.apply(update).await;
            }
            _ = orphan_check.tick(), if !owner.orphans.is_empty() => {
                if let Ok(all) = workers::list(&*state).await {
                    let taken: Vec<String> = owner
                        .orphans
                        .keys()
                        .filter(|id| {
                            all.iter().any(|w| {
                                w.kind == kind && w.id != worker_id && w.cameras.contains(id)
                            })
                        })
                        .cloned()
                        .collect();
                    for id in taken {
                        tracing::info!(camera = %id, "another worker has the camera now; handing it over");
                        owner.hand_over_orphan(&id).await;
                    }
                }
            }
        }
        owner.leaving.retain(|_, m| m.alive());
        owner
            .members
            .changed(owner.owned.len() + owner.orphans.len());
        workers::announce(&heartbeat, owner.owned.keys().chain(owner.orphans.keys()));
    }
    // Leave the group first (the consumer notices the closed channel), so the cameras' next
    // owners start while this worker still serves them.
    drop(updates);
    let others = workers::list(&*state)
        .await
        .map(|ws| ws.iter().any(|w| w.kind == kind && w.id != worker_id))
        .unwrap_or(false);
    let all: Vec<(String, Entry)> = owner.owned.drain().chain(owner.orphans.drain()).collect();
    for (id, e) in all {
        if others {
            e.member.hand_over().await;
            owner.leaving.insert(id, e.member);
        } else {
            e.member.stop().await;
        }
    }
    let deadline = tokio::time::Instant::now() + owner.members.handover_wait();
    while owner.leaving.values().any(|m| m.alive()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whatever has not handed over by now stops.
    for (_, m) in owner.leaving.drain().filter(|(_, m)| m.alive()) {
        m.stop().await;
    }
    Ok(())
}

struct Owner<M: Members> {
    members: M,
    /// Cameras of the partitions this worker owns.
    owned: HashMap<String, Entry>,
    /// Cameras whose partitions were lost with the group session: kept until another worker
    /// has them or the partition comes back.
    orphans: HashMap<String, Entry>,
    /// Members handing over.
    leaving: HashMap<String, Box<dyn Member>>,
}

impl<M: Members> Owner<M> {
    async fn apply(&mut self, update: SpecUpdate) {
        match update {
            SpecUpdate::Upsert { partition, spec } => {
                let id = spec.camera_id.clone();
                // Back before its handover ended (a rebalance can revoke a partition and give
                // it back): the member goes on if it can, else it goes and a new one starts
                // (one member per camera on a worker).
                if let Some(m) = self.leaving.remove(&id) {
                    if m.alive() && m.take_back().await {
                        tracing::info!(camera = %id, "the camera's partition is back before its handover ended; kept running");
                        self.owned.insert(
                            id.clone(),
                            Entry {
                                partition,
                                member: m,
                            },
                        );
                    } else {
                        m.stop().await;
                    }
                }
                if let Some(e) = self.orphans.remove(&id) {
                    tracing::info!(camera = %id, "the camera's partition is back; kept running");
                    self.owned.insert(id.clone(), e);
                }
                let serves = self.members.serves(&spec);
                match self.owned.get_mut(&id) {
                    Some(e) if serves && e.member.alive() => {
                        e.partition = partition;
                        e.member.update(spec);
                    }
                    _ if serves => {
                        if let Some(old) = self.owned.remove(&id) {
                            old.member.stop().await;
                        }
                        let member = self.members.start(spec);
                        self.owned.insert(id, Entry { partition, member });
                    }
                    _ => {
                        if let Some(old) = self.owned.remove(&id) {
                            old.member.stop().await;
                        }
                    }
                }
            }
            SpecUpdate::Deleted { camera_id, .. } => {
                let entries = [
                    self.owned.remove(&camera_id),
                    self.orphans.remove(&camera_id),
                ];
                let members = entries.into_iter().flatten().map(|e| e.member);
                for m in members.chain(self.leaving.remove(&camera_id)) {
                    m.stop().await;
                }
            }
            SpecUpdate::Revoked {
                partitions,
                lost,
                done,
            } => {
                let ids: Vec<String> = self
                    .owned
                    .iter()
                    .filter(|(_, e)| partitions.contains(&e.partition))
                    .map(|(id, _)| id.clone())
                    .collect();
                if lost {
                    if !ids.is_empty() {
                        tracing::warn!(
                            cameras = ids.len(),
                            "partitions lost with the group session (Kafka away?): cameras kept until another worker has them"
                        );
                    }
                    for id in ids {
                        if let Some(e) = self.owned.remove(&id) {
                            self.orphans.insert(id, e);
                        }
                    }
                } else {
                    // Every revoked member has begun its handover before the group gives
                    // the cameras to another worker.
                    let moving: Vec<(String, Entry)> = ids
                        .into_iter()
                        .filter_map(|id| Some((id.clone(), self.owned.remove(&id)?)))
                        .collect();
                    futures::future::join_all(moving.iter().map(|(_, e)| e.member.hand_over()))
                        .await;
                    if !moving.is_empty() {
                        tracing::info!(cameras = moving.len(), "revoked cameras handed over");
                    }
                    self.leaving
                        .extend(moving.into_iter().map(|(id, e)| (id, e.member)));
                }
                done.done();
            }
        }
    }

    async fn hand_over_orphan(&mut self, id: &str) {
        if let Some(e) = self.orphans.remove(id) {
            e.member.hand_over().await;
            self.leaving.insert(id.to_string(), e.member);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Ack, BusError};
    use crate::state::MemoryState;
    use cloudcam_proto::v1::CameraEvent;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::sync::mpsc;

    /// A bus whose ownership updates the test writes.
    struct ScriptBus(Mutex<Option<mpsc::UnboundedReceiver<SpecUpdate>>>);

    #[async_trait]
    impl Bus for ScriptBus {
        async fn put_spec(&self, _: &str, _: Option<&CameraSpec>) -> Result<(), BusError> {
            Ok(())
        }
        async fn publish_event(&self, _: &CameraEvent) -> Result<(), BusError> {
            Ok(())
        }
        fn own_specs(&self, _: &str) -> Result<mpsc::UnboundedReceiver<SpecUpdate>, BusError> {
            Ok(self.0.lock().unwrap().take().expect("one owner loop"))
        }
        fn events(&self) -> Result<mpsc::UnboundedReceiver<CameraEvent>, BusError> {
            Ok(mpsc::unbounded_channel().1)
        }
    }

    type Log = Arc<Mutex<Vec<String>>>;

    struct Fake {
        id: String,
        log: Log,
        alive: Arc<AtomicBool>,
    }

    #[async_trait]
    impl Member for Fake {
        fn update(&self, _: CameraSpec) {
            self.log.lock().unwrap().push(format!("update {}", self.id));
        }
        async fn stop(&self) {
            self.alive.store(false, Ordering::SeqCst);
            self.log.lock().unwrap().push(format!("stop {}", self.id));
        }
        async fn hand_over(&self) {
            // Handed over at once, but for "slow" ones.
            if !self.id.starts_with("slow") {
                self.alive.store(false, Ordering::SeqCst);
            }
            self.log
                .lock()
                .unwrap()
                .push(format!("hand over {}", self.id));
        }
        async fn take_back(&self) -> bool {
            self.log
                .lock()
                .unwrap()
                .push(format!("take back {}", self.id));
            true
        }
        fn alive(&self) -> bool {
            self.alive.load(Ordering::SeqCst)
        }
    }

    struct Fakes(Log);

    impl Members for Fakes {
        fn kind(&self) -> &'static str {
            "ingest"
        }
        fn serves(&self, spec: &CameraSpec) -> bool {
            spec.name != "not mine"
        }
        fn start(&self, spec: CameraSpec) -> Box<dyn Member> {
            self.0
                .lock()
                .unwrap()
                .push(format!("start {}", spec.camera_id));
            Box::new(Fake {
                id: spec.camera_id,
                log: self.0.clone(),
                alive: Arc::new(AtomicBool::new(true)),
            })
        }
        fn handover_wait(&self) -> Duration {
            Duration::from_millis(100)
        }
    }

    fn upsert(id: &str, partition: i32) -> SpecUpdate {
        SpecUpdate::Upsert {
            partition,
            spec: CameraSpec {
                camera_id: id.into(),
                ..Default::default()
            },
        }
    }

    fn revoked(partitions: &[i32], lost: bool) -> SpecUpdate {
        SpecUpdate::Revoked {
            partitions: partitions.to_vec(),
            lost,
            done: Ack::none(),
        }
    }

    /// Runs the loop on scripted updates; returns the members' log once `until` is in it.
    async fn script(
        updates: Vec<SpecUpdate>,
        state: Arc<dyn StateStore>,
        until: &str,
    ) -> Vec<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        for u in updates {
            tx.send(u).unwrap();
        }
        let log: Log = Arc::default();
        let bus: Arc<dyn Bus> = Arc::new(ScriptBus(Mutex::new(Some(rx))));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            Fakes(log.clone()),
            "w1".into(),
            "group",
            bus,
            state,
            async move {
                let _ = stop_rx.await;
            },
        ));
        for _ in 0..100 {
            if log.lock().unwrap().iter().any(|l| l == until) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap().unwrap();
        drop(tx);
        log.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_planned_revocation_hands_the_partitions_cameras_over() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
        let log = script(
            vec![upsert("a", 1), upsert("b", 2), revoked(&[1], false)],
            state,
            "hand over a",
        )
        .await;
        assert_eq!(log[..3], ["start a", "start b", "hand over a"]);
        // Alone at the graceful stop: "b" is stopped, not handed over.
        assert_eq!(log[3..], ["stop b"]);
    }

    #[tokio::test]
    async fn a_lost_assignment_keeps_the_cameras_until_the_partition_is_back() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
        let log = script(
            vec![
                upsert("a", 1),
                revoked(&[1], true),
                upsert("a", 1),
                upsert("c", 3),
            ],
            state,
            "start c",
        )
        .await;
        // Kept running through the lost session and updated, never restarted.
        assert_eq!(log[..3], ["start a", "update a", "start c"]);
    }

    #[tokio::test]
    async fn a_partition_back_before_the_handover_ended_keeps_its_member() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
        let log = script(
            vec![
                upsert("slow", 1),
                revoked(&[1], false),
                upsert("slow", 1),
                upsert("c", 3),
            ],
            state,
            "start c",
        )
        .await;
        assert_eq!(
            log[..5],
            [
                "start slow",
                "hand over slow",
                "take back slow",
                "update slow",
                "start c"
            ]
        );
    }

    #[tokio::test]
    async fn a_kept_camera_is_handed_over_once_another_worker_has_it() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
        let other = workers::spawn_heartbeat(state.clone(), "ingest", "w2".into());
        other.send(vec!["a".into()]).unwrap();
        let log = script(
            vec![upsert("a", 1), upsert("b", 2), revoked(&[1, 2], true)],
            state,
            "hand over a",
        )
        .await;
        assert_eq!(log[..3], ["start a", "start b", "hand over a"]);
        // "b" nobody else has: kept, and at the graceful stop handed over (w2 is there).
        assert_eq!(log[3..], ["hand over b"]);
    }

    #[tokio::test]
    async fn deletions_and_cameras_this_kind_does_not_serve_stop_their_members() {
        let state: Arc<dyn StateStore> = Arc::new(MemoryState::default());
        let mut not_mine = upsert("b", 2);
        if let SpecUpdate::Upsert { spec, .. } = &mut not_mine {
            spec.name = "not mine".into();
        }
        let log = script(
            vec![
                upsert("a", 1),
                upsert("b", 2),
                revoked(&[1], true),
                SpecUpdate::Deleted {
                    partition: 1,
                    camera_id: "a".into(),
                },
                not_mine,
            ],
            state,
            "stop b",
        )
        .await;
        assert_eq!(log, ["start a", "start b", "stop a", "stop b"]);
    }
}
