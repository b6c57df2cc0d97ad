//! `CameraActor`: the I/O shell around one camera's [`CameraCore`] on this worker. It feeds the
//! core its inputs (desired state, relay events, credentials, the clock) and carries out the
//! effects the core answers with: the relay pipeline, credentials lookups, status and health
//! reports, timers. Snapshots and metrics live here too. A failing camera only ever restarts
//! its own pipeline; everything the actor logs is inside a span carrying the camera id.

use crate::config::CameraSettings;
use crate::machine::{CameraCore, Effect, wanted};
use crate::pipeline::{Counters, PipelineEvent, Relay, Source, Targets};
use crate::report::{BYTES, FRAMES, LAST_FRAME_AGE, RECONNECTS, RTP_PACKETS, Reporter};
use actix::prelude::*;
use cloudcam_core::camera::{CameraSecret, CameraState, CameraStatus};
use cloudcam_core::codec::{AudioCodec, VideoCodec};
use cloudcam_core::state::{StateStore, get_json};
use cloudcam_proto::v1::CameraSpec;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Replace the camera's desired state (a new source restarts the relay; new RTP targets only
/// retarget it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSpec(pub CameraSpec);

/// Stop the camera and the actor; answered once the pipeline is down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// The camera moved to another worker on a planned move: hand it over (see
/// [`CameraCore::hand_over`]); the actor stops by itself once that is done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver;

/// Something the relay of run `run` reported.
#[derive(Message)]
#[rtype(result = "()")]
struct Relayed {
    run: u64,
    event: PipelineEvent,
}

/// Whether the camera's re-stream is being pulled (by a recorder, a snapshot, an RTSP client).
#[derive(Message)]
#[rtype(result = "()")]
struct RestreamPulled(bool);

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
    core: CameraCore,
    shared: Shared,
    relay: Option<Relay>,
    /// The camera's credentials, read for the current run.
    secret: Option<CameraSecret>,
    status: CameraStatus,
    counters: Arc<Counters>,
    /// Frames and bytes at the last health report (the current relay's counters).
    last_health: (Instant, u64, u64),
    /// RTP packets already counted in the metric, from the current relay's counters.
    last_packets: u64,
    restream: Option<crate::restream::Mount>,
    /// The camera's video codec, as its relay last found it.
    codec: VideoCodec,
    /// Whether anybody pulls the re-stream: only then does the relay send it a copy.
    restream_pulled: bool,
    /// The camera's secret values (password, secret URL parameters), redacted from reasons.
    secrets: Vec<String>,
    /// When the last snapshot was taken, and whether one is being taken.
    last_snapshot: Option<Instant>,
    snapshot_busy: bool,
    /// The periodic tick and its period: every second while pulled, rarely while idle.
    ticker: Option<(SpawnHandle, Duration)>,
    /// Whether a look for the successor of a camera being handed over is under way.
    successor_busy: bool,
    /// Carries the camera id into every log line of the actor.
    span: tracing::Span,
}

impl CameraActor {
    pub fn new(spec: CameraSpec, shared: Shared) -> Self {
        let mut status = CameraStatus::unknown();
        status.worker_id.clone_from(&shared.worker_id);
        if let Some(server) = shared.restream.as_ref().filter(|_| spec.push) {
            status.push_url = server.push_url(&spec.camera_id);
        }
        let span = tracing::info_span!("camera", camera = %spec.camera_id);
        Self {
            core: CameraCore::new(spec, shared.settings.clone(), Instant::now()),
            shared,
            relay: None,
            secret: None,
            status,
            counters: Arc::new(Counters::default()),
            last_health: (Instant::now(), 0, 0),
            last_packets: 0,
            restream: None,
            codec: VideoCodec::default(),
            restream_pulled: false,
            secrets: Vec::new(),
            last_snapshot: None,
            snapshot_busy: false,
            ticker: None,
            successor_busy: false,
            span,
        }
    }

    fn id(&self) -> &str {
        &self.core.spec().camera_id
    }

