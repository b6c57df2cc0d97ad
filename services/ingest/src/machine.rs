//! `CameraCore`: the per-camera state machine of an ingest worker, without any I/O.
//!
//! It is driven by inputs — the camera's desired state, what the relay reports, the credentials
//! lookup finishing, the clock — each carrying the current time, and answers with
//! [`Effect`]s that the actor ([`crate::camera`]) carries out: read credentials, start, retarget
//! or stop the relay, report a state, publish health, wake it at a deadline. Nothing here
//! sleeps, reads a clock or touches GStreamer, so every transition is unit-tested on simulated
//! time below.
//!
//! ```text
//!            wanted                 credentials           first frame
//!   Idle ───────────▶ Fetching ─────────────────▶ Connecting ─────────▶ Live
//!    ▲                   ▲                          │  (opened, silent)    │ no frame for
//!    │ not wanted        │ backoff elapsed          ▼  (connect timeout)   │ stall_timeout
//!    └───────────── (any) ◀──────────────── Waiting ◀─────────────────────┘ (failure, EOS)
//! ```
//!
//! A session the camera opened (RTSP PLAY answered) but on which not one frame arrives within
//! `first_frame_timeout_ms` is *silent*: the first silent session after a good one is retried
//! at once, because a fresh session to the same camera usually works, and a camera that just
//! moved to this worker is then live again within that timeout instead of the whole connect
//! timeout plus a backoff.
//!
//! *Pushed cameras* (`spec.push`) are not pulled: their relay waits for a push session as long
//! as it takes, and the camera is `unreachable` ([`PUSH_WAITING`]) until one starts. When a push
//! ends, the next run waits for the next push at once (no backoff: the pusher decides when).
//! A camera on an edge site (`spec.edge_site`) is pushed by its site's agent only while it is
//! wanted, so it is taken on demand like a pulled camera (signal tells the agent to push it
//! while its status says it waits for a push).
//!
//! *Handing over.* When the camera moves to another worker on a planned move (a rebalance, a
//! graceful stop), a live camera is not stopped at once: its relay stops feeding Janus (the
//! new owner does) but keeps feeding the worker's re-stream until the new owner reports the
//! camera live and nobody pulls the old re-stream any more (the recorders have cut over to
//! the new one at a keyframe), or `handover_timeout_ms` passed. Meanwhile the core reports
//! nothing (the status is the new owner's) and ends with [`Effect::Finish`].

use crate::config::CameraSettings;
use crate::pipeline::{FailureKind, PipelineEvent};
use cloudcam_core::camera::CameraState;
use cloudcam_proto::v1::CameraSpec;
use std::time::{Duration, Instant};

/// Where the camera is in its life on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Owned but not pulled: nobody watches, it does not record, it is not always on.
    Idle,
    /// Reading the camera's credentials before a relay run.
    Fetching,
    /// The relay runs; no frame yet. `opened` is when the camera answered the session.
    Connecting {
        since: Instant,
        opened: Option<Instant>,
    },
    /// Frames arrive.
    Live,
    /// A run failed; the next one starts at `until`.
    Waiting { until: Instant },
}

/// What the actor must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Read the credentials, then call [`CameraCore::credentials`] with `run`.
    FetchCredentials { run: u64, reconnect: bool },
    /// Start relay run `run` (events of other runs are ignored).
    StartRelay { run: u64 },
    /// Point the running relay at the spec's new RTP targets, without restarting it.
    Retarget,
    /// Tear the relay down.
    StopRelay,
    /// The camera's state changed.
    Report { state: CameraState, reason: String },
    /// Publish the camera's health (fps, bitrate) now.
    Health,
    /// Store the unchanged status again before it expires (idle cameras).
    Refresh,
    /// Call [`CameraCore::check`] once this long has passed.
    WakeAfter(Duration),
    /// Tick (call [`CameraCore::check`]) this often from now on.
    TickEvery(Duration),
    /// The camera is no longer this worker's: end the actor.
    Finish,
}

/// How often a camera being handed over looks for its successor.
pub const HANDOVER_POLL: Duration = Duration::from_millis(100);

