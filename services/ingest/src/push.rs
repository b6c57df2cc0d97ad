//! Push ingest: cameras that send their stream to the worker instead of being pulled — an
//! encoder, OBS, ffmpeg or GStreamer pushing directly, or an edge agent on a site behind NAT.
//!
//! The worker's push server ([`PushServer`]) takes a pushed camera's stream at
//! `rtsp://<host>:<port>/push/<camera id>` — `rtsps://` when it has a certificate — with RTSP
//! RECORD over TCP (interleaved), digest-authenticated with the camera's push credential. Each
//! RTP packet, as the pusher sent it, goes from the connection's thread through the camera's
//! [`PushFeed`] to its relay ([`crate::pipeline::Relay`]), which treats it exactly as a pulled
//! camera's RTP: the same fan-out to Janus, the re-stream, snapshots and
//! recordings. Nothing is decoded. One push at a time per camera: a new push (with the
//! camera's credential) takes the camera over and the earlier one is cut, so a pusher whose old
//! connection is still half-open (an edge agent whose uplink dropped and came back) is not
//! locked out by it.
//!
//! The server is ours, not gstreamer-rtsp-server's: that one hands every received packet from
//! the connection's thread to an `appsrc` (a queue and a second thread per stream), which made a
//! pushed camera cost ingest 1.2–1.5× a pulled one. Here one thread per connection reads the
//! socket and pushes each packet on, as a pulled camera's session task does
//! ([`cloudcam_core::rtsp_pull`]).
//! Messages are parsed and written with `rtsp-types`; the SDP with GStreamer's SDP library.

use cloudcam_core::codec::VideoCodec;
use gstreamer as gst;
use md5::{Digest, Md5};
use rtsp_types::{Method, Request, Response, StatusCode, Version, headers};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a push session delivers to the relay.
pub enum PushEvent {
    /// An RTP packet of the session's stream number `stream`, with its caps (from the SDP the
    /// pusher announced).
    Rtp {
        stream: usize,
        /// How many streams the pusher announced.
        streams: usize,
        caps: gst::Caps,
        buffer: gst::Buffer,
    },
    /// The session ended: the pusher tore it down or its connection closed.
    Ended,
}

/// Where a running relay takes a camera's push sessions.
pub type PushSink = Arc<dyn Fn(PushEvent) + Send + Sync>;

/// Carries a camera's push sessions to its relay while one runs (shared by the push server's
/// connections and the relay); between relay runs, what is pushed is dropped.
#[derive(Default)]
pub struct PushFeed {
    sink: Mutex<Option<PushSink>>,
    /// The session being pushed (0: none), and its connection (shut down when another push
    /// takes the camera over or the camera's push credential is replaced).
    session: Mutex<(u64, Option<TcpStream>)>,
}

/// Numbers push sessions across the worker.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

impl PushFeed {
    /// The relay takes the camera's pushed RTP from now on (replacing any earlier relay).
    pub fn attach(&self, sink: PushSink) {
        *self.sink.lock().expect("push sink lock") = Some(sink);
    }

    /// The relay stopped: pushed RTP is dropped until the next one attaches.
    pub fn detach(&self) {
        self.sink.lock().expect("push sink lock").take();
    }

    /// Whether a push session is under way.
    pub fn pushing(&self) -> bool {
        self.session.lock().expect("push session lock").0 != 0
    }

    fn send(&self, event: PushEvent) {
        let sink = self.sink.lock().expect("push sink lock").clone();
        if let Some(sink) = sink {
            sink(event);
        }
    }

