//! Reads the Kubernetes `.proto` files from the pinned Go modules
//! k8s.io/api and k8s.io/apimachinery (`proto/schemas.sh`, into OUT_DIR)
//! and compiles them into one FileDescriptorSet that `src/protobuf.rs`
//! embeds, with `go-fields.txt`, so decoding protobuf request bodies needs
//! no protoc and no runtime compilation.

use std::path::PathBuf;

/// Packages whose `generated.proto` the simulator decodes (their imports
/// come along).
const FILES: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
    "k8s.io/api/networking/v1/generated.proto",
    "k8s.io/api/coordination/v1/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/policy/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/autoscaling/v2/generated.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=../real-kube/go.mod");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let schemas = out_dir.join("proto");
    let status = std::process::Command::new("bash")
        .arg("proto/schemas.sh")
        .arg(&schemas)
        .status()?;
    if !status.success() {
        return Err(format!("proto/schemas.sh failed ({status})").into());
    }
    let out = out_dir.join("k8s-descriptors.bin");
    let set = protox::Compiler::new([&schemas])?
        .include_imports(true)
        .open_files(FILES)?
        .encode_file_descriptor_set();
    std::fs::write(out, set)?;
    Ok(())
}