/// The per-camera state machine. See the module docs.
#[derive(Debug)]
pub struct CameraCore {
    settings: CameraSettings,
    spec: CameraSpec,
    phase: Phase,
    /// Incremented on every relay run (and on leaving one); older runs' inputs are ignored.
    run: u64,
    /// Failed runs since the camera was last live.
    attempt: u32,
    state: CameraState,
    reason: String,
    /// When health was last published (live) or the status last stored (idle).
    last_report: Instant,
    /// Since when the camera is being handed over to another worker.
    handover: Option<Instant>,
}

/// Whether the camera is to be pulled: someone watches it, it records, or it is always on. A
/// pushed camera is always taken: it is live whenever it pushes.
pub fn wanted(spec: &CameraSpec) -> bool {
    let pushed_directly = spec.push && spec.edge_site.is_empty();
    spec.live_demand > 0 || spec.recording || spec.always_on || pushed_directly
}

/// A pushed camera's status while nothing is pushed to it.
pub const PUSH_WAITING: &str =
    "nothing is pushed to the camera: waiting for its encoder or edge agent to push";

/// Whether going from `old` to `new` needs a new session with the camera.
fn source_changed(old: &CameraSpec, new: &CameraSpec) -> bool {
    old.source_url != new.source_url
        || old.credentials_ref != new.credentials_ref
        || old.source_generation != new.source_generation
}

impl CameraCore {
    pub fn new(spec: CameraSpec, settings: CameraSettings, now: Instant) -> Self {
        Self {
            settings,
            spec,
            phase: Phase::Idle,
            run: 0,
            attempt: 0,
            state: CameraState::Unknown,
            reason: String::new(),
            last_report: now,
            handover: None,
        }
    }

    pub fn spec(&self) -> &CameraSpec {
        &self.spec
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn state(&self) -> CameraState {
        self.state
    }

    /// Failed runs since the camera was last live.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the camera is being handed over to another worker (its relay then feeds only
    /// the re-stream).
    pub fn handing_over(&self) -> bool {
        self.handover.is_some()
    }

    /// The camera moved to another worker on a planned move. A live camera keeps its relay
    /// (re-stream only) until [`Self::successor`] says the new owner took over; anything else
    /// ends at once.
    pub fn hand_over(&mut self, now: Instant) -> Vec<Effect> {
        if self.handover.is_some() {
            return Vec::new();
        }
        if self.phase != Phase::Live || self.settings.handover_timeout().is_zero() {
            return self.finish();
        }
        self.handover = Some(now);
        vec![
            Effect::Retarget,
            Effect::TickEvery(HANDOVER_POLL),
            Effect::WakeAfter(self.settings.handover_timeout()),
        ]
    }

    /// The camera came back to this worker while it was being handed over: serve it again
    /// with the running relay (Janus fed again, the status this worker's). `None`: nothing to
    /// take back (no relay any more).
    pub fn take_back(&mut self, now: Instant) -> Option<Vec<Effect>> {
        self.handover?;
        if self.phase != Phase::Live || !self.relay_running() {
            return None;
        }
        self.handover = None;
        self.last_report = now;
        // Stored again even though unchanged: the status says which worker serves it.
        Some(vec![
            Effect::Retarget,
            Effect::TickEvery(Duration::from_secs(1)),
            Effect::Report {
                state: self.state,
                reason: self.reason.clone(),
            },
        ])
    }

    /// While handing over: whether the new owner reports the camera live, and whether anybody
    /// still pulls this worker's re-stream of it.
    pub fn successor(&mut self, taken_over: bool, restream_in_use: bool) -> Vec<Effect> {
        if self.handover.is_some() && taken_over && !restream_in_use {
            return self.finish();
        }
        Vec::new()
    }

    fn finish(&mut self) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.relay_running() {
            out.push(Effect::StopRelay);
        }
        self.run += 1;
        self.phase = Phase::Idle;
        out.push(Effect::Finish);
        out
    }

    /// Whether an input tagged with relay run `run` is current.
    pub fn is_current(&self, run: u64) -> bool {
        run == self.run
    }