    /// Session `session` starts on `connection`; one under way is ended and its connection
    /// cut (the relay starts afresh on the new one).
    fn claim(&self, session: u64, connection: Option<TcpStream>) {
        let mut current = self.session.lock().expect("push session lock");
        let earlier = (current.0 != 0 && current.0 != session).then(|| current.1.take());
        *current = (session, connection);
        drop(current);
        if let Some(earlier) = earlier {
            tracing::info!("a new push took the camera over; the earlier one is cut");
            self.send(PushEvent::Ended);
            if let Some(connection) = earlier {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
    }

    fn rtp(
        &self,
        session: u64,
        stream: usize,
        streams: usize,
        caps: &gst::Caps,
        buffer: gst::Buffer,
    ) {
        if self.session.lock().expect("push session lock").0 != session {
            return;
        }
        self.send(PushEvent::Rtp {
            stream,
            streams,
            caps: caps.clone(),
            buffer,
        });
    }

    fn release(&self, session: u64) {
        let mut current = self.session.lock().expect("push session lock");
        if current.0 != session {
            return;
        }
        *current = (0, None);
        drop(current);
        self.send(PushEvent::Ended);
    }

    /// Ends the push under way (its credential was replaced): its connection is shut down.
    pub fn cut(&self) {
        let session = self.session.lock().expect("push session lock");
        if let Some(connection) = &session.1 {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

/// Where pushes are taken: `listen` (`host:port`), over TLS with the PEM certificate (chain)
/// `cert` and its private key `key` when both are given.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9555".into(),
            cert: String::new(),
            key: String::new(),
        }
    }
}

impl PushSettings {
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("push.listen {:?}: {e}", self.listen))?;
        if self.cert.is_empty() != self.key.is_empty() {
            return Err("push: cert and key go together (both for RTSPS, neither for RTSP)".into());
        }
        Ok(())
    }

    fn tls(&self) -> bool {
        !self.cert.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot listen for pushes on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot use the push certificate {cert:?} and key {key:?}: {error}")]
    Certificate {
        cert: String,
        key: String,
        error: String,
    },
}

/// At most this many push connections at a time (each has a thread); more are closed at once.
const MAX_CONNECTIONS: usize = 1024;
/// A connection that sends nothing for this long is closed (a pusher sends RTP all the time).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest RTSP request (headers and body, the SDP) taken.
const MAX_REQUEST: usize = 64 * 1024;
/// The realm of the digest challenge.
const REALM: &str = "cloudcam";

/// A camera's push mount: its feed, and the password of its push credential.
struct Mount {
    feed: Arc<PushFeed>,
    password: String,
}

type Mounts = Arc<Mutex<HashMap<String, Mount>>>;

/// The worker's push server: a thread accepting connections, and a thread per connection.
pub struct PushServer {
    mounts: Mounts,
    base: String,
}

impl PushServer {
    /// Listens as `settings` say; push URLs name `advertise` (empty: the listen host).
    pub fn start(settings: &PushSettings, advertise: &str) -> Result<Self, PushError> {
        let tls = if settings.tls() {
            Some(
                server_config(&settings.cert, &settings.key).map_err(|error| {
                    PushError::Certificate {
                        cert: settings.cert.clone(),
                        key: settings.key.clone(),
                        error,
                    }
                })?,
            )
        } else {
            None
        };
        let listener = TcpListener::bind(&settings.listen)
            .map_err(|e| PushError::Listen(settings.listen.clone(), e))?;
        let port = listener
            .local_addr()
            .map_err(|e| PushError::Listen(settings.listen.clone(), e))?
            .port();
        let host = if advertise.is_empty() {
            settings
                .listen
                .rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h)
        } else {
            advertise
        };
        let scheme = if tls.is_some() { "rtsps" } else { "rtsp" };
        let mounts: Mounts = Default::default();
        let accepted = mounts.clone();
        std::thread::Builder::new()
            .name("push-accept".into())
            .spawn(move || accept(listener, accepted, tls))
            .expect("spawn the push server's thread");
        Ok(Self {
            mounts,
            base: format!("{scheme}://{host}:{port}"),
        })
    }

    /// Where `camera_id` is pushed to (no credentials in it).
    pub fn url(&self, camera_id: &str) -> String {
        format!("{}/push/{camera_id}", self.base)
    }

    /// Takes pushes of `camera_id` from clients that authenticate (RTSP digest) as the camera
    /// id with `password`, and hands them to the returned feed. Called again with another
    /// password (the credential was replaced), the old one stops working and a push made with
    /// it is cut.
    pub fn accept(&self, camera_id: &str, password: &str) -> Arc<PushFeed> {
        let mut mounts = self.mounts.lock().expect("push mounts lock");
        let mount = mounts
            .entry(camera_id.to_string())
            .or_insert_with(|| Mount {
                feed: Default::default(),
                password: password.to_string(),
            });
        if mount.password != password {
            mount.password = password.to_string();
            mount.feed.cut();
        }
        mount.feed.clone()
    }

