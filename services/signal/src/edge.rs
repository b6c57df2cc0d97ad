//! The edge agents' side of signal: enrollment (`POST /api/v1/edge/enroll`) and each agent's
//! one connection (`GET /api/v1/edge/ws`, a WebSocket authenticated by the site's agent
//! credential as `Authorization: Bearer`).
//!
//! While an agent is connected, its session (one actor, on whichever signal instance the agent
//! reached) looks at its site's cameras whenever the status of one of them changes (and once a
//! second besides) and tells the agent which to push and where
//! ([`cloudcam_core::edge::HubMessage::Push`]: the whole set, sent when it changes). A camera
//! is to be pushed while its owning ingest worker waits for or takes a push: its
//! status names a push URL and is not `idle` — the worker decides when a camera is wanted
//! (viewers, recording, always on), exactly as for a pulled camera, and a camera that moved to
//! another worker is pushed to the new one as soon as that one reports. The session keeps the
//! site's presence (`cloudcam:site-agent:<id>`) while the agent answers, which is what the API
//! reads to show the site's cameras `offline` when it does not. It closes when the agent's
//! credential is revoked, when the agent is silent for [`SILENCE_LIMIT`], or when a newer
//! connection of the same site replaces it. The agent is given only its own site's cameras.

use crate::app::AppState;
use crate::error::ApiError;
use crate::sites::AgentPresence;
use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use cloudcam_core::camera::CameraState;
use cloudcam_core::edge::{AgentMessage, HubMessage, PING_EVERY, PushCommand, SILENCE_LIMIT};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a session looks at what its site's cameras need (besides at once whenever the
/// status of one of them changes).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How often it refreshes the site's presence and checks its credential.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);

/// The cameras of `site`, and those to push now, with where to and the credentials, by
/// camera id.
pub async fn desired(
    app: &AppState,
    site: &str,
) -> Result<(Vec<String>, Vec<PushCommand>), ApiError> {
    let ids = app.cameras.sites.cameras(site).await?;
    let records = app.cameras.store.records(&ids).await?;
    let ids: Vec<String> = records.iter().map(|s| s.record.info.id.clone()).collect();
    let statuses = app.cameras.store.statuses(&ids).await?;
    let waiting: Vec<(
        crate::model::CameraInfo,
        cloudcam_core::camera::CameraStatus,
    )> = records
        .into_iter()
        .zip(statuses)
        .filter_map(|(stored, status)| Some((stored.record.info, status?)))
        .filter(|(info, status)| {
            info.site.as_deref() == Some(site)
                && !status.push_url.is_empty()
                && !matches!(status.state, CameraState::Idle | CameraState::Unknown)
        })
        .collect();
    let waiting_ids: Vec<String> = waiting.iter().map(|(info, _)| info.id.clone()).collect();
    let secrets = app.cameras.store.secrets(&waiting_ids).await?;
    let mut out = Vec::new();
    for ((info, status), secret) in waiting.into_iter().zip(secrets) {
        let Some(secret) = secret else { continue };
        out.push(PushCommand {
            camera_id: info.id,
            url: info.url,
            push_url: status.push_url,
            username: secret.username,
            password: secret.password,
        });
    }
    out.sort_by(|a, b| a.camera_id.cmp(&b.camera_id));
    Ok((ids, out))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

/// `POST /api/v1/edge/enroll`: an agent trades its one-time token for its credential.
pub async fn enroll(
    app: web::Data<AppState>,
    crate::error::Body(body): crate::error::Body<crate::sites::EnrollRequest>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(app.cameras.sites.enroll(body).await?))
}

