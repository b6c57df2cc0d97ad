//! The worker's RTSP re-stream server (gstreamer-rtsp-server): every camera this worker relays is
//! served at `rtsp://<host>:<port>/cam/<camera id>`, so recorders and any RTSP client (VLC, a
//! third-party NVR) pull from the worker and never open a second connection to the camera.
//!
//! While somebody watches (shared media), the camera's relay sends one more copy of its RTP to
//! a local UDP port, which the camera's media factory reads and re-payloads without decoding.
//! Nobody watching, nothing is sent there: the relay is told through the mount's [`OnUse`].
//!
//! The same server takes pushed cameras' streams at `rtsp://<host>:<port>/push/<camera id>`
//! (RTSP RECORD, each camera's own push credential; see [`crate::push`]) — unless the worker
//! is given a TLS certificate ([`PushTls`]): then a second server, on a port of its own, takes
//! them at `rtsps://<host>:<port>/push/<camera id>`, and the plain one takes none.

use crate::push::{PushFactory, PushFeed};
use cloudcam_core::codec::{AudioCodec, VideoCodec};
use cloudcam_core::config::RestreamAuth;
use gstreamer as gst;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{self as rtsp_server};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RestreamError {
    #[error("cannot start the re-stream server on {0}: {1}")]
    Listen(String, gst::glib::BoolError),
    #[error("no free local UDP port: {0}")]
    Port(std::io::Error),
    #[error("cannot read the push TLS certificate {cert:?} and key {key:?}: {error}")]
    Certificate {
        cert: String,
        key: String,
        error: gst::glib::Error,
    },
}

/// RTSPS for pushed cameras: the server listens on `listen` (`host:port`) with the PEM
/// certificate (chain) `cert` and its private key `key`. Empty `listen`: pushes are plain
/// RTSP on the re-stream server.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushTls {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

impl PushTls {
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.enabled() && (self.cert.is_empty() || self.key.is_empty()) {
            return Err("push_tls: listen is set, so cert and key must be too".into());
        }
        if !self.enabled() && (!self.cert.is_empty() || !self.key.is_empty()) {
            return Err("push_tls: cert and key are set, but not listen".into());
        }
        Ok(())
    }
}

/// Told whether a camera's re-stream is being pulled now (called from the server's thread).
pub type OnUse = Arc<dyn Fn(bool) + Send + Sync>;

/// A running re-stream server. Cheap to share (`Arc`); mount points are thread-safe.
pub struct Restream {
    mounts: rtsp_server::RTSPMountPoints,
    /// Where pushes are taken: the re-stream server's, or the RTSPS server's.
    push_server: PushServer,
    /// Pushed cameras' mounts: their feed, and the credential it was mounted with.
    pushes: Mutex<HashMap<String, (Arc<PushFeed>, String)>>,
    public_base: String,
    auth: RestreamAuth,
    /// Media being served per camera (a shared media lives while it has clients), and who is
    /// told when that count leaves or reaches zero.
    users: Arc<Mutex<HashMap<String, Users>>>,
    _servers: Vec<rtsp_server::RTSPServer>,
}

/// The mounts, credentials and URL of the server that takes pushes.
struct PushServer {
    mounts: rtsp_server::RTSPMountPoints,
    /// Each pushed camera's push credential.
    auth: rtsp_server::RTSPAuth,
    base: String,
}

struct Users {
    /// The mount counted (its video port): a media of an earlier mount of the camera, still
    /// ending, is not.
    port: u16,
    media: usize,
    on_use: OnUse,
    /// What the camera sends: its video codec, and its audio's RTP caps if it has audio.
    codec: VideoCodec,
    audio: Option<String>,
}

/// The audio codec RTP caps name.
fn audio_codec(caps: &str) -> Option<AudioCodec> {
    let caps = caps.parse::<gst::Caps>().ok()?;
    AudioCodec::from_name(caps.structure(0)?.get::<&str>("encoding-name").ok()?)
}

