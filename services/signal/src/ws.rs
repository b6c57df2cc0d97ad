//! The WebSocket session of a signed-in browser (actix-web-actors): frames and decodes
//! [`protocol`](crate::protocol) messages, runs one [`viewer`](crate::viewer) task per open
//! view, and relays camera status changes.

use crate::app::AppState;
use crate::auth::Authed;
use crate::protocol::{ClientMessage, ServerMessage};
use crate::viewer::{self, Command};
use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

const PING_EVERY: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn connect(
    req: HttpRequest,
    stream: web::Payload,
    app: web::Data<AppState>,
    authed: Authed,
) -> Result<HttpResponse, actix_web::Error> {
    let session = WsSession {
        app: app.into_inner(),
        user: authed.session.user,
        views: HashMap::new(),
        last_heard: Instant::now(),
    };
    ws::start(session, &req, stream)
}

/// An outgoing message produced off the actor (by a viewer task).
#[derive(Message)]
#[rtype(result = "()")]
struct Outgoing(ServerMessage);

pub struct WsSession {
    app: std::sync::Arc<AppState>,
    user: String,
    views: HashMap<String, mpsc::UnboundedSender<Command>>,
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
                code: code.into(),
                message,
            },
        );
    }

    fn handle_client(&mut self, msg: ClientMessage, ctx: &mut ws::WebsocketContext<Self>) {
        match msg {
            ClientMessage::Watch { camera_id } => self.watch(camera_id, ctx),
            ClientMessage::Answer { view_id, sdp } => {
                self.command(&view_id, Command::Answer(sdp), ctx)
            }
            ClientMessage::Candidate { view_id, candidate } => {
                self.command(&view_id, Command::Candidate(candidate), ctx)
            }
            ClientMessage::Stop { view_id } => {
                if let Some(tx) = self.views.remove(&view_id) {
                    let _ = tx.send(Command::Stop);
                }
            }
        }
    }

    fn command(&mut self, view_id: &str, cmd: Command, ctx: &mut ws::WebsocketContext<Self>) {
        match self.views.get(view_id) {
            Some(tx) => {
                let _ = tx.send(cmd);
            }
            None => Self::error(
                ctx,
                Some(view_id.into()),
                "unknown_view",
                format!("no open view {view_id}"),
            ),
        }
    }

    fn watch(&mut self, camera_id: String, ctx: &mut ws::WebsocketContext<Self>) {
        let app = self.app.clone();
        let addr = ctx.address();
        let view_id = cloudcam_core::random_hex(8);
        let (tx, rx) = mpsc::unbounded_channel();
        self.views.insert(view_id.clone(), tx);
        tracing::info!(user = %self.user, camera = %camera_id, view = %view_id, "view opened");
        actix::spawn(async move {
            let mountpoint = match app.cameras.load(&camera_id).await {
                Ok(c) => c.mountpoint.ok_or_else(|| {
                    crate::error::ApiError::NotFound(format!(
                        "camera {camera_id} has no mountpoint yet"
                    ))
                }),
                Err(e) => Err(e),
            };
            let mountpoint = match mountpoint {
                Ok(mp) => mp,
                Err(e) => {
                    addr.do_send(Outgoing(ServerMessage::Error {
                        view_id: Some(view_id),
                        code: e.code().into(),
                        message: e.to_string(),
                    }));
                    return;
                }
            };
            let _viewing = app.demand.start_view(&camera_id, &view_id).await;
            let janus = app.pool().gateway(&mountpoint.gateway).janus.clone();
            let send_addr = addr.clone();
            let view = viewer::View {
                camera_id,
                mountpoint,
                view_id,
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
                user: self.user.clone(),
            },
        );
        ctx.add_stream(BroadcastStream::new(self.app.statuses.subscribe()));
        ctx.run_interval(PING_EVERY, |act, ctx| {
            if act.last_heard.elapsed() > CLIENT_TIMEOUT {
                tracing::info!(user = %act.user, "websocket timed out");
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        crate::metrics::WEBSOCKETS.dec();
        // Dropping the senders ends every viewer task, which destroys its Janus session.
        for (_, tx) in self.views.drain() {
            let _ = tx.send(Command::Stop);
        }
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
        if let Ok((camera_id, status)) = item {
            Self::send(ctx, &ServerMessage::CameraStatus { camera_id, status });
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
