//! The edge-agent protocol: what signal and a site's agent (`cloudcam-edge`) say over the
//! agent's one outbound WebSocket (`/api/v1/edge/ws`, JSON text frames, tagged by `type`).
//!
//! Signal sends the whole desired state whenever it changes ([`HubMessage::Push`]: every
//! camera of the site to push now, and where); the agent pushes exactly those and stops the
//! rest, so a lost or repeated message never leaves it in a wrong state. The agent tells what
//! it does ([`AgentMessage::Report`]) every couple of seconds. Both sides ping; a side that
//! hears nothing for [`SILENCE_LIMIT`] takes the connection for dead.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How often each side pings the other.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// A connection on which nothing (not even a pong) arrived for this long is dead: the cloud
/// shows the site's cameras `offline`, the agent reconnects.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(4);

/// One camera the agent is to push now.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushCommand {
    pub camera_id: String,
    /// The camera's URL on the site, as the cloud knows it (without credentials: those stay
    /// in the agent's configuration).
    pub url: String,
    /// Where to push it: the owning ingest worker's push mount (RTSP RECORD).
    pub push_url: String,
    /// The camera's push credential (RTSP digest).
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PushCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCommand")
            .field("camera_id", &self.camera_id)
            .field("url", &self.url)
            .field("push_url", &self.push_url)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Signal to agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMessage {
    /// Who the agent is, once connected.
    Welcome { site_id: String, site_name: String },
    /// Push these cameras now (each to its `push_url`), and no other.
    Push { cameras: Vec<PushCommand> },
    /// The agent's credential was revoked: it stops everything and the connection closes.
    Revoked,
}

/// What the agent is doing with one camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushReport {
    pub camera_id: String,
    /// `pushing` (the ingest worker takes its stream), `connecting`, or `failed`.
    pub state: String,
    /// Why it failed (never a credential or a URL).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Agent to signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The agent's version, once connected.
    Hello { version: String },
    /// What it pushes, and its uplink's use (bits per second over the last report interval).
    Report {
        cameras: Vec<PushReport>,
        uplink_bps: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_and_a_push_command_hides_its_password() {
        let cmd = PushCommand {
            camera_id: "c1".into(),
            url: "rtsp://10.0.0.5/stream".into(),
            push_url: "rtsp://ingest:8554/push/c1".into(),
            username: "c1".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{cmd:?}").contains("s3cret"));
        let json = serde_json::to_string(&HubMessage::Push {
            cameras: vec![cmd.clone()],
        })
        .unwrap();
        assert!(json.starts_with(r#"{"type":"push","cameras":[{"camera_id":"c1""#));
        let back: HubMessage = serde_json::from_str(&json).unwrap();
        assert_eq!(back, HubMessage::Push { cameras: vec![cmd] });
        let hello: AgentMessage =
            serde_json::from_str(r#"{"type":"hello","version":"0.1.0"}"#).unwrap();
        assert_eq!(
            hello,
            AgentMessage::Hello {
                version: "0.1.0".into()
            }
        );
    }
}
