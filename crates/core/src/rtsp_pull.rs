//! Pulling an RTSP session over TCP with [retina] into a GStreamer bin that stands where an
//! `rtspsrc` would: once the session plays, the bin gets a pad per stream (`application/x-rtp`
//! with the caps the SDP gives it, as `rtpbin` would) and then `no-more-pads`, and every RTP
//! packet is pushed on its stream's pad as the server sent it.
//!
//! Why not `rtspsrc`: over TCP, `rtspsrc` hands each packet through `rtpbin` (session,
//! SSRC and payload-type demuxers, a jitter buffer or [`crate::rtp_timestamper`]) on its own
//! reader thread per camera, and that path is most of what a relay or a recorder spends per
//! camera. Here every session is one task on one of a few shared threads ([`THREADS`]) that reads
//! the interleaved frames in large reads and pushes each packet on once; the presentation
//! time is stamped as [`crate::rtp_timestamper`] does (the stream's first arrival plus the
//! RTP clock since then). retina does the RTSP: authentication (basic and digest),
//! keep-alives, control URLs and the camera quirks it knows of.
//!
//! Only for `rtsp://` over TCP; UDP and `rtsps://` stay with `rtspsrc`.

use crate::rtp_timestamper::Timeline;
use futures::{FutureExt, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use retina::client::{
    Credentials, InitialTimestampPolicy, PacketItem, PlayOptions, Session, SessionOptions,
    SetupOptions, Transport,
};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

/// The threads every pulled session runs on: a few for all of them (as a Go relay's
/// goroutines share its threads), each a single-threaded runtime that takes sessions in turn.
/// A session's packets are read and pushed on by the thread that polled its socket; a
/// work-stealing runtime woke another thread for about every packet.
static THREADS: LazyLock<Vec<tokio::runtime::Handle>> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    (0..threads)
        .map(|i| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("an RTSP pull runtime starts");
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("rtsp-pull-{i}"))
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .expect("an RTSP pull thread starts");
            handle
        })
        .collect()
});

/// The thread the next session runs on.
fn next_thread() -> &'static tokio::runtime::Handle {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    &THREADS[n % THREADS.len()]
}

/// What to pull.
#[derive(Clone)]
pub struct PullRequest {
    /// `rtsp://` URL, without credentials (query parameters are sent as they are).
    pub url: String,
    /// Username and password, for basic or digest authentication.
    pub credentials: Option<(String, String)>,
    /// How long connecting and DESCRIBE may take.
    pub connect_timeout: Duration,
    /// Read what has arrived this often rather than as each packet arrives: fewer wake-ups
    /// for a consumer that can wait (a recording); `None` for a live relay.
    pub read_every: Option<Duration>,
}

impl PullRequest {
    /// What to pull of `url`, whose credentials, if it carries any (`rtsp://user:pass@…`),
    /// are taken out of it (they are sent as authentication, never in the URL).
    pub fn from_url(url: &str, connect_timeout: Duration) -> Self {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let (url, credentials) = match url::Url::parse(url) {
            Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
                let credentials = (decode(u.username()), decode(u.password().unwrap_or("")));
                let _ = u.set_username("");
                let _ = u.set_password(None);
                (u.to_string(), Some(credentials))
            }
            _ => (url.to_string(), None),
        };
        Self {
            url,
            credentials,
            connect_timeout,
            read_every: None,
        }
    }

    /// Whether `url` and `transport` (`tcp`, `udp` or `auto`) are for this source rather than
    /// `rtspsrc`: `rtsp://` over TCP.
    pub fn handles(url: &str, transport: &str) -> bool {
        transport == "tcp"
            && url::Url::parse(url).is_ok_and(|u| u.scheme() == "rtsp" && u.has_host())
    }
}

/// Why a session failed, as far as can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// No connection, no answer in time, the path is unknown, or the connection broke.
    Unreachable,
    /// The server refused the credentials (401).
    AuthFailed,
    Other,
}

/// What a pulled session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// DESCRIBE answered: the caps of each stream that will play (its pad comes once the
    /// session plays), in the SDP's order. Reported before any pad is added.
    Described(Vec<gst::Caps>),
    /// PLAY answered; the pads are added and packets follow.
    Opened,
    Failed {
        kind: PullFailure,
        reason: String,
    },
    /// The server closed the session; EOS was pushed on every pad.
    Ended,
}