/// An RTSP server listening on `listen` (`host:port`), over TLS with `certificate` when given,
/// with digest authentication and every client in a thread of its own, attached to `context`;
/// its auth (no credentials yet) and the base of its URLs (`rtsp(s)://<advertise or
/// host>:<port>`).
fn serve(
    listen: &str,
    advertise: &str,
    context: &gst::glib::MainContext,
    certificate: Option<&gio::TlsCertificate>,
) -> Result<
    (
        rtsp_server::RTSPServer,
        gst::glib::SourceId,
        rtsp_server::RTSPAuth,
        String,
    ),
    RestreamError,
> {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8554"));
    let server = rtsp_server::RTSPServer::new();
    server.set_address(host);
    server.set_service(port);
    let auth = rtsp_server::RTSPAuth::new();
    auth.set_supported_methods(gstreamer_rtsp::RTSPAuthMethod::Digest);
    auth.set_tls_certificate(certificate);
    server.set_auth(Some(&auth));
    // Every client in a thread of its own: a client waiting for a media to be ready (a
    // re-stream's first DESCRIBE waits for its first frame) must not hold up the others,
    // least of all the push that brings that frame.
    if let Some(pool) = server.thread_pool() {
        pool.set_max_threads(-1);
    }
    let source = server
        .attach(Some(context))
        .map_err(|e| RestreamError::Listen(listen.to_string(), e))?;
    let host = if advertise.is_empty() {
        host
    } else {
        advertise
    };
    let scheme = if certificate.is_some() {
        "rtsps"
    } else {
        "rtsp"
    };
    let base = format!("{scheme}://{host}:{}", server.bound_port());
    Ok((server, source, auth, base))
}

/// The role the re-stream credential grants: access to every camera's media.
const ROLE: &str = "recorder";

/// A camera's mount: where its relay sends RTP, and the URL clients pull.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub rtp_port: u16,
    /// Where the relay forwards the camera's audio RTP, if it has any.
    pub audio_port: u16,
    pub url: String,
}

impl Restream {
    /// Listens on `listen` (`host:port`) and advertises `rtsp://<advertise or host>:<port>`;
    /// clients must authenticate with `auth` (RTSP digest). Runs its own GLib main loop thread.
    pub fn start(listen: &str, advertise: &str, auth: RestreamAuth) -> Result<Self, RestreamError> {
        Self::start_with(listen, advertise, auth, &PushTls::default())
    }

    /// As [`Self::start`], and takes pushes over RTSPS when `push_tls` is enabled.
    pub fn start_with(
        listen: &str,
        advertise: &str,
        auth: RestreamAuth,
        push_tls: &PushTls,
    ) -> Result<Self, RestreamError> {
        let context = gst::glib::MainContext::new();
        let (server, source, rtsp_auth, public_base) = serve(listen, advertise, &context, None)?;
        let token = rtsp_server::RTSPToken::builder()
            .field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
            .build();
        rtsp_auth.add_digest(&auth.user, &auth.password, &token);
        let mounts = server
            .mount_points()
            .expect("a new server has mount points");
        let mut sources = vec![source];
        let mut servers = vec![server];
        let push_server = if push_tls.enabled() {
            let certificate = gio::TlsCertificate::from_files(&push_tls.cert, &push_tls.key)
                .map_err(|error| RestreamError::Certificate {
                    cert: push_tls.cert.clone(),
                    key: push_tls.key.clone(),
                    error,
                })?;
            let (server, source, auth, base) =
                serve(&push_tls.listen, advertise, &context, Some(&certificate))?;
            let mounts = server
                .mount_points()
                .expect("a new server has mount points");
            sources.push(source);
            servers.push(server);
            PushServer { mounts, auth, base }
        } else {
            PushServer {
                mounts: mounts.clone(),
                auth: rtsp_auth.clone(),
                base: public_base.clone(),
            }
        };
        std::thread::Builder::new()
            .name("restream".into())
            .spawn(move || {
                let _sources = sources;
                let main_loop = gst::glib::MainLoop::new(Some(&context), false);
                main_loop.run();
            })
            .expect("spawn the re-stream thread");
        Ok(Self {
            mounts,
            push_server,
            pushes: Default::default(),
            public_base,
            auth,
            users: Default::default(),
            _servers: servers,
        })
    }