    /// Takes no more pushes of `camera_id`; a push under way is cut.
    pub fn refuse(&self, camera_id: &str) {
        let removed = self
            .mounts
            .lock()
            .expect("push mounts lock")
            .remove(camera_id);
        if let Some(mount) = removed {
            mount.feed.cut();
        }
    }
}

/// The TLS configuration of the PEM certificate chain `cert` and key `key`.
fn server_config(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(config))
}

fn accept(listener: TcpListener, mounts: Mounts, tls: Option<Arc<rustls::ServerConfig>>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "cannot accept a push connection");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let slot = Slot::take(&open);
        let Some(slot) = slot else {
            tracing::warn!("too many push connections; one more is refused");
            continue;
        };
        let (mounts, tls) = (mounts.clone(), tls.clone());
        let spawned = std::thread::Builder::new()
            .name("push".into())
            .spawn(move || {
                let _slot = slot;
                serve(stream, &mounts, tls);
            });
        if spawned.is_err() {
            tracing::warn!("cannot start a thread for a push connection");
        }
    }
}

/// One of the [`MAX_CONNECTIONS`] connections, given back when dropped (however its thread
/// ends).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Self> {
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves one connection to its end.
fn serve(stream: TcpStream, mounts: &Mounts, tls: Option<Arc<rustls::ServerConfig>>) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let Ok(control) = stream.try_clone() else {
        return;
    };
    let mut connection = Connection::new(control, mounts.clone());
    let ended = match tls {
        Some(config) => match rustls::ServerConnection::new(config) {
            Ok(tls) => connection.run(rustls::StreamOwned::new(tls, stream)),
            Err(e) => Err(e.to_string()),
        },
        None => connection.run(stream),
    };
    if let Err(why) = ended {
        tracing::debug!(%why, "push connection ended");
    }
    connection.end();
}

/// A stream the pusher announced: the control URL it is set up by, and the caps of its packets.
struct Stream {
    control: String,
    caps: gst::Caps,
}

/// The camera a connection pushes, once announced: its id, its feed and the push session.
struct Push {
    camera: String,
    feed: Arc<PushFeed>,
    session: u64,
}

/// One connection's RTSP session.
struct Connection {
    /// The socket (to shut down when the push is cut).
    socket: TcpStream,
    mounts: Mounts,
    nonce: String,
    push: Option<Push>,
    /// The streams announced.
    streams: Vec<Stream>,
    /// RTP channel → stream, as the streams are set up.
    channels: [Option<usize>; 256],
    /// RECORD came: RTP goes to the relay.
    recording: bool,
}

impl Connection {
    fn new(socket: TcpStream, mounts: Mounts) -> Self {
        Self {
            socket,
            mounts,
            nonce: cloudcam_core::random_hex(16),
            push: None,
            streams: Vec::new(),
            channels: [None; 256],
            recording: false,
        }
    }

