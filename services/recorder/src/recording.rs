//! `RecordingActor`: records one camera. It pulls the owning ingest worker's re-stream (never
//! the camera), cuts keyframe-aligned fragmented-MP4 segments with `splitmuxsink` into the
//! spool, and applies the camera's retention to the media store and the index.

use crate::config::RecorderSettings;
use crate::spool::Spool;
use actix::prelude::*;
use cloudcam_core::camera::{CameraState, CameraStatus, status_key};
use cloudcam_core::media::{Segment, segment_key, segments, unindex_segment};
use cloudcam_core::state::{StateStore, get_json};
use cloudcam_proto::v1::CameraSpec;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_sdp as gst_sdp;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Replace the camera's desired state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateSpec(pub CameraSpec);

/// Stop recording; answered once the pipeline is down.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// A bus message of run `run`'s pipeline.
#[derive(Message)]
#[rtype(result = "()")]
enum Piped {
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
    Failed {
        run: u64,
        reason: String,
    },
}

#[derive(Clone)]
pub struct Shared {
    pub settings: RecorderSettings,
    pub state: Arc<dyn StateStore>,
    pub store: Arc<dyn ObjectStore>,
    pub spool: Arc<Spool>,
}

struct Running {
    pipeline: gst::Pipeline,
    bus_task: tokio::task::JoinHandle<()>,
    /// Wall clock and running time of the first fragment: maps running time to wall clock.
    anchor: Option<(i64, u64)>,
    /// Open fragments: location → start (ms since the epoch).
    open: HashMap<String, i64>,
    last_activity: Instant,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.bus_task.abort();
        let _ = self.pipeline.set_state(gst::State::Null);
        // Whatever was being written is unfinished: it never reaches the store (a gap).
        for location in self.open.keys() {
            let _ = std::fs::remove_file(location);
        }
    }
}

pub struct RecordingActor {
    spec: CameraSpec,
    shared: Shared,
    run: u64,
    running: Option<Running>,
    /// Why the camera is not being recorded although it should be (stored for the API).
    problem: Option<String>,
}

/// How long a stored recording problem lives unless the recorder refreshes it (every tick).
const PROBLEM_TTL: Duration = Duration::from_secs(5);

impl RecordingActor {
    pub fn new(spec: CameraSpec, shared: Shared) -> Self {
        Self {
            spec,
            shared,
            run: 0,
            running: None,
            problem: None,
        }
    }

