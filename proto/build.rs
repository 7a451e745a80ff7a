//! Compiles `proto/fedsilo.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fedsilo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/fedsilo.proto"], ["proto"])?;
    // Undecodable requests are the caller's fault: INVALID_ARGUMENT, not tonic's INTERNAL.
    tonic_prost_build::configure()
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
