//! One camera's push: pulled from its URL on the site and pushed, unmodified, to the ingest
//! worker that owns it.
//!
//! Two pipelines, because the push cannot be announced before the camera's streams are known:
//! the *source* (the camera's session over TCP with [`cloudcam_core::rtsp_pull`], or an
//! `rtspsrc` without a jitter buffer for `rtsps://`; per stream its depayloader and parser into
//! an `appsink`) and, once the source has announced all its streams and the video's first
//! keyframe arrived, the *push* (an `appsrc` per stream into
//! `rtspclientsink`, RTSP RECORD over TCP with the camera's push credential). Both run on the
//! same clock and base time, so the timestamps the source gives are the push's. What arrives
//! before the push starts is kept from the last keyframe on, and the push starts with it.
//! Nothing is decoded or encoded: the parsers only frame what the camera sent (and put the
//! H.264/H.265 parameter sets before every keyframe).

use cloudcam_core::codec::{AudioCodec, VideoCodec};
use cloudcam_core::edge::PushCommand;
use cloudcam_core::rtp_timestamper::{skip_jitter_buffer, stop_source_first};
use cloudcam_core::rtsp_pull::{PullEvent, PullRequest, RtspPull};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Samples kept per stream while the push starts (a GOP at most, at any sane frame rate).
const PENDING_MAX: usize = 600;
/// How long after the first sample the push starts without a stream the camera announced but
/// sends nothing on (a silent audio track, say).
const ANNOUNCE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long connecting to the camera and its DESCRIBE may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// What an `appsrc` may hold when the uplink is slower than the camera (oldest dropped).
const UPLINK_QUEUE_BYTES: u64 = 8 << 20;

/// What a push tells its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum PushEvent {
    /// The push runs: the ingest worker took the announce and the stream flows.
    Pushing,
    /// It ended (the camera, the push or the connection failed); `String` says why, without
    /// URLs or credentials.
    Failed(String),
}

/// Where a push's events go: the camera id and the event.
pub type EventSink = Arc<dyn Fn(&str, PushEvent) + Send + Sync>;

/// One stream of the source.
struct Stream {
    caps: Option<gst::Caps>,
    video: bool,
    pending: Vec<gst::Sample>,
}

enum Side {
    /// The push is not started yet: the streams seen so far, whether the source announced all
    /// of them, and whether the video's first keyframe came.
    Waiting {
        streams: Vec<Stream>,
        all_announced: bool,
        keyframe: bool,
        /// When the first sample came (a stream announced but never sent is not waited for
        /// longer than [`ANNOUNCE_WAIT`] after it).
        first_sample: Option<std::time::Instant>,
    },
    Running {
        pipeline: gst::Pipeline,
        /// Per stream, its `appsrc` (`None`: a stream that had sent nothing when the push
        /// started, left out).
        sources: Vec<Option<gst_app::AppSrc>>,
        /// Which stream is the video.
        video: usize,
    },
    Stopped,
}

struct Shared {
    command: PushCommand,
    side: Mutex<Side>,
    /// Bytes handed to the push so far.
    bytes: AtomicU64,
    /// Video keyframes pushed since the push started (after the one it started with).
    keyframes: AtomicU64,
    /// The push ended (reported once; the owner stops the pipelines).
    failed: std::sync::atomic::AtomicBool,
    events: EventSink,
    /// Texts that must never leave the agent (the camera's and the push's passwords).
    secrets: Vec<String>,
    source: gst::Pipeline,
    /// A PEM file of certificate authorities trusted for an `rtsps://` push (empty: only the
    /// system's).
    push_ca: String,
}

/// A camera being pushed; stopped when dropped.
pub struct Pusher {
    shared: Arc<Shared>,
    /// The camera's source: `pull`'s bin, or an `rtspsrc` for `rtsps://`.
    src: gst::Element,
    pull: Option<RtspPull>,
}

