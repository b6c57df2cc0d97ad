//! `cloudcam-edge`: the agent for a site whose cameras the cloud cannot reach (behind NAT, no
//! inbound port, no VPN). It only ever dials out:
//!
//! 1. **Enrollment**, once per site: the one-time token the cloud showed when the site was
//!    added is traded for the site's agent credential (`POST /api/v1/edge/enroll`), which is
//!    kept in the state file (mode 0600) from then on.
//! 2. **One connection to signal** (`/api/v1/edge/ws`, WebSocket over TLS where the server is
//!    `https://`), authenticated with that credential, kept open and re-opened with backoff.
//!    Signal sends the set of the site's cameras to push now and where (each to its owning
//!    ingest worker's push mount, with the camera's push credential); the agent pushes exactly
//!    those ([`push::Pusher`]: pulled locally, pushed unmodified over RTSP RECORD) and stops the
//!    others, and reports what it does and its uplink use.
//!
//! A camera's URL comes from the cloud (without credentials) unless the agent's configuration
//! gives one (`[cameras.<id>] url`), which is how a camera's password stays on the site. Both
//! sides ping every second; after [`SILENCE_LIMIT`] without a word the connection is dead.
//! Pushes go on while signal is away (the ingest workers do not need it); a push whose uplink
//! does not drain (more than [`UPLINK_STALL`] queued) is restarted, and a new push takes the
//! camera over at the ingest worker from a half-open one.

pub mod push;

use anyhow::Context as _;
use cloudcam_core::edge::{
    AgentMessage, HubMessage, PING_EVERY, PushCommand, PushReport, SILENCE_LIMIT,
};
use futures::{SinkExt, StreamExt};
use push::{PushEvent, Pusher};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

/// A push whose data waits this long in the agent (the uplink does not take it) is restarted.
pub const UPLINK_STALL: Duration = Duration::from_secs(2);
/// How often the agent reports to signal.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// The longest wait before reconnecting, or before retrying a failed push.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The agent's configuration (`edge.toml`, environment `CLOUDCAM_EDGE_*`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// The cloud's public URL (`https://cloudcam.example.com`): where enrollment and the
    /// agent's connection go. Taken from the state file once enrolled, if not given.
    pub server: String,
    /// Where the agent keeps its site credential.
    pub state_file: PathBuf,
    /// A one-time enrollment token (used only while the state file has no credential).
    pub enroll_token: String,
    /// Per camera id: the URL to pull it from, overriding the cloud's (credentials allowed:
    /// they never leave the site).
    pub cameras: HashMap<String, CameraConfig>,
    /// A PEM file of certificate authorities trusted (besides the system's) for `rtsps://`
    /// pushes: the CA of the ingest workers' push certificate when it is a private one.
    pub push_ca: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            server: String::new(),
            state_file: PathBuf::from("cloudcam-edge.json"),
            enroll_token: String::new(),
            cameras: HashMap::new(),
            push_ca: String::new(),
        }
    }
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeConfig")
            .field("server", &self.server)
            .field("state_file", &self.state_file)
            .field("cameras", &self.cameras.keys().collect::<Vec<_>>())
            .field("push_ca", &self.push_ca)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub url: String,
}

impl cloudcam_core::config::Validate for EdgeConfig {
    fn validate(&self) -> Result<(), String> {
        if !self.server.is_empty() && url::Url::parse(&self.server).is_err() {
            return Err(format!("server {:?} is not a URL", self.server));
        }
        if !self.push_ca.is_empty() {
            push::trust(&self.push_ca).map_err(|e| format!("push_ca {:?}: {e}", self.push_ca))?;
        }
        for (id, cam) in &self.cameras {
            let scheme = url::Url::parse(&cam.url).map(|u| u.scheme().to_string());
            if !matches!(scheme.as_deref(), Ok("rtsp" | "rtsps")) {
                return Err(format!(
                    "cameras.{id}.url must be an rtsp:// or rtsps:// URL"
                ));
            }
        }
        Ok(())
    }
}

/// What the agent keeps after enrolling.
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub server: String,
    pub site_id: String,
    pub site_name: String,
    pub credential: String,
}

