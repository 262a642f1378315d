//! Compiles proto/stance/v1/stance.proto (gRPC service and messages) with the vendored protoc,
//! and writes its file descriptor set for server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Undecodable messages are INVALID_ARGUMENT (src/wire/codec.rs).
        .codec_path("crate::wire::codec::StanceCodec")
        .file_descriptor_set_path(out.join("stance_v1_descriptor.bin"))
        .compile_protos(&["proto/stance/v1/stance.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
