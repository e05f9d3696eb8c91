//! Debian's Docker engine as a peer of the tests: dockerd on a private socket and the
//! docker CLI (v28, /usr/local/bin/docker) pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;

/// The docker CLI on these machines.
pub const DOCKER: &str = "/usr/local/bin/docker";

/// Debian's dockerd (with runc) on a private socket, as the reference: no iptables,
/// no bridge unless the test makes one (its containers use `--network none` or the
/// host's), its own data and exec roots.
pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    process: Child,
}

impl Dockerd {
    pub fn start(dir: &Path) -> Dockerd {
        Dockerd::start_with(
            dir,
            &["--iptables=false", "--ip6tables=false", "--bridge=none"],
        )
    }

    /// As a developer's host runs it: its own bridge docker0 and its iptables rules
    /// (the FORWARD policy DROP among them), which stay after it stops: the test puts
    /// the host's firewall back.
    pub fn start_with_its_firewall(dir: &Path) -> Dockerd {
        Dockerd::start_with(dir, &[])
    }

    /// Its containers on `bridge` (made by the test: `Bridge`), still without
    /// iptables: they reach the host at the bridge's address, and published ports go
    /// through docker-proxy.
    pub fn start_on(dir: &Path, bridge: &Bridge) -> Dockerd {
        Dockerd::start_with(
            dir,
            &[
                "--iptables=false",
                "--ip6tables=false",
                &format!("--bridge={}", bridge.name),
            ],
        )
    }

    fn start_with(dir: &Path, network: &[&str]) -> Dockerd {
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
            .args(network)
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

/// A Linux bridge of the test's own, with the host's address on it; removed on drop.
pub struct Bridge {
    pub name: String,
    /// The host's address on the bridge (Docker's `host-gateway` there).
    pub gateway: String,
}

impl Bridge {
    /// `name` (at most 15 bytes) with `gateway`/24 on it.
    pub fn create(name: &str, gateway: &str) -> Bridge {
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
        };
        let _ = Command::new("ip").args(["link", "del", name]).output();
        ip(&["link", "add", name, "type", "bridge"]);
        let b = Bridge {
            name: name.into(),
            gateway: gateway.into(),
        };
        // IPv4 only, as cabin's own bridges: no link-local address comes and goes.
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
        ip(&["link", "set", name, "up"]);
        b
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.name])
            .output();
    }
}
