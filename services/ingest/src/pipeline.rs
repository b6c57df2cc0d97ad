//! The GStreamer relay of one camera:
//!
//! ```text
//! source  ─(H.264 video pad)─ output-selector ─(as sent)─────────────────────── multiudpsink → Janus
//!         │                                 └(re-payloaded)─ rtph264depay ! h264parse
//!         │                                                  ! rtph264pay ! multiudpsink → Janus
//!         ├(H.265 video pad)─ rtph265depay ! h265parse ! rtph265pay ! multiudpsink → re-stream
//!         ├(AAC, G.711 or Opus audio pad)─ tee ─ multiudpsink → re-stream
//!         │                         ├ queue ! valve ! decode ! opusenc ! rtpopuspay
//!         │                         │ ! multiudpsink → Janus (AAC as Opus, while watched)
//!         │                         └ [Opus: re-payloaded at PT 111] ! multiudpsink → Janus
//!         │                           (G.711 or Opus as sent, while watched)
//!         └(any other pad)── fakesink
//! ```
//!
//! The source is the camera's RTSP session: over TCP (`rtsp://`, the default) the bin of
//! [`cloudcam_core::rtsp_pull`], over UDP or for `rtsps://` an `rtspsrc`; either has a pad per
//! stream. A pushed camera's source is a bin with a pad per stream of the push session under
//! way ([`crate::push`]), linked just the same.
//!
//! The video sinks also feed the worker's re-stream while it is pulled: the sinks' clients
//! change in place ([`Relay::retarget`]). Janus gets the video only where its mountpoint
//! takes the codec: H.264, or H.265 once signal has made the camera's mountpoint take it (for
//! browsers that decode it); the re-stream (recordings, snapshots, RTSP clients) always.
//!
//! No video is decoded or encoded. (Audio may be, for the live view only: WebRTC carries no
//! AAC, so while someone watches, AAC is decoded and encoded to Opus for Janus; Opus goes as
//! it is, and so does G.711 once the camera's mountpoint takes it. The re-stream gets the
//! audio as the camera sent it.) A camera whose RTP serves a late-joining viewer as it is
//! (SPS/PPS before every keyframe, packets small enough for WebRTC) is forwarded untouched;
//! any other has its access units depayloaded, parsed (so SPS/PPS are repeated before every
//! keyframe) and payloaded again ([`crate::forward`] decides, packet by packet). The relay
//! reports what happens through a callback; it knows nothing of actors, Kafka or Redis.

use crate::config::CameraSettings;
use crate::forward::{FirstFrame, Forwarding, Hold, Route, VIDEO_PT, starts_keyframe};
use crate::push::{PushEvent, PushFeed, PushSink};
use cloudcam_core::camera::CameraSecret;
use cloudcam_core::codec::{AudioCodec, VideoCodec};
use cloudcam_core::rtsp_pull::{PullEvent, PullFailure, PullRequest, RtspPull};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot build the pipeline: {0}")]
    Build(#[from] gst::glib::BoolError),
    #[error("cannot start the pipeline: {0}")]
    State(#[from] gst::StateChangeError),
}

/// Why a camera connection failed, as far as the relay can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Unreachable,
    AuthFailed,
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PipelineEvent {
    /// The camera answered the session (PLAY answered); frames should follow.
    Opened,
    /// The camera's video is `codec`; linked, frames follow.
    Video {
        codec: VideoCodec,
    },
    /// The first access unit reached the relay.
    FirstFrame,
    /// The camera sends audio cloudcam carries (AAC, G.711, Opus), forwarded untouched as RTP
    /// with these caps.
    Audio {
        codec: AudioCodec,
        caps: String,
    },
    /// The video is forwarded as the camera sends it (`as_sent`), or re-payloaded from now on.
    Forwarding {
        as_sent: bool,
    },
    /// The camera offers no video that can be relayed without transcoding.
    Unsupported {
        reason: String,
    },
    Failed {
        kind: FailureKind,
        reason: String,
    },
    /// The camera ended the stream.
    Eos,
}

pub type EventSink = Arc<dyn Fn(PipelineEvent) + Send + Sync>;

/// Counters updated from the streaming thread, read by the camera actor.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub last_frame_ms: AtomicI64,
    /// RTP packets handed to the UDP sink (Janus and the re-stream).
    pub rtp_packets: AtomicU64,
}

/// Where a camera's stream comes from: pulled from `url`, or pushed to the worker (`push`).
#[derive(Clone)]
pub struct Source {
    pub url: String,
    pub secret: Option<CameraSecret>,
    /// A pushed camera's sessions; `url` is unused then.
    pub push: Option<Arc<PushFeed>>,
}

/// Where a relay sends RTP (`host`, `port`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// The camera's Janus mountpoints that take H.264 video.
    pub janus: Vec<(String, u16)>,
    /// The camera's Janus mountpoints that take H.265 video (signal makes them so once the
    /// camera is found to send it, for browsers that decode it).
    pub janus_h265: Vec<(String, u16)>,
    /// The worker's re-stream (while it is pulled): the video, whatever its codec.
    pub restream: Vec<(String, u16)>,
    /// The worker's re-stream (while it is pulled): the camera's audio (AAC, G.711, Opus), if
    /// it has any.
    pub audio: Vec<(String, u16)>,
    /// The Janus mountpoints' live audio, while someone watches, with the codec each takes:
    /// `None` for Opus (an Opus camera's audio is relayed to it as it is; any other is
    /// transcoded, only while one of these is here), or the G.711 the camera sends, relayed as
    /// it is.
    pub janus_audio: Vec<(String, u16, Option<AudioCodec>)>,
}

impl Targets {
    /// `multiudpsink`'s `clients` for video in `codec`: the mountpoints that take it, and
    /// the re-stream.
    fn video_clients(&self, codec: VideoCodec) -> String {
        let janus = match codec {
            VideoCodec::H264 => &self.janus,
            VideoCodec::H265 => &self.janus_h265,
        };
        clients(janus.iter().chain(&self.restream))
    }

    /// `multiudpsink`'s `clients` for the live audio of a camera sending `codec`: the Opus
    /// transcode's (`as_sent` false: Opus mountpoints, unless the camera sends Opus), or the
    /// camera's own RTP's (true: mountpoints that take its codec).
    fn live_audio_clients(&self, codec: AudioCodec, as_sent: bool) -> String {
        let to = |takes: Option<AudioCodec>| {
            if as_sent {
                codec.plays_in_browsers() && takes == codec.mountpoint_codec()
            } else {
                takes.is_none() && codec != AudioCodec::Opus
            }
        };
        clients(
            self.janus_audio
                .iter()
                .filter(|(_, _, takes)| to(*takes))
                .map(|(host, port, _)| (host.clone(), *port))
                .collect::<Vec<_>>()
                .iter(),
        )
    }
}

