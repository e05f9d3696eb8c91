//! The holder of templates' memory: one process per data directory (`cabin system
//! hold-memory`, started by the first run that needs it) that keeps each template's RAM
//! in a sealed memory file and hands it to every VM resumed from that template, over
//! `snapshots/memory.sock`.
//!
//! Why a process: VMs share a template's unchanged pages only if they map the very same
//! file, and on QEMU 7.2 each QEMU opens that file read-write (its `readonly` option
//! makes the guest's RAM read-only too). A file on disk would let one compromised QEMU
//! rewrite the pages every other VM of the template still reads. A memory file sealed
//! against writes cannot be changed through any descriptor, but it lives only as long as
//! someone holds it: this process does.
//!
//! The holder serves one request per connection: `KEY DIGEST\n`, answered `ok\n` with
//! the memory file attached, or `gone <why>\n` (the template was damaged and has been
//! removed) or `error <why>\n`. It loads a template's memory on the first request for it
//! (checking its digest), forgets it when the template is replaced or removed, and exits
//! when its socket is no longer its own (the data directory was removed) or when nobody
//! asked for anything in [`IDLE`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cabin_base::{Host, Paths};

use crate::snapshot::{self, Found, Template};

/// How long the holder waits for requests before it exits (VMs already resumed keep
/// their mapping; the next run starts a holder again).
pub const IDLE: Duration = Duration::from_secs(30 * 60);

/// How long a client waits for a holder it started to listen.
const START_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a client waits for an answer (the first request for a template loads and
/// checks its memory).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn socket(paths: &Paths) -> PathBuf {
    paths.snapshots().join("memory.sock")
}

/// The helper command that runs the holder.
pub fn hold_args() -> [&'static str; 2] {
    ["system", "hold-memory"]
}

/// Why a template's memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The template was damaged or changed on disk; it has been removed.
    #[error("the template was removed: {0}")]
    Gone(String),
    #[error("{0}")]
    Failed(String),
}

/// The sealed memory file of template `t`, from this data directory's holder (started
/// if none runs). Where no holder can be had, the memory is loaded into a memory file of
/// this process's own: the VM resumes as fast, but shares no pages with the others.
pub fn memory(host: &Host, t: &Template) -> Result<OwnedFd, MemoryError> {
    match from_holder(host, t) {
        Ok(fd) => Ok(fd),
        Err(e @ MemoryError::Gone(_)) => Err(e),
        Err(MemoryError::Failed(_)) => match snapshot::load_memory(t) {
            Ok(f) => Ok(f.into()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                snapshot::discard(&host.paths, t);
                Err(MemoryError::Gone(e.to_string()))
            }
            Err(e) => Err(MemoryError::Failed(format!(
                "loading the template's memory: {e}"
            ))),
        },
    }
}

fn from_holder(host: &Host, t: &Template) -> Result<OwnedFd, MemoryError> {
    let failed = |what: &str, e: io::Error| MemoryError::Failed(format!("{what}: {e}"));
    let path = socket(&host.paths);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(_) => {
            // Not a child of this process: a supervisor or server that starts it lives
            // on, and the holder is the data directory's, not theirs.
            cabin_base::spawn::cabin_service(host, hold_args(), cabin_base::spawn::Output::Discard)
                .map_err(|e| failed("starting the memory holder", e))?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                match UnixStream::connect(&path) {
                    Ok(c) => break c,
                    // A holder that found another one listening leaves at once, and
                    // this connects to that one.
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(failed("reaching the memory holder", e)),
                }
            }
        }
    };
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(ANSWER_TIMEOUT)))
        .map_err(|e| failed("talking to the memory holder", e))?;
    (&conn)
        .write_all(format!("{} {}\n", t.key, t.memory_digest).as_bytes())
        .map_err(|e| failed("asking the memory holder", e))?;
    let mut buf = [0u8; 512];
    let (n, fd) = cabin_base::fdpass::recv_with_fd(conn.as_raw_fd(), &mut buf)
        .map_err(|e| failed("hearing from the memory holder", e))?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    let reply = reply.trim_end();
    match (reply.split_once(' ').unwrap_or((reply, "")), fd) {
        (("ok", _), Some(fd)) => {
            check_handed(&fd, t).map_err(|e| failed("the memory holder's answer", e))?;
            Ok(fd)
        }
        (("gone", why), _) => Err(MemoryError::Gone(why.to_string())),
        ((_, why), _) => Err(MemoryError::Failed(format!(
            "the memory holder: {}",
            if why.is_empty() { reply } else { why }
        ))),
    }
}

