//! The video codecs cloudcam relays and records without transcoding, and the GStreamer elements
//! and caps each one needs. Every pipeline that touches compressed video (the relay, the
//! re-stream, snapshots, the recorder, clips) takes its elements from here.

use gstreamer as gst;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VideoCodec {
    #[default]
    H264,
    H265,
}

impl VideoCodec {
    /// From an RTP `encoding-name` (or a status's `codec`), case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "H264" => Some(Self::H264),
            "H265" | "HEVC" => Some(Self::H265),
            _ => None,
        }
    }

    /// From an elementary stream's media type (`video/x-h265`).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        [Self::H264, Self::H265]
            .into_iter()
            .find(|c| c.media_type() == media_type)
    }

    /// The name in statuses, segment records and RTP (`encoding-name`).
    pub fn name(self) -> &'static str {
        match self {
            Self::H264 => "H264",
            Self::H265 => "H265",
        }
    }

    /// Whether browsers can be expected to play it over WebRTC. (Chromium offers H.265 only
    /// where the platform decodes it; this deployment's gateway mountpoints are H.264.)
    pub fn plays_in_browsers(self) -> bool {
        self == Self::H264
    }

    pub fn depayloader(self) -> &'static str {
        match self {
            Self::H264 => "rtph264depay",
            Self::H265 => "rtph265depay",
        }
    }

    pub fn parser(self) -> &'static str {
        match self {
            Self::H264 => "h264parse",
            Self::H265 => "h265parse",
        }
    }

    pub fn payloader(self) -> &'static str {
        match self {
            Self::H264 => "rtph264pay",
            Self::H265 => "rtph265pay",
        }
    }

    pub fn decoder(self) -> &'static str {
        match self {
            Self::H264 => "avdec_h264",
            Self::H265 => "avdec_h265",
        }
    }

    /// The media type of its elementary stream.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::H264 => "video/x-h264",
            Self::H265 => "video/x-h265",
        }
    }

    /// Whole access units with out-of-band parameter sets, as `mp4mux` takes them (`avc1`,
    /// `hvc1` sample entries).
    pub fn mp4_caps(self) -> gst::Caps {
        let format = match self {
            Self::H264 => "avc",
            Self::H265 => "hvc1",
        };
        gst::Caps::builder(self.media_type())
            .field("stream-format", format)
            .field("alignment", "au")
            .build()
    }

    /// RTP caps of its stream at payload type 96.
    pub fn rtp_caps(self) -> String {
        format!(
            "application/x-rtp,media=video,clock-rate=90000,encoding-name={},payload=96",
            self.name()
        )
    }
}

/// The audio cameras send that cloudcam carries: AAC in either RTP packetization, G.711 and
/// Opus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// AAC, RFC 3640 (`MPEG4-GENERIC`).
    Aac,
    /// AAC, RFC 3016 (`MP4A-LATM`).
    AacLatm,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus (RFC 7587).
    Opus,
}

