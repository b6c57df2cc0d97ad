//! The one place where a fact about a camera is logged, counted, written to the shared status
//! and published on the bus — in that order, off the actors' thread. Both queues keep only the
//! latest per camera, so neither Redis nor Kafka being away makes them grow, and the stored
//! status does not wait for the bus.

use cloudcam_core::bus::Bus;
use cloudcam_core::camera::{CameraState, CameraStatus, status_key};
use cloudcam_core::metrics::{register_counter_vec, register_gauge_vec};
use cloudcam_core::state::{StateStore, set_json};
use cloudcam_proto::v1;
use futures::StreamExt as _;
use prometheus::{GaugeVec, IntCounterVec};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

static STATE_CHANGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_ingest_camera_state_changes_total",
        "Camera state changes, by new state",
        &["state"],
    )
});
pub static FRAMES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_ingest_camera_frames_total",
        "H.264 access units relayed, per camera",
        &["camera"],
    )
});
pub static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_ingest_camera_bytes_total",
        "H.264 bytes relayed, per camera",
        &["camera"],
    )
});
pub static RECONNECTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_ingest_camera_reconnects_total",
        "Reconnections to a camera after a failure, per camera",
        &["camera"],
    )
});
pub static RTP_PACKETS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_counter_vec(
        "cloudcam_ingest_camera_rtp_packets_total",
        "RTP packets forwarded to Janus and the re-stream, per camera",
        &["camera"],
    )
});
pub static LAST_FRAME_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_ingest_camera_last_frame_age_seconds",
        "Seconds since the last video frame arrived from the camera",
        &["camera"],
    )
});
static STATE: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_ingest_camera_state",
        "1 for a camera's current state on this worker (one series per camera)",
        &["camera", "state"],
    )
});
pub static OWNED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_ingest_cameras",
        "Cameras this worker owns (one actor each)",
    )
});
static FPS: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_ingest_camera_fps",
        "Frames per second relayed over the last health interval",
        &["camera"],
    )
});
static UP: LazyLock<GaugeVec> = LazyLock::new(|| {
    register_gauge_vec(
        "cloudcam_ingest_camera_up",
        "1 while the camera is live on this worker",
        &["camera"],
    )
});

/// Registers this worker's metrics up front, so they are listed before the first camera.
pub fn describe() {
    LazyLock::force(&OWNED);
    cloudcam_core::metrics::describe();
}

/// Events waiting to be published, the latest per camera and kind: while Kafka is away the
/// queue holds at most two events per camera (its state and its health), never a backlog.
#[derive(Default)]
struct Outbox {
    events: HashMap<(String, EventKind), v1::CameraEvent>,
    /// Publishing order of the keys in `events` (each once).
    order: VecDeque<(String, EventKind)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum EventKind {
    State,
    Health,
}

impl Outbox {
    /// Queues `event`, replacing an unpublished one of the same camera and kind in its place.
    fn put(&mut self, key: (String, EventKind), event: v1::CameraEvent) {
        if self.events.insert(key.clone(), event).is_none() {
            self.order.push_back(key);
        }
    }

    /// Up to `n` events to publish now, oldest first.
    fn take(&mut self, n: usize) -> Vec<((String, EventKind), v1::CameraEvent)> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some(ev) = self.events.remove(&key) {
                out.push((key, ev));
            }
        }
        out
    }

    /// Puts back an event that could not be published, unless a newer one took its place.
    fn retry(&mut self, key: (String, EventKind), event: v1::CameraEvent) {
        if !self.events.contains_key(&key) {
            self.events.insert(key.clone(), event);
            self.order.push_front(key);
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// Statuses waiting to be stored, the latest per camera.
type Unstored = HashMap<String, CameraStatus>;

/// Events published at once (never two of one camera and kind).
const PUBLISH_BATCH: usize = 64;
/// Statuses stored at once.
const STORE_CONCURRENCY: usize = 16;

static UNPUBLISHED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_ingest_events_unpublished",
        "Camera events waiting for the bus (the latest per camera and kind)",
    )
});