/// Where the RTP goes, and the codecs of the video and audio streams linked so far.
type Linked = (Targets, Option<VideoCodec>, Option<AudioCodec>);

/// A running relay; dropping it stops the pipeline.
pub struct Relay {
    pipeline: gst::Pipeline,
    /// The camera's source (`pull`'s bin, an `rtspsrc`, or the bin of a push session's
    /// pads); stopped before the rest.
    src: gst::Element,
    /// A pushed camera's sessions, which this relay takes while it runs.
    push: Option<Arc<PushFeed>>,
    /// A camera pulled over TCP: its session (`src` is its bin).
    pull: Option<RtspPull>,
    /// Where the RTP goes, and the video's and audio's codecs once their streams are linked;
    /// held while a stream is being linked.
    targets: Arc<std::sync::Mutex<Linked>>,
    /// How the video packets are routed (as they are, or re-payloaded).
    forwarding: Arc<std::sync::Mutex<Forwarding>>,
    bus_task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub fn start(
        source: &Source,
        targets: &Targets,
        settings: &CameraSettings,
        counters: Arc<Counters>,
        on_event: EventSink,
    ) -> Result<Self, PipelineError> {
        let pipeline = gst::Pipeline::new();
        // The first frame is reported once every stream is linked (see `LiveGate`).
        let gate = LiveGate::new(on_event.clone());
        let on_event: EventSink = {
            let (gate, inner) = (gate.clone(), on_event);
            Arc::new(move |event| match event {
                PipelineEvent::FirstFrame => gate.frame(),
                event => inner(event),
            })
        };
        let pull = (source.push.is_none()
            && PullRequest::handles(&source.url, &settings.transport))
        .then(RtspPull::new);
        let src = match (&source.push, &pull) {
            // Its pads are made as the pushed streams arrive (see `push_sink`).
            (Some(_), _) => gst::Bin::with_name("push").upcast(),
            // Its pads are made once the session plays.
            (None, Some(pull)) => pull.element().clone(),
            (None, None) => pull_source(source, settings)?,
        };
        pipeline.add(&src)?;

        let targets = Arc::new(std::sync::Mutex::new((targets.clone(), None, None)));
        let forwarding = Arc::new(std::sync::Mutex::new(Forwarding::new(
            settings.forward_max_packet,
        )));
        let linked = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let weak = pipeline.downgrade();
        {
            let targets = targets.clone();
            let forwarding = forwarding.clone();
            let linked = linked.clone();
            // One audio stream is re-streamed (its sink has a name); any other is not.
            let audio_linked = AtomicBool::new(false);
            let seen = seen.clone();
            let counters = counters.clone();
            let on_event = on_event.clone();
            src.connect_pad_added(move |_, pad| {
                let Some(pipeline) = weak.upgrade() else {
                    return;
                };
                let (media, encoding) = pad_media(pad);
                let codec = VideoCodec::from_name(&encoding).filter(|_| media == "video");
                let result = if let Some(codec) = codec
                    && !linked.swap(true, Ordering::SeqCst)
                {
                    let mut targets = targets.lock().expect("targets lock");
                    targets.1 = Some(codec);
                    let clients = targets.0.video_clients(codec);
                    on_event(PipelineEvent::Video { codec });
                    match codec {
                        VideoCodec::H264 => link_h264(
                            &pipeline,
                            pad,
                            &clients,
                            forwarding.clone(),
                            counters.clone(),
                            on_event.clone(),
                        ),
                        VideoCodec::H265 => link_repayloaded(
                            &pipeline,
                            pad,
                            codec,
                            &clients,
                            counters.clone(),
                            on_event.clone(),
                        ),
                    }
                } else if media == "audio"
                    && AudioCodec::from_name(&encoding).is_some()
                    && !audio_linked.swap(true, Ordering::SeqCst)
                {
                    let codec = AudioCodec::from_name(&encoding).expect("checked above");
                    on_event(PipelineEvent::Audio {
                        codec,
                        caps: stream_caps(pad),
                    });
                    let mut targets = targets.lock().expect("targets lock");
                    targets.2 = Some(codec);
                    link_audio(&pipeline, pad, codec, &targets.0)
                } else {
                    seen.lock()
                        .expect("seen lock")
                        .push(format!("{media} {encoding}"));
                    link_fakesink(&pipeline, pad)
                };
                if let Err(e) = result {
                    on_event(PipelineEvent::Failed {
                        kind: FailureKind::Other,
                        reason: format!("cannot link the camera's stream: {e}"),
                    });
                }
            });
        }
        if let Some(feed) = &source.push {
            feed.attach(push_sink(&src, on_event.clone(), gate.clone()));
        }
        {
            let on_event = on_event.clone();
            src.connect_no_more_pads(move |_| {
                gate.all_linked();
                if !linked.load(Ordering::SeqCst) {
                    let seen = seen.lock().expect("seen lock").clone();
                    on_event(PipelineEvent::Unsupported {
                        reason: unsupported_reason(&seen),
                    });
                }
            });
        }

        let bus = pipeline.bus().expect("a pipeline has a bus");
        let mut messages = bus.stream();
        let pulled = pull.as_ref().map(|_| pull_events(on_event.clone()));
        let bus_task = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(msg) = messages.next().await {
                match msg.view() {
                    gst::MessageView::Error(err) => {
                        let (kind, reason) = classify(&err.error(), err.debug().as_deref());
                        on_event(PipelineEvent::Failed { kind, reason });
                        return;
                    }
                    gst::MessageView::Eos(_) => {
                        on_event(PipelineEvent::Eos);
                        return;
                    }
                    gst::MessageView::Progress(p) if opened_progress(p) => {
                        on_event(PipelineEvent::Opened);
                    }
                    _ => {}
                }
            }
        });
        pipeline.set_state(gst::State::Playing)?;
        if let (Some(pull), Some(events)) = (&pull, pulled) {
            pull.start(pull_request(source, settings), events);
        }
        Ok(Self {
            pipeline,
            src,
            push: source.push.clone(),
            pull,
            targets,
            forwarding,
            bus_task,
        })
    }

    /// Sends the RTP to `targets` from now on, without touching the camera's session.
    pub fn retarget(&self, targets: &Targets) {
        let mut held = self.targets.lock().expect("targets lock");
        held.0 = targets.clone();
        // A stream not linked yet has no sink: it is linked to these targets then.
        let video = held.1.map(|codec| targets.video_clients(codec));
        let live = |as_sent| {
            held.2
                .map(|codec| targets.live_audio_clients(codec, as_sent))
        };
        let sinks = [
            (video, &[RTP_SINK, RAW_SINK][..]),
            (Some(clients(&targets.audio)), &[AUDIO_SINK][..]),
            (live(false), &[LIVE_AUDIO_SINK][..]),
            (live(true), &[LIVE_AUDIO_AS_SENT_SINK][..]),
        ];
        if let (Some(valve), Some(opus)) = (self.pipeline.by_name(LIVE_AUDIO_VALVE), live(false)) {
            valve.set_property("drop", opus.is_empty());
        }
        for (clients, names) in sinks {
            let Some(clients) = clients else { continue };
            for name in names {
                if let Some(sink) = self.pipeline.by_name(name) {
                    sink.set_property("clients", clients.as_str());
                }
            }
        }
    }

    /// Width and height of the relayed video, once known.
    pub fn video_size(&self) -> Option<(u32, u32)> {
        let forwarding = self.forwarding.lock().expect("forwarding lock");
        if forwarding.is_raw() {
            return forwarding.size();
        }
        drop(forwarding);
        let parse = self.pipeline.by_name("parse")?;
        let caps = parse.static_pad("src")?.current_caps()?;
        let s = caps.structure(0)?;
        Some((
            s.get::<i32>("width").ok()? as u32,
            s.get::<i32>("height").ok()? as u32,
        ))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.bus_task.abort();
        if let Some(feed) = &self.push {
            feed.detach();
        }
        if let Some(pull) = &self.pull {
            pull.stop();
        }
        cloudcam_core::rtp_timestamper::stop_source_first(&self.pipeline, &self.src);
    }
}

