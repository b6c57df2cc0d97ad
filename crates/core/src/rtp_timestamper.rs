//! The jitter buffer an RTSP-over-TCP stream does not need.
//!
//! `rtspsrc` puts an `rtpjitterbuffer` behind every stream it receives. Over TCP (interleaved)
//! packets cannot arrive out of order or be lost, so all that buffer does for a relay is stamp
//! each packet with a presentation time and hand it to another thread: one context switch per
//! packet, about a sixth of a relay's CPU. [`skip_jitter_buffer`] gives `rtspsrc`'s `rtpbin` a
//! [`RtpTimestamper`] instead: it stamps the presentation time the way the jitter buffer's mode
//! `none` does (the time of the stream's first packet plus the RTP clock since then; over TCP
//! rtspsrc stamps only each stream's first packet) and passes the packet on in the thread that
//! read it. The times follow the sender's clock: right for a relay, which re-sends RTP time;
//! not for a consumer that maps them onto the wall clock, as a server's burst at connect would
//! put them ahead of it.
//!
//! Only for streams that arrive in order: over UDP the jitter buffer's reordering is needed.

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_base as gst_base;

/// Presentation times from RTP timestamps: the first packet's arrival, plus the RTP clock
/// elapsed since it (unwrapping the 32-bit timestamp). Sans-IO.
#[derive(Debug, Default, Clone)]
pub struct Timeline {
    clock_rate: u32,
    /// The last packet's RTP timestamp, and the same extended to 64 bits.
    last: Option<(u32, u64)>,
    /// The first packet's extended RTP timestamp and arrival time.
    base: Option<(u64, gst::ClockTime)>,
}

impl Timeline {
    /// Starts a new timeline at the next packet, for a stream at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            ..Self::default()
        }
    }

    /// A stream's caps were (re)sent: the timeline goes on unless the clock rate changed.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        if clock_rate != self.clock_rate {
            *self = Self::new(clock_rate);
        }
    }

    /// Whether a packet has placed the timeline (later packets need no arrival time).
    pub fn started(&self) -> bool {
        self.base.is_some()
    }

    /// The presentation time of a packet with timestamp `rtp_time` that arrived at `arrival`
    /// (only the first packet's arrival is used). `None` before a packet with an arrival time.
    pub fn pts(
        &mut self,
        rtp_time: u32,
        arrival: Option<gst::ClockTime>,
    ) -> Option<gst::ClockTime> {
        if self.clock_rate == 0 {
            return None;
        }
        // Extended timestamps start at 2^32, so that a packet stamped before the first one
        // (B-frames, a reordering sender) does not wrap below zero.
        let ext = match self.last {
            None => u64::from(rtp_time) + (1 << 32),
            Some((last, last_ext)) => {
                let step = i64::from(rtp_time.wrapping_sub(last) as i32);
                last_ext.saturating_add_signed(step)
            }
        };
        self.last = Some((rtp_time, ext));
        let (base_ext, base_time) = match self.base {
            Some(base) => base,
            None => *self.base.insert((ext, arrival?)),
        };
        let ticks = ext as i128 - base_ext as i128;
        let ns = ticks * 1_000_000_000 / i128::from(self.clock_rate);
        let pts = base_time.nseconds() as i128 + ns;
        Some(gst::ClockTime::from_nseconds(
            pts.clamp(0, u64::MAX as i128) as u64,
        ))
    }
}

