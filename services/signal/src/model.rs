//! The camera domain's types: what a user edits (the record), what the Janus pool keeps apart
//! from it (the mountpoint), what the API shows (views) and what requests carry, with their
//! validation. No storage and no HTTP here.

use crate::error::ApiError;
use crate::users::Caller;
use cloudcam_core::camera::CameraStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A camera's Janus mountpoint, kept apart from the user-edited record (the gateway pool moves
/// it). The secret and pin never leave the signal service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mountpoint {
    pub id: u64,
    pub port: u16,
    pub secret: String,
    pub pin: String,
    /// The gateway of the Janus pool it is on.
    pub gateway: String,
    /// The substream's own mountpoint on the same gateway (same secret and pin), for a camera
    /// with a substream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<SubMountpoint>,
    /// The RTP port of the main stream's live audio (Opus); absent only for a camera from
    /// before live audio, until the gateway pass gives it one. The substream's mountpoint is
    /// video only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_port: Option<u16>,
    /// The main stream's mountpoint takes H.265 (its camera sends it; browsers that decode
    /// H.265 watch it there) instead of H.264.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub h265: bool,
    /// The audio codec its live-audio stream takes: empty for Opus, or the G.711 (`PCMU`,
    /// `PCMA`) its camera sends, relayed as it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub audio_codec: String,
}

/// The Janus mountpoint of a camera's substream.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubMountpoint {
    pub id: u64,
    pub port: u16,
}

impl Mountpoint {
    /// The Janus mountpoint of one stream (`None`: the camera has no substream), as a
    /// mountpoint of its own.
    pub fn stream(&self, sub: bool) -> Option<Mountpoint> {
        let (id, port, audio_port, h265) = if sub {
            let s = self.sub?;
            (s.id, s.port, None, false)
        } else {
            (self.id, self.port, self.audio_port, self.h265)
        };
        Some(Mountpoint {
            id,
            port,
            audio_port,
            h265,
            sub: None,
            ..self.clone()
        })
    }

    /// Every Janus mountpoint this camera has: its main stream's and its substream's.
    pub fn parts(&self) -> Vec<Mountpoint> {
        [false, true]
            .into_iter()
            .filter_map(|sub| self.stream(sub))
            .collect()
    }
}

/// What anyone signed in may see of a camera: no password, no mountpoint secrets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CameraInfo {
    pub id: String,
    pub name: String,
    /// Source URL without credentials; empty for a pushed camera.
    pub url: String,
    /// The camera pushes its stream to cloudcam (RTSP RECORD to `status.push_url`) instead of
    /// being pulled from `url`.
    #[serde(default)]
    pub push: bool,
    /// The edge site the camera is on: its agent pushes it (from `url`, the camera's address
    /// on the site) while it is wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The camera's substream (a second, lower-resolution stream of the same camera, pulled
    /// with the same credentials): the camera wall shows it, full screen and recordings use
    /// the main stream. Absent when the camera has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_url: Option<String>,
    pub username: Option<String>,
    pub has_password: bool,
    pub recording: bool,
    /// How long recordings are kept, in hours; 0 keeps them forever.
    #[serde(default)]
    pub retention_hours: f64,
    /// Pulled even when nobody watches (first frame at once); otherwise on demand.
    #[serde(default)]
    pub always_on: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The user who added it (empty for cameras from before users existed: only
    /// administrators see those).
    #[serde(default)]
    pub owner: String,
}

/// What a caller may do with one camera. The owner and administrators may do everything; a
/// share grants a user some of it. `manage` (edit, delete, share) includes the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Watch it live.
    #[serde(default)]
    pub live: bool,
    /// Its recordings, clips and snapshots.
    #[serde(default)]
    pub playback: bool,
    /// Edit, delete and share it.
    #[serde(default)]
    pub manage: bool,
}

impl Grant {
    pub const ALL: Self = Self {
        live: true,
        playback: true,
        manage: true,
    };

    /// `manage` brings the others along.
    pub fn normalized(self) -> Self {
        if self.manage { Self::ALL } else { self }
    }

    pub fn is_empty(&self) -> bool {
        !(self.live || self.playback || self.manage)
    }
}

/// One user's share of a camera.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Share {
    pub user: String,
    pub live: bool,
    pub playback: bool,
    pub manage: bool,
}

impl Share {
    pub fn new(user: String, grant: Grant) -> Self {
        Self {
            user,
            live: grant.live,
            playback: grant.playback,
            manage: grant.manage,
        }
    }
}

/// What a request needs of a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Only to know it exists (list, details, status).
    See,
    Live,
    Playback,
    Manage,
}

impl Need {
    fn met_by(self, g: Grant) -> bool {
        match self {
            Self::See => !g.is_empty(),
            Self::Live => g.live,
            Self::Playback => g.playback,
            Self::Manage => g.manage,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::See => "see",
            Self::Live => "watch",
            Self::Playback => "play back",
            Self::Manage => "manage",
        }
    }
}

