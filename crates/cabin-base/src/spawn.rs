//! Processes that outlive the one that starts them: a container's supervisor, a VM's
//! runner, a boot snapshot's builder. Each runs in a session of its own (no controlling
//! terminal, out of the starter's job control, untouched by a Ctrl-C meant for it), with
//! stdin from /dev/null and its output where the caller says.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use crate::paths::Host;

/// Where a detached process's stdout and stderr go.
pub enum Output {
    Discard,
    /// Both to this file (a log).
    File(File),
}

/// Starts `cmd` detached (see the module comment). The child is returned for a caller
/// that wants to watch it; dropping it leaves the process running, reaped by init once
/// the caller is gone.
pub fn detached(cmd: Command, output: Output) -> io::Result<Child> {
    detached_with_stdin(cmd, Stdio::null(), output)
}

/// As [`detached`], with `stdin` as its standard input (a link to its starter).
pub fn detached_with_stdin(mut cmd: Command, stdin: Stdio, output: Output) -> io::Result<Child> {
    let (out, err) = match output {
        Output::Discard => (Stdio::null(), Stdio::null()),
        Output::File(f) => {
            let copy = f.try_clone()?;
            (Stdio::from(f), Stdio::from(copy))
        }
    };
    cmd.stdin(stdin).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe, and nothing else runs in the child between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
}

/// Starts `cmd` detached and not as a child of this process: a service that outlives
/// whoever needed it first (a long-lived caller would otherwise keep it as a zombie
/// once it exits, and count it among its children). The process in between exits at
/// once and is reaped here; a failed exec is still reported.
pub fn orphaned(cmd: Command, output: Output) -> io::Result<()> {
    orphaned_with_stdin(cmd, Stdio::null(), output)
}

/// As [`orphaned`], with `stdin` as its standard input (a link to its starter).
pub fn orphaned_with_stdin(mut cmd: Command, stdin: Stdio, output: Output) -> io::Result<()> {
    // SAFETY: fork and _exit are async-signal-safe; the intermediate process only
    // forks and exits, the grandchild goes on to exec.
    unsafe {
        cmd.pre_exec(|| match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => Ok(()),
            _ => libc::_exit(0),
        });
    }
    detached_with_stdin(cmd, stdin, output)?.wait().map(drop)
}

/// Starts `cabin ARGS...` (the binary [`Host::cabin_binary`] finds) detached: the way
/// the libraries start their helper processes, whoever calls them.
pub fn cabin_helper(
    host: &Host,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    output: Output,
) -> io::Result<Child> {
    let mut cmd = Command::new(host.cabin_binary()?);
    cmd.args(args);
    detached(cmd, output)
}

/// Starts `cabin ARGS...` as [`orphaned`] does.
pub fn cabin_service(
    host: &Host,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    output: Output,
) -> io::Result<()> {
    let mut cmd = Command::new(host.cabin_binary()?);
    cmd.args(args);
    orphaned(cmd, output)
}

/// Whether process `pid` exists (another user's counts): how cabin tells work in
/// progress from what a killed process left.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Sends `signal` to process `pid` (never to a group: `pid` must be positive).
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no such process"))?;
    // SAFETY: kill(2) takes plain integers; a positive pid names one process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orphaned_process_is_no_child_of_its_starter_and_a_failed_exec_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $PPID; ps -o sid= -p $$"]);
        orphaned(cmd, Output::File(File::create(&log).unwrap())).unwrap();
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&log).unwrap();
            if text.lines().count() == 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let mut lines = text.lines();
        let parent: u32 = lines.next().unwrap().trim().parse().unwrap();
        assert_ne!(parent, std::process::id(), "{text}");
        let sid: i32 = lines.next().unwrap().trim().parse().unwrap();
        // SAFETY: getsid(0) only reads this process's session.
        assert_ne!(sid, unsafe { libc::getsid(0) });
        let e = orphaned(Command::new("/nonexistent/program"), Output::Discard).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_detached_process_has_a_session_of_its_own_and_writes_where_told() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("log");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; ps -o sid= -p $$"]);
        let mut child = detached(cmd, Output::File(File::create(&log).unwrap())).unwrap();
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("out\nerr\n"), "{text}");
        let sid: u32 = text.lines().nth(2).unwrap().trim().parse().unwrap();
        assert_eq!(sid, pid, "the child leads its own session");
    }
}
