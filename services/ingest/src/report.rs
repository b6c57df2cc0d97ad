//! The one place where a fact about a camera is logged, counted, written to the shared status
//! and published on the bus, off the actors' thread. Storing and publishing each have a queue
//! of their own that keeps only the latest per camera, so neither Redis nor Kafka being away
//! makes them grow, and neither waits for the other: with the bus away statuses stay true.

use cloudcam_core::bus::Bus;
use cloudcam_core::camera::{CameraState, CameraStatus, status_key};
use cloudcam_core::metrics::{register_counter_vec, register_gauge_vec};
use cloudcam_core::outbox::EventOutbox;
use cloudcam_core::state::{StateStore, set_json};
use cloudcam_proto::v1;
use futures::StreamExt as _;
use prometheus::{GaugeVec, IntCounterVec};
use std::collections::HashMap;
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

/// Statuses waiting to be stored, the latest per camera.
type Unstored = HashMap<String, CameraStatus>;

/// Statuses stored at once.
const STORE_CONCURRENCY: usize = 16;

static UNPUBLISHED: LazyLock<prometheus::Gauge> = LazyLock::new(|| {
    cloudcam_core::metrics::register_gauge(
        "cloudcam_ingest_events_unpublished",
        "Camera events waiting for the bus (the latest per camera and kind)",
    )
});

/// Cheap to clone; every clone feeds the same two queues: statuses to store and events to
/// publish, each keeping only the latest per camera.
#[derive(Clone)]
pub struct Reporter {
    unstored: Arc<Mutex<Unstored>>,
    stored: Arc<Notify>,
    outbox: EventOutbox,
}

impl Reporter {
    /// Starts the storing and publishing tasks. Statuses expire after `status_ttl` unless
    /// refreshed, so a dead worker's cameras stop looking live. A status is stored whether or not
    /// its event can be published, so with the bus away statuses stay true.
    pub fn start(bus: Arc<dyn Bus>, state: Arc<dyn StateStore>, status_ttl: Duration) -> Self {
        let r = Self {
            unstored: Arc::default(),
            stored: Arc::default(),
            outbox: EventOutbox::start(bus, UNPUBLISHED.clone()),
        };
        tokio::spawn(r.clone().store_loop(state, status_ttl));
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

    /// Stores `status` (soon, coalesced per camera) and queues `kind` for the bus.
    fn report(&self, camera_id: &str, status: &CameraStatus, kind: Option<v1::camera_event::Kind>) {
        self.unstored
            .lock()
            .expect("reporter lock")
            .insert(camera_id.to_string(), status.clone());
        self.stored.notify_one();
        let Some(kind) = kind else { return };
        let event = v1::CameraEvent {
            schema_version: cloudcam_proto::SCHEMA_VERSION,
            camera_id: camera_id.to_string(),
            timestamp_ms: status.updated_ms,
            worker_id: status.worker_id.clone(),
            kind: Some(kind),
        };
        self.outbox.publish(event);
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
            live_unavailable: status.live_unavailable.clone(),
            audio_codec: status.audio_codec.clone(),
            push_url: status.push_url.clone(),
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
