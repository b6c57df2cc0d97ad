//! The WebSocket session of a signed-in browser (actix-web-actors): frames and decodes
//! [`protocol`](crate::protocol) messages, runs one [`viewer`](crate::viewer) task per open
//! view, and relays camera status changes.
//!
//! Every message is authorized for the socket's user: `watch` needs the camera's `live` grant,
//! and only statuses of cameras the user may see are relayed. Twice a second the session checks
//! its token again (signed out, password changed, user disabled: the socket closes) and what
//! the user may still do (a view of a camera whose share ended is stopped).

use crate::app::AppState;
use crate::auth::{Authed, Caller, Credential};
use crate::error::ApiError;
use crate::model::{Grant, Need};
use crate::protocol::{ClientMessage, ServerMessage, Stream};
use crate::viewer::{self, Command};
use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use cloudcam_core::camera::{CameraStatus, substream_id};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

const PING_EVERY: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a session re-checks its token and its user's grants.
const RECHECK_EVERY: Duration = Duration::from_millis(500);
/// Commands (answer, candidates, stop) one view may have waiting.
const COMMAND_QUEUE: usize = 64;

/// Whether a browser's `Origin` is this service itself (cross-site pages may not open a socket
/// with a user's token). Clients that are not browsers send no `Origin`.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get("origin") else {
        return true;
    };
    let host = req.connection_info().host().to_string();
    origin
        .to_str()
        .ok()
        .and_then(|o| url::Url::parse(o).ok())
        .is_some_and(|u| {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            u.host_str()
                .is_some_and(|h| format!("{h}{port}").eq_ignore_ascii_case(&host))
        })
}

pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    app: web::Data<AppState>,
    authed: Authed,
) -> Result<HttpResponse, actix_web::Error> {
    if !same_origin(&req) {
        return Err(crate::error::ApiError::Forbidden(
            "WebSocket connections are accepted only from this service's own pages".into(),
        )
        .into());
    }
    let grants = app.cameras.grants(&authed.caller).await?;
    let session = WsSession {
        max_views: app.max_views_per_socket,
        app: app.into_inner(),
        caller: authed.caller,
        credential: authed.credential,
        grants,
        views: HashMap::new(),
        last_heard: Instant::now(),
    };
    ws::start(session, &req, stream)
}

/// An outgoing message produced off the actor (by a viewer task).
#[derive(Message)]
#[rtype(result = "()")]
struct Outgoing(ServerMessage);

/// The result of a re-check: the caller the token stands for now (`None`: it is void) and
/// their grants.
#[derive(Message)]
#[rtype(result = "()")]
struct Rechecked(Option<(Caller, Option<HashMap<String, Grant>>)>);

/// An open view: its camera and its viewer task's commands.
struct OpenView {
    camera_id: String,
    tx: mpsc::Sender<Command>,
}

pub struct WsSession {
    app: std::sync::Arc<AppState>,
    caller: Caller,
    credential: Credential,
    /// What the user may do per camera; `None` for an administrator (everything).
    grants: Option<HashMap<String, Grant>>,
    views: HashMap<String, OpenView>,
    max_views: usize,
    last_heard: Instant,
}

impl WsSession {
    fn send(ctx: &mut ws::WebsocketContext<Self>, msg: &ServerMessage) {
        ctx.text(serde_json::to_string(msg).expect("serializable"));
    }

    fn error(
        ctx: &mut ws::WebsocketContext<Self>,
        view_id: Option<String>,
        code: &str,
        message: String,
    ) {
        Self::send(
            ctx,
            &ServerMessage::Error {
                view_id,
                camera_id: None,
                code: code.into(),
                message,
            },
        );
    }

