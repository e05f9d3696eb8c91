//! The container and VM runtime: everything between a user's request and the VMM.
//!
//! - [`container_vm`]: one container in its own VM, boot to teardown.
//! - [`containers`]: the container state store (records, names, supervisor liveness).
//! - [`copy`]: `cabin cp`, files between the host and a running container.
//! - [`supervisor`]: the process that owns a detached container's VM; [`container_log`]
//!   its output, time-stamped and rotated; [`attach`] clients of its process's I/O.
//! - [`root`]: the container's root filesystem (directory or image) and the image's
//!   defaults for the process.
//! - [`assets`]: the guest kernel and the initramfs with cabin-init.
//! - [`network`], [`bridge`]: a container's network (user-mode, host bridge, none) and
//!   published ports; [`volumes`]: host folders, named volumes, tmpfs mounts;
//!   [`attachments`]: what a VM gets of them.
//! - [`agent`]: the gRPC client for cabin-init.
//! - [`snapshot`]: saved idle VMs that containers resume from instead of booting.
//! - [`vm`]: full VMs managed like Lume's (store, settings, sizes).
//! - [`paths`], [`timings`], [`system`].

pub mod agent;
pub mod assets;
pub mod attach;
pub mod attachments;
pub mod bridge;
pub mod container_log;
pub mod container_vm;
pub mod containers;
pub mod copy;
pub mod dhcp;
pub mod network;
pub mod paths;
pub mod root;
pub mod snapshot;
pub mod supervisor;
pub mod system;
pub mod timings;
pub mod vm;
pub mod volumes;

pub use cabin_vmm::AccelRequest;
pub use container_vm::{ContainerConfig, ContainerVm, RunError};
pub use paths::Paths;
pub use root::RootSource;
