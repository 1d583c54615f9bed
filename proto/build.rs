//! Compiles the `.proto` files with protox (pure Rust), so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/node.proto",
        "proto/overlay.proto",
        "proto/loadtest.proto",
        "proto/engine.proto",
        "proto/power.proto",
        "proto/image.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        .bytes([".layercake.overlay.Record.data"])
        .compile_fds(descriptors)?;
    Ok(())
}
