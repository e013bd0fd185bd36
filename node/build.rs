fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc: the build needs nothing beyond the Rust toolchain.
    // SAFETY (edition 2021: set_var is safe): build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_protos(&["proto/floe.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/floe.proto");
    Ok(())
}
