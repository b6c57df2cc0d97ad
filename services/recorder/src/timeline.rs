//! `Timeline`: which re-stream a camera's recording pulls, and where its segments start and
//! end on the wall clock — the recorder's per-camera decisions, without any I/O.
//!
//! It is driven by inputs that carry the time — the camera's status (its live re-stream URL),
//! the spool's floor, what a pipeline reports (a segment file opened or closed, the pipeline
//! ended), the clock — and answers with [`Effect`]s that the actor
//! ([`crate::recording`]) carries out: start a pipeline on a URL, finish one (EOS: its open
//! segment is completed), drop one, hand a finished segment to the spool.
//!
//! *Cut-over.* When the camera's re-stream moves to another ingest worker on a planned move,
//! the old worker keeps serving its re-stream for a moment (see the ingest worker's handover).
//! The timeline starts a second pipeline on the new URL while the first goes on writing; when
//! the new one passes its first keyframe (where its first segment starts), the old one is
//! finished at that instant. The old segment ends where the new one begins, so the index
//! stays contiguous.
//! After a crash (the old re-stream is gone) the new pipeline simply starts: the gap is the
//! failover plus the wait for a keyframe.
//!
//! *Handover between recorders* (a planned move of the recording itself: a recorder joins,
//! or one stops gracefully). The recorder taking the camera over starts its pipeline
//! *holding* (writing nothing, keeping what arrives) and says when it has its first keyframe;
//! the recorder handing over then ends its last segment at its next keyframe and says where,
//! on the wall clock; the new one starts writing at that same keyframe from what it held, its
//! segments anchored to that instant. The index stays contiguous across recorders, with no
//! frame twice. Whichever side waits too long goes on alone: the old one stops, the new one
//! writes all it held.
//!
//! *Wall clock.* A pipeline's first keyframe anchors its running time to the wall clock (the
//! time it passed the parser, before the segmenter); every boundary of that pipeline is the
//! anchor plus the running time elapsed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Build and start pipeline `run` pulling `url`; `hold`: its segmenter holds (a
    /// handover from another recorder).
    Start { run: u64, url: String, hold: bool },
    /// Pipeline `run` stops holding and writes from the keyframe at `at_ns` (running time;
    /// `None`: from the first it holds).
    Release { run: u64, at_ns: Option<u64> },
    /// Pipeline `run` ends its recording at its next keyframe (a handover).
    EndAtKeyframe { run: u64 },
    /// The handover is over: the last segment ended at `at_ms` (`None`: it ended without a
    /// successor). The recording here is done.
    HandedOver { at_ms: Option<i64> },
    /// End pipeline `run` cleanly: EOS completes the segment it is writing (reported by
    /// [`Timeline::closed`]); [`Timeline::ended`] follows.
    Finish { run: u64 },
    /// Tear pipeline `run` down now. The segment files it was writing (location, start on
    /// the wall clock) are unfinished: keep the whole fragments they hold.
    Drop {
        run: u64,
        unfinished: Vec<(String, i64)>,
    },
    /// A segment file was started at `start_ms` on the wall clock (noted beside it, so that
    /// what it holds can be kept should the recorder die while writing it).
    Opened { location: String, start_ms: i64 },
    /// A segment file is complete: `[start_ms, end_ms)` on the wall clock.
    Segment {
        location: String,
        start_ms: i64,
        end_ms: i64,
    },
    /// A segment file that repeats what the recording has from another pipeline: delete it.
    Discard { location: String },
}

/// Two pipelines on the same re-stream see the same keyframe at most this far apart on the
/// wall clock (they are anchored independently).
const SAME_KEYFRAME_MS: i64 = 300;

/// Why a pipeline was dropped or ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Recording {
        url: String,
    },
    CutOver {
        url: String,
    },
    Stalled,
    Interrupted {
        reason: String,
    },
    CutOverFailed {
        reason: String,
    },
    /// Took the camera over from another recorder at `at_ms` (`None`: without hearing where
    /// it ended).
    TookOver {
        at_ms: Option<i64>,
    },
    HandingOver,
}

/// Where a handover between recorders stands, on either side.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Handover {
    /// Taking over: the first pipeline holds; `since` its first keyframe.
    Receiving { since: Option<Instant> },
    /// Released at `at_ms`: the first segment opened starts there.
    Anchoring { at_ms: i64 },
    /// Handing over since `since`; `ending`: the successor is ready and the last segment ends
    /// at the next keyframe.
    Giving { since: Instant, ending: bool },
}

