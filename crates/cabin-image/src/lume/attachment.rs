//! cabin's own files carried in a VM image after Lume's layers: a suspended VM's saved
//! state (`vm push --with-memory`), its description and the kernel it runs. They have
//! media types of cabin's own, so a client that reads only Lume's media types (Lume
//! itself: its pull takes the NVRAM and disk layers by media type) still gets the
//! bootable VM, and their annotations are cabin's own, so that none of Lume's sums
//! (the disk's size from its parts' `uncompressed-size`) counts them.
//!
//! A small attachment is one raw layer. The state, as large as the guest's memory, is
//! cut and compressed like the disk: gzip chunks placed at offsets.

/// The directory of a pulled VM where a pull leaves the attachments it fetched.
pub const DIR: &str = "attachments";

// Annotations of a chunked attachment's layers.
pub const PART_OFFSET: &str = "org.cabin.part.offset";
pub const UNCOMPRESSED_SIZE: &str = "org.cabin.content.uncompressed-size";
pub const UNCOMPRESSED_DIGEST: &str = "org.cabin.content.uncompressed-digest";
pub const TOTAL_SIZE: &str = "org.cabin.content.total-size";

/// Media types of cabin's own start with this; one this cabin does not know (a later
/// cabin's) is skipped, as Lume skips them all.
pub const MEDIA_PREFIX: &str = "application/vnd.cabin.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attachment {
    /// What a saved state was saved with and how the VM starts (JSON).
    StateDescription,
    /// The kernel a VM made from an image starts with.
    Kernel,
    /// QEMU's migration stream: the guest's memory and devices.
    State,
}

impl Attachment {
    pub const ALL: [Attachment; 3] = [
        Attachment::StateDescription,
        Attachment::Kernel,
        Attachment::State,
    ];

    pub fn media_type(self) -> &'static str {
        match self {
            Attachment::StateDescription => "application/vnd.cabin.vm.suspended.v1+json",
            Attachment::Kernel => "application/vnd.cabin.vm.kernel.v1",
            Attachment::State => "application/vnd.cabin.vm.state.v1+gzip",
        }
    }

    pub fn of_media_type(mt: &str) -> Option<Attachment> {
        Attachment::ALL.into_iter().find(|a| a.media_type() == mt)
    }

    /// Its file in [`DIR`], and its layers' title.
    pub fn file(self) -> &'static str {
        match self {
            Attachment::StateDescription => "suspended.json",
            Attachment::Kernel => "kernel",
            Attachment::State => "suspended.state",
        }
    }

    /// The most bytes a pull accepts of it.
    pub fn max_bytes(self) -> u64 {
        match self {
            Attachment::StateDescription => 1 << 20,
            Attachment::Kernel => 256 << 20,
            // A guest's memory and devices (Lume's VMs go up to tens of GiB).
            Attachment::State => 1 << 40,
        }
    }

    /// Cut into gzip chunks at offsets (else one raw layer).
    pub fn chunked(self) -> bool {
        self == Attachment::State
    }
}
