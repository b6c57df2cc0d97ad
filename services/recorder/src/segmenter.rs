//! `Segmenter`: cuts one camera's parsed stream into MP4 segment files at keyframes, and
//! completes each file the moment the next segment begins.
//!
//! Why not `splitmuxsink`: it decides which file a GOP goes to only once that GOP is complete,
//! so it finishes a segment's file one GOP after the segment ends (1.0 s with 1 s GOPs,
//! measured), and a segment reached the store about that late. Here the pulling pipeline ends
//! in appsinks (video, and audio when there is some); each segment is a small writer pipeline
//! (`appsrc ! mp4mux ! filesink`). At the first keyframe at least a segment's length after the
//! current segment's start, the current writer's video gets EOS — mp4mux completes the file —
//! and a new writer begins with that keyframe. Audio before the cut goes to the old writer,
//! audio from the cut on to the new one.
//!
//! *Handover between recorders.* A segmenter started to take a camera over from another
//! recorder *holds*: it writes nothing and keeps what it receives (from its first keyframe, at
//! most [`MAX_HELD`]) until it is [released](Segmenter::release) at the keyframe where the other
//! recorder's last segment ended, and writes from there, held frames first. The recorder
//! handing over [ends at its next keyframe](Segmenter::end_at_next_keyframe).
//!
//! Files are fragmented MP4 (`moov` up front, then a fragment a second), so a writer that never
//! finished (its pipeline dropped, or the recorder killed) leaves whole fragments on disk:
//! [`salvage`] keeps them.

use cloudcam_core::codec::VideoCodec;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the segmenter reports, from GStreamer's threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A segment file was started with the keyframe at `running_ns`.
    Opened { location: String, running_ns: u64 },
    /// A segment file is complete; the segment ends at `running_ns`.
    Closed { location: String, running_ns: u64 },
    /// A writer failed (e.g. the disk is full).
    Failed { reason: String },
    /// The source ended and every segment is complete.
    Ended,
}

type Notify = Arc<dyn Fn(Event) + Send + Sync>;

/// The longest span a holding segmenter keeps; older GOPs go.
pub const MAX_HELD: Duration = Duration::from_secs(12);

/// A released segmenter opens at the first held keyframe at most this long before the
/// running time it was released at: the two recorders see the same keyframe at slightly
/// different times.
const RELEASE_SLACK_NS: u64 = 300_000_000;

/// A sample kept while holding.
struct Held {
    video: bool,
    keyframe: bool,
    start_ns: u64,
    sample: gst::Sample,
}

pub fn audio_caps() -> gst::Caps {
    gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .build()
}

/// One segment file being written.
struct Writer {
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    location: String,
    start_ns: u64,
    /// Running time its timestamps count from: its first keyframe's decode time.
    base_ns: u64,
    /// Where the segment ends, once cut.
    end_ns: Option<u64>,
}

impl Writer {
    /// Pushes `sample` with its time made relative to the segment's start, as mp4mux wants
    /// (its fragments' decode times count from there); what is older is not this segment's.
    fn push(&self, src: &gst_app::AppSrc, sample: &gst::Sample) {
        let (Some(buffer), Some(segment)) = (
            sample.buffer(),
            sample
                .segment()
                .and_then(|s| s.downcast_ref::<gst::ClockTime>()),
        ) else {
            return;
        };
        let base = self.base_ns;
        let shift = |t: Option<gst::ClockTime>| {
            let rt = segment.to_running_time(t?)?.nseconds();
            Some(gst::ClockTime::from_nseconds(rt.checked_sub(base)?))
        };
        let (pts, dts) = (shift(buffer.pts()), shift(buffer.dts()));
        if pts.is_none() && dts.is_none() {
            return;
        }
        if let Some(caps) = sample.caps()
            && src.caps().as_deref() != Some(caps)
        {
            src.set_caps(Some(&caps.to_owned()));
        }
        let mut buffer = buffer.copy();
        {
            let b = buffer.make_mut();
            b.set_pts(pts);
            b.set_dts(dts);
        }
        let _ = src.push_buffer(buffer);
    }

    fn end_audio(&mut self) {
        if let Some(a) = self.audio.take() {
            let _ = a.end_of_stream();
        }
    }
}

