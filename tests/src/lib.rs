//! Test harness: starts the real components as processes (Apache Kafka, Redis, Janus, camsim,
//! signal, ingest, headless Chromium) on free ports, waits on conditions with timeouts, keeps
//! every log and screenshot under `artifacts/<test>/`, and kills every process it started, by
//! its pid, when the handle is dropped.
//!
//! The service binaries must be built first (`cargo build --workspace`).

pub mod api;
pub mod browser;
pub mod contract;
pub mod cpu;
pub mod fleet;
pub mod glass;
pub mod kafka;
pub mod media;
pub mod netns;
pub mod procs;
pub mod stack;
pub mod tls;
pub mod ws;

pub use api::Api;
pub use browser::Browser;
pub use procs::{Proc, free_port, wait_for};
pub use stack::TestEnv;
pub use ws::WsClient;