pub type PullEvents = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// The source bin and the session that feeds it; dropping it ends the session.
pub struct RtspPull {
    bin: gst::Bin,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Default for RtspPull {
    fn default() -> Self {
        Self::new()
    }
}

impl RtspPull {
    pub fn new() -> Self {
        Self {
            bin: gst::Bin::with_name("pull"),
            task: Mutex::new(None),
        }
    }

    /// The source element, to add to a pipeline and watch for `pad-added` and
    /// `no-more-pads`.
    pub fn element(&self) -> &gst::Element {
        self.bin.upcast_ref()
    }

    /// Starts the session; call once the pipeline plays. `events` is called from the
    /// session's task.
    pub fn start(&self, request: PullRequest, events: PullEvents) {
        let bin = self.bin.clone();
        let task = next_thread().spawn(async move {
            let ended = match run(&bin, &request, &events).await {
                Ok(()) => PullEvent::Ended,
                Err((kind, reason)) => PullEvent::Failed { kind, reason },
            };
            events(ended);
        });
        if let Some(earlier) = self.task.lock().expect("pull task lock").replace(task) {
            earlier.abort();
        }
    }

    /// Ends the session (its connection is closed); nothing more is pushed or reported.
    pub fn stop(&self) {
        if let Some(task) = self.task.lock().expect("pull task lock").take() {
            task.abort();
        }
    }
}

impl Drop for RtspPull {
    fn drop(&mut self) {
        self.stop();
    }
}

type Failure = (PullFailure, String);

async fn run(bin: &gst::Bin, request: &PullRequest, events: &PullEvents) -> Result<(), Failure> {
    let url = url::Url::parse(&request.url)
        .map_err(|e| (PullFailure::Other, format!("the URL does not parse: {e}")))?;
    let options = SessionOptions::default()
        .creds(
            request
                .credentials
                .clone()
                .filter(|(user, _)| !user.is_empty())
                .map(|(username, password)| Credentials { username, password }),
        )
        .user_agent(format!("cloudcam/{}", env!("CARGO_PKG_VERSION")));
    let mut session =
        tokio::time::timeout(request.connect_timeout, Session::describe(url, options))
            .await
            .map_err(|_| {
                (
                    PullFailure::Unreachable,
                    format!(
                        "cannot reach the camera: no answer within {} s",
                        request.connect_timeout.as_secs_f32()
                    ),
                )
            })?
            .map_err(|e| failure(&e))?;

    // Each of retina's streams (it leaves out media it cannot parse) with its SDP medium's
    // caps; only audio and video are set up.
    let sdp = gstreamer_sdp::SDPMessage::parse_buffer(session.sdp())
        .map_err(|_| (PullFailure::Other, "the camera's SDP does not parse".into()))?;
    let described = stream_caps(&sdp, session.streams().iter().map(|s| s.rtp_payload_type()));
    let mut streams = Vec::new();
    for (i, caps) in described.into_iter().enumerate() {
        let Some(caps) = caps else { continue };
        let media = caps.structure(0).and_then(|s| s.get::<&str>("media").ok());
        if !matches!(media, Some("video" | "audio")) {
            continue;
        }
        session
            .setup(
                i,
                SetupOptions::default().transport(Transport::Tcp(Default::default())),
            )
            .await
            .map_err(|e| failure(&e))?;
        streams.push((i, caps));
    }
    if streams.is_empty() {
        return Err((
            PullFailure::Other,
            "the camera offers no audio or video stream".into(),
        ));
    }
    events(PullEvent::Described(
        streams.iter().map(|(_, c)| c.clone()).collect(),
    ));
    let mut session = session
        .play(PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Ignore))
        .await
        .map_err(|e| failure(&e))?;

    // retina's stream index → (pad, timeline).
    let mut pads: Vec<Option<(gst::Pad, Timeline)>> = Vec::new();
    for (n, (i, caps)) in streams.iter().enumerate() {
        let pad = add_pad(bin, n, caps).map_err(|e| {
            (
                PullFailure::Other,
                format!("cannot take the camera's stream: {e}"),
            )
        })?;
        let rate = caps
            .structure(0)
            .and_then(|s| s.get::<i32>("clock-rate").ok())
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(0);
        if pads.len() <= *i {
            pads.resize_with(i + 1, || None);
        }
        pads[*i] = Some((pad, Timeline::new(rate)));
    }
    bin.no_more_pads();
    events(PullEvent::Opened);

