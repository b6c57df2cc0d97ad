//! `CameraActor`: owns one camera on this worker — its relay pipeline, its state machine
//! (connecting → live → stalled/unreachable/… → reconnect with capped exponential backoff) and
//! its health reports. A failing camera only ever restarts its own pipeline.

use crate::config::CameraSettings;
use crate::pipeline::{Counters, FailureKind, PipelineEvent, Relay, Source};
use crate::report::{BYTES, FRAMES, LAST_FRAME_AGE, RECONNECTS, RTP_PACKETS, Reporter};
use actix::prelude::*;
use cloudcam_core::camera::{CameraSecret, CameraState, CameraStatus};
use cloudcam_core::state::{StateStore, get_json};
use cloudcam_proto::v1::CameraSpec;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Replace the camera's desired state (restarts the relay when the source or targets changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSpec(pub CameraSpec);

/// Stop the camera and the actor; answered once the pipeline is down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Something the relay of run `run` reported.
#[derive(Message)]
#[rtype(result = "()")]
struct Relayed {
    run: u64,
    event: PipelineEvent,
}

/// What every camera actor on a worker shares.
#[derive(Clone)]
pub struct Shared {
    pub worker_id: String,
    pub settings: CameraSettings,
    pub state: Arc<dyn StateStore>,
    pub reporter: Reporter,
    /// The worker's RTSP re-stream server, when it runs one.
    pub restream: Option<Arc<crate::restream::Restream>>,
    /// Where snapshots are stored.
    pub store: Option<Arc<dyn object_store::ObjectStore>>,
}

pub struct CameraActor {
    spec: CameraSpec,
    shared: Shared,
    relay: Option<Relay>,
    /// Incremented on every (re)start; events of older runs are ignored.
    run: u64,
    status: CameraStatus,
    /// Failed attempts since the camera was last live.
    attempt: u32,
    counters: Arc<Counters>,
    started_at: Instant,
    last_health: (Instant, u64, u64),
    /// RTP packets already counted in the metric, from the current relay's counters.
    last_packets: u64,
    retry: Option<SpawnHandle>,
    restream: Option<crate::restream::Mount>,
    /// The camera's secret values (password, secret URL parameters), redacted from reasons.
    secrets: Vec<String>,
    /// When the last snapshot was taken, and whether one is being taken.
    last_snapshot: Option<Instant>,
    snapshot_busy: bool,
    /// The periodic tick and its period: every second while pulled, rarely while idle.
    ticker: Option<(SpawnHandle, Duration)>,
}

impl CameraActor {
    pub fn new(spec: CameraSpec, shared: Shared) -> Self {
        let mut status = CameraStatus::unknown();
        status.worker_id.clone_from(&shared.worker_id);
        Self {
            spec,
            shared,
            relay: None,
            run: 0,
            status,
            attempt: 0,
            counters: Arc::new(Counters::default()),
            started_at: Instant::now(),
            last_health: (Instant::now(), 0, 0),
            last_packets: 0,
            retry: None,
            restream: None,
            secrets: Vec::new(),
            last_snapshot: None,
            snapshot_busy: false,
            ticker: None,
        }
    }

    fn id(&self) -> &str {
        &self.spec.camera_id
    }

    /// Whether the camera is to be pulled: someone watches it, it records, or it is always on.
    fn wanted(spec: &CameraSpec) -> bool {
        spec.live_demand > 0 || spec.recording || spec.always_on
    }

    /// Ticks every `every` from now on (health, stall and timeout checks while pulled; the
    /// status refresh while idle, where a second-by-second tick of thousands of idle cameras
    /// would be the worker's main idle cost).
    fn tick_every(&mut self, every: Duration, ctx: &mut Context<Self>) {
        if self.ticker.is_some_and(|(_, now)| now == every) {
            return;
        }
        if let Some((h, _)) = self.ticker.take() {
            ctx.cancel_future(h);
        }
        let h = ctx.run_interval(every, |act, ctx| act.tick(ctx));
        self.ticker = Some((h, every));
    }

    /// Stops pulling the camera (nobody watches, it does not record) but keeps owning it.
    fn idle(&mut self, ctx: &mut Context<Self>) {
        // Often enough that the status is refreshed (every `idle_refresh`) before it expires.
        self.tick_every(self.shared.settings.idle_refresh() / 2, ctx);
        self.relay = None;
        self.run += 1;
        self.attempt = 0;
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        let _ = LAST_FRAME_AGE.remove_label_values(&[self.id()]);
        self.set_state(
            CameraState::Idle,
            "not pulled: nobody is watching and it does not record; the first viewer starts it",
        );
    }