/// What to pull of a camera over TCP: its URL with its secret query parameters (signal keeps
/// credentials out of the URL itself), and its credentials.
fn pull_request(source: &Source, settings: &CameraSettings) -> PullRequest {
    PullRequest {
        url: source
            .secret
            .as_ref()
            .map_or_else(|| source.url.clone(), |s| s.location(&source.url)),
        credentials: source
            .secret
            .as_ref()
            .map(|s| (s.username.clone(), s.password.clone())),
        connect_timeout: std::time::Duration::from_millis(settings.connect_timeout_ms),
        // Live: every packet on at once.
        read_every: None,
    }
}

/// The relay's events of a pulled session.
fn pull_events(on_event: EventSink) -> cloudcam_core::rtsp_pull::PullEvents {
    Arc::new(move |event| match event {
        // The session's end reaches the sinks as EOS, which the bus task reports.
        PullEvent::Described(_) | PullEvent::Ended => {}
        PullEvent::Opened => on_event(PipelineEvent::Opened),
        PullEvent::Failed { kind, reason } => on_event(PipelineEvent::Failed {
            kind: match kind {
                PullFailure::Unreachable => FailureKind::Unreachable,
                PullFailure::AuthFailed => FailureKind::AuthFailed,
                PullFailure::Other => FailureKind::Other,
            },
            reason,
        }),
    })
}

/// `rtspsrc` pulling the camera over UDP, or over RTSPS (its pads are the camera's streams,
/// as RTP).
fn pull_source(
    source: &Source,
    settings: &CameraSettings,
) -> Result<gst::Element, gst::glib::BoolError> {
    let location = source
        .secret
        .as_ref()
        .map_or_else(|| source.url.clone(), |s| s.location(&source.url));
    let src = gst::ElementFactory::make("rtspsrc")
        .property("location", &location)
        .property("latency", settings.latency_ms)
        .property("tcp-timeout", settings.connect_timeout_ms * 1000)
        .property("drop-on-latency", true)
        .build()?;
    // The relay never syncs to a clock: the jitter buffer only reorders, and need not
    // map the camera's timestamps onto the pipeline clock (8 % of a relay's CPU).
    src.set_property_from_str("buffer-mode", "none");
    if settings.transport != "auto" {
        src.set_property_from_str("protocols", &settings.transport);
    }
    // Over TCP nothing arrives out of order: no jitter buffer (and no thread hop) at all.
    if settings.transport == "tcp" {
        cloudcam_core::rtp_timestamper::skip_jitter_buffer(&src);
    }
    if let Some(secret) = source.secret.as_ref().filter(|s| !s.username.is_empty()) {
        src.set_property("user-id", &secret.username);
        src.set_property("user-pw", &secret.password);
    }
    Ok(src)
}

/// Takes a push session's RTP into `bin` (the relay's source): a pad per stream, made at the
/// stream's first packet and linked as a pulled camera's pad would be, on which each packet is
/// pushed from the RTSP server's thread that received it (no queue, no thread hop: as a pulled
/// camera's session task pushes its packets). The session's end is the camera's end of
/// stream.
fn push_sink(bin: &gst::Element, on_event: EventSink, gate: Arc<LiveGate>) -> PushSink {
    let bin = bin
        .downcast_ref::<gst::Bin>()
        .expect("a push source is a bin")
        .downgrade();
    let sources = std::sync::Mutex::new(Vec::<Option<gst::Pad>>::new());
    let ended = AtomicBool::new(false);
    Arc::new(move |event| {
        if ended.load(Ordering::SeqCst) {
            return;
        }
        let (stream, streams, caps, mut buffer) = match event {
            PushEvent::Ended => {
                ended.store(true, Ordering::SeqCst);
                on_event(PipelineEvent::Eos);
                return;
            }
            PushEvent::Rtp {
                stream,
                streams,
                caps,
                buffer,
            } => (stream, streams, caps, buffer),
        };
        let Some(bin) = bin.upgrade() else {
            return;
        };
        let mut sources = sources.lock().expect("push sources lock");
        if sources.len() <= stream {
            sources.resize(stream + 1, None);
        }
        if sources[stream].is_none() {
            if sources.iter().all(Option::is_none) {
                on_event(PipelineEvent::Opened);
            }
            match cloudcam_core::rtsp_pull::add_pad(&bin, stream, &caps) {
                Ok(src) => {
                    sources[stream] = Some(src);
                    if sources.iter().flatten().count() == streams {
                        gate.all_linked();
                    }
                }
                Err(e) => {
                    ended.store(true, Ordering::SeqCst);
                    on_event(PipelineEvent::Failed {
                        kind: FailureKind::Other,
                        reason: format!("cannot take the pushed stream: {e}"),
                    });
                    return;
                }
            }
        }
        let Some(pad) = sources[stream].clone() else {
            return;
        };
        // Other streams go on while this one's packet is on its way.
        drop(sources);
        // Stamped by this pipeline's clock on the way in.
        let b = buffer.make_mut();
        b.set_pts(bin.current_running_time());
        b.set_dts(gst::ClockTime::NONE);
        let _ = pad.push(buffer);
    })
}

