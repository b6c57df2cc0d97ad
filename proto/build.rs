fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=schemas");
    prost_build::compile_protos(&["schemas/cloudcam/v1/camera.proto"], &["schemas"])
}
