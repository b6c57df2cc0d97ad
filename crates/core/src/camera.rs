//! Domain types of a camera shared by the services, and their conversion from and to the wire
//! types of `cloudcam-proto` (the only place that converts).

use cloudcam_proto::v1;
use serde::{Deserialize, Serialize};

/// The state of a camera as the owning ingest worker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// No worker has reported on this camera yet.
    Unknown,
    Connecting,
    Live,
    Unreachable,
    AuthFailed,
    UnsupportedCodec,
    Stalled,
    Stopped,
    Error,
    /// Owned but not pulled: nobody watches it and it does not record.
    Idle,
    /// On an edge site whose agent is not connected: nothing can reach the camera until it
    /// is back.
    Offline,
}

impl CameraState {
    /// A fixed, bounded label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Unreachable => "unreachable",
            Self::AuthFailed => "auth_failed",
            Self::UnsupportedCodec => "unsupported_codec",
            Self::Stalled => "stalled",
            Self::Stopped => "stopped",
            Self::Error => "error",
            Self::Idle => "idle",
            Self::Offline => "offline",
        }
    }

    pub const ALL: [CameraState; 11] = [
        Self::Unknown,
        Self::Connecting,
        Self::Live,
        Self::Unreachable,
        Self::AuthFailed,
        Self::UnsupportedCodec,
        Self::Stalled,
        Self::Stopped,
        Self::Error,
        Self::Idle,
        Self::Offline,
    ];
}

impl From<v1::CameraState> for CameraState {
    fn from(s: v1::CameraState) -> Self {
        use v1::CameraState as P;
        match s {
            P::Unspecified => Self::Unknown,
            P::Connecting => Self::Connecting,
            P::Live => Self::Live,
            P::Unreachable => Self::Unreachable,
            P::AuthFailed => Self::AuthFailed,
            P::UnsupportedCodec => Self::UnsupportedCodec,
            P::Stalled => Self::Stalled,
            P::Stopped => Self::Stopped,
            P::Error => Self::Error,
            P::Idle => Self::Idle,
            P::Offline => Self::Offline,
        }
    }
}

impl From<CameraState> for v1::CameraState {
    fn from(s: CameraState) -> Self {
        use v1::CameraState as P;
        match s {
            CameraState::Unknown => P::Unspecified,
            CameraState::Connecting => P::Connecting,
            CameraState::Live => P::Live,
            CameraState::Unreachable => P::Unreachable,
            CameraState::AuthFailed => P::AuthFailed,
            CameraState::UnsupportedCodec => P::UnsupportedCodec,
            CameraState::Stalled => P::Stalled,
            CameraState::Stopped => P::Stopped,
            CameraState::Error => P::Error,
            CameraState::Idle => P::Idle,
            CameraState::Offline => P::Offline,
        }
    }
}

/// A camera's live status, kept in the state store by the owning worker and shown by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CameraStatus {
    pub state: CameraState,
    /// Human-readable reason; never contains credentials.
    pub reason: String,
    pub worker_id: String,
    pub updated_ms: i64,
    #[serde(default)]
    pub codec: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub fps: f64,
    #[serde(default)]
    pub bitrate_bps: u64,
    #[serde(default)]
    pub last_frame_ms: i64,
    #[serde(default)]
    pub reconnects: u32,
    /// While live: the owning worker's RTSP re-stream of the camera.
    #[serde(default)]
    pub restream_url: String,
    /// Why browsers cannot watch the camera live (it sends H.265 only, say); empty when they
    /// can. Recording and the re-stream work either way.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub live_unavailable: String,
    /// The camera's audio by its RTP encoding name (`MPEG4-GENERIC`, `MP4A-LATM`, `PCMU`,
    /// `PCMA`); empty while none is known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audio_codec: String,
    /// A pushed camera's: where the owning worker takes its stream (RTSP RECORD; the push
    /// credential is not in it). Empty for a camera that is pulled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub push_url: String,
}

