//! The low-level pieces every cabin crate shares, each written once with one behaviour,
//! so that a lock, a random ID or a path inside an untrusted tree means the same thing
//! everywhere.
//!
//! - [`lock`]: flock(2) locks held by a value, taken waiting or not.
//! - [`random`]: bytes and IDs from the kernel's generator.
//! - [`confined`]: paths inside an untrusted directory tree (an image, a container's
//!   root) that cannot lead out of it.
//! - [`spawn`]: processes started in a session of their own that outlive their parent.
//! - [`sizes`]: size strings as docker and Lume write them.
//! - [`sync`]: mutexes that a panicking thread does not poison for the others.
//! - [`time`]: the time as Unix seconds and RFC 3339 time stamps.
//! - [`files`]: private directories, crash-safe replacement of a file, bounded reads.
//! - [`fdpass`]: file descriptors sent over unix sockets.
//! - [`memfd`]: memory files sealed against every change.
//! - [`mountinfo`]: what is mounted below a directory, unmounted before it is deleted.
//! - [`paths`]: where cabin keeps its state and looks for what it runs.

pub mod confined;
pub mod fdpass;
pub mod files;
pub mod lock;
pub mod memfd;
pub mod memory;
pub mod mountinfo;
pub mod paths;
pub mod random;
pub mod sizes;
pub mod spawn;
pub mod sync;
pub mod time;

pub use paths::{Host, Paths};