impl AudioCodec {
    /// From an RTP `encoding-name`, case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "MPEG4-GENERIC" => Some(Self::Aac),
            "MP4A-LATM" => Some(Self::AacLatm),
            "PCMU" => Some(Self::Pcmu),
            "PCMA" => Some(Self::Pcma),
            "OPUS" => Some(Self::Opus),
            _ => None,
        }
    }

    /// Its RTP `encoding-name` (what [`AudioCodec::from_name`] reads back), as the camera's
    /// status names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aac => "MPEG4-GENERIC",
            Self::AacLatm => "MP4A-LATM",
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::Opus => "OPUS",
        }
    }

    /// Whether browsers play it as the camera sends it (WebRTC carries G.711 and Opus, not
    /// AAC).
    pub fn plays_in_browsers(self) -> bool {
        matches!(self, Self::Pcmu | Self::Pcma | Self::Opus)
    }

    /// What the live view's mountpoint must take to get it as it is sent: G.711, or Opus
    /// (what every mountpoint takes unless told otherwise, so `None`); `None` for AAC too,
    /// which is encoded to Opus.
    pub fn mountpoint_codec(self) -> Option<Self> {
        matches!(self, Self::Pcmu | Self::Pcma).then_some(self)
    }

    /// The elements that make its RTP what a mountpoint taking it as sent expects: Opus at
    /// payload type 111 (cameras choose their own dynamic type); G.711's types are static, so
    /// nothing.
    pub fn as_sent_chain(self) -> Option<&'static str> {
        (self == Self::Opus).then_some("rtpopusdepay ! rtpopuspay pt=111")
    }

    pub fn depayloader(self) -> &'static str {
        match self {
            Self::Aac => "rtpmp4gdepay",
            Self::AacLatm => "rtpmp4adepay",
            Self::Pcmu => "rtppcmudepay",
            Self::Pcma => "rtppcmadepay",
            Self::Opus => "rtpopusdepay",
        }
    }

    /// How the re-stream serves it, from its RTP (`… name=pay1`): AAC always as
    /// `MPEG4-GENERIC` (what recorders and most RTSP clients read), G.711 and Opus as they are.
    pub fn restream_chain(self) -> String {
        let out = match self {
            Self::Aac | Self::AacLatm => "aacparse ! rtpmp4gpay pt=97",
            Self::Pcmu => "rtppcmupay pt=0",
            Self::Pcma => "rtppcmapay pt=8",
            Self::Opus => "rtpopuspay pt=111",
        };
        format!("{} ! {out} name=pay1", self.depayloader())
    }

    /// The elements that turn its RTP into Opus RTP (payload type 111) for the live view:
    /// WebRTC carries no AAC, so it is decoded and encoded to Opus (audio only; video is never
    /// transcoded). G.711 is too, until its camera's mountpoint takes G.711 as it is sent;
    /// Opus never needs it.
    pub fn live_chain(self) -> String {
        let decode = match self {
            Self::Aac | Self::AacLatm => "aacparse ! avdec_aac",
            Self::Pcmu => "mulawdec",
            Self::Pcma => "alawdec",
            Self::Opus => "opusdec",
        };
        format!(
            "{} ! {decode} ! audioconvert ! audioresample ! opusenc bitrate=32000 frame-size=20 \
             ! rtpopuspay pt=111",
            self.depayloader()
        )
    }

    /// The elements that turn its depayloaded frames into AAC for an MP4 segment (which has no
    /// G.711, and whose readers here take AAC): nothing for AAC, a decode and an AAC encode
    /// (audio only) for G.711 and Opus.
    pub fn to_aac(self) -> &'static str {
        match self {
            Self::Aac | Self::AacLatm => "aacparse",
            Self::Pcmu => "mulawdec ! audioconvert ! avenc_aac ! aacparse",
            Self::Pcma => "alawdec ! audioconvert ! avenc_aac ! aacparse",
            Self::Opus => "opusdec ! audioconvert ! avenc_aac ! aacparse",
        }
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H264 => "H.264",
            Self::H265 => "H.265",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_elements_exist() {
        gst::init().unwrap();
        for codec in [VideoCodec::H264, VideoCodec::H265] {
            assert_eq!(VideoCodec::from_name(codec.name()), Some(codec));
            for element in [
                codec.depayloader(),
                codec.parser(),
                codec.payloader(),
                codec.decoder(),
            ] {
                assert!(
                    gst::ElementFactory::find(element).is_some(),
                    "{element} is not installed"
                );
            }
            assert!(codec.mp4_caps().is_fixed());
            assert_eq!(VideoCodec::from_media_type(codec.media_type()), Some(codec));
        }
        assert_eq!(VideoCodec::from_name("hevc"), Some(VideoCodec::H265));
        for audio in [
            AudioCodec::Aac,
            AudioCodec::AacLatm,
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::Opus,
        ] {
            assert_eq!(AudioCodec::from_name(audio.name()), Some(audio));
            if let Some(chain) = audio.as_sent_chain() {
                assert!(
                    gst::parse::bin_from_description(chain, true).is_ok(),
                    "{chain}"
                );
            }
            for chain in [
                audio.restream_chain(),
                audio.to_aac().to_string(),
                audio.live_chain(),
            ] {
                let launch = format!("identity ! {chain}");
                assert!(
                    gst::parse::bin_from_description(&launch, false).is_ok(),
                    "{launch}"
                );
            }
        }
        assert_eq!(VideoCodec::from_name("JPEG"), None);
    }
}