    loop {
        let item = match session.next().now_or_never() {
            Some(item) => item,
            None => {
                if let Some(every) = request.read_every {
                    tokio::time::sleep(every).await;
                }
                session.next().await
            }
        };
        let Some(item) = item else { break };
        let packet = match item.map_err(|e| failure(&e))? {
            PacketItem::Rtp(packet) => packet,
            _ => continue,
        };
        let Some(Some((pad, timeline))) = pads.get_mut(packet.stream_id()) else {
            continue;
        };
        let raw = packet.raw();
        let rtp_time = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let mut buffer = gst::Buffer::from_slice(raw.to_vec());
        // Only a stream's first packet needs its arrival time.
        let arrival = if timeline.started() {
            None
        } else {
            bin.current_running_time()
        };
        buffer
            .get_mut()
            .expect("a new buffer is writable")
            .set_pts(timeline.pts(rtp_time, arrival));
        match pad.push(buffer) {
            Ok(_) | Err(gst::FlowError::Flushing | gst::FlowError::NotLinked) => {}
            Err(e) => {
                return Err((
                    PullFailure::Other,
                    format!("the pipeline refused the camera's stream: {e:?}"),
                ));
            }
        }
    }
    // The end reaches the pipeline's sinks, as `rtspsrc`'s would.
    for (pad, _) in pads.iter().flatten() {
        let _ = pad.push_event(gst::event::Eos::new());
    }
    Ok(())
}

/// The caps of the SDP medium each of `payload_types` (retina's streams, in order) stands
/// for: retina leaves out media it cannot parse, so each is the next medium of its payload
/// type. `None` where the medium gives no RTP caps.
fn stream_caps(
    sdp: &gstreamer_sdp::SDPMessage,
    payload_types: impl Iterator<Item = u8>,
) -> Vec<Option<gst::Caps>> {
    let mut medias = sdp.medias();
    payload_types
        .map(|pt| {
            let media =
                medias.find(|m| m.format(0).and_then(|f| f.parse::<u8>().ok()) == Some(pt))?;
            media_caps(media)
        })
        .collect()
}

/// The caps of the RTP packets of an SDP medium (its first format), as `rtpbin` would give them.
pub fn media_caps(media: &gstreamer_sdp::SDPMediaRef) -> Option<gst::Caps> {
    let pt = media.format(0)?.parse().ok()?;
    let mut caps = media.caps_from_media(pt)?;
    let caps_mut = caps.make_mut();
    media.attributes_to_caps(caps_mut).ok()?;
    caps_mut.structure_mut(0)?.set_name("application/x-rtp");
    Some(caps)
}

/// A pad of `bin` for stream number `stream` with `caps` (which it answers before any packet
/// has passed), added (and so linked by the `pad-added` handler) at once.
pub fn add_pad(
    bin: &gst::Bin,
    stream: usize,
    caps: &gst::Caps,
) -> Result<gst::Pad, gst::glib::BoolError> {
    let pad: gst::Pad = gst::GhostPad::builder(gst::PadDirection::Src)
        .name(format!("stream_{stream}"))
        .build()
        .upcast();
    pad.set_active(true)?;
    // Sticky: kept on the pad and sent ahead of its first packet.
    let _ = pad.push_event(gst::event::StreamStart::new(&format!(
        "{}-{stream}",
        bin.name()
    )));
    let _ = pad.push_event(gst::event::Caps::new(caps));
    let _ = pad.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
    bin.add_pad(&pad)?;
    Ok(pad)
}

