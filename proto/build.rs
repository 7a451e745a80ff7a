//! Compiles `proto/fedsilo.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fedsilo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/fedsilo.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
