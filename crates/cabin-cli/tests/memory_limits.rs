//! Memory nearly exhausted (issue 18): cabin runs inside a memory-capped cgroup made by
//! the test (never the whole shared machine). A VM that does not fit under the limit is
//! refused before QEMU starts, with the cgroup and the figures, and nothing is
//! OOM-killed; one that fits runs; and a VM that the kernel's OOM killer ends later is
//! reported as that, not as a bare signal.

mod common;

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const MIB: u64 = 1 << 20;

/// A memory cgroup of the test's own (v2's unified tree or v1's memory hierarchy).
struct MemCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemCgroup {
    fn create(name: &str) -> MemCgroup {
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        let base = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        let dir = base.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        MemCgroup { dir, v2 }
    }

    fn limit(&self, bytes: u64) {
        let file = if self.v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(self.dir.join(file), bytes.to_string()).unwrap();
    }

    fn usage(&self) -> u64 {
        let file = if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// How many processes the OOM killer ended in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// `cmd` started inside this cgroup (it joins before exec).
    fn run(&self, mut cmd: Command) -> Output {
        let procs = CString::new(self.dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        // SAFETY: open/write/close are async-signal-safe; the path was made before the
        // fork. Writing "0" moves the writing process.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                Ok(())
            });
        }
        cmd.output().unwrap()
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn cabin_args(d: &Path, args: &[&str]) -> Command {
    let mut c = cabin_in(d);
    c.args(args);
    c
}

#[test]
fn a_vm_that_does_not_fit_under_the_memory_limit_is_refused_not_oom_killed() {
    if !is_root() {
        eprintln!("skipped: making a memory cgroup needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    import_busybox(d, "bb");
    let cg = MemCgroup::create("cabin-test-refused");
    cg.limit(200 * MIB);

    let o = cg.run(cabin_args(d, &["run", "--rm", "bb", "true"]));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not enough memory for this VM in the memory cgroup cabin runs in")
            && err.contains("limit 200 MiB")
            && err.contains("it needs 512 MiB"),
        "{err}"
    );
    let o = cg.run(cabin_args(
        d,
        &["run", "-d", "--name", "big", "bb", "sleep", "100"],
    ));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(stderr(&o).contains("not enough memory"), "{}", stderr(&o));
    // As docker's run, the container stays recorded, not running, and goes with rm.
    let o = cabin_in(d).args(["ps", "-q"]).output().unwrap();
    assert_eq!(stdout(&o), "", "nothing runs");
    let o = cabin_in(d).args(["rm", "big"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // A full VM the same.
    vm_ok(
        d,
        &["create", "desk", "--memory", "512MB", "--disk-size", "10GB"],
    );
    let o = cg.run(cabin_args(d, &["vm", "run", "desk"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not enough memory for this VM in the memory cgroup"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cg.oom_kills(), 0, "nothing was OOM-killed");
    assert!(
        qemu_processes_mentioning(d).is_empty(),
        "no QEMU was started"
    );

    // With room, the same container runs: the check refuses only what does not fit.
    cg.limit(cg.usage() + 2048 * MIB);
    let o = cg.run(cabin_args(d, &["run", "--rm", "bb", "echo", "fits"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "fits\n");
}

#[test]
fn a_vm_the_oom_killer_ends_is_reported_as_such() {
    if !is_root() {
        eprintln!("skipped: making a memory cgroup needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    import_busybox(d, "bb");
    let cg = MemCgroup::create("cabin-test-oom");
    // Room for the VM's 512 MiB as cabin counts it, not for QEMU's own memory on top
    // once the guest touches most of its RAM.
    cg.limit(cg.usage() + 540 * MIB);
    let o = cg.run(cabin_args(
        d,
        &[
            "run",
            "--rm",
            "bb",
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=450M",
            "count=1",
        ],
    ));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("QEMU was killed by the kernel's OOM killer"),
        "{}",
        stderr(&o)
    );
    assert!(cg.oom_kills() >= 1);
    assert!(run_dirs(d).is_empty(), "{:?}", run_dirs(d));
}

#[test]
fn memory_a_container_frees_goes_back_to_the_host() {
    // Booted VMs (snapshots are off in a data directory of a test's own): their RAM is
    // QEMU's anonymous memory, which free page reporting gives back.
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = cabin_args(
        d,
        &[
            "run",
            "-d",
            "--name",
            "fill",
            "--tmpfs",
            "/fill:size=300m",
            "--rootfs",
        ],
    )
    .arg(busybox_rootfs())
    .args(["sleep", "100000"])
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let qemu = qemu_processes_mentioning(d)[0];
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    let exec = |cmd: &str| {
        let o = cabin_args(d, &["exec", "fill", "sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    };
    exec("dd if=/dev/zero of=/fill/x bs=1M count=200 2>/dev/null");
    let filled = rss();
    exec("rm /fill/x");
    let mut given_back = 0;
    wait_for(
        "the memory the container freed to reach the host",
        std::time::Duration::from_secs(60),
        || {
            given_back = filled.saturating_sub(rss());
            given_back > 120 * MIB
        },
    );
    eprintln!(
        "QEMU held {} MiB with 200 MiB filled in the container, {} MiB fewer once freed",
        filled / MIB,
        given_back / MIB
    );
    let o = cabin_in(d).args(["rm", "-f", "fill"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}
