//! One browser view of one camera: a Janus session on the camera's mountpoint, driven by
//! commands from the browser's WebSocket and reporting back through a callback.

use crate::error::ApiError;
use crate::janus::{Handle, Janus, Jsep, Reply};
use crate::model::Mountpoint;
use crate::protocol::{ServerMessage, Stream};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the browser asks of a running view.
#[derive(Debug)]
pub enum Command {
    Answer(String),
    Candidate(Option<Value>),
    Stop,
}

/// What a view watches.
pub struct View {
    pub camera_id: String,
    /// Which of its streams, and that stream's mountpoint.
    pub stream: Stream,
    pub mountpoint: Mountpoint,
    pub view_id: String,
    /// The view ends if its offer is not answered by then.
    pub offer_timeout: Duration,
    /// Low latency: the browser shows each frame once decoded (minimum playout delay 0) and
    /// smooths jitter by at most this much. `None` leaves the browser's own playout delay.
    pub max_delay: Option<Duration>,
}

/// Runs the view until the browser stops it, the command channel closes (WebSocket gone) or
/// Janus ends it; the Janus session is always destroyed on the way out.
pub async fn run(
    janus: Janus,
    view: View,
    mut commands: mpsc::Receiver<Command>,
    send: impl Fn(ServerMessage),
) {
    let View {
        camera_id,
        stream,
        mountpoint,
        view_id,
        offer_timeout,
        max_delay,
    } = view;
    let fail = |code: &str, message: String| {
        send(ServerMessage::Error {
            view_id: Some(view_id.clone()),
            camera_id: Some(camera_id.clone()),
            code: code.into(),
            message,
        })
    };
    let _counted = crate::metrics::ViewerGuard::new(&camera_id);
    let handle = match janus.open().await {
        Ok(h) => h,
        Err(e) => return fail("gateway_error", ApiError::from(e).client_message()),
    };
    let watch = json!({"request": "watch", "id": mountpoint.id, "pin": mountpoint.pin});
    if let Err(e) = handle.message(watch, None).await {
        let _ = handle.destroy().await;
        return fail("gateway_error", ApiError::from(e).client_message());
    }
    if let Some(max) = max_delay {
        // In the extension's 10 ms units.
        let configure =
            json!({"request": "configure", "min_delay": 0, "max_delay": max.as_millis() / 10});
        if let Err(e) = handle.message(configure, None).await {
            tracing::warn!(view = %view_id, error = %e, "janus refused the playout delay; the browser keeps its own");
        }
    }
    let ended = drive(
        &handle,
        (&camera_id, stream),
        &view_id,
        offer_timeout,
        &mut commands,
        &send,
    )
    .await;
    if let Err(e) = handle.message(json!({"request": "stop"}), None).await {
        tracing::debug!(view = %view_id, error = %e, "janus stop failed");
    }
    if let Err(e) = handle.destroy().await {
        tracing::debug!(view = %view_id, error = %e, "janus destroy failed");
    }
    send(ServerMessage::ViewState {
        view_id: view_id.clone(),
        state: "ended".into(),
        reason: ended,
    });
    tracing::info!(view = %view_id, camera = %camera_id, "view closed");
}

/// The view's event loop; returns why it ended.
async fn drive(
    handle: &Handle,
    (camera_id, stream): (&str, Stream),
    view_id: &str,
    offer_timeout: Duration,
    commands: &mut mpsc::Receiver<Command>,
    send: &impl Fn(ServerMessage),
) -> String {
    // Set when an offer goes out, cleared by the answer.
    let mut answer_by: Option<Instant> = None;
    let unanswered = |by: Option<Instant>| async move {
        match by {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    let state = |s: &str, reason: &str| {
        send(ServerMessage::ViewState {
            view_id: view_id.to_string(),
            state: s.into(),
            reason: reason.into(),
        })
    };
    let mut poll = Box::pin(handle.poll());
    loop {
        tokio::select! {
            cmd = commands.recv() => match cmd {
                None | Some(Command::Stop) => return "stopped by the viewer".into(),
                Some(Command::Answer(sdp)) => {
                    answer_by = None;
                    let jsep = Jsep { kind: "answer".into(), sdp };
                    if let Err(e) = handle.message(json!({"request": "start"}), Some(&jsep)).await {
                        return format!("gateway refused the answer: {e}");
                    }
                }
                Some(Command::Candidate(c)) => {
                    if let Err(e) = handle.trickle(c).await {
                        tracing::debug!(view = %view_id, error = %e, "trickle failed");
                    }
                }
            },
            () = unanswered(answer_by) => {
                return "the offer was not answered in time".into();
            }
            events = &mut poll => {
                let events = match events {
                    Ok(ev) => ev,
                    Err(e) => return format!("lost the gateway session: {e}"),
                };
                for ev in events {
                    match ev {
                        Reply::Event { jsep: Some(jsep), .. } if jsep.kind == "offer" => {
                            answer_by = Some(Instant::now() + offer_timeout);
                            send(ServerMessage::Offer {
                                view_id: view_id.to_string(),
                                camera_id: camera_id.to_string(),
                                stream,
                                sdp: jsep.sdp,
                            });
                        }
                        Reply::Event { plugindata: Some(pd), .. } => {
                            if let Some(err) = pd.data.get("error").and_then(Value::as_str) {
                                return format!("gateway: {err}");
                            }
                        }
                        Reply::Webrtcup => state("up", "WebRTC connected"),
                        Reply::Media { receiving: true } => state("receiving", "video flowing"),
                        Reply::Hangup { reason } => return format!("gateway hung up: {reason}"),
                        Reply::Detached => return "gateway detached the view".into(),
                        _ => {}
                    }
                }
                poll = Box::pin(handle.poll());
            }
        }
    }
}
