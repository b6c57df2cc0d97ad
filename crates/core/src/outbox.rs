//! Camera events on their way to the bus, off the caller's task: [`EventOutbox::publish`]
//! never waits for Kafka. While Kafka is away the queue keeps only the latest event per camera
//! and kind (its state, its health, its newest segment), so it is bounded by the cameras, not
//! by the time Kafka is away; the facts themselves are stored in Redis first and do not wait.

use crate::bus::Bus;
use cloudcam_proto::v1;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Events published at once (never two of one camera and kind).
const PUBLISH_BATCH: usize = 64;
/// The longest pause between attempts while the bus is away.
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Which event of a camera a newer one replaces.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Slot {
    State,
    Health,
    Segment,
}

fn slot(event: &v1::CameraEvent) -> Slot {
    match event.kind {
        Some(v1::camera_event::Kind::Health(_)) => Slot::Health,
        Some(v1::camera_event::Kind::Segment(_)) => Slot::Segment,
        _ => Slot::State,
    }
}

type Key = (String, Slot);

#[derive(Default)]
struct Queue {
    events: HashMap<Key, v1::CameraEvent>,
    /// Publishing order of the keys in `events` (each once).
    order: VecDeque<Key>,
}

impl Queue {
    /// Queues `event`, replacing an unpublished one of the same camera and kind in its place.
    fn put(&mut self, event: v1::CameraEvent) {
        let key = (event.camera_id.clone(), slot(&event));
        if self.events.insert(key.clone(), event).is_none() {
            self.order.push_back(key);
        }
    }

    /// Up to `n` events to publish now, oldest first.
    fn take(&mut self, n: usize) -> Vec<v1::CameraEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some(ev) = self.events.remove(&key) {
                out.push(ev);
            }
        }
        out
    }

    /// Puts back an event that could not be published, unless a newer one took its place.
    fn retry(&mut self, event: v1::CameraEvent) {
        let key = (event.camera_id.clone(), slot(&event));
        if !self.events.contains_key(&key) {
            self.events.insert(key.clone(), event);
            self.order.push_front(key);
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// Cheap to clone; every clone feeds the same queue and its one publishing task.
#[derive(Clone)]
pub struct EventOutbox {
    queue: Arc<Mutex<Queue>>,
    queued: Arc<Notify>,
}

impl EventOutbox {
    /// Starts the publishing task (on the current Tokio runtime). `unpublished` is the
    /// service's gauge of events waiting for the bus.
    pub fn start(bus: Arc<dyn Bus>, unpublished: prometheus::Gauge) -> Self {
        let outbox = Self {
            queue: Arc::default(),
            queued: Arc::default(),
        };
        tokio::spawn(outbox.clone().publish_loop(bus, unpublished));
        outbox
    }

    /// Queues `event` for the bus and returns at once.
    pub fn publish(&self, event: v1::CameraEvent) {
        self.queue.lock().expect("outbox lock").put(event);
        self.queued.notify_one();
    }

    async fn publish_loop(self, bus: Arc<dyn Bus>, unpublished: prometheus::Gauge) {
        let mut pause = Duration::from_millis(200);
        loop {
            let batch = self.queue.lock().expect("outbox lock").take(PUBLISH_BATCH);
            if batch.is_empty() {
                unpublished.set(0.0);
                self.queued.notified().await;
                continue;
            }
            let results = futures::future::join_all(batch.into_iter().map(|event| {
                let bus = bus.clone();
                async move {
                    let r = bus.publish_event(&event).await;
                    (event, r)
                }
            }))
            .await;
            let mut failed = None;
            {
                let mut queue = self.queue.lock().expect("outbox lock");
                for (event, r) in results.into_iter().rev() {
                    if let Err(e) = r {
                        failed = Some(e);
                        queue.retry(event);
                    }
                }
                unpublished.set(queue.len() as f64);
            }
            match failed {
                Some(e) => {
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "cannot publish camera events; they wait (the latest per camera and kind)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                None => pause = Duration::from_millis(200),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(camera: &str, slot: Slot, ts: i64) -> v1::CameraEvent {
        let kind = match slot {
            Slot::State => v1::camera_event::Kind::State(Default::default()),
            Slot::Health => v1::camera_event::Kind::Health(Default::default()),
            Slot::Segment => v1::camera_event::Kind::Segment(Default::default()),
        };
        v1::CameraEvent {
            camera_id: camera.into(),
            timestamp_ms: ts,
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn keys(events: &[v1::CameraEvent]) -> Vec<(String, Slot, i64)> {
        events
            .iter()
            .map(|e| (e.camera_id.clone(), slot(e), e.timestamp_ms))
            .collect()
    }

    #[test]
    fn the_queue_keeps_the_latest_event_per_camera_and_kind_in_place() {
        let mut q = Queue::default();
        for ts in 0..1000 {
            q.put(event("a", Slot::State, ts));
            q.put(event("b", Slot::Health, ts));
            q.put(event("b", Slot::Segment, ts));
        }
        q.put(event("a", Slot::Health, 5));
        assert_eq!(q.len(), 4, "bounded by cameras, not by time away");
        let taken = q.take(2);
        assert_eq!(
            keys(&taken),
            vec![
                ("a".into(), Slot::State, 999),
                ("b".into(), Slot::Health, 999)
            ]
        );
        // A failed publish goes back first, unless a newer event replaced it meanwhile.
        q.put(event("b", Slot::Health, 1000));
        q.retry(taken[1].clone());
        q.retry(taken[0].clone());
        assert_eq!(
            keys(&q.take(10)),
            vec![
                ("a".into(), Slot::State, 999),
                ("b".into(), Slot::Segment, 999),
                ("a".into(), Slot::Health, 5),
                ("b".into(), Slot::Health, 1000),
            ]
        );
        assert_eq!(q.len(), 0);
    }
}
