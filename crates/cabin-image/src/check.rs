//! The image store's part of `cabin system check`: every blob hashes to its name, every
//! name points at a manifest that is there and whose config and layers are there, and
//! nothing half made by a process that is gone lies about. What is meant to be there is
//! not a problem: resumable partial downloads (`ingest/partial-*`), the work of live
//! processes, disks no name uses any more (a cache that `image prune` reclaims).
//!
//! Repairs remove only what is unreferenced, corrupt or half made, and names that point
//! at nothing; an image that lost a blob is reported with what to do, never deleted.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::image;
use crate::rootfs::{abandoned, remove_any};
use crate::store::{hex, Store, StoreError};

/// One thing wrong in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A file in the blob directory whose name is not a sha256 digest.
    StrayBlob(PathBuf),
    /// A blob whose content does not hash to its name (damaged on disk).
    CorruptBlob { digest: String, actual: String },
    /// The name index cannot be read.
    CorruptNames { path: PathBuf, reason: String },
    /// A name whose manifest blob is not in the store.
    MissingManifest { name: String, digest: String },
    /// A name whose manifest is there but unreadable, or whose config or a layer is
    /// missing.
    IncompleteImage { name: String, reason: String },
    /// Left by a process that is gone: an unfinished blob, disk, unpacking directory or
    /// name index.
    Abandoned(PathBuf),
}

/// What `--repair` does about a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    Remove(PathBuf),
    /// Remove the name from the index.
    Forget(String),
    /// Nothing cabin can do without losing data: what the user should do.
    Manual(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::StrayBlob(p) => write!(
                f,
                "{} is not a blob (its name is no sha256 digest)",
                p.display()
            ),
            Problem::CorruptBlob { digest, actual } => {
                write!(
                    f,
                    "blob {digest} is damaged: its content hashes to {actual}"
                )
            }
            Problem::CorruptNames { path, reason } => {
                write!(
                    f,
                    "the image name index {} cannot be read: {reason}",
                    path.display()
                )
            }
            Problem::MissingManifest { name, digest } => {
                write!(
                    f,
                    "image {name} points at manifest {digest}, which is not in the store"
                )
            }
            Problem::IncompleteImage { name, reason } => {
                write!(f, "image {name} is incomplete: {reason}")
            }
            Problem::Abandoned(p) => write!(
                f,
                "{} was left half made by a cabin that is gone",
                p.display()
            ),
        }
    }
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::Remove(p) => write!(f, "remove {}", p.display()),
            Repair::Forget(name) => write!(f, "remove the name {name}"),
            Repair::Manual(what) => f.write_str(what),
        }
    }
}

impl Problem {
    pub fn repair(&self, store: &Store) -> Repair {
        match self {
            Problem::StrayBlob(p) | Problem::Abandoned(p) => Repair::Remove(p.clone()),
            Problem::CorruptBlob { digest, .. } => match store.blob_path(digest) {
                Ok(p) => Repair::Remove(p),
                Err(_) => Repair::Manual("nothing".into()),
            },
            Problem::CorruptNames { path, .. } => Repair::Manual(format!(
                "nothing (names are yours): move {} aside and pull or import the images again; their blobs stay",
                path.display()
            )),
            Problem::MissingManifest { name, .. } => Repair::Forget(name.clone()),
            Problem::IncompleteImage { name, .. } => Repair::Manual(format!(
                "nothing: pull or import {name} again (or remove it: cabin rmi {name})"
            )),
        }
    }
}

/// What was looked at, and what is wrong.
#[derive(Debug, Default)]
pub struct Report {
    pub blobs: usize,
    pub images: usize,
    pub problems: Vec<Problem>,
}

