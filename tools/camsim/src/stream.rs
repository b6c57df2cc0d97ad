//! Stream specifications and the live (encoding) media factory.

use crate::stamp::{self, Stamp};
use anyhow::{Result, bail};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_rtsp_server::prelude::*;
use gstreamer_rtsp_server::{self as rtsp_server};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

/// How a camera sends its audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audio {
    /// AAC, RFC 3640 (`mpeg4-generic`).
    Aac,
    /// AAC, RFC 3016 (`MP4A-LATM`).
    AacLatm,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    /// Opus, 48 kHz.
    Opus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Mjpeg,
}

#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub path: String,
    pub mode: Mode,
    pub codec: Codec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
    pub profile: String,
    pub overlay: bool,
    pub seconds: u32,
    pub file: Option<String>,
    /// Also send audio (a test tone), as most cameras do, in this shape.
    pub audio: Option<Audio>,
    /// The audio's sample rate (G.711 is always 8 kHz).
    pub audio_rate: u32,
    /// Mono or stereo.
    pub audio_channels: u32,
    /// Write a pixel clock into every frame (live streams only; see [`crate::stamp`]).
    pub stamp: Option<Stamp>,
}

impl FromStr for StreamSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (path, opts) = s.split_once(':').unwrap_or((s, ""));
        if path.is_empty() || path.contains('/') {
            bail!("stream path {path:?} must be one non-empty path segment");
        }
        let mut spec = StreamSpec {
            path: path.to_string(),
            mode: Mode::Live,
            codec: Codec::H264,
            width: 640,
            height: 360,
            fps: 25,
            gop: 25,
            profile: "baseline".into(),
            overlay: true,
            seconds: 4,
            file: None,
            audio: None,
            audio_rate: 48_000,
            audio_channels: 1,
            stamp: None,
        };
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("option {kv:?} is not key=value"))?;
            match k {
                "mode" => {
                    spec.mode = match v {
                        "live" => Mode::Live,
                        "replay" => Mode::Replay,
                        _ => bail!("mode must be live or replay, not {v:?}"),
                    }
                }
                "codec" => {
                    spec.codec = match v {
                        "h264" => Codec::H264,
                        "h265" => Codec::H265,
                        "mjpeg" => Codec::Mjpeg,
                        _ => bail!("codec must be h264, h265 or mjpeg, not {v:?}"),
                    }
                }
                "width" => spec.width = v.parse()?,
                "height" => spec.height = v.parse()?,
                "fps" => spec.fps = v.parse()?,
                "gop" => spec.gop = v.parse()?,
                "profile" => spec.profile = v.to_string(),
                "overlay" => spec.overlay = v.parse()?,
                "seconds" => spec.seconds = v.parse()?,
                "file" => spec.file = Some(v.to_string()),
                "audio" => {
                    spec.audio = match v {
                        "aac" => Some(Audio::Aac),
                        "aac-latm" => Some(Audio::AacLatm),
                        "pcmu" => Some(Audio::Pcmu),
                        "pcma" => Some(Audio::Pcma),
                        "opus" => Some(Audio::Opus),
                        "none" => None,
                        _ => bail!(
                            "audio must be aac, aac-latm, pcmu, pcma, opus or none, not {v:?}"
                        ),
                    }
                }
                "audio_rate" => spec.audio_rate = v.parse()?,
                "audio_channels" => spec.audio_channels = v.parse()?,
                "stamp" => {
                    spec.stamp = match v {
                        "none" => None,
                        "wall" => Some(Stamp::Wall),
                        ms => Some(Stamp::Fixed(ms.parse().map_err(|_| {
                            anyhow::anyhow!("stamp must be none, wall or milliseconds, not {ms:?}")
                        })?)),
                    }
                }
                _ => bail!("unknown stream option {k:?}"),
            }
        }
        if spec.fps == 0 || spec.gop == 0 || spec.width == 0 || spec.height == 0 {
            bail!("width, height, fps and gop must be positive");
        }
        if spec.stamp.is_some() && spec.mode != Mode::Live {
            bail!("stamp needs mode=live: a replay stream encodes nothing while serving");
        }
        Ok(spec)
    }
}

/// The raw test pattern: live, at the stream's size and rate, with an optional clock overlay.
pub fn raw_source(spec: &StreamSpec, live: bool, num_buffers: i64) -> String {
    let overlay = if spec.overlay {
        "! clockoverlay time-format=\"%H:%M:%S\" font-desc=\"Sans 24\" "
    } else {
        ""
    };
    format!(
        "videotestsrc is-live={live} num-buffers={num_buffers} pattern=ball {overlay}! videoconvert ! \
         video/x-raw,format=I420,width={w},height={h},framerate={fps}/1",
        w = spec.width,
        h = spec.height,
        fps = spec.fps
    )
}

