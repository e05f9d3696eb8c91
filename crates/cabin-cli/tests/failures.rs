//! Bad input and failures: each gets one clear message and leaves nothing behind.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn assert_clean(data: &Path) {
    assert!(
        run_dirs(data).is_empty(),
        "run directories left: {:?}",
        run_dirs(data)
    );
    assert!(
        qemu_processes_mentioning(data).is_empty(),
        "QEMU processes left behind"
    );
}

#[test]
fn missing_qemu_is_named_with_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let o = run_in(
        data.path(),
        &[("CABIN_QEMU", "/nonexistent/qemu")],
        &[],
        &["true"],
    );
    expect_error(
        &o,
        125,
        "CABIN_QEMU points to /nonexistent/qemu, which does not exist",
    );
    let o = run_in(data.path(), &[("PATH", "/nonexistent")], &[], &["true"]);
    expect_error(&o, 125, "apt-get install qemu-system-x86");
    assert_clean(data.path());
}

#[test]
fn missing_kernel_is_named_with_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let o = run_in(
        data.path(),
        &[("CABIN_KERNEL", "/nonexistent/vmlinux")],
        &[],
        &["true"],
    );
    expect_error(
        &o,
        125,
        "the guest kernel /nonexistent/vmlinux does not exist",
    );
    // No kernel anywhere: the message says how to build one.
    let empty = tempfile::tempdir().unwrap();
    let o = run_in(
        data.path(),
        &[("XDG_CACHE_HOME", empty.path().to_str().unwrap())],
        &[],
        &["true"],
    );
    expect_error(&o, 125, "scripts/build-kernel.sh");
    assert_clean(data.path());
}

#[test]
fn a_dynamically_linked_init_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let o = run_in(data.path(), &[("CABIN_INIT", "/bin/true")], &[], &["true"]);
    expect_error(&o, 125, "is not a statically linked executable");
}

#[test]
fn unreadable_rootfs_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let o = cabin_in(data.path())
        .args(["run", "--rootfs", "/nonexistent/rootfs", "--", "true"])
        .output()
        .unwrap();
    expect_error(
        &o,
        125,
        "cannot read the root filesystem directory /nonexistent/rootfs",
    );
    let o = cabin_in(data.path())
        .args(["run", "--rootfs", "/etc/passwd", "--", "true"])
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("/etc/passwd is not a directory"),
        "{}",
        stderr(&o)
    );
    assert_clean(data.path());
}

#[test]
fn guest_kernel_panic_is_reported_with_the_console() {
    let data = tempfile::tempdir().unwrap();
    // No init to run: the kernel panics, QEMU exits, cabin says why.
    let o = run_in(
        data.path(),
        &[("CABIN_KERNEL_ARGS", "rdinit=/nonexistent")],
        &[],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains("the VM stopped unexpectedly"), "{err}");
    assert!(err.contains("last lines of the guest console"), "{err}");
    assert!(err.contains("Kernel panic"), "{err}");
    // The panic's own line, however long the call trace printed after it.
    assert!(
        err.contains("the guest kernel panicked: Kernel panic - not syncing: "),
        "{err}"
    );
    assert_clean(data.path());
}

#[test]
fn an_init_that_crashes_is_reported() {
    let data = tempfile::tempdir().unwrap();
    // A static init that exits at once: the kernel panics with "Attempted to kill init".
    let src = data.path().join("crash.c");
    std::fs::write(&src, "int main(void) { return 3; }\n").unwrap();
    let bin = data.path().join("crash-init");
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc -static works (build-essential)");
    let o = run_in(
        data.path(),
        &[("CABIN_INIT", bin.to_str().unwrap())],
        &[],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains("Attempted to kill init"), "{err}");
    assert_clean(data.path());
}

#[test]
fn a_guest_that_never_answers_hits_the_deadline_and_is_killed() {
    let data = tempfile::tempdir().unwrap();
    // busybox as /init runs busybox's own init, which never speaks our protocol.
    let o = run_in(
        data.path(),
        &[("CABIN_INIT", "/bin/busybox")],
        &["--boot-timeout", "4"],
        &["true"],
    );
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(err.contains("did not answer Hello within 4 s"), "{err}");
    assert!(err.contains("--boot-timeout"), "{err}");
    assert_clean(data.path());
}

fn start_sleeper(data: &Path) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = spawn_run_in(data, &["sh", "-c", "echo ready; sleep 60"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

fn vmm_pid(data: &Path) -> i32 {
    let dirs = run_dirs(data);
    assert_eq!(dirs.len(), 1);
    std::fs::read_to_string(dirs[0].join("vmm.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn qemu_dying_mid_run_is_reported_and_cleaned_up() {
    let data = tempfile::tempdir().unwrap();
    let (child, _out) = start_sleeper(data.path());
    let qemu = vmm_pid(data.path());
    // SAFETY: killing the QEMU this test started.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    let o = child.wait_with_output().unwrap();
    expect_error(&o, 125, "QEMU was killed by signal 9");
    assert_clean(data.path());
}

#[test]
fn sigkill_of_cabin_leaves_nothing_the_next_command_does_not_clean() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, _out) = start_sleeper(data.path());
    let qemu = vmm_pid(data.path());
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for("QEMU to die with cabin", Duration::from_secs(10), || {
        !pid_alive(qemu)
    });
    assert_eq!(
        run_dirs(data.path()).len(),
        1,
        "the run directory is still there"
    );
    let o = cabin_in(data.path())
        .args(["system", "info"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_clean(data.path());
}

#[test]
fn a_full_disk_while_building_the_image_is_clear_and_leaves_no_half_image() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let Some(_guard) = small_tmpfs(&data, "12m") else {
        return;
    };
    // A root filesystem bigger than the data directory's free space.
    let rootfs = t.path().join("rootfs");
    busybox_copy(&rootfs);
    std::fs::write(rootfs.join("big"), vec![7u8; 16 << 20]).unwrap();
    let o = cabin_in(&data)
        .arg("run")
        .arg("--rootfs")
        .arg(&rootfs)
        .args(["--", "true"])
        .output()
        .unwrap();
    expect_error(&o, 125, "not enough free space");
    let cached: Vec<_> = std::fs::read_dir(data.join("rootfs"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        cached.is_empty(),
        "nothing half-built in the cache: {cached:?}"
    );
    assert_clean(&data);
}