#[derive(Debug)]
struct Run {
    id: u64,
    url: String,
    started: Instant,
    /// Wall clock (ms) and running time (ns) of the first segment's start.
    anchor: Option<(i64, u64)>,
    /// Open segment files: location → start (ms since the epoch).
    open: HashMap<String, i64>,
    /// End of the last completed segment (ms since the epoch).
    last_end_ms: Option<i64>,
    /// Cut over: where the pipeline that took over begins. A segment this one opened there
    /// (the same keyframe, seen a moment apart) repeats the other's.
    superseded_at_ms: Option<i64>,
    last_activity: Instant,
}

impl Run {
    /// Tears the run down, with whatever it was writing.
    fn dropped(self) -> Effect {
        let mut unfinished: Vec<(String, i64)> = self.open.into_iter().collect();
        unfinished.sort();
        Effect::Drop {
            run: self.id,
            unfinished,
        }
    }

    fn wall_ms(&mut self, running_ns: u64, wall_now_ms: i64) -> i64 {
        let (wall0, rt0) = *self.anchor.get_or_insert((wall_now_ms, running_ns));
        wall0 + (running_ns as i64 - rt0 as i64) / 1_000_000
    }
}

/// Timing the timeline works with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A pipeline that opens and closes no segment for this long is reconnected.
    pub stall: Duration,
    /// A new pipeline that has not opened a segment this long after starting is given up
    /// (and tried again at the next status).
    pub first_segment: Duration,
    /// A finishing pipeline that has not ended this long after its EOS is dropped.
    pub finish: Duration,
    /// How long either side of a handover between recorders waits for the other.
    pub handover: Duration,
}

/// One camera's recording timeline. See the module docs.
#[derive(Debug)]
pub struct Timeline {
    timing: Timing,
    next_run: u64,
    /// The pipeline whose segments are the recording.
    current: Option<Run>,
    /// A pipeline on the re-stream's new URL, waiting for its first segment to take over.
    incoming: Option<Run>,
    /// The previous pipeline, finishing its last segment.
    finishing: Option<(Run, Instant)>,
    paused: bool,
    handover: Option<Handover>,
    notes: Vec<Note>,
}