/// The elements that send the video RTP (to Janus and the re-stream): re-payloaded, and as the
/// camera sent it.
const RTP_SINK: &str = "rtp-out";
const RAW_SINK: &str = "rtp-out-raw";
const AUDIO_SINK: &str = "rtp-out-audio";
/// The live view's audio: the sink of the Opus RTP, and the valve that lets the camera's audio
/// through to the encoder only while a watched mountpoint wants it encoded.
const LIVE_AUDIO_SINK: &str = "rtp-out-live-audio";
/// The live view's audio as the camera sends it (G.711 where the mountpoint takes it, Opus).
const LIVE_AUDIO_AS_SENT_SINK: &str = "rtp-out-live-audio-as-sent";
const LIVE_AUDIO_VALVE: &str = "live-audio-valve";

/// `multiudpsink`'s `clients` for `targets`.
fn clients<'a>(targets: impl IntoIterator<Item = &'a (String, u16)>) -> String {
    targets
        .into_iter()
        .map(|(h, p)| format!("{h}:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a progress message is rtspsrc's "stream opened" (DESCRIBE and SETUP answered; PLAY
/// follows at once).
fn opened_progress(p: &gst::message::Progress) -> bool {
    let (kind, code, _) = p.get();
    kind == gst::ProgressType::Complete && code == "open"
}

fn pad_media(pad: &gst::Pad) -> (String, String) {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else {
        return (String::new(), String::new());
    };
    let media = s.get::<&str>("media").unwrap_or("").to_string();
    let encoding = s.get::<&str>("encoding-name").unwrap_or("").to_uppercase();
    (media, encoding)
}

/// Links the camera's H.264 RTP to the sinks. [`Forwarding`] routes each packet: as it is to
/// one sink, or through `rtph264depay ! h264parse ! rtph264pay` to the other (both send to
/// the same clients); the output-selector carries the packets where the route says.
fn link_h264(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    clients: &str,
    forwarding: Arc<std::sync::Mutex<Forwarding>>,
    counters: Arc<Counters>,
    on_event: EventSink,
) -> Result<(), gst::glib::BoolError> {
    let selector = gst::ElementFactory::make("output-selector").build()?;
    selector.set_property_from_str("pad-negotiation-mode", "active");
    let raw_sink = rtp_sink(RAW_SINK, clients)?;
    let repay = repay_chain(pipeline, VideoCodec::H264, clients)?;
    let (depay, repay_sink) = (&repay[0], &repay[repay.len() - 1]);
    pipeline.add_many([&selector, &raw_sink])?;
    let raw_pad = selector
        .request_pad_simple("src_%u")
        .ok_or_else(|| gst::glib::bool_error!("output-selector gave no pad"))?;
    let repay_pad = selector
        .request_pad_simple("src_%u")
        .ok_or_else(|| gst::glib::bool_error!("output-selector gave no pad"))?;
    raw_pad
        .link(&raw_sink.static_pad("sink").expect("sink has a sink pad"))
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    repay_pad
        .link(&depay.static_pad("sink").expect("depay has a sink pad"))
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    for e in [&selector, &raw_sink].into_iter().chain(&repay) {
        e.sync_state_with_parent()?;
    }
    count_packets(&raw_sink, &counters);
    count_packets(repay_sink, &counters);

    // Where packets go now: 0 nowhere yet, else the route's sink. (Weak references: the
    // probe lives on the source's pad, which must not keep the pipeline's elements alive.)
    let active = std::sync::atomic::AtomicU8::new(0);
    let sink_pad = selector
        .static_pad("sink")
        .expect("selector has a sink pad");
    let first = KeyframeHold::new(&sink_pad);
    let (selector, raw_pad, repay_pad) = (
        selector.downgrade(),
        raw_pad.downgrade(),
        repay_pad.downgrade(),
    );
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let (route, pt, packet) = {
            let Ok(map) = buffer.map_readable() else {
                return gst::PadProbeReturn::Drop;
            };
            let route = forwarding.lock().expect("forwarding lock").route(&map);
            // The RTP header's second byte: marker bit (end of an access unit), payload type.
            let second = map.get(1).copied().unwrap_or(0);
            let packet = PacketInfo {
                size: map.len(),
                ends_frame: second & 0x80 != 0,
                key: first.key(VideoCodec::H264, &map),
            };
            (route, second & 0x7f, packet)
        };
        let (code, to) = match route {
            Route::Drop => return gst::PadProbeReturn::Drop,
            Route::Raw => (1, &raw_pad),
            Route::Repay => (2, &repay_pad),
        };
        if active.swap(code, Ordering::Relaxed) != code
            && let (Some(selector), Some(to)) = (selector.upgrade(), to.upgrade())
        {
            selector.set_property("active-pad", &to);
            on_event(PipelineEvent::Forwarding {
                as_sent: route == Route::Raw,
            });
        }
        if route == Route::Raw && pt != VIDEO_PT {
            let buffer = buffer.make_mut();
            if let Ok(mut map) = buffer.map_writable()
                && let Ok(mut rtp) = rtp_types::RtpPacketMut::parse(&mut map[..])
            {
                let _ = rtp.set_payload_type(VIDEO_PT);
            }
        }
        first.offer(buffer, packet, |sent| {
            count_frames(&counters, &on_event, sent)
        })
    });
    pad.link(&sink_pad)
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    Ok(())
}

/// `depay ! parse ! capsfilter ! pay ! multiudpsink` for `codec`, added to `pipeline` and
/// linked (not yet playing): whole access units, parameter sets before every keyframe,
/// 1200-byte packets at [`VIDEO_PT`]. The parser is named `parse` (the video size is read
/// from it).
fn repay_chain(
    pipeline: &gst::Pipeline,
    codec: VideoCodec,
    clients: &str,
) -> Result<Vec<gst::Element>, gst::glib::BoolError> {
    let depay = gst::ElementFactory::make(codec.depayloader()).build()?;
    let parse = gst::ElementFactory::make(codec.parser())
        .name("parse")
        .property("config-interval", -1i32)
        .build()?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder(codec.media_type())
                .field("alignment", "au")
                .build(),
        )
        .build()?;
    let pay = gst::ElementFactory::make(codec.payloader())
        .property("pt", u32::from(VIDEO_PT))
        .property("config-interval", -1i32)
        .property("mtu", 1200u32)
        .build()?;
    if codec == VideoCodec::H264 {
        pay.set_property_from_str("aggregate-mode", "zero-latency");
    }
    let chain = vec![depay, parse, caps, pay, rtp_sink(RTP_SINK, clients)?];
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    Ok(chain)
}

