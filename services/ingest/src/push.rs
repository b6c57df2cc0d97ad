//! Push ingest: cameras that send their stream to the worker instead of being pulled — an
//! encoder, OBS, ffmpeg or GStreamer pushing directly, or an edge agent on a site behind NAT.
//!
//! The worker's RTSP server ([`crate::restream`]) takes a pushed camera's stream at
//! `/push/<camera id>` (RTSP RECORD, digest-authenticated with the camera's push credential).
//! [`PushMedia`] makes one stream per medium the pusher announces; each RTP packet, as the
//! pusher sent it, goes through the camera's [`PushFeed`] to its relay
//! ([`crate::pipeline::Relay`]), which treats it exactly as a pulled camera's RTP from
//! `rtspsrc`: the same fan-out to Janus, the re-stream, snapshots and recordings. Nothing is
//! decoded. One push at a time per camera: a new push (with the camera's credential) takes the
//! camera over and the earlier one is cut, so a pusher whose old connection is still half-open
//! (an edge agent whose uplink dropped and came back) is not locked out by it.

use cloudcam_core::codec::VideoCodec;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp_server;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::subclass::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Carries a camera's push sessions to its relay while one runs (shared by the server's media
/// and the relay); between relay runs, what is pushed is dropped.
#[derive(Default)]
pub struct PushFeed {
    sink: Mutex<Option<PushSink>>,
    /// The session being pushed (0: none), and its RTSP client (closed when the camera's push
    /// credential is revoked).
    session: Mutex<(u64, Option<glib::WeakRef<rtsp_server::RTSPClient>>)>,
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

