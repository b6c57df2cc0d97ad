//! `RecordingActor`: records one camera. It pulls the owning ingest worker's re-stream (never
//! the camera), cuts keyframe-aligned fragmented-MP4 segments with the [`Segmenter`] into the
//! spool, and applies the camera's retention to the media store and the index. It is the shell
//! of the camera's [`Timeline`]: it reads the camera's status, reports what its pipelines do,
//! and carries out the timeline's effects (start a pipeline, release a holding one, end one at
//! its next keyframe, drop one, hand a segment to the spool); for a handover between recorders
//! it exchanges the `cloudcam:recording-handover:<camera>:{from,ready,cut}` keys with the other
//! recorder. Every log line is inside a span carrying the camera id.

use crate::config::RecorderSettings;
use crate::segmenter::{self, Event, Segmenter};
use crate::spool::Spool;
use crate::timeline::{Effect, Note, Timeline, Timing};
use actix::prelude::*;
use cloudcam_core::camera::{CameraState, CameraStatus, status_key};
use cloudcam_core::codec::{AudioCodec, VideoCodec};
use cloudcam_core::media::{segments, unindex_segment};
use cloudcam_core::rtsp_pull::{PullEvent, PullRequest, RtspPull};
use cloudcam_core::state::{StateStore, get_json, set_json};
use cloudcam_proto::v1::CameraSpec;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replace the camera's desired state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSpec(pub CameraSpec);

/// The camera moved to another recorder: record until it takes over (see [`Timeline`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver;

/// Stop recording; answered once the pipeline is down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A bus message of run `run`'s pipeline.
#[derive(Message)]
#[rtype(result = "()")]
enum Piped {
    /// The first keyframe passed the parser.
    Keyframe {
        run: u64,
        running_ns: u64,
        wall_ms: i64,
    },
    /// Of the frames since the previous keyframe, the least delayed (see `timeline`).
    Clock {
        run: u64,
        running_ns: u64,
        wall_ms: i64,
    },
    Opened {
        run: u64,
        location: String,
        running_ns: u64,
    },
    Closed {
        run: u64,
        location: String,
        running_ns: u64,
    },
    /// The pipeline ended: EOS (after a finish, or the re-stream's end) or an error.
    Ended { run: u64, reason: String },
}

#[derive(Clone)]
pub struct Shared {
    pub settings: RecorderSettings,
    pub state: Arc<dyn StateStore>,
    pub store: Arc<dyn ObjectStore>,
    pub spool: Arc<Spool>,
}

/// A running pipeline; dropping it stops it and the segment writers.
struct Pipeline {
    pipeline: gst::Pipeline,
    /// The re-stream's source (`pull`'s bin).
    src: gst::Element,
    pull: RtspPull,
    bus_task: tokio::task::JoinHandle<()>,
    segmenter: Segmenter,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.bus_task.abort();
        self.pull.stop();
        cloudcam_core::rtp_timestamper::stop_source_first(&self.pipeline, &self.src);
        self.segmenter.stop();
    }
}

/// How long connecting to the re-stream and its DESCRIBE may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the re-stream's packets are taken: a recording can wait that long, and a
/// wake-up per packet is most of what a recording costs.
const READ_EVERY: Duration = Duration::from_millis(100);

/// How long a recording waits for the audio its re-stream announces before it starts
/// without it.
const AUDIO_WAIT: Duration = Duration::from_secs(2);

/// A recording whose re-stream has audio starts at the first keyframe after its audio has
/// begun (one GOP later at most; a camera's audio often begins after its first keyframe).
/// An MP4 segment cannot say that a track starts later than the file (a fragmented file has
/// no edit list), so audio that began later would be played from the segment's start.
#[derive(Default)]
struct AudioGate {
    /// The re-stream announces audio that is recorded.
    expected: std::sync::atomic::AtomicBool,
    /// Its first frame has come.
    arrived: std::sync::atomic::AtomicBool,
    /// When the first video frame came.
    first_video: std::sync::OnceLock<Instant>,
}

