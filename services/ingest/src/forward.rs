//! Whether a camera's H.264 RTP can go to Janus as the camera sent it.
//!
//! Re-payloading (`rtph264depay ! h264parse ! rtph264pay`) costs about a fifth of a relay's
//! CPU. It is needed only when the stream as sent would not serve a viewer who joins late:
//! when the camera does not repeat its parameter sets (SPS and PPS) before every IDR frame
//! (many send them once, or only in the SDP), or when its packets are larger than a WebRTC
//! path carries without fragmenting. [`Forwarding`] watches the packets and says, packet by
//! packet, where each goes; a stream found unfit is re-payloaded from then on. [`FirstFrame`]
//! holds back a relay's first keyframe (H.264 or H.265) until the next frame begins, so that
//! Janus has it whole at once. Nothing here touches GStreamer: the relay feeds it the bytes of
//! each packet.

use cloudcam_core::codec::VideoCodec;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::BitReader;
use rtp_types::RtpPacket;

/// The payload type Janus's mountpoints and the re-stream expect for video.
pub const VIDEO_PT: u8 = 96;

/// Where one packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not forwarded: nothing before the stream's first parameter sets or keyframe is of use
    /// to a viewer.
    Drop,
    /// Forwarded as it is (its payload type set to [`VIDEO_PT`]).
    Raw,
    /// Depayloaded, parsed and payloaded again.
    Repay,
}

/// A stream that brings neither an SPS nor an IDR frame within this many packets is
/// re-payloaded (a camera that never sends an IDR frame would otherwise never be relayed).
const DECIDE_WITHIN: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Packets seen so far.
    Deciding(u32),
    Raw,
    Repay,
}

/// The routing decision for one camera stream; see the module documentation.
#[derive(Debug)]
pub struct Forwarding {
    mode: Mode,
    max_packet: usize,
    /// SPS and PPS seen since the last IDR access unit ended.
    sps: bool,
    pps: bool,
    /// Inside an IDR access unit (from its first IDR slice to the packet with the marker bit).
    in_idr: bool,
    /// Width and height, from the last SPS seen.
    size: Option<(u32, u32)>,
}

/// What one packet's payload carries (RFC 6184 packetization).
#[derive(Debug, Default, PartialEq)]
struct Nals {
    sps: bool,
    pps: bool,
    idr_start: bool,
    /// Where in the payload a whole SPS NAL unit is.
    sps_at: Option<std::ops::Range<usize>>,
    /// A packetization raw forwarding does not look into (STAP-B, MTAP, FU-B).
    unknown: bool,
}

impl Nals {
    fn add(&mut self, nal_type: u8, whole: Option<std::ops::Range<usize>>) {
        match nal_type {
            5 => self.idr_start = true,
            7 => {
                self.sps = true;
                self.sps_at = whole.or(self.sps_at.take());
            }
            8 => self.pps = true,
            _ => {}
        }
    }

    fn of(payload: &[u8]) -> Self {
        let mut nals = Self::default();
        let Some(&header) = payload.first() else {
            return nals;
        };
        match header & 0x1f {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            24 => {
                let mut at = 1;
                while payload.len() > at + 2 {
                    let size = usize::from(u16::from_be_bytes([payload[at], payload[at + 1]]));
                    let nal = at + 2..at + 2 + size;
                    if size == 0 || payload.len() < nal.end {
                        break;
                    }
                    at = nal.end;
                    nals.add(payload[nal.start] & 0x1f, Some(nal));
                }
            }
            // FU-A: the fragmented unit's type counts at its start.
            28 => {
                if let Some(&fu) = payload.get(1)
                    && fu & 0x80 != 0
                {
                    nals.add(fu & 0x1f, None);
                }
            }
            25..=27 | 29 => nals.unknown = true,
            t => nals.add(t, Some(0..payload.len())),
        }
        nals
    }
}

impl Forwarding {
    /// Raw forwarding for packets of at most `max_packet` bytes (RTP header included);
    /// 0 re-payloads every stream.
    pub fn new(max_packet: usize) -> Self {
        Self {
            mode: if max_packet == 0 {
                Mode::Repay
            } else {
                Mode::Deciding(0)
            },
            max_packet,
            sps: false,
            pps: false,
            in_idr: false,
            size: None,
        }
    }

    /// Width and height of the video, as its last SPS says (forwarded raw, nothing else
    /// parses the stream).
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// Whether packets are forwarded as they are.
    pub fn is_raw(&self) -> bool {
        self.mode == Mode::Raw
    }

