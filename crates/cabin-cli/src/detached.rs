//! Starting cabin itself as a detached background process: a container's supervisor,
//! a boot snapshot build.

use std::process::Command;

use cabin_base::spawn::{detached, Output};

/// Runs `cabin ARGS...` in a session of its own with no terminal or pipes attached, so it
/// outlives this command and the user's terminal, and stays out of its job control.
pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::io::Result<()> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args);
    // The child is not waited for: it runs on after we exit and init reaps it.
    detached(cmd, Output::Discard).map(drop)
}