impl Pusher {
    /// Starts pulling `source_url` and pushing it as `command` says (an `rtsps://` push
    /// trusting the certificate authorities in the PEM file `push_ca` too, when given).
    pub fn start(
        command: PushCommand,
        source_url: &str,
        push_ca: &str,
        events: EventSink,
    ) -> anyhow::Result<Self> {
        let source = gst::Pipeline::with_name(&format!("source-{}", command.camera_id));
        let pull = PullRequest::handles(source_url, "tcp").then(RtspPull::new);
        let src = match &pull {
            Some(pull) => pull.element().clone(),
            None => {
                let rtspsrc = gst::ElementFactory::make("rtspsrc")
                    .property("location", source_url)
                    .property("latency", 0u32)
                    .property("tcp-timeout", CONNECT_TIMEOUT.as_micros() as u64)
                    .build()?;
                rtspsrc.set_property_from_str("protocols", "tcp");
                skip_jitter_buffer(&rtspsrc);
                rtspsrc
            }
        };
        source.add(&src)?;
        let mut secrets = vec![command.password.clone()];
        if let Ok(u) = url::Url::parse(source_url)
            && let Some(p) = u.password()
        {
            secrets.push(p.to_string());
        }
        let shared = Arc::new(Shared {
            command,
            side: Mutex::new(Side::Waiting {
                streams: Vec::new(),
                all_announced: false,
                keyframe: false,
                first_sample: None,
            }),
            bytes: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            failed: std::sync::atomic::AtomicBool::new(false),
            events,
            secrets,
            source: source.clone(),
            push_ca: push_ca.to_string(),
        });
        let weak = Arc::downgrade(&shared);
        src.connect_pad_added(move |_, pad| {
            if let Some(shared) = weak.upgrade()
                && let Err(e) = shared.add_stream(pad)
            {
                shared.fail(&format!("cannot take a stream of the camera: {e}"));
            }
        });
        let weak = Arc::downgrade(&shared);
        src.connect_no_more_pads(move |_| {
            if let Some(shared) = weak.upgrade() {
                let mut side = shared.side.lock().expect("push lock");
                if let Side::Waiting { all_announced, .. } = &mut *side {
                    *all_announced = true;
                }
                shared.try_start(&mut side);
            }
        });
        watch_bus(&source, Arc::downgrade(&shared), "the camera");
        source.set_state(gst::State::Playing)?;
        if let Some(pull) = &pull {
            let weak = Arc::downgrade(&shared);
            pull.start(
                PullRequest::from_url(source_url, CONNECT_TIMEOUT),
                Arc::new(move |event| {
                    // Its end reaches the bus as EOS (see `watch_bus`).
                    if let PullEvent::Failed { reason, .. } = event
                        && let Some(shared) = weak.upgrade()
                    {
                        shared.fail(&format!("the camera: {reason}"));
                    }
                }),
            );
        }
        Ok(Self { shared, src, pull })
    }

    /// Bytes pushed so far.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Video keyframes pushed since the push started, after the one it started with.
    pub fn keyframes(&self) -> u64 {
        self.shared.keyframes.load(Ordering::Relaxed)
    }

    /// How much of the push waits in the agent for the uplink (the longest of its streams).
    pub fn queued(&self) -> std::time::Duration {
        match &*self.shared.side.lock().expect("push lock") {
            Side::Running { sources, .. } => sources
                .iter()
                .flatten()
                .map(|s| std::time::Duration::from_nanos(s.current_level_time().nseconds()))
                .max()
                .unwrap_or_default(),
            _ => std::time::Duration::ZERO,
        }
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        let side = std::mem::replace(
            &mut *self.shared.side.lock().expect("push lock"),
            Side::Stopped,
        );
        if let Some(pull) = &self.pull {
            pull.stop();
        }
        stop_source_first(&self.shared.source, &self.src);
        if let Side::Running { pipeline, .. } = side {
            let _ = pipeline.set_state(gst::State::Null);
        }
    }
}

/// Reports the pipeline's errors (and the push's warning that the server closed the
/// connection, which is all `rtspclientsink` says then) as the push's end.
fn watch_bus(pipeline: &gst::Pipeline, shared: std::sync::Weak<Shared>, what: &'static str) {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    bus.set_sync_handler(move |_, msg| {
        use gst::MessageView;
        let text = match msg.view() {
            MessageView::Error(e) => Some(e.error().to_string()),
            // The server cut the push (a newer push took the camera over, its credential
            // was replaced): the connection is gone for good.
            MessageView::Warning(w)
                if what == "the push" && w.error().to_string().contains("closed") =>
            {
                Some(w.error().to_string())
            }
            MessageView::Eos(_) => Some("the stream ended".to_string()),
            _ => None,
        };
        if let (Some(text), Some(shared)) = (text, shared.upgrade()) {
            // Not on the thread that posted it, which may hold the push's lock.
            std::thread::spawn(move || shared.fail(&format!("{what}: {text}")));
        }
        gst::BusSyncReply::Drop
    });
}