struct Inner {
    dir: PathBuf,
    prefix: String,
    target_ns: u64,
    audio: bool,
    seq: u64,
    current: Option<Writer>,
    /// Cut writers, completing (their audio up to the cut, then mp4mux's last fragment).
    closing: Vec<Writer>,
    /// End (running time) of the last video frame and audio frame seen.
    video_end_ns: u64,
    audio_end_ns: Option<u64>,
    source_ended: bool,
    /// Holding (see the module docs): what arrived since the first keyframe, in order.
    held: Option<std::collections::VecDeque<Held>>,
    /// Released at a running time whose keyframe has not arrived yet: open there.
    release_from: Option<u64>,
    /// Ending at the next keyframe; once ended, the rest is not this recorder's.
    ending: bool,
    ended: bool,
    notify: Notify,
    me: Weak<Mutex<Inner>>,
}

/// See the module docs. Cheap to clone: clones share one segmenter.
#[derive(Clone)]
pub struct Segmenter(Arc<Mutex<Inner>>);

fn running_ns(sample: &gst::Sample) -> Option<(u64, u64)> {
    let buf = sample.buffer()?;
    let segment = sample.segment()?.downcast_ref::<gst::ClockTime>()?;
    let ts = buf.pts().or(buf.dts())?;
    let start = segment.to_running_time(ts)?.nseconds();
    Some((start, start + buf.duration().map_or(0, |d| d.nseconds())))
}