/// Links video the relay always re-payloads (H.265: it goes to the re-stream, which wants
/// parameter sets in band and whole access units, whatever the camera sends).
fn link_repayloaded(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: VideoCodec,
    clients: &str,
    counters: Arc<Counters>,
    on_event: EventSink,
) -> Result<(), gst::glib::BoolError> {
    let chain = repay_chain(pipeline, codec, clients)?;
    for e in &chain {
        e.sync_state_with_parent()?;
    }
    count_packets(&chain[chain.len() - 1], &counters);
    let sink_pad = chain[0].static_pad("sink").expect("depay has a sink pad");
    let first = KeyframeHold::new(&sink_pad);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(gst::PadProbeData::Buffer(buffer)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let packet = match buffer.map_readable() {
            Ok(map) => PacketInfo {
                size: map.len(),
                // The RTP header's marker bit ends an access unit.
                ends_frame: map.get(1).is_some_and(|b| b & 0x80 != 0),
                key: first.key(codec, &map),
            },
            Err(_) => PacketInfo {
                size: buffer.size(),
                ends_frame: false,
                key: None,
            },
        };
        first.offer(buffer, packet, |sent| {
            count_frames(&counters, &on_event, sent)
        })
    });
    pad.link(&sink_pad)
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    Ok(())
}

/// A relay's first keyframe, kept back in its video probe until the next access unit begins
/// ([`FirstFrame`]), then sent into `to` (the pad the probe's pad is linked to) right before
/// that access unit's first packet: the probe runs in the pad's streaming thread. A packet is
/// counted (frames, bytes, the first frame's report) once it is sent, so that the camera is
/// reported live only when its keyframe has gone through (a re-payloaded stream's size is
/// known once its parser has seen the SPS).
struct KeyframeHold {
    /// The decision, and each packet kept.
    state: std::sync::Mutex<(FirstFrame, Vec<(gst::Buffer, PacketInfo)>)>,
    /// The decision's [`FirstFrame::is_done`], read without the lock: once the keyframe has
    /// gone, the probes no longer parse packets for it.
    done: AtomicBool,
    /// Weak: the probe lives on the source's pad, which must not keep the pipeline's elements
    /// alive.
    to: gst::glib::WeakRef<gst::Pad>,
}

/// What a video probe reads of a packet.
#[derive(Debug, Clone, Copy)]
struct PacketInfo {
    size: usize,
    /// It has the RTP marker bit: it ends an access unit.
    ends_frame: bool,
    /// Its [`KeyframeHold::key`].
    key: Option<(u32, bool)>,
}

impl KeyframeHold {
    fn new(to: &gst::Pad) -> Self {
        Self {
            state: Default::default(),
            done: AtomicBool::new(false),
            to: to.downgrade(),
        }
    }

    /// The RTP timestamp of `packet` and whether it starts a keyframe; `None` if it is not
    /// RTP, or once the keyframe has gone (nothing is held any more).
    fn key(&self, codec: VideoCodec, packet: &[u8]) -> Option<(u32, bool)> {
        if self.done.load(Ordering::Relaxed) {
            return None;
        }
        let rtp = rtp_types::RtpPacket::parse(packet).ok()?;
        Some((rtp.timestamp(), starts_keyframe(codec, rtp.payload())))
    }

    /// What the probe returns for `buffer`, of which it read `info`; `sent` counts each
    /// packet as it goes.
    fn offer(
        &self,
        buffer: &gst::Buffer,
        info: PacketInfo,
        sent: impl Fn(PacketInfo),
    ) -> gst::PadProbeReturn {
        let hold = match info.key {
            Some((timestamp, starts_keyframe)) => {
                let mut state = self.state.lock().expect("keyframe hold lock");
                match state.0.offer(timestamp, starts_keyframe) {
                    Hold::Keep => {
                        state.1.push((buffer.clone(), info));
                        return gst::PadProbeReturn::Drop;
                    }
                    Hold::Release => {
                        self.done.store(state.0.is_done(), Ordering::Relaxed);
                        std::mem::take(&mut state.1)
                    }
                    Hold::Pass => Vec::new(),
                }
            }
            None => Vec::new(),
        };
        if let Some(to) = self.to.upgrade() {
            for (kept, kept_info) in hold {
                if to.chain(kept).is_err() {
                    break;
                }
                sent(kept_info);
            }
        }
        sent(info);
        gst::PadProbeReturn::Ok
    }
}

/// Holds the report of the camera's first frame until every stream it sends is linked, or
/// [`ALL_STREAMS_WAIT`] has passed since that frame: a camera reported live has its re-stream
/// (and so its recording) made with all of its streams. rtspsrc links a camera's audio after
/// the video's first frame at times, and a recorder pulling the re-stream in between recorded
/// the video alone.
pub(crate) struct LiveGate {
    on_event: EventSink,
    /// First frame seen, every stream linked, first frame reported.
    state: std::sync::Mutex<(bool, bool, bool)>,
}

/// How long a first frame waits for the camera's other streams to be linked.
const ALL_STREAMS_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl LiveGate {
    fn new(on_event: EventSink) -> Arc<Self> {
        Arc::new(Self {
            on_event,
            state: Default::default(),
        })
    }

    /// The first frame passed.
    fn frame(self: &Arc<Self>) {
        let mut state = self.state.lock().expect("live gate lock");
        if state.0 {
            return;
        }
        state.0 = true;
        if state.1 {
            state.2 = true;
            drop(state);
            (self.on_event)(PipelineEvent::FirstFrame);
            return;
        }
        drop(state);
        let gate = self.clone();
        std::thread::spawn(move || {
            std::thread::sleep(ALL_STREAMS_WAIT);
            gate.all_linked();
        });
    }

    /// Every stream of the camera is linked (or no more are waited for).
    fn all_linked(&self) {
        let mut state = self.state.lock().expect("live gate lock");
        state.1 = true;
        if state.0 && !state.2 {
            state.2 = true;
            drop(state);
            (self.on_event)(PipelineEvent::FirstFrame);
        }
    }
}

