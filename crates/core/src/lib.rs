//! What the cloudcam services share.
//!
//! The outside world sits behind narrow traits — [`bus::Bus`] (Kafka or in-process) and
//! [`state::StateStore`] (Redis or in-memory) — whose implementation is chosen once, in each
//! service's `main`, from configuration. Everything else in the services is written against the
//! traits and does not know which one it has.

pub mod bus;
pub mod camera;
pub mod codec;
pub mod config;
pub mod edge;
pub mod media;
pub mod metrics;
pub mod mp4;
pub mod ops;
pub mod outbox;
pub mod owner;
pub mod rtp_timestamper;
pub mod rtsp_pull;
pub mod state;
pub mod telemetry;
pub mod workers;

/// Milliseconds since the Unix epoch, the time unit of every event and status.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A random identifier of `bytes` random bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}