/// The H.264 encoder: baseline-compatible output by default, I420 so browsers can decode it.
pub fn h264_encoder(spec: &StreamSpec) -> String {
    format!(
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate=1500 \
         ! video/x-h264,profile={profile}",
        gop = spec.gop,
        profile = spec.profile
    )
}

pub fn live_factory(spec: &StreamSpec) -> Result<rtsp_server::RTSPMediaFactory> {
    let enc = match spec.codec {
        Codec::H264 => format!("{} ! rtph264pay name=pay0 pt=96", h264_encoder(spec)),
        Codec::H265 => format!(
            "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={} ! rtph265pay name=pay0 pt=96",
            spec.gop
        ),
        Codec::Mjpeg => "jpegenc ! rtpjpegpay name=pay0 pt=26".to_string(),
    };
    let audio = match spec.audio {
        Some(shape) => {
            let (rate, encode) = match shape {
                Audio::Aac => (spec.audio_rate, "avenc_aac ! aacparse ! rtpmp4gpay pt=97"),
                // RFC 3016 (MP4A-LATM), as some cameras packetize AAC.
                Audio::AacLatm => (spec.audio_rate, "avenc_aac ! aacparse ! rtpmp4apay pt=97"),
                Audio::Pcmu => (8_000, "mulawenc ! rtppcmupay pt=0"),
                Audio::Pcma => (8_000, "alawenc ! rtppcmapay pt=8"),
                // A dynamic payload type other than the 111 browsers are offered.
                Audio::Opus => (48_000, "opusenc ! rtpopuspay pt=98"),
            };
            format!(
                " audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample \
                 ! audio/x-raw,rate={rate},channels={} ! {encode} name=pay1",
                spec.audio_channels
            )
        }
        None => String::new(),
    };
    let stamp_point = if spec.stamp.is_some() {
        " ! identity name=stamp"
    } else {
        ""
    };
    let launch = format!(
        "( {}{stamp_point} ! {enc}{audio} )",
        raw_source(spec, true, -1)
    );
    let factory = rtsp_server::RTSPMediaFactory::new();
    factory.set_launch(&launch);
    factory.set_shared(true);
    if let Some(clock) = spec.stamp {
        let (width, height) = (spec.width as usize, spec.height as usize);
        factory.connect_media_configure(move |_, media| {
            let element = media.element();
            let pad = element
                .downcast_ref::<gst::Bin>()
                .and_then(|bin| bin.by_name("stamp"))
                .and_then(|e| e.static_pad("src"));
            if let Some(pad) = pad {
                stamp::attach(&pad, width, height, clock);
            }
            // The server's sinks (added when a client sets up) hold each packet until its
            // capture time plus the pipeline's latency, which a live test source reports as one
            // whole frame: a delay no camera adds after its capture. Sent as soon as encoded,
            // a stamped stream measures what comes after the camera. (Measured over UDP: 40 ms
            // → 7 ms from capture to decoded. Over TCP the server still delivers the rest of
            // each frame with the next one, ~35 ms late; not found why.)
            let pipeline = element.parent().and_then(|p| p.downcast::<gst::Bin>().ok());
            if let Some(pipeline) = pipeline {
                pipeline.connect_deep_element_added(|_, _, sink| {
                    if sink.element_flags().contains(gst::ElementFlags::SINK)
                        && sink.has_property("sync")
                    {
                        sink.set_property("sync", false);
                    }
                });
            }
        });
    }
    Ok(factory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let s: StreamSpec = "cam:width=1280,height=720,fps=30,gop=60,codec=h265"
            .parse()
            .unwrap();
        assert_eq!((s.width, s.height, s.fps, s.gop), (1280, 720, 30, 60));
        assert_eq!(s.codec, Codec::H265);
        assert!("cam:bogus=1".parse::<StreamSpec>().is_err());
        assert!("cam:fps=0".parse::<StreamSpec>().is_err());
        let s: StreamSpec = "cam:stamp=wall".parse().unwrap();
        assert_eq!(s.stamp, Some(Stamp::Wall));
        let s: StreamSpec = "cam:stamp=1234".parse().unwrap();
        assert_eq!(s.stamp, Some(Stamp::Fixed(1234)));
        assert!("cam:mode=replay,stamp=wall".parse::<StreamSpec>().is_err());
        assert!("cam:stamp=soon".parse::<StreamSpec>().is_err());
    }
}