/// The hex name of a blob file, when it is one.
fn is_digest_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn file_digest(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks the whole store (reading every blob once).
pub fn check(store: &Store) -> Result<Report, StoreError> {
    let mut report = Report::default();
    let blob_dir = store.root().join("blobs/sha256");
    let mut entries: Vec<_> = fs::read_dir(&blob_dir)
        .map_err(io_err(&blob_dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_digest_name(&name) || !path.is_file() || path.is_symlink() {
            report.problems.push(Problem::StrayBlob(path));
            continue;
        }
        report.blobs += 1;
        let actual = file_digest(&path).map_err(io_err(&path))?;
        let digest = format!("sha256:{name}");
        if actual != digest {
            report
                .problems
                .push(Problem::CorruptBlob { digest, actual });
        }
    }
    match store.refs() {
        Err(StoreError::CorruptRefs(path, reason)) => {
            report.problems.push(Problem::CorruptNames { path, reason })
        }
        Err(e) => return Err(e),
        Ok(refs) => {
            for (name, digest) in refs {
                report.images += 1;
                if !store.has_blob(&digest) {
                    report
                        .problems
                        .push(Problem::MissingManifest { name, digest });
                    continue;
                }
                let reason = match image::load(store, &name, &digest) {
                    Err(e) => Some(e.to_string()),
                    Ok(img) => img
                        .manifest
                        .layers()
                        .iter()
                        .map(|l| l.digest().to_string())
                        .find(|d| !store.has_blob(d))
                        .map(|d| format!("layer {d} is not in the store")),
                };
                if let Some(reason) = reason {
                    report
                        .problems
                        .push(Problem::IncompleteImage { name, reason });
                }
            }
        }
    }
    // Half made by processes that are gone: blobs being written, name indexes being
    // replaced, disks being built, unpacking directories.
    let root = store.root();
    let mut left = store.abandoned_writes();
    left.extend(abandoned(&root.join("disks"), ".building-"));
    left.extend(abandoned(&store.tmp_dir(), "cabin-unpack-"));
    report
        .problems
        .extend(left.into_iter().map(Problem::Abandoned));
    Ok(report)
}

/// Carries out the repair of `problem` (nothing for one left to the user).
pub fn repair_one(store: &Store, problem: &Problem) -> Result<(), StoreError> {
    match problem.repair(store) {
        Repair::Remove(path) => match remove_any(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, source: e })
            }
            _ => Ok(()),
        },
        Repair::Forget(name) => store.update_refs(|refs| {
            refs.remove(&name);
        }),
        Repair::Manual(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn an_empty_store_is_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = check(&store).unwrap();
        assert_eq!(r.problems, vec![]);
    }

    #[test]
    fn a_writer_sweeps_what_killed_writers_left_and_keeps_resumable_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pid = dead_pid();
        let ingest = dir.path().join(format!("ingest/{pid}-abc-0"));
        fs::write(&ingest, b"half").unwrap();
        let refs = dir.path().join(format!("refs.json.{pid}"));
        fs::write(&refs, b"{").unwrap();
        let partial = store
            .partial_path(&format!("sha256:{}", "1".repeat(64)))
            .unwrap();
        fs::write(&partial, b"resumable").unwrap();
        assert_eq!(check(&store).unwrap().problems.len(), 2);
        store.put_bytes(b"a new blob").unwrap();
        assert!(!ingest.exists() && !refs.exists() && partial.exists());
        assert!(check(&store).unwrap().problems.is_empty());
    }

    #[test]
    fn damaged_blobs_dead_writers_and_names_of_nothing_are_found_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = store.put_bytes(b"fine").unwrap();
        let bad = store.put_bytes(b"will be damaged").unwrap();
        fs::write(store.blob_path(&bad).unwrap(), b"damaged").unwrap();
        fs::write(dir.path().join("blobs/sha256/notes.txt"), b"x").unwrap();
        // Named first: writing the index sweeps what dead writers left.
        let ghost = format!("sha256:{}", "0".repeat(64));
        store
            .update_refs(|r| r.insert("ghost:1".into(), ghost.clone()))
            .unwrap();
        let pid = dead_pid();
        let ingest = dir.path().join(format!("ingest/{pid}-abc-0"));
        fs::write(&ingest, b"half").unwrap();
        let partial = store.partial_path(&bad).unwrap();
        fs::write(&partial, b"resumable").unwrap();
        let live = dir
            .path()
            .join(format!("ingest/{}-abc-1", std::process::id()));
        fs::write(&live, b"being written").unwrap();
        let building = dir.path().join(format!("disks/.building-{pid}-x.ext4"));
        fs::write(&building, b"").unwrap();
        let unpack = store.tmp_dir().join(format!("cabin-unpack-{pid}-y"));
        fs::create_dir_all(unpack.join("etc")).unwrap();

        let r = check(&store).unwrap();
        assert_eq!(r.blobs, 2);
        assert!(r.problems.contains(&Problem::CorruptBlob {
            digest: bad.clone(),
            actual: format!("sha256:{}", crate::store::sha256_hex(b"damaged")),
        }));
        assert!(r.problems.contains(&Problem::StrayBlob(
            dir.path().join("blobs/sha256/notes.txt")
        )));
        assert!(r.problems.contains(&Problem::Abandoned(ingest.clone())));
        assert!(r.problems.contains(&Problem::Abandoned(building.clone())));
        assert!(r.problems.contains(&Problem::Abandoned(unpack.clone())));
        assert!(r.problems.contains(&Problem::MissingManifest {
            name: "ghost:1".into(),
            digest: ghost
        }));
        assert_eq!(r.problems.len(), 6, "{:#?}", r.problems);

        for p in &r.problems {
            let done = repair_one(&store, p);
            assert!(done.is_ok(), "{p}: {done:?}");
        }
        assert_eq!(check(&store).unwrap().problems, vec![]);
        assert!(store.has_blob(&good) && !store.has_blob(&bad));
        assert!(partial.exists(), "a partial download resumes: it stays");
        assert!(live.exists(), "a live writer's blob stays");
        assert!(store.refs().unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_name_index_is_reported_and_left_to_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("refs.json"), b"{not json").unwrap();
        let r = check(&store).unwrap();
        assert!(matches!(r.problems[..], [Problem::CorruptNames { .. }]));
        assert!(matches!(r.problems[0].repair(&store), Repair::Manual(_)));
        repair_one(&store, &r.problems[0]).unwrap();
        assert!(dir.path().join("refs.json").exists());
    }
}
