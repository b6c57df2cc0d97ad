#!/usr/bin/env bash
# Runs cloudcam on this machine with embedded defaults: Janus and a simulated camera (camsim)
# as processes, and cloudcam-standalone (signal, an ingest worker and a recorder in one
# process; no Kafka, no Redis).
# The simulated camera is added on start, so the web UI shows it playing live. Recordings and
# snapshots go to .cache/run/media.
#
#   CLOUDCAM_PORT (default 8080), CLOUDCAM_ADMIN_PASSWORD (default: generated and printed)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
cargo build --locked -p cloudcam-standalone -p camsim

port=${CLOUDCAM_PORT:-8080}
janus_port=${CLOUDCAM_JANUS_PORT:-8088}
camsim_port=${CLOUDCAM_CAMSIM_PORT:-8554}
password=${CLOUDCAM_ADMIN_PASSWORD:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
run=.cache/run
mkdir -p "$run"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

janus_admin_key=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
janus_api_secret=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
JANUS_ADMIN_KEY="$janus_admin_key" JANUS_API_SECRET="$janus_api_secret" \
  scripts/janus-config.sh "$PWD/$run/janus" "$janus_port"
janus -F "$PWD/$run/janus" > "$run/janus.log" 2>&1 & pids+=($!)
target/debug/camsim --port "$camsim_port" \
  --stream "demo:width=1280,height=720,fps=25,gop=50" \
  --stream "demo-sub:width=640,height=360,fps=25,gop=50" > "$run/camsim.log" 2>&1 & pids+=($!)

CLOUDCAM_STANDALONE_SIGNAL__LISTEN="0.0.0.0:$port" \
CLOUDCAM_STANDALONE_SIGNAL__AUTH__ADMIN_PASSWORD="$password" \
CLOUDCAM_STANDALONE_SIGNAL__JANUS__URL="http://127.0.0.1:$janus_port/janus" \
CLOUDCAM_STANDALONE_SIGNAL__JANUS__ADMIN_KEY="$janus_admin_key" \
CLOUDCAM_STANDALONE_SIGNAL__JANUS__API_SECRET="$janus_api_secret" \
CLOUDCAM_STANDALONE_SIGNAL__MEDIA__LOCAL_DIR="$run/media" \
CLOUDCAM_STANDALONE_RECORDER__SPOOL_DIR="$run/spool" \
  target/debug/cloudcam-standalone > "$run/cloudcam.log" 2>&1 & pids+=($!)

api="http://127.0.0.1:$port/api/v1"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
token=$(curl -sf -X POST "$api/login" -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$password\"}" | sed -E 's/.*"token":"([^"]+)".*/\1/')
curl -sf -X POST "$api/cameras" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"name\":\"Simulated camera\",\"url\":\"rtsp://127.0.0.1:$camsim_port/demo\",\"sub_url\":\"rtsp://127.0.0.1:$camsim_port/demo-sub\",\"always_on\":true}" >/dev/null

cat <<MSG

  cloudcam is running:  http://127.0.0.1:$port/
  sign in as admin / $password
  logs: $run/*.log — Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