glib::wrapper! {
    /// An element standing in for `rtpjitterbuffer` in `rtpbin`: see the module docs.
    pub struct RtpTimestamper(ObjectSubclass<imp::RtpTimestamper>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

impl Default for RtpTimestamper {
    fn default() -> Self {
        glib::Object::new()
    }
}

/// Makes `rtspsrc` use an [`RtpTimestamper`] instead of a jitter buffer for each stream it
/// receives. Only for `protocols=tcp`.
///
/// rtspsrc's one reader thread then pushes every stream's packets all the way to the sinks.
/// So the pipeline's sinks must not wait for a preroll (`async=false`): a sink waiting for
/// its first buffer would hold the thread that brings every other stream's buffers. And the
/// pipeline must be stopped with [`stop_source_first`].
pub fn skip_jitter_buffer(rtspsrc: &gst::Element) {
    rtspsrc.connect("new-manager", false, |args| {
        instead_of_jitter_buffers(&args.get(1)?.get::<gst::Element>().ok()?);
        None
    });
}

/// Stops `pipeline`, whose `rtspsrc` skips its jitter buffer. Stopping rtspsrc waits for its
/// reader thread. A pipeline stopped as a whole pauses its sinks first, and a paused sink
/// holds a thread that pushes into it until it plays again: the stop would never return. So
/// the source stops first, while its sinks still take buffers, and then stays out of the
/// pipeline's own state change.
pub fn stop_source_first(pipeline: &gst::Pipeline, rtspsrc: &gst::Element) {
    rtspsrc.set_locked_state(true);
    let _ = rtspsrc.set_state(gst::State::Null);
    let _ = pipeline.set_state(gst::State::Null);
}

/// Makes `rtpbin` use an [`RtpTimestamper`] for each stream instead of a jitter buffer.
pub fn instead_of_jitter_buffers(rtpbin: &gst::Element) {
    rtpbin.connect("request-jitterbuffer", false, |_| {
        let element = RtpTimestamper::default().upcast::<gst::Element>();
        Some(element.to_value())
    });
}

mod imp {
    use super::Timeline;
    use gstreamer as gst;
    use gstreamer::glib;
    use gstreamer::prelude::*;
    use gstreamer::subclass::prelude::*;
    use gstreamer_base::subclass::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{LazyLock, Mutex};

    #[derive(Default)]
    pub struct RtpTimestamper {
        timeline: Mutex<Timeline>,
        /// rtpbin sets a jitter buffer's latency; nothing is buffered here.
        latency: AtomicU32,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for RtpTimestamper {
        const NAME: &'static str = "CloudcamRtpTimestamper";
        type Type = super::RtpTimestamper;
        type ParentType = gstreamer_base::BaseTransform;
    }

    impl ObjectImpl for RtpTimestamper {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecUInt::builder("latency")
                        .blurb("Accepted from rtpbin; nothing is buffered (ms)")
                        .build(),
                ]
            });
            PROPERTIES.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, _pspec: &glib::ParamSpec) {
            self.latency
                .store(value.get().unwrap_or_default(), Ordering::Relaxed);
        }

        fn property(&self, _id: usize, _pspec: &glib::ParamSpec) -> glib::Value {
            self.latency.load(Ordering::Relaxed).to_value()
        }
    }

    impl GstObjectImpl for RtpTimestamper {}

    impl ElementImpl for RtpTimestamper {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "RTP timestamper",
                    "Filter/Network/RTP",
                    "Stamps presentation times from RTP timestamps, for streams that arrive in order",
                    "cloudcam",
                )
            });
            Some(&*METADATA)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let caps = gst::Caps::new_empty_simple("application/x-rtp");
                [gst::PadDirection::Src, gst::PadDirection::Sink]
                    .into_iter()
                    .map(|direction| {
                        let name = if direction == gst::PadDirection::Src {
                            "src"
                        } else {
                            "sink"
                        };
                        gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps)
                            .expect("a valid pad template")
                    })
                    .collect()
            });
            TEMPLATES.as_ref()
        }
    }

    impl BaseTransformImpl for RtpTimestamper {
        const MODE: gstreamer_base::subclass::BaseTransformMode =
            gstreamer_base::subclass::BaseTransformMode::AlwaysInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = false;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        fn set_caps(
            &self,
            incaps: &gst::Caps,
            _outcaps: &gst::Caps,
        ) -> Result<(), gst::LoggableError> {
            let rate = incaps
                .structure(0)
                .and_then(|s| s.get::<i32>("clock-rate").ok())
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0);
            // Over TCP only a stream's first packet carries a time: caps sent again mid-stream
            // must not restart the timeline.
            self.timeline
                .lock()
                .expect("timeline lock")
                .set_clock_rate(rate);
            Ok(())
        }

        fn transform_ip(
            &self,
            buf: &mut gst::BufferRef,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let rtp_time = {
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                match map.get(4..8) {
                    Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    None => return Ok(gst::FlowSuccess::Ok),
                }
            };
            let arrival = buf.dts().or(buf.pts());
            if let Some(pts) = self
                .timeline
                .lock()
                .expect("timeline lock")
                .pts(rtp_time, arrival)
            {
                buf.set_pts(pts);
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;

    const MS: u64 = 1_000_000;

    fn at(ms: u64) -> Option<gst::ClockTime> {
        Some(gst::ClockTime::from_nseconds(ms * MS))
    }

    #[test]
    fn times_follow_the_rtp_clock_from_the_first_arrival() {
        let mut t = Timeline::new(90_000);
        assert_eq!(t.pts(1000, at(500)), at(500));
        // 40 ms later on the RTP clock, whenever it arrives.
        assert_eq!(t.pts(1000 + 3600, at(900)), at(540));
        assert_eq!(t.pts(1000 + 7200, None), at(580));
    }

    #[test]
    fn the_timestamp_wraps_around() {
        let mut t = Timeline::new(90_000);
        let start = u32::MAX - 1799; // 20 ms before the wrap
        assert_eq!(t.pts(start, at(0)), at(0));
        assert_eq!(t.pts(1800, None), at(40));
        assert_eq!(t.pts(start.wrapping_add(90_000 * 10), None), at(10_000));
    }

    #[test]
    fn a_packet_stamped_before_the_first_goes_back_in_time() {
        let mut t = Timeline::new(90_000);
        assert_eq!(t.pts(9000, at(1000)), at(1000));
        assert_eq!(t.pts(9000 - 3600, None), at(960));
        // …but never below zero.
        let mut t = Timeline::new(90_000);
        assert_eq!(t.pts(9000, at(10)), at(10));
        assert_eq!(t.pts(0, None), at(0));
    }

    /// A 12-byte RTP header (PT 96, SSRC 1) and a byte of payload.
    fn rtp(seq: u16, time: u32, arrival_ms: u64) -> gst::Buffer {
        let mut bytes = vec![0x80, 96];
        bytes.extend(seq.to_be_bytes());
        bytes.extend(time.to_be_bytes());
        bytes.extend(1u32.to_be_bytes());
        bytes.push(0x41);
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        buffer
            .get_mut()
            .expect("a new buffer is writable")
            .set_dts(gst::ClockTime::from_nseconds(arrival_ms * MS));
        buffer
    }

    #[test]
    fn rtpbin_passes_packets_through_stamped_and_drops_the_element_with_the_pipeline() {
        gst::init().expect("gstreamer");
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(
                &gst::Caps::builder("application/x-rtp")
                    .field("media", "video")
                    .field("clock-rate", 90_000i32)
                    .field("encoding-name", "H264")
                    .field("payload", 96i32)
                    .build(),
            )
            .format(gst::Format::Time)
            .build();
        let rtpbin = gst::ElementFactory::make("rtpbin").build().expect("rtpbin");
        let sink = gst_app::AppSink::builder().sync(false).build();
        pipeline
            .add_many([src.upcast_ref(), &rtpbin, sink.upcast_ref()])
            .expect("add");
        instead_of_jitter_buffers(&rtpbin);
        let made = std::sync::Arc::new(std::sync::Mutex::new(
            Vec::<glib::WeakRef<gst::Element>>::new(),
        ));
        {
            let made = made.clone();
            rtpbin.connect("new-jitterbuffer", false, move |args| {
                let element = args[1].get::<gst::Element>().expect("an element");
                assert!(element.is::<RtpTimestamper>(), "rtpbin took {element:?}");
                made.lock().unwrap().push(element.downgrade());
                None
            });
        }
        let sink_pad = sink.static_pad("sink").expect("sink pad");
        rtpbin.connect_pad_added(move |_, pad| {
            if pad.name().starts_with("recv_rtp_src") {
                pad.link(&sink_pad).expect("link");
            }
        });
        src.static_pad("src")
            .expect("src pad")
            .link(
                &rtpbin
                    .request_pad_simple("recv_rtp_sink_0")
                    .expect("rtpbin pad"),
            )
            .expect("link");
        pipeline.set_state(gst::State::Playing).expect("play");

        // 40 ms apart on the RTP clock, arriving irregularly.
        for (seq, (time, arrival)) in [(1000u32, 500u64), (4600, 600), (8200, 610)]
            .into_iter()
            .enumerate()
        {
            src.push_buffer(rtp(seq as u16, time, arrival))
                .expect("push");
        }
        let pts: Vec<u64> = (0..3)
            .map(|_| {
                let sample = sink
                    .try_pull_sample(gst::ClockTime::from_seconds(5))
                    .expect("a packet through rtpbin");
                sample
                    .buffer()
                    .and_then(|b| b.pts())
                    .expect("a pts")
                    .nseconds()
                    / MS
            })
            .collect();
        assert_eq!(pts, [500, 540, 580]);

        pipeline.set_state(gst::State::Null).expect("stop");
        drop(pipeline);
        drop(rtpbin);
        let made = made.lock().unwrap();
        assert_eq!(made.len(), 1);
        // The last references may go with a thread winding down just after the state change.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while made[0].upgrade().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the timestamper outlived its pipeline"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn caps_sent_again_keep_the_timeline() {
        let mut t = Timeline::new(90_000);
        assert_eq!(t.pts(0, at(100)), at(100));
        t.set_clock_rate(90_000);
        assert_eq!(t.pts(3600, None), at(140));
        t.set_clock_rate(8000);
        assert_eq!(t.pts(80, None), None);
    }

    #[test]
    fn nothing_is_stamped_without_a_clock_rate_or_a_first_arrival() {
        assert_eq!(Timeline::new(0).pts(1, at(1)), None);
        let mut t = Timeline::new(8000);
        assert_eq!(t.pts(0, None), None);
        assert_eq!(t.pts(80, at(7)), at(7));
    }
}