    /// The actor started: pull the camera if it is wanted.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if wanted(&self.spec) {
            self.connect(false, &mut out);
        } else {
            self.idle(now, &mut out);
        }
        out
    }

    /// A new desired state arrived.
    pub fn update_spec(&mut self, spec: CameraSpec, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.handover.is_some() {
            // The camera is another worker's now; its desired state is theirs to act on.
            self.spec = spec;
            return out;
        }
        let restart = source_changed(&self.spec, &spec);
        // Viewers coming or going change where the live audio goes (it is transcoded only
        // while someone watches).
        let retarget = self.spec.rtp_targets != spec.rtp_targets
            || (self.spec.live_demand > 0) != (spec.live_demand > 0);
        let (was, is) = (wanted(&self.spec), wanted(&spec));
        self.spec = spec;
        match (was, is) {
            (_, false) if self.phase != Phase::Idle => self.idle(now, &mut out),
            (_, false) => {}
            (false, true) => self.connect(false, &mut out),
            (true, true) if restart => {
                self.attempt = 0;
                self.connect(false, &mut out);
            }
            (true, true) if retarget && self.relay_running() => out.push(Effect::Retarget),
            (true, true) => {}
        }
        out
    }

    /// The credentials lookup of run `run` finished (`Err` names why it failed).
    pub fn credentials(
        &mut self,
        run: u64,
        result: Result<(), String>,
        now: Instant,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if run != self.run || self.phase != Phase::Fetching {
            return out;
        }
        match result {
            Ok(()) => {
                self.phase = Phase::Connecting {
                    since: now,
                    opened: None,
                };
                out.push(Effect::StartRelay { run });
                out.push(Effect::WakeAfter(self.connect_timeout()));
            }
            Err(e) => self.fail(
                CameraState::Error,
                format!("cannot read the camera's credentials: {e}"),
                false,
                now,
                &mut out,
            ),
        }
        out
    }

    /// The relay of run `run` reported `event`.
    pub fn relayed(&mut self, run: u64, event: &PipelineEvent, now: Instant) -> Vec<Effect> {
        let mut out = Vec::new();
        if run != self.run || !self.relay_running() {
            return out;
        }
        if self.handover.is_some() {
            // A relay that ends while handing over is not restarted here: it is not ours.
            return match event {
                PipelineEvent::Failed { .. } | PipelineEvent::Eos => self.finish(),
                _ => out,
            };
        }
        match event {
            PipelineEvent::Opened => {
                if let Phase::Connecting {
                    since,
                    opened: None,
                } = self.phase
                {
                    self.phase = Phase::Connecting {
                        since,
                        opened: Some(now),
                    };
                    out.push(Effect::WakeAfter(self.first_frame_timeout()));
                }
            }
            PipelineEvent::FirstFrame => {
                if matches!(self.phase, Phase::Connecting { .. }) {
                    self.phase = Phase::Live;
                    self.attempt = 0;
                    self.last_report = now;
                    self.report(CameraState::Live, "receiving video", &mut out);
                }
            }
            PipelineEvent::Video { .. }
            | PipelineEvent::Audio { .. }
            | PipelineEvent::Forwarding { .. } => {}
            PipelineEvent::Unsupported { reason } => {
                self.fail(
                    CameraState::UnsupportedCodec,
                    reason.clone(),
                    false,
                    now,
                    &mut out,
                );
            }
            PipelineEvent::Failed { kind, reason } => {
                let state = match kind {
                    FailureKind::AuthFailed => CameraState::AuthFailed,
                    FailureKind::Unreachable => CameraState::Unreachable,
                    FailureKind::Other => CameraState::Error,
                };
                self.fail(state, reason.clone(), false, now, &mut out);
            }
            PipelineEvent::Eos => self.fail(
                CameraState::Unreachable,
                if self.spec.push {
                    "the push ended".into()
                } else {
                    "the camera ended the stream".into()
                },
                false,
                now,
                &mut out,
            ),
        }
        out
    }

    /// The clock: deadlines (connect, first frame, stall, backoff), health and idle refresh.
    /// `last_frame_age` is how long ago the relay saw its last frame (`None`: no frame yet).
    pub fn check(&mut self, now: Instant, last_frame_age: Option<Duration>) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(since) = self.handover {
            if now.duration_since(since) >= self.settings.handover_timeout() {
                return self.finish();
            }
            return out;
        }
        match self.phase {
            Phase::Idle => {
                if now.duration_since(self.last_report) >= self.settings.idle_refresh() {
                    self.last_report = now;
                    out.push(Effect::Refresh);
                }
            }
            Phase::Fetching => {}
            Phase::Waiting { until } => {
                if now >= until {
                    self.connect(true, &mut out);
                }
            }
            Phase::Connecting { opened, since } => {
                let first_frame = self.first_frame_timeout();
                if opened.is_some_and(|o| now.duration_since(o) >= first_frame) {
                    let reason = format!(
                        "the camera answered but sent no video within {} ms; reconnecting",
                        first_frame.as_millis()
                    );
                    self.fail(CameraState::Stalled, reason, true, now, &mut out);
                } else if !self.spec.push && now.duration_since(since) >= self.connect_timeout() {
                    let reason = format!(
                        "no video from the camera within {} s of connecting",
                        self.settings.connect_timeout_ms / 1000
                    );
                    self.fail(CameraState::Stalled, reason, false, now, &mut out);
                }
            }
            Phase::Live => {
                let stall = Duration::from_millis(self.settings.stall_timeout_ms);
                match last_frame_age {
                    Some(age) if age > stall => {
                        let reason = format!(
                            "the camera sent no video for {} s; reconnecting",
                            age.as_secs()
                        );
                        self.fail(CameraState::Stalled, reason, false, now, &mut out);
                    }
                    _ => {
                        let every = Duration::from_millis(self.settings.health_interval_ms);
                        if now.duration_since(self.last_report) >= every {
                            self.last_report = now;
                            out.push(Effect::Health);
                        }
                    }
                }
            }
        }
        out
    }

    fn relay_running(&self) -> bool {
        matches!(self.phase, Phase::Connecting { .. } | Phase::Live)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.connect_timeout_ms)
    }

    fn first_frame_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.first_frame_timeout_ms)
    }

    fn report(&mut self, state: CameraState, reason: impl Into<String>, out: &mut Vec<Effect>) {
        let reason = reason.into();
        if self.state == state && self.reason == reason {
            return;
        }
        self.state = state;
        self.reason.clone_from(&reason);
        out.push(Effect::Report { state, reason });
    }

    /// Starts a new run: credentials first.
    fn connect(&mut self, reconnect: bool, out: &mut Vec<Effect>) {
        if self.relay_running() {
            out.push(Effect::StopRelay);
        }
        self.run += 1;
        self.phase = Phase::Fetching;
        out.push(Effect::TickEvery(Duration::from_secs(1)));
        if self.spec.push {
            self.report(CameraState::Unreachable, PUSH_WAITING, out);
        } else {
            self.report(CameraState::Connecting, "connecting to the camera", out);
        }
        out.push(Effect::FetchCredentials {
            run: self.run,
            reconnect,
        });
    }

    /// Stops pulling the camera but keeps owning it.
    fn idle(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.relay_running() {
            out.push(Effect::StopRelay);
        }
        self.run += 1;
        self.attempt = 0;
        self.phase = Phase::Idle;
        self.last_report = now;
        // Often enough that the status is refreshed (every `idle_refresh`) before it expires.
        out.push(Effect::TickEvery(self.settings.idle_refresh() / 2));
        self.report(
            CameraState::Idle,
            "not pulled: nobody is watching and it does not record; the first viewer starts it",
            out,
        );
    }

    /// Ends the run, reports why, and waits before the next one (at once for the first silent
    /// session after a good one).
    fn fail(
        &mut self,
        state: CameraState,
        reason: String,
        silent: bool,
        now: Instant,
        out: &mut Vec<Effect>,
    ) {
        if self.relay_running() {
            out.push(Effect::StopRelay);
        }
        self.run += 1;
        self.attempt += 1;
        self.report(state, reason, out);
        let pushed_away = self.spec.push && state == CameraState::Unreachable;
        let delay = if (silent && self.attempt == 1) || pushed_away {
            Duration::ZERO
        } else {
            self.settings.backoff(self.attempt)
        };
        self.phase = Phase::Waiting { until: now + delay };
        out.push(Effect::WakeAfter(delay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudcam_proto::v1::RtpTarget;

    fn spec(live_demand: u32) -> CameraSpec {
        CameraSpec {
            camera_id: "cam1".into(),
            source_url: "rtsp://camera/stream".into(),
            live_demand,
            rtp_targets: vec![RtpTarget {
                host: "127.0.0.1".into(),
                video_port: 5000,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// A core and a simulated clock.
    struct Sim {
        core: CameraCore,
        now: Instant,
    }

    impl Sim {
        fn new(spec: CameraSpec) -> Self {
            let now = Instant::now();
            Self {
                core: CameraCore::new(spec, CameraSettings::default(), now),
                now,
            }
        }
        fn advance(&mut self, ms: u64) {
            self.now += Duration::from_millis(ms);
        }
        fn run(&self) -> u64 {
            self.core.run
        }
        fn states(effects: &[Effect]) -> Vec<CameraState> {
            effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Report { state, .. } => Some(*state),
                    _ => None,
                })
                .collect()
        }
        /// Starts the actor and gets the camera to `Connecting` with the relay started.
        fn connected(&mut self) {
            let out = self.core.start(self.now);
            assert!(out.contains(&Effect::FetchCredentials {
                run: 1,
                reconnect: false
            }));
            let out = self.core.credentials(1, Ok(()), self.now);
            assert!(out.contains(&Effect::StartRelay { run: 1 }));
        }
        fn event(&mut self, e: PipelineEvent) -> Vec<Effect> {
            let run = self.run();
            self.core.relayed(run, &e, self.now)
        }
        fn check(&mut self, age_ms: Option<u64>) -> Vec<Effect> {
            self.core.check(self.now, age_ms.map(Duration::from_millis))
        }
    }

    #[test]
    fn a_camera_on_an_edge_site_is_taken_only_while_wanted() {
        let mut edge = spec(0);
        edge.source_url.clear();
        edge.push = true;
        edge.edge_site = "site1".into();
        let mut sim = Sim::new(edge.clone());
        let out = sim.core.start(sim.now);
        assert_eq!(Sim::states(&out), [CameraState::Idle]);
        edge.live_demand = 1;
        edge.generation += 1;
        let out = sim.core.update_spec(edge, sim.now);
        assert!(out.contains(&Effect::Report {
            state: CameraState::Unreachable,
            reason: PUSH_WAITING.into()
        }));
    }

    #[test]
    fn a_pushed_camera_waits_for_its_push_as_long_as_it_takes_and_again_at_once_after_it() {
        let mut pushed = spec(0);
        pushed.source_url.clear();
        pushed.push = true;
        let mut sim = Sim::new(pushed);
        let out = sim.core.start(sim.now);
        // Taken with nobody watching; unreachable, saying why, until a push starts.
        assert_eq!(Sim::states(&out), [CameraState::Unreachable]);
        assert!(out.contains(&Effect::Report {
            state: CameraState::Unreachable,
            reason: PUSH_WAITING.into()
        }));
        let out = sim.core.credentials(1, Ok(()), sim.now);
        assert!(out.contains(&Effect::StartRelay { run: 1 }));
        // No connect timeout: an hour without a push is still the same run.
        sim.advance(3_600_000);
        assert!(Sim::states(&sim.check(None)).is_empty());
        assert!(sim.core.is_current(1));
        sim.event(PipelineEvent::Opened);
        let out = sim.event(PipelineEvent::FirstFrame);
        assert_eq!(Sim::states(&out), [CameraState::Live]);
        // The push ends: the next run waits for the next push, with no backoff.
        let out = sim.event(PipelineEvent::Eos);
        assert_eq!(Sim::states(&out), [CameraState::Unreachable]);
        assert!(out.contains(&Effect::WakeAfter(Duration::ZERO)));
        let out = sim.check(None);
        assert!(
            out.iter()
                .any(|e| matches!(e, Effect::FetchCredentials { .. }))
        );
        assert!(out.contains(&Effect::Report {
            state: CameraState::Unreachable,
            reason: PUSH_WAITING.into()
        }));
    }

    #[test]
    fn an_unwatched_camera_stays_idle_and_refreshes_its_status() {
        let mut sim = Sim::new(spec(0));
        let out = sim.core.start(sim.now);
        assert_eq!(Sim::states(&out), [CameraState::Idle]);
        assert!(
            !out.iter()
                .any(|e| matches!(e, Effect::FetchCredentials { .. }))
        );
        let refresh = CameraSettings::default().idle_refresh();
        sim.now += refresh - Duration::from_millis(1);
        assert!(sim.check(None).is_empty());
        sim.advance(1);
        assert_eq!(sim.check(None), [Effect::Refresh]);
    }

    #[test]
    fn a_viewer_starts_the_pull_and_leaving_stops_it() {
        let mut sim = Sim::new(spec(0));
        sim.core.start(sim.now);
        let out = sim.core.update_spec(spec(1), sim.now);
        assert_eq!(Sim::states(&out), [CameraState::Connecting]);
        sim.core.credentials(sim.run(), Ok(()), sim.now);
        let out = sim.event(PipelineEvent::FirstFrame);
        assert_eq!(Sim::states(&out), [CameraState::Live]);
        let out = sim.core.update_spec(spec(0), sim.now);
        assert_eq!(out[0], Effect::StopRelay);
        assert_eq!(Sim::states(&out), [CameraState::Idle]);
        assert_eq!(sim.core.phase(), Phase::Idle);
    }

    #[test]
    fn health_is_published_on_its_interval_and_a_stall_reconnects_with_backoff() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        sim.event(PipelineEvent::FirstFrame);
        sim.advance(1000);
        assert!(sim.check(Some(40)).is_empty());
        sim.advance(1000);
        assert_eq!(sim.check(Some(40)), [Effect::Health]);
        sim.advance(6000);
        let out = sim.check(Some(6000));
        assert_eq!(out[0], Effect::StopRelay);
        assert_eq!(Sim::states(&out), [CameraState::Stalled]);
        assert_eq!(out.last(), Some(&Effect::WakeAfter(Duration::from_secs(1))));
        // Not before the backoff has passed.
        sim.advance(999);
        assert!(sim.check(None).is_empty());
        sim.advance(1);
        let out = sim.check(None);
        assert!(out.contains(&Effect::FetchCredentials {
            run: sim.run(),
            reconnect: true
        }));
    }

    #[test]
    fn failures_back_off_exponentially_and_reset_once_live() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        let mut waits = Vec::new();
        for _ in 0..4 {
            let out = sim.event(PipelineEvent::Failed {
                kind: FailureKind::Unreachable,
                reason: "cannot reach the camera".into(),
            });
            let Some(Effect::WakeAfter(d)) = out.last() else {
                panic!("no wake: {out:?}")
            };
            waits.push(d.as_secs());
            sim.now += *d;
            sim.check(None);
            sim.core.credentials(sim.run(), Ok(()), sim.now);
        }
        assert_eq!(waits, [1, 2, 4, 8]);
        sim.event(PipelineEvent::FirstFrame);
        assert_eq!(sim.core.attempt(), 0);
    }

    #[test]
    fn a_silent_session_is_retried_at_once_then_with_backoff() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        let out = sim.event(PipelineEvent::Opened);
        assert_eq!(out, [Effect::WakeAfter(Duration::from_millis(1500))]);
        sim.advance(1499);
        assert!(sim.check(None).is_empty());
        sim.advance(1);
        let out = sim.check(None);
        assert_eq!(Sim::states(&out), [CameraState::Stalled]);
        assert_eq!(out.last(), Some(&Effect::WakeAfter(Duration::ZERO)));
        let out = sim.check(None);
        assert!(out.contains(&Effect::FetchCredentials {
            run: sim.run(),
            reconnect: true
        }));
        // The second silent session in a row waits.
        sim.core.credentials(sim.run(), Ok(()), sim.now);
        sim.event(PipelineEvent::Opened);
        sim.advance(1500);
        let out = sim.check(None);
        assert_eq!(out.last(), Some(&Effect::WakeAfter(Duration::from_secs(2))));
    }

    #[test]
    fn a_camera_that_never_answers_times_out() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        sim.advance(7999);
        assert!(sim.check(None).is_empty());
        sim.advance(1);
        let out = sim.check(None);
        let Some(Effect::Report { state, reason }) =
            out.iter().find(|e| matches!(e, Effect::Report { .. }))
        else {
            panic!("no report: {out:?}")
        };
        assert_eq!(*state, CameraState::Stalled);
        assert!(reason.contains("within 8 s"), "{reason}");
    }

    #[test]
    fn events_of_an_old_run_are_ignored() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        let old = sim.run();
        sim.core.update_spec(
            CameraSpec {
                source_generation: 2,
                ..spec(1)
            },
            sim.now,
        );
        assert!(
            sim.core
                .relayed(old, &PipelineEvent::FirstFrame, sim.now)
                .is_empty()
        );
        assert!(sim.core.credentials(old, Ok(()), sim.now).is_empty());
        assert_eq!(sim.core.phase(), Phase::Fetching);
    }

    #[test]
    fn new_rtp_targets_retarget_the_running_relay_and_a_new_source_restarts_it() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        sim.event(PipelineEvent::FirstFrame);
        let mut moved = spec(1);
        moved.rtp_targets[0].video_port = 6000;
        assert_eq!(
            sim.core.update_spec(moved.clone(), sim.now),
            [Effect::Retarget]
        );
        assert_eq!(sim.core.phase(), Phase::Live);
        let new_source = CameraSpec {
            source_url: "rtsp://camera/other".into(),
            ..moved
        };
        let out = sim.core.update_spec(new_source, sim.now);
        assert_eq!(out[0], Effect::StopRelay);
        assert_eq!(Sim::states(&out), [CameraState::Connecting]);
    }

    #[test]
    fn credentials_that_cannot_be_read_are_an_error_retried_later() {
        let mut sim = Sim::new(spec(1));
        sim.core.start(sim.now);
        let out = sim
            .core
            .credentials(1, Err("Redis is away".into()), sim.now);
        assert_eq!(Sim::states(&out), [CameraState::Error]);
        assert!(!out.contains(&Effect::StopRelay));
        assert_eq!(out.last(), Some(&Effect::WakeAfter(Duration::from_secs(1))));
    }

    fn live() -> Sim {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        sim.event(PipelineEvent::FirstFrame);
        assert_eq!(sim.core.phase(), Phase::Live);
        sim
    }

    #[test]
    fn a_live_camera_is_handed_over_once_the_successor_took_it() {
        let mut sim = live();
        let out = sim.core.hand_over(sim.now);
        assert_eq!(
            out[0],
            Effect::Retarget,
            "stop feeding Janus, keep the re-stream"
        );
        assert!(sim.core.handing_over());
        // Nothing is reported or restarted while handing over: the status is the new owner's.
        sim.advance(3000);
        assert!(sim.check(Some(2900)).is_empty());
        assert!(sim.core.update_spec(spec(0), sim.now).is_empty());
        // Live elsewhere, but a recorder still pulls the old re-stream: keep it.
        assert!(sim.core.successor(true, true).is_empty());
        assert!(sim.core.successor(false, false).is_empty());
        assert_eq!(
            sim.core.successor(true, false),
            [Effect::StopRelay, Effect::Finish]
        );
    }

    #[test]
    fn a_camera_given_back_during_its_handover_serves_on_with_its_relay() {
        let mut sim = live();
        sim.core.hand_over(sim.now);
        let out = sim.core.take_back(sim.now).expect("taken back");
        assert_eq!(
            out[..2],
            [Effect::Retarget, Effect::TickEvery(Duration::from_secs(1))]
        );
        assert!(matches!(
            out[2],
            Effect::Report {
                state: CameraState::Live,
                ..
            }
        ));
        assert!(!sim.core.handing_over());
        // No longer handing over: the handover's deadline passes without ending anything.
        sim.now += CameraSettings::default().handover_timeout();
        assert!(!sim.check(None).contains(&Effect::Finish));
        assert!(
            sim.core.take_back(sim.now).is_none(),
            "nothing to take back"
        );

        // Once the relay is gone, too late.
        let mut sim = live();
        sim.core.hand_over(sim.now);
        sim.event(PipelineEvent::Eos);
        assert!(sim.core.take_back(sim.now).is_none());
    }

    #[test]
    fn a_handover_ends_by_its_timeout_or_with_the_relay() {
        let mut sim = live();
        sim.core.hand_over(sim.now);
        sim.now += CameraSettings::default().handover_timeout();
        assert_eq!(sim.check(None), [Effect::StopRelay, Effect::Finish]);

        let mut sim = live();
        sim.core.hand_over(sim.now);
        let out = sim.event(PipelineEvent::Eos);
        assert_eq!(out, [Effect::StopRelay, Effect::Finish]);
    }

    #[test]
    fn a_camera_that_is_not_live_is_not_handed_over() {
        let mut sim = Sim::new(spec(1));
        sim.connected();
        assert_eq!(
            sim.core.hand_over(sim.now),
            [Effect::StopRelay, Effect::Finish]
        );
        let mut sim = Sim::new(spec(0));
        sim.core.start(sim.now);
        assert_eq!(sim.core.hand_over(sim.now), [Effect::Finish]);
        // Switched off: break before make.
        let mut sim = live();
        sim.core.settings.handover_timeout_ms = 0;
        assert_eq!(
            sim.core.hand_over(sim.now),
            [Effect::StopRelay, Effect::Finish]
        );
    }
}