    /// Where the RTP packet `packet` goes.
    pub fn route(&mut self, packet: &[u8]) -> Route {
        if self.mode == Mode::Repay {
            return Route::Repay;
        }
        let Ok(rtp) = RtpPacket::parse(packet) else {
            return self.repay();
        };
        let nals = Nals::of(rtp.payload());
        if nals.unknown || packet.len() > self.max_packet {
            return self.repay();
        }
        self.sps |= nals.sps;
        self.pps |= nals.pps;
        if let Some(at) = nals.sps_at {
            self.size = sps_size(&rtp.payload()[at]).or(self.size);
        }
        if nals.idr_start && !self.in_idr {
            if !(self.sps && self.pps) {
                return self.repay();
            }
            self.in_idr = true;
        }
        let route = match self.mode {
            Mode::Deciding(_) if self.sps || self.in_idr => {
                self.mode = Mode::Raw;
                Route::Raw
            }
            Mode::Deciding(seen) if seen + 1 >= DECIDE_WITHIN => self.repay(),
            Mode::Deciding(seen) => {
                self.mode = Mode::Deciding(seen + 1);
                Route::Drop
            }
            _ => Route::Raw,
        };
        if rtp.marker_bit() && self.in_idr {
            (self.in_idr, self.sps, self.pps) = (false, false, false);
        }
        route
    }

    fn repay(&mut self) -> Route {
        self.size = None;
        self.mode = Mode::Repay;
        Route::Repay
    }
}

/// A first keyframe held back longer than this many packets is let go (a stream whose
/// timestamp never moves on would otherwise never be relayed).
const HOLD_AT_MOST: usize = 4096;

/// What to do with one packet; see [`FirstFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Keep it back, after those kept so far.
    Keep,
    /// Send the packets kept back, then this one.
    Release,
    /// Send it.
    Pass,
}

/// Holds back a relay's first keyframe until the next access unit begins, then lets both go
/// at once.
///
/// Janus (1.1) hands a new viewer the last keyframe of the mountpoint, but it takes a keyframe
/// as complete only when a packet of the next frame arrives. A viewer whose PeerConnection
/// comes up in between (one frame interval, while a just-started pull sends its first
/// keyframe: exactly when a viewer of an idle camera comes up) gets neither the buffered
/// keyframe nor its first packets, and sees nothing until the camera's next keyframe — a GOP
/// later. Sent together, the keyframe is complete in Janus at once. Only the first keyframe
/// waits, by at most one frame interval; what comes before it (of no use to a viewer) and
/// everything after it passes as it comes.
#[derive(Debug, Default)]
pub struct FirstFrame(HoldState);

#[derive(Debug, Default)]
enum HoldState {
    /// No keyframe yet.
    #[default]
    Waiting,
    /// Holding the keyframe of this RTP timestamp, so many packets of it so far.
    Holding(u32, usize),
    /// The keyframe went: everything passes.
    Done,
}

impl FirstFrame {
    /// What to do with a packet of RTP timestamp `timestamp`; `starts_keyframe` when it
    /// carries the start of a keyframe ([`starts_keyframe()`]).
    pub fn offer(&mut self, timestamp: u32, starts_keyframe: bool) -> Hold {
        match &mut self.0 {
            HoldState::Done => Hold::Pass,
            HoldState::Holding(held, count) if *held == timestamp && *count < HOLD_AT_MOST => {
                *count += 1;
                Hold::Keep
            }
            HoldState::Holding(..) => {
                self.0 = HoldState::Done;
                Hold::Release
            }
            HoldState::Waiting if starts_keyframe => {
                self.0 = HoldState::Holding(timestamp, 1);
                Hold::Keep
            }
            HoldState::Waiting => Hold::Pass,
        }
    }

    /// Whether every packet passes from now on.
    pub fn is_done(&self) -> bool {
        matches!(self.0, HoldState::Done)
    }
}

/// Whether the RTP payload `payload` of `codec` carries the start of a keyframe: an SPS or the
/// first fragment of an IDR picture (H.264); a parameter set or the first fragment of an IRAP
/// picture (H.265); alone in the packet or aggregated. (Every packet Janus 1.1 takes as a
/// keyframe's start is one of these: an H.264 SPS; an H.265 parameter set or IRAP picture,
/// unaggregated.)
pub fn starts_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::H264 => {
            let nals = Nals::of(payload);
            nals.sps || nals.idr_start
        }
        VideoCodec::H265 => h265_starts_keyframe(payload),
    }
}

