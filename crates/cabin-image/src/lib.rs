//! Images and storage.
//!
//! - [`rootfs`]: a root filesystem directory becomes an ext4 disk image, built once per
//!   content fingerprint and shared read-only by every container made from it.
//! - [`cpio`]: the newc archive format the guest's initramfs is written in.
//! - [`qcow2`]: empty qcow2 overlays, the containers' writable layers.

pub mod cpio;
pub mod qcow2;
pub mod rootfs;