    /// Stores (or clears) why the camera is not being recorded; kept fresh while it lasts.
    fn report_problem(&mut self, problem: Option<String>) {
        if problem.is_none() && self.problem.is_none() {
            return;
        }
        match (&problem, &self.problem) {
            (Some(p), old) if old.as_ref() != Some(p) => {
                tracing::warn!(camera = %self.spec.camera_id, problem = %p, "not recording")
            }
            (None, Some(_)) => {
                tracing::info!(camera = %self.spec.camera_id, "recording resumes")
            }
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

    /// Once a second: start when the camera's re-stream is there, restart when it went silent,
    /// pause while the spool is below its free-space floor.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let floor = self.shared.spool.below_floor();
        if floor.is_some() && self.running.take().is_some() {
            // The segment being written is discarded (Running's drop): it could not be finished.
            tracing::warn!(camera = %self.spec.camera_id, "spool below its floor; stopping the recording");
        }
        let paused = floor.is_some();
        self.report_problem(floor);
        if paused {
            return;
        }
        if let Some(r) = &self.running {
            // Fragments open and close once a segment; allow one segment plus the timeout.
            let quiet =
                self.shared.settings.segment_seconds * 1000 + self.shared.settings.stall_timeout_ms;
            if r.last_activity.elapsed() > Duration::from_millis(quiet) {
                tracing::warn!(camera = %self.spec.camera_id, "re-stream silent; reconnecting");
                self.running = None;
            }
            return;
        }
        let state = self.shared.state.clone();
        let key = status_key(self.id());
        let run = self.run;
        async move { get_json::<CameraStatus>(&*state, &key).await.ok().flatten() }
            .into_actor(self)
            .map(move |status, act, ctx| {
                if act.run != run || act.running.is_some() {
                    return;
                }
                if let Some(s) = status
                    && s.state == CameraState::Live
                    && !s.restream_url.is_empty()
                {
                    act.start(&s.restream_url, ctx);
                }
            })
            .spawn(ctx);
    }

    fn start(&mut self, url: &str, ctx: &mut Context<Self>) {
        self.run += 1;
        let run = self.run;
        match self.build(url, run, ctx.address()) {
            Ok(r) => {
                tracing::info!(camera = %self.spec.camera_id, %url, "recording");
                self.running = Some(r);
            }
            Err(e) => {
                tracing::warn!(camera = %self.spec.camera_id, error = %e, "cannot start recording")
            }
        }
    }

    fn build(&self, url: &str, run: u64, addr: Addr<Self>) -> anyhow::Result<Running> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir)?;
        let pattern = dir.join(format!("{}-{run}-%06d.mp4", cloudcam_core::now_ms()));
        let pipeline = gst::Pipeline::new();
        let auth = &self.shared.settings.restream_auth;
        let src = gst::ElementFactory::make("rtspsrc")
            .property("location", url)
            .property("latency", 200u32)
            .property("user-id", &auth.user)
            .property("user-pw", &auth.password)
            .build()?;
        src.set_property_from_str("protocols", "tcp");
        let mux = gst::ElementFactory::make("splitmuxsink")
            .property("location", pattern.to_string_lossy().as_ref())
            .property(
                "max-size-time",
                self.shared.settings.segment_seconds * 1_000_000_000,
            )
            .property("muxer-factory", "mp4mux")
            .build()?;
        mux.set_property_from_str(
            "muxer-properties",
            "properties,fragment-duration=1000,streamable=true",
        );
        let depay = gst::ElementFactory::make("rtph264depay").build()?;
        let parse = gst::ElementFactory::make("h264parse").build()?;
        pipeline.add_many([&src, &mux, &depay, &parse])?;
        depay.link(&parse)?;
        parse.link_pads(Some("src"), &mux, Some("video"))?;
        // Joining the re-stream mid-GOP: nothing is written before the first keyframe, so every
        // segment starts with one.
        let keyed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let video_keyed = keyed.clone();
        parse
            .static_pad("src")
            .expect("h264parse src pad")
            .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                use std::sync::atomic::Ordering::Relaxed;
                match info.buffer() {
                    Some(b) if !video_keyed.load(Relaxed) => {
                        if b.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                            return gst::PadProbeReturn::Drop;
                        }
                        video_keyed.store(true, Relaxed);
                        gst::PadProbeReturn::Ok
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            });
        // Audio (AAC) is recorded with the video when the re-stream has it. splitmuxsink wants
        // all its inputs before data flows, so the audio branch is made from the SDP.
        let audio: std::sync::Arc<std::sync::Mutex<Option<gst::Element>>> = Default::default();
        {
            let (weak, mux, audio) = (pipeline.downgrade(), mux.clone(), audio.clone());
            let keyed = keyed.clone();
            src.connect("on-sdp", false, move |args| {
                let sdp = args[1].get::<gst_sdp::SDPMessage>().ok()?;
                let has_aac = sdp.medias().any(|m| {
                    m.media() == Some("audio")
                        && m.attributes().any(|a| {
                            a.key() == "rtpmap"
                                && a.value().is_some_and(|v| v.contains("MPEG4-GENERIC"))
                        })
                });
                let pipeline = weak.upgrade()?;
                if has_aac
                    && let Ok(adepay) = gst::ElementFactory::make("rtpmp4gdepay").build()
                    && let Ok(aparse) = gst::ElementFactory::make("aacparse").build()
                    && pipeline.add_many([&adepay, &aparse]).is_ok()
                    && adepay.link(&aparse).is_ok()
                    && aparse
                        .link_pads(Some("src"), &mux, Some("audio_%u"))
                        .is_ok()
                {
                    // No audio before the first video keyframe: the first segment would start
                    // (and be indexed) from the audio, up to a GOP before its first frame.
                    let keyed = keyed.clone();
                    if let Some(pad) = aparse.static_pad("src") {
                        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                            if keyed.load(std::sync::atomic::Ordering::Relaxed) {
                                gst::PadProbeReturn::Ok
                            } else {
                                gst::PadProbeReturn::Drop
                            }
                        });
                    }
                    let _ = adepay.sync_state_with_parent();
                    let _ = aparse.sync_state_with_parent();
                    *audio.lock().expect("audio lock") = Some(adepay);
                }
                None
            });
        }
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
        let bus_task = tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(msg) = messages.next().await {
                match msg.view() {
                    gst::MessageView::Element(el) => {
                        let Some(s) = el.structure() else { continue };
                        let location = s.get::<String>("location").unwrap_or_default();
                        let running_ns = s.get::<u64>("running-time").unwrap_or(0);
                        match s.name().as_str() {
                            "splitmuxsink-fragment-opened" => addr.do_send(Piped::Opened {
                                run,
                                location,
                                running_ns,
                            }),
                            "splitmuxsink-fragment-closed" => addr.do_send(Piped::Closed {
                                run,
                                location,
                                running_ns,
                            }),
                            _ => {}
                        }
                    }
                    gst::MessageView::Error(err) => {
                        addr.do_send(Piped::Failed {
                            run,
                            reason: err.error().to_string(),
                        });
                        return;
                    }
                    gst::MessageView::Eos(_) => {
                        addr.do_send(Piped::Failed {
                            run,
                            reason: "the re-stream ended".into(),
                        });
                        return;
                    }
                    _ => {}
                }
            }
        });
        pipeline.set_state(gst::State::Playing)?;
        Ok(Running {
            pipeline,
            bus_task,
            anchor: None,
            open: HashMap::new(),
            last_activity: Instant::now(),
        })
    }

    fn wall_ms(r: &mut Running, running_ns: u64) -> i64 {
        let (wall0, rt0) = *r
            .anchor
            .get_or_insert_with(|| (cloudcam_core::now_ms(), running_ns));
        wall0 + (running_ns as i64 - rt0 as i64) / 1_000_000
    }

    /// Deletes segments older than the camera's retention from the store and the index.
    fn apply_retention(&self, ctx: &mut Context<Self>) {
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
        actix::spawn(async move {
            let Ok(old) = segments(&*state, &id, 0, cutoff).await else {
                return;
            };
            for s in old.into_iter().filter(|s| s.end_ms <= cutoff) {
                let path = object_store::path::Path::from(s.key.as_str());
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                        let _ = unindex_segment(&*state, &s).await;
                        tracing::info!(camera = %id, key = %s.key, "segment expired");
                    }
                    Err(e) => {
                        tracing::warn!(camera = %id, error = %e, "cannot delete an expired segment");
                        return;
                    }
                }
            }
        });
        let _ = ctx;
    }
}