    fn handle_client(&mut self, msg: ClientMessage, ctx: &mut ws::WebsocketContext<Self>) {
        match msg {
            ClientMessage::Watch {
                camera_id,
                low_latency,
                stream,
                codecs,
            } => {
                let h265 = codecs.iter().any(|c| c.eq_ignore_ascii_case("h265"));
                self.watch(camera_id, low_latency, (stream, h265), ctx)
            }
            ClientMessage::Answer { view_id, sdp } => {
                self.command(&view_id, Command::Answer(sdp), ctx)
            }
            ClientMessage::Candidate { view_id, candidate } => {
                self.command(&view_id, Command::Candidate(candidate), ctx)
            }
            ClientMessage::Stop { view_id } => {
                if let Some(v) = self.views.remove(&view_id) {
                    let _ = v.tx.try_send(Command::Stop);
                }
            }
        }
    }

    fn may(&self, camera_id: &str, need: impl Fn(&Grant) -> bool) -> bool {
        self.grants
            .as_ref()
            .is_none_or(|g| g.get(camera_id).is_some_and(need))
    }

    /// Applies a re-check: closes the socket if its token is void, stops views the user may no
    /// longer watch.
    fn rechecked(&mut self, result: Rechecked, ctx: &mut ws::WebsocketContext<Self>) {
        let Some((caller, grants)) = result.0 else {
            tracing::info!(user = %self.caller.name, "token revoked: closing the websocket");
            ctx.close(Some(ws::CloseReason {
                code: ws::CloseCode::Policy,
                description: Some("signed out".into()),
            }));
            ctx.stop();
            return;
        };
        self.caller = caller;
        self.grants = grants;
        let ended: Vec<String> = self
            .views
            .iter()
            .filter(|(_, v)| !self.may(&v.camera_id, |g| g.live))
            .map(|(id, _)| id.clone())
            .collect();
        for view_id in ended {
            if let Some(v) = self.views.remove(&view_id) {
                let _ = v.tx.try_send(Command::Stop);
                tracing::info!(user = %self.caller.name, camera = %v.camera_id, "view ended: no longer shared");
                Self::send(
                    ctx,
                    &ServerMessage::ViewState {
                        view_id,
                        state: "ended".into(),
                        reason: "this camera is no longer shared with you".into(),
                    },
                );
            }
        }
    }

    fn command(&mut self, view_id: &str, cmd: Command, ctx: &mut ws::WebsocketContext<Self>) {
        match self.views.get(view_id) {
            Some(v) => {
                if v.tx.try_send(cmd).is_err() {
                    Self::error(
                        ctx,
                        Some(view_id.into()),
                        "view_busy",
                        format!("view {view_id} has too many commands waiting; slow down"),
                    );
                }
            }
            None => Self::error(
                ctx,
                Some(view_id.into()),
                "unknown_view",
                format!("no open view {view_id}"),
            ),
        }
    }

