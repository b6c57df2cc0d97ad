#!/usr/bin/env bash
# Benchmarks, each against a baseline measured in the same run (printed as ratios):
#   bench_latency    watch → video playing in Chromium, GOP 1 s vs 2 s, cold vs warm
#   bench_glass      glass-to-glass (capture → received/decoded/displayed in Chromium) with 16
#                    other cameras relayed, browser playout vs low latency, drift; cold-start
#                    freshness against a camera whose encoder keeps running (GLASS_SECONDS, 60;
#                    the 30-minute drift: cargo run … --bin bench_glass -- 1800 16 0 low)
#   bench_relay_cpu  ingest CPU per camera vs a gst-launch relay of the same N streams and go2rtc
#   bench_audio_cpu  ingest CPU of the live view's audio transcode (AAC → Opus, while watched)
#                    vs the relay of the same cameras
#   bench_push_cpu   ingest CPU per pushed camera (RTSP RECORD) vs per pulled camera
#   bench_recorder   recorder CPU per camera vs gst-launch splitmuxsink; segment availability
#   bench_failover   ingest failover after SIGKILL, rejoin and join times vs the session timeout
#   failover_under_load (the scenario test, run longer)  false evictions per hour under load
#   bench_access     GET /cameras of a viewer (10 shared of 1,000) vs the administrator; sign-in cost
#   bench_control_plane  GET /cameras, a day's recordings, creation rate, idle CPU at 10 and
#                    1,000 cameras and with ~1 M segment-index entries (release build)
#   scripts/bench.sh [TRIES] [N_CAMERAS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
cargo build --workspace --locked -q
cargo run --locked -q -p cloudcam-tests --bin bench_latency -- "${1:-20}"
cargo run --locked -q -p cloudcam-tests --bin bench_failover -- 5 12
# False evictions: 16 relayed cameras and both cores busy for EVICTION_MINUTES (default 30).
CLOUDCAM_LOAD_MINUTES="${EVICTION_MINUTES:-30}" cargo test --locked -q -p cloudcam-tests \
  --test failover_under_load -- --nocapture
# CPU is measured on release builds of the services.
cargo build --workspace --locked -q --release
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_glass -- "${GLASS_SECONDS:-60}" 16 10
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_relay_cpu -- "${2:-16}" "${3:-20}"
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_audio_cpu -- 8 "${3:-20}"
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_push_cpu -- 8 "${3:-20}"
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_recorder -- "${2:-8}" "${3:-20}"
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_control_plane
CLOUDCAM_BIN_PROFILE=release cargo run --locked -q --release -p cloudcam-tests --bin bench_access