/// Cheap to clone; every clone feeds the same two queues: statuses to store (first) and events
/// to publish (then), each keeping only the latest per camera.
#[derive(Clone)]
pub struct Reporter {
    unstored: Arc<Mutex<Unstored>>,
    stored: Arc<Notify>,
    outbox: Arc<Mutex<Outbox>>,
    queued: Arc<Notify>,
}

impl Reporter {
    /// Starts the storing and publishing tasks. Statuses expire after `status_ttl` unless
    /// refreshed, so a dead worker's cameras stop looking live. A status is stored before its
    /// event is published, so with the bus away statuses stay true.
    pub fn start(bus: Arc<dyn Bus>, state: Arc<dyn StateStore>, status_ttl: Duration) -> Self {
        let r = Self {
            unstored: Arc::default(),
            stored: Arc::default(),
            outbox: Arc::default(),
            queued: Arc::default(),
        };
        LazyLock::force(&UNPUBLISHED);
        tokio::spawn(r.clone().store_loop(state, status_ttl));
        tokio::spawn(r.clone().publish_loop(bus));
        r
    }

    async fn store_loop(self, state: Arc<dyn StateStore>, status_ttl: Duration) {
        loop {
            self.stored.notified().await;
            let batch = std::mem::take(&mut *self.unstored.lock().expect("reporter lock"));
            futures::stream::iter(batch)
                .for_each_concurrent(STORE_CONCURRENCY, |(camera_id, status)| {
                    let state = state.clone();
                    async move {
                        if let Err(e) =
                            set_json(&*state, &status_key(&camera_id), &status, Some(status_ttl))
                                .await
                        {
                            tracing::warn!(camera = %camera_id, error = %e, "cannot store camera status");
                        }
                    }
                })
                .await;
        }
    }

    async fn publish_loop(self, bus: Arc<dyn Bus>) {
        let mut pause = Duration::from_millis(200);
        loop {
            let batch = self
                .outbox
                .lock()
                .expect("reporter lock")
                .take(PUBLISH_BATCH);
            if batch.is_empty() {
                UNPUBLISHED.set(0.0);
                self.queued.notified().await;
                continue;
            }
            let results = futures::future::join_all(batch.into_iter().map(|(key, event)| {
                let bus = bus.clone();
                async move {
                    let r = bus.publish_event(&event).await;
                    (key, event, r)
                }
            }))
            .await;
            let mut failed = None;
            {
                let mut outbox = self.outbox.lock().expect("reporter lock");
                for (key, event, r) in results.into_iter().rev() {
                    if let Err(e) = r {
                        failed = Some(e);
                        outbox.retry(key, event);
                    }
                }
                UNPUBLISHED.set(outbox.len() as f64);
            }
            match failed {
                Some(e) => {
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "cannot publish camera events; they wait (the latest per camera)");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                None => pause = Duration::from_millis(200),
            }
        }
    }

    /// Stores `status` (soon, coalesced per camera) and queues `kind` for the bus.
    fn report(&self, camera_id: &str, status: &CameraStatus, kind: Option<v1::camera_event::Kind>) {
        self.unstored
            .lock()
            .expect("reporter lock")
            .insert(camera_id.to_string(), status.clone());
        self.stored.notify_one();
        let Some(kind) = kind else { return };
        let key = match kind {
            v1::camera_event::Kind::Health(_) => EventKind::Health,
            _ => EventKind::State,
        };
        let event = v1::CameraEvent {
            schema_version: cloudcam_proto::SCHEMA_VERSION,
            camera_id: camera_id.to_string(),
            timestamp_ms: status.updated_ms,
            worker_id: status.worker_id.clone(),
            kind: Some(kind),
        };
        self.outbox
            .lock()
            .expect("reporter lock")
            .put((camera_id.to_string(), key), event);
        self.queued.notify_one();
    }

