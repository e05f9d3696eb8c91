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
pub fn detached(mut cmd: Command, output: Output) -> io::Result<Child> {
    let (out, err) = match output {
        Output::Discard => (Stdio::null(), Stdio::null()),
        Output::File(f) => {
            let copy = f.try_clone()?;
            (Stdio::from(f), Stdio::from(copy))
        }
    };
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
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

/// Whether process `pid` exists (another user's counts): how cabin tells work in
/// progress from what a killed process left.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

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
