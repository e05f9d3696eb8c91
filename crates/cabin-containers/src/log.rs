//! A container's log: its stdout and stderr, line by line with time stamps, in docker's
//! json-file format (`{"log": "...\n", "stream": "stdout", "time": "..."}` per line),
//! rotated by size so a chatty container cannot fill the disk.

use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The live file is rotated to `log.jsonl.1` beyond this size (one old file is kept).
pub const ROTATE_BYTES: u64 = 16 << 20;
/// A line longer than this is cut into several entries (as docker does at 16 KiB).
const MAX_LINE: usize = 16 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    /// Nanoseconds since the Unix epoch.
    pub time: u64,
}

pub fn path(container_dir: &Path) -> PathBuf {
    container_dir.join("log.jsonl")
}

pub struct LogWriter {
    path: PathBuf,
    file: fs::File,
    size: u64,
    /// Bytes of an unfinished line, per stream (0 stdout, 1 stderr).
    partial: [Vec<u8>; 2],
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

impl LogWriter {
    pub fn open(container_dir: &Path) -> io::Result<LogWriter> {
        let path = path(container_dir);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            path,
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Appends output of one stream; whole lines are written at once, the rest waits
    /// for its newline (or `flush`).
    pub fn write(&mut self, stderr: bool, data: &[u8]) -> io::Result<()> {
        let i = stderr as usize;
        let mut buf = std::mem::take(&mut self.partial[i]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl + 1;
            self.entry(stderr, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start > MAX_LINE {
            self.entry(stderr, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        self.partial[i] = buf[start..].to_vec();
        Ok(())
    }

    /// Writes what is left of unfinished lines (at the process's exit).
    pub fn flush(&mut self) -> io::Result<()> {
        for i in 0..2 {
            let rest = std::mem::take(&mut self.partial[i]);
            if !rest.is_empty() {
                self.entry(i == 1, &rest)?;
            }
        }
        self.file.flush()
    }

    /// Where the next entry goes in the live file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A line of cabin's own about the container (a failed start), on stderr.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        self.entry(true, format!("cabin: {text}\n").as_bytes())
    }

    fn entry(&mut self, stderr: bool, line: &[u8]) -> io::Result<()> {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stderr { "stderr" } else { "stdout" }.into(),
            time: now_nanos(),
        };
        let mut bytes = serde_json::to_vec(&e)?;
        bytes.push(b'\n');
        if self.size + bytes.len() as u64 > ROTATE_BYTES && self.size > 0 {
            self.rotate()?;
        }
        if let Err(e) = self.file.write_all(&bytes) {
            // A full disk, say: what part of the entry got in is cut off again, so the
            // next entry starts a line of its own once there is room.
            let _ = self.file.set_len(self.size);
            return Err(e);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let old = self.path.with_extension("jsonl.1");
        fs::rename(&self.path, old)?;
        self.file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Reads entries from `offset` of the live log (a follower keeps its offset); lines that
/// do not parse (a torn last line, damage) are skipped. Returns the new offset.
pub fn read_from(container_dir: &Path, offset: u64) -> io::Result<(Vec<Entry>, u64)> {
    let f = match fs::File::open(path(container_dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    // Rotated since the last read: start over in the new file.
    read_entries(&f, if offset > len { 0 } else { offset })
}

/// The entries of the rotated (older) file, if there is one.
pub fn read_rotated(container_dir: &Path) -> Vec<Entry> {
    let rotated = path(container_dir).with_extension("jsonl.1");
    fs::read(rotated)
        .map(|text| {
            text.split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Complete entries of `f` from `offset`; the offset after the last complete line.
fn read_entries<T: serde::de::DeserializeOwned>(
    f: &fs::File,
    offset: u64,
) -> io::Result<(Vec<T>, u64)> {
    use std::io::{Read, Seek};
    let mut f = f;
    f.seek(io::SeekFrom::Start(offset))?;
    let mut reader = io::BufReader::new(f.take(u64::MAX));
    let mut entries = Vec::new();
    let mut pos = offset;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || !line.ends_with(b"\n") {
            break; // the end, or a line still being written
        }
        pos += n as u64;
        if let Ok(e) = serde_json::from_slice::<T>(&line) {
            entries.push(e);
        }
    }
    Ok((entries, pos))
}

/// A reader that follows a file of JSON lines (a container's log, the container events
/// journal) from where it ended when the reader was opened. It holds the live file
/// open, so that what was written before the file was removed (a container's log after
/// `--rm`, a client's `rm` right after its `wait`) can still be read, and it moves on to
/// the new live file when the writer rotates it.
pub struct Follower<T> {
    path: PathBuf,
    file: Option<fs::File>,
    offset: u64,
    _entries: std::marker::PhantomData<fn() -> T>,
}

/// Follows a container's log.
pub type LogFollower = Follower<Entry>;

impl LogFollower {
    /// Follows the log of the container whose directory is `container_dir` from its
    /// end now (`at_end`) or its start.
    pub fn open(container_dir: &Path, at_end: bool) -> io::Result<LogFollower> {
        Follower::open_path(&path(container_dir), at_end)
    }
}

impl<T: serde::de::DeserializeOwned> Follower<T> {
    /// Follows the file at `path` from its end now (`at_end`) or its start.
    pub fn open_path(path: &Path, at_end: bool) -> io::Result<Follower<T>> {
        let file = match fs::File::open(path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let offset = match (&file, at_end) {
            (Some(f), true) => f.metadata()?.len(),
            _ => 0,
        };
        Ok(Follower {
            path: path.to_path_buf(),
            file,
            offset,
            _entries: std::marker::PhantomData,
        })
    }

    /// The entries written since the last call.
    pub fn read_new(&mut self) -> io::Result<Vec<T>> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        loop {
            if let Some(f) = &self.file {
                let (entries, offset) = read_entries(f, self.offset)?;
                self.offset = offset;
                out.extend(entries);
            }
            // The live file now: another one after a rotation (go on there), none after
            // a removal (what was held is all there is).
            let live = match fs::File::open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e),
            };
            let same = match &self.file {
                Some(held) => {
                    let (a, b) = (held.metadata()?, live.metadata()?);
                    (a.dev(), a.ino()) == (b.dev(), b.ino())
                }
                None => false,
            };
            if same {
                return Ok(out);
            }
            self.file = Some(live);
            self.offset = 0;
        }
    }
}

/// The entries of the live log between two offsets (whole entries that start at or
/// after `from` and end by `to`).
pub fn read_between(container_dir: &Path, from: u64, to: u64) -> io::Result<Vec<Entry>> {
    use std::io::{Read, Seek};
    let mut f = match fs::File::open(path(container_dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if to <= from {
        return Ok(Vec::new());
    }
    f.seek(io::SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.take(to - from).read_to_end(&mut bytes)?;
    Ok(bytes
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"\n"))
        .filter_map(|l| serde_json::from_slice::<Entry>(l).ok())
        .collect())
}

/// The size of the live log: where a follower starts to see only what comes next.
pub fn end(container_dir: &Path) -> u64 {
    fs::metadata(path(container_dir))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Every entry: the rotated file's, then the live one's.
pub fn read_all(container_dir: &Path) -> io::Result<(Vec<Entry>, u64)> {
    let mut all = read_rotated(container_dir);
    let (live, offset) = read_from(container_dir, 0)?;
    all.extend(live);
    Ok((all, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_stamped_and_kept_per_stream() {
        let t = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(t.path()).unwrap();
        w.write(false, b"one\ntw").unwrap();
        w.write(true, b"err\n").unwrap();
        w.write(false, b"o\nthree").unwrap();
        let (so_far, _) = read_all(t.path()).unwrap();
        assert_eq!(
            so_far.iter().map(|e| e.log.as_str()).collect::<Vec<_>>(),
            ["one\n", "err\n", "two\n"]
        );
        w.flush().unwrap();
        let (all, offset) = read_all(t.path()).unwrap();
        assert_eq!(all.last().unwrap().log, "three");
        assert_eq!(all[1].stream, "stderr");
        assert!(all.windows(2).all(|p| p[0].time <= p[1].time));
        // A follower starting at the offset sees only what comes next.
        w.write(false, b"four\n").unwrap();
        let (next, _) = read_from(t.path(), offset).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].log, "four\n");
        // A range: exactly what was written between two sizes.
        let before = w.size();
        w.write(true, b"five\nsix\n").unwrap();
        let after = w.size();
        w.write(false, b"seven\n").unwrap();
        assert_eq!(end(t.path()), w.size());
        let range = read_between(t.path(), before, after).unwrap();
        assert_eq!(
            range.iter().map(|e| e.log.as_str()).collect::<Vec<_>>(),
            ["five\n", "six\n"]
        );
    }

    #[test]
    fn the_log_rotates_by_size_and_long_lines_are_cut() {
        let t = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(t.path()).unwrap();
        let line = vec![b'x'; 40 << 10];
        w.write(false, &line).unwrap();
        let (e, _) = read_all(t.path()).unwrap();
        assert_eq!(e.len(), 2, "two whole 16 KiB pieces, the rest pending");
        let chunk = vec![b'y'; 1000];
        let mut written = 0u64;
        while written < ROTATE_BYTES + (1 << 20) {
            w.write(true, &chunk).unwrap();
            w.write(true, b"\n").unwrap();
            written += 1001;
        }
        let live = fs::metadata(path(t.path())).unwrap().len();
        let old = fs::metadata(path(t.path()).with_extension("jsonl.1"))
            .unwrap()
            .len();
        assert!(live <= ROTATE_BYTES && old <= ROTATE_BYTES, "{live} {old}");
    }
}

#[cfg(test)]
mod follower_tests {
    use super::*;

    #[test]
    fn a_follower_reads_on_through_rotation_and_after_its_container_is_removed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("c");
        fs::create_dir(&dir).unwrap();
        let mut w = LogWriter::open(&dir).unwrap();
        w.write(false, b"before\n").unwrap();
        w.flush().unwrap();
        let mut f = LogFollower::open(&dir, true).unwrap();
        assert!(f.read_new().unwrap().is_empty(), "from the end");
        w.write(false, b"one\n").unwrap();
        w.flush().unwrap();
        w.rotate().unwrap();
        w.write(true, b"two\n").unwrap();
        w.flush().unwrap();
        let got: Vec<String> = f.read_new().unwrap().into_iter().map(|e| e.log).collect();
        assert_eq!(got, ["one\n", "two\n"]);
        w.write(false, b"three\n").unwrap();
        w.flush().unwrap();
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
        let got: Vec<String> = f.read_new().unwrap().into_iter().map(|e| e.log).collect();
        assert_eq!(got, ["three\n"], "the held file is read after the removal");
        assert!(f.read_new().unwrap().is_empty());
    }
}