/// RFC 7798: a NAL unit type is bits 1 to 6 of the first byte; 48 aggregates units (each
/// after a 16-bit size), 49 fragments one (the second byte after the two-byte header: start
/// bit and type).
fn h265_starts_keyframe(payload: &[u8]) -> bool {
    // IRAP pictures (BLA, IDR, CRA: 16 to 21), VPS, SPS, PPS.
    let key = |nal_type: u8| matches!(nal_type, 16..=21 | 32..=34);
    let Some(&first) = payload.first() else {
        return false;
    };
    match (first >> 1) & 0x3f {
        48 => {
            let mut at = 2;
            while let Some(size) = payload.get(at..at + 2) {
                let size = usize::from(u16::from_be_bytes([size[0], size[1]]));
                match payload.get(at + 2) {
                    Some(&header) if size > 0 => {
                        if key((header >> 1) & 0x3f) {
                            return true;
                        }
                    }
                    _ => return false,
                }
                at += 2 + size;
            }
            false
        }
        49 => payload
            .get(2)
            .is_some_and(|&fu| fu & 0x80 != 0 && key(fu & 0x3f)),
        t => key(t),
    }
}

/// Width and height from an SPS NAL unit.
fn sps_size(nal: &[u8]) -> Option<(u32, u32)> {
    let rbsp = h264_reader::rbsp::decode_nal(nal).ok()?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&*rbsp)).ok()?;
    sps.pixel_dimensions().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_types::RtpPacketBuilder;

    fn packet(payload: &[u8], marker: bool) -> Vec<u8> {
        RtpPacketBuilder::new()
            .payload_type(97)
            .marker_bit(marker)
            .payload(payload)
            .write_vec()
            .unwrap()
    }

    const SPS: &[u8] = &[0x67, 0x42, 0x00, 0x1f];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const P_SLICE: &[u8] = &[0x41, 0x9a, 0x00];

    fn stap_a(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![24];
        for n in nals {
            out.extend_from_slice(&(n.len() as u16).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    /// An IDR frame sent in FU-A fragments: start, middle, end (with the marker bit).
    fn idr_fragments() -> Vec<Vec<u8>> {
        vec![
            packet(&[0x7c, 0x85, 1, 2], false),
            packet(&[0x7c, 0x05, 3, 4], false),
            packet(&[0x7c, 0x45, 5, 6], true),
        ]
    }

    #[test]
    fn a_stream_repeating_its_parameter_sets_is_forwarded_raw_from_the_first_ones() {
        let mut f = Forwarding::new(1400);
        // Whatever comes before the first parameter sets is of no use to a viewer.
        assert_eq!(f.route(&packet(P_SLICE, true)), Route::Drop);
        for _ in 0..3 {
            assert_eq!(f.route(&packet(SPS, false)), Route::Raw);
            assert_eq!(f.route(&packet(PPS, false)), Route::Raw);
            for p in idr_fragments() {
                assert_eq!(f.route(&p), Route::Raw);
            }
            assert_eq!(f.route(&packet(P_SLICE, true)), Route::Raw);
        }
    }

    /// An SPS as x264 writes it for 640x360 (baseline).
    const SPS_640X360: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x16, 0xa0, 0xc0, 0xc0, 0xd4,
        0xa0, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x07, 0x91, 0xe2, 0xc5, 0xc9,
    ];

    #[test]
    fn the_video_size_is_read_from_the_sps_alone_or_aggregated() {
        let mut f = Forwarding::new(1400);
        assert_eq!(f.size(), None);
        f.route(&packet(SPS_640X360, false));
        assert_eq!(f.size(), Some((640, 360)));
        let mut f = Forwarding::new(1400);
        f.route(&packet(&stap_a(&[SPS_640X360, PPS]), false));
        assert_eq!(f.size(), Some((640, 360)));
        assert!(f.is_raw());
    }

    #[test]
    fn a_stream_without_parameter_sets_or_idr_frames_is_repayloaded_after_a_while() {
        let mut f = Forwarding::new(1400);
        for _ in 1..DECIDE_WITHIN {
            assert_eq!(f.route(&packet(P_SLICE, true)), Route::Drop);
        }
        assert_eq!(f.route(&packet(P_SLICE, true)), Route::Repay);
        assert_eq!(f.route(&packet(SPS, false)), Route::Repay);
    }

    #[test]
    fn parameter_sets_aggregated_in_a_stap_a_count() {
        let mut f = Forwarding::new(1400);
        assert_eq!(f.route(&packet(&stap_a(&[SPS, PPS]), false)), Route::Raw);
        for p in idr_fragments() {
            assert_eq!(f.route(&p), Route::Raw);
        }
    }

    #[test]
    fn an_idr_frame_in_several_slices_needs_its_parameter_sets_once() {
        let mut f = Forwarding::new(1400);
        f.route(&packet(SPS, false));
        f.route(&packet(PPS, false));
        assert_eq!(f.route(&packet(&[0x65, 0x88, 1], false)), Route::Raw);
        assert_eq!(f.route(&packet(&[0x65, 0x88, 2], true)), Route::Raw);
        // The next IDR frame without parameter sets before it is not fit.
        assert_eq!(f.route(&packet(P_SLICE, true)), Route::Raw);
        assert_eq!(f.route(&packet(&[0x65, 0x88, 3], true)), Route::Repay);
    }

    #[test]
    fn a_camera_sending_parameter_sets_only_in_its_sdp_is_repayloaded_from_its_first_idr() {
        let mut f = Forwarding::new(1400);
        let idr = idr_fragments();
        assert_eq!(f.route(&idr[0]), Route::Repay);
        // and stays so, whatever follows.
        assert_eq!(f.route(&packet(SPS, false)), Route::Repay);
        assert_eq!(f.route(&idr[1]), Route::Repay);
    }

    #[test]
    fn a_camera_sending_parameter_sets_once_is_repayloaded_from_its_second_idr() {
        let mut f = Forwarding::new(1400);
        f.route(&packet(SPS, false));
        f.route(&packet(PPS, false));
        for p in idr_fragments() {
            assert_eq!(f.route(&p), Route::Raw);
        }
        assert_eq!(f.route(&packet(P_SLICE, true)), Route::Raw);
        assert_eq!(f.route(&idr_fragments()[0]), Route::Repay);
    }

    #[test]
    fn large_packets_and_unusual_packetizations_are_repayloaded() {
        let mut f = Forwarding::new(100);
        f.route(&packet(SPS, false));
        assert_eq!(f.route(&packet(&[0x41; 200], true)), Route::Repay);

        let mut f = Forwarding::new(1400);
        f.route(&packet(SPS, false));
        // STAP-B
        assert_eq!(
            f.route(&packet(&[0x19, 0, 0, 0, 2, 0x41, 0], true)),
            Route::Repay
        );

        assert_eq!(Forwarding::new(0).route(&packet(SPS, false)), Route::Repay);
        assert_eq!(Forwarding::new(1400).route(&[0x80, 0x60]), Route::Repay);
    }

    #[test]
    fn the_first_keyframe_waits_for_the_next_access_unit_and_nothing_else_waits() {
        let mut first = FirstFrame::default();
        // What comes before a keyframe passes.
        assert_eq!(first.offer(5400, false), Hold::Pass);
        // The keyframe's packets (one timestamp) are kept back...
        assert_eq!(first.offer(9000, true), Hold::Keep);
        assert_eq!(first.offer(9000, false), Hold::Keep);
        assert_eq!(first.offer(9000, true), Hold::Keep);
        assert!(!first.is_done());
        // ...and go with the first packet of the next frame.
        assert_eq!(first.offer(12600, false), Hold::Release);
        assert!(first.is_done());
        for (ts, key) in [(12600, false), (16200, false), (99000, true), (9000, false)] {
            assert_eq!(first.offer(ts, key), Hold::Pass);
        }
    }

    #[test]
    fn a_first_keyframe_that_never_ends_is_let_go() {
        let mut first = FirstFrame::default();
        for _ in 0..HOLD_AT_MOST {
            assert_eq!(first.offer(1, true), Hold::Keep);
        }
        assert_eq!(first.offer(1, false), Hold::Release);
        assert_eq!(first.offer(1, false), Hold::Pass);
    }

    #[test]
    fn keyframe_starts_are_told_in_every_packetization() {
        let h264 = |p: &[u8]| starts_keyframe(VideoCodec::H264, p);
        assert!(h264(SPS));
        assert!(h264(&stap_a(&[SPS, PPS])));
        assert!(h264(&[0x7c, 0x85, 1]), "FU-A start of an IDR slice");
        assert!(!h264(&[0x7c, 0x05, 1]), "FU-A middle of an IDR slice");
        assert!(!h264(P_SLICE));
        assert!(!h264(PPS));
        let h265 = |p: &[u8]| starts_keyframe(VideoCodec::H265, p);
        // Two-byte NAL headers: type << 1, then layer/temporal id 1.
        assert!(h265(&[32 << 1, 1, 0xaa]), "VPS");
        assert!(h265(&[19 << 1, 1, 0xaa]), "IDR_W_RADL");
        assert!(!h265(&[1 << 1, 1, 0xaa]), "a trailing picture");
        assert!(h265(&[49 << 1, 1, 0x80 | 20, 0xaa]), "FU start of a CRA");
        assert!(!h265(&[49 << 1, 1, 20, 0xaa]), "FU middle of a CRA");
        assert!(
            !h265(&[49 << 1, 1, 0x80 | 1, 0xaa]),
            "FU start of a trailing picture"
        );
        let ap = [48 << 1, 1, 0, 3, 39 << 1, 1, 0xaa, 0, 3, 33 << 1, 1, 0xbb];
        assert!(h265(&ap), "AP with an SEI then an SPS");
        assert!(!h265(&ap[..7]), "AP with an SEI alone");
        assert!(h265(&[34 << 1, 1, 0xaa]), "PPS");
        assert!(!h265(&[]));
    }
}