    fn set_state(&mut self, state: CameraState, reason: impl Into<String>) {
        let reason = reason.into();
        if self.status.state == state && self.status.reason == reason {
            return;
        }
        self.status.state = state;
        self.status.reason = reason;
        self.status.updated_ms = cloudcam_core::now_ms();
        if state == CameraState::Live {
            self.status.restream_url = self
                .restream
                .as_ref()
                .map(|m| m.url.clone())
                .unwrap_or_default();
        } else {
            self.status.fps = 0.0;
            self.status.bitrate_bps = 0;
            self.status.restream_url.clear();
        }
        self.shared
            .reporter
            .state(&self.spec.camera_id, &self.status, self.attempt);
    }

    /// Fetches credentials, then starts a relay run.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.tick_every(Duration::from_secs(1), ctx);
        self.retry = None;
        self.relay = None;
        self.run += 1;
        let run = self.run;
        self.set_state(CameraState::Connecting, "connecting to the camera");
        let state = self.shared.state.clone();
        let cred_ref = self.spec.credentials_ref.clone();
        async move {
            if cred_ref.is_empty() {
                return Ok(None);
            }
            get_json::<CameraSecret>(&*state, &cred_ref).await
        }
        .into_actor(self)
        .map(move |secret, act, ctx| {
            if act.run != run {
                return;
            }
            match secret {
                Ok(secret) => act.start_relay(secret, ctx),
                Err(e) => act.fail(
                    CameraState::Error,
                    format!("cannot read the camera's credentials: {e}"),
                    ctx,
                ),
            }
        })
        .spawn(ctx);
    }

    fn start_relay(&mut self, secret: Option<CameraSecret>, ctx: &mut Context<Self>) {
        let run = self.run;
        let addr = ctx.address();
        let on_event: crate::pipeline::EventSink =
            Arc::new(move |event| addr.do_send(Relayed { run, event }));
        let mut targets: Vec<(String, u16)> = self
            .spec
            .rtp_targets
            .iter()
            .filter_map(|t| Some((t.host.clone(), u16::try_from(t.video_port).ok()?)))
            .collect();
        if self.restream.is_none()
            && let Some(server) = &self.shared.restream
        {
            match server.mount(&self.spec.camera_id) {
                Ok(m) => self.restream = Some(m),
                Err(e) => tracing::warn!(camera = %self.spec.camera_id, error = %e, "no re-stream"),
            }
        }
        if let Some(m) = &self.restream {
            targets.push(("127.0.0.1".into(), m.rtp_port));
        }
        self.counters = Arc::new(Counters::default());
        self.last_packets = 0;
        self.started_at = Instant::now();
        self.secrets = secret
            .iter()
            .flat_map(|s| s.values().map(str::to_owned))
            .collect();
        let source = Source {
            url: self.spec.source_url.clone(),
            secret,
        };
        let audio_target = self
            .restream
            .as_ref()
            .map(|m| ("127.0.0.1".to_string(), m.audio_port));
        match Relay::start(
            &source,
            &targets,
            audio_target,
            &self.shared.settings,
            self.counters.clone(),
            on_event,
        ) {
            Ok(relay) => self.relay = Some(relay),
            Err(e) => self.fail(CameraState::Error, e.to_string(), ctx),
        }
    }

    /// Tears the relay down, reports why, and schedules a reconnect with backoff.
    fn fail(&mut self, state: CameraState, reason: String, ctx: &mut Context<Self>) {
        self.relay = None;
        self.run += 1;
        self.attempt += 1;
        let reason = redact(&reason, &self.spec, &self.secrets);
        self.set_state(state, reason);
        let delay = self.shared.settings.backoff(self.attempt);
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        self.retry = Some(ctx.run_later(delay, |act, ctx| {
            RECONNECTS.with_label_values(&[act.id()]).inc();
            act.status.reconnects += 1;
            act.connect(ctx);
        }));
    }

    /// Takes a snapshot when one is due or was requested (checked once a second while live).
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        let (Some(store), Some(mount), Some(server)) = (
            self.shared.store.clone(),
            self.restream.as_ref(),
            self.shared.restream.as_ref(),
        ) else {
            return;
        };
        let auth = server.auth().clone();
        if self.snapshot_busy || self.status.state != CameraState::Live {
            return;
        }
        let interval = self.shared.settings.snapshot_interval_ms;
        let due = interval > 0
            && self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(interval));
        self.snapshot_busy = true;
        let (state, id, url) = (
            self.shared.state.clone(),
            self.spec.camera_id.clone(),
            mount.url.clone(),
        );
        async move {
            let req_key = cloudcam_core::media::snapshot_request_key(&id);
            let requested = state.get(&req_key).await.ok().flatten().is_some();
            if !(due || requested) {
                return false;
            }
            let _ = state.del(&req_key).await;
            let jpeg = tokio::task::spawn_blocking(move || {
                crate::snapshot::take(&url, &auth, Duration::from_secs(10))
            })
            .await;
            match jpeg {
                Ok(Ok(jpeg)) => {
                    use object_store::ObjectStoreExt;
                    let key =
                        object_store::path::Path::from(cloudcam_core::media::snapshot_key(&id));
                    match store.put(&key, jpeg.into()).await {
                        Ok(_) => tracing::info!(camera = %id, "snapshot stored"),
                        Err(e) => {
                            tracing::warn!(camera = %id, error = %e, "cannot store a snapshot")
                        }
                    }
                }
                Ok(Err(e)) => tracing::warn!(camera = %id, error = %e, "snapshot failed"),
                Err(e) => tracing::warn!(camera = %id, error = %e, "snapshot task failed"),
            }
            true
        }
        .into_actor(self)
        .map(|attempted, act, _| {
            act.snapshot_busy = false;
            if attempted {
                act.last_snapshot = Some(Instant::now());
            }
        })
        .spawn(ctx);
    }

    /// Once a second: health, stall and connect-timeout checks.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.relay.is_none() {
            // An idle camera's status is kept fresh (it expires otherwise).
            if self.status.state == CameraState::Idle
                && self.last_health.0.elapsed() >= self.shared.settings.idle_refresh()
            {
                self.last_health.0 = Instant::now();
                self.shared
                    .reporter
                    .refresh(&self.spec.camera_id, &self.status);
            }
            return;
        }
        self.maybe_snapshot(ctx);
        let frames = self.counters.frames.load(Ordering::Relaxed);
        let bytes = self.counters.bytes.load(Ordering::Relaxed);
        let last = self.counters.last_frame_ms.load(Ordering::Relaxed);
        let now_ms = cloudcam_core::now_ms();
        if last > 0 {
            LAST_FRAME_AGE
                .with_label_values(&[self.id()])
                .set((now_ms - last) as f64 / 1000.0);
        }
        let settings = &self.shared.settings;
        match self.status.state {
            CameraState::Connecting
                if self.started_at.elapsed()
                    > Duration::from_millis(settings.connect_timeout_ms) =>
            {
                let reason = format!(
                    "no video from the camera within {} s of connecting",
                    settings.connect_timeout_ms / 1000
                );
                self.fail(CameraState::Stalled, reason, ctx);
            }
            CameraState::Live if now_ms - last > settings.stall_timeout_ms as i64 => {
                let reason = format!(
                    "the camera sent no video for {} s; reconnecting",
                    (now_ms - last) / 1000
                );
                self.fail(CameraState::Stalled, reason, ctx);
            }
            CameraState::Live => {
                let (at, f0, b0) = self.last_health;
                let elapsed = at.elapsed();
                if elapsed >= Duration::from_millis(settings.health_interval_ms) {
                    let secs = elapsed.as_secs_f64();
                    FRAMES
                        .with_label_values(&[self.id()])
                        .inc_by(frames.saturating_sub(f0));
                    BYTES
                        .with_label_values(&[self.id()])
                        .inc_by(bytes.saturating_sub(b0));
                    let packets = self.counters.rtp_packets.load(Ordering::Relaxed);
                    RTP_PACKETS
                        .with_label_values(&[self.id()])
                        .inc_by(packets.saturating_sub(self.last_packets));
                    self.last_packets = packets;
                    self.status.fps =
                        ((frames.saturating_sub(f0)) as f64 / secs * 10.0).round() / 10.0;
                    self.status.bitrate_bps = (bytes.saturating_sub(b0) as f64 * 8.0 / secs) as u64;
                    self.status.last_frame_ms = last;
                    self.status.updated_ms = now_ms;
                    self.last_health = (Instant::now(), frames, bytes);
                    self.shared
                        .reporter
                        .health(&self.spec.camera_id, &self.status);
                }
            }
            _ => {}
        }
    }

    fn relay_targets_changed(&self, new: &CameraSpec) -> bool {
        self.spec.source_url != new.source_url
            || self.spec.credentials_ref != new.credentials_ref
            || self.spec.rtp_targets != new.rtp_targets
            || self.spec.source_generation != new.source_generation
    }
}