/// Counts a camera packet's bytes, and a frame when it ends one (the first is told).
fn count_frames(counters: &Counters, on_event: &EventSink, packet: PacketInfo) {
    counters
        .bytes
        .fetch_add(packet.size as u64, Ordering::Relaxed);
    if packet.ends_frame {
        counters
            .last_frame_ms
            .store(cloudcam_core::now_ms(), Ordering::Relaxed);
        if counters.frames.fetch_add(1, Ordering::Relaxed) == 0 {
            on_event(PipelineEvent::FirstFrame);
        }
    }
}

/// A `multiudpsink` (even without clients, so that clients can be added while it runs).
fn rtp_sink(name: &str, clients: &str) -> Result<gst::Element, gst::glib::BoolError> {
    gst::ElementFactory::make("multiudpsink")
        .name(name)
        .property("clients", clients)
        .property("sync", false)
        .property("async", false)
        .build()
}

/// Counts the RTP packets `sink` sends.
fn count_packets(sink: &gst::Element, counters: &Arc<Counters>) {
    let counters = counters.clone();
    let pad = sink.static_pad("sink").expect("sink has a sink pad");
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let n = match &info.data {
                Some(gst::PadProbeData::Buffer(_)) => 1,
                Some(gst::PadProbeData::BufferList(l)) => l.len() as u64,
                _ => 0,
            };
            counters.rtp_packets.fetch_add(n, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        },
    );
}

/// The RTP caps of a pad, without the per-session fields (SSRC, sequence and clock bases, …),
/// so that a receiver of the forwarded packets can be set up with them.
fn stream_caps(pad: &gst::Pad) -> String {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else {
        return String::new();
    };
    let keep = [
        "media",
        "payload",
        "clock-rate",
        "encoding-name",
        "encoding-params",
        "streamtype",
        "profile-level-id",
        "mode",
        "config",
        "cpresent",
        "object",
        "sizelength",
        "indexlength",
        "indexdeltalength",
    ];
    let mut out = gst::Structure::new_empty("application/x-rtp");
    for (name, value) in s.iter() {
        if keep.contains(&name.as_str()) {
            out.set_value(name, value.clone());
        }
    }
    out.to_string()
}

/// Forwards the camera's audio RTP as it is (no depayloading) to the re-stream, and, while
/// someone watches, to the Janus mountpoints: as it is where they take its codec, else
/// transcoded to Opus.
fn link_audio(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: AudioCodec,
    targets: &Targets,
) -> Result<(), gst::glib::BoolError> {
    let tee = gst::ElementFactory::make("tee")
        .property("allow-not-linked", true)
        .build()?;
    let sink = rtp_sink(AUDIO_SINK, &clients(&targets.audio))?;
    // A slow encoder never holds the re-stream's audio back: its queue drops what it cannot
    // take, and nothing reaches it while nobody watches.
    let opus = targets.live_audio_clients(codec, false);
    let live = gst::parse::bin_from_description(
        &format!(
            "queue leaky=downstream max-size-buffers=100 max-size-bytes=0 max-size-time=0 \
             ! valve name={LIVE_AUDIO_VALVE} drop={} ! {}",
            opus.is_empty(),
            codec.live_chain()
        ),
        true,
    )
    .map_err(|e| gst::glib::bool_error!("live audio: {e}"))?;
    let live_sink = rtp_sink(LIVE_AUDIO_SINK, &opus)?;
    let as_sent = rtp_sink(
        LIVE_AUDIO_AS_SENT_SINK,
        &targets.live_audio_clients(codec, true),
    )?;
    // Opus is re-payloaded at the payload type browsers are offered (no transcode).
    let as_sent_chain: gst::Element = match codec.as_sent_chain() {
        Some(chain) => gst::parse::bin_from_description(chain, true)
            .map_err(|e| gst::glib::bool_error!("live audio: {e}"))?
            .upcast(),
        None => gst::ElementFactory::make("identity").build()?,
    };
    pipeline.add_many([
        &tee,
        &sink,
        live.upcast_ref(),
        &live_sink,
        &as_sent_chain,
        &as_sent,
    ])?;
    gst::Element::link_many([&tee, &sink])?;
    gst::Element::link_many([&tee, live.upcast_ref(), &live_sink])?;
    gst::Element::link_many([&tee, &as_sent_chain, &as_sent])?;
    for e in [
        &as_sent,
        &as_sent_chain,
        &live_sink,
        live.upcast_ref(),
        &sink,
        &tee,
    ] {
        e.sync_state_with_parent()?;
    }
    pad.link(&tee.static_pad("sink").expect("tee has a sink pad"))
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    Ok(())
}

fn link_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), gst::glib::BoolError> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()?;
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&sink.static_pad("sink").expect("fakesink has a sink pad"))
        .map_err(|e| gst::glib::bool_error!("link: {e:?}"))?;
    Ok(())
}

/// A reason naming what the camera offers instead of H.264 video.
pub fn unsupported_reason(seen: &[String]) -> String {
    let video: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.strip_prefix("video "))
        .collect();
    if video.is_empty() {
        "the camera offers no video stream".to_string()
    } else {
        format!(
            "the camera offers {} video only; cloudcam relays H.264 and H.265 without transcoding",
            video.join(", ")
        )
    }
}

/// Maps a GStreamer error to a failure kind and a human-readable reason.
pub fn classify(err: &gst::glib::Error, debug: Option<&str>) -> (FailureKind, String) {
    let debug = debug.unwrap_or("");
    if let Some(res) = err.kind::<gst::ResourceError>() {
        match res {
            gst::ResourceError::NotAuthorized => {
                return (
                    FailureKind::AuthFailed,
                    "the camera rejected the username or password (RTSP 401 Unauthorized)".into(),
                );
            }
            gst::ResourceError::OpenRead
            | gst::ResourceError::OpenReadWrite
            | gst::ResourceError::Read
            | gst::ResourceError::NotFound
            | gst::ResourceError::Write
            | gst::ResourceError::Busy => {
                return (
                    FailureKind::Unreachable,
                    format!(
                        "cannot reach the camera: {}",
                        short_debug(err.message(), debug)
                    ),
                );
            }
            _ => {}
        }
    }
    if debug.contains("401") || debug.contains("Unauthorized") {
        return (
            FailureKind::AuthFailed,
            "the camera rejected the username or password (RTSP 401 Unauthorized)".into(),
        );
    }
    (FailureKind::Other, short_debug(err.message(), debug))
}