impl CameraStatus {
    pub fn unknown() -> Self {
        Self {
            state: CameraState::Unknown,
            reason: "waiting for an ingest worker".into(),
            worker_id: String::new(),
            updated_ms: 0,
            codec: String::new(),
            width: 0,
            height: 0,
            fps: 0.0,
            bitrate_bps: 0,
            last_frame_ms: 0,
            reconnects: 0,
            restream_url: String::new(),
            live_unavailable: String::new(),
            audio_codec: String::new(),
            push_url: String::new(),
        }
    }

    /// Applies an event to this status.
    pub fn apply(&mut self, ev: &v1::CameraEvent) {
        self.worker_id.clone_from(&ev.worker_id);
        self.updated_ms = ev.timestamp_ms;
        match &ev.kind {
            Some(v1::camera_event::Kind::State(s)) => {
                self.state = s.state().into();
                self.reason.clone_from(&s.reason);
                if !s.codec.is_empty() {
                    self.codec.clone_from(&s.codec);
                }
                if s.width > 0 {
                    self.width = s.width;
                    self.height = s.height;
                }
                self.restream_url.clone_from(&s.restream_url);
                self.live_unavailable.clone_from(&s.live_unavailable);
                self.push_url.clone_from(&s.push_url);
                if !s.audio_codec.is_empty() {
                    self.audio_codec.clone_from(&s.audio_codec);
                }
                if self.state != CameraState::Live {
                    self.fps = 0.0;
                    self.bitrate_bps = 0;
                }
            }
            Some(v1::camera_event::Kind::Health(h)) => {
                self.fps = h.fps;
                self.bitrate_bps = h.bitrate_bps;
                self.last_frame_ms = h.last_frame_ms;
                self.reconnects = h.reconnects;
            }
            Some(v1::camera_event::Kind::Segment(_)) | None => {}
        }
    }
}

/// Credentials of a camera. Kept only in the state store under [`secret_key`]; its `Debug`
/// output never shows the password or a secret parameter's value.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CameraSecret {
    /// RTSP authentication (empty: none).
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Query parameters of the source URL that carry credentials (`?user=…&password=…`, as
    /// many vendors' URLs do): kept out of the URL everyone sees, added back only where the
    /// camera is pulled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
}

impl CameraSecret {
    /// The URL to pull: `url` with the secret query parameters added back.
    pub fn location(&self, url: &str) -> String {
        match url::Url::parse(url) {
            Ok(mut u) if !self.query.is_empty() => {
                u.query_pairs_mut().extend_pairs(&self.query);
                u.to_string()
            }
            _ => url.to_string(),
        }
    }

    /// Every secret value (to redact from messages).
    pub fn values(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.password.as_str())
            .chain(self.query.iter().map(|(_, v)| v.as_str()))
            .filter(|v| !v.is_empty())
    }
}

impl std::fmt::Debug for CameraSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let params: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("CameraSecret")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("query", &params)
            .finish()
    }
}

/// State-store key of a camera's status.
pub fn status_key(camera_id: &str) -> String {
    format!("cloudcam:status:{camera_id}")
}

/// State-store key of a camera's credentials (the `credentials_ref` of its spec).
pub fn secret_key(camera_id: &str) -> String {
    format!("cloudcam:secret:{camera_id}")
}

/// What follows a camera's id in the id its substream runs by: its status, re-stream path and
/// live demand are kept under `<camera id>~sub`. Camera ids never contain `~`.
pub const SUBSTREAM_SUFFIX: &str = "~sub";

/// The id a camera's substream runs by.
pub fn substream_id(camera_id: &str) -> String {
    format!("{camera_id}{SUBSTREAM_SUFFIX}")
}

/// The camera a stream id belongs to, and whether it names the substream.
pub fn camera_of(stream_id: &str) -> (&str, bool) {
    match stream_id.strip_suffix(SUBSTREAM_SUFFIX) {
        Some(camera) => (camera, true),
        None => (stream_id, false),
    }
}

