//! Tar archives for `cabin cp`, used on both sides of the VM: the side that has the
//! files [`pack`]s them into a tar stream, the other side [`place`]s the stream with
//! docker cp's rules (or [`extract_into`]s a user's archive as it is).
//!
//! The reading side trusts nothing in the archive (on the host it comes from the
//! guest): paths are relative, without `..`, and bounded; every directory on the way to
//! an entry is opened without following symbolic links, so an entry can never be
//! written through a link, whatever links the archive made before; hard links may only
//! name entries of the same archive; the archive must end with its end-of-archive
//! marker, so a stream cut short is an error, not a smaller copy. Everything is
//! extracted into a fresh staging directory next to the destination first and moved
//! into place only once the whole archive has been read and checked against the
//! destination, so a failed copy leaves the destination as it was.

mod pack;
mod reader;
mod sys;
mod unpack;

pub use pack::{pack, PackOptions};
pub use unpack::{extract_into, place, UnpackOptions, Unpacked};

/// The name of the top-level entry [`pack`] is given for `path` by the side that
/// has the files, and that [`place`] expects on the other: its last component ("/"
/// has none: "rootfs").
pub fn top_name(path: &std::path::Path) -> std::ffi::OsString {
    path.file_name()
        .unwrap_or(std::ffi::OsStr::new("rootfs"))
        .to_os_string()
}

/// What went wrong, for callers that phrase or map errors by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source path does not exist.
    NotFound,
    /// The destination does not allow the copy (missing parent, directory onto a
    /// file, ...).
    Destination,
    /// The archive is damaged, cut short or hostile.
    Archive,
    /// Reading or writing files failed.
    Io,
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn io(what: impl std::fmt::Display, e: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what}: {e}"))
    }

    pub(crate) fn archive(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Archive, message)
    }

    pub(crate) fn destination(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Destination, message)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
