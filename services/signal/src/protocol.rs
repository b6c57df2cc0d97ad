//! The WebSocket protocol between the browser and signal (`/api/v1/ws`), one JSON object per
//! message, tagged by `type`. The browser never sees Janus: signal turns these messages into
//! Janus API calls on its behalf.

use cloudcam_core::camera::CameraStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Browser → signal.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Start watching a camera; answered by `offer` (or `error`). `low_latency` (default:
    /// the server's `playout.low_latency`) asks the browser to show frames as soon as they
    /// are decoded rather than smooth them out. `stream` (default `main`) picks the camera's
    /// main stream or its substream; a main stream browsers cannot play (H.265) is replaced
    /// by the substream where there is one, and the offer says which stream it is.
    /// `codecs` names the video codecs the browser decodes besides H.264 (`"h265"`, from
    /// `RTCRtpReceiver.getCapabilities`): a browser that decodes H.265 watches an H.265 main
    /// stream as it is.
    Watch {
        camera_id: String,
        #[serde(default)]
        low_latency: Option<bool>,
        #[serde(default)]
        stream: Option<Stream>,
        #[serde(default)]
        codecs: Vec<String>,
    },
    /// The browser's SDP answer to an `offer`.
    Answer { view_id: String, sdp: String },
    /// A browser ICE candidate; `null` when gathering is complete.
    Candidate {
        view_id: String,
        candidate: Option<Value>,
    },
    /// Stop watching; the Janus session is torn down at once.
    Stop { view_id: String },
}

/// One of a camera's streams.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// The camera's own (full-resolution) stream: the one recorded.
    #[default]
    Main,
    /// Its second, low-resolution stream, where it has one.
    Sub,
}

/// Signal → browser.
#[derive(Debug, Serialize, Clone, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Hello {
        user: String,
    },
    /// Janus's SDP offer for a view.
    Offer {
        view_id: String,
        camera_id: String,
        /// Which of the camera's streams the view shows.
        stream: Stream,
        sdp: String,
    },
    /// The view's WebRTC state: `up`, `receiving`, `ended`.
    ViewState {
        view_id: String,
        state: String,
        reason: String,
    },
    /// The status of one of a camera's streams changed.
    CameraStatus {
        camera_id: String,
        stream: Stream,
        status: CameraStatus,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        view_id: Option<String>,
        /// The camera of the view, for an error about one (the browser may not know the
        /// view's id yet).
        #[serde(skip_serializing_if = "Option::is_none")]
        camera_id: Option<String>,
        code: String,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_client_messages() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"watch","camera_id":"abc"}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Watch {
                camera_id: "abc".into(),
                low_latency: None,
                stream: None,
                codecs: Vec::new(),
            }
        );
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"watch","camera_id":"abc","low_latency":false,"stream":"sub","codecs":["h265"]}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            ClientMessage::Watch {
                camera_id: "abc".into(),
                low_latency: Some(false),
                stream: Some(Stream::Sub),
                codecs: vec!["h265".into()],
            }
        );
        assert!(
            serde_json::from_str::<ClientMessage>(
                r#"{"type":"watch","camera_id":"abc","stream":"third"}"#
            )
            .is_err()
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"candidate","view_id":"v","candidate":null}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Candidate {
                view_id: "v".into(),
                candidate: None
            }
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch"}"#).is_err());
    }

    #[test]
    fn encodes_server_messages_tagged() {
        let v = serde_json::to_value(ServerMessage::Hello { user: "a".into() }).unwrap();
        assert_eq!(v, serde_json::json!({"type": "hello", "user": "a"}));
    }
}
