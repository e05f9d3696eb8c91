//! The record of an interrupted pull: which blob has been written at which offset of
//! the disk (flushed first), for one manifest. A second pull of the same image reads it
//! and fetches only the rest; a pull of another manifest starts it afresh.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const HEADER: &str = "cabin lume pull journal v1";
const MAX_BYTES: u64 = 32 << 20;

pub struct Journal {
    file: File,
    done: HashSet<(String, u64)>,
}

impl Journal {
    /// Opens the journal at `path` for `manifest_digest`, keeping its entries only if
    /// they are for that manifest.
    pub fn open(path: &Path, manifest_digest: &str) -> io::Result<Journal> {
        let header = format!("{HEADER} {manifest_digest}\n");
        let mut text = String::new();
        if let Ok(f) = File::open(path) {
            f.take(MAX_BYTES).read_to_string(&mut text).ok();
        }
        let mut done = HashSet::new();
        let valid = text.starts_with(&header);
        if valid {
            // A torn last line (no newline) is dropped: that part is written again.
            for line in text[header.len()..].split_inclusive('\n') {
                let Some(line) = line.strip_suffix('\n') else {
                    break;
                };
                if let Some((d, off)) = line.split_once(' ') {
                    if let Ok(off) = off.parse() {
                        done.insert((d.to_string(), off));
                    }
                }
            }
        }
        let file = if valid {
            let f = OpenOptions::new().append(true).open(path)?;
            if !text.ends_with('\n') {
                (&f).write_all(b"\n")?;
            }
            f
        } else {
            let _ = fs::remove_file(path);
            let mut f = OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(header.as_bytes())?;
            f
        };
        file.sync_data()?;
        Ok(Journal { file, done })
    }

    pub fn is_done(&self, digest: &str, offset: u64) -> bool {
        self.done.contains(&(digest.to_string(), offset))
    }

    pub fn entries(&self) -> usize {
        self.done.len()
    }

    /// Records a part as written; the caller has flushed the disk first.
    pub fn record(&mut self, digest: &str, offset: u64) -> io::Result<()> {
        self.file
            .write_all(format!("{digest} {offset}\n").as_bytes())?;
        self.file.sync_data()?;
        self.done.insert((digest.to_string(), offset));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_for_the_same_manifest_only() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("journal");
        let mut j = Journal::open(&p, "sha256:m1").unwrap();
        j.record("sha256:a", 0).unwrap();
        j.record("sha256:a", 512).unwrap();
        drop(j);
        // A torn line from a crash is ignored.
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"sha256:b 10")
            .unwrap();
        let mut j = Journal::open(&p, "sha256:m1").unwrap();
        assert!(j.is_done("sha256:a", 512) && j.is_done("sha256:a", 0));
        assert!(!j.is_done("sha256:b", 10));
        assert_eq!(j.entries(), 2);
        j.record("sha256:c", 7).unwrap();
        assert!(Journal::open(&p, "sha256:m1")
            .unwrap()
            .is_done("sha256:c", 7));
        let other = Journal::open(&p, "sha256:m2").unwrap();
        assert_eq!(other.entries(), 0);
    }
}