    /// Carries out what the core decided, in order.
    fn apply(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::FetchCredentials { run, reconnect } => {
                    if reconnect {
                        RECONNECTS.with_label_values(&[self.id()]).inc();
                        self.status.reconnects += 1;
                    }
                    self.fetch_credentials(run, ctx);
                }
                Effect::StartRelay { run } => self.start_relay(run, ctx),
                Effect::Retarget => {
                    if !self.core.handing_over() {
                        tracing::info!(
                            "RTP targets changed; relay retargeted without reconnecting"
                        );
                    }
                    let targets = self.targets();
                    if let Some(relay) = &self.relay {
                        relay.retarget(&targets);
                    }
                }
                Effect::StopRelay => {
                    self.relay = None;
                    let _ = LAST_FRAME_AGE.remove_label_values(&[self.id()]);
                }
                Effect::Report { state, reason } => self.set_state(state, reason),
                Effect::Health => self.health(),
                Effect::Refresh => self.shared.reporter.refresh(self.id(), &self.status),
                Effect::WakeAfter(delay) => {
                    ctx.run_later(delay, |act, ctx| act.check(ctx));
                }
                Effect::TickEvery(every) => self.tick_every(every, ctx),
                Effect::Finish => ctx.stop(),
            }
        }
    }

    /// Lets the core look at the clock.
    fn check(&mut self, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let last = self.counters.last_frame_ms.load(Ordering::Relaxed);
        let now_ms = cloudcam_core::now_ms();
        let age = (last > 0).then(|| Duration::from_millis(now_ms.saturating_sub(last) as u64));
        if let Some(age) = age.filter(|_| self.relay.is_some()) {
            LAST_FRAME_AGE
                .with_label_values(&[self.id()])
                .set(age.as_secs_f64());
        }
        let effects = self.core.check(Instant::now(), age);
        self.apply(effects, ctx);
        if self.core.handing_over() {
            self.look_for_successor(ctx);
        } else if self.core.state() == CameraState::Live {
            self.maybe_snapshot(ctx);
        }
    }

    /// While handing over: has the new owner reported the camera live, and does anybody still
    /// pull this worker's re-stream of it?
    fn look_for_successor(&mut self, ctx: &mut Context<Self>) {
        if self.successor_busy {
            return;
        }
        self.successor_busy = true;
        let (state, key) = (
            self.shared.state.clone(),
            cloudcam_core::camera::status_key(self.id()),
        );
        let me = self.shared.worker_id.clone();
        async move {
            let status = get_json::<CameraStatus>(&*state, &key).await;
            status.ok().flatten().is_some_and(|s| {
                s.worker_id != me && s.state == CameraState::Live && !s.restream_url.is_empty()
            })
        }
        .into_actor(self)
        .map(|taken_over, act, ctx| {
            let _span = act.span.clone().entered();
            act.successor_busy = false;
            let effects = act.core.successor(taken_over, act.restream_pulled);
            if effects.contains(&Effect::Finish) {
                tracing::info!("handed over: the new owner is live and the re-stream unused");
            }
            act.apply(effects, ctx);
        })
        .spawn(ctx);
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
        let h = ctx.run_interval(every, |act, ctx| act.check(ctx));
        self.ticker = Some((h, every));
    }

    fn set_state(&mut self, state: CameraState, reason: String) {
        let reason = redact(&reason, self.core.spec(), &self.secrets);
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
            .state(self.id(), &self.status, self.core.attempt());
    }

    /// Reads the camera's credentials for run `run`.
    fn fetch_credentials(&mut self, run: u64, ctx: &mut Context<Self>) {
        let state = self.shared.state.clone();
        let cred_ref = self.core.spec().credentials_ref.clone();
        async move {
            if cred_ref.is_empty() {
                return Ok(None);
            }
            get_json::<CameraSecret>(&*state, &cred_ref).await
        }
        .instrument(self.span.clone())
        .into_actor(self)
        .map(move |secret, act, ctx| {
            let _span = act.span.clone().entered();
            if !act.core.is_current(run) {
                return;
            }
            let result = match secret {
                Ok(secret) => {
                    act.secret = secret;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            };
            let effects = act.core.credentials(run, result, Instant::now());
            act.apply(effects, ctx);
        })
        .spawn(ctx);
    }

    /// Where the RTP goes: the video to the camera's Janus mountpoints (not while handing over:
    /// the new owner feeds them), and its audio while someone watches (in the codec each
    /// mountpoint takes); video and audio to the worker's re-stream while it is pulled.
    fn targets(&self) -> Targets {
        let janus = if self.core.handing_over() {
            &[][..]
        } else {
            &self.core.spec().rtp_targets[..]
        };
        let port = |p: u32| u16::try_from(p).ok().filter(|p| *p != 0);
        // The live view's audio is sent (and transcoded, if at all) only while someone
        // watches.
        let watched = self.core.spec().live_demand > 0;
        let video = |h265: bool| -> Vec<(String, u16)> {
            janus
                .iter()
                .filter(|t| (t.video_codec == "H265") == h265)
                .filter_map(|t| Some((t.host.clone(), port(t.video_port)?)))
                .collect()
        };
        let mut targets = Targets {
            janus: video(false),
            janus_h265: video(true),
            janus_audio: janus
                .iter()
                .filter(|_| watched)
                .filter_map(|t| {
                    let takes = AudioCodec::from_name(&t.audio_codec);
                    Some((t.host.clone(), port(t.audio_port)?, takes))
                })
                .collect(),
            ..Targets::default()
        };
        if let Some(m) = self.restream.as_ref().filter(|_| self.restream_pulled) {
            targets.restream.push(("127.0.0.1".into(), m.rtp_port));
            targets.audio.push(("127.0.0.1".into(), m.audio_port));
        }
        targets
    }

    fn start_relay(&mut self, run: u64, ctx: &mut Context<Self>) {
        let addr = ctx.address();
        let on_event: crate::pipeline::EventSink =
            Arc::new(move |event| addr.do_send(Relayed { run, event }));
        if self.restream.is_none()
            && let Some(server) = &self.shared.restream
        {
            let me = ctx.address();
            let on_use: crate::restream::OnUse =
                Arc::new(move |pulled| me.do_send(RestreamPulled(pulled)));
            match server.mount(self.id(), on_use) {
                Ok(m) => self.restream = Some(m),
                Err(e) => tracing::warn!(error = %e, "no re-stream"),
            }
        }
        let targets = self.targets();
        self.counters = Arc::new(Counters::default());
        self.last_packets = 0;
        self.secrets = self
            .secret
            .iter()
            .flat_map(|s| s.values().map(str::to_owned))
            .collect();
        let push = if self.core.spec().push {
            match (&self.shared.restream, &self.secret) {
                (Some(server), Some(secret)) => {
                    Some(server.accept_push(self.id(), &secret.password))
                }
                _ => {
                    let failed = PipelineEvent::Failed {
                        kind: crate::pipeline::FailureKind::Other,
                        reason: "a pushed camera needs a push credential and the worker's RTSP \
                                 server (restream.listen)"
                            .into(),
                    };
                    let effects = self.core.relayed(run, &failed, Instant::now());
                    self.apply(effects, ctx);
                    return;
                }
            }
        } else {
            None
        };
        let source = Source {
            url: self.core.spec().source_url.clone(),
            secret: self.secret.clone(),
            push,
        };
        match Relay::start(
            &source,
            &targets,
            &self.shared.settings,
            self.counters.clone(),
            on_event,
        ) {
            Ok(relay) => self.relay = Some(relay),
            Err(e) => {
                let failed = PipelineEvent::Failed {
                    kind: crate::pipeline::FailureKind::Other,
                    reason: e.to_string(),
                };
                let effects = self.core.relayed(run, &failed, Instant::now());
                self.apply(effects, ctx);
            }
        }
    }

    /// The status's width and height, from the relay once it knows them.
    fn refresh_size(&mut self) {
        if let Some((w, h)) = self.relay.as_ref().and_then(Relay::video_size) {
            (self.status.width, self.status.height) = (w, h);
        }
    }

    /// Publishes fps and bitrate over the last health interval, and counts what was relayed.
    fn health(&mut self) {
        let frames = self.counters.frames.load(Ordering::Relaxed);
        let bytes = self.counters.bytes.load(Ordering::Relaxed);
        let (at, f0, b0) = self.last_health;
        let secs = at.elapsed().as_secs_f64().max(0.001);
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
        self.status.fps = ((frames.saturating_sub(f0)) as f64 / secs * 10.0).round() / 10.0;
        self.status.bitrate_bps = (bytes.saturating_sub(b0) as f64 * 8.0 / secs) as u64;
        self.status.last_frame_ms = self.counters.last_frame_ms.load(Ordering::Relaxed);
        self.status.updated_ms = cloudcam_core::now_ms();
        // The size may not have been known yet at the first frame (re-payloaded, it is known
        // once the parser has seen the stream); it may also change when the route does.
        self.refresh_size();
        self.last_health = (Instant::now(), frames, bytes);
        self.shared.reporter.health(self.id(), &self.status);
    }

    /// Takes a snapshot when one is due or was requested (checked once a second while live).
    /// A camera's snapshots come from its main stream, never from its substream.
    fn maybe_snapshot(&mut self, ctx: &mut Context<Self>) {
        if cloudcam_core::camera::camera_of(self.id()).1 {
            return;
        }
        let (Some(store), Some(mount), Some(server)) = (
            self.shared.store.clone(),
            self.restream.as_ref(),
            self.shared.restream.as_ref(),
        ) else {
            return;
        };
        let auth = server.auth().clone();
        if self.snapshot_busy {
            return;
        }
        let interval = self.shared.settings.snapshot_interval_ms;
        let due = interval > 0
            && self
                .last_snapshot
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(interval));
        self.snapshot_busy = true;
        let (state, id, url, codec) = (
            self.shared.state.clone(),
            self.id().to_string(),
            mount.url.clone(),
            self.codec,
        );
        async move {
            let req_key = cloudcam_core::media::snapshot_request_key(&id);
            let requested = state.get(&req_key).await.ok().flatten().is_some();
            if !(due || requested) {
                return false;
            }
            let _ = state.del(&req_key).await;
            let jpeg = tokio::task::spawn_blocking(move || {
                crate::snapshot::take(&url, &auth, codec, Duration::from_secs(10))
            })
            .await;
            match jpeg {
                Ok(Ok(jpeg)) => {
                    use object_store::ObjectStoreExt;
                    let key =
                        object_store::path::Path::from(cloudcam_core::media::snapshot_key(&id));
                    match store.put(&key, jpeg.into()).await {
                        Ok(_) => tracing::info!("snapshot stored"),
                        Err(e) => tracing::warn!(error = %e, "cannot store a snapshot"),
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "snapshot failed"),
                Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
            }
            true
        }
        .instrument(self.span.clone())
        .into_actor(self)
        .map(|attempted, act, _| {
            act.snapshot_busy = false;
            if attempted {
                act.last_snapshot = Some(Instant::now());
            }
        })
        .spawn(ctx);
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
        let _span = self.span.clone().entered();
        tracing::info!(name = %self.core.spec().name, "camera actor started");
        // The camera's counters exist from the start, so that their first increase shows.
        for counter in [&*FRAMES, &*BYTES, &*RTP_PACKETS, &*RECONNECTS] {
            counter.with_label_values(&[self.id()]).inc_by(0);
        }
        let effects = self.core.start(Instant::now());
        self.apply(effects, ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        self.relay = None;
        if let (Some(server), Some(_)) = (&self.shared.restream, self.restream.take()) {
            server.unmount(self.id());
        }
        if let Some(server) = self
            .shared
            .restream
            .as_ref()
            .filter(|_| self.core.spec().push)
        {
            server.refuse_push(self.id());
        }
        self.shared.reporter.gone(self.id());
        tracing::info!("camera actor stopped");
    }
}

impl Handler<UpdateSpec> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateSpec, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let (was, now) = (wanted(self.core.spec()), wanted(&msg.0));
        match (was, now) {
            (true, false) => tracing::info!("no viewer and no recording; stopping the pull"),
            (false, true) => {
                tracing::info!(viewers = msg.0.live_demand, "camera wanted; pulling it")
            }
            _ => {}
        }
        let effects = self.core.update_spec(msg.0, Instant::now());
        self.apply(effects, ctx);
    }
}

