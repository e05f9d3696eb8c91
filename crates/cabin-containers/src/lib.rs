//! Containers, each in its own VM: everything between a front end's request and the
//! VMM.
//!
//! - [`Containers`] ([`containers`]): the typed lifecycle every front end calls.
//! - [`spec`]: what a container is made of, its versioned record.
//! - [`vm`]: one container in its own VM, boot to teardown.
//! - [`store`]: the container state store (records, names, supervisor liveness);
//!   [`check`]: its records and the volumes, for `cabin system check`.
//! - [`control`]: the protocol between a supervisor and its clients; [`exec`] and
//!   [`process`]: a container's processes, their I/O and how they ended.
//! - [`copy`]: `cabin cp`, files between the host and a running container.
//! - [`supervisor`]: the process that owns a detached container's VM; [`log`] its
//!   output, time-stamped and rotated; [`attach`] clients of its process's I/O.
//! - [`root`]: the container's root filesystem (directory or image) and the image's
//!   defaults for the process.
//! - [`assets`]: the guest kernel and the initramfs with cabin-init.
//! - [`attachments`]: what a container's VM is attached to (network, shared folders,
//!   volumes); [`volumes`]: host folders, named volumes, tmpfs mounts.
//! - [`agent`]: the gRPC client for cabin-init.
//! - [`snapshot`]: templates, saved idle VMs that containers resume from instead of
//!   booting; [`holder`]: the process that keeps templates' memory for the VMs that
//!   share it.
//! - [`events`]: what happens to containers (created, started, died, destroyed), as a
//!   [`events::Watcher`] sees it from one look at the store to the next.
//! - [`health`]: health checks, run in the container by its supervisor.
//! - [`pod`]: several containers in one VM (containerd's pods): the sandbox's share
//!   and its relay of cabin-init's protocol for the members.
//! - [`timings`], [`system`].

pub mod agent;
pub mod assets;
pub mod attach;
pub mod attachments;
pub mod check;
pub mod containers;
pub mod control;
pub mod copy;
pub mod error;
pub mod events;
pub mod exec;
pub mod health;
pub mod holder;
pub mod log;
pub mod pod;
pub mod pool;
pub mod process;
pub mod root;
pub mod snapshot;
pub mod spec;
pub mod store;
pub mod supervisor;
pub mod system;
pub mod timings;
pub mod vm;
pub mod volumes;

pub use cabin_base::{Host, Paths};
pub use cabin_vmm::AccelRequest;
pub use containers::{ContainerError, Containers};
pub use error::RunError;
pub use root::RootSource;
pub use spec::ContainerSpec;
pub use vm::ContainerVm;