/// `GET /api/v1/edge/ws`: an enrolled agent's connection.
pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    app: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let credential = bearer(&req).ok_or(ApiError::Unauthorized)?;
    let Some(site) = app.cameras.sites.authenticate(&credential).await? else {
        tracing::warn!("an edge agent with an unknown or revoked credential was refused");
        return Err(ApiError::Unauthorized.into());
    };
    let address = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    tracing::info!(site = %site.id, %address, "edge agent connected");
    let now = cloudcam_core::now_ms();
    let session = AgentSession {
        app: app.into_inner(),
        site_id: site.id,
        site_name: site.name,
        credential,
        presence: AgentPresence {
            version: String::new(),
            address,
            connected_ms: now,
            updated_ms: now,
            pushing: Vec::new(),
            failing: Default::default(),
            uplink_bps: 0,
            session: cloudcam_core::random_hex(8),
        },
        sent: None,
        looking: false,
        look_again: false,
        cameras: Default::default(),
        last_heard: Instant::now(),
        alive: Arc::new(std::sync::atomic::AtomicBool::new(true)),
    };
    ws::start(session, &req, stream)
}

pub struct AgentSession {
    app: Arc<AppState>,
    site_id: String,
    site_name: String,
    credential: String,
    presence: AgentPresence,
    /// The last desired set sent.
    sent: Option<Vec<PushCommand>>,
    /// A look at the site's cameras is under way, and whether another is due after it.
    looking: bool,
    look_again: bool,
    /// The site's cameras as of the last look (a status change of one makes a look at once).
    cameras: std::collections::HashSet<String>,
    last_heard: Instant,
    /// Cleared when the session stops: a presence refresh still under way then takes back
    /// what it wrote.
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// What a look at the site found: its cameras, and what to push.
#[derive(Message)]
#[rtype(result = "()")]
struct Looked(Option<(Vec<String>, Vec<PushCommand>)>);

/// The site's credential or presence as the shared state has it now.
#[derive(Message)]
#[rtype(result = "()")]
enum Checked {
    Revoked,
    Replaced,
}

impl AgentSession {
    fn send(ctx: &mut ws::WebsocketContext<Self>, msg: &HubMessage) {
        ctx.text(serde_json::to_string(msg).expect("serializable"));
    }

    fn look(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.looking {
            self.look_again = true;
            return;
        }
        self.looking = true;
        let (app, site, addr) = (self.app.clone(), self.site_id.clone(), ctx.address());
        actix::spawn(async move {
            let found = match desired(&app, &site).await {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::debug!(site = %site, error = %e, "cannot look at the site's cameras");
                    None
                }
            };
            addr.do_send(Looked(found));
        });
    }

    /// Refreshes the presence, and checks the credential still holds and no newer
    /// connection of the site replaced this one.
    fn refresh(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.presence.updated_ms = cloudcam_core::now_ms();
        let (app, site, addr) = (self.app.clone(), self.site_id.clone(), ctx.address());
        let (credential, presence) = (self.credential.clone(), self.presence.clone());
        let alive = self.alive.clone();
        actix::spawn(async move {
            let sites = &app.cameras.sites;
            match sites.authenticate(&credential).await {
                Ok(None) => return addr.do_send(Checked::Revoked),
                Ok(Some(_)) => {}
                Err(_) => return,
            }
            match sites.presence(&site).await {
                Ok(Some(p))
                    if p.session != presence.session && p.connected_ms > presence.connected_ms =>
                {
                    return addr.do_send(Checked::Replaced);
                }
                Ok(_) => {}
                Err(_) => return,
            }
            if let Err(e) = sites.set_presence(&site, &presence).await {
                tracing::debug!(site = %site, error = %e, "cannot refresh the agent's presence");
            }
            // The session stopped meanwhile (and cleared the presence before this wrote it).
            if !alive.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sites.clear_presence(&site, &presence.session).await;
            }
        });
    }

    fn agent_message(&mut self, msg: AgentMessage) {
        match msg {
            AgentMessage::Hello { version } => {
                tracing::info!(site = %self.site_id, %version, "edge agent says hello");
                self.presence.version = version.chars().take(64).collect();
            }
            AgentMessage::Report {
                cameras,
                uplink_bps,
            } => {
                // Only the site's own cameras, and a bounded amount of text.
                let own: std::collections::HashSet<&str> = self
                    .sent
                    .iter()
                    .flatten()
                    .map(|c| c.camera_id.as_str())
                    .collect();
                self.presence.pushing = cameras
                    .iter()
                    .filter(|c| c.state == "pushing" && own.contains(c.camera_id.as_str()))
                    .map(|c| c.camera_id.clone())
                    .collect();
                self.presence.failing = cameras
                    .iter()
                    .filter(|c| c.state == "failed" && own.contains(c.camera_id.as_str()))
                    .map(|c| (c.camera_id.clone(), c.error.chars().take(200).collect()))
                    .collect();
                self.presence.uplink_bps = uplink_bps;
            }
        }
    }
}