impl Segmenter {
    /// Segments of about `target` in `dir`, named `<prefix>-<n>.mp4`; `notify` hears what
    /// happens.
    pub fn new(
        dir: PathBuf,
        prefix: String,
        target: Duration,
        notify: impl Fn(Event) + Send + Sync + 'static,
    ) -> Self {
        Self(Arc::new_cyclic(|me| {
            Mutex::new(Inner {
                dir,
                prefix,
                target_ns: target.as_nanos() as u64,
                audio: false,
                seq: 0,
                current: None,
                closing: Vec::new(),
                video_end_ns: 0,
                audio_end_ns: None,
                source_ended: false,
                held: None,
                release_from: None,
                ending: false,
                ended: false,
                notify: Arc::new(notify),
                me: me.clone(),
            })
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream has audio: every segment from now on records it too.
    pub fn with_audio(&self) {
        self.lock().audio = true;
    }

    /// Holds from now on (see the module docs); call before the first sample.
    pub fn hold(&self) {
        self.lock().held = Some(Default::default());
    }

    /// Stops holding: writes from the held keyframe nearest `at_ns` (running time; the first
    /// at most [`RELEASE_SLACK_NS`] before it, or the next to arrive), dropping what precedes
    /// it; `None`: from the oldest held keyframe.
    pub fn release(&self, at_ns: Option<u64>) {
        let mut inner = self.lock();
        let Some(held) = inner.held.take() else {
            return;
        };
        let from = at_ns.map(|at| at.saturating_sub(RELEASE_SLACK_NS));
        let mut started = false;
        for h in held {
            started |= h.video && h.keyframe && from.is_none_or(|f| h.start_ns >= f);
            if !started {
                continue;
            }
            if h.video {
                inner.video(&h.sample);
            } else {
                inner.audio(&h.sample);
            }
        }
        if !started {
            inner.release_from = from;
        }
    }

    /// Ends the recording at the next keyframe: the current segment is cut there
    /// ([`Event::Closed`] at that keyframe) and nothing after it is written.
    pub fn end_at_next_keyframe(&self) {
        self.lock().ending = true;
    }

    /// A parsed video access unit.
    pub fn video(&self, sample: &gst::Sample) {
        self.lock().video(sample);
    }

    /// A parsed audio frame.
    pub fn audio(&self, sample: &gst::Sample) {
        self.lock().audio(sample);
    }

    /// The video ended: the current segment ends after its last frame.
    pub fn video_ended(&self) {
        let mut inner = self.lock();
        let end = inner.video_end_ns;
        inner.cut(end);
    }

    /// The audio ended: no segment waits for more.
    pub fn audio_ended(&self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.audio = false;
        for w in inner.closing.iter_mut().chain(inner.current.as_mut()) {
            w.end_audio();
        }
    }

    /// The pulling pipeline reached EOS; [`Event::Ended`] follows once every file is complete.
    pub fn source_ended(&self) {
        let mut inner = self.lock();
        // Ended at a keyframe already: that end was (or will be) reported.
        if inner.ended {
            return;
        }
        inner.source_ended = true;
        inner.check_ended();
    }

    /// Stops every writer at once; their files are left as they are (see [`salvage`]).
    pub fn stop(&self) {
        let writers: Vec<Writer> = {
            let mut inner = self.lock();
            let current = inner.current.take();
            inner.closing.drain(..).chain(current).collect()
        };
        for w in writers {
            let _ = w.pipeline.set_state(gst::State::Null);
        }
    }
}

impl Inner {
    fn video(&mut self, sample: &gst::Sample) {
        let Some((start, end)) = running_ns(sample) else {
            return;
        };
        let keyframe = sample
            .buffer()
            .is_some_and(|b| !b.flags().contains(gst::BufferFlags::DELTA_UNIT));
        if let Some(held) = &mut self.held {
            if keyframe || !held.is_empty() {
                held.push_back(Held {
                    video: true,
                    keyframe,
                    start_ns: start,
                    sample: sample.clone(),
                });
            }
            // Whole GOPs go once the span is too long.
            while held
                .front()
                .is_some_and(|h| start.saturating_sub(h.start_ns) > MAX_HELD.as_nanos() as u64)
                && held.iter().skip(1).any(|h| h.video && h.keyframe)
            {
                held.pop_front();
                while held.front().is_some_and(|h| !(h.video && h.keyframe)) {
                    held.pop_front();
                }
            }
            return;
        }
        if self.ended {
            return;
        }
        if let Some(from) = self.release_from {
            if !(keyframe && start >= from) {
                return;
            }
            self.release_from = None;
        }
        if keyframe && self.ending {
            self.ended = true;
            self.cut(start);
            self.source_ended = true;
            self.check_ended();
            return;
        }
        // A segment may come out a little short rather than a GOP long.
        let due = |w: &Writer| start >= w.start_ns + self.target_ns * 3 / 4;
        if keyframe && self.current.as_ref().is_none_or(due) {
            self.cut(start);
            self.open(start, sample);
        }
        if let Some(w) = &self.current {
            w.push(&w.video, sample);
        }
        self.video_end_ns = self.video_end_ns.max(end);
    }

    fn audio(&mut self, sample: &gst::Sample) {
        let Some((start, end)) = running_ns(sample) else {
            return;
        };
        if let Some(held) = &mut self.held {
            if !held.is_empty() {
                held.push_back(Held {
                    video: false,
                    keyframe: false,
                    start_ns: start,
                    sample: sample.clone(),
                });
            }
            return;
        }
        for w in &mut self.closing {
            match (&w.audio, w.end_ns) {
                (Some(a), Some(cut)) if start < cut => w.push(a, sample),
                _ => w.end_audio(),
            }
        }
        if let Some(w) = &self.current
            && let Some(a) = &w.audio
        {
            w.push(a, sample);
        }
        self.audio_end_ns = Some(end);
    }

    /// Ends the current segment at `at_ns`.
    fn cut(&mut self, at_ns: u64) {
        let Some(mut w) = self.current.take() else {
            return;
        };
        w.end_ns = Some(at_ns);
        let _ = w.video.end_of_stream();
        // Audio up to the cut still belongs to it, unless it is there already or none comes.
        if self.audio_end_ns.is_none_or(|a| a >= at_ns) {
            w.end_audio();
        }
        // A writer still waiting for audio since the previous cut waits no more.
        for old in &mut self.closing {
            old.end_audio();
        }
        self.closing.push(w);
    }

    /// Starts a segment with the keyframe `sample` at `start_ns`.
    fn open(&mut self, start_ns: u64, sample: &gst::Sample) {
        self.seq += 1;
        let location = self
            .dir
            .join(format!("{}-{:06}.mp4", self.prefix, self.seq))
            .to_string_lossy()
            .into_owned();
        match self.writer(&location, sample) {
            Ok(w) => {
                (self.notify)(Event::Opened {
                    location,
                    running_ns: start_ns,
                });
                let base_ns = sample
                    .buffer()
                    .and_then(|b| b.dts())
                    .zip(
                        sample
                            .segment()
                            .and_then(|s| s.downcast_ref::<gst::ClockTime>()),
                    )
                    .and_then(|(dts, seg)| seg.to_running_time(dts))
                    .map_or(start_ns, |rt| rt.nseconds().min(start_ns));
                self.current = Some(Writer {
                    start_ns,
                    base_ns,
                    ..w
                });
            }
            Err(e) => (self.notify)(Event::Failed {
                reason: format!("cannot start a segment file: {e}"),
            }),
        }
    }

    fn writer(&self, location: &str, sample: &gst::Sample) -> anyhow::Result<Writer> {
        let pipeline = gst::Pipeline::new();
        let src = |caps: Option<gst::Caps>| {
            let b = gst_app::AppSrc::builder()
                .format(gst::Format::Time)
                .max_bytes(0);
            match caps {
                Some(c) => b.caps(&c).build(),
                None => b.build(),
            }
        };
        let video = src(sample.caps().map(|c| c.to_owned()));
        let mux = gst::ElementFactory::make("mp4mux")
            .property("fragment-duration", 1000u32)
            .property("streamable", true)
            .build()?;
        let sink = gst::ElementFactory::make("filesink")
            .property("location", location)
            .property("sync", false)
            .property("async", false)
            .build()?;
        pipeline.add_many([video.upcast_ref(), &mux, &sink])?;
        mux.link(&sink)?;
        video.link_pads(Some("src"), &mux, Some("video_%u"))?;
        let audio = if self.audio {
            let audio = src(None);
            pipeline.add(&audio)?;
            audio.link_pads(Some("src"), &mux, Some("audio_%u"))?;
            Some(audio)
        } else {
            None
        };
        let (me, notify) = (self.me.clone(), self.notify.clone());
        let done = location.to_string();
        // Called on the thread that posts: never lock for what `set_state` itself may post
        // (an error opening the file), since the segmenter is locked while a writer starts.
        pipeline
            .bus()
            .expect("pipeline bus")
            .set_sync_handler(move |_, msg| {
                match msg.view() {
                    gst::MessageView::Eos(_) => {
                        if let Some(inner) = me.upgrade() {
                            inner
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .completed(&done);
                        }
                    }
                    gst::MessageView::Error(err) => notify(Event::Failed {
                        reason: format!("writing a segment failed: {}", err.error()),
                    }),
                    _ => {}
                }
                gst::BusSyncReply::Drop
            });
        pipeline.set_state(gst::State::Playing)?;
        Ok(Writer {
            pipeline,
            video,
            audio,
            location: location.to_string(),
            start_ns: 0,
            base_ns: 0,
            end_ns: None,
        })
    }

    /// A cut writer's file is complete (its EOS, from its own streaming thread).
    fn completed(&mut self, location: &str) {
        let Some(i) = self.closing.iter().position(|w| w.location == location) else {
            return;
        };
        let w = self.closing.remove(i);
        (self.notify)(Event::Closed {
            location: w.location,
            running_ns: w.end_ns.unwrap_or(self.video_end_ns),
        });
        // Not from its own thread: that would wait for itself.
        let pipeline = w.pipeline;
        std::thread::spawn(move || {
            let _ = pipeline.set_state(gst::State::Null);
        });
        self.check_ended();
    }

    fn check_ended(&mut self) {
        if self.source_ended && self.current.is_none() && self.closing.is_empty() {
            self.source_ended = false;
            (self.notify)(Event::Ended);
        }
    }
}

/// The length of the playable prefix of a fragmented MP4: up to the end of its last complete
/// fragment (`moof` then `mdat`). 0 when there is none. Only top-level box headers are read.
pub fn complete_prefix(mp4: &[u8]) -> usize {
    let (mut at, mut complete, mut moof) = (0usize, 0usize, false);
    while mp4.len() - at >= 8 {
        let size32 = u32::from_be_bytes(mp4[at..at + 4].try_into().expect("4 bytes"));
        let kind = &mp4[at + 4..at + 8];
        let size = match size32 {
            0 => break, // "to the end of the file": never complete while being written
            1 if mp4.len() - at >= 16 => {
                u64::from_be_bytes(mp4[at + 8..at + 16].try_into().expect("8 bytes")) as usize
            }
            1 => break,
            n => n as usize,
        };
        if size < 8 || size > mp4.len() - at {
            break;
        }
        match kind {
            b"moof" => moof = true,
            b"mdat" if moof => {
                complete = at + size;
                moof = false;
            }
            _ => {}
        }
        at += size;
    }
    complete
}

/// Keeps what a segment file whose writer never finished holds: truncates it after its last
/// complete fragment and returns the duration of the video left in it (`None`: nothing).
pub fn salvage(mp4: &Path) -> anyhow::Result<Option<(Duration, VideoCodec)>> {
    let bytes = std::fs::read(mp4)?;
    let keep = complete_prefix(&bytes);
    if keep == 0 {
        return Ok(None);
    }
    if keep < bytes.len() {
        std::fs::OpenOptions::new()
            .write(true)
            .open(mp4)?
            .set_len(keep as u64)?;
    }
    video_duration(mp4)
}

/// The span of the video in an MP4 file, and its codec.
fn video_duration(mp4: &Path) -> anyhow::Result<Option<(Duration, VideoCodec)>> {
    Ok(cloudcam_core::mp4::video_span(
        mp4,
        Duration::from_secs(10),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut b = ((body + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(body + 8, 0);
        b
    }

    /// Feeds 5.52 s of encoded video (a keyframe a second) through a segmenter cutting 2 s
    /// segments, as the recorder's pipeline does, and collects what it reports.
    fn segment_test_video(dir: &Path) -> Vec<Event> {
        segment_test_video_in(dir, VideoCodec::H264, |_, _| {})
    }

    fn segment_test_video_with(dir: &Path, each: impl FnMut(usize, &Segmenter)) -> Vec<Event> {
        segment_test_video_in(dir, VideoCodec::H264, each)
    }

    /// 5.5 s at 25 fps in `codec`, a keyframe a second; `each(i, segmenter)` runs before
    /// frame `i`.
    fn segment_test_video_in(
        dir: &Path,
        codec: VideoCodec,
        mut each: impl FnMut(usize, &Segmenter),
    ) -> Vec<Event> {
        gst::init().unwrap();
        let events: Arc<Mutex<Vec<Event>>> = Default::default();
        let seen = events.clone();
        let segmenter = Segmenter::new(
            dir.to_path_buf(),
            "t".into(),
            Duration::from_secs(2),
            move |e| seen.lock().unwrap().push(e),
        );
        let encoder = match codec {
            VideoCodec::H264 => "x264enc",
            VideoCodec::H265 => "x265enc",
        };
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc num-buffers=138 ! video/x-raw,width=160,height=120,framerate=25/1 \
             ! {encoder} key-int-max=25 speed-preset=ultrafast tune=zerolatency \
             ! {} ! appsink name=sink sync=false caps=\"{}\"",
            codec.parser(),
            codec.mp4_caps()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut i = 0;
        while let Ok(sample) = sink.pull_sample() {
            each(i, &segmenter);
            segmenter.video(&sample);
            i += 1;
        }
        segmenter.video_ended();
        segmenter.audio_ended();
        segmenter.source_ended();
        pipeline.set_state(gst::State::Null).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !events.lock().unwrap().contains(&Event::Ended) {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                events.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        events.lock().unwrap().clone()
    }

    #[test]
    fn segments_are_cut_at_keyframes_and_each_ends_where_the_next_begins() {
        for codec in [VideoCodec::H264, VideoCodec::H265] {
            let dir = tempfile::tempdir().unwrap();
            let events = segment_test_video_in(dir.path(), codec, |_, _| {});
            segments_are_cut_well(&events, codec);
        }
    }

    /// The segments `events` report are cut at keyframes and contiguous, and hold `codec`.
    fn segments_are_cut_well(events: &[Event], codec: VideoCodec) {
        let (mut opened, mut closed) = (Vec::new(), Vec::new());
        for e in events {
            match e {
                Event::Opened {
                    location,
                    running_ns,
                } => opened.push((location.clone(), *running_ns)),
                Event::Closed {
                    location,
                    running_ns,
                } => closed.push((location.clone(), *running_ns)),
                Event::Failed { reason } => panic!("{reason}"),
                Event::Ended => {}
            }
        }
        // 5.5 s in 2 s segments: 2 s, 2 s, 1.5 s.
        assert_eq!(opened.len(), 3, "{events:?}");
        assert_eq!(closed.len(), 3, "{events:?}");
        for (i, (location, start)) in opened.iter().enumerate() {
            let end = closed.iter().find(|(l, _)| l == location).unwrap().1;
            let expected = if i < 2 { 2_000 } else { 1_520 };
            assert!(
                ((end - start) / 1_000_000).abs_diff(expected) <= 40,
                "segment {i}: {start}..{end}"
            );
            if let Some((_, next)) = opened.get(i + 1) {
                assert_eq!(end, *next, "segment {i} ends where the next begins");
            }
            // Each file is a whole MP4 whose video spans the segment.
            let (d, recorded) = video_duration(Path::new(location)).unwrap().unwrap();
            assert_eq!(recorded, codec, "{location}");
            assert!(
                (d.as_millis() as u64).abs_diff((end - start) / 1_000_000) <= 40,
                "{location}: {d:?} of video for {start}..{end}"
            );
        }
    }

    #[test]
    fn a_file_cut_short_keeps_its_whole_fragments() {
        let dir = tempfile::tempdir().unwrap();
        let events = segment_test_video(dir.path());
        let Some(Event::Closed { location, .. }) =
            events.iter().find(|e| matches!(e, Event::Closed { .. }))
        else {
            panic!("{events:?}");
        };
        // As if the writer died 60 % of the way through its 2 s segment.
        let mp4 = Path::new(location);
        let len = std::fs::metadata(mp4).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(mp4)
            .unwrap()
            .set_len(len * 6 / 10)
            .unwrap();
        let (kept, _) = salvage(mp4).unwrap().expect("a whole fragment");
        assert!(
            (900..=1100).contains(&kept.as_millis()),
            "kept {kept:?} of the first 1.2 s (1 s fragments)"
        );
        assert_eq!(
            std::fs::metadata(mp4).unwrap().len() as usize,
            complete_prefix(&std::fs::read(mp4).unwrap())
        );
    }

    #[test]
    fn the_playable_prefix_ends_after_the_last_whole_fragment() {
        let mut file = [boxed(b"ftyp", 12), boxed(b"moov", 300)].concat();
        assert_eq!(complete_prefix(&file), 0, "a header alone plays nothing");
        file.extend(boxed(b"moof", 100));
        file.extend(boxed(b"mdat", 5000));
        let one = file.len();
        assert_eq!(complete_prefix(&file), one);
        file.extend(boxed(b"moof", 100));
        assert_eq!(complete_prefix(&file), one, "a fragment without its media");
        let mdat = boxed(b"mdat", 5000);
        file.extend(&mdat[..3000]);
        assert_eq!(complete_prefix(&file), one, "a fragment cut short");
        file.extend(&mdat[3000..]);
        assert_eq!(complete_prefix(&file), file.len());
        file.extend(&[0, 0, 0]);
        assert_eq!(complete_prefix(&file), file.len() - 3, "a torn box header");
    }

    fn spans(events: &[Event]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for e in events {
            match e {
                Event::Opened { running_ns, .. } => out.push((*running_ns / 1_000_000, 0)),
                Event::Closed {
                    location,
                    running_ns,
                } => {
                    let i = events
                        .iter()
                        .filter(|e| matches!(e, Event::Opened { .. }))
                        .position(
                            |e| matches!(e, Event::Opened { location: l, .. } if l == location),
                        )
                        .unwrap();
                    out[i].1 = *running_ns / 1_000_000;
                }
                Event::Failed { reason } => panic!("{reason}"),
                Event::Ended => {}
            }
        }
        out
    }

    #[test]
    fn a_holding_segmenter_writes_from_the_keyframe_it_is_released_at() {
        let dir = tempfile::tempdir().unwrap();
        let events = segment_test_video_with(dir.path(), |i, s| match i {
            0 => s.hold(),
            // At 3.2 s, released at 2.1 s: its keyframe is the one at 2.0 s.
            80 => s.release(Some(2_100_000_000)),
            _ => {}
        });
        assert_eq!(spans(&events), [(2000, 4000), (4000, 5520)], "{events:?}");

        // Released at a time still to come: from the first keyframe there.
        let dir = tempfile::tempdir().unwrap();
        let events = segment_test_video_with(dir.path(), |i, s| match i {
            0 => s.hold(),
            30 => s.release(Some(2_900_000_000)),
            _ => {}
        });
        assert_eq!(spans(&events), [(3000, 5000), (5000, 5520)], "{events:?}");
    }

    #[test]
    fn a_segmenter_ending_at_the_next_keyframe_writes_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let events = segment_test_video_with(dir.path(), |i, s| {
            if i == 70 {
                s.end_at_next_keyframe();
            }
        });
        assert_eq!(spans(&events), [(0, 2000), (2000, 3000)], "{events:?}");
        assert_eq!(
            events.iter().filter(|e| **e == Event::Ended).count(),
            1,
            "{events:?}"
        );
    }
}
