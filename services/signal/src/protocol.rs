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
    /// are decoded rather than smooth them out.
    Watch {
        camera_id: String,
        #[serde(default)]
        low_latency: Option<bool>,
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
        sdp: String,
    },
    /// The view's WebRTC state: `up`, `receiving`, `ended`.
    ViewState {
        view_id: String,
        state: String,
        reason: String,
    },
    /// A camera's status changed.
    CameraStatus {
        camera_id: String,
        status: CameraStatus,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        view_id: Option<String>,
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
                low_latency: None
            }
        );
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"watch","camera_id":"abc","low_latency":false}"#)
                .unwrap();
        assert_eq!(
            m,
            ClientMessage::Watch {
                camera_id: "abc".into(),
                low_latency: Some(false)
            }
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
