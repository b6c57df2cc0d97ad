//! `Timeline`: which re-stream a camera's recording pulls, and where its segments start and
//! end on the wall clock — the recorder's per-camera decisions, without any I/O.
//!
//! It is driven by inputs that carry the time — the camera's status (its live re-stream URL),
//! the spool's floor, what a pipeline reports (its first keyframe, a segment file opened or
//! closed, the pipeline ended), the clock — and answers with [`Effect`]s that the actor
//! ([`crate::recording`]) carries out: start a pipeline on a URL (holding or not), release a
//! holding one at a keyframe, end one at its next keyframe, drop one, hand a finished segment
//! to the spool.
//!
//! Two pipelines on one stream hand the recording over the same way wherever they are: the
//! new one *holds* (writes nothing, keeps what arrives from its first keyframe); once it has a
//! keyframe the old one ends its last segment at its next keyframe; the new one then writes
//! from that same keyframe (the first it holds at most a moment before the old one's end on
//! the wall clock), its segments anchored to the old one's end. The index stays contiguous,
//! with no frame twice and none missing.
//!
//! - *Cut-over* (in one recorder): the camera's re-stream moved to another ingest worker on a
//!   planned move, and the old worker keeps serving its re-stream for a moment (see the ingest
//!   worker's handover). A second pipeline on the new URL holds while the first goes on. If
//!   the old one ends without reaching a keyframe (its worker died), or takes longer than
//!   `finish`, the new one writes all it held. After a crash (the old re-stream gone before
//!   the new URL is known) the new pipeline simply starts: the gap is the failover plus the
//!   wait for a keyframe.
//! - *Handover between recorders* (a recorder joins, or one stops gracefully): the recorder
//!   taking the camera over starts its first pipeline holding and says (through the actor)
//!   when it has its first keyframe; the recorder handing over then ends at its next keyframe
//!   and says where. Whichever side waits longer than `handover` goes on alone: the old one
//!   stops, the new one writes all it held.
//!
//! *Wall clock.* A pipeline's first keyframe anchors its running time to the wall clock (the
//! time it passed the parser, before the segmenter); every boundary of that pipeline is the
//! anchor plus the running time elapsed — unless it took a recording over, then the anchor is
//! the previous pipeline's end at that keyframe. The pipeline's running time follows the
//! camera's RTP clock from its first packet on (no jitter buffer), so the anchor then follows
//! the least delayed frame the pipeline reported over the last [`CLOCK_WINDOW_MS`]
//! ([`Timeline::clock`]): a first frame that came late (in a burst at connect) does not put
//! the recording ahead of the wall clock, and a camera clock that drifts is followed. The
//! pipeline's first segment (unless pinned to a recording it took over) starts by the anchor
//! it ends with, so it spans what it holds however late its first keyframe came. Where a
//! segment ends, the next one starts, at the same time on the wall clock, however the anchor
//! moved in between.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a frame the pipeline reported counts for its anchor (see the module docs): long
/// enough to span a burst at connect and a long GOP, short enough that a clock drifting by
/// 100 ppm moves the recording by 3 ms at most.
pub const CLOCK_WINDOW_MS: i64 = 30_000;

/// How late a frame at `running_ns` that passed at `wall_ms` is, up to a constant (in ns):
/// the less delayed of two frames has the smaller.
pub fn delay_ns(wall_ms: i64, running_ns: u64) -> i64 {
    wall_ms * 1_000_000 - running_ns as i64
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Build and start pipeline `run` pulling `url`; `hold`: its segmenter holds.
    Start { run: u64, url: String, hold: bool },
    /// Pipeline `run` stops holding and writes from the keyframe at `at_ns` (running time;
    /// `None`: from the first it holds).
    Release { run: u64, at_ns: Option<u64> },
    /// Pipeline `run` ends its recording at its next keyframe ([`Timeline::ended`] follows).
    EndAtKeyframe { run: u64 },
    /// The handover to another recorder is over: the last segment ended at `at_ms` (`None`:
    /// it ended without a successor). The recording here is done.
    HandedOver { at_ms: Option<i64> },
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
}

/// Why a pipeline was dropped or ended, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    Recording {
        url: String,
    },
    /// The recording moved to the pipeline on `url`; `at_ms`: where the old one ended
    /// (`None`: it ended without reaching a keyframe).
    CutOver {
        url: String,
        at_ms: Option<i64>,
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
    /// Handing over since `since`; `ending`: the successor is ready and the last segment ends
    /// at the next keyframe.
    Giving { since: Instant, ending: bool },
}

