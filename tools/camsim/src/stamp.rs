//! A machine-readable pixel clock: each raw frame of a live stream gets, just before it is
//! encoded, the wall-clock time in milliseconds written into its bottom rows as 64 black or
//! white blocks. A viewer that decodes the frame reads the time back and compares it with its
//! own clock (same machine): glass-to-glass delay, and proof that a frame is fresh.
//!
//! Layout (luma only; the chroma planes are left as they are, so the blocks stay grey-scale):
//! the band is the bottom [`BAND_ROWS`] rows; block `i` (0..64) spans columns
//! `i * w/64 .. (i+1) * w/64`; white (235) is 1, black (16) is 0; bits, most significant first:
//! 8 bits [`MARKER`], 48 bits of milliseconds since the Unix epoch, 8 bits of checksum (the
//! XOR of the six time bytes). The browser-side reader in the tests decodes exactly this.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::time::{SystemTime, UNIX_EPOCH};

pub const BITS: usize = 64;
pub const BAND_ROWS: usize = 16;
pub const MARKER: u8 = 0b1011_0010;
const WHITE: u8 = 235;
const BLACK: u8 = 16;

/// What a stream stamps on its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The wall clock when the frame is stamped.
    Wall,
    /// Always this value (to test a reader).
    Fixed(u64),
}

impl Stamp {
    fn value(self) -> u64 {
        match self {
            Stamp::Wall => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            Stamp::Fixed(v) => v,
        }
    }
}

/// The 64 bits that encode `ms` (only its low 48 bits).
pub fn code(ms: u64) -> u64 {
    let ms = ms & 0xFFFF_FFFF_FFFF;
    let check = ms.to_be_bytes()[2..].iter().fold(0u8, |a, b| a ^ b);
    (u64::from(MARKER) << 56) | (ms << 8) | u64::from(check)
}

/// Writes `ms` into the luma plane of an I420 frame of `width` x `height` (row stride
/// `stride`). Frames too small to carry the code are left alone.
pub fn write(y_plane: &mut [u8], width: usize, height: usize, stride: usize, ms: u64) {
    let block = width / BITS;
    if block < 2 || height < BAND_ROWS || y_plane.len() < stride * height {
        return;
    }
    let bits = code(ms);
    for row in height - BAND_ROWS..height {
        let line = &mut y_plane[row * stride..row * stride + width];
        for (i, px) in line.chunks_mut(block).take(BITS).enumerate() {
            let on = bits >> (BITS - 1 - i) & 1 == 1;
            px.fill(if on { WHITE } else { BLACK });
        }
    }
}

/// Stamps every buffer leaving `pad` (raw I420 of `width` x `height`).
pub fn attach(pad: &gst::Pad, width: usize, height: usize, stamp: Stamp) {
    // GStreamer's default I420 layout: the luma plane first, rows padded to 4 bytes.
    let stride = width.div_ceil(4) * 4;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
            let buffer = buffer.make_mut();
            if let Ok(mut map) = buffer.map_writable() {
                write(map.as_mut_slice(), width, height, stride, stamp.value());
            }
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the code back the way the browser-side reader does: the centre of each block,
    /// in the middle row of the band.
    fn read(y: &[u8], width: usize, height: usize, stride: usize) -> Option<u64> {
        let block = width / BITS;
        let row = height - BAND_ROWS / 2;
        let bits = (0..BITS).fold(0u64, |acc, i| {
            (acc << 1) | u64::from(y[row * stride + i * block + block / 2] > 128)
        });
        let ms = (bits >> 8) & 0xFFFF_FFFF_FFFF;
        (bits >> 56 == u64::from(MARKER) && code(ms) == bits).then_some(ms)
    }

    #[test]
    fn a_stamped_frame_reads_back_its_time() {
        for (w, h) in [(640, 360), (1280, 720), (130, 20)] {
            let stride = usize::div_ceil(w, 4) * 4;
            let mut y = vec![128u8; stride * h];
            write(&mut y, w, h, stride, 1_764_000_123_456);
            assert_eq!(read(&y, w, h, stride), Some(1_764_000_123_456), "{w}x{h}");
        }
    }

    #[test]
    fn a_damaged_code_is_refused() {
        let (w, h) = (640, 360);
        let mut y = vec![0u8; w * h];
        write(&mut y, w, h, w, 42);
        // Flip one time bit: the checksum no longer matches.
        let row = h - BAND_ROWS / 2;
        let block = w / BITS;
        y[row * w + 30 * block + block / 2] ^= 0xFF;
        assert_eq!(read(&y, w, h, w), None);
    }

    #[test]
    fn too_small_a_frame_is_left_alone() {
        let mut y = vec![7u8; 100 * 10];
        write(&mut y, 100, 10, 100, 42);
        assert!(y.iter().all(|&p| p == 7));
    }
}