/// The error message, with the most telling part of the debug text when there is one.
fn short_debug(message: &str, debug: &str) -> String {
    // GStreamer debug strings look like "path/file.c(123): fn (): /Pipeline/elem:\nDetail".
    let detail = debug.lines().last().unwrap_or("").trim();
    if detail.is_empty() || detail.contains(".c(") {
        message.trim_end_matches('.').to_string()
    } else {
        format!("{} ({detail})", message.trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reasons_name_the_codec() {
        assert_eq!(
            unsupported_reason(&["video JPEG".into(), "audio MPEG4-GENERIC".into()]),
            "the camera offers JPEG video only; cloudcam relays H.264 and H.265 without transcoding"
        );
        assert_eq!(
            unsupported_reason(&["audio PCMU".into()]),
            "the camera offers no video stream"
        );
    }

    /// Serves `launch` (an RTSP server media) at the returned URL, from its own thread.
    fn rtsp_server(launch: &str) -> String {
        use gstreamer_rtsp_server::prelude::*;
        use gstreamer_rtsp_server::{RTSPMediaFactory, RTSPServer};
        let server = RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = RTSPMediaFactory::new();
        factory.set_launch(launch);
        factory.set_shared(true);
        server
            .mount_points()
            .expect("mount points")
            .add_factory("/s", factory);
        let context = gst::glib::MainContext::new();
        let source = server.attach(Some(&context)).expect("attach");
        let url = format!("rtsp://127.0.0.1:{}/s", server.bound_port());
        std::thread::spawn(move || {
            let _keep = (server, source);
            gst::glib::MainLoop::new(Some(&context), false).run();
        });
        url
    }

    /// A camera served by [`rtsp_server`] with `launch`.
    fn served(launch: &str) -> Source {
        Source {
            url: rtsp_server(launch),
            secret: None,
            push: None,
        }
    }

    /// A local UDP socket standing for Janus or the re-stream; reads give up after `wait`.
    fn udp_target(wait: Duration) -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s
    }

    fn port(s: &std::net::UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    /// A relay of `source` to `targets` whose events nobody reads.
    fn quiet_relay(source: &Source, targets: &Targets, settings: &CameraSettings) -> Relay {
        Relay::start(
            source,
            targets,
            settings,
            Default::default(),
            Arc::new(|_| {}),
        )
        .unwrap()
    }

    /// The camera actor stops a relay right after its first event, while the camera's packets
    /// keep coming (a stream it cannot relay, or its first frame). The stop must return.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_relay_stops_while_its_camera_sends() {
        gst::init().unwrap();
        let caps = "video/x-raw,format=I420,width=64,height=48,framerate=250/1";
        let cases = [
            (
                format!(
                    "( videotestsrc is-live=true ! {caps} ! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
                ),
                "unsupported",
            ),
            (
                format!(
                    "( videotestsrc is-live=true ! {caps} ! x264enc tune=zerolatency \
                     speed-preset=ultrafast key-int-max=10 ! rtph264pay name=pay0 pt=96 )"
                ),
                "first frame",
            ),
        ];
        for (launch, event) in cases {
            let source = served(&launch);
            for round in 0..30 {
                let (tx, rx) = std::sync::mpsc::channel();
                let tx = std::sync::Mutex::new(tx);
                let relay = Relay::start(
                    &source,
                    &Targets::default(),
                    &CameraSettings::default(),
                    Default::default(),
                    Arc::new(move |e| {
                        let name = match e {
                            PipelineEvent::Unsupported { .. } => "unsupported",
                            PipelineEvent::FirstFrame => "first frame",
                            _ => return,
                        };
                        let _ = tx.lock().unwrap().send(name);
                    }),
                )
                .unwrap();
                let seen = rx.recv_timeout(Duration::from_secs(10));
                assert_eq!(seen, Ok(event), "round {round}");
                let (done, stopped) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    drop(relay);
                    let _ = done.send(());
                });
                assert!(
                    stopped.recv_timeout(Duration::from_secs(5)).is_ok(),
                    "{event}, round {round}: the relay did not stop within 5 s"
                );
            }
        }
    }

    /// The first keyframe reaches Janus together with the first packet of the next frame,
    /// never alone for a frame interval (see [`FirstFrame`]): H.264 forwarded as sent and
    /// re-payloaded, and H.265. At 2 fps the frames are 500 ms apart; sent as they come, the
    /// keyframe's last packet and the next frame's first would be that far apart too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_keyframe_reaches_janus_with_the_next_frame() {
        gst::init().unwrap();
        let raw = CameraSettings::default();
        let repay = CameraSettings {
            forward_max_packet: 0,
            ..CameraSettings::default()
        };
        let h264 = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
                    ! rtph264pay name=pay0 pt=96 config-interval=-1";
        let h265 = "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=10 \
                    ! rtph265pay name=pay0 pt=96 config-interval=-1";
        for (codec, encode, settings) in [
            (VideoCodec::H264, h264, &raw),
            (VideoCodec::H264, h264, &repay),
            (VideoCodec::H265, h265, &raw),
        ] {
            let case = format!(
                "{codec:?}, forward_max_packet {}",
                settings.forward_max_packet
            );
            let source = served(&format!(
                "( videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=2/1 \
                 ! {encode} )"
            ));
            let janus = udp_target(Duration::from_secs(10));
            let to = vec![("127.0.0.1".into(), port(&janus))];
            let targets = match codec {
                VideoCodec::H264 => Targets {
                    janus: to,
                    ..Targets::default()
                },
                VideoCodec::H265 => Targets {
                    janus_h265: to,
                    ..Targets::default()
                },
            };
            let relay = quiet_relay(&source, &targets, settings);
            let mut packet = [0u8; 2048];
            let timestamp = |p: &[u8]| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let n = janus.recv(&mut packet).expect("RTP at Janus");
            assert!(
                n > 12 && starts_keyframe(codec, &packet[12..n]),
                "{case}: the first packet at Janus starts a keyframe"
            );
            let first = timestamp(&packet);
            let mut last_of_first = std::time::Instant::now();
            loop {
                janus.recv(&mut packet).expect("RTP at Janus");
                if timestamp(&packet) != first {
                    break;
                }
                last_of_first = std::time::Instant::now();
            }
            let alone = last_of_first.elapsed();
            assert!(
                alone < Duration::from_millis(250),
                "{case}: the first keyframe was at Janus {alone:?} before the next frame began"
            );
            drop(relay);
        }
    }

    /// A camera's audio goes to the re-stream as it is sent, and to Janus only while someone
    /// watches (targets name Janus's audio port): as Opus (payload type 111), or as it is sent
    /// where the mountpoint takes its codec (G.711).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn live_audio_is_opus_and_only_while_watched() {
        gst::init().unwrap();
        let video = "videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=25/1 \
                     ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 \
                     ! rtph264pay name=pay0 pt=96";
        for (audio, camera_pt) in [
            ("avenc_aac ! aacparse ! rtpmp4gpay name=pay1 pt=97", 97),
            ("mulawenc ! rtppcmupay name=pay1 pt=0", 0),
            ("opusenc ! rtpopuspay name=pay1 pt=98", 98),
        ] {
            let source = served(&format!(
                "( {video} audiotestsrc is-live=true ! audioconvert ! {audio} )"
            ));
            let socket = || udp_target(Duration::from_millis(300));
            let (restream_audio, live_audio) = (socket(), socket());
            let mut targets = Targets {
                audio: vec![("127.0.0.1".into(), port(&restream_audio))],
                ..Targets::default()
            };
            let relay = quiet_relay(&source, &targets, &CameraSettings::default());
            let pt = |s: &std::net::UdpSocket| {
                let mut packet = [0u8; 2048];
                let n = s.recv(&mut packet).ok()?;
                (n > 12).then_some(packet[1] & 0x7f)
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while pt(&restream_audio).is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no audio at the re-stream"
                );
            }
            assert_eq!(pt(&restream_audio), Some(camera_pt), "{audio}");
            assert_eq!(
                pt(&live_audio),
                None,
                "{audio}: transcoded while nobody watches"
            );
            targets.janus_audio = vec![("127.0.0.1".into(), port(&live_audio), None)];
            relay.retarget(&targets);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let got = loop {
                if let Some(pt) = pt(&live_audio) {
                    break pt;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{audio}: no live audio"
                );
            };
            assert_eq!(got, 111, "{audio}: live audio is Opus");
            // Opus goes as it is (re-payloaded at 111); anything else through the encoder.
            let valve = relay.pipeline.by_name(LIVE_AUDIO_VALVE).unwrap();
            let transcoding = !valve.property::<bool>("drop");
            assert_eq!(transcoding, camera_pt != 98, "{audio}: transcoding");
            targets.janus_audio.clear();
            relay.retarget(&targets);
            // Drained: what was on its way arrives within a moment, then nothing (each read
            // waits 300 ms).
            while pt(&live_audio).is_some() {}
            assert_eq!(
                pt(&live_audio),
                None,
                "{audio}: live audio after the viewers left"
            );
            assert_eq!(pt(&restream_audio), Some(camera_pt), "{audio}");
            // A mountpoint that takes G.711 µ-law gets the camera's own RTP if that is what
            // it sends (no transcode), and nothing if not.
            let g711 = Some(AudioCodec::Pcmu);
            targets.janus_audio = vec![("127.0.0.1".into(), port(&live_audio), g711)];
            relay.retarget(&targets);
            let got = (0..5).find_map(|_| pt(&live_audio));
            let expected = (camera_pt == 0).then_some(0);
            assert_eq!(got, expected, "{audio}: at a G.711 mountpoint");
            drop(relay);
        }
    }

    /// An H.265 camera is re-payloaded to the re-stream, and to Janus only where the camera's
    /// mountpoint takes H.265 (most browsers, behind an H.264 mountpoint, cannot decode it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn h265_goes_to_the_restream_and_to_janus_only_where_its_mountpoint_takes_it() {
        gst::init().unwrap();
        let source = served(
            "( videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=25/1 \
                 ! x265enc tune=zerolatency speed-preset=ultrafast key-int-max=5 \
                 ! rtph265pay name=pay0 pt=96 )",
        );
        let socket = || udp_target(Duration::from_millis(200));
        let (janus, restream) = (socket(), socket());
        let mut targets = Targets {
            janus: vec![("127.0.0.1".into(), port(&janus))],
            restream: vec![("127.0.0.1".into(), port(&restream))],
            ..Targets::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let relay = Relay::start(
            &source,
            &targets,
            &CameraSettings::default(),
            Default::default(),
            Arc::new(move |e| {
                let _ = tx.lock().unwrap().send(e);
            }),
        )
        .unwrap();
        let mut events = Vec::new();
        while !events.contains(&PipelineEvent::FirstFrame) {
            events.push(
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("first frame"),
            );
        }
        assert!(
            events.contains(&PipelineEvent::Video {
                codec: VideoCodec::H265
            }),
            "{events:?}"
        );
        let mut packet = [0u8; 2048];
        let n = restream.recv(&mut packet).expect("RTP at the re-stream");
        assert!(
            n > 12 && packet[1] & 0x7f == VIDEO_PT,
            "an RTP packet at PT 96"
        );
        // Retargeted, the re-stream still gets it and Janus still does not.
        relay.retarget(&targets);
        restream.recv(&mut packet).expect("RTP at the re-stream");
        assert!(janus.recv(&mut packet).is_err(), "H.265 reached Janus");
        // Once the mountpoint takes H.265 (for browsers that decode it), it gets the video.
        let h265_mountpoint = Targets {
            janus_h265: std::mem::take(&mut targets.janus),
            ..targets.clone()
        };
        relay.retarget(&h265_mountpoint);
        let n = janus.recv(&mut packet).expect("H.265 at its mountpoint");
        assert!(n > 12 && packet[1] & 0x7f == VIDEO_PT);
        let size = (0..50).find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            relay.video_size()
        });
        assert_eq!(size, Some((64, 48)));
        drop(relay);
    }

    #[test]
    fn classifies_auth_and_connection_errors() {
        let auth = gst::glib::Error::new(gst::ResourceError::NotAuthorized, "Unauthorized");
        assert_eq!(classify(&auth, None).0, FailureKind::AuthFailed);
        let conn = gst::glib::Error::new(
            gst::ResourceError::OpenReadWrite,
            "Could not open resource for reading and writing.",
        );
        let (kind, reason) = classify(
            &conn,
            Some(
                "gstrtspsrc.c(1): gst_rtspsrc_retrieve_sdp (): /GstPipeline:p/GstRTSPSrc:s:\nFailed to connect. (Generic error)",
            ),
        );
        assert_eq!(kind, FailureKind::Unreachable);
        assert!(reason.contains("Failed to connect"), "{reason}");
    }
}
