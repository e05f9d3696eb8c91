//! The record of an interrupted transfer, so that running it again does only the rest:
//! one line per finished piece of work, appended and flushed once the work itself is
//! durable, under a header naming what the record is about (a pull: the manifest's
//! digest; a push: the disk's identity and the chunking). A record about something
//! else is started afresh; a torn last line (a crash while writing it) is dropped, so
//! that piece is simply done again.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

const MAX_BYTES: u64 = 32 << 20;

pub struct Journal {
    file: File,
    lines: Vec<String>,
    seen: HashSet<String>,
}

impl Journal {
    /// Opens the journal at `path` for `kind` (e.g. "pull") about `key`, keeping its
    /// entries only if they are about the same thing.
    pub fn open(path: &Path, kind: &str, key: &str) -> io::Result<Journal> {
        let header = format!("cabin lume {kind} journal v1 {key}\n");
        let mut text = String::new();
        if let Ok(f) = File::open(path) {
            f.take(MAX_BYTES).read_to_string(&mut text).ok();
        }
        let mut lines = Vec::new();
        let valid = text.starts_with(&header);
        if valid {
            for line in text[header.len()..].split_inclusive('\n') {
                let Some(line) = line.strip_suffix('\n') else {
                    break;
                };
                if !line.is_empty() {
                    lines.push(line.to_string());
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
        let seen = lines.iter().cloned().collect();
        Ok(Journal { file, lines, seen })
    }

    /// The entries recorded so far, oldest first.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    pub fn contains(&self, line: &str) -> bool {
        self.seen.contains(line)
    }

    pub fn entries(&self) -> usize {
        self.lines.len()
    }

    /// Records a piece of work as done; the caller has made the work durable first.
    pub fn record(&mut self, line: &str) -> io::Result<()> {
        debug_assert!(!line.contains('\n'));
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()?;
        self.lines.push(line.to_string());
        self.seen.insert(line.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_for_the_same_key_only() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("journal");
        let mut j = Journal::open(&p, "pull", "sha256:m1").unwrap();
        j.record("sha256:a 0").unwrap();
        j.record("sha256:a 512").unwrap();
        drop(j);
        // A torn line from a crash is ignored.
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"sha256:b 10")
            .unwrap();
        let mut j = Journal::open(&p, "pull", "sha256:m1").unwrap();
        assert!(j.contains("sha256:a 512") && j.contains("sha256:a 0"));
        assert!(!j.contains("sha256:b 10"));
        assert_eq!(j.lines(), ["sha256:a 0", "sha256:a 512"]);
        j.record("sha256:c 7").unwrap();
        assert!(Journal::open(&p, "pull", "sha256:m1")
            .unwrap()
            .contains("sha256:c 7"));
        assert_eq!(Journal::open(&p, "pull", "sha256:m2").unwrap().entries(), 0);
        // The same key of another kind of transfer is another record.
        assert_eq!(Journal::open(&p, "push", "sha256:m2").unwrap().entries(), 0);
    }
}
