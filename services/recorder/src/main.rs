//! cloudcam recorder: will pull each recorded camera's re-stream from its ingest worker and write
//! keyframe-aligned segments to S3. Not yet implemented; the binary exists so the workspace has
//! its final shape.

fn main() {
    cloudcam_core::telemetry::init();
    tracing::error!("the recorder is not implemented yet");
    std::process::exit(2);
}