/// Removes anything credential-like from a reason before it leaves the actor: the camera's
/// secret values (a GStreamer error names the location it pulled, secret parameters included)
/// and, as a guard, a password in the source URL's user info (signal strips those).
fn redact(reason: &str, spec: &CameraSpec, secrets: &[String]) -> String {
    let mut out = reason.to_string();
    if let Ok(url) = url::Url::parse(&spec.source_url)
        && let Some(pw) = url.password()
    {
        out = out.replace(pw, "***");
    }
    for value in secrets {
        out = out.replace(value.as_str(), "***");
        // As it appears inside a URL.
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        out = out.replace(&encoded, "***");
    }
    out
}

impl Actor for CameraActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(camera = %self.spec.camera_id, name = %self.spec.name, "camera actor started");
        // The camera's counters exist from the start, so that their first increase shows.
        for counter in [&*FRAMES, &*BYTES, &*RTP_PACKETS, &*RECONNECTS] {
            counter.with_label_values(&[self.id()]).inc_by(0);
        }
        if Self::wanted(&self.spec) {
            self.connect(ctx);
        } else {
            self.idle(ctx);
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.relay = None;
        if let (Some(server), Some(_)) = (&self.shared.restream, self.restream.take()) {
            server.unmount(&self.spec.camera_id);
        }
        self.shared.reporter.gone(&self.spec.camera_id);
        tracing::info!(camera = %self.spec.camera_id, "camera actor stopped");
    }
}