    /// Serves `camera_id` (H.264 video only until [`Self::set_video`] and [`Self::set_audio`]
    /// say otherwise); returns the UDP ports its
    /// relay sends RTP to while `on_use` says the re-stream is pulled.
    pub fn mount(&self, camera_id: &str, on_use: OnUse) -> Result<Mount, RestreamError> {
        let port = || {
            UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .map_err(RestreamError::Port)
                .map(|a| a.port())
        };
        let mount = Mount {
            rtp_port: port()?,
            audio_port: port()?,
            url: format!("{}/cam/{camera_id}", self.public_base),
        };
        self.users.lock().expect("users lock").insert(
            camera_id.to_string(),
            Users {
                port: mount.rtp_port,
                media: 0,
                on_use,
                codec: VideoCodec::default(),
                audio: None,
            },
        );
        self.serve(camera_id, &mount, VideoCodec::default(), None);
        Ok(mount)
    }

    /// Serves the camera's video as `codec` from now on (nothing changes if it already was).
    pub fn set_video(&self, camera_id: &str, mount: &Mount, codec: VideoCodec) {
        self.reshape(camera_id, mount, |u| {
            std::mem::replace(&mut u.codec, codec) != codec
        });
    }

    /// Adds the camera's audio (RTP caps as the camera sends them) to its re-stream.
    pub fn set_audio(&self, camera_id: &str, mount: &Mount, caps: &str) {
        self.reshape(camera_id, mount, |u| {
            u.audio.replace(caps.to_string()).as_deref() != Some(caps)
        });
    }

    /// Changes what `camera_id`'s mount serves (`change` answers whether anything did).
    fn reshape(&self, camera_id: &str, mount: &Mount, change: impl FnOnce(&mut Users) -> bool) {
        let mut users = self.users.lock().expect("users lock");
        let Some(u) = users
            .get_mut(camera_id)
            .filter(|u| u.port == mount.rtp_port)
        else {
            return;
        };
        if change(u) {
            let (codec, audio) = (u.codec, u.audio.clone());
            drop(users);
            self.serve(camera_id, mount, codec, audio.as_deref());
        }
    }

    fn serve(&self, camera_id: &str, mount: &Mount, codec: VideoCodec, audio_caps: Option<&str>) {
        let audio = audio_caps
            .and_then(|caps| Some((caps, audio_codec(caps)?)))
            .map(|(caps, codec)| {
                format!(
                    " udpsrc address=127.0.0.1 port={} caps=\"{}\" ! {}",
                    mount.audio_port,
                    caps.replace('"', ""),
                    codec.restream_chain()
                )
            })
            .unwrap_or_default();
        let factory = rtsp_server::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( udpsrc address=127.0.0.1 port={} caps=\"{}\" \
             ! {} ! {} config-interval=-1 \
             ! {} name=pay0 pt=96 config-interval=-1{audio} )",
            mount.rtp_port,
            codec.rtp_caps(),
            codec.depayloader(),
            codec.parser(),
            codec.payloader(),
        ));
        factory.set_shared(true);
        let (users, id, port) = (self.users.clone(), camera_id.to_string(), mount.rtp_port);
        factory.connect_media_configure(move |_, media| {
            let mut all = users.lock().expect("users lock");
            if let Some(u) = all.get_mut(&id).filter(|u| u.port == port) {
                u.media += 1;
                if u.media == 1 {
                    (u.on_use)(true);
                }
            }
            drop(all);
            let (users, id) = (users.clone(), id.clone());
            media.connect_unprepared(move |_| {
                let mut all = users.lock().expect("users lock");
                if let Some(u) = all.get_mut(&id).filter(|u| u.port == port) {
                    u.media = u.media.saturating_sub(1);
                    if u.media == 0 {
                        (u.on_use)(false);
                    }
                }
            });
        });
        factory.add_role_from_structure(
            &gst::Structure::builder(ROLE)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
        self.mounts
            .add_factory(&format!("/cam/{camera_id}"), factory);
    }