#[derive(Debug)]
struct Run {
    id: u64,
    url: String,
    started: Instant,
    /// Wall clock (ms) and running time (ns) of the first keyframe (or of the keyframe where
    /// it took over), then of the least delayed frame reported in the window.
    anchor: Option<(i64, u64)>,
    /// Frames reported (wall clock ms, running time ns) in the last [`CLOCK_WINDOW_MS`].
    observed: VecDeque<(i64, u64)>,
    /// When the first keyframe passed the parser (ms since the epoch).
    first_keyframe_ms: Option<i64>,
    /// Released at the end (wall clock) of the recording it takes over: its first segment
    /// starts there.
    anchor_at: Option<i64>,
    /// Whether its first segment was pinned to where the recording it took over ended.
    pinned: bool,
    /// Open segment files: location → start (ms since the epoch, and running time).
    open: HashMap<String, (i64, u64)>,
    /// End of the last completed segment (ms since the epoch, and running time).
    last_end: Option<(i64, u64)>,
    /// Since when it is ending at its next keyframe (for a pipeline that takes over).
    ending: Option<Instant>,
    last_activity: Instant,
}

impl Run {
    /// Tears the run down, with whatever it was writing.
    fn dropped(self) -> Effect {
        let mut unfinished: Vec<(String, i64)> = self
            .open
            .into_iter()
            .map(|(location, (start_ms, _))| (location, start_ms))
            .collect();
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

    /// A boundary at `running_ns` on the wall clock: where a segment that met it there
    /// already put it, else by the anchor.
    fn boundary_ms(&mut self, running_ns: u64, wall_now_ms: i64) -> i64 {
        let met = self
            .open
            .values()
            .chain(self.last_end.iter())
            .find(|(_, rt)| *rt == running_ns)
            .map(|(ms, _)| *ms);
        met.unwrap_or_else(|| self.wall_ms(running_ns, wall_now_ms))
    }

    /// A frame at `running_ns` passed the parser at `wall_ms`: the anchor becomes the least
    /// delayed frame of the window (unless it is to be pinned where a recording was taken
    /// over).
    fn observe(&mut self, running_ns: u64, wall_ms: i64) {
        self.observed.push_back((wall_ms, running_ns));
        while self
            .observed
            .front()
            .is_some_and(|(w, _)| wall_ms - w > CLOCK_WINDOW_MS)
        {
            self.observed.pop_front();
        }
        if self.anchor.is_none() || self.anchor_at.is_some() {
            return;
        }
        let least_delayed = self.observed.iter().min_by_key(|(w, rt)| delay_ns(*w, *rt));
        self.anchor = least_delayed.copied();
    }

    /// Where `at_ms` on the wall clock is on its running time, once it has a keyframe.
    fn running_at(&self, at_ms: i64) -> Option<u64> {
        let (wall0, rt0) = self.anchor?;
        Some((rt0 as i64 + (at_ms - wall0) * 1_000_000).max(0) as u64)
    }

    /// Releases this holding run at `at_ms` on the wall clock (`None`: from what it holds
    /// first); its segments are then anchored there.
    fn release(&mut self, at_ms: Option<i64>) -> Effect {
        let at_ns = at_ms.and_then(|at| self.running_at(at));
        self.anchor_at = at_ns.and(at_ms);
        Effect::Release {
            run: self.id,
            at_ns,
        }
    }
}

/// Timing the timeline works with.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A pipeline that opens and closes no segment for this long is reconnected.
    pub stall: Duration,
    /// A new pipeline that has no keyframe this long after starting is given up (and tried
    /// again at the next status).
    pub first_segment: Duration,
    /// A pipeline ending at its next keyframe for a cut-over that has not ended this long after
    /// is dropped.
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
    /// A pipeline on the re-stream's new URL, holding until the current one ends.
    incoming: Option<Run>,
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
                self.current.as_ref()?.first_keyframe_ms
            }
            _ => None,
        }
    }

    /// Taking over: the recorder handing over ended its last segment at `at_ms`.
    pub fn cut_at(&mut self, at_ms: i64) -> Vec<Effect> {
        if !matches!(self.handover, Some(Handover::Receiving { since: Some(_) })) {
            return Vec::new();
        }
        let Some(c) = self.current.as_mut() else {
            return Vec::new();
        };
        self.handover = None;
        self.notes.push(Note::TookOver { at_ms: Some(at_ms) });
        vec![c.release(Some(at_ms))]
    }

    /// Taking over, but the other recorder is not handing over (it died): write all that was
    /// held, on this recorder's own clock.
    pub fn go_alone(&mut self) -> Vec<Effect> {
        if !matches!(self.handover, Some(Handover::Receiving { .. })) {
            return Vec::new();
        }
        self.handover = None;
        self.notes.push(Note::TookOver { at_ms: None });
        self.current
            .as_mut()
            .map(|c| c.release(None))
            .into_iter()
            .collect()
    }

    /// Hands the camera over to another recorder: recording goes on until the successor is
    /// [ready](Timeline::successor_ready) (or the handover times out).
    pub fn hand_over(&mut self, now: Instant) -> Vec<Effect> {
        let receiving = matches!(self.handover, Some(Handover::Receiving { .. }));
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

    /// Whether this recording is being handed over (until it has ended).
    pub fn handing_over(&self) -> bool {
        matches!(self.handover, Some(Handover::Giving { .. }))
    }

    /// Whether this recording is being handed over and still waits for its successor.
    pub fn awaiting_successor(&self) -> bool {
        matches!(self.handover, Some(Handover::Giving { ending: false, .. }))
    }

    /// Handing over: the successor holds the stream (from before now): end at the next
    /// keyframe, where it will begin.
    pub fn successor_ready(&mut self) -> Vec<Effect> {
        let Some(Handover::Giving {
            since,
            ending: false,
        }) = self.handover
        else {
            return Vec::new();
        };
        let Some(c) = &self.current else {
            return Vec::new();
        };
        self.handover = Some(Handover::Giving {
            since,
            ending: true,
        });
        vec![Effect::EndAtKeyframe { run: c.id }]
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
            // The current pipeline may already be ending for an incoming one that was
            // dropped: the new one still takes over where it ends.
            Some(c) if c.url != url => {
                let run = self.start(url, true, now, &mut out);
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

    /// Pipeline `run` passed a frame at `running_ns` when the wall clock read `wall_ms` (the
    /// least delayed since its previous report): its anchor follows (see the module docs).
    pub fn clock(&mut self, run: u64, running_ns: u64, wall_ms: i64) {
        if let Some(r) = self.run_mut(run) {
            r.observe(running_ns, wall_ms);
        }
    }

    /// Pipeline `run` passed its first keyframe, at `running_ns`, `wall_now_ms` on the wall
    /// clock: the anchor of its segments; an incoming pipeline's keyframe ends the current one
    /// at its next.
    pub fn keyframe(
        &mut self,
        run: u64,
        running_ns: u64,
        wall_now_ms: i64,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(r) = self.run_mut(run) {
            r.anchor.get_or_insert((wall_now_ms, running_ns));
            r.first_keyframe_ms.get_or_insert(wall_now_ms);
            r.observe(running_ns, wall_now_ms);
            r.last_activity = now;
        }
        if self.incoming.as_ref().is_some_and(|i| i.id == run) {
            match self.current.as_mut() {
                Some(c) if c.ending.is_none() => {
                    c.ending = Some(now);
                    out.push(Effect::EndAtKeyframe { run: c.id });
                }
                Some(_) => {}
                None => self.cut_over(None, &mut out),
            }
        }
        if self.handover == Some(Handover::Receiving { since: None })
            && self.current.as_ref().is_some_and(|c| c.id == run)
        {
            self.handover = Some(Handover::Receiving { since: Some(now) });
        }
        out
    }

    /// The incoming pipeline takes over where the current one ended (`at_ms`; `None`: from
    /// all it holds).
    fn cut_over(&mut self, at_ms: Option<i64>, out: &mut Vec<Effect>) {
        let Some(mut incoming) = self.incoming.take() else {
            return;
        };
        if let Some(old) = self.current.take() {
            out.push(old.dropped());
        }
        out.push(incoming.release(at_ms));
        self.notes.push(Note::CutOver {
            url: incoming.url.clone(),
            at_ms,
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
        if let Some(r) = self.run_mut(run) {
            // Taken over: this recording begins where the previous one ended.
            if let Some(at_ms) = r.anchor_at.take() {
                r.anchor = Some((at_ms, running_ns));
                r.pinned = true;
            }
            let start_ms = r.boundary_ms(running_ns, wall_now_ms);
            r.open.insert(location.clone(), (start_ms, running_ns));
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
            if let Some((mut start_ms, start_ns)) = r.open.remove(location) {
                // The pipeline's first segment was opened by its first keyframe's anchor;
                // that keyframe may have come late (in a burst at connect). By its end the
                // anchor follows the least delayed frame: the segment starts by that anchor
                // too, so that it spans what it holds. (A segment pinned where a recording
                // was taken over stays where it was put.)
                if r.last_end.is_none() && !r.pinned {
                    start_ms = r.wall_ms(start_ns, wall_now_ms);
                }
                let end_ms = r.boundary_ms(running_ns, wall_now_ms);
                r.last_end = Some((end_ms, running_ns));
                out.push(Effect::Segment {
                    location: location.to_string(),
                    start_ms,
                    end_ms,
                });
            }
        }
        out
    }

    /// Pipeline `run` ended: after ending at a keyframe, at the re-stream's end, or on a
    /// failure (`reason`).
    pub fn ended(&mut self, run: u64, reason: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        let is = |r: &Option<Run>| r.as_ref().is_some_and(|r| r.id == run);
        if is(&self.current) {
            let current = self.current.as_ref().expect("current");
            let at_keyframe = current.ending.and(current.last_end.map(|(ms, _)| ms));
            // Handing over, the recording ends here (at the agreed keyframe, or not).
            if let Some(Handover::Giving { ending, .. }) = self.handover {
                let at_ms = current.last_end.map(|(ms, _)| ms).filter(|_| ending);
                self.drop_all(&mut out);
                self.handover = None;
                out.push(Effect::HandedOver { at_ms });
                return out;
            }
            if self.incoming.is_some() {
                if at_keyframe.is_none() {
                    self.notes.push(Note::Interrupted {
                        reason: reason.into(),
                    });
                }
                self.cut_over(at_keyframe, &mut out);
                return out;
            }
            self.notes.push(Note::Interrupted {
                reason: reason.into(),
            });
            out.extend(self.current.take().map(Run::dropped));
        } else if is(&self.incoming) {
            self.notes.push(Note::CutOverFailed {
                reason: reason.into(),
            });
            out.extend(self.incoming.take().map(Run::dropped));
        }
        out
    }

    /// The clock: stalls and the deadlines of a cut-over and of a handover.
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
        // A pipeline ending for a cut-over that does not reach its keyframe in time.
        if self
            .current
            .as_ref()
            .and_then(|c| c.ending)
            .is_some_and(|since| now.duration_since(since) > timing.finish)
        {
            self.cut_over(None, &mut out);
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
            .take_if(|i| i.anchor.is_none() && now.duration_since(i.started) > timing.first_segment)
        {
            out.push(i.dropped());
            self.notes.push(Note::CutOverFailed {
                reason: "no keyframe from the new re-stream in time".into(),
            });
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
            anchor_at: None,
            pinned: false,
            observed: VecDeque::new(),
            first_keyframe_ms: None,
            open: HashMap::new(),
            last_end: None,
            ending: None,
            last_activity: now,
        }
    }

    fn run_mut(&mut self, run: u64) -> Option<&mut Run> {
        [self.current.as_mut(), self.incoming.as_mut()]
            .into_iter()
            .flatten()
            .find(|r| r.id == run)
    }

    fn drop_all(&mut self, out: &mut Vec<Effect>) {
        let runs = [self.current.take(), self.incoming.take()];
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
    fn the_wall_clock_follows_the_least_delayed_frame_and_segments_stay_contiguous() {
        let mut sim = Sim::new();
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        // The first second of video arrives in a burst, 900 ms late: the first keyframe
        // (running time 0) passes at w0, though it was captured at w0 - 900.
        let w0 = sim.wall;
        sim.t.keyframe(1, 0, sim.wall, sim.now);
        assert_eq!(sim.opened(1, "s1", 0), [opened("s1", w0)]);
        // From then on frames come on time: the frame at 1 s passes at w0 + 100.
        sim.advance(100);
        sim.t.clock(1, 1_000_000_000, sim.wall);
        sim.advance(1000);
        sim.t.clock(1, 2_000_000_000, sim.wall);
        // The first segment ends where the camera's clock says, not 900 ms ahead; the next
        // starts exactly there. It begins where its first keyframe was captured by that
        // clock, so it spans the 2 s it holds (its file was noted from the late keyframe).
        assert_eq!(sim.opened(1, "s2", 2000), [opened("s2", w0 + 1100)]);
        assert_eq!(
            sim.closed(1, "s1", 2000),
            [segment("s1", w0 - 900, w0 + 1100)]
        );
        // A frame that comes late does not move the recording later.
        sim.advance(1500);
        sim.t.clock(1, 3_000_000_000, sim.wall);
        sim.advance(1000);
        assert_eq!(
            sim.closed(1, "s2", 4000),
            [segment("s2", w0 + 1100, w0 + 3100)]
        );
    }

    #[test]
    fn a_camera_clock_running_slow_is_followed_within_the_window() {
        let mut sim = Sim::new();
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        let w0 = sim.wall;
        sim.t.keyframe(1, 0, sim.wall, sim.now);
        sim.opened(1, "s1", 0);
        // The camera's clock loses 1 ms a second: after 100 s of wall clock it says 99.9 s.
        for s in 1..=100 {
            sim.advance(1000);
            sim.t.clock(1, s * 999_000_000, sim.wall);
        }
        // Ending at the camera's 99.9 s: on the wall clock that was 100 s after the start,
        // not 99.9 s (give or take the window's 30 ms of drift).
        let out = sim.closed(1, "s1", 99_900);
        let [Effect::Segment { end_ms, .. }] = out.as_slice() else {
            panic!("{out:?}");
        };
        assert!(
            (w0 + 99_960..=w0 + 100_000).contains(end_ms),
            "{}",
            end_ms - w0
        );
    }

    #[test]
    fn a_holding_pipeline_says_when_its_first_keyframe_came_however_its_anchor_moves() {
        let mut sim = Sim::new();
        sim.t.take_over();
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        let w0 = sim.wall;
        sim.t.keyframe(1, 0, sim.wall, sim.now);
        assert_eq!(sim.t.ready_since(), Some(w0));
        // A later frame, less delayed: the anchor moves to it.
        sim.advance(1000);
        sim.t.clock(1, 1_100_000_000, sim.wall);
        assert_eq!(sim.t.ready_since(), Some(w0));
    }

    #[test]
    fn a_moved_re_stream_takes_over_at_one_keyframe_without_a_gap() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.t.keyframe(1, 0, sim.wall, sim.now);
        sim.opened(1, "a1", 0);
        sim.advance(1500);
        // The camera moved: the old pipeline keeps writing while the new one connects, holding.
        let out = sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        assert_eq!(
            out,
            [Effect::Start {
                run: 2,
                url: "rtsp://b/cam/1".into(),
                hold: true
            }]
        );
        assert!(sim.t.status(Some("rtsp://b/cam/1"), sim.now).is_empty());
        sim.advance(700);
        // The new re-stream's first keyframe: the old one ends at its next.
        let since = sim.wall;
        let out = sim.t.keyframe(2, 40_000_000_000, sim.wall, sim.now);
        assert_eq!(out, [Effect::EndAtKeyframe { run: 1 }]);
        sim.advance(800);
        let at = sim.wall;
        assert_eq!(sim.closed(1, "a1", 3000), [segment("a1", w0, at)]);
        // Ended there: the new one writes from that keyframe on, anchored where the old ended.
        let at_ns = 40_000_000_000 + (at - since) as u64 * 1_000_000;
        assert_eq!(
            sim.t.ended(1, "the re-stream ended"),
            [
                dropped(1, &[]),
                Effect::Release {
                    run: 2,
                    at_ns: Some(at_ns)
                }
            ]
        );
        // However late the segment is reported open, and wherever its own clock puts it.
        sim.advance(1000);
        assert_eq!(sim.opened(2, "b1", 40_810), [opened("b1", at)]);
        sim.advance(1000);
        assert_eq!(sim.closed(2, "b1", 42_810), [segment("b1", at, at + 2000)]);
        assert_eq!(sim.t.take_notes().len(), 2, "recording, cut over");
    }

    #[test]
    fn an_old_re_stream_that_ends_without_a_keyframe_hands_over_all_the_new_one_holds() {
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        sim.t.keyframe(2, 0, sim.wall, sim.now);
        // Its worker died: it fails with its segment open.
        assert_eq!(
            sim.t.ended(1, "connection reset"),
            [
                dropped(1, &[("a1", w0)]),
                Effect::Release {
                    run: 2,
                    at_ns: None
                }
            ]
        );
        // One that never ends is dropped after `finish`.
        let mut sim = Sim::new();
        let w0 = sim.wall;
        sim.t.status(Some("rtsp://a/cam/1"), sim.now);
        sim.opened(1, "a1", 0);
        sim.t.status(Some("rtsp://b/cam/1"), sim.now);
        sim.t.keyframe(2, 0, sim.wall, sim.now);
        sim.advance(3001);
        assert_eq!(
            sim.t.check(sim.now),
            [
                dropped(1, &[("a1", w0)]),
                Effect::Release {
                    run: 2,
                    at_ns: None
                }
            ]
        );
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
                hold: true
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
}
