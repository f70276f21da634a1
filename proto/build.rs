//! Compiles `holders/v1/holders.proto` with a vendored protoc, so a build needs no system install.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let includes = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("holders_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("holders/v1/holders.proto")],
            &[PathBuf::from("."), includes],
        )?;
    // tonic-prost-build does not watch the proto folder itself.
    println!("cargo:rerun-if-changed=holders");
    Ok(())
}