impl AudioGate {
    /// Whether the recording's first keyframe is still to wait for the audio.
    fn holds_video(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let since = *self.first_video.get_or_init(Instant::now);
        self.expected.load(Relaxed) && !self.arrived.load(Relaxed) && since.elapsed() < AUDIO_WAIT
    }
}

/// An appsink handing each video (or audio) sample to `segmenter`, on the streaming thread.
fn appsink(segmenter: &Segmenter, video: Option<VideoCodec>) -> gst_app::AppSink {
    let (on_sample, on_eos) = (segmenter.clone(), segmenter.clone());
    let caps = if let Some(codec) = video {
        codec.mp4_caps()
    } else {
        segmenter::audio_caps()
    };
    gst_app::AppSink::builder()
        .caps(&caps)
        .sync(false)
        // One thread brings audio and video (see `rtp_timestamper::skip_jitter_buffer`).
        .async_(false)
        .enable_last_sample(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if video.is_some() {
                        on_sample.video(&sample);
                    } else {
                        on_sample.audio(&sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| {
                    if video.is_some() {
                        on_eos.video_ended();
                    } else {
                        on_eos.audio_ended();
                    }
                })
                .build(),
        )
        .build()
}

pub struct RecordingActor {
    spec: CameraSpec,
    shared: Shared,
    timeline: Timeline,
    pipelines: HashMap<u64, Pipeline>,
    /// Whether a status read is under way.
    polling: bool,
    ticks: u64,
    /// Why the camera is not being recorded although it should be (stored for the API).
    problem: Option<String>,
    /// Whether a handover key read is under way.
    handover_polling: bool,
    /// Handing over: the recorder that holds the stream to take over.
    successor: Option<String>,
    /// Taking over: since when the other recorder has not said it hands over.
    predecessor_silent: Option<Instant>,
    /// The camera's video codec, as its status last named it (the re-stream serves it).
    codec: VideoCodec,
    /// Carries the camera id into every log line of the actor.
    span: tracing::Span,
}

/// Taking over: this recorder holds the camera's stream since `since_ms` (refreshed while
/// it waits, so it is never stale for long).
#[derive(serde::Serialize, serde::Deserialize)]
struct Ready {
    worker: String,
    since_ms: i64,
}

/// Handing over: the last segment ended at `at_ms`; `to` begins there.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cut {
    to: String,
    at_ms: i64,
}

const READY_TTL: Duration = Duration::from_secs(2);
/// Taking over from a recorder that has not said it hands over for this long: it is gone.
const PREDECESSOR_SILENCE: Duration = Duration::from_secs(3);
const CUT_TTL: Duration = Duration::from_secs(30);

fn handover_ready_key(camera: &str) -> String {
    format!("cloudcam:recording-handover:{camera}:ready")
}

fn handover_from_key(camera: &str) -> String {
    format!("cloudcam:recording-handover:{camera}:from")
}

fn handover_cut_key(camera: &str) -> String {
    format!("cloudcam:recording-handover:{camera}:cut")
}

/// How long a stored recording problem lives unless the recorder refreshes it (every tick).
const PROBLEM_TTL: Duration = Duration::from_secs(5);

/// How often the camera's status is read: a moved re-stream is followed within this. (Not
/// less often while recording steadily: a pushed camera's old re-stream ends as soon as its
/// pusher has moved, whether the recorders have or not.)
const STATUS_POLL: Duration = Duration::from_millis(250);

impl RecordingActor {
    pub fn new(spec: CameraSpec, shared: Shared) -> Self {
        let settings = &shared.settings;
        let segment = Duration::from_secs(settings.segment_seconds);
        let timing = Timing {
            // Segments open and close once a segment; allow one segment plus the timeout.
            stall: segment + Duration::from_millis(settings.stall_timeout_ms),
            first_segment: Duration::from_millis(settings.stall_timeout_ms),
            finish: Duration::from_secs(3),
            handover: Duration::from_millis(settings.handover_timeout_ms),
        };
        let span = tracing::info_span!("recording", camera = %spec.camera_id);
        Self {
            spec,
            shared,
            timeline: Timeline::new(timing),
            pipelines: HashMap::new(),
            polling: false,
            ticks: 0,
            problem: None,
            handover_polling: false,
            successor: None,
            predecessor_silent: None,
            codec: VideoCodec::default(),
            span,
        }
    }

