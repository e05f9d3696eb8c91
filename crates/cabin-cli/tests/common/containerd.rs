//! Debian's containerd (1.6) as the driver of cabin's shim: started by the test on a
//! private socket, root and state, with `containerd-shim-cabin-v2` on its PATH and
//! cabin's data directory in its environment (the shim inherits both), and `ctr`
//! pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// The runtime name that selects cabin's shim.
pub const RUNTIME: &str = "io.containerd.cabin.v2";
/// The image the tests run: the busybox tree, imported into containerd.
pub const IMAGE: &str = "busybox:demo";

pub struct Containerd {
    pub dir: PathBuf,
    /// cabin's data directory, as the shim sees it.
    pub data: PathBuf,
    pub socket: PathBuf,
    process: Option<Child>,
}

impl Containerd {
    /// containerd without its CRI plugin, with busybox imported.
    pub fn start(dir: &Path) -> Containerd {
        Containerd::start_with(dir, "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n")
    }

    /// containerd with `extra` in its configuration (the top level of version 2's).
    pub fn start_with(dir: &Path, extra: &str) -> Containerd {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_containerd-shim-cabin-v2"),
            dir.join("bin/containerd-shim-cabin-v2"),
        )
        .unwrap();
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n{extra}\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            sock = socket.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut c = Containerd {
            dir: dir.to_path_buf(),
            data: dir.join("data"),
            socket,
            process: None,
        };
        c.launch();
        // The image: the busybox tree as an image of cabin's, saved as an OCI archive
        // and imported, as a user moves an image from cabin to containerd.
        import_busybox(&c.data, IMAGE);
        let archive = dir.join("busybox.tar");
        let o = cabin_in(&c.data)
            .args(["image", "save", IMAGE, "-o"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(o.status.success(), "image save: {}", stderr(&o));
        c.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
        c
    }

    fn launch(&mut self) {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", path)
            .env("CABIN_DATA_DIR", &self.data)
            .env("CABIN_ACCEL", "tcg")
            .env("CABIN_SNAPSHOTS", "off")
            .env_remove("CABIN_KERNEL")
            .env_remove("CABIN_INIT")
            .env_remove("CABIN_QEMU")
            // containerd starts its shims without HOME; so does this test.
            .env_remove("HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.process = Some(
            spawn_for_test_process(cmd)
                .expect("Debian's containerd runs (scripts/setup.sh installs it)"),
        );
        wait_for("containerd", Duration::from_secs(60), || {
            self.ctr(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    /// Stops containerd (SIGTERM; its shims and their tasks go on) and starts it again.
    pub fn restart(&mut self) {
        if let Some(mut p) = self.process.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
            let _ = p.wait();
        }
        self.launch();
    }

    /// `ctr` against this containerd.
    pub fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn ctr_out(&self, args: &[&str]) -> Output {
        self.ctr(args).output().unwrap()
    }

    /// `ctr ARGS...` with `input` piped to its stdin, which then ends.
    pub fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .ctr(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr_out(args);
        assert!(
            o.status.success(),
            "ctr {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// `ctr run --rm` of the test image with cabin's runtime: its output.
    pub fn run(&self, id: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME, IMAGE, id];
        args.extend_from_slice(cmd);
        self.ctr_out(&args)
    }

    /// The live shim processes serving this containerd.
    pub fn shims(&self) -> Vec<i32> {
        let needle = self.socket.display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let c = String::from_utf8_lossy(&c);
                    c.contains("containerd-shim-cabin-v2") && c.contains(&needle)
                })
            })
            .collect()
    }

    /// Mounts under this containerd's directory.
    pub fn mounts(&self) -> Vec<String> {
        let needle = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// `cabin ps -a`'s lines for containerd's tasks.
    pub fn cabin_tasks(&self) -> Vec<String> {
        let o = cabin_in(&self.data).args(["ps", "-a"]).output().unwrap();
        stdout(&o)
            .lines()
            .filter(|l| l.contains("containerd."))
            .map(str::to_owned)
            .collect()
    }

    /// Checks that nothing of any task is left: no container in cabin's store, no VM,
    /// no shim, no mount, no disk built from a snapshot.
    pub fn assert_nothing_left(&self) {
        eventually("the shims to exit", || self.shims().is_empty());
        assert!(self.cabin_tasks().is_empty(), "{:?}", self.cabin_tasks());
        assert!(qemu_processes_mentioning(&self.data).is_empty());
        assert!(self.mounts().is_empty(), "{:?}", self.mounts());
        // (Its lock file stays.)
        let disks: Vec<_> = std::fs::read_dir(self.data.join("rootfs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| !n.to_string_lossy().starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        assert!(disks.is_empty(), "disks left: {disks:?}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut p) = self.process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        for pid in self.shims() {
            // SAFETY: kill(2) with a pid just read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = cabin_in(&self.data)
            .args(["rm", "-f"])
            .args(
                self.cabin_tasks()
                    .iter()
                    .filter_map(|l| l.split_whitespace().last().map(str::to_owned)),
            )
            .output();
        for m in self.mounts().iter().rev() {
            if let Some(target) = m.split_whitespace().nth(1) {
                let _ = Command::new("umount").args(["-l", target]).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