    fn watch(
        &mut self,
        camera_id: String,
        low_latency: Option<bool>,
        (stream, decodes_h265): (Option<Stream>, bool),
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if self.views.len() >= self.max_views {
            return Self::send(
                ctx,
                &ServerMessage::Error {
                    view_id: None,
                    camera_id: Some(camera_id),
                    code: "too_many_views".into(),
                    message: format!(
                        "at most {} views may be open on one connection; stop one first",
                        self.max_views
                    ),
                },
            );
        }
        let app = self.app.clone();
        let caller = self.caller.clone();
        let addr = ctx.address();
        let view_id = cloudcam_core::random_hex(8);
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        self.views.insert(
            view_id.clone(),
            OpenView {
                camera_id: camera_id.clone(),
                tx,
            },
        );
        tracing::info!(user = %self.caller.name, camera = %camera_id, view = %view_id, "view opened");
        actix::spawn(async move {
            // One read of the record, authorized as loaded; and the statuses, which say when
            // a stream is nothing a browser can play.
            let sub_id = substream_id(&camera_id);
            let (camera, status, sub_status) = tokio::join!(
                app.cameras.load(&camera_id),
                app.cameras.store.status(&camera_id),
                app.cameras.store.status(&sub_id),
            );
            let chosen = camera.and_then(|c| {
                c.stored.record.authorize(&caller, Need::Live)?;
                let has_sub = c.stored.record.info.sub_url.is_some();
                // The main stream plays here whatever its status says when the browser decodes
                // H.265 and the mountpoint takes it.
                let h265 = decodes_h265 && c.mountpoint.as_ref().is_some_and(|mp| mp.h265);
                let stream =
                    choose_stream(&camera_id, stream, (has_sub, h265), status?, sub_status?)?;
                c.mountpoint
                    .and_then(|mp| mp.stream(stream == Stream::Sub))
                    .map(|mp| (stream, mp))
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("camera {camera_id} has no mountpoint yet"))
                    })
            });
            let (stream, mountpoint) = match chosen {
                Ok(chosen) => chosen,
                Err(e) => {
                    addr.do_send(Outgoing(ServerMessage::Error {
                        view_id: Some(view_id),
                        camera_id: Some(camera_id),
                        code: e.code().into(),
                        message: e.client_message(),
                    }));
                    return;
                }
            };
            let _viewing = match app
                .demand
                .start_view(
                    if stream == Stream::Sub {
                        &sub_id
                    } else {
                        &camera_id
                    },
                    &view_id,
                    &caller.name,
                    &mountpoint,
                )
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    addr.do_send(Outgoing(ServerMessage::Error {
                        view_id: Some(view_id),
                        camera_id: Some(camera_id),
                        code: e.code().into(),
                        message: e.client_message(),
                    }));
                    return;
                }
            };
            let janus = app.pool().gateway(&mountpoint.gateway).janus.clone();
            let send_addr = addr.clone();
            let view = viewer::View {
                camera_id,
                stream,
                mountpoint,
                view_id,
                offer_timeout: app.offer_timeout,
                max_delay: low_latency
                    .unwrap_or(app.playout.low_latency)
                    .then(|| Duration::from_millis(app.playout.max_delay_ms.into())),
            };
            viewer::run(janus, view, rx, move |m| send_addr.do_send(Outgoing(m))).await;
        });
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::metrics::WEBSOCKETS.inc();
        Self::send(
            ctx,
            &ServerMessage::Hello {
                user: self.caller.name.clone(),
            },
        );
        ctx.add_stream(BroadcastStream::new(self.app.statuses.subscribe()));
        ctx.run_interval(RECHECK_EVERY, |act, ctx| {
            let (app, credential, addr) = (act.app.clone(), act.credential.clone(), ctx.address());
            actix::spawn(async move {
                let result = match app.sessions.verify(&credential).await {
                    Ok(Some(caller)) => match app.cameras.grants(&caller).await {
                        Ok(grants) => Rechecked(Some((caller, grants))),
                        // The shared state is away: keep what the session knows.
                        Err(_) => return,
                    },
                    Ok(None) => Rechecked(None),
                    Err(_) => return,
                };
                addr.do_send(result);
            });
        });
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                tracing::info!(user = %act.caller.name, "websocket timed out");
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        crate::metrics::WEBSOCKETS.dec();
        // Dropping the senders ends every viewer task, which destroys its Janus session.
        for (_, v) in self.views.drain() {
            let _ = v.tx.try_send(Command::Stop);
        }
    }
}

impl Handler<Rechecked> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Rechecked, ctx: &mut Self::Context) {
        self.rechecked(msg, ctx);
    }
}

impl Handler<Outgoing> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Outgoing, ctx: &mut Self::Context) {
        if let ServerMessage::ViewState { view_id, state, .. } = &msg.0
            && state == "ended"
        {
            self.views.remove(view_id);
        }
        if let ServerMessage::Error {
            view_id: Some(view_id),
            ..
        } = &msg.0
        {
            self.views.remove(view_id);
        }
        Self::send(ctx, &msg.0);
    }
}

