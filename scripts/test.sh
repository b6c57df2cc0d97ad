#!/usr/bin/env bash
# Runs every test: unit tests of each crate, then the scenario tests under tests/, which start
# Apache Kafka, Redis, Janus, camsim, the services and headless Chromium as real processes.
# Logs and screenshots of the scenario tests land in artifacts/<test>/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --workspace --locked
cargo test --workspace --locked --exclude cloudcam-tests
# Scenario tests each start a whole stack: one at a time on a small machine.
# (`--test '*'`: the scenario tests only; the benchmark binaries have no tests of their own.)
cargo test --locked -p cloudcam-tests --test '*' -- --test-threads=1