impl Timeline {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            next_run: 0,
            current: None,
            incoming: None,
            finishing: None,
            paused: false,
            handover: None,
            notes: Vec::new(),
        }
    }

    /// What happened since the last call, for the log.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Takes the camera over from another recorder that records it now: call before the
    /// first status. The first pipeline holds until [`Timeline::cut_at`].
    pub fn take_over(&mut self) {
        self.handover = Some(Handover::Receiving { since: None });
    }

    /// Taking over, the holding pipeline has its first keyframe at `at_ms` on the wall clock:
    /// the recorder handing over may end its recording now.
    pub fn ready_since(&self) -> Option<i64> {
        match self.handover {
            Some(Handover::Receiving { since: Some(_) }) => {
                self.current.as_ref()?.anchor.map(|(wall, _)| wall)
            }
            _ => None,
        }
    }

    /// Taking over: the recorder handing over ended its last segment at `at_ms`.
    pub fn cut_at(&mut self, at_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if !matches!(self.handover, Some(Handover::Receiving { since: Some(_) })) {
            return out;
        }
        let Some(c) = &self.current else {
            return out;
        };
        let Some((wall0, rt0)) = c.anchor else {
            return out;
        };
        let at_ns = (rt0 as i64 + (at_ms - wall0) * 1_000_000).max(0) as u64;
        out.push(Effect::Release {
            run: c.id,
            at_ns: Some(at_ns),
        });
        self.handover = Some(Handover::Anchoring { at_ms });
        self.notes.push(Note::TookOver { at_ms: Some(at_ms) });
        out
    }

    /// Taking over, but the other recorder is not handing over (it died): write all that was
    /// held, on this recorder's own clock.
    pub fn go_alone(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        if !matches!(self.handover, Some(Handover::Receiving { .. })) {
            return out;
        }
        self.handover = None;
        self.notes.push(Note::TookOver { at_ms: None });
        if let Some(c) = &self.current {
            out.push(Effect::Release {
                run: c.id,
                at_ns: None,
            });
        }
        out
    }

    /// Hands the camera over to another recorder: recording goes on until the successor is
    /// [ready](Timeline::successor_ready) (or the handover times out).
    pub fn hand_over(&mut self, now: Instant) -> Vec<Effect> {
        let receiving = matches!(
            self.handover,
            Some(Handover::Receiving { .. } | Handover::Anchoring { .. })
        );
        if self.current.is_none() || self.paused || receiving {
            let mut out = Vec::new();
            self.drop_all(&mut out);
            self.handover = None;
            out.push(Effect::HandedOver { at_ms: None });
            return out;
        }
        if !matches!(self.handover, Some(Handover::Giving { .. })) {
            self.handover = Some(Handover::Giving {
                since: now,
                ending: false,
            });
            self.notes.push(Note::HandingOver);
        }
        Vec::new()
    }

    /// The camera came back to this recorder while it was being handed over: record on, if
    /// the recording has not begun to end (`false`: it has).
    pub fn take_back(&mut self) -> bool {
        match self.handover {
            Some(Handover::Giving { ending: false, .. }) if self.current.is_some() => {
                self.handover = None;
                true
            }
            _ => false,
        }
    }

    /// Whether this recording is being handed over and still waits for its successor.
    pub fn awaiting_successor(&self) -> bool {
        matches!(self.handover, Some(Handover::Giving { ending: false, .. }))
    }

    /// Handing over: the successor holds the stream (from before now): end at the next
    /// keyframe, where it will begin.
    pub fn successor_ready(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(Handover::Giving {
            since,
            ending: false,
        }) = self.handover
        else {
            return out;
        };
        if let Some(c) = &self.current {
            out.push(Effect::EndAtKeyframe { run: c.id });
            self.handover = Some(Handover::Giving {
                since,
                ending: true,
            });
        }
        out
    }

    /// Whether a pipeline records (or is about to).
    pub fn recording(&self) -> bool {
        self.current.is_some() || self.incoming.is_some()
    }

    /// The camera's status was read: `live_url` is its re-stream while it is live.
    pub fn status(&mut self, live_url: Option<&str>, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(url) = live_url.filter(|u| !u.is_empty()) else {
            return out;
        };
        if self.paused || matches!(self.handover, Some(Handover::Giving { .. })) {
            return out;
        }
        if let Some(i) = self.incoming.take() {
            if i.url == url {
                self.incoming = Some(i);
                return out;
            }
            // Moved again before the cut-over: follow the newest URL.
            out.push(i.dropped());
        }
        match &self.current {
            None => {
                let hold = matches!(self.handover, Some(Handover::Receiving { .. }));
                let run = self.start(url, hold, now, &mut out);
                self.current = Some(run);
                self.notes.push(Note::Recording { url: url.into() });
            }
            Some(c) if c.url != url => {
                let run = self.start(url, false, now, &mut out);
                self.incoming = Some(run);
            }
            Some(_) => {}
        }
        out
    }

    /// The spool is below its free-space floor (`true`) or above it again.
    pub fn floor(&mut self, below: bool) -> Vec<Effect> {
        let mut out = Vec::new();
        if below && !self.paused {
            self.drop_all(&mut out);
        }
        self.paused = below;
        out
    }

    /// Stops everything (the camera is no longer recorded here); open segments are lost.
    pub fn stop(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        self.drop_all(&mut out);
        out
    }

    /// Pipeline `run` passed its first keyframe, at `running_ns`, `wall_now_ms` on the wall
    /// clock: the anchor of its segments, and the moment a new re-stream takes over.
    pub fn keyframe(
        &mut self,
        run: u64,
        running_ns: u64,
        wall_now_ms: i64,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.cut_over(run, wall_now_ms, now, &mut out);
        if let Some(r) = self.run_mut(run) {
            r.anchor.get_or_insert((wall_now_ms, running_ns));
            r.last_activity = now;
        }
        if self.handover == Some(Handover::Receiving { since: None })
            && self.current.as_ref().is_some_and(|c| c.id == run)
        {
            self.handover = Some(Handover::Receiving { since: Some(now) });
        }
        out
    }

    /// If `run` is the incoming pipeline, it takes over, and the current one ends its segment
    /// here.
    fn cut_over(&mut self, run: u64, wall_now_ms: i64, now: Instant, out: &mut Vec<Effect>) {
        let Some(incoming) = self.incoming.take_if(|i| i.id == run) else {
            return;
        };
        if let Some((old, _)) = self.finishing.take() {
            out.push(old.dropped());
        }
        if let Some(mut old) = self.current.take() {
            out.push(Effect::Finish { run: old.id });
            old.superseded_at_ms = Some(incoming.anchor.map_or(wall_now_ms, |(wall, _)| wall));
            self.finishing = Some((old, now));
        }
        self.notes.push(Note::CutOver {
            url: incoming.url.clone(),
        });
        self.current = Some(incoming);
    }

    /// Pipeline `run` opened a segment file at `running_ns`; `wall_now_ms` is the wall clock.
    pub fn opened(
        &mut self,
        run: u64,
        location: String,
        running_ns: u64,
        wall_now_ms: i64,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        // Normally the keyframe came first and did this.
        self.cut_over(run, wall_now_ms, now, &mut out);
        // Taken over: this recording begins where the previous recorder's ended.
        if let Some(Handover::Anchoring { at_ms }) = self.handover
            && let Some(c) = self.current.as_mut().filter(|c| c.id == run)
        {
            c.anchor = Some((at_ms, running_ns));
            self.handover = None;
        }
        if let Some(r) = self.run_mut(run) {
            let start_ms = r.wall_ms(running_ns, wall_now_ms);
            r.open.insert(location.clone(), start_ms);
            r.last_activity = now;
            out.push(Effect::Opened { location, start_ms });
        }
        out
    }

    /// Pipeline `run` completed the segment file `location` at `running_ns`.
    pub fn closed(
        &mut self,
        run: u64,
        location: &str,
        running_ns: u64,
        wall_now_ms: i64,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(r) = self.run_mut(run) {
            r.last_activity = now;
            if let Some(start_ms) = r.open.remove(location) {
                let end_ms = r.wall_ms(running_ns, wall_now_ms);
                if r.superseded_at_ms
                    .is_some_and(|at| start_ms >= at - SAME_KEYFRAME_MS)
                {
                    out.push(Effect::Discard {
                        location: location.to_string(),
                    });
                    return out;
                }
                r.last_end_ms = Some(end_ms);
                out.push(Effect::Segment {
                    location: location.to_string(),
                    start_ms,
                    end_ms,
                });
            }
        }
        out
    }

    /// Pipeline `run` ended: its EOS after [`Effect::Finish`], or a failure (`reason`).
    pub fn ended(&mut self, run: u64, reason: &str) -> Vec<Effect> {
        let is = |r: &Option<Run>| r.as_ref().is_some_and(|r| r.id == run);
        // Handing over, the recording ends here (at the agreed keyframe, or not).
        if let Some(Handover::Giving { ending, .. }) = self.handover
            && is(&self.current)
        {
            let mut out = Vec::new();
            let at_ms = self
                .current
                .as_ref()
                .and_then(|c| c.last_end_ms)
                .filter(|_| ending);
            self.drop_all(&mut out);
            self.handover = None;
            out.push(Effect::HandedOver { at_ms });
            return out;
        }
        let ended = if self.finishing.as_ref().is_some_and(|(r, _)| r.id == run) {
            self.finishing.take().map(|(r, _)| r)
        } else if is(&self.current) {
            self.notes.push(Note::Interrupted {
                reason: reason.into(),
            });
            self.current.take()
        } else if is(&self.incoming) {
            self.notes.push(Note::CutOverFailed {
                reason: reason.into(),
            });
            self.incoming.take()
        } else {
            None
        };
        ended.map(Run::dropped).into_iter().collect()
    }

    /// The clock: stalls and the deadlines of a cut-over.
    pub fn check(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        let timing = self.timing;
        match self.handover {
            Some(Handover::Receiving { since: Some(t) })
                if now.duration_since(t) > timing.handover =>
            {
                out.extend(self.go_alone());
            }
            Some(Handover::Giving { since, .. }) if now.duration_since(since) > timing.handover => {
                self.handover = None;
                self.drop_all(&mut out);
                out.push(Effect::HandedOver { at_ms: None });
                return out;
            }
            _ => {}
        }
        // A holding pipeline opens nothing: its wait is bounded by the handover's.
        let holding = matches!(self.handover, Some(Handover::Receiving { .. }));
        if let Some(c) = self
            .current
            .take_if(|c| !holding && now.duration_since(c.last_activity) > timing.stall)
        {
            out.push(c.dropped());
            self.notes.push(Note::Stalled);
        }
        if let Some(i) = self
            .incoming
            .take_if(|i| now.duration_since(i.started) > timing.first_segment)
        {
            out.push(i.dropped());
            self.notes.push(Note::CutOverFailed {
                reason: "no keyframe from the new re-stream in time".into(),
            });
        }
        if let Some((f, _)) = self
            .finishing
            .take_if(|(_, since)| now.duration_since(*since) > timing.finish)
        {
            out.push(f.dropped());
        }
        out
    }

    fn start(&mut self, url: &str, hold: bool, now: Instant, out: &mut Vec<Effect>) -> Run {
        self.next_run += 1;
        out.push(Effect::Start {
            run: self.next_run,
            url: url.to_string(),
            hold,
        });
        Run {
            id: self.next_run,
            url: url.to_string(),
            started: now,
            anchor: None,
            open: HashMap::new(),
            last_end_ms: None,
            superseded_at_ms: None,
            last_activity: now,
        }
    }

    fn run_mut(&mut self, run: u64) -> Option<&mut Run> {
        [
            self.current.as_mut(),
            self.incoming.as_mut(),
            self.finishing.as_mut().map(|(r, _)| r),
        ]
        .into_iter()
        .flatten()
        .find(|r| r.id == run)
    }

    fn drop_all(&mut self, out: &mut Vec<Effect>) {
        let runs = [
            self.current.take(),
            self.incoming.take(),
            self.finishing.take().map(|(r, _)| r),
        ];
        out.extend(runs.into_iter().flatten().map(Run::dropped));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        stall: Duration::from_secs(12),
        first_segment: Duration::from_secs(10),
        finish: Duration::from_secs(3),
        handover: Duration::from_secs(8),
    };

    /// A timeline and a simulated clock (monotonic and wall).
    struct Sim {
        t: Timeline,
        now: Instant,
        wall: i64,
    }

    impl Sim {
        fn new() -> Self {
            Self {
                t: Timeline::new(TIMING),
                now: Instant::now(),
                wall: 1_700_000_000_000,
            }
        }
        fn advance(&mut self, ms: u64) {
            self.now += Duration::from_millis(ms);
            self.wall += ms as i64;
        }
        fn opened(&mut self, run: u64, loc: &str, rt_ms: u64) -> Vec<Effect> {
            self.t
                .opened(run, loc.into(), rt_ms * 1_000_000, self.wall, self.now)
        }
        fn closed(&mut self, run: u64, loc: &str, rt_ms: u64) -> Vec<Effect> {
            self.t
                .closed(run, loc, rt_ms * 1_000_000, self.wall, self.now)
        }
    }

    fn dropped(run: u64, unfinished: &[(&str, i64)]) -> Effect {
        Effect::Drop {
            run,
            unfinished: unfinished
                .iter()
                .map(|(l, s)| (l.to_string(), *s))
                .collect(),
        }
    }

    fn opened(loc: &str, start_ms: i64) -> Effect {
        Effect::Opened {
            location: loc.into(),
            start_ms,
        }
    }

    fn segment(loc: &str, start_ms: i64, end_ms: i64) -> Effect {
        Effect::Segment {
            location: loc.into(),
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn segments_follow_the_running_time_from_the_first_one() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        assert_eq!(
            sim.t.status(Some("rtsp://a/cam/1"), sim.now),
            [Effect::Start {
                run: 1,
                url: "rtsp://a/cam/1".into(),
                hold: false
            }]
        );
        // A status without a URL (not live) changes nothing.
        assert!(sim.t.status(None, sim.now).is_empty());
        sim.advance(300);
        assert_eq!(sim.opened(1, "s1", 5000), [opened("s1", w0 + 300)]);
        // The bus message arrives late: the boundary is the running time, not the clock.
        sim.advance(2100);
        assert_eq!(
            sim.closed(1, "s1", 7000),
            [segment("s1", w0 + 300, w0 + 2300)]
        );
        sim.opened(1, "s2", 7000);
        sim.advance(1900);
        assert_eq!(
            sim.closed(1, "s2", 9000),
            [segment("s2", w0 + 2300, w0 + 4300)]
        );
    }

    #[test]
    fn a_moved_re_stream_is_cut_over_at_the_new_keyframe_without_a_gap() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.advance(1500);
        // The camera moved: the old pipeline keeps writing while the new one connects.
        let out = sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        assert_eq!(
            out,
            [Effect::Start {
                run: 2,
                url: "rtsp://b/cam/1".into(),
                hold: false
            }]
        );
        assert!(sim.t.status(Some("rtsp://b/cam/1"), sim.now).is_empty());
        sim.advance(700);
        // The new re-stream's first keyframe: it takes over, the old one finishes there.
        let out = sim.t.keyframe(2, 40_000_000_000, sim.wall, sim.now);
        assert_eq!(out, [Effect::Finish { run: 1 }]);
        let cut = sim.wall;
        sim.advance(60);
        assert_eq!(sim.closed(1, "a1", 2200), [segment("a1", w0, cut)]);
        assert_eq!(sim.t.ended(1, "EOS"), [dropped(1, &[])]);
        // However late the segment is reported open, it starts at the keyframe.
        sim.advance(1000);
        assert_eq!(sim.opened(2, "b1", 40_000), [opened("b1", cut)]);
        sim.advance(1000);
        assert_eq!(
            sim.closed(2, "b1", 42_000),
            [segment("b1", cut, cut + 2000)]
        );
        assert_eq!(sim.t.take_notes().len(), 2, "recording, cut over");
    }

    #[test]
    fn a_new_re_stream_that_sends_nothing_is_given_up_and_the_old_goes_on() {
        let mut sim = Sim::new();
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        sim.advance(10_001);
        sim.closed(1, "a1", 10_001);
        sim.opened(1, "a2", 10_001);
        assert_eq!(sim.t.check(sim.now), [dropped(2, &[])]);
        assert!(sim.t.recording());
        // Tried again at the next status.
        assert_eq!(
            sim.t.status(Some("rtsp://b/cam/1"), sim.now),
            [Effect::Start {
                run: 3,
                url: "rtsp://b/cam/1".into(),
                hold: false
            }]
        );
    }

    #[test]
    fn a_crashed_re_stream_is_replaced_by_the_next_live_url() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        // The old worker died: its pipeline fails; the open segment is unfinished.
        assert_eq!(
            sim.t.ended(1, "connection reset"),
            [dropped(1, &[("a1", w0)])]
        );
        assert!(!sim.t.recording());
        assert_eq!(
            sim.t.status(Some("rtsp://b/cam/1"), sim.now),
            [Effect::Start {
                run: 2,
                url: "rtsp://b/cam/1".into(),
                hold: false
            }]
        );
    }

    #[test]
    fn a_silent_pipeline_is_dropped_and_the_floor_pauses_everything() {
        let mut sim = Sim::new();
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.advance(12_001);
        assert_eq!(sim.t.check(sim.now), [dropped(1, &[])]);
        assert_eq!(sim.t.take_notes().last(), Some(&Note::Stalled));
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        assert_eq!(sim.t.floor(true), [dropped(2, &[])]);
        assert!(sim.t.status(Some("rtsp://a/cam/1"), sim.now).is_empty());
        assert!(sim.t.floor(false).is_empty());
        assert_eq!(sim.t.status(Some("rtsp://a/cam/1"), sim.now).len(), 1);
    }

    #[test]
    fn a_finishing_pipeline_that_never_ends_is_dropped() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        sim.opened(2, "b1", 0);
        sim.advance(3001);
        sim.closed(2, "b1", 3001);
        sim.opened(2, "b2", 3001);
        assert_eq!(sim.t.check(sim.now), [dropped(1, &[("a1", w0)])]);
    }

    #[test]
    fn a_recording_handed_between_recorders_ends_and_begins_at_one_keyframe() {
        // The recorder handing over.
        let mut old = Sim::new();
        old.t.status(Some("rtsp://a/cam/1"), old.now);
        old.opened(1, "a1", 0);
        let w0 = old.wall;
        old.advance(1200);
        assert!(old.t.hand_over(old.now).is_empty(), "it records on");
        assert!(old.t.awaiting_successor());
        assert!(old.t.status(Some("rtsp://b/cam/1"), old.now).is_empty());

        // The recorder taking over, a little later: its pipeline holds.
        let mut new = Sim::new();
        new.advance(1500);
        new.t.take_over();
        assert_eq!(
            new.t.status(Some("rtsp://a/cam/1"), new.now),
            [Effect::Start {
                run: 1,
                url: "rtsp://a/cam/1".into(),
                hold: true
            }]
        );
        assert_eq!(new.t.ready_since(), None, "no keyframe yet");
        new.advance(300);
        new.t.keyframe(1, 7_000_000_000, new.wall, new.now);
        let since = new.t.ready_since().expect("ready once it has a keyframe");
        // Holding, it is not stalled however long it writes nothing (within the handover).
        new.advance(5000);
        assert!(new.t.check(new.now).is_empty());

        // The old one hears it, ends at its next keyframe and says where.
        old.advance(1000);
        assert_eq!(old.t.successor_ready(), [Effect::EndAtKeyframe { run: 1 }]);
        assert!(!old.t.awaiting_successor());
        old.advance(400);
        let at = old.wall;
        assert_eq!(old.closed(1, "a1", 2600), [segment("a1", w0, at)]);
        assert_eq!(
            old.t.ended(1, "the re-stream ended"),
            [dropped(1, &[]), Effect::HandedOver { at_ms: Some(at) }]
        );

        // The new one writes from that keyframe, on its own running time, and its segments
        // are anchored to where the old one ended.
        let out = new.t.cut_at(at);
        let expected_ns = 7_000_000_000 + (at - since) as u64 * 1_000_000;
        assert_eq!(
            out,
            [Effect::Release {
                run: 1,
                at_ns: Some(expected_ns)
            }]
        );
        let rt_ms = expected_ns / 1_000_000 + 3; // its view of that keyframe
        new.advance(100);
        assert_eq!(new.opened(1, "n1", rt_ms), [opened("n1", at)]);
        new.advance(2000);
        assert_eq!(
            new.closed(1, "n1", rt_ms + 2000),
            [segment("n1", at, at + 2000)]
        );
    }

    #[test]
    fn either_side_of_a_handover_goes_on_alone_after_its_timeout() {
        let mut old = Sim::new();
        old.t.status(Some("rtsp://a/cam/1"), old.now);
        old.opened(1, "a1", 0);
        let w0 = old.wall;
        old.t.hand_over(old.now);
        old.advance(8001);
        assert_eq!(
            old.t.check(old.now),
            [
                dropped(1, &[("a1", w0)]),
                Effect::HandedOver { at_ms: None }
            ]
        );

        let mut new = Sim::new();
        new.t.take_over();
        new.t.status(Some("rtsp://a/cam/1"), new.now);
        new.t.keyframe(1, 0, new.wall, new.now);
        new.advance(8001);
        assert_eq!(
            new.t.check(new.now),
            [Effect::Release {
                run: 1,
                at_ns: None
            }]
        );
        // Released without a cut, it records on its own clock.
        let w = new.wall;
        assert_eq!(new.opened(1, "n1", 8001), [opened("n1", w)]);

        // Taking over from a recorder that turns out not to be handing over: at once.
        let mut new = Sim::new();
        new.t.take_over();
        new.t.status(Some("rtsp://a/cam/1"), new.now);
        new.t.keyframe(1, 0, new.wall, new.now);
        assert_eq!(
            new.t.go_alone(),
            [Effect::Release {
                run: 1,
                at_ns: None
            }]
        );
        assert!(new.t.go_alone().is_empty());

        // Nothing recording: a handover is over at once.
        let mut idle = Sim::new();
        assert_eq!(
            idle.t.hand_over(idle.now),
            [Effect::HandedOver { at_ms: None }]
        );
    }

    #[test]
    fn a_segment_the_old_pipeline_opens_at_the_cut_over_keyframe_is_discarded() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.advance(1500);
        sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        sim.advance(500);
        let cut = sim.wall;
        assert_eq!(
            sim.t.keyframe(2, 9_000_000_000, sim.wall, sim.now),
            [Effect::Finish { run: 1 }]
        );
        // The old pipeline sees the same keyframe 28 ms later: a new segment there, and EOS.
        sim.advance(28);
        assert_eq!(sim.closed(1, "a1", 2028), [segment("a1", w0, w0 + 2028)]);
        assert_eq!(sim.opened(1, "a2", 2028), [opened("a2", w0 + 2028)]);
        sim.advance(40);
        assert_eq!(
            sim.closed(1, "a2", 2068),
            [Effect::Discard {
                location: "a2".into()
            }]
        );
        assert_eq!(sim.opened(2, "b1", 9_000), [opened("b1", cut)]);
    }
}
