//! Starting cabin itself as a detached background process: a container's supervisor,
//! a boot snapshot build.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Runs `cabin ARGS...` in a session of its own with no terminal or pipes attached, so it
/// outlives this command and the user's terminal, and stays out of its job control.
pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<()> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    // The child is not waited for: it runs on after we exit and init reaps it.
    cmd.spawn().map(drop)
}