/// The spec the owning ingest worker runs a camera's substream by: the substream's URL with
/// the camera's credentials, pulled only while viewers want it, relayed to the targets'
/// substream ports, never recorded. `None` when the camera has no substream.
pub fn substream_spec(spec: &v1::CameraSpec) -> Option<v1::CameraSpec> {
    if spec.sub_source_url.is_empty() {
        return None;
    }
    Some(v1::CameraSpec {
        camera_id: substream_id(&spec.camera_id),
        name: format!("{} (substream)", spec.name),
        source_url: spec.sub_source_url.clone(),
        source_generation: spec.sub_source_generation,
        recording: false,
        retention_hours: 0,
        retention_seconds: 0,
        always_on: false,
        live_demand: spec.sub_live_demand,
        rtp_targets: spec
            .rtp_targets
            .iter()
            .filter(|t| t.sub_video_port != 0)
            .map(|t| v1::RtpTarget {
                video_port: t.sub_video_port,
                sub_video_port: 0,
                audio_port: 0,
                audio_codec: String::new(),
                // The substream's mountpoint always takes H.264.
                video_codec: String::new(),
                ..t.clone()
            })
            .collect(),
        sub_source_url: String::new(),
        sub_live_demand: 0,
        sub_source_generation: 0,
        push: false,
        ..spec.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_substream_runs_as_its_own_wanted_only_camera() {
        let mut spec = v1::CameraSpec {
            camera_id: "c1".into(),
            name: "door".into(),
            source_url: "rtsp://cam/main".into(),
            credentials_ref: secret_key("c1"),
            recording: true,
            always_on: true,
            live_demand: 1,
            rtp_targets: vec![v1::RtpTarget {
                host: "janus".into(),
                video_port: 5000,
                gateway: "g".into(),
                sub_video_port: 5001,
                audio_port: 5002,
                video_codec: "H265".into(),
                audio_codec: "PCMU".into(),
            }],
            generation: 4,
            source_generation: 2,
            ..Default::default()
        };
        assert_eq!(substream_spec(&spec), None);
        spec.sub_source_url = "rtsp://cam/sub".into();
        spec.sub_source_generation = 3;
        let sub = substream_spec(&spec).unwrap();
        assert_eq!(sub.camera_id, "c1~sub");
        assert_eq!(camera_of(&sub.camera_id), ("c1", true));
        assert_eq!(camera_of("c1"), ("c1", false));
        assert_eq!(sub.source_url, "rtsp://cam/sub");
        assert_eq!(sub.credentials_ref, spec.credentials_ref);
        assert!(!sub.recording && !sub.always_on);
        assert_eq!((sub.live_demand, sub.source_generation), (0, 3));
        assert_eq!(sub.rtp_targets[0].video_port, 5001);
        assert_eq!(
            sub.rtp_targets[0].audio_port, 0,
            "the substream is video only"
        );
        assert_eq!(
            sub.rtp_targets[0].video_codec, "",
            "the substream's mountpoint is H.264"
        );
        assert!(sub.sub_source_url.is_empty());
        spec.sub_live_demand = 1;
        assert_eq!(substream_spec(&spec).unwrap().live_demand, 1);
    }

    #[test]
    fn secret_debug_hides_password() {
        let s = CameraSecret {
            username: "admin".into(),
            password: "hunter2".into(),
            query: vec![("pwd".into(), "swordfish".into())],
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("swordfish"));
    }

    #[test]
    fn secret_parameters_are_added_back_where_the_camera_is_pulled() {
        let s = CameraSecret {
            query: vec![("user".into(), "a b".into()), ("pwd".into(), "x&y".into())],
            ..Default::default()
        };
        assert_eq!(
            s.location("rtsp://cam:554/live?channel=1"),
            "rtsp://cam:554/live?channel=1&user=a+b&pwd=x%26y"
        );
        assert_eq!(s.values().collect::<Vec<_>>(), ["a b", "x&y"]);
    }

    #[test]
    fn state_event_updates_status() {
        let mut st = CameraStatus::unknown();
        st.apply(&v1::CameraEvent {
            schema_version: 1,
            camera_id: "c".into(),
            timestamp_ms: 5,
            worker_id: "w".into(),
            kind: Some(v1::camera_event::Kind::State(v1::StateChanged {
                state: v1::CameraState::AuthFailed as i32,
                reason: "wrong password".into(),
                ..Default::default()
            })),
        });
        assert_eq!(st.state, CameraState::AuthFailed);
        assert_eq!(st.reason, "wrong password");
        assert_eq!(st.worker_id, "w");
    }
}