impl Enrollment {
    pub fn load(path: &Path) -> anyhow::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(raw) => Ok(Some(serde_json::from_slice(&raw).with_context(|| {
                format!("the state file {} cannot be read", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes it where only this user can read it.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "the site's credential was refused (revoked, or replaced by a new enrollment): enroll \
         again with a new token"
    )]
    Revoked,
    #[error("enrollment failed: {0}")]
    Enrollment(String),
}

/// Trades the one-time `token` for the site's credential.
pub async fn enroll(server: &str, token: &str) -> anyhow::Result<Enrollment> {
    #[derive(Deserialize)]
    struct Enrolled {
        site_id: String,
        site_name: String,
        credential: String,
    }
    let url = format!("{}/api/v1/edge/enroll", server.trim_end_matches('/'));
    let res = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"token": token, "version": env!("CARGO_PKG_VERSION")}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    if !res.status().is_success() {
        let status = res.status();
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("").to_string();
        return Err(AgentError::Enrollment(format!("{status}: {message}")).into());
    }
    let e: Enrolled = res.json().await?;
    Ok(Enrollment {
        server: server.trim_end_matches('/').to_string(),
        site_id: e.site_id,
        site_name: e.site_name,
        credential: e.credential,
    })
}

/// The agent's credential from its state file, enrolling first when there is none.
pub async fn enrollment(cfg: &EdgeConfig) -> anyhow::Result<Enrollment> {
    if let Some(mut e) = Enrollment::load(&cfg.state_file)? {
        if !cfg.server.is_empty() {
            e.server = cfg.server.trim_end_matches('/').to_string();
        }
        return Ok(e);
    }
    if cfg.server.is_empty() || cfg.enroll_token.is_empty() {
        anyhow::bail!(
            "not enrolled yet: run with --server <cloud URL> --enroll-token <token> (the site's \
             page in the cloud shows the command)"
        );
    }
    let e = enroll(&cfg.server, &cfg.enroll_token).await?;
    e.save(&cfg.state_file)?;
    tracing::info!(site = %e.site_id, name = %e.site_name, state_file = %cfg.state_file.display(), "enrolled");
    Ok(e)
}

/// A camera the agent is asked to push.
struct Camera {
    command: PushCommand,
    pusher: Option<Pusher>,
    /// Which start of the agent's pushes `pusher` is (events of earlier ones are stale).
    run: u64,
    /// The push to the camera's previous ingest worker, kept until the new one flows (make
    /// before break: the old worker's re-stream, which recorders read, goes on meanwhile),
    /// and when to end it at the latest.
    previous: Option<(Pusher, Instant)>,
    /// Why its last push ended, and when to try again.
    failed: Option<(String, Instant)>,
    attempts: u32,
    started: Instant,
}

/// A push's event: its camera, which start of the agent's pushes it is, what happened.
type Event = (String, u64, PushEvent);

/// A push to a camera's previous worker is kept until the new push has sent this many
/// keyframes after the one it started with, and [`OVERLAP`] more: a recorder that follows the
/// camera to the new worker's re-stream (it reads the status every 250 ms, then connects)
/// holds from the first keyframe it gets there, and the old re-stream must go on until its own
/// next keyframe after that one, up to three GOPs after the new push started.
const OVERLAP_KEYFRAMES: u64 = 3;
const OVERLAP: Duration = Duration::from_millis(500);
/// The longest a push to a camera's previous worker is kept waiting for the new one.
const OVERLAP_MAX: Duration = Duration::from_secs(10);

/// Everything the agent pushes.
struct Agent {
    cfg: EdgeConfig,
    cameras: HashMap<String, Camera>,
    events_tx: mpsc::UnboundedSender<Event>,
    runs: u64,
    last_bytes: u64,
    last_report: Instant,
}

impl Agent {
    fn source_url(&self, cmd: &PushCommand) -> String {
        self.cfg
            .cameras
            .get(&cmd.camera_id)
            .map_or_else(|| cmd.url.clone(), |c| c.url.clone())
    }

    fn start(&mut self, id: &str) {
        let Some(cam) = self.cameras.get(id) else {
            return;
        };
        let url = self.source_url(&cam.command);
        let tx = self.events_tx.clone();
        self.runs += 1;
        let run = self.runs;
        let events: push::EventSink = Arc::new(move |id: &str, e: PushEvent| {
            let _ = tx.send((id.to_string(), run, e));
        });
        let started = Pusher::start(cam.command.clone(), &url, &self.cfg.push_ca, events);
        let cam = self.cameras.get_mut(id).expect("looked up");
        cam.started = Instant::now();
        cam.run = run;
        match started {
            Ok(p) => {
                tracing::info!(camera = %id, push_url = %cam.command.push_url, "push starting");
                cam.pusher = Some(p);
                cam.failed = None;
            }
            Err(e) => self.failed(id, format!("cannot start: {e}")),
        }
    }

    /// Pushes exactly `wanted`: new cameras start, changed ones restart, others stop.
    fn apply(&mut self, wanted: Vec<PushCommand>) {
        let ids: std::collections::HashSet<String> =
            wanted.iter().map(|c| c.camera_id.clone()).collect();
        self.cameras.retain(|id, _| {
            let keep = ids.contains(id);
            if !keep {
                tracing::info!(camera = %id, "push stopped: not wanted");
            }
            keep
        });
        for cmd in wanted {
            let id = cmd.camera_id.clone();
            let old = self.cameras.remove(&id);
            if old.as_ref().is_some_and(|c| c.command == cmd) {
                self.cameras.insert(id, old.expect("checked"));
                continue;
            }
            // Only the worker changed: the push to the old one goes on until the new one flows.
            let previous = old.and_then(|c| {
                let moved = PushCommand {
                    push_url: cmd.push_url.clone(),
                    ..c.command.clone()
                } == cmd;
                c.pusher
                    .filter(|_| moved)
                    .map(|p| (p, Instant::now() + OVERLAP_MAX))
            });
            self.cameras.insert(
                id.clone(),
                Camera {
                    command: cmd,
                    pusher: None,
                    run: 0,
                    previous,
                    failed: None,
                    attempts: 0,
                    started: Instant::now(),
                },
            );
            self.start(&id);
        }
    }

    fn failed(&mut self, id: &str, why: String) {
        let Some(cam) = self.cameras.get_mut(id) else {
            return;
        };
        // A push that ran a while starts its backoff afresh.
        if cam.started.elapsed() > Duration::from_secs(10) {
            cam.attempts = 0;
        }
        cam.attempts += 1;
        let wait = (Duration::from_millis(500) * 2u32.pow(cam.attempts.min(4))).min(MAX_BACKOFF);
        tracing::warn!(camera = %id, error = %why, retry_in_ms = wait.as_millis() as u64, "push failed");
        cam.pusher = None;
        cam.failed = Some((why, Instant::now() + wait));
    }

    fn event(&mut self, (id, run, event): Event) {
        let Some(cam) = self.cameras.get_mut(&id) else {
            return;
        };
        if run != cam.run {
            return;
        }
        match event {
            PushEvent::Pushing => tracing::info!(camera = %id, "pushing"),
            PushEvent::Failed(why) => self.failed(&id, why),
        }
    }

    /// Retries failed pushes that waited long enough; restarts pushes whose uplink stalls.
    fn tend(&mut self) {
        let now = Instant::now();
        for (id, cam) in &mut self.cameras {
            if let (Some((_, until)), Some(new)) = (cam.previous.as_mut(), cam.pusher.as_ref())
                && new.keyframes() >= OVERLAP_KEYFRAMES
            {
                *until = (*until).min(now + OVERLAP);
            }
            if cam
                .previous
                .as_ref()
                .is_some_and(|(_, until)| *until <= now)
            {
                tracing::info!(camera = %id, "push to the previous ingest worker ended");
                cam.previous = None;
            }
        }
        let due: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, c)| c.failed.as_ref().is_some_and(|(_, at)| *at <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.start(&id);
        }
        let stalled: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, c)| c.pusher.as_ref().is_some_and(|p| p.queued() > UPLINK_STALL))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stalled {
            self.failed(&id, "the uplink does not take the push".into());
        }
    }

    fn report(&mut self) -> AgentMessage {
        let bytes: u64 = self
            .cameras
            .values()
            .filter_map(|c| c.pusher.as_ref())
            .map(Pusher::bytes)
            .sum::<u64>();
        let elapsed = self.last_report.elapsed().as_secs_f64().max(0.001);
        // Pushers restart with a fresh count; a drop is not negative traffic.
        let bps = (bytes.saturating_sub(self.last_bytes) as f64 * 8.0 / elapsed) as u64;
        self.last_bytes = bytes;
        self.last_report = Instant::now();
        let mut cameras: Vec<PushReport> = self
            .cameras
            .iter()
            .map(|(id, c)| {
                let (state, error) = match (&c.pusher, &c.failed) {
                    (_, Some((why, _))) => ("failed", why.clone()),
                    (Some(p), _) if p.bytes() > 0 => ("pushing", String::new()),
                    _ => ("connecting", String::new()),
                };
                PushReport {
                    camera_id: id.clone(),
                    state: state.into(),
                    error,
                }
            })
            .collect();
        cameras.sort_by(|a, b| a.camera_id.cmp(&b.camera_id));
        AgentMessage::Report {
            cameras,
            uplink_bps: bps,
        }
    }
}

