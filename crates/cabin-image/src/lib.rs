//! Images and storage.
//!
//! - [`rootfs`]: a root filesystem directory becomes an ext4 disk image, built once per
//!   content fingerprint and shared read-only by every container made from it.
//! - [`store`]: the content-addressed image store (blobs, names, disks).
//! - [`image`]: images in it: import, resolve, the ready-to-use disk, removal.
//! - [`check`]: the store's consistency (`cabin system check`) and its repair.
//! - [`pull`], [`push`], [`registry`]: images to and from OCI registries.
//! - [`lume`]: full VM images in Lume's OCI format (push, pull, legacy LZ4).
//! - [`archive`]: save and load images as tar archives (OCI layout, docker save).
//! - [`layer`]: applying OCI layers to a directory safely.
//! - [`cpio`]: the newc archive format the guest's initramfs is written in.
//! - [`qcow2`]: empty qcow2 overlays, the containers' writable layers.

pub mod archive;
pub mod check;
pub mod cpio;
pub mod credentials;
pub mod gpt;
pub mod image;
pub mod layer;
pub mod lume;
pub mod pull;
pub mod push;
pub mod qcow2;
pub mod registry;
pub mod rootfs;
pub mod store;
