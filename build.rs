//! Generates the dataaccess.v1 server and client from the .proto with a vendored protoc, and
//! writes the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so a fresh machine needs no system package to build.
    let mut prost = tonic_prost_build::Config::new();
    prost.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;

    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("dataaccess_descriptor.bin"))
        // google.rpc.Status is the one tonic-types already generates; sharing it lets the
        // richer-error helpers build our in-band transaction errors too.
        .extern_path(".google.rpc", "::tonic_types::pb")
        // tonic-prost's codec, but a request that cannot be decoded is INVALID_ARGUMENT with an
        // ErrorInfo, not INTERNAL: the generated code names it by path.
        .codec_path("crate::rpc::codec::ProtoCodec")
        .compile_with_config(
            prost,
            &[PathBuf::from("proto/dataaccess/v1/data_access.proto")],
            &[PathBuf::from("proto"), include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