/// How a connection to signal ended.
enum Ended {
    Lost(String),
    Revoked,
    Shutdown,
}

/// The agent's connection URL for `server` (`http` → `ws`, `https` → `wss`).
fn ws_url(server: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(server)?;
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    url.set_scheme(scheme)
        .map_err(|_| anyhow::anyhow!("server {server} cannot be a WebSocket URL"))?;
    url.set_path("/api/v1/edge/ws");
    Ok(url.to_string())
}

/// Runs the agent until `shutdown` resolves, or its credential is refused.
pub async fn run(
    cfg: EdgeConfig,
    enrollment: Enrollment,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut agent = Agent {
        cfg,
        cameras: HashMap::new(),
        events_tx,
        runs: 0,
        last_bytes: 0,
        last_report: Instant::now(),
    };
    let url = ws_url(&enrollment.server)?;
    tokio::pin!(shutdown);
    let mut attempt = 0u32;
    loop {
        let ended = tokio::select! {
            ended = session(&url, &enrollment, &mut agent, &mut events, &mut attempt) => ended,
            () = &mut shutdown => Ended::Shutdown,
        };
        match ended {
            Ended::Shutdown => break,
            Ended::Revoked => {
                agent.cameras.clear();
                return Err(AgentError::Revoked.into());
            }
            Ended::Lost(why) => {
                attempt += 1;
                let wait = (Duration::from_millis(250) * 2u32.pow(attempt.min(5))).min(MAX_BACKOFF);
                tracing::warn!(error = %why, retry_in_ms = wait.as_millis() as u64, "connection to the cloud lost");
                // Pushes go on meanwhile (the ingest workers do not need signal).
                let until = tokio::time::Instant::now() + wait;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => break,
                        Some(e) = events.recv() => agent.event(e),
                        () = tokio::time::sleep(Duration::from_millis(250)) => agent.tend(),
                        () = &mut shutdown => return Ok(()),
                    }
                }
            }
        }
    }
    agent.cameras.clear();
    Ok(())
}