impl StreamHandler<Result<(String, cloudcam_core::camera::CameraStatus), BroadcastStreamRecvError>>
    for WsSession
{
    fn handle(
        &mut self,
        item: Result<(String, cloudcam_core::camera::CameraStatus), BroadcastStreamRecvError>,
        ctx: &mut Self::Context,
    ) {
        if let Ok((id, status)) = item {
            let (camera_id, sub) = cloudcam_core::camera::camera_of(&id);
            if self.may(camera_id, |g| !g.is_empty()) {
                let stream = if sub { Stream::Sub } else { Stream::Main };
                Self::send(
                    ctx,
                    &ServerMessage::CameraStatus {
                        camera_id: camera_id.into(),
                        stream,
                        status,
                    },
                );
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {}
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => match serde_json::from_str::<ClientMessage>(&text) {
                Ok(m) => self.handle_client(m, ctx),
                Err(e) => Self::error(
                    ctx,
                    None,
                    "bad_message",
                    format!("cannot read message: {e}"),
                ),
            },
            Ok(ws::Message::Ping(p)) => ctx.pong(&p),
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Ok(ws::Message::Binary(_)) => Self::error(
                ctx,
                None,
                "bad_message",
                "binary messages are not supported".into(),
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::info!(error = %e, "websocket protocol error");
                ctx.stop();
            }
        }
    }
}

/// Which of a camera's streams a view gets: the one asked for (the main stream by default),
/// except that a main stream browsers cannot play (`live_unavailable`: H.265, say) gives way
/// to the substream where there is one — unless this browser plays it (`h265`: it decodes
/// H.265 and the main mountpoint takes it). A stream the browser cannot play is refused with
/// why.
fn choose_stream(
    camera_id: &str,
    asked: Option<Stream>,
    (has_sub, h265): (bool, bool),
    main: Option<CameraStatus>,
    sub: Option<CameraStatus>,
) -> Result<Stream, ApiError> {
    let main = main.filter(|s| !(h265 && s.codec == "H265"));
    let unplayable = |s: &Option<CameraStatus>| {
        s.as_ref()
            .map(|s| s.live_unavailable.clone())
            .filter(|r| !r.is_empty())
    };
    let stream = match asked.unwrap_or_default() {
        Stream::Sub if !has_sub => {
            return Err(ApiError::BadRequest(
                "no_substream",
                format!("camera {camera_id} has no substream"),
            ));
        }
        Stream::Main if has_sub && unplayable(&main).is_some() => Stream::Sub,
        asked => asked,
    };
    let status = if stream == Stream::Sub { &sub } else { &main };
    match unplayable(status) {
        Some(why) => Err(ApiError::LiveUnavailable(why)),
        None => Ok(stream),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(live_unavailable: &str) -> Option<CameraStatus> {
        Some(CameraStatus {
            live_unavailable: live_unavailable.into(),
            ..CameraStatus::unknown()
        })
    }

    #[test]
    fn a_view_gets_the_stream_asked_for_or_the_substream_in_place_of_h265() {
        let h265 = "the camera sends H.265 video";
        let pick = |asked, has_sub, main, sub| {
            choose_stream("c", asked, (has_sub, false), main, sub).map_err(|e| e.code())
        };
        assert_eq!(pick(None, true, status(""), None), Ok(Stream::Main));
        assert_eq!(pick(Some(Stream::Sub), true, None, None), Ok(Stream::Sub));
        assert_eq!(
            pick(Some(Stream::Sub), false, None, None),
            Err("no_substream")
        );
        // An H.265 main stream: the H.264 substream instead, whatever was asked.
        assert_eq!(pick(None, true, status(h265), status("")), Ok(Stream::Sub));
        assert_eq!(
            pick(Some(Stream::Main), true, status(h265), None),
            Ok(Stream::Sub)
        );
        // Nothing a browser can play.
        assert_eq!(
            pick(None, false, status(h265), None),
            Err("live_unavailable")
        );
        assert_eq!(
            pick(None, true, status(h265), status(h265)),
            Err("live_unavailable")
        );
        // A browser that decodes H.265, with a mountpoint that takes it: the main stream.
        let hevc = || {
            status(h265).map(|s| CameraStatus {
                codec: "H265".into(),
                ..s
            })
        };
        let decodes = |asked, has_sub| {
            choose_stream("c", asked, (has_sub, true), hevc(), status("")).map_err(|e| e.code())
        };
        assert_eq!(decodes(None, false), Ok(Stream::Main));
        assert_eq!(decodes(None, true), Ok(Stream::Main));
        assert_eq!(decodes(Some(Stream::Sub), true), Ok(Stream::Sub));
    }
}