/// What a retina error means for the camera, and its first line (the rest is connection
/// context). retina's errors are opaque but for the status code, so a refused or broken
/// connection is told by its message.
fn failure(e: &retina::Error) -> Failure {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").trim().to_string();
    match e.status_code() {
        Some(401) => (
            PullFailure::AuthFailed,
            "the camera rejected the username or password (RTSP 401 Unauthorized)".into(),
        ),
        Some(404) => (
            PullFailure::Unreachable,
            format!("cannot reach the camera's stream: {first}"),
        ),
        Some(_) => (PullFailure::Other, first),
        None if first.starts_with("Unable to connect")
            || first.starts_with("Error reading from RTSP peer")
            || first.starts_with("Error writing to RTSP peer") =>
        {
            (
                PullFailure::Unreachable,
                format!("cannot reach the camera: {first}"),
            )
        }
        None => (PullFailure::Other, first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
        m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
        a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\na=control:stream=0\r\n\
        m=application 0 RTP/AVP 107\r\na=rtpmap:107 vnd.onvif.metadata/90000\r\na=control:stream=1\r\n\
        m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000/1\r\n\
        a=fmtp:97 streamtype=5;mode=AAC-hbr;config=1408;sizelength=13;indexlength=3;indexdeltalength=3\r\n\
        a=control:stream=2\r\n";

    #[test]
    fn each_stream_gets_the_caps_of_its_sdp_medium() {
        gst::init().unwrap();
        let sdp = gstreamer_sdp::SDPMessage::parse_buffer(SDP.as_bytes()).unwrap();
        // retina left the metadata medium out.
        let caps = stream_caps(&sdp, [96u8, 97].into_iter());
        assert_eq!(caps.len(), 2);
        let video = caps[0].as_ref().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(video.name(), "application/x-rtp");
        assert_eq!(video.get::<&str>("media").unwrap(), "video");
        assert_eq!(video.get::<&str>("encoding-name").unwrap(), "H264");
        assert_eq!(video.get::<i32>("clock-rate").unwrap(), 90_000);
        assert_eq!(video.get::<i32>("payload").unwrap(), 96);
        let audio = caps[1].as_ref().unwrap().structure(0).unwrap().to_owned();
        assert_eq!(audio.get::<&str>("media").unwrap(), "audio");
        assert_eq!(audio.get::<&str>("encoding-name").unwrap(), "MPEG4-GENERIC");
        assert_eq!(audio.get::<&str>("config").unwrap(), "1408");
        // All three, when retina keeps them all.
        let caps = stream_caps(&sdp, [96u8, 107, 97].into_iter());
        let media: Vec<_> = caps
            .iter()
            .map(|c| {
                c.as_ref()
                    .and_then(|c| c.structure(0)?.get::<String>("media").ok())
            })
            .collect();
        assert_eq!(
            media,
            [
                Some("video".into()),
                Some("application".into()),
                Some("audio".into())
            ]
        );
    }

    #[test]
    fn credentials_in_a_url_are_taken_out_of_it() {
        let r = PullRequest::from_url(
            "rtsp://ad%40min:p%3Ass@cam:554/live?ch=1",
            Duration::from_secs(1),
        );
        assert_eq!(r.url, "rtsp://cam:554/live?ch=1");
        assert_eq!(r.credentials, Some(("ad@min".into(), "p:ss".into())));
        let r = PullRequest::from_url("rtsp://cam/live", Duration::from_secs(1));
        assert_eq!(r.url, "rtsp://cam/live");
        assert_eq!(r.credentials, None);
    }

    #[test]
    fn only_rtsp_over_tcp_is_pulled_here() {
        assert!(PullRequest::handles("rtsp://cam:554/live?ch=1", "tcp"));
        assert!(!PullRequest::handles("rtsp://cam:554/live", "udp"));
        assert!(!PullRequest::handles("rtsp://cam:554/live", "auto"));
        assert!(!PullRequest::handles("rtsps://cam:322/live", "tcp"));
        assert!(!PullRequest::handles("not a url", "tcp"));
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        gst::init().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pull = RtspPull::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        pull.start(
            PullRequest {
                url: format!("rtsp://127.0.0.1:{port}/x"),
                credentials: None,
                connect_timeout: Duration::from_secs(5),
                read_every: None,
            },
            Arc::new(move |e| {
                let _ = tx.send(e);
            }),
        );
        let event = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let PullEvent::Failed { kind, reason } = event else {
            panic!("{event:?}");
        };
        assert_eq!(kind, PullFailure::Unreachable, "{reason}");
        assert!(reason.starts_with("cannot reach the camera"), "{reason}");
    }
}