    /// The credential clients present (the worker's own snapshots pull with it too).
    pub fn auth(&self) -> &RestreamAuth {
        &self.auth
    }

    /// Where `camera_id` is pushed to (RTSP RECORD; no credentials in it).
    pub fn push_url(&self, camera_id: &str) -> String {
        format!("{}/push/{camera_id}", self.push_server.base)
    }

    /// Takes pushes of `camera_id` at [`Self::push_url`] from clients that authenticate (RTSP
    /// digest) as the camera id with `password`, and hands them to the returned feed. Called
    /// again with another password (the credential was replaced), the old one stops working
    /// and a push made with it is cut.
    pub fn accept_push(&self, camera_id: &str, password: &str) -> Arc<PushFeed> {
        let mut pushes = self.pushes.lock().expect("pushes lock");
        if let Some((feed, current)) = pushes.get(camera_id) {
            if current == password {
                return feed.clone();
            }
            feed.cut();
        }
        let role = format!("push:{camera_id}");
        let token = rtsp_server::RTSPToken::builder()
            .field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, role.as_str())
            .build();
        let server = &self.push_server;
        server.auth.remove_digest(camera_id);
        server.auth.add_digest(camera_id, password, &token);
        let feed = pushes
            .get(camera_id)
            .map(|(feed, _)| feed.clone())
            .unwrap_or_default();
        server.mounts.add_factory(
            &format!("/push/{camera_id}"),
            PushFactory::new(feed.clone(), &role),
        );
        pushes.insert(camera_id.to_string(), (feed.clone(), password.to_string()));
        feed
    }

    /// Takes no more pushes of `camera_id`; a push under way is cut.
    pub fn refuse_push(&self, camera_id: &str) {
        if let Some((feed, _)) = self.pushes.lock().expect("pushes lock").remove(camera_id) {
            let server = &self.push_server;
            server.mounts.remove_factory(&format!("/push/{camera_id}"));
            server.auth.remove_digest(camera_id);
            feed.cut();
        }
    }

    pub fn unmount(&self, camera_id: &str) {
        self.users.lock().expect("users lock").remove(camera_id);
        self.mounts.remove_factory(&format!("/cam/{camera_id}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_tls_is_all_or_nothing() {
        let tls = |listen: &str, cert: &str, key: &str| PushTls {
            listen: listen.into(),
            cert: cert.into(),
            key: key.into(),
        };
        assert!(tls("", "", "").validate().is_ok());
        assert!(tls("0.0.0.0:9555", "c.pem", "k.pem").validate().is_ok());
        assert!(tls("0.0.0.0:9555", "c.pem", "").validate().is_err());
        assert!(tls("", "c.pem", "k.pem").validate().is_err());
    }

    #[test]
    fn a_push_certificate_that_cannot_be_read_is_named() {
        gst::init().unwrap();
        let tls = PushTls {
            listen: "127.0.0.1:0".into(),
            cert: "/nonexistent/push.pem".into(),
            key: "/nonexistent/push.key".into(),
        };
        let auth = RestreamAuth {
            user: "recorder".into(),
            password: "recorder-password".into(),
        };
        let err = Restream::start_with("127.0.0.1:0", "", auth, &tls)
            .err()
            .expect("no certificate, no server");
        assert!(err.to_string().contains("/nonexistent/push.pem"), "{err}");
    }
}