impl Actor for RecordingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.shared.spool.discard_unfinished(self.id());
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.tick(ctx));
        let every = Duration::from_millis(self.shared.settings.retention_interval_ms);
        ctx.run_interval(every, |act, ctx| act.apply_retention(ctx));
        self.tick(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.running = None;
        self.report_problem(None);
        tracing::info!(camera = %self.spec.camera_id, "recording stopped");
    }
}

impl Handler<UpdateSpec> for RecordingActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateSpec, _: &mut Context<Self>) {
        self.spec = msg.0;
    }
}

impl Handler<Stop> for RecordingActor {
    type Result = ();

    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        self.running = None;
        ctx.stop();
    }
}

impl Handler<Piped> for RecordingActor {
    type Result = ();

    fn handle(&mut self, msg: Piped, _: &mut Context<Self>) {
        let id = self.spec.camera_id.clone();
        let Some(r) = self.running.as_mut() else {
            return;
        };
        match msg {
            Piped::Opened {
                run,
                location,
                running_ns,
            } if run == self.run => {
                let start = Self::wall_ms(r, running_ns);
                r.open.insert(location, start);
                r.last_activity = Instant::now();
            }
            Piped::Closed {
                run,
                location,
                running_ns,
            } if run == self.run => {
                r.last_activity = Instant::now();
                let Some(start_ms) = r.open.remove(&location) else {
                    return;
                };
                let end_ms = Self::wall_ms(r, running_ns);
                let path = PathBuf::from(&location);
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let segment = Segment {
                    key: segment_key(&id, start_ms),
                    camera_id: id.clone(),
                    start_ms,
                    end_ms,
                    bytes,
                    codec: "H264".into(),
                };
                if let Err(e) = self.shared.spool.finished(&path, &segment) {
                    tracing::error!(camera = %id, error = %e, "cannot record a finished segment");
                }
            }
            Piped::Failed { run, reason } if run == self.run => {
                tracing::warn!(camera = %id, %reason, "recording interrupted; will reconnect");
                self.running = None;
            }
            _ => {}
        }
    }
}