/// The elements that frame one stream's RTP for the push (`None`: a stream nothing here
/// carries, which is left out).
fn chain(caps: &gst::CapsRef) -> Option<(String, bool)> {
    let s = caps.structure(0)?;
    let name = s.get::<String>("encoding-name").ok()?;
    if let Some(video) = VideoCodec::from_name(&name) {
        return Some((
            format!(
                "{} ! {} config-interval=-1",
                video.depayloader(),
                video.parser()
            ),
            true,
        ));
    }
    let audio = AudioCodec::from_name(&name)?;
    let parse = match audio {
        AudioCodec::Aac | AudioCodec::AacLatm => " ! aacparse",
        AudioCodec::Opus => " ! opusparse",
        AudioCodec::Pcmu | AudioCodec::Pcma => "",
    };
    Some((format!("{}{parse}", audio.depayloader()), false))
}

/// The certificate authorities of the PEM file `path` (to validate an `rtsps://` push's
/// server with).
pub fn trust(path: &str) -> Result<gio::TlsDatabase, gst::glib::Error> {
    Ok(gio::TlsFileDatabase::new(path)?.upcast())
}

impl Shared {
    /// Takes one of the source's streams: its depayloader and parser into an appsink.
    fn add_stream(self: &Arc<Self>, pad: &gst::Pad) -> anyhow::Result<()> {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some((chain, video)) = chain(&caps) else {
            tracing::info!(camera = %self.command.camera_id, ?caps, "a stream nothing here carries is left out");
            return self.discard(pad);
        };
        let index = {
            let mut side = self.side.lock().expect("push lock");
            let Side::Waiting { streams, .. } = &mut *side else {
                drop(side);
                tracing::info!(camera = %self.command.camera_id, ?caps, "a stream that came after the push started is left out");
                return self.discard(pad);
            };
            streams.push(Stream {
                caps: None,
                video,
                pending: Vec::new(),
            });
            streams.len() - 1
        };
        let bin = gst::parse::bin_from_description(&chain, true)?;
        let sink = gst_app::AppSink::builder()
            .sync(false)
            .async_(false)
            .build();
        let weak = Arc::downgrade(self);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(shared) = weak.upgrade() {
                        shared.sample(index, sample);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        self.source
            .add_many([bin.upcast_ref::<gst::Element>(), sink.upcast_ref()])?;
        bin.link(&sink)?;
        sink.sync_state_with_parent()?;
        bin.sync_state_with_parent()?;
        pad.link(&bin.static_pad("sink").expect("a ghost sink pad"))?;
        Ok(())
    }

    /// Takes a stream that is not pushed (so that the source can go on with the others).
    fn discard(&self, pad: &gst::Pad) -> anyhow::Result<()> {
        let sink = gst::ElementFactory::make("fakesink")
            .property("async", false)
            .build()?;
        self.source.add(&sink)?;
        sink.sync_state_with_parent()?;
        pad.link(&sink.static_pad("sink").expect("fakesink has a sink pad"))?;
        Ok(())
    }

    /// A framed sample of stream `index`.
    fn sample(self: &Arc<Self>, index: usize, sample: gst::Sample) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let mut side = self.side.lock().expect("push lock");
        match &mut *side {
            Side::Running { sources, video, .. } => {
                if let Some(Some(src)) = sources.get(index)
                    && self.push(src, &sample)
                    && index == *video
                    && is_keyframe(&sample)
                {
                    self.keyframes.fetch_add(1, Ordering::Relaxed);
                }
            }
            Side::Waiting {
                streams,
                keyframe,
                first_sample,
                ..
            } => {
                first_sample.get_or_insert_with(std::time::Instant::now);
                let Some(stream) = streams.get_mut(index) else {
                    return;
                };
                if stream.caps.is_none() {
                    stream.caps = sample.caps().map(|c| c.to_owned());
                }
                if stream.video && is_keyframe(&sample) {
                    // The push starts from the latest keyframe.
                    *keyframe = true;
                    streams.iter_mut().for_each(|s| s.pending.clear());
                }
                if *keyframe {
                    let stream = &mut streams[index];
                    if stream.pending.len() >= PENDING_MAX {
                        stream.pending.remove(0);
                    }
                    stream.pending.push(sample);
                }
                self.try_start(&mut side);
            }
            Side::Stopped => {}
        }
    }

