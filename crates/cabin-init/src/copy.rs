//! `cabin cp` in the guest: a container's files to and from tar archives.
//!
//! The archive work runs in a helper process: cabin-init executed again as
//! `cabin-copy`, which joins the container's mount namespace (through the pidfd of its
//! first process) before it touches a path. There the container's root is the root, so
//! paths, `..` and links resolve exactly as for the container's own processes, and no
//! link in the image can lead to the guest's files. The helper stays in init's cgroup:
//! a copy does not count against the container's limits. It is a fresh process rather
//! than a fork of init, whose threads and runtime a fork would inherit half-copied.

use std::ffi::{OsStr, OsString};
use std::io::{self, BufReader, BufWriter};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::sync::Arc;

use cabin_archive::{ErrorKind, PackOptions, UnpackOptions};
use cabin_proto::v1::{CopyChunk, CopyInChunk, CopyOutRequest, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Status, Streaming};

use crate::container::Container;
use crate::reaper::{self, Exit, Reaper};

/// argv[0] that makes cabin-init the copy helper.
pub const HELPER_ARGV0: &str = "cabin-copy";

/// The descriptor the helper finds the container's pidfd at.
const PIDFD: i32 = 3;

/// Helper exit codes, mapped back to gRPC codes by init.
const EXIT_NOT_FOUND: i32 = 2;
const EXIT_DESTINATION: i32 = 3;

/// The helper's error messages are short; anything beyond this is cut.
const MAX_MESSAGE: u64 = 4096;

fn enter_container() -> io::Result<()> {
    // SAFETY: setns on the descriptor init placed at PIDFD; this process is still
    // single-threaded, as joining a mount namespace requires.
    unsafe {
        if libc::setns(PIDFD, libc::CLONE_NEWNS) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Err(io::Error::other("the container's process has exited"));
            }
            return Err(e);
        }
        libc::close(PIDFD);
    }
    std::env::set_current_dir("/")
}

fn helper(args: &[OsString]) -> Result<(), cabin_archive::Error> {
    enter_container().map_err(|e| cabin_archive::Error {
        kind: ErrorKind::Io,
        message: format!("entering the container: {e}"),
    })?;
    let arg = |i: usize| args.get(i).map(OsString::as_os_str).unwrap_or_default();
    let path = Path::new(arg(1));
    match arg(0).as_bytes() {
        b"out" => {
            let top = cabin_archive::top_name(path);
            let opts = PackOptions {
                follow_top: arg(2) == "follow",
            };
            let out = BufWriter::with_capacity(cabin_proto::CHUNK_BYTES, io::stdout().lock());
            cabin_archive::pack(path, &top, opts, out)
        }
        b"in" => {
            // The host's files, copied by its user: nothing to distrust here.
            let opts = UnpackOptions {
                keep_setid: true,
                top: None,
            };
            let input = BufReader::with_capacity(cabin_proto::CHUNK_BYTES, io::stdin().lock());
            match arg(2).as_bytes() {
                b"extract" => cabin_archive::extract_into(input, path, &opts),
                mode => cabin_archive::place(input, path, mode == b"contents", &opts),
            }
            .map(drop)
        }
        _ => Err(cabin_archive::Error {
            kind: ErrorKind::Io,
            message: "usage: cabin-copy out PATH [follow] | in PATH place|contents|extract".into(),
        }),
    }
}

/// The helper's main: runs instead of init's when argv[0] is HELPER_ARGV0.
pub fn helper_main() -> ! {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = match helper(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.message);
            match e.kind {
                ErrorKind::NotFound => EXIT_NOT_FOUND,
                ErrorKind::Destination => EXIT_DESTINATION,
                _ => 1,
            }
        }
    };
    std::process::exit(code)
}

struct Helper {
    exit: reaper::ExitWatch,
    stdin: Option<pipe::Sender>,
    stdout: Option<pipe::Receiver>,
    stderr: pipe::Receiver,
}

/// Starts the helper for `ctr` with `args`; its stdin or stdout is a pipe to init.
fn spawn(ctr: &Container, reaper: &Reaper, args: &[&OsStr], input: bool) -> Result<Helper, Status> {
    let pidfd = ctr
        .first_process
        .get()
        .ok_or_else(|| Status::failed_precondition("the container's process has not started"))?
        .as_raw_fd();
    let failed = |e: io::Error| Status::internal(format!("starting the copy helper: {e}"));
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(HELPER_ARGV0)
        .args(args)
        .stdin(if input { Stdio::piped() } else { Stdio::null() })
        .stdout(if input { Stdio::null() } else { Stdio::piped() })
        .stderr(Stdio::piped());
    // SAFETY: dup2 is async-signal-safe; it also clears close-on-exec on the copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(pidfd, PIDFD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(failed)?;
    // Registered before the next .await, so that init's reaper reports this exit to
    // us (see Reaper::watch); std's Child is never waited for.
    let exit = reaper.watch(child.id() as i32);
    let stdin = match child.stdin.take() {
        Some(s) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(s)).map_err(failed)?),
        None => None,
    };
    let stdout = match child.stdout.take() {
        Some(s) => Some(pipe::Receiver::from_owned_fd(OwnedFd::from(s)).map_err(failed)?),
        None => None,
    };
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| failed(io::Error::other("no stderr pipe")))?;
    let stderr = pipe::Receiver::from_owned_fd(stderr.into()).map_err(failed)?;
    Ok(Helper {
        exit,
        stdin,
        stdout,
        stderr,
    })
}

