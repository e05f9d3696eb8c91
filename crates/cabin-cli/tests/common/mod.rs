//! Shared helpers for the integration tests: they run the real `cabin` binary, which
//! boots real VMs with QEMU (under TCG on hosts where KVM cannot run a guest).
#![allow(dead_code)]

pub mod containerd;
pub mod dockerd;
pub mod fault_proxy;
pub mod http;
pub mod terminal;
pub mod vm_disks;
pub mod vm_transfer;
pub mod web;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Removes `path` when the test process exits (the shared fixtures live in statics,
/// which are never dropped).
pub fn remove_at_exit(path: PathBuf) {
    static PATHS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    extern "C" fn cleanup() {
        if let Ok(paths) = PATHS.lock() {
            for p in paths.iter() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    PATHS.lock().unwrap().push(path);
    // SAFETY: registering a plain extern "C" function.
    REGISTERED.call_once(|| unsafe {
        libc::atexit(cleanup);
    });
}

/// A busybox root filesystem made once per test binary by the project's own script.
pub fn busybox_rootfs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cabin-test-rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Command::new(workspace_root().join("scripts/make-busybox-rootfs.sh"))
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("make-busybox-rootfs.sh runs");
        assert!(st.success(), "making the busybox root filesystem failed");
        remove_at_exit(dir.clone());
        dir
    })
}

/// A Debian root file system made (once, then cached) by the project's debootstrap
/// script with `args` (e.g. `--system`); its path. Needs root.
pub fn debian_rootfs(args: &[&str]) -> String {
    let o = Command::new(workspace_root().join("scripts/make-debian-rootfs.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "debootstrap: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

/// Imports Debian 12 with systemd and sshd (`make-debian-rootfs.sh --system`) into
/// `data` as `debian-system:12`, the image full-VM tests make VMs from.
pub fn import_debian_system(data: &Path) {
    let rootfs = debian_rootfs(&["--system"]);
    let o = cabin_in(data)
        .args(["image", "import", &rootfs, "debian-system:12"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A data directory shared by the tests of one binary (the rootfs image is built once).
pub fn shared_data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cabin-test-data-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        remove_at_exit(dir.clone());
        // The shared directory has its boot snapshot made up front, so the tests that
        // use it run containers the default way: resumed, not booted.
        let o = cabin_in(&dir)
            .env("CABIN_SNAPSHOTS", "on")
            .args(["system", "prepare"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cabin system prepare: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        dir
    })
}

/// `cabin` with its own data directory. Boot snapshots are off there (the VMs boot),
/// so that no test leaves a background snapshot build behind; tests/snapshots.rs and
/// the shared data directory cover resumed VMs.
pub fn cabin_in(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cabin"));
    c.env("CABIN_DATA_DIR", data_dir)
        .env("CABIN_ACCEL", "tcg")
        .env("CABIN_SNAPSHOTS", "off")
        .env_remove("CABIN_KERNEL")
        .env_remove("CABIN_QEMU")
        .env_remove("CABIN_INIT")
        .stdin(Stdio::null());
    c
}

/// `cabin vm ARGS...` in `data_dir`.
pub fn vm_in(data_dir: &Path, args: &[&str]) -> Output {
    cabin_in(data_dir).arg("vm").args(args).output().unwrap()
}

/// `cabin vm ARGS...` in `data_dir`, which must succeed; its output.
pub fn vm_ok(data_dir: &Path, args: &[&str]) -> String {
    let o = vm_in(data_dir, args);
    assert!(
        o.status.success(),
        "vm {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// `cabin` in the shared data directory, whose VMs resume from its boot snapshot.
pub fn cabin() -> Command {
    let mut c = cabin_in(shared_data_dir());
    c.env("CABIN_SNAPSHOTS", "on");
    c
}

/// `cabin run --rootfs <busybox> -- ARGS...` with extra options before `--rootfs`.
pub fn run(opts: &[&str], args: &[&str]) -> Output {
    run_in(shared_data_dir(), &[("CABIN_SNAPSHOTS", "on")], opts, args)
}

/// `run` for VM shapes without a boot snapshot (other memory or CPUs): booted, and
/// no snapshot build started behind the test's back.
pub fn run_booted(opts: &[&str], args: &[&str]) -> Output {
    run_in(shared_data_dir(), &[("CABIN_SNAPSHOTS", "off")], opts, args)
}

/// The same in `data`, with extra environment variables for cabin.
pub fn run_in(data: &Path, env: &[(&str, &str)], opts: &[&str], args: &[&str]) -> Output {
    let mut c = cabin_in(data);
    c.envs(env.iter().copied())
        .arg("run")
        .args(opts)
        .arg("--rootfs")
        .arg(busybox_rootfs())
        .arg("--")
        .args(args);
    c.output().expect("cabin runs")
}

/// A copy of the busybox root filesystem at `dest`, to change without touching the
/// shared one.
pub fn busybox_copy(dest: &Path) -> PathBuf {
    let st = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success(), "copying the busybox root filesystem");
    dest.to_path_buf()
}

/// A docker-registry serving on a free loopback port, killed with the test process.
pub struct Registry {
    pub addr: String,
    pub storage: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    process: std::process::Child,
}

impl Registry {
    /// Freezes the registry (SIGSTOP): its connections stay open and every request
    /// hangs, as on a stalled network, until [`Registry::thaw`].
    pub fn freeze(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGSTOP) };
    }

    pub fn thaw(&self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.process.id() as i32, libc::SIGCONT) };
    }

    /// Kills the registry (SIGKILL): a registry failing in the middle of transfers.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Starts it again on the same address and storage.
    pub fn restart(&mut self) {
        self.process = serve_registry(&self.config, &self.log, &self.addr);
    }

    /// Requests of `method` whose path holds `path_part` the registry has answered.
    pub fn answered(&self, method: &str, path_part: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains(&format!("http.request.method={method} "))
                    && l.contains(path_part)
                    && l.contains("response completed")
            })
            .count()
    }

    /// Blob downloads answered so far.
    pub fn blob_gets(&self) -> usize {
        self.answered("GET", "/blobs/sha256:")
    }
}

