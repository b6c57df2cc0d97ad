# One image with every cloudcam binary (signal, ingest, recorder, standalone, edge, camsim); compose.yml picks the
# command. Built on Debian 12 like the development machines, with GStreamer from Debian.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      cmake protobuf-compiler pkg-config \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
    && mkdir /out \
    && cp target/release/cloudcam-signal target/release/cloudcam-ingest \
          target/release/cloudcam-recorder target/release/cloudcam-standalone \
          target/release/cloudcam-edge target/release/camsim /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates curl \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-libav gstreamer1.0-x \
      libgstrtspserver-1.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
RUN mkdir -p /var/lib/cloudcam/spool /var/lib/cloudcam/media \
    && chown -R nobody:nogroup /var/lib/cloudcam
WORKDIR /var/lib/cloudcam
USER nobody
CMD ["cloudcam-signal"]
