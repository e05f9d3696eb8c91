// Compiles proto/agent.proto with protox (a protobuf compiler in Rust), so building
// cabin needs no system `protoc`.
fn main() {
    let proto = "proto/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"]).expect("proto/agent.proto does not compile");
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)
        .expect("generating the agent protocol code failed");
}