    /// Stores (or clears) why the camera is not being recorded; kept fresh while it lasts.
    fn report_problem(&mut self, problem: Option<String>) {
        if problem.is_none() && self.problem.is_none() {
            return;
        }
        match (&problem, &self.problem) {
            (Some(p), old) if old.as_ref() != Some(p) => {
                tracing::warn!(problem = %p, "not recording")
            }
            (None, Some(_)) => tracing::info!("recording resumes"),
            _ => {}
        }
        self.problem = problem.clone();
        let (state, key) = (
            self.shared.state.clone(),
            cloudcam_core::media::recording_problem_key(&self.spec.camera_id),
        );
        tokio::spawn(async move {
            let _ = match problem {
                Some(p) => {
                    cloudcam_core::state::set_json(&*state, &key, &p, Some(PROBLEM_TTL)).await
                }
                None => state.del(&key).await,
            };
        });
    }

    fn id(&self) -> &str {
        &self.spec.camera_id
    }

    fn dir(&self) -> PathBuf {
        self.shared.spool.camera_dir(self.id())
    }

    /// Every `STATUS_POLL`: follow the camera's re-stream (start, cut over), check stalls;
    /// once a second, pause while the spool is below its free-space floor.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let every = (Duration::from_secs(1).as_millis() / STATUS_POLL.as_millis()) as u64;
        if self.ticks.is_multiple_of(every) {
            let floor = self.shared.spool.below_floor();
            if floor.is_some() && self.timeline.recording() {
                tracing::warn!("spool below its floor; stopping the recording");
            }
            let effects = self.timeline.floor(floor.is_some());
            self.report_problem(floor);
            self.apply(effects, ctx);
        }
        self.ticks += 1;
        let effects = self.timeline.check(Instant::now());
        self.apply(effects, ctx);
        self.poll_handover(ctx);
        if self.polling {
            return;
        }
        self.polling = true;
        let state = self.shared.state.clone();
        let key = status_key(self.id());
        async move { get_json::<CameraStatus>(&*state, &key).await.ok().flatten() }
            .into_actor(self)
            .map(move |status, act, ctx| {
                let _span = act.span.clone().entered();
                act.polling = false;
                let live = status.filter(|s| s.state == CameraState::Live);
                if let Some(codec) = live.as_ref().and_then(|s| VideoCodec::from_name(&s.codec)) {
                    act.codec = codec;
                }
                let url = live.map(|s| s.restream_url);
                let effects = act.timeline.status(url.as_deref(), Instant::now());
                act.apply(effects, ctx);
            })
            .spawn(ctx);
    }

    /// A handover between recorders in progress: taking over, say (again: the key is short-lived)
    /// that the stream is held and look for where the other recorder ended; handing over, look
    /// for a recorder that holds the stream.
    fn poll_handover(&mut self, ctx: &mut Context<Self>) {
        let (ready_since, awaiting) = (
            self.timeline.ready_since(),
            self.timeline.awaiting_successor(),
        );
        // Said until the last segment has ended (however long the GOP), so that the successor
        // does not take the silence for a crash.
        let handing_over = self.timeline.handing_over();
        if self.handover_polling || (ready_since.is_none() && !handing_over) {
            return;
        }
        self.handover_polling = true;
        let (state, id) = (self.shared.state.clone(), self.id().to_string());
        let me = self.shared.spool.worker_id.clone();
        let giving = handing_over.then(|| self.announce_giving());
        async move {
            if let Some(announced) = giving {
                announced.await;
            }
            let (ready, cut) = (handover_ready_key(&id), handover_cut_key(&id));
            if let Some(since_ms) = ready_since {
                let mine = Ready {
                    worker: me.clone(),
                    since_ms,
                };
                let _ = set_json(&*state, &ready, &mine, Some(READY_TTL)).await;
                let cut = get_json::<Cut>(&*state, &cut).await.ok().flatten();
                // Meant for this recorder, and not left from an earlier handover.
                let at = cut.filter(|c| c.to == me && c.at_ms >= since_ms - 1000);
                let from = state.get(&handover_from_key(&id)).await.ok().flatten();
                let giving = from.is_some_and(|w| w != me.as_bytes());
                (at.map(|c| c.at_ms), None, giving)
            } else if awaiting {
                let other = get_json::<Ready>(&*state, &ready).await.ok().flatten();
                let successor = other.filter(|r| r.worker != me).map(|r| r.worker);
                (None, successor, false)
            } else {
                (None, None, false)
            }
        }
        .into_actor(self)
        .map(move |(cut_at, successor, giving), act, ctx| {
            let _span = act.span.clone().entered();
            act.handover_polling = false;
            // Taking over from a recorder that is not handing over (it died, its heartbeat not
            // yet expired): do not wait out the whole handover timeout.
            let now = Instant::now();
            let silent = match ready_since {
                Some(_) if !giving => *act.predecessor_silent.get_or_insert(now),
                _ => {
                    act.predecessor_silent = None;
                    now
                }
            };
            let effects = if let Some(at_ms) = cut_at {
                act.timeline.cut_at(at_ms)
            } else if now.duration_since(silent) > PREDECESSOR_SILENCE {
                act.predecessor_silent = None;
                act.timeline.go_alone()
            } else if let Some(worker) = successor {
                tracing::info!(%worker, "the next recorder holds the stream; ending at the next keyframe");
                act.successor = Some(worker);
                act.timeline.successor_ready()
            } else {
                return;
            };
            act.apply(effects, ctx);
        })
        .spawn(ctx);
    }

    /// Says (for a short while: refreshed while it lasts) that this recorder hands the camera
    /// over, so the recorder that gets it takes it over instead of starting afresh.
    fn announce_giving(&self) -> impl std::future::Future<Output = ()> + use<> {
        let (state, key) = (self.shared.state.clone(), handover_from_key(self.id()));
        let me = self.shared.spool.worker_id.clone();
        async move {
            let _ = state.set(&key, me.as_bytes(), Some(READY_TTL)).await;
        }
    }

    /// Carries out what the timeline decided, in order, and logs what it noted.
    fn apply(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Start { run, url, hold } => {
                    match self.build(&url, run, hold, ctx.address()) {
                        Ok(p) => {
                            self.pipelines.insert(run, p);
                        }
                        Err(e) => {
                            let effects = self.timeline.ended(run, &e.to_string());
                            self.apply(effects, ctx);
                        }
                    }
                }
                Effect::Release { run, at_ns } => {
                    if let Some(p) = self.pipelines.get(&run) {
                        p.segmenter.release(at_ns);
                    }
                }
                Effect::EndAtKeyframe { run } => {
                    if let Some(p) = self.pipelines.get(&run) {
                        p.segmenter.end_at_next_keyframe();
                    }
                }
                Effect::HandedOver { at_ms } => {
                    match (at_ms, self.successor.take()) {
                        (Some(at_ms), Some(to)) => {
                            tracing::info!(worker = %to, at_ms, "recording handed over");
                            let (state, key) =
                                (self.shared.state.clone(), handover_cut_key(self.id()));
                            tokio::spawn(async move {
                                let cut = Cut { to, at_ms };
                                let _ = set_json(&*state, &key, &cut, Some(CUT_TTL)).await;
                            });
                        }
                        _ => tracing::warn!("no recorder took the stream over in time; stopping"),
                    }
                    ctx.stop();
                }
                Effect::Drop { run, unfinished } => {
                    self.pipelines.remove(&run);
                    // Its writers are stopped: keep the whole fragments of what they wrote.
                    for (location, start_ms) in unfinished {
                        let (spool, id) = (self.shared.spool.clone(), self.spec.camera_id.clone());
                        let span = self.span.clone();
                        tokio::task::spawn_blocking(move || {
                            let _span = span.entered();
                            spool.salvage(&id, std::path::Path::new(&location), start_ms);
                        });
                    }
                }
                Effect::Opened { location, start_ms } => self
                    .shared
                    .spool
                    .opened(std::path::Path::new(&location), start_ms),
                Effect::Segment {
                    location,
                    start_ms,
                    end_ms,
                } => {
                    let path = std::path::Path::new(&location);
                    let done =
                        self.shared
                            .spool
                            .finish(self.id(), path, (start_ms, end_ms), self.codec);
                    if let Err(e) = done {
                        tracing::error!(error = %e, "cannot record a finished segment");
                    }
                }
            }
        }
        for note in self.timeline.take_notes() {
            match note {
                Note::Recording { url } => tracing::info!(%url, "recording"),
                Note::CutOver {
                    url,
                    at_ms: Some(at_ms),
                } => tracing::info!(%url, at_ms, "the re-stream moved; cut over at one keyframe"),
                Note::CutOver { url, at_ms: None } => tracing::info!(
                    %url,
                    "the re-stream moved; the old one ended without a keyframe, cut over at the new one's first"
                ),
                Note::Stalled => tracing::warn!("re-stream silent; reconnecting"),
                Note::Interrupted { reason } => {
                    tracing::warn!(%reason, "recording interrupted; will reconnect")
                }
                Note::CutOverFailed { reason } => {
                    tracing::warn!(%reason, "cannot pull the moved re-stream yet; will retry")
                }
                Note::TookOver { at_ms: Some(at_ms) } => {
                    tracing::info!(
                        at_ms,
                        "took the recording over where the previous recorder ended"
                    )
                }
                Note::TookOver { at_ms: None } => tracing::warn!(
                    "the previous recorder did not say where it ended; recording all that was held"
                ),
                Note::HandingOver => {
                    tracing::info!(
                        "handing the recording over; recording until the next recorder holds the stream"
                    )
                }
            }
        }
    }

    fn build(&self, url: &str, run: u64, hold: bool, addr: Addr<Self>) -> anyhow::Result<Pipeline> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        let events_to = addr.clone();
        let segmenter = Segmenter::new(
            dir,
            format!("{}-{run}", cloudcam_core::now_ms()),
            Duration::from_secs(self.shared.settings.segment_seconds),
            move |event| {
                events_to.do_send(match event {
                    Event::Opened {
                        location,
                        running_ns,
                    } => Piped::Opened {
                        run,
                        location,
                        running_ns,
                    },
                    Event::Closed {
                        location,
                        running_ns,
                    } => Piped::Closed {
                        run,
                        location,
                        running_ns,
                    },
                    Event::Failed { reason } => Piped::Ended { run, reason },
                    Event::Ended => Piped::Ended {
                        run,
                        reason: "the re-stream ended".into(),
                    },
                })
            },
        );
        if hold {
            segmenter.hold();
        }
        let pipeline = gst::Pipeline::new();
        // The re-stream over TCP, without rtspsrc's rtpbin (see `rtsp_pull`).
        let pull = RtspPull::new();
        let src = pull.element().clone();
        // The codec the camera's status names: the re-stream serves it as the camera sends it.
        let depay = gst::ElementFactory::make(self.codec.depayloader()).build()?;
        let parse = gst::ElementFactory::make(self.codec.parser()).build()?;
        let video_sink = appsink(&segmenter, Some(self.codec));
        pipeline.add_many([&src, &depay, &parse, video_sink.upcast_ref()])?;
        gst::Element::link_many([&depay, &parse, video_sink.upcast_ref()])?;
        // Joining the re-stream mid-GOP: nothing is written before the first keyframe, so every
        // segment starts with one.
        let keyed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let video_keyed = keyed.clone();
        let gate = std::sync::Arc::new(AudioGate::default());
        let video_gate = gate.clone();
        let keyframe_to = addr.clone();
        // Since the previous keyframe, the least delayed frame: (wall ms, running time ns).
        let least_delayed = std::sync::Mutex::new(None::<(i64, u64)>);
        parse.static_pad("src").expect("parser src pad").add_probe(
            gst::PadProbeType::BUFFER,
            move |pad, info| {
                use std::sync::atomic::Ordering::Relaxed;
                let Some(b) = info.buffer() else {
                    return gst::PadProbeReturn::Ok;
                };
                // mp4mux fails the whole pipeline ("Buffer has no PTS") on one: seen now and
                // then among a fresh re-stream session's first frames.
                if b.pts().is_none() {
                    tracing::debug!("dropped a video buffer without a timestamp");
                    return gst::PadProbeReturn::Drop;
                }
                let keyframe = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let first = !video_keyed.load(Relaxed);
                if first && (!keyframe || video_gate.holds_video()) {
                    return gst::PadProbeReturn::Drop;
                }
                // Where this pipeline's running time is on the wall clock.
                let running = pad.sticky_event::<gst::event::Segment>(0).and_then(|ev| {
                    let segment = ev.segment().downcast_ref::<gst::ClockTime>()?;
                    segment.to_running_time(b.pts()?)
                });
                let Some(rt) = running.map(|rt| rt.nseconds()) else {
                    video_keyed.store(true, Relaxed);
                    return gst::PadProbeReturn::Ok;
                };
                let wall_ms = cloudcam_core::now_ms();
                if first {
                    video_keyed.store(true, Relaxed);
                    keyframe_to.do_send(Piped::Keyframe {
                        run,
                        running_ns: rt,
                        wall_ms,
                    });
                    return gst::PadProbeReturn::Ok;
                }
                let mut least_delayed = least_delayed.lock().unwrap_or_else(|e| e.into_inner());
                if keyframe && let Some((wall_ms, running_ns)) = least_delayed.take() {
                    keyframe_to.do_send(Piped::Clock {
                        run,
                        running_ns,
                        wall_ms,
                    });
                }
                use crate::timeline::delay_ns;
                if least_delayed.is_none_or(|(w, r)| delay_ns(wall_ms, rt) < delay_ns(w, r)) {
                    *least_delayed = Some((wall_ms, rt));
                }
                gst::PadProbeReturn::Ok
            },
        );
        // Audio (AAC, or G.711 encoded to AAC) is recorded with the video when the re-stream
        // has it; the segmenter must know before the first segment starts, so the audio
        // branch is made from the SDP.
        let audio: std::sync::Arc<std::sync::Mutex<Option<gst::Element>>> = Default::default();
        let described = {
            let (weak, audio, segmenter) = (pipeline.downgrade(), audio.clone(), segmenter.clone());
            let keyed = keyed.clone();
            let gate = gate.clone();
            move |streams: &[gst::Caps]| -> Option<()> {
                let codec = streams.iter().find_map(|caps| {
                    let s = caps.structure(0)?;
                    if s.get::<&str>("media").ok()? != "audio" {
                        return None;
                    }
                    AudioCodec::from_name(s.get::<&str>("encoding-name").ok()?)
                })?;
                let pipeline = weak.upgrade()?;
                let sink = appsink(&segmenter, None);
                // MP4 has no G.711, and segments here hold AAC: other audio is encoded to AAC
                // (audio only; the video never is).
                let chain = format!("{} ! {}", codec.depayloader(), codec.to_aac());
                if let Ok(bin) = gst::parse::bin_from_description(&chain, true)
                    && let adepay = bin.upcast::<gst::Element>()
                    && pipeline.add_many([&adepay, sink.upcast_ref()]).is_ok()
                    && adepay.link(&sink).is_ok()
                {
                    // No audio before the first video keyframe: the first segment would start
                    // (and be indexed) from the audio, up to a GOP before its first frame.
                    let keyed = keyed.clone();
                    gate.expected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    let gate = gate.clone();
                    if let Some(pad) = adepay.static_pad("src") {
                        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                            gate.arrived
                                .store(true, std::sync::atomic::Ordering::Relaxed);
                            if keyed.load(std::sync::atomic::Ordering::Relaxed) {
                                gst::PadProbeReturn::Ok
                            } else {
                                gst::PadProbeReturn::Drop
                            }
                        });
                    }
                    segmenter.with_audio();
                    if !matches!(codec, AudioCodec::Aac | AudioCodec::AacLatm) {
                        tracing::info!(?codec, "audio recorded as AAC");
                    }
                    for e in [&adepay, sink.upcast_ref::<gst::Element>()] {
                        let _ = e.sync_state_with_parent();
                    }
                    *audio.lock().expect("audio lock") = Some(adepay);
                }
                Some(())
            }
        };
        {
            let weak = pipeline.downgrade();
            src.connect_pad_added(move |_, pad| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                let media = caps
                    .structure(0)
                    .and_then(|s| s.get::<&str>("media").ok())
                    .unwrap_or("")
                    .to_string();
                let target = match media.as_str() {
                    "video" => Some(depay.clone()),
                    "audio" => audio.lock().expect("audio lock").clone(),
                    _ => None,
                };
                let target = target
                    .and_then(|t| t.static_pad("sink"))
                    .filter(|p| !p.is_linked());
                let linked = target.is_some_and(|t| pad.link(&t).is_ok());
                if !linked
                    && let Ok(sink) = gst::ElementFactory::make("fakesink")
                        .property("async", false)
                        .build()
                    && pipeline.add(&sink).is_ok()
                {
                    let _ = sink.sync_state_with_parent();
                    let _ = pad.link(&sink.static_pad("sink").expect("fakesink sink pad"));
                }
            });
        }
        let mut messages = pipeline.bus().expect("pipeline bus").stream();
        let ended = segmenter.clone();
        let failed_to = addr.clone();
        let bus_task = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(msg) = messages.next().await {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        tracing::debug!(debug = ?err.debug(), "pipeline error");
                        addr.do_send(Piped::Ended {
                            run,
                            reason: err.error().to_string(),
                        });
                        return;
                    }
                    // After a finish or the re-stream's end: the segmenter reports the end
                    // once its last file is complete.
                    gst::MessageView::Eos(_) => {
                        ended.source_ended();
                        return;
                    }
                    _ => {}
                }
            }
        });
        let pipeline = Pipeline {
            pipeline,
            src,
            pull,
            bus_task,
            segmenter,
        };
        pipeline.pipeline.set_state(gst::State::Playing)?;
        let auth = &self.shared.settings.restream_auth;
        let request = PullRequest {
            url: url.to_string(),
            credentials: Some((auth.user.clone(), auth.password.clone())),
            connect_timeout: CONNECT_TIMEOUT,
            read_every: Some(READ_EVERY),
        };
        pipeline.pull.start(
            request,
            Arc::new(move |event| match event {
                PullEvent::Described(streams) => {
                    described(&streams);
                }
                PullEvent::Failed { reason, .. } => {
                    failed_to.do_send(Piped::Ended { run, reason });
                }
                // The session's end reaches the sinks as EOS (see the bus task).
                PullEvent::Opened | PullEvent::Ended => {}
            }),
        );
        Ok(pipeline)
    }

    /// Deletes segments older than the camera's retention from the store and the index.
    fn apply_retention(&self) {
        let retention_ms = self.spec.retention_seconds as i64 * 1000;
        if retention_ms <= 0 {
            return;
        }
        let cutoff = cloudcam_core::now_ms() - retention_ms;
        let (state, store, id) = (
            self.shared.state.clone(),
            self.shared.store.clone(),
            self.spec.camera_id.clone(),
        );
        let task = async move {
            let Ok(old) = segments(&*state, &id, 0, cutoff).await else {
                return;
            };
            for s in old.into_iter().filter(|s| s.end_ms <= cutoff) {
                let path = object_store::path::Path::from(s.key.as_str());
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        let _ = unindex_segment(&*state, &s).await;
                        tracing::info!(key = %s.key, "segment expired");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot delete an expired segment");
                        return;
                    }
                }
            }
        };
        actix::spawn(tracing::Instrument::instrument(task, self.span.clone()));
    }
}