/// A registry configuration section wanting `user`'s `password` (htpasswd, bcrypt),
/// with the password file in `dir`: pass it to [`start_registry`].
pub fn htpasswd_auth(dir: &Path, user: &str, password: &str) -> String {
    let o = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd is installed (apt-get install apache2-utils)");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("htpasswd"), &o.stdout).unwrap();
    format!(
        "auth:\n  htpasswd:\n    realm: cabin-test\n    path: {}\n",
        dir.join("htpasswd").display()
    )
}

/// `cabin login REGISTRY -u USER --password-stdin` with `password` on its input.
pub fn login(data: &Path, registry: &str, user: &str, password: &str) -> Output {
    use std::io::Write;
    let mut c = cabin_in(data);
    c.args(["login", registry, "-u", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

/// Starts Debian's docker-registry with storage in `dir` and `extra_config` (YAML, e.g.
/// an `auth:` section) appended to its configuration.
pub fn start_registry(dir: &Path, extra_config: impl FnOnce(&str) -> String) -> Registry {
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!(
        "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{}",
        dir.join("storage").display(),
        extra_config(&addr)
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.join("registry.log");
    let process = serve_registry(&config_path, &log, &addr);
    Registry {
        addr,
        storage: dir.join("storage"),
        log,
        config: config_path,
        process,
    }
}

/// Runs docker-registry with `config` until it listens on `addr`.
fn serve_registry(config: &Path, log: &Path, addr: &str) -> std::process::Child {
    // Both streams append: the access log (stdout) and the request log (stderr) would
    // otherwise overwrite each other's lines.
    let append = || {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    };
    let mut cmd = Command::new("docker-registry");
    cmd.arg("serve")
        .arg(config)
        .stdout(Stdio::from(append()))
        .stderr(Stdio::from(append()));
    let child = spawn_for_test_process(cmd)
        .expect("docker-registry is installed (apt-get install docker-registry)");
    wait_for("the registry to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(addr).is_ok()
    });
    child
}

/// Spawns `cmd` so that it dies with the test process. The parent-death signal follows
/// the spawning *thread*, so the spawn happens on a thread that never ends.
pub fn spawn_for_test_process(mut cmd: Command) -> std::io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl in the child before exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(cmd.spawn()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// Asserts that cabin failed with `code` and said `needle` on stderr.
pub fn expect_error(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// `cabin run --rootfs <busybox> -- ARGS...` started with piped output.
pub fn spawn_run(args: &[&str]) -> std::process::Child {
    spawn_run_in(shared_data_dir(), args)
}

pub fn spawn_run_in(data_dir: &Path, args: &[&str]) -> std::process::Child {
    cabin_in(data_dir)
        .args(["run", "--rootfs"])
        .arg(busybox_rootfs())
        .arg("--")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cabin starts")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Run directories currently in a data directory.
pub fn run_dirs(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("run"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Live QEMU processes whose command line or open files name something under `dir`
/// (QEMU gets cabin's files as descriptors, so its command line names none of them).
pub fn qemu_processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let qemu = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("qemu"));
            let named = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                || std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                    fds.flatten().any(|f| {
                        std::fs::read_link(f.path())
                            .is_ok_and(|t| t.to_string_lossy().contains(&needle))
                    })
                });
            qemu && named && pid_alive(*pid)
        })
        .collect()
}

// Detached containers (tests/containers.rs, tests/container_lifecycle.rs).

pub fn cabin_ok(args: &[&str]) -> String {
    let o = cabin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "cabin {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

pub fn run_detached(opts: &[&str], cmd: &[&str]) -> std::process::Output {
    cabin()
        .args(["run", "-d"])
        .args(opts)
        .arg("--rootfs")
        .arg(busybox_rootfs())
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

pub fn inspect(name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&cabin_ok(&["inspect", name])).unwrap();
    v[0].clone()
}

pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn ps_line(name: &str) -> Option<String> {
    cabin_ok(&["ps", "-a"])
        .lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .map(String::from)
}

/// Removes the named containers when the test ends, passed or failed, so that no
/// supervisor (and VM) outlives the test.
pub struct Cleanup(pub &'static [&'static str]);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = cabin().args(["rm", "-f"]).args(self.0).output();
    }
}

