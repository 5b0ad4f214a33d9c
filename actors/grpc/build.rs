//! Generates the `apache.rocketmq.v2` messages and the MessagingService
//! server and client from the vendored `.proto` files in `proto/`.
//!
//! The files are parsed by `protox` (pure Rust), so no `protoc` is needed
//! anywhere; its file descriptors go to `tonic-prost-build`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/apache/rocketmq/v2/service.proto"];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