    /// Hands `sample` to the push through `src`, counting its bytes; whether it was taken.
    fn push(&self, src: &gst_app::AppSrc, sample: &gst::Sample) -> bool {
        let size = sample.buffer().map_or(0, |b| b.size() as u64);
        let taken = src.push_sample(sample).is_ok();
        if taken {
            self.bytes.fetch_add(size, Ordering::Relaxed);
        }
        taken
    }

    /// Starts the push once the video has a keyframe and every stream is known (or the
    /// camera's first sample is [`ANNOUNCE_WAIT`] old: the push goes without the streams that
    /// have sent nothing by then).
    fn try_start(self: &Arc<Self>, side: &mut Side) {
        let Side::Waiting {
            streams,
            all_announced,
            keyframe: true,
            first_sample,
        } = side
        else {
            return;
        };
        let waited = first_sample.is_some_and(|t| t.elapsed() >= ANNOUNCE_WAIT);
        let known = streams.iter().all(|s| s.caps.is_some());
        if !((*all_announced && known) || waited)
            || !streams.iter().any(|s| s.video && s.caps.is_some())
        {
            return;
        }
        let streams = std::mem::take(streams);
        let video = streams.iter().position(|s| s.video).unwrap_or_default();
        match self.push_pipeline(&streams) {
            Ok((pipeline, sources)) => {
                for (stream, src) in streams.into_iter().zip(&sources) {
                    let Some(src) = src else { continue };
                    for sample in stream.pending {
                        self.push(src, &sample);
                    }
                }
                *side = Side::Running {
                    pipeline,
                    sources,
                    video,
                };
                (self.events)(&self.command.camera_id, PushEvent::Pushing);
            }
            Err(e) => {
                *side = Side::Stopped;
                self.fail(&format!("cannot start the push: {e}"));
            }
        }
    }

    fn push_pipeline(
        self: &Arc<Self>,
        streams: &[Stream],
    ) -> anyhow::Result<(gst::Pipeline, Vec<Option<gst_app::AppSrc>>)> {
        let pipeline = gst::Pipeline::with_name(&format!("push-{}", self.command.camera_id));
        let sink = gst::ElementFactory::make("rtspclientsink")
            .property("location", &self.command.push_url)
            .property("user-id", &self.command.username)
            .property("user-pw", &self.command.password)
            .property("latency", 0u32)
            .build()?;
        sink.set_property_from_str("protocols", "tcp");
        if !self.push_ca.is_empty() {
            sink.set_property("tls-database", trust(&self.push_ca)?);
        }
        pipeline.add(&sink)?;
        let mut sources = Vec::new();
        for stream in streams {
            let Some(caps) = stream.caps.as_ref() else {
                sources.push(None);
                continue;
            };
            let src = gst_app::AppSrc::builder()
                .caps(caps)
                .format(gst::Format::Time)
                .is_live(true)
                .do_timestamp(false)
                .max_bytes(UPLINK_QUEUE_BYTES)
                .leaky_type(gst_app::AppLeakyType::Downstream)
                .build();
            pipeline.add(&src)?;
            src.link(&sink)?;
            sources.push(Some(src));
        }
        // The source's timestamps are the push's.
        if let Some(clock) = self.source.clock() {
            pipeline.use_clock(Some(&clock));
        }
        pipeline.set_start_time(gst::ClockTime::NONE);
        pipeline.set_base_time(self.source.base_time().unwrap_or(gst::ClockTime::ZERO));
        watch_bus(&pipeline, Arc::downgrade(self), "the push");
        pipeline.set_state(gst::State::Playing)?;
        Ok((pipeline, sources))
    }

    /// The push ended: report why (once). The pipelines stay until the owner drops the
    /// pusher (they cannot be stopped from their own threads).
    fn fail(&self, why: &str) {
        if self.failed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.report_failure(why);
    }

    fn report_failure(&self, why: &str) {
        let mut text = why.to_string();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        (self.events)(&self.command.camera_id, PushEvent::Failed(text));
    }
}

/// Whether `sample` is no delta unit: for the video, a keyframe (callers check the stream).
fn is_keyframe(sample: &gst::Sample) -> bool {
    sample
        .buffer()
        .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT))
}