async fn read_message(mut r: pipe::Receiver) -> String {
    let mut buf = Vec::new();
    let _ = (&mut r).take(MAX_MESSAGE).read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).trim().to_string()
}

/// How the helper ended, as the answer to the host.
fn outcome(exit: Exit, message: String, path: &str) -> Result<(), Status> {
    let message = if message.is_empty() {
        format!("copying {path} failed ({exit:?})")
    } else {
        message
    };
    match exit {
        Exit::Code(0) => Ok(()),
        Exit::Code(EXIT_NOT_FOUND) => Err(Status::not_found(format!(
            "no such file or directory in the container: {path}"
        ))),
        Exit::Code(EXIT_DESTINATION) => Err(Status::failed_precondition(message)),
        _ => Err(Status::internal(message)),
    }
}

fn absolute(path: &str) -> Result<(), Status> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{path:?} is not an absolute path in the container"
        )));
    }
    Ok(())
}

pub type CopyOutStream = Pin<Box<dyn Stream<Item = Result<CopyChunk, Status>> + Send>>;

pub fn copy_out(
    ctr: &Container,
    reaper: &Reaper,
    req: CopyOutRequest,
) -> Result<CopyOutStream, Status> {
    absolute(&req.path)?;
    let follow = if req.follow_link { "follow" } else { "" };
    let mut h = spawn(
        ctr,
        reaper,
        &[OsStr::new("out"), OsStr::new(&req.path), OsStr::new(follow)],
        false,
    )?;
    let (tx, rx) = mpsc::channel(8);
    let mut stdout = h.stdout.take().expect("copy out reads the helper's stdout");
    tokio::spawn(async move {
        let message = tokio::spawn(read_message(h.stderr));
        let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = CopyChunk {
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The host gave up: the helper's next write fails and it exits.
                        break;
                    }
                }
            }
        }
        drop(stdout);
        let exit = reaper::wait(h.exit).await;
        let message = message.await.unwrap_or_default();
        if let Err(status) = outcome(exit, message, &req.path) {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

pub async fn copy_in(
    containers: impl FnOnce(&str) -> Result<Arc<Container>, Status>,
    reaper: &Reaper,
    mut stream: Streaming<CopyInChunk>,
) -> Result<Empty, Status> {
    let first = stream
        .next()
        .await
        .transpose()?
        .ok_or_else(|| Status::invalid_argument("an empty copy"))?;
    let Some(target) = first.target.clone() else {
        return Err(Status::invalid_argument("the copy names no destination"));
    };
    absolute(&target.path)?;
    let ctr = containers(&target.container_id)?;
    let mode = if target.extract {
        "extract"
    } else if target.contents_only {
        "contents"
    } else {
        "place"
    };
    let mut h = spawn(
        &ctr,
        reaper,
        &[OsStr::new("in"), OsStr::new(&target.path), OsStr::new(mode)],
        true,
    )?;
    let message = tokio::spawn(read_message(h.stderr));
    let mut sink = h.stdin.take().expect("copy in feeds the helper's stdin");
    let mut chunk = first;
    loop {
        // A helper that stopped reading has failed; its message says why.
        if !chunk.data.is_empty() && sink.write_all(&chunk.data).await.is_err() {
            break;
        }
        if chunk.end {
            break;
        }
        match stream.next().await {
            Some(Ok(next)) => chunk = next,
            // The host went away mid-copy: the end of input the helper now sees comes
            // before the archive's end marker, so it places nothing.
            Some(Err(_)) | None => break,
        }
    }
    drop(sink);
    let exit = reaper::wait(h.exit).await;
    outcome(exit, message.await.unwrap_or_default(), &target.path)?;
    Ok(Empty {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_exits_map_to_clear_answers() {
        assert!(outcome(Exit::Code(0), String::new(), "/x").is_ok());
        let e = outcome(Exit::Code(EXIT_NOT_FOUND), "x".into(), "/nope").unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert_eq!(
            e.message(),
            "no such file or directory in the container: /nope"
        );
        let e = outcome(Exit::Code(EXIT_DESTINATION), "no parent".into(), "/a/b").unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), "no parent");
        assert!(absolute("relative").is_err() && absolute("/ok").is_ok());
    }
}