/// What a user edits of a camera: stored as one versioned record (its password lives apart,
/// under `secret_key`; fields written by loops — live demand, mountpoint, status — too).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraRecord {
    #[serde(flatten)]
    pub info: CameraInfo,
    /// Bumped by every change a user makes.
    pub generation: u64,
    /// Bumped when the source URL or credentials change.
    #[serde(default)]
    pub source_generation: u64,
    /// Bumped when the substream's URL or the credentials change.
    #[serde(default)]
    pub sub_source_generation: u64,
    /// Who else may do what with it, by user name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shares: BTreeMap<String, Grant>,
}

impl CameraRecord {
    /// What `caller` may do with this camera; `None` when they may not even see it.
    pub fn grant_for(&self, caller: &Caller) -> Option<Grant> {
        if caller.is_admin() || (!self.info.owner.is_empty() && self.info.owner == caller.name) {
            return Some(Grant::ALL);
        }
        self.shares
            .get(&caller.name)
            .copied()
            .filter(|g| !g.is_empty())
    }

    /// Checks `caller` may do what `need` asks. A camera they cannot see is not found (its
    /// existence is not revealed); one they see but may not do this with is forbidden.
    pub fn authorize(&self, caller: &Caller, need: Need) -> Result<Grant, ApiError> {
        let Some(grant) = self.grant_for(caller) else {
            return Err(ApiError::CameraNotFound(self.info.id.clone()));
        };
        if need.met_by(grant) {
            Ok(grant)
        } else {
            Err(ApiError::Forbidden(format!(
                "you may not {} camera {}",
                need.verb(),
                self.info.id
            )))
        }
    }
}

/// A stored record and the version it was read at (the API's ETag).
#[derive(Debug, Clone)]
pub struct Stored {
    pub version: u64,
    pub record: CameraRecord,
}

/// A camera as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CameraView {
    #[serde(flatten)]
    pub info: CameraInfo,
    /// The record's version: send it back in `If-Match` to change exactly this version.
    pub version: u64,
    /// What the caller may do with it.
    pub access: Grant,
    pub status: CameraStatus,
    /// The substream's status, for a camera with a substream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_status: Option<CameraStatus>,
    pub served_by: ServedBy,
    /// A pushed camera's push credential: only in the answer to the request that made it
    /// (adding the camera, or replacing the credential); it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_credential: Option<PushCredential>,
}

/// What a pusher presents (RTSP digest) to push a camera: shown once.
#[derive(Clone, Serialize, ToSchema)]
pub struct PushCredential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for PushCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which machines serve a camera now.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServedBy {
    /// The ingest worker that owns it (empty until one reports).
    pub ingest: String,
    /// The Janus gateway its mountpoint is on.
    pub gateway: String,
    /// Why the gateway could not create the camera's mountpoint (live view is unavailable
    /// until it can); absent when the mountpoint is in place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_error: Option<String>,
    /// The recorder recording it, if any.
    pub recorder: Option<String>,
    /// Why its recorder is not recording it now although it should (say, the spool disk is
    /// below its free-space floor); absent while recording goes well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_error: Option<String>,
    /// 1 while viewers keep it pulled, else 0.
    pub live_demand: u32,
    /// 1 while viewers keep its substream pulled, else 0.
    pub sub_live_demand: u32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCamera {
    pub name: String,
    /// `rtsp://` or `rtsps://`; credentials in it are moved out and kept secret. Absent for a
    /// pushed camera.
    #[serde(default)]
    pub url: String,
    /// The camera is not pulled: its encoder (or an edge agent) pushes it to the owning
    /// ingest worker, at the camera's `status.push_url`, with the push credential the response
    /// gives once. It takes no url, sub_url or credentials.
    #[serde(default)]
    pub push: bool,
    /// The camera is on this edge site (a site's id): the site's agent pushes it while it is
    /// wanted. `url` is then the camera's address on the site, without credentials (they stay
    /// in the agent's configuration).
    #[serde(default)]
    pub site: Option<String>,
    /// The camera's substream, `rtsp://` or `rtsps://`, pulled with the camera's credentials
    /// (so it carries none itself).
    #[serde(default)]
    pub sub_url: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub retention_hours: f64,
    #[serde(default)]
    pub always_on: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCamera {
    pub name: Option<String>,
    pub url: Option<String>,
    /// An empty string removes the substream.
    pub sub_url: Option<String>,
    /// An empty string removes the credentials.
    pub username: Option<String>,
    pub password: Option<String>,
    pub recording: Option<bool>,
    pub retention_hours: Option<f64>,
    pub always_on: Option<bool>,
}

/// A validated source: URL without user info or credential parameters, plus any credentials
/// it carried.
#[derive(Debug, PartialEq)]
pub struct Source {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Query parameters that carry credentials, in their order.
    pub secret_query: Vec<(String, String)>,
}

/// Query parameter names that carry credentials in vendors' RTSP URLs (`?user=…&password=…`,
/// `?usr=…&pwd=…`, `?loginuse=…&loginpas=…`, tokens and keys), compared without case.
const SECRET_PARAMS: &[&str] = &[
    "user",
    "username",
    "usr",
    "login",
    "loginuse",
    "account",
    "password",
    "passwd",
    "pass",
    "pwd",
    "pw",
    "loginpas",
    "secret",
    "token",
    "auth",
    "key",
    "apikey",
    "api_key",
    "sig",
    "signature",
];

fn is_secret_param(name: &str) -> bool {
    SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// Accepts `rtsp://` and `rtsps://` URLs with a host; moves embedded credentials (user info and
/// credential-carrying query parameters) out.
/// A site camera's URL: its address on the site, without credentials (they stay on the site,
/// in the agent's configuration).
pub fn check_site_url(raw: &str) -> Result<String, ApiError> {
    if raw.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_field",
            "missing field `url`: a camera on a site needs its rtsp:// or rtsps:// URL on the site"
                .into(),
        ));
    }
    let source = parse_source(raw)?;
    if source.username.is_some() || source.password.is_some() || !source.secret_query.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_site_url",
            "a site camera's url carries no credentials: they stay on the site, in the edge \
             agent's configuration ([cameras.<id>] url)"
                .into(),
        ));
    }
    Ok(source.url)
}