/// What a client trusts a memory file only after checking: sealed against change, of
/// the template's size, and made by this user (a VM user cannot make one in its place).
fn check_handed(fd: &OwnedFd, t: &Template) -> io::Result<()> {
    let meta = File::from(fd.try_clone()?).metadata()?;
    // SAFETY: geteuid has no failure mode.
    let me = unsafe { libc::geteuid() };
    if !cabin_base::memfd::is_frozen(fd) || meta.len() != t.memory_bytes || meta.uid() != me {
        return Err(io::Error::other(
            "it is not a sealed copy of the template's memory",
        ));
    }
    Ok(())
}

/// Runs the holder for `paths` until it is idle for [`IDLE`] or its socket is gone.
/// Returns at once when another holder already serves this data directory.
pub fn hold(paths: &Paths) -> io::Result<()> {
    hold_for(paths, IDLE)
}

fn hold_for(paths: &Paths, idle: Duration) -> io::Result<()> {
    let dir = paths.snapshots();
    cabin_base::files::create_private_dir(&dir)?;
    let Some(_lock) = cabin_base::lock::lock_path(
        &dir.join("memory.lock"),
        cabin_base::lock::Mode::Exclusive,
        cabin_base::lock::Wait::NoWait,
    )?
    else {
        return Ok(());
    };
    let path = socket(paths);
    // Whatever is there is a dead holder's: the lock is ours.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let ours = std::fs::metadata(&path)?.ino();
    let mut held: HashMap<String, (String, File)> = HashMap::new();
    let mut last_request = Instant::now();
    loop {
        if poll_readable(&listener, Duration::from_secs(2))? {
            if let Ok((conn, _)) = listener.accept() {
                last_request = Instant::now();
                let _ = serve(paths, conn, &mut held);
            }
        }
        // Templates replaced or removed since they were loaded are let go.
        held.retain(|key, (digest, _)| {
            matches!(snapshot::find(paths, key), Found::Usable(t) if t.memory_digest == *digest)
        });
        let still_ours = std::fs::metadata(&path).is_ok_and(|m| m.ino() == ours);
        if !still_ours || last_request.elapsed() > idle {
            if still_ours {
                let _ = std::fs::remove_file(&path);
            }
            return Ok(());
        }
    }
}

fn poll_readable(listener: &UnixListener, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd that lives across the call.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    match n {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            e => Err(e),
        },
    }
}

/// Answers one request (bounded in size and time: clients are cabin processes of this
/// user, but a stuck one must not stop the others).
fn serve(
    paths: &Paths,
    conn: UnixStream,
    held: &mut HashMap<String, (String, File)>,
) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(std::io::Read::take(&conn, 256)).read_line(&mut line)?;
    let reply = |text: String, fd: Option<&File>| -> io::Result<()> {
        match fd {
            Some(f) => {
                cabin_base::fdpass::send_with_fd(conn.as_raw_fd(), text.as_bytes(), f.as_fd())
            }
            None => (&conn).write_all(text.as_bytes()),
        }
    };
    let Some((key, digest)) = line.trim_end().split_once(' ') else {
        return reply("error a request is KEY DIGEST\n".into(), None);
    };
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return reply("error not a template key\n".into(), None);
    }
    if let Some((d, f)) = held.get(key) {
        if d == digest {
            return reply("ok\n".into(), Some(f));
        }
    }
    let t = match snapshot::find(paths, key) {
        Found::Usable(t) => t,
        Found::Missing => return reply("gone there is no such template\n".into(), None),
        Found::Discarded(why) => return reply(format!("gone {why}\n"), None),
    };
    if t.memory_digest != digest {
        return reply(
            "error the template changed since it was looked up\n".into(),
            None,
        );
    }
    match snapshot::load_memory(&t) {
        Ok(f) => {
            let r = reply("ok\n".into(), Some(&f));
            held.insert(key.to_string(), (t.memory_digest, f));
            r
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            snapshot::discard(paths, &t);
            reply(format!("gone {e}\n"), None)
        }
        Err(e) => reply(format!("error loading the template's memory: {e}\n"), None),
    }
}
