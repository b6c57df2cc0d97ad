#!/usr/bin/env bash
# Writes a Janus configuration directory for cloudcam: HTTP API only, streaming plugin only,
# ICE restricted to the machine's non-loopback interface (Janus skips loopback for ICE).
#
#   scripts/janus-config.sh DIR HTTP_PORT [ADMIN_PORT]
#
# Mountpoint RTP ports are chosen by signal (janus.rtp_port_min/max); rtp_port_range below is
# for the WebRTC side. In a container: JANUS_HTTP_IP=0.0.0.0 lets signal reach the API,
# JANUS_NAT_1_1=<address browsers reach> and JANUS_RTP_PORT_RANGE match the published UDP ports,
# JANUS_ICE_IFACE names the interface ICE may use. JANUS_ADMIN_KEY sets the streaming plugin's
# admin_key (give signal the same as janus.admin_key): it lets signal list private mountpoints.
# JANUS_API_SECRET sets the API's api_secret (signal's janus.api_secret): requests without it
# are refused.
set -euo pipefail
dir=$1 http_port=$2 admin_port=${3:-0}
libdir=$(dirname "$(ls -d /usr/lib/*/janus/plugins | head -1)")
iface=${JANUS_ICE_IFACE:-$(ip -o -4 route show default 2>/dev/null | awk '{print $5; exit}')}
if [ -z "$iface" ]; then
  iface=$(ip -o -4 addr show | awk '$2 != "lo" {print $2; exit}')
fi
http_ip=${JANUS_HTTP_IP:-127.0.0.1}
port_range=${JANUS_RTP_PORT_RANGE:-40000-44999}
nat_1_1=""
[ -n "${JANUS_NAT_1_1:-}" ] && nat_1_1="nat_1_1_mapping = \"$JANUS_NAT_1_1\""
api_secret=""
[ -n "${JANUS_API_SECRET:-}" ] && api_secret="api_secret = \"$JANUS_API_SECRET\""
mkdir -p "$dir"
disable_plugins=$(cd "$libdir/plugins" && ls libjanus_*.so | grep -v streaming | paste -sd, -)
disable_transports=$(cd "$libdir/transports" && ls libjanus_*.so | grep -v http | paste -sd, -)
cat > "$dir/janus.jcfg" <<CFG
general: {
  configs_folder = "$dir"
  plugins_folder = "$libdir/plugins"
  transports_folder = "$libdir/transports"
  events_folder = "$libdir/events"
  loggers_folder = "$libdir/loggers"
  debug_level = 4
  session_timeout = 60
  $api_secret
}
media: {
  rtp_port_range = "$port_range"
}
nat: {
  ice_enforce_list = "$iface"
  $nat_1_1
}
plugins: {
  disable = "$disable_plugins"
}
transports: {
  disable = "$disable_transports"
}
events: {
  broadcast = false
}
loggers: {
  disable = "libjanus_jsonlog.so"
}
CFG
admin_http=false
[ "$admin_port" != 0 ] && admin_http=true
cat > "$dir/janus.transport.http.jcfg" <<CFG
general: {
  json = "compact"
  base_path = "/janus"
  http = true
  port = $http_port
  ip = "$http_ip"
  https = false
}
admin: {
  admin_base_path = "/admin"
  admin_http = $admin_http
  admin_port = ${admin_port/#0/7088}
  admin_ip = "127.0.0.1"
}
CFG
admin_key=""
[ -n "${JANUS_ADMIN_KEY:-}" ] && admin_key="admin_key = \"$JANUS_ADMIN_KEY\""
cat > "$dir/janus.plugin.streaming.jcfg" <<CFG
general: {
  $admin_key
}
CFG
