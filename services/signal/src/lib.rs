//! cloudcam signal: the public edge. REST API (`/api/v1`), WebSocket signalling between browsers
//! and Janus, camera status relay, the web UI, and the Janus pool. Browsers never talk to
//! Janus's API: [`viewer`] does on their behalf after [`auth`] has checked who they are.

pub mod app;
pub mod auth;
pub mod cameras;
pub mod config;
pub mod demand;
pub mod error;
pub mod janus;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod recordings;
pub mod viewer;
pub mod web;
pub mod ws;