    /// A camera changed state.
    pub fn state(&self, camera_id: &str, status: &CameraStatus, attempt: u32) {
        STATE_CHANGES
            .with_label_values(&[status.state.as_str()])
            .inc();
        UP.with_label_values(&[camera_id])
            .set(f64::from(u8::from(status.state == CameraState::Live)));
        for s in CameraState::ALL {
            if s != status.state {
                let _ = STATE.remove_label_values(&[camera_id, s.as_str()]);
            }
        }
        STATE
            .with_label_values(&[camera_id, status.state.as_str()])
            .set(1.0);
        if matches!(
            status.state,
            CameraState::Live | CameraState::Connecting | CameraState::Stopped | CameraState::Idle
        ) {
            tracing::info!(camera = %camera_id, state = status.state.as_str(), reason = %status.reason, attempt, "camera state");
        } else {
            tracing::warn!(camera = %camera_id, state = status.state.as_str(), reason = %status.reason, attempt, "camera state");
        }
        let kind = v1::camera_event::Kind::State(v1::StateChanged {
            state: v1::CameraState::from(status.state) as i32,
            reason: status.reason.clone(),
            attempt,
            codec: status.codec.clone(),
            width: status.width,
            height: status.height,
            restream_url: status.restream_url.clone(),
        });
        self.report(camera_id, status, Some(kind));
    }

    /// Periodic health of a live camera.
    pub fn health(&self, camera_id: &str, status: &CameraStatus) {
        FPS.with_label_values(&[camera_id]).set(status.fps);
        let kind = v1::camera_event::Kind::Health(v1::Health {
            fps: status.fps,
            bitrate_bps: status.bitrate_bps,
            last_frame_ms: status.last_frame_ms,
            reconnects: status.reconnects,
            frames: 0,
            bytes: 0,
        });
        self.report(camera_id, status, Some(kind));
    }

    /// Re-stores an unchanged status before it expires.
    pub fn refresh(&self, camera_id: &str, status: &CameraStatus) {
        self.report(camera_id, status, None);
    }

    /// The camera left this worker: drop its per-camera gauges.
    pub fn gone(&self, camera_id: &str) {
        for m in [&*FPS, &*UP, &*LAST_FRAME_AGE] {
            let _ = m.remove_label_values(&[camera_id]);
        }
        for s in CameraState::ALL {
            let _ = STATE.remove_label_values(&[camera_id, s.as_str()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(camera: &str, ts: i64) -> v1::CameraEvent {
        v1::CameraEvent {
            camera_id: camera.into(),
            timestamp_ms: ts,
            ..Default::default()
        }
    }

    fn key(camera: &str, kind: EventKind) -> (String, EventKind) {
        (camera.to_string(), kind)
    }

    #[test]
    fn the_outbox_keeps_the_latest_event_per_camera_and_kind_in_place() {
        let mut o = Outbox::default();
        for ts in 0..1000 {
            o.put(key("a", EventKind::State), event("a", ts));
            o.put(key("b", EventKind::Health), event("b", ts));
        }
        o.put(key("a", EventKind::Health), event("a", 5));
        assert_eq!(o.len(), 3, "bounded by cameras, not by time away");
        let taken = o.take(2);
        assert_eq!(taken[0].0, key("a", EventKind::State));
        assert_eq!(taken[0].1.timestamp_ms, 999);
        assert_eq!(taken[1].0, key("b", EventKind::Health));
        // A failed publish goes back first, unless a newer event replaced it meanwhile.
        o.put(key("b", EventKind::Health), event("b", 1000));
        o.retry(taken[1].0.clone(), taken[1].1.clone());
        o.retry(taken[0].0.clone(), taken[0].1.clone());
        let rest = o.take(10);
        let got: Vec<_> = rest
            .iter()
            .map(|(k, e)| (k.clone(), e.timestamp_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                (key("a", EventKind::State), 999),
                (key("a", EventKind::Health), 5),
                (key("b", EventKind::Health), 1000),
            ]
        );
        assert_eq!(o.len(), 0);
    }
}