impl Actor for RecordingActor {
    type Context = Context<Self>;

    /// Before anything else: if another recorder records the camera now (it is handing it
    /// over, or lists it in its heartbeat), this one takes the recording over from it (see
    /// [`Timeline`]).
    fn started(&mut self, ctx: &mut Context<Self>) {
        let (state, id) = (self.shared.state.clone(), self.id().to_string());
        let me = self.shared.spool.worker_id.clone();
        async move {
            let giving = state.get(&handover_from_key(&id)).await.ok().flatten();
            if giving.is_some_and(|w| w != me.as_bytes()) {
                return true;
            }
            let workers = cloudcam_core::workers::list(&*state)
                .await
                .unwrap_or_default();
            workers
                .into_iter()
                .any(|w| w.kind == "recorder" && w.id != me && w.cameras.contains(&id))
        }
        .into_actor(self)
        .map(|recorded_elsewhere, act, ctx| {
            if recorded_elsewhere {
                let _span = act.span.clone().entered();
                tracing::info!("another recorder records the camera; taking it over");
                act.timeline.take_over();
            }
            ctx.run_interval(STATUS_POLL, |act, ctx| act.tick(ctx));
            let every = Duration::from_millis(act.shared.settings.retention_interval_ms);
            ctx.run_interval(every, |act, _| act.apply_retention());
            act.tick(ctx);
        })
        .wait(ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let effects = self.timeline.stop();
        self.apply(effects, ctx);
        self.report_problem(None);
        tracing::info!("recording stopped");
    }
}

impl Handler<UpdateSpec> for RecordingActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateSpec, _: &mut Context<Self>) {
        self.spec = msg.0;
    }
}

