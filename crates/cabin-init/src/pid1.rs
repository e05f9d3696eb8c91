//! `--init`: a small reaper as PID 1 of the container, with the user's command as its
//! child, as docker's tini is.
//!
//! A command that is PID 1 of its namespace gets no default signal actions (SIGTERM
//! without a handler does nothing) and inherits every orphaned process, which it
//! rarely waits for. The reaper is cabin-init's own binary, executed in the container
//! from a descriptor init opened at boot (the container's root has no copy of it): it
//! starts the command in a process group of its own (the terminal's foreground group,
//! when there is one), passes every signal it receives on to it, waits for every
//! process that ends up its child, and exits as the command did.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::OnceLock;

/// argv[0] that makes cabin-init the reaper.
pub const ARGV0: &str = "cabin-reaper";

static BINARY: OnceLock<OwnedFd> = OnceLock::new();

/// Keeps a descriptor of init's own binary for `--init` containers (an O_PATH
/// descriptor: it can be executed, not read or written).
pub fn remember_binary() {
    // SAFETY: plain open of a NUL-terminated path; the descriptor becomes ours.
    let fd = unsafe { libc::open(c"/proc/self/exe".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: just opened.
        let _ = BINARY.set(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// The descriptor to execute the reaper from.
pub fn binary() -> Option<RawFd> {
    if BINARY.get().is_none() {
        remember_binary();
    }
    BINARY.get().map(|fd| fd.as_raw_fd())
}

/// Signals the kernel raises for a fault of the reaper itself (left to their default
/// action) and SIGTTIN (it never reads the terminal); every other signal is blocked and
/// taken with sigwaitinfo. SIGTTOU stays blocked: the reaper hands the terminal to the
/// command's process group from the background.
const NOT_FORWARDED: &[libc::c_int] = &[
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
];

fn fail(what: &str, e: io::Error, code: i32) -> ! {
    eprintln!("cabin-reaper: {what}: {e}");
    std::process::exit(code)
}

/// The shell's code for a wait status: the exit code, or 128+N for signal N.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        libc::WEXITSTATUS(status)
    }
}

/// The reaper's main: runs instead of init's when argv[0] is ARGV0.
pub fn main() -> ! {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match args.split_first() {
        Some((dashes, command)) if dashes == "--" && !command.is_empty() => command,
        _ => {
            eprintln!("usage: {ARGV0} -- COMMAND [ARG...]");
            std::process::exit(2)
        }
    };
    // SAFETY: naming this process (ps shows the binary's file name otherwise, /init);
    // sigset operations on a local set; blocking signals in this single-threaded
    // process.
    let set = unsafe {
        libc::prctl(libc::PR_SET_NAME, c"cabin-reaper".as_ptr());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for &s in NOT_FORWARDED {
            libc::sigdelset(&mut set, s);
        }
        // Started with everything blocked (see container.rs): the fault signals are
        // let through, the rest stay queued for sigwaitinfo.
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        set
    };
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // The command's group takes the terminal, so that the keys that send
            // signals (Ctrl-C) reach it and not the reaper. SIGTTOU is still blocked
            // here (a background group doing this would get it otherwise).
            if libc::isatty(0) == 1 {
                libc::tcsetpgrp(0, libc::getpid());
            }
            // The command starts as it would without the reaper: no signal blocked
            // (the mask survives exec, and std leaves it as inherited), SIGPIPE at its
            // default action.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c.id() as libc::pid_t,
        Err(e) => {
            let code = match e.kind() {
                io::ErrorKind::NotFound => 127,
                _ => 126,
            };
            fail(&format!("starting {:?}", command[0]), e, code)
        }
    };
    loop {
        // SAFETY: waiting for one of the blocked signals.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if sig < 0 {
            continue; // EINTR
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill(2) on our child, which is not reaped until the loop below
            // sees it exit (and then the reaper exits too).
            unsafe { libc::kill(child, sig) };
            continue;
        }
        // Every child that has ended: the command, and orphans it left behind.
        loop {
            let mut status = 0;
            // SAFETY: non-blocking wait for any child.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                // The container ends with its command: what is left of it is killed
                // with the namespace when its PID 1 exits.
                std::process::exit(exit_code(status));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_become_shell_exit_codes() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 137);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }
}
