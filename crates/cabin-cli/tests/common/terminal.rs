//! Real terminals for the tests: a tmux server and session of a test's own.

use std::process::Command;
use std::time::Duration;

use super::wait_for;

/// Runs tmux with `args`; its standard output.
pub fn tmux(args: &[&str]) -> String {
    let o = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux is installed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A tmux session of its own running `cmd`, for one test.
pub struct Tmux {
    socket: String,
    pub session: String,
}

impl Tmux {
    pub fn start(name: &str, cmd: &str) -> Tmux {
        let t = Tmux {
            socket: format!("cabin-test-{name}-{}", std::process::id()),
            session: format!("cabin-{name}"),
        };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            "100",
            "-y",
            "30",
            cmd,
        ]);
        t
    }

    pub fn run(&self, args: &[&str]) -> String {
        let mut full = vec!["-L", self.socket.as_str()];
        full.extend_from_slice(args);
        tmux(&full)
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.session.as_str()];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    pub fn wait_for(&self, what: &str, mut cond: impl FnMut(&str) -> bool) {
        wait_for(what, Duration::from_secs(60), || cond(&self.screen()));
    }

    /// Types `command` (again every 2 s) until the screen shows `expected`: for what
    /// reaches the program a moment after the test causes it (a window's new size).
    pub fn ask_until(&self, command: &str, what: &str, expected: &str) {
        let mut last = std::time::Instant::now() - Duration::from_secs(10);
        self.wait_for(what, |screen| {
            if screen.contains(expected) {
                return true;
            }
            if last.elapsed() > Duration::from_secs(2) {
                self.keys(&[command, "Enter"]);
                last = std::time::Instant::now();
            }
            false
        });
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}
