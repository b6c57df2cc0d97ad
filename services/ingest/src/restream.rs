//! The worker's RTSP re-stream server (gstreamer-rtsp-server): every camera this worker relays is
//! served at `rtsp://<host>:<port>/cam/<camera id>`, so recorders and any RTSP client (VLC, a
//! third-party NVR) pull from the worker and never open a second connection to the camera.
//!
//! While somebody watches (shared media), the camera's relay sends one more copy of its RTP to
//! a local UDP port, which the camera's media factory reads and re-payloads without decoding.
//! Nobody watching, nothing is sent there: the relay is told through the mount's [`OnUse`].
//!
//! Pushed cameras' streams come to the worker's push server ([`crate::push`]), which this one
//! starts beside it.

use crate::push::{PushError, PushFeed, PushServer, PushSettings};
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
    #[error(transparent)]
    Push(#[from] PushError),
}

/// Told whether a camera's re-stream is being pulled now (called from the server's thread).
pub type OnUse = Arc<dyn Fn(bool) + Send + Sync>;

/// A running re-stream server. Cheap to share (`Arc`); mount points are thread-safe.
pub struct Restream {
    mounts: rtsp_server::RTSPMountPoints,
    /// Where pushed cameras are taken.
    push: PushServer,
    public_base: String,
    auth: RestreamAuth,
    /// Media being served per camera (a shared media lives while it has clients), and who is
    /// told when that count leaves or reaches zero.
    users: Arc<Mutex<HashMap<String, Users>>>,
    _server: rtsp_server::RTSPServer,
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
    /// Pushes are taken on a port of the loopback interface the system chooses.
    pub fn start(listen: &str, advertise: &str, auth: RestreamAuth) -> Result<Self, RestreamError> {
        let push = PushSettings {
            listen: "127.0.0.1:0".into(),
            ..PushSettings::default()
        };
        Self::start_with(listen, advertise, auth, &push)
    }

    /// As [`Self::start`], with the push server listening as `push` says.
    pub fn start_with(
        listen: &str,
        advertise: &str,
        auth: RestreamAuth,
        push: &PushSettings,
    ) -> Result<Self, RestreamError> {
        let push = PushServer::start(push, advertise)?;
        let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "8554"));
        let server = rtsp_server::RTSPServer::new();
        server.set_address(host);
        server.set_service(port);
        let rtsp_auth = rtsp_server::RTSPAuth::new();
        rtsp_auth.set_supported_methods(gstreamer_rtsp::RTSPAuthMethod::Digest);
        let token = rtsp_server::RTSPToken::builder()
            .field(rtsp_server::RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
            .build();
        rtsp_auth.add_digest(&auth.user, &auth.password, &token);
        server.set_auth(Some(&rtsp_auth));
        // Every client in a thread of its own: a client waiting for a media to be ready (a
        // re-stream's first DESCRIBE waits for its first frame) must not hold up the others,
        // least of all the push that brings that frame.
        if let Some(pool) = server.thread_pool() {
            pool.set_max_threads(-1);
        }
        let mounts = server
            .mount_points()
            .expect("a new server has mount points");
        let context = gst::glib::MainContext::new();
        let source = server
            .attach(Some(&context))
            .map_err(|e| RestreamError::Listen(listen.to_string(), e))?;
        let bound = server.bound_port();
        std::thread::Builder::new()
            .name("restream".into())
            .spawn(move || {
                let _source = source;
                let main_loop = gst::glib::MainLoop::new(Some(&context), false);
                main_loop.run();
            })
            .expect("spawn the re-stream thread");
        let public_host = if advertise.is_empty() {
            host
        } else {
            advertise
        };
        Ok(Self {
            mounts,
            push,
            public_base: format!("rtsp://{public_host}:{bound}"),
            auth,
            users: Default::default(),
            _server: server,
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
        self.push.url(camera_id)
    }

    /// Takes pushes of `camera_id` from clients that authenticate (RTSP digest) as the camera
    /// id with `password`, and hands them to the returned feed. Called again with another
    /// password (the credential was replaced), the old one stops working and a push made with
    /// it is cut.
    pub fn accept_push(&self, camera_id: &str, password: &str) -> Arc<PushFeed> {
        self.push.accept(camera_id, password)
    }

    /// Takes no more pushes of `camera_id`; a push under way is cut.
    pub fn refuse_push(&self, camera_id: &str) {
        self.push.refuse(camera_id);
    }

    pub fn unmount(&self, camera_id: &str) {
        self.users.lock().expect("users lock").remove(camera_id);
        self.mounts.remove_factory(&format!("/cam/{camera_id}"));
    }
}