impl Handler<Stop> for CameraActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // No status write: the camera's next owner (if any) reports it, and a late "stopped"
        // from here would overwrite that.
        self.relay = None;
        ctx.stop();
    }
}

/// The camera came back before its handover ended: serve it on (answers whether it can).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct TakeBack;

impl Handler<TakeBack> for CameraActor {
    type Result = bool;

    fn handle(&mut self, _: TakeBack, ctx: &mut Context<Self>) -> bool {
        let _span = self.span.clone().entered();
        match self.core.take_back(Instant::now()) {
            Some(effects) => {
                tracing::info!("back on this worker before the handover ended; serving it on");
                self.apply(effects, ctx);
                true
            }
            None => false,
        }
    }
}

impl Handler<HandOver> for CameraActor {
    type Result = ();

    fn handle(&mut self, _: HandOver, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let effects = self.core.hand_over(Instant::now());
        if !effects.contains(&Effect::Finish) {
            tracing::info!("moved to another worker; re-stream kept until it has taken over");
        }
        self.apply(effects, ctx);
    }
}

impl Handler<RestreamPulled> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: RestreamPulled, _ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        self.restream_pulled = msg.0;
        if let Some(relay) = &self.relay {
            relay.retarget(&self.targets());
        }
    }
}

impl Handler<Relayed> for CameraActor {
    type Result = ();