impl Handler<HandOver> for RecordingActor {
    type Result = ResponseFuture<()>;

    /// Answered once the recorder that takes over can tell that this one is handing over.
    fn handle(&mut self, _: HandOver, ctx: &mut Context<Self>) -> Self::Result {
        let _span = self.span.clone().entered();
        let effects = self.timeline.hand_over(Instant::now());
        self.apply(effects, ctx);
        let giving = self
            .timeline
            .awaiting_successor()
            .then(|| self.announce_giving());
        Box::pin(async move {
            if let Some(announced) = giving {
                announced.await;
            }
        })
    }
}

/// The camera came back before the handover ended: record on (answers whether it can).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct TakeBack;

impl Handler<TakeBack> for RecordingActor {
    type Result = bool;

    fn handle(&mut self, _: TakeBack, _: &mut Context<Self>) -> bool {
        let _span = self.span.clone().entered();
        let kept = self.timeline.take_back();
        if kept {
            self.successor = None;
            tracing::info!("back on this recorder before the handover ended; recording on");
        }
        kept
    }
}

impl Handler<Stop> for RecordingActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        let effects = self.timeline.stop();
        self.apply(effects, ctx);
        ctx.stop();
    }
}

impl Handler<Piped> for RecordingActor {
    type Result = ();

    fn handle(&mut self, msg: Piped, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        let (now, wall) = (Instant::now(), cloudcam_core::now_ms());
        let effects = match msg {
            Piped::Keyframe {
                run,
                running_ns,
                wall_ms,
            } => self.timeline.keyframe(run, running_ns, wall_ms, now),
            Piped::Clock {
                run,
                running_ns,
                wall_ms,
            } => {
                self.timeline.clock(run, running_ns, wall_ms);
                Vec::new()
            }
            Piped::Opened {
                run,
                location,
                running_ns,
            } => self.timeline.opened(run, location, running_ns, wall, now),
            Piped::Closed {
                run,
                location,
                running_ns,
            } => self.timeline.closed(run, &location, running_ns, wall, now),
            Piped::Ended { run, reason } => self.timeline.ended(run, &reason),
        };
        self.apply(effects, ctx);
    }
}