/// One connection to signal, until it ends.
async fn session(
    url: &str,
    enrollment: &Enrollment,
    agent: &mut Agent,
    events: &mut mpsc::UnboundedReceiver<Event>,
    attempt: &mut u32,
) -> Ended {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return Ended::Lost(format!("bad URL: {e}")),
    };
    let bearer = format!("Bearer {}", enrollment.credential);
    match bearer.parse() {
        Ok(v) => {
            request.headers_mut().insert("authorization", v);
        }
        Err(_) => return Ended::Revoked,
    }
    let connected = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await;
    let ws = match connected {
        Err(_) => return Ended::Lost("connecting timed out".into()),
        Ok(Err(tungstenite::Error::Http(res))) if res.status() == 401 => return Ended::Revoked,
        Ok(Err(e)) => return Ended::Lost(format!("cannot connect: {e}")),
        Ok(Ok((ws, _))) => ws,
    };
    tracing::info!(site = %enrollment.site_id, "connected to the cloud");
    *attempt = 0;
    let (mut write, mut read) = ws.split();
    let send = |m: &AgentMessage| Message::text(serde_json::to_string(m).expect("serializable"));
    let hello = AgentMessage::Hello {
        version: env!("CARGO_PKG_VERSION").into(),
    };
    if write.send(send(&hello)).await.is_err() {
        return Ended::Lost("the connection closed at once".into());
    }
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut tend = tokio::time::interval(Duration::from_millis(250));
    loop {
        let out = tokio::select! {
            msg = read.next() => {
                last_heard = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<HubMessage>(&text) {
                        Ok(HubMessage::Push { cameras }) => {
                            agent.apply(cameras);
                            None
                        }
                        Ok(HubMessage::Welcome { site_id, site_name }) => {
                            tracing::info!(site = %site_id, name = %site_name, "the cloud says welcome");
                            None
                        }
                        Ok(HubMessage::Revoked) => return Ended::Revoked,
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable message from the cloud skipped");
                            None
                        }
                    },
                    Some(Ok(Message::Close(reason))) => {
                        let why = reason.map(|r| r.reason.to_string()).unwrap_or_default();
                        if why.contains("revoked") {
                            return Ended::Revoked;
                        }
                        return Ended::Lost(format!("the cloud closed the connection: {why}"));
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("the connection closed".into()),
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return Ended::Lost("the cloud is silent".into());
                }
                Some(Message::Ping(Vec::new().into()))
            }
            _ = report.tick() => Some(send(&agent.report())),
            _ = tend.tick() => {
                agent.tend();
                None
            }
            Some(e) = events.recv() => {
                agent.event(e);
                None
            }
        };
        if let Some(out) = out {
            // A write that cannot leave (the uplink is gone) is a dead connection too.
            match tokio::time::timeout(SILENCE_LIMIT, write.send(out)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Ended::Lost(e.to_string()),
                Err(_) => return Ended::Lost("the uplink does not take what is sent".into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_config_parses_and_camera_urls_are_checked() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/edge.toml");
        let cfg: EdgeConfig =
            cloudcam_core::config::load("edge-reference-test", Some(path.as_ref())).unwrap();
        assert_eq!(cfg.server, "https://cloudcam.example.com");
        assert!(!format!("{cfg:?}").contains("enroll_token"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge.toml");
        let text = std::fs::read_to_string(path).unwrap();
        std::fs::write(
            &file,
            text.replace("# [cameras", "[cameras")
                .replace("# url", "url"),
        )
        .unwrap();
        let cfg: EdgeConfig =
            cloudcam_core::config::load("edge-reference-test", Some(&file)).unwrap();
        assert!(cfg.cameras["c0ffee123456"].url.starts_with("rtsp://admin:"));
        std::fs::write(&file, "[cameras.c1]\nurl = \"http://x\"\n").unwrap();
        let err = cloudcam_core::config::load::<EdgeConfig>("edge-reference-test", Some(&file))
            .err()
            .unwrap();
        assert!(err.to_string().contains("cameras.c1.url"), "{err}");
    }

    #[test]
    fn the_connection_url_follows_the_server_scheme() {
        assert_eq!(
            ws_url("https://cloud.example.com/").unwrap(),
            "wss://cloud.example.com/api/v1/edge/ws"
        );
        assert_eq!(
            ws_url("http://10.0.0.1:8080").unwrap(),
            "ws://10.0.0.1:8080/api/v1/edge/ws"
        );
    }

    #[test]
    fn the_state_file_is_private_and_reads_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(Enrollment::load(&path).unwrap().is_none());
        let e = Enrollment {
            server: "http://cloud".into(),
            site_id: "s1".into(),
            site_name: "Shop".into(),
            credential: "s1.secret".into(),
        };
        e.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            Enrollment::load(&path).unwrap().unwrap().credential,
            "s1.secret"
        );
    }
}
