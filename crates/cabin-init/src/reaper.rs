//! PID 1 reaps every child: the processes it started (whose exit statuses the host waits
//! for) and orphans the kernel re-parents to it when a container's PID namespace ends.

use cabin_base::sync::Locked;
use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

pub type ExitWatch = watch::Receiver<Option<Exit>>;

#[derive(Default)]
pub struct Reaper {
    watched: Mutex<HashMap<i32, watch::Sender<Option<Exit>>>>,
}

impl Reaper {
    /// Registers a child whose exit status someone will want. Must be called before the
    /// reaper task next runs: on init's single-threaded runtime that holds as long as no
    /// `.await` separates the spawn from this call.
    pub fn watch(&self, pid: i32) -> ExitWatch {
        let (tx, rx) = watch::channel(None);
        self.watched.locked().insert(pid, tx);
        rx
    }

    /// Collects every child that has exited.
    pub fn reap(&self) {
        loop {
            let mut status = 0;
            // SAFETY: plain waitpid on any child, non-blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            crate::trace::mark("reaped a child");
            let exit = if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            if let Some(tx) = self.watched.locked().remove(&pid) {
                let _ = tx.send(Some(exit));
            }
        }
    }
}

/// Waits until the process behind `watch` has exited.
pub async fn wait(mut watch: ExitWatch) -> Exit {
    loop {
        if let Some(exit) = *watch.borrow_and_update() {
            return exit;
        }
        if watch.changed().await.is_err() {
            // The reaper never drops a sender without sending; be safe anyway.
            return Exit::Signal(libc::SIGKILL);
        }
    }
}