impl Actor for AgentSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::EDGE_AGENTS.inc();
        Self::send(
            ctx,
            &HubMessage::Welcome {
                site_id: self.site_id.clone(),
                site_name: self.site_name.clone(),
            },
        );
        self.refresh(ctx);
        self.look(ctx);
        // A status change of one of the site's cameras (its worker now waits for a push, say)
        // is looked at at once, not at the next look.
        ctx.add_stream(tokio_stream::wrappers::BroadcastStream::new(
            self.app.statuses.subscribe(),
        ));
        ctx.run_interval(LOOK_EVERY, |act, ctx| act.look(ctx));
        ctx.run_interval(PRESENCE_EVERY, |act, ctx| act.refresh(ctx));
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > SILENCE_LIMIT {
                tracing::warn!(site = %act.site_id, "edge agent silent: closing its connection");
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.alive.store(false, std::sync::atomic::Ordering::SeqCst);
        crate::metrics::EDGE_AGENTS.dec();
        tracing::info!(site = %self.site_id, "edge agent disconnected");
        let (app, site, session) = (
            self.app.clone(),
            self.site_id.clone(),
            self.presence.session.clone(),
        );
        actix::spawn(async move {
            let _ = app.cameras.sites.clear_presence(&site, &session).await;
        });
    }
}

impl Handler<Looked> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: Looked, ctx: &mut Self::Context) {
        self.looking = false;
        if std::mem::take(&mut self.look_again) {
            self.look(ctx);
        }
        let Some((cameras, desired)) = msg.0 else {
            return;
        };
        self.cameras = cameras.into_iter().collect();
        if self.sent.as_ref() != Some(&desired) {
            tracing::info!(
                site = %self.site_id,
                cameras = ?desired.iter().map(|c| c.camera_id.as_str()).collect::<Vec<_>>(),
                "edge agent told what to push"
            );
            Self::send(
                ctx,
                &HubMessage::Push {
                    cameras: desired.clone(),
                },
            );
            self.sent = Some(desired);
        }
    }
}

impl Handler<Checked> for AgentSession {
    type Result = ();

    fn handle(&mut self, msg: Checked, ctx: &mut Self::Context) {
        let why = match msg {
            Checked::Revoked => {
                Self::send(ctx, &HubMessage::Revoked);
                "its credential was revoked"
            }
            Checked::Replaced => "a newer connection of the site replaced it",
        };
        tracing::info!(site = %self.site_id, why, "closing the edge agent's connection");
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::Policy,
            description: Some(why.into()),
        }));
        ctx.stop();
    }
}

impl
    StreamHandler<
        Result<
            (String, cloudcam_core::camera::CameraStatus),
            tokio_stream::wrappers::errors::BroadcastStreamRecvError,
        >,
    > for AgentSession
{
    fn handle(
        &mut self,
        item: Result<
            (String, cloudcam_core::camera::CameraStatus),
            tokio_stream::wrappers::errors::BroadcastStreamRecvError,
        >,
        ctx: &mut Self::Context,
    ) {
        if item.is_ok_and(|(id, _)| self.cameras.contains(&id)) {
            self.look(ctx);
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for AgentSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => match serde_json::from_str::<AgentMessage>(&text) {
                Ok(m) => self.agent_message(m),
                Err(e) => {
                    crate::metrics::EDGE_BAD_MESSAGES.inc();
                    tracing::warn!(site = %self.site_id, error = %e, "undecodable message from an edge agent skipped");
                }
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::info!(site = %self.site_id, error = %e, "edge agent protocol error");
                ctx.stop();
            }
        }
    }
}