    fn handle(&mut self, msg: Relayed, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        if !self.core.is_current(msg.run) {
            return;
        }
        match &msg.event {
            PipelineEvent::Video { codec } => {
                self.codec = *codec;
                self.status.codec = codec.name().into();
                self.status.live_unavailable = if codec.plays_in_browsers() {
                    String::new()
                } else {
                    format!(
                        "the camera sends {codec} video and no H.264 stream: only browsers \
                         that decode {codec} can watch it live; it is recorded as {codec}"
                    )
                };
                if let (Some(server), Some(mount)) = (&self.shared.restream, &self.restream) {
                    server.set_video(self.id(), mount, *codec);
                }
            }
            PipelineEvent::FirstFrame => {
                self.last_health = (Instant::now(), 0, 0);
                self.refresh_size();
                self.status.last_frame_ms = cloudcam_core::now_ms();
            }
            PipelineEvent::Forwarding { as_sent: true } => {
                tracing::info!("video forwarded as the camera sends it");
            }
            PipelineEvent::Forwarding { as_sent: false } => {
                tracing::info!(
                    "video re-payloaded: the camera does not send SPS/PPS before every keyframe, \
                     or sends packets larger than camera.forward_max_packet"
                );
            }
            PipelineEvent::Audio { codec, caps } => {
                self.status.audio_codec = codec.name().into();
                // The audio stream may be linked after the camera went live: say so (signal
                // makes the mountpoint take G.711 as it is).
                if self.status.state == CameraState::Live {
                    self.shared
                        .reporter
                        .state(self.id(), &self.status, self.core.attempt());
                }
                if let (Some(server), Some(mount)) = (&self.shared.restream, &self.restream) {
                    tracing::info!(%caps, "camera sends audio; re-streamed with the video");
                    server.set_audio(self.id(), mount, caps);
                }
            }
            _ => {}
        }
        let effects = self.core.relayed(msg.run, &msg.event, Instant::now());
        self.apply(effects, ctx);
    }
}
