//! The host-guest agent protocol shared by `cabin` (host) and `cabin-init` (guest).
//!
//! The schema is `proto/agent.proto`; this crate adds the numbers both sides must agree on.

pub mod v1 {
    tonic::include_proto!("cabin.agent.v1");
}

use std::time::Duration;

/// Minor version of the `cabin.agent.v1` protocol this build speaks. A host refuses a guest
/// agent whose version is lower than the one it needs for a call. 2: CopyOut, CopyIn and
/// StartProcessRequest.init; 3: RemoveContainer; 4: CreateContainerRequest's
/// share_namespaces_of (pods) and the "bind" mount option; 5: capabilities,
/// no_new_privileges and path rules from the container's spec.
pub const PROTOCOL_VERSION: u32 = 5;

/// Largest size of a 9p message: bigger means fewer round trips for large files.
pub const NINEP_MSIZE: u32 = 512 * 1024;

/// The mount options of a shared host folder in the guest. cache=none: every access
/// goes to the host, so changes on either side show on the other at once (and files a
/// host mounts into a shared folder later show in the guest).
pub fn ninep_mount_options() -> Vec<String> {
    vec![
        "trans=virtio".into(),
        "version=9p2000.L".into(),
        format!("msize={NINEP_MSIZE}"),
        "cache=none".into(),
    ]
}

/// The name a pooled VM's warm-up runs cabin-init's binary under (from its scratch
/// disk, as a container's command): it exits at once.
pub const WARM_UP_ARGV0: &str = "cabin-warm-up";

/// The kernel argument that gives the card of a VM on QEMU's user-mode network its
/// address and gateway (`cabin.net=ADDRESS/PREFIX,GATEWAY`): init configures the card as
/// it starts, and a container asking for that same network then only sets its MAC.
pub const BOOT_NETWORK_ARG: &str = "cabin.net";

/// Name of the virtio-serial port that carries the protocol.
pub const PORT_NAME: &str = "cabin.agent";

/// Largest message either side decodes. Output and input are sent in chunks well below
/// this; anything larger is a broken or hostile peer.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Size of the chunks output and input are cut into.
pub const CHUNK_BYTES: usize = 32 * 1024;

/// Deadline for calls that do a bounded amount of work in the guest.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Number of the exit codes `cabin run` reports for a process it could not start, as
/// docker and podman do.
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
