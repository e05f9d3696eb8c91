//! Full VM images in Lume's OCI format, so that VMs move between cabin and Lume through
//! any OCI registry. Nothing here knows about the VM store: a push reads a disk, an
//! NVRAM file and a VM description; a pull writes a disk and an NVRAM file into a
//! directory it is given.
//!
//! - [`media`]: Lume's media types and annotation keys (the strings are the format).
//! - [`manifest`]: building a manifest and config blob; reading an image's description.
//! - [`layout`]: a manifest's disk layers as a validated plan of parts to write.
//! - [`gzip`]: deterministic gzip compression of disk slices.
//! - [`lz4`]: Apple's `bv41` LZ4 block stream (Lume's legacy format).
//! - [`sparse`]: writing decompressed data with all-zero blocks left as holes.
//! - [`journal`]: what an interrupted pull or push had already done.
//! - [`push`], [`pull`]: the transfers, against a registry.
//! - [`attachment`]: cabin's own files after Lume's layers (a suspended VM's state).

pub mod attachment;
pub mod gzip;
pub mod journal;
pub mod layout;
pub mod lz4;
pub mod manifest;
pub mod media;
pub mod pull;
pub mod push;
pub mod sparse;

/// What went wrong with a VM image transfer, worded for the user.
#[derive(Debug, thiserror::Error)]
pub enum LumeError {
    /// The image's data is not a valid Lume image (hostile or broken).
    #[error("invalid VM image {image}: {detail}")]
    Invalid { image: String, detail: String },
    /// The registry refused or failed.
    #[error("registry error for {image}: {detail}")]
    Registry { image: String, detail: String },
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl LumeError {
    pub fn invalid(image: &str, detail: impl std::fmt::Display) -> LumeError {
        LumeError::Invalid {
            image: image.to_string(),
            detail: detail.to_string(),
        }
    }
    pub fn registry(image: &str, detail: impl std::fmt::Display) -> LumeError {
        LumeError::Registry {
            image: image.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Whether a registry failure is worth another try.
pub(crate) fn retryable(e: &oci_client::errors::OciDistributionError) -> bool {
    use crate::registry::{classify, Fault};
    matches!(classify(e), Fault::Transient | Fault::RateLimited)
}

/// Which way a transfer goes, for the advice on a registry failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Pull,
    Push,
}

/// A registry failure as the user sees it, with what it most likely means.
pub(crate) fn registry_err(
    image: &str,
    e: &oci_client::errors::OciDistributionError,
    direction: Direction,
) -> LumeError {
    use crate::registry::{classify, Fault};
    use oci_client::errors::OciDistributionError as E;
    let answered = match e {
        E::ServerError { code, .. } => Some(*code),
        E::RequestError(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    };
    let hint = match (classify(e), direction) {
        (Fault::Credentials, Direction::Pull) => " (the registry wants credentials: cabin login, or GITHUB_USERNAME/GITHUB_TOKEN for ghcr.io)".to_string(),
        (Fault::Credentials, Direction::Push) => " (the registry wants credentials with push rights: cabin login, or GITHUB_USERNAME/GITHUB_TOKEN for ghcr.io)".to_string(),
        (Fault::NotFound, Direction::Pull) => " (no such image or tag in the registry)".to_string(),
        (Fault::RateLimited, _) => " (the registry is rate-limiting; try again later)".to_string(),
        (Fault::Transient, _) => match answered {
            Some(code) => format!(" (the registry failed with HTTP {code}; try again later)"),
            None => " (is the registry reachable?)".to_string(),
        },
        _ => String::new(),
    };
    LumeError::registry(image, format!("{e}{hint}"))
}

/// An I/O error as the user sees it, with a hint for a full disk.
pub fn io_error(what: impl std::fmt::Display, e: std::io::Error) -> LumeError {
    let hint = if e.raw_os_error() == Some(libc::ENOSPC) {
        "; the disk is full: free some space there or use another storage location (--storage), then run it again (it resumes where it stopped)"
    } else {
        ""
    };
    LumeError::Io(format!("{what}: {e}{hint}"))
}