    /// Session `session` starts; one under way is ended and its client cut (the relay starts
    /// afresh on the new one).
    fn claim(&self, session: u64, client: Option<rtsp_server::RTSPClient>) {
        let mut current = self.session.lock().expect("push session lock");
        let earlier = (current.0 != 0 && current.0 != session).then(|| current.1.take());
        *current = (session, client.map(|c| c.downgrade()));
        drop(current);
        if let Some(earlier) = earlier {
            tracing::info!("a new push took the camera over; the earlier one is cut");
            self.send(PushEvent::Ended);
            if let Some(client) = earlier.and_then(|c| c.upgrade()) {
                cut_client(&client);
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

    /// Ends the push under way (its credential was revoked): its client is disconnected.
    pub fn cut(&self) {
        let client = self.session.lock().expect("push session lock").1.clone();
        if let Some(client) = client.and_then(|c| c.upgrade()) {
            cut_client(&client);
        }
    }
}

/// Disconnects a pushing client. Its socket is shut down first: `RTSPClient::close` ends a TLS
/// connection at the TLS level only (GStreamer 1.22), after which the server stops reading the
/// socket but leaves it open, so the cut pusher would block on its full send buffer instead of
/// seeing its connection end. (Hand-written through the C API: the bindings leave out the
/// client's connection.)
fn cut_client(client: &rtsp_server::RTSPClient) {
    use gstreamer::glib::translate::{ToGlibPtr, from_glib_none};
    // SAFETY: `client` is alive for the call; its connection (transfer none) is alive while
    // the client is and has not been closed, which happens only below; the socket is taken
    // with a reference of its own.
    let socket: Option<gio::Socket> = unsafe {
        let connection = rtsp_server::ffi::gst_rtsp_client_get_connection(client.to_glib_none().0);
        if connection.is_null() {
            None
        } else {
            from_glib_none(gstreamer_rtsp::ffi::gst_rtsp_connection_get_read_socket(
                connection,
            ))
        }
    };
    if let Some(socket) = socket {
        let _ = socket.shutdown(true, true);
    }
    client.close();
}

/// The encoding of an SDP media's first format (`H264` in `a=rtpmap:96 H264/90000`).
fn encoding(media: &gstreamer_sdp::SDPMediaRef) -> Option<String> {
    let rtpmap = media.attribute_val("rtpmap")?;
    let name = rtpmap.split_whitespace().nth(1)?.split('/').next()?;
    Some(name.to_uppercase())
}

/// The caps of the RTP packets of an SDP medium (its first format), as `rtpbin` would give them.
fn stream_caps(media: &gstreamer_sdp::SDPMediaRef) -> Option<gst::Caps> {
    let pt = media.format(0)?.parse().ok()?;
    let mut caps = media.caps_from_media(pt)?;
    let caps_mut = caps.make_mut();
    media.attributes_to_caps(caps_mut).ok()?;
    caps_mut.structure_mut(0)?.set_name("application/x-rtp");
    Some(caps)
}

mod imp {
    use super::*;

    /// See [`super::PushMedia`].
    #[derive(Default)]
    pub struct PushMedia {
        pub(super) feed: Mutex<Option<(Arc<PushFeed>, u64)>>,
        /// The caps of each stream's packets, from the SDP.
        caps: Mutex<Vec<gst::Caps>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for PushMedia {
        const NAME: &'static str = "CloudcamPushMedia";
        type Type = super::PushMedia;
        type ParentType = rtsp_server::RTSPMedia;
    }

    impl ObjectImpl for PushMedia {}

    impl RTSPMediaImpl for PushMedia {
        /// Makes one stream per medium the pusher announces (its RTP to an `appsink`), after
        /// checking that it sends video cloudcam relays and that nobody else pushes.
        fn handle_sdp(&self, sdp: &gstreamer_sdp::SDPMessageRef) -> Result<(), gst::LoggableError> {
            let fail = |why: &str| Err(gst::loggable_error!(CAT, "push refused: {why}"));
            let Some((feed, session)) = self.feed.lock().expect("push media lock").clone() else {
                return fail("the camera is not taken here");
            };
            let video = sdp.medias().any(|m| {
                m.media() == Some("video")
                    && encoding(m).is_some_and(|e| VideoCodec::from_name(&e).is_some())
            });
            if !video {
                tracing::warn!("a push without H.264 or H.265 video was refused");
                return fail("no H.264 or H.265 video announced");
            }
            let client =
                rtsp_server::RTSPContext::with_current_context(|ctx| ctx.client().cloned())
                    .flatten();
            feed.claim(session, client);
            let streams = self.add_streams(sdp);
            if streams.is_err() {
                feed.release(session);
            }
            streams?;
            // A session that does not start leaves the camera free for the next push.
            let handled = self.parent_handle_sdp(sdp);
            if handled.is_err() {
                feed.release(session);
            }
            handled
        }

        fn setup_rtpbin(&self, rtpbin: &gst::Element) -> Result<(), gst::LoggableError> {
            let media = self.obj().downgrade();
            rtpbin.connect_pad_added(move |_, pad| {
                let name = pad.name();
                let Some(stream) = name
                    .strip_prefix("recv_rtp_sink_")
                    .and_then(|n| n.parse().ok())
                else {
                    return;
                };
                if let Some(media) = media.upgrade() {
                    media.imp().take_rtp(stream, pad);
                }
            });
            self.parent_setup_rtpbin(rtpbin)
        }
    }

    impl PushMedia {
        /// One stream per medium the pusher announced. Each needs an element to end in (a
        /// `fakesink`, which never sees a packet: see `setup_rtpbin`); the caps of its packets
        /// come from the SDP.
        fn add_streams(
            &self,
            sdp: &gstreamer_sdp::SDPMessageRef,
        ) -> Result<(), gst::LoggableError> {
            let media = self.obj();
            let bin = media
                .element()
                .downcast::<gst::Bin>()
                .map_err(|_| gst::loggable_error!(CAT, "the media's element is not a bin"))?;
            let mut all = Vec::new();
            for (stream, medium) in sdp.medias().enumerate() {
                let caps = stream_caps(medium).ok_or_else(|| {
                    gst::loggable_error!(CAT, "stream {stream} announces no RTP format")
                })?;
                all.push(caps);
                let sink = gst::ElementFactory::make("fakesink")
                    .name(format!("depay{stream}"))
                    .property("sync", false)
                    .property("async", false)
                    .build()
                    .map_err(|e| gst::loggable_error!(CAT, "cannot make a sink: {e}"))?;
                bin.add(&sink)
                    .map_err(|e| gst::loggable_error!(CAT, "cannot add a sink: {e}"))?;
                let pad = sink.static_pad("sink").expect("a fakesink has a sink pad");
                media.create_stream(&sink, &pad);
            }
            *self.caps.lock().expect("push media lock") = all;
            Ok(())
        }

        /// Hands each RTP packet of stream `stream`, as it enters `rtpbin` (`pad`), straight
        /// to the camera's feed on the thread that received it: the packets skip `rtpbin`'s
        /// session, jitter buffer (a queue and a thread per stream) and demuxers, which a
        /// relay forwarding over TCP, in order, does not need. RTCP still goes to `rtpbin`.
        fn take_rtp(&self, stream: usize, pad: &gst::Pad) {
            let Some((feed, session)) = self.feed.lock().expect("push media lock").clone() else {
                return;
            };
            let all = self.caps.lock().expect("push media lock").clone();
            let streams = all.len();
            let Some(caps) = all.into_iter().nth(stream) else {
                return;
            };
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
                move |_, info| {
                    match info.data.take() {
                        Some(gst::PadProbeData::Buffer(buffer)) => {
                            feed.rtp(session, stream, streams, &caps, buffer)
                        }
                        Some(gst::PadProbeData::BufferList(list)) => {
                            for buffer in list.iter_owned() {
                                feed.rtp(session, stream, streams, &caps, buffer);
                            }
                        }
                        other => info.data = other,
                    }
                    gst::PadProbeReturn::Handled
                },
            );
        }
    }

    /// See [`super::PushFactory`].
    #[derive(Default)]
    pub struct PushFactory;

    #[glib::object_subclass]
    impl ObjectSubclass for PushFactory {
        const NAME: &'static str = "CloudcamPushFactory";
        type Type = super::PushFactory;
        type ParentType = rtsp_server::RTSPMediaFactory;
    }

    impl ObjectImpl for PushFactory {}

    impl RTSPMediaFactoryImpl for PushFactory {
        /// An empty bin: [`PushMedia`] adds the streams the pusher announces.
        fn create_element(&self, _url: &gstreamer_rtsp::RTSPUrl) -> Option<gst::Element> {
            Some(gst::Bin::new().upcast())
        }
    }

    static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
        gst::DebugCategory::new(
            "cloudcam-push",
            gst::DebugColorFlags::empty(),
            Some("cloudcam push ingest"),
        )
    });
}

glib::wrapper! {
    /// A push session's media: its streams are made from the SDP the pusher announces.
    pub struct PushMedia(ObjectSubclass<imp::PushMedia>) @extends rtsp_server::RTSPMedia;
}

glib::wrapper! {
    /// The factory of a pushed camera's mount (`/push/<camera id>`, RECORD only).
    pub struct PushFactory(ObjectSubclass<imp::PushFactory>)
        @extends rtsp_server::RTSPMediaFactory;
}

impl PushFactory {
    /// The mount of a camera whose pushes go to `feed`; clients holding `role` may push.
    pub fn new(feed: Arc<PushFeed>, role: &str) -> Self {
        let factory: Self = glib::Object::new();
        factory.set_transport_mode(rtsp_server::RTSPTransportMode::RECORD);
        factory.set_media_gtype(PushMedia::static_type());
        // Packets are passed on as they come (over TCP they come in order).
        factory.set_latency(0);
        factory.set_shared(false);
        factory.add_role_from_structure(
            &gst::Structure::builder(role)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                .field(rtsp_server::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                .build(),
        );
        factory.connect_media_constructed(move |_, media| {
            let Some(media) = media.downcast_ref::<PushMedia>() else {
                return;
            };
            let session = SESSIONS.fetch_add(1, Ordering::Relaxed);
            *media.imp().feed.lock().expect("push media lock") = Some((feed.clone(), session));
            let feed = feed.clone();
            media.connect_unprepared(move |_| feed.release(session));
        });
        factory
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