pub fn parse_source(raw: &str) -> Result<Source, ApiError> {
    let bad = |msg: String| ApiError::BadRequest("invalid_url", msg);
    let mut url =
        url::Url::parse(raw.trim()).map_err(|e| bad(format!("url is not a valid URL: {e}")))?;
    if !matches!(url.scheme(), "rtsp" | "rtsps") {
        return Err(bad(format!(
            "url must start with rtsp:// or rtsps://, not {}://",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("url has no host".into()));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let username = (!url.username().is_empty()).then(|| decode(url.username()));
    let password = url.password().map(decode);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let (secret_query, public): (Vec<_>, Vec<_>) = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .partition(|(k, _)| is_secret_param(k));
    if !secret_query.is_empty() {
        if public.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(&public);
        }
    }
    Ok(Source {
        url: url.to_string(),
        username,
        password,
        secret_query,
    })
}

/// A substream URL: like a source URL, but it may carry no credentials (the camera's own are
/// used for it). `None` for an empty string (no substream).
pub fn check_sub_url(raw: &str) -> Result<Option<String>, ApiError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let source = parse_source(raw).map_err(|e| match e {
        ApiError::BadRequest(_, msg) => {
            ApiError::BadRequest("invalid_sub_url", format!("sub_{msg}"))
        }
        other => other,
    })?;
    if source.username.is_some() || source.password.is_some() || !source.secret_query.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_sub_url",
            "sub_url must carry no credentials: the substream is pulled with the camera's own \
             (username, password, or those in url)"
                .into(),
        ));
    }
    Ok(Some(source.url))
}

pub fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::BadRequest(
            "invalid_name",
            "name must have 1 to 100 characters".into(),
        ));
    }
    Ok(name.to_string())
}

pub fn check_retention(hours: f64) -> Result<f64, ApiError> {
    if !hours.is_finite() || !(0.0..=24.0 * 3650.0).contains(&hours) {
        return Err(ApiError::BadRequest(
            "invalid_retention",
            "retention_hours must be between 0 (keep forever) and 87600".into(),
        ));
    }
    Ok(hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_parameters_are_moved_out_of_the_query() {
        let s = parse_source("rtsp://cam:554/live?channel=1&user=bob&PWD=s%26x&subtype=0").unwrap();
        assert_eq!(s.url, "rtsp://cam:554/live?channel=1&subtype=0");
        assert_eq!(
            s.secret_query,
            [("user".into(), "bob".into()), ("PWD".into(), "s&x".into())]
        );
        let s = parse_source("rtsp://cam/live?password=x").unwrap();
        assert_eq!(s.url, "rtsp://cam/live");
        let s = parse_source("rtsp://cam/live?channel=1").unwrap();
        assert_eq!(s.url, "rtsp://cam/live?channel=1");
        assert!(s.secret_query.is_empty());
    }

    #[test]
    fn credentials_are_moved_out_of_the_url() {
        let s = parse_source("rtsp://bob:s%40cret@cam.local:554/stream1").unwrap();
        assert_eq!(s.url, "rtsp://cam.local:554/stream1");
        assert_eq!(s.username.as_deref(), Some("bob"));
        assert_eq!(s.password.as_deref(), Some("s@cret"));
    }

    #[test]
    fn a_substream_url_carries_no_credentials() {
        assert_eq!(
            check_sub_url("rtsp://cam/sub?channel=1")
                .unwrap()
                .as_deref(),
            Some("rtsp://cam/sub?channel=1")
        );
        assert_eq!(check_sub_url(" ").unwrap(), None);
        for bad in [
            "rtsp://u:p@cam/sub",
            "rtsp://cam/sub?pwd=x",
            "http://cam/sub",
        ] {
            let err = check_sub_url(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_sub_url", "{bad}");
            assert!(!err.client_message().contains("p@"), "{bad}");
        }
    }

    #[test]
    fn only_rtsp_urls_are_accepted() {
        for bad in ["http://cam/x", "cam.local", "rtsp://", "file:///etc/passwd"] {
            let err = parse_source(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_url", "{bad}");
        }
        assert!(parse_source("rtsps://cam:322/x").is_ok());
    }
}