/// A long-running process that says "started" once its TERM trap is set (a PID 1
/// without a handler ignores SIGTERM, so a signal sent on "started" must find it) and
/// "bye" when stopped.
pub const SERVER: &str = "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.2; done";

/// Unmounts its directory when dropped.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. "4m") on `dir`, to fill up on purpose; None (and a
/// note) when not root.
pub fn small_tmpfs(dir: &Path, size: &str) -> Option<Unmount> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs on {}", dir.display());
    Some(Unmount(dir.to_path_buf()))
}

/// A Python that imports `import`, with `package` (`name==version`, from PyPI)
/// installed once into its own venv under target/test-python. Err says why there is
/// none.
pub fn python_with(package: &str, import: &str) -> Result<PathBuf, String> {
    let dir = workspace_root()
        .join("target/test-python")
        .join(package.replace("==", "-"));
    let python = dir.join("bin/python");
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {import}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if imports(&python) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "python3 -m venv failed (Debian needs python3-venv, which scripts/setup.sh installs): {}",
            stderr(&o)
        ));
    }
    let o = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            package,
        ])
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !o.status.success() || !imports(&python) {
        return Err(format!(
            "pip install {package} failed: {}{}",
            stdout(&o),
            stderr(&o)
        ));
    }
    Ok(python)
}

/// Whether the tests run as root (bridges, taps, debootstrap need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A small tmpfs mounted on a directory for the test's life (root only): a disk that
/// fills up on purpose. Unmounted when dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (mount's syntax: `8m`) on `dir`, made first.
    pub fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }

    /// Makes room: the same tmpfs, now of `size`.
    pub fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remounting {}", self.0.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Imports the busybox tree into `data` as the image `name`.
pub fn import_busybox(data: &Path, name: &str) {
    let o = cabin_in(data)
        .args(["image", "import"])
        .arg(busybox_rootfs())
        .arg(name)
        .output()
        .unwrap();
    assert!(o.status.success(), "import: {}", stderr(&o));
}