    /// Reads requests and interleaved data until the connection ends.
    fn run<S: Read + Write>(&mut self, mut io: S) -> Result<(), String> {
        let mut buf = vec![0u8; 128 * 1024];
        let (mut start, mut end) = (0usize, 0usize);
        loop {
            // Everything complete in the buffer.
            while end > start {
                let pending = &buf[start..end];
                if pending[0] == b'$' {
                    if pending.len() < 4 {
                        break;
                    }
                    let len = u16::from_be_bytes([pending[2], pending[3]]) as usize;
                    if pending.len() < 4 + len {
                        break;
                    }
                    self.data(pending[1], &pending[4..4 + len]);
                    start += 4 + len;
                    continue;
                }
                match rtsp_types::Message::<Vec<u8>>::parse(pending) {
                    Ok((rtsp_types::Message::Request(request), used)) => {
                        start += used;
                        let (response, close) = self.request(&request);
                        let mut out = Vec::new();
                        response.write(&mut out).map_err(|e| e.to_string())?;
                        io.write_all(&out).map_err(|e| e.to_string())?;
                        io.flush().map_err(|e| e.to_string())?;
                        if close {
                            return Ok(());
                        }
                    }
                    // Responses (to nothing we asked) are skipped.
                    Ok((_, used)) => start += used,
                    Err(rtsp_types::ParseError::Incomplete(_)) if pending.len() < MAX_REQUEST => {
                        break;
                    }
                    Err(_) => return Err("a message that is not RTSP".into()),
                }
            }
            if start == end {
                (start, end) = (0, 0);
            } else if buf.len() - end < 4 + 65_535 {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            let n = io.read(&mut buf[end..]).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            end += n;
        }
    }

    fn data(&self, channel: u8, packet: &[u8]) {
        let (Some(push), Some(stream)) = (&self.push, self.channels[channel as usize]) else {
            return;
        };
        if !self.recording {
            return;
        }
        push.feed.rtp(
            push.session,
            stream,
            self.streams.len(),
            &self.streams[stream].caps,
            gst::Buffer::from_slice(packet.to_vec()),
        );
    }

    /// The response to `request`, and whether the connection ends after it.
    fn request(&mut self, request: &Request<Vec<u8>>) -> (Response<rtsp_types::Empty>, bool) {
        let cseq = request
            .header(&headers::CSEQ)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let reply = |status: StatusCode| {
            Response::builder(Version::V1_0, status).header(headers::CSEQ, cseq.as_str())
        };
        let path = request
            .request_uri()
            .map(|u| u.path().to_string())
            .unwrap_or_default();
        match request.method() {
            Method::Options => (
                reply(StatusCode::Ok)
                    .header(
                        headers::PUBLIC,
                        "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                    )
                    .empty(),
                false,
            ),
            Method::GetParameter | Method::SetParameter => (reply(StatusCode::Ok).empty(), false),
            Method::Announce | Method::Setup | Method::Record | Method::Teardown => {
                let Some(camera) = camera_of(&path) else {
                    return (reply(StatusCode::NotFound).empty(), true);
                };
                let mount = {
                    let mounts = self.mounts.lock().expect("push mounts lock");
                    mounts
                        .get(camera)
                        .map(|m| (m.password.clone(), m.feed.clone()))
                };
                let Some((password, feed)) = mount else {
                    return (reply(StatusCode::NotFound).empty(), true);
                };
                if !self.authorized(request, camera, &password) {
                    if request.header(&headers::AUTHORIZATION).is_some() {
                        tracing::info!(camera = %camera, "a push with a wrong credential was refused");
                    }
                    let challenge = format!("Digest realm=\"{REALM}\", nonce=\"{}\"", self.nonce);
                    return (
                        reply(StatusCode::Unauthorized)
                            .header(headers::WWW_AUTHENTICATE, challenge)
                            .empty(),
                        false,
                    );
                }
                // One camera per connection: the one announced.
                if self.push.as_ref().is_some_and(|p| p.camera != camera) {
                    return (reply(StatusCode::Forbidden).empty(), true);
                }
                let camera = camera.to_string();
                let result = match request.method() {
                    Method::Announce => self.announce(&camera, feed, request),
                    Method::Setup => self.setup(&camera, request),
                    Method::Record => self.record(),
                    _ => return (reply(StatusCode::Ok).empty(), true),
                };
                match result {
                    Ok(headers) => {
                        let mut response = reply(StatusCode::Ok);
                        for (name, value) in headers {
                            response = response.header(name, value);
                        }
                        (response.empty(), false)
                    }
                    Err((status, why)) => {
                        tracing::warn!(camera = %camera, "a push was refused: {why}");
                        (reply(status).empty(), false)
                    }
                }
            }
            _ => (reply(StatusCode::MethodNotAllowed).empty(), false),
        }
    }

    /// Whether `request` carries a digest response made with the camera's credential.
    fn authorized(&self, request: &Request<Vec<u8>>, camera: &str, password: &str) -> bool {
        let Some(value) = request.header(&headers::AUTHORIZATION) else {
            return false;
        };
        let Some(params) = value.as_str().strip_prefix("Digest ") else {
            return false;
        };
        let params = digest_params(params);
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
        if get("username") != camera || get("nonce") != self.nonce || get("realm") != REALM {
            return false;
        }
        let expected = digest_response(&params, password, <&str>::from(request.method()));
        constant_time_eq(expected.as_bytes(), get("response").as_bytes())
    }

    /// ANNOUNCE: the SDP says what is pushed; a push of no H.264 or H.265 video is refused.
    /// The camera is claimed (a push under way is cut).
    fn announce(
        &mut self,
        camera: &str,
        feed: Arc<PushFeed>,
        request: &Request<Vec<u8>>,
    ) -> Answer {
        if self.push.is_some() {
            return Err((
                StatusCode::MethodNotValidInThisState,
                "announced twice".into(),
            ));
        }
        let sdp = gstreamer_sdp::SDPMessage::parse_buffer(request.body()).map_err(|_| {
            (
                StatusCode::BadRequest,
                "the announced SDP does not parse".to_string(),
            )
        })?;
        let video = sdp.medias().any(|m| {
            m.media() == Some("video")
                && encoding(m).is_some_and(|e| VideoCodec::from_name(&e).is_some())
        });
        if !video {
            return Err((
                StatusCode::UnsupportedMediaType,
                "no H.264 or H.265 video announced".into(),
            ));
        }
        let mut streams = Vec::new();
        for (i, media) in sdp.medias().enumerate() {
            let caps = cloudcam_core::rtsp_pull::media_caps(media).ok_or_else(|| {
                (
                    StatusCode::UnsupportedMediaType,
                    format!("stream {i} announces no RTP format"),
                )
            })?;
            let control = media
                .attribute_val("control")
                .unwrap_or_default()
                .to_string();
            streams.push(Stream { control, caps });
        }
        let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
        feed.claim(session, self.socket.try_clone().ok());
        self.push = Some(Push {
            camera: camera.to_string(),
            feed,
            session,
        });
        self.streams = streams;
        Ok(vec![])
    }

    /// SETUP of one announced stream, interleaved on the RTSP connection (TCP only).
    fn setup(&mut self, camera: &str, request: &Request<Vec<u8>>) -> Answer {
        let Some(session) = self.push.as_ref().map(|p| p.session) else {
            return Err((
                StatusCode::MethodNotValidInThisState,
                "SETUP before ANNOUNCE".into(),
            ));
        };
        let uri = request
            .request_uri()
            .map(|u| u.as_str().to_string())
            .unwrap_or_default();
        let stream = self
            .streams
            .iter()
            .position(|s| {
                !s.control.is_empty()
                    && (uri == s.control || uri.ends_with(&format!("/{}", s.control)))
            })
            .or_else(|| (0..self.streams.len()).find(|&i| !self.set_up(i)))
            .ok_or((
                StatusCode::NotFound,
                format!("no announced stream at {uri}"),
            ))?;
        let transports = request
            .typed_header::<headers::Transports>()
            .ok()
            .flatten()
            .unwrap_or_else(|| Vec::new().into());
        let interleaved = transports.iter().find_map(|t| match t {
            headers::Transport::Rtp(rtp)
                if rtp.lower_transport == Some(headers::RtpLowerTransport::Tcp) =>
            {
                rtp.params.interleaved
            }
            _ => None,
        });
        let Some((rtp, rtcp)) = interleaved else {
            return Err((
                StatusCode::UnsupportedTransport,
                format!(
                    "stream {stream} of {camera}: only RTP over the RTSP connection (TCP) is taken"
                ),
            ));
        };
        let rtcp = rtcp.unwrap_or(rtp.wrapping_add(1));
        self.channels[rtp as usize] = Some(stream);
        Ok(vec![
            (
                headers::TRANSPORT,
                format!("RTP/AVP/TCP;unicast;interleaved={rtp}-{rtcp};mode=record"),
            ),
            (headers::SESSION, format!("{session};timeout=60")),
        ])
    }

    /// RECORD: the set-up streams' RTP goes to the camera's relay from now on.
    fn record(&mut self) -> Answer {
        let Some(session) = self.push.as_ref().map(|p| p.session) else {
            return Err((
                StatusCode::MethodNotValidInThisState,
                "RECORD before ANNOUNCE".into(),
            ));
        };
        if !(0..self.streams.len()).any(|i| self.set_up(i)) {
            return Err((
                StatusCode::MethodNotValidInThisState,
                "RECORD before SETUP".into(),
            ));
        }
        self.recording = true;
        Ok(vec![(headers::SESSION, session.to_string())])
    }

    /// Whether stream number `stream` has been set up (its RTP has a channel).
    fn set_up(&self, stream: usize) -> bool {
        self.channels.contains(&Some(stream))
    }

    /// The connection ended: its push session, if any, too.
    fn end(&mut self) {
        if let Some(push) = self.push.take() {
            push.feed.release(push.session);
        }
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The headers of a successful answer, or the status and reason of a refusal.
type Answer = Result<Vec<(headers::HeaderName, String)>, (StatusCode, String)>;

/// The camera of a push mount path (`/push/<camera id>`, and `/push/<camera id>/<stream>`).
fn camera_of(path: &str) -> Option<&str> {
    let id = path.strip_prefix("/push/")?.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The `key=value` (or `key="value"`) parameters of a digest `Authorization`.
fn digest_params(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((value, next)) => (value, next),
                None => (quoted, ""),
            }
        } else {
            match after.split_once(',') {
                Some((value, next)) => (value.trim(), next),
                None => (after.trim(), ""),
            }
        };
        out.insert(key, value.to_string());
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// The digest response (RFC 2617) a client knowing `password` makes to the challenge and
/// request in `params` (`username`, `realm`, `nonce`, `uri`, and `qop`, `nc`, `cnonce`).
fn digest_response(params: &HashMap<String, String>, password: &str, method: &str) -> String {
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or_default();
    let ha1 = md5_hex(&format!("{}:{}:{password}", get("username"), get("realm")));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    match get("qop") {
        "" => md5_hex(&format!("{ha1}:{}:{ha2}", get("nonce"))),
        qop => md5_hex(&format!(
            "{ha1}:{}:{}:{}:{qop}:{ha2}",
            get("nonce"),
            get("nc"),
            get("cnonce")
        )),
    }
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The encoding of an SDP media's first format (`H264` in `a=rtpmap:96 H264/90000`).
fn encoding(media: &gstreamer_sdp::SDPMediaRef) -> Option<String> {
    let rtpmap = media.attribute_val("rtpmap")?;
    let name = rtpmap.split_whitespace().nth(1)?.split('/').next()?;
    Some(name.to_uppercase())
}

#[cfg(test)]
mod server_tests {
    use super::*;

    #[test]
    fn digest_responses_are_those_of_rfc_2617() {
        let params = digest_params(
            r#"username="Mufasa", realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        );
        assert_eq!(params["uri"], "/dir/index.html");
        assert_eq!(params["nc"], "00000001");
        assert_eq!(
            digest_response(&params, "Circle Of Life", "GET"),
            params["response"]
        );
        assert_ne!(
            digest_response(&params, "circle of life", "GET"),
            params["response"]
        );
    }

    #[test]
    fn push_settings_take_a_certificate_with_its_key() {
        let settings = |cert: &str, key: &str| PushSettings {
            listen: "0.0.0.0:9555".into(),
            cert: cert.into(),
            key: key.into(),
        };
        assert!(settings("", "").validate().is_ok());
        assert!(settings("c.pem", "k.pem").validate().is_ok());
        assert!(settings("c.pem", "").validate().is_err());
        assert!(settings("", "k.pem").validate().is_err());
        let err = PushServer::start(
            &settings("/nonexistent/push.pem", "/nonexistent/push.key"),
            "",
        )
        .err()
        .expect("no certificate, no server");
        assert!(err.to_string().contains("/nonexistent/push.pem"), "{err}");
    }

    #[test]
    fn connections_are_bounded_and_their_slots_come_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let mut slots: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| Slot::take(&open).expect("a free slot"))
            .collect();
        assert!(Slot::take(&open).is_none());
        slots.pop();
        assert!(Slot::take(&open).is_some());
        drop(slots);
        assert_eq!(open.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn push_paths_name_their_camera() {
        assert_eq!(camera_of("/push/c0ffee"), Some("c0ffee"));
        assert_eq!(camera_of("/push/c0ffee/stream=0"), Some("c0ffee"));
        assert_eq!(camera_of("/push/"), None);
        assert_eq!(camera_of("/cam/c0ffee"), None);
    }

    fn connect(addr: &str) -> TcpStream {
        let socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        socket
    }

    /// Sends `request` and reads the response's head.
    fn ask(socket: &mut TcpStream, request: &str) -> String {
        socket.write_all(request.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).unwrap() == 0 {
                break;
            }
            got.push(byte[0]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// The protocol's refusals: no credential (a challenge), a push without video, RTP over
    /// UDP, another camera's mount, a request that is not RTSP.
    #[test]
    fn refused_pushes_say_why() {
        gst::init().unwrap();
        let server = PushServer::start(
            &PushSettings {
                listen: "127.0.0.1:0".into(),
                ..PushSettings::default()
            },
            "",
        )
        .unwrap();
        server.accept("cam1", "push-password-1");
        server.accept("cam2", "push-password-2");
        let url = server.url("cam1");
        let addr = url
            .trim_start_matches("rtsp://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut socket = connect(&addr);
        let head = ask(
            &mut socket,
            &format!("OPTIONS {url} RTSP/1.0\r\nCSeq: 1\r\n\r\n"),
        );
        assert!(
            head.starts_with("RTSP/1.0 200") && head.contains("ANNOUNCE"),
            "{head}"
        );

        let announce = |cseq: u32, auth: &str, sdp: &str| {
            format!(
                "ANNOUNCE {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            )
        };
        let video = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n";
        let audio = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=control:stream=0\r\n";
        let head = ask(&mut socket, &announce(2, "", video));
        assert!(head.starts_with("RTSP/1.0 401"), "{head}");
        let nonce = head
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        let authorization = |method: &str, uri: &str, password: &str| {
            let user = if password.ends_with('2') {
                "cam2"
            } else {
                "cam1"
            };
            let params: HashMap<String, String> = [
                ("username", user),
                ("realm", REALM),
                ("nonce", nonce.as_str()),
                ("uri", uri),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            format!(
                "Authorization: Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\"\r\n",
                digest_response(&params, password, method)
            )
        };
        // A wrong password, no video, then a push of video.
        for (cseq, password, sdp, status) in [
            (3, "wrong", video, "401"),
            (4, "push-password-1", audio, "415"),
            (5, "push-password-1", video, "200"),
        ] {
            let auth = authorization("ANNOUNCE", &url, password);
            let head = ask(&mut socket, &announce(cseq, &auth, sdp));
            assert!(head.starts_with(&format!("RTSP/1.0 {status}")), "{head}");
        }
        // RTP over UDP, then over the connection.
        let setup = format!("{url}/stream=0");
        for (cseq, transport, status) in [
            (6, "RTP/AVP;unicast;client_port=5000-5001", "461"),
            (7, "RTP/AVP/TCP;unicast;interleaved=0-1", "200"),
        ] {
            let auth = authorization("SETUP", &setup, "push-password-1");
            let head = ask(
                &mut socket,
                &format!(
                    "SETUP {setup} RTSP/1.0\r\nCSeq: {cseq}\r\n{auth}Transport: {transport};mode=record\r\n\r\n"
                ),
            );
            assert!(head.starts_with(&format!("RTSP/1.0 {status}")), "{head}");
        }

        // The connection pushes cam1: not cam2 as well, even with cam2's credential.
        let other = format!("{}/stream=0", url.replace("cam1", "cam2"));
        let auth = authorization("SETUP", &other, "push-password-2");
        let head = ask(
            &mut socket,
            &format!(
                "SETUP {other} RTSP/1.0\r\nCSeq: 8\r\n{auth}Transport: RTP/AVP/TCP;unicast;interleaved=2-3;mode=record\r\n\r\n"
            ),
        );
        assert!(head.starts_with("RTSP/1.0 403"), "{head}");

        // A camera not taken here: nothing there.
        let other = url.replace("cam1", "cam3");
        let mut socket = connect(&addr);
        let head = ask(
            &mut socket,
            &format!("ANNOUNCE {other} RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 0\r\n\r\n"),
        );
        assert!(head.starts_with("RTSP/1.0 404"), "{head}");

        // Not RTSP: the connection is closed.
        let mut socket = connect(&addr);
        socket
            .write_all(b"\x16\x03\x01 not rtsp at all\r\n\r\n")
            .unwrap();
        let mut rest = Vec::new();
        assert!(matches!(socket.read_to_end(&mut rest), Ok(0)), "{rest:?}");
    }
}

#[cfg(test)]
mod tests {
    use crate::config::CameraSettings;
    use crate::pipeline::{PipelineEvent, Relay, Source, Targets};
    use crate::restream::Restream;
    use cloudcam_core::config::RestreamAuth;
    use gstreamer as gst;
    use gstreamer::prelude::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// An in-process encoder pushing H.264 and AAC to `url` as `user`.
    fn pusher(url: &str, user: &str, password: &str) -> gst::Element {
        let pipeline = gst::parse::launch(&format!(
            "videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=25/1 \
             ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=5 ! h264parse \
             ! rtspclientsink name=push location={url} protocols=tcp user-id={user} \
             user-pw={password} \
             audiotestsrc is-live=true ! audioconvert ! avenc_aac ! aacparse ! push."
        ))
        .unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        pipeline
    }

    /// Whether `pipeline` posts an error within `within`.
    fn fails(pipeline: &gst::Element, within: Duration) -> bool {
        let bus = pipeline.bus().unwrap();
        bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(within.as_nanos() as u64),
            &[gst::MessageType::Error],
        )
        .is_some()
    }

    /// A push with the camera's credential reaches its relay, which sends it on like a pulled
    /// camera's; a wrong credential or another camera's mount is refused, and a second push
    /// takes the camera over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_reaches_the_relay_and_only_with_its_credential() {
        gst::init().unwrap();
        let auth = RestreamAuth {
            user: "recorder".into(),
            password: "recorder-password".into(),
        };
        let server = Restream::start("127.0.0.1:0", "", auth).unwrap();
        let feed = server.accept_push("cam1", "push-password-1");
        server.accept_push("cam2", "push-password-2");
        let url = server.push_url("cam1");
        let janus = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        janus
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let targets = Targets {
            janus: vec![("127.0.0.1".into(), janus.local_addr().unwrap().port())],
            ..Targets::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let counters = Arc::new(crate::pipeline::Counters::default());
        let _relay = Relay::start(
            &Source {
                url: String::new(),
                secret: None,
                push: Some(feed.clone()),
            },
            &targets,
            &CameraSettings::default(),
            counters.clone(),
            Arc::new(move |e| {
                let _ = tx.lock().unwrap().send(e);
            }),
        )
        .unwrap();

        // Refused: a wrong password, another camera's credential.
        for (user, password) in [("cam1", "wrong"), ("cam2", "push-password-2")] {
            let refused = pusher(&url, user, password);
            assert!(fails(&refused, Duration::from_secs(10)), "{user}");
            refused.set_state(gst::State::Null).unwrap();
        }
        assert!(!feed.pushing());

        let push = pusher(&url, "cam1", "push-password-1");
        // Both streams are linked: the video's first frame, and the audio.
        let (mut first, mut audio) = (false, false);
        while !(first && audio) {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(PipelineEvent::FirstFrame) => first = true,
                Ok(PipelineEvent::Audio { .. }) => audio = true,
                Ok(PipelineEvent::Failed { reason, .. }) => panic!("{reason}"),
                Ok(_) => {}
                Err(_) => panic!("frame {first}, audio {audio}: not both within 10 s"),
            }
        }
        assert!(feed.pushing());
        // And the frames keep coming (25 a second).
        let frames = || counters.frames.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while frames() < 50 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} frames in 5 s",
                frames()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut packet = [0u8; 2048];
        let n = janus.recv(&mut packet).expect("RTP at the target");
        assert!(n > 12 && packet[1] & 0x7f == 96);

        // One push at a time: a second one takes over, the first is cut and the relay hears
        // that its session ended.
        let second = pusher(&url, "cam1", "push-password-1");
        // (rtspclientsink only warns that the server closed the connection.)
        let cut = push.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Error, gst::MessageType::Warning],
        );
        assert!(cut.is_some(), "the first push was not cut");
        push.set_state(gst::State::Null).unwrap();
        let ended = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(PipelineEvent::Eos) => break true,
                Ok(_) => continue,
                Err(_) => break false,
            }
        };
        assert!(ended, "the take-over did not end the first session");
        assert!(feed.pushing());

        // The second push ends: the camera is free again.
        second.set_state(gst::State::Null).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while feed.pushing() {
            assert!(
                std::time::Instant::now() < deadline,
                "the end of the push was not noticed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