impl Handler<UpdateSpec> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateSpec, ctx: &mut Context<Self>) {
        let restart = self.relay_targets_changed(&msg.0);
        let (was, now) = (Self::wanted(&self.spec), Self::wanted(&msg.0));
        self.spec = msg.0;
        if !now {
            if was {
                tracing::info!(camera = %self.spec.camera_id, "no viewer and no recording; stopping the pull");
                self.idle(ctx);
            }
        } else if !was {
            tracing::info!(camera = %self.spec.camera_id, viewers = self.spec.live_demand, "camera wanted; pulling it");
            self.connect(ctx);
        } else if restart {
            tracing::info!(camera = %self.spec.camera_id, "camera spec changed; reconnecting");
            self.attempt = 0;
            if let Some(h) = self.retry.take() {
                ctx.cancel_future(h);
            }
            self.connect(ctx);
        }
    }
}

impl Handler<Stop> for CameraActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // No status write: the camera's next owner (if any) reports it, and a late "stopped"
        // from here would overwrite that.
        self.relay = None;
        self.run += 1;
        ctx.stop();
    }
}

impl Handler<Relayed> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: Relayed, ctx: &mut Context<Self>) {
        if msg.run != self.run {
            return;
        }
        match msg.event {
            PipelineEvent::FirstFrame => {
                self.attempt = 0;
                self.last_health = (Instant::now(), 0, 0);
                if let Some((w, h)) = self.relay.as_ref().and_then(Relay::video_size) {
                    self.status.width = w;
                    self.status.height = h;
                }
                self.status.codec = "H264".into();
                self.status.last_frame_ms = cloudcam_core::now_ms();
                self.set_state(CameraState::Live, "receiving video");
            }
            PipelineEvent::Audio { caps } => {
                if let (Some(server), Some(mount)) = (&self.shared.restream, &self.restream) {
                    tracing::info!(camera = %self.spec.camera_id, "camera sends AAC audio; re-streamed with the video");
                    server.set_audio(&self.spec.camera_id, mount, &caps);
                }
            }
            PipelineEvent::Unsupported { reason } => {
                self.fail(CameraState::UnsupportedCodec, reason, ctx);
            }
            PipelineEvent::Failed { kind, reason } => {
                let state = match kind {
                    FailureKind::AuthFailed => CameraState::AuthFailed,
                    FailureKind::Unreachable => CameraState::Unreachable,
                    FailureKind::Other => CameraState::Error,
                };
                self.fail(state, reason, ctx);
            }
            PipelineEvent::Eos => {
                self.fail(
                    CameraState::Unreachable,
                    "the camera ended the stream".into(),
                    ctx,
                );
            }
        }
    }
}
