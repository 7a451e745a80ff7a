//! Compiles `proto/fedsilo.proto` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/fedsilo.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = protox::compile(["proto/fedsilo.proto"], ["proto"])?;
    // Undecodable requests are the caller's fault: INVALID_ARGUMENT, not tonic's INTERNAL.
    // `PollReply` is written by hand (`src/poll.rs`): the same wire, with its messages kept
    // encoded so one encoding is shared by every participant's queue.
    tonic_prost_build::configure()
        .codec_path("crate::codec::ProtoCodec")
        .extern_path(".fedsilo.v1.PollReply", "crate::poll::PollReply")
        .compile_fds(fds)?;
    Ok(())
}
