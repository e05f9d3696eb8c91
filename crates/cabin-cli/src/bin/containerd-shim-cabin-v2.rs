//! The `containerd-shim-cabin-v2` binary, built beside `cabin` (so that the shim finds
//! it for the containers' supervisors): all of it is `cabin_shim`.

fn main() {
    cabin_shim::main();
}
