//! Debian's Docker engine as a peer of the tests: dockerd on a private socket and the
//! docker CLI (v28, /usr/local/bin/docker) pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// The docker CLI on these machines.
pub const DOCKER: &str = "/usr/local/bin/docker";

/// Debian's dockerd (with runc) on a private socket, as the reference: no iptables,
/// no bridge (its containers use `--network none` or the host's), its own data and exec
/// roots.
pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    process: Child,
}

impl Dockerd {
    pub fn start(dir: &Path) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("dockerd.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let mut cmd = Command::new("dockerd");
        cmd.arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .stdout(Stdio::null())
            .stderr(log);
        let process = spawn_for_test_process(cmd)
            .expect("Debian's dockerd runs (scripts/setup.sh installs docker.io)");
        let d = Dockerd {
            dir: dir.to_path_buf(),
            socket,
            process,
        };
        wait_for("dockerd", Duration::from_secs(60), || {
            d.cmd(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        d
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .args(args)
            .stdin(Stdio::null());
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and its containerd, then itself.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGTERM) };
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
