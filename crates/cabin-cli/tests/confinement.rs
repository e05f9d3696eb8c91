//! QEMU confined (issue 18): as root, each VM's QEMU runs as a user of its own from
//! cabin's range, with no capabilities beyond what its shares or ports need, no way to
//! gain privileges, under QEMU's seccomp filter, and still dies with its parent. What
//! the kernel says about the running processes (/proc/PID/status) is the evidence.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// cabin's range (cabin_vmm::confine).
const UID_BASE: u32 = 0x7CAB_0000;
const UID_SLOTS: u32 = 0xFFFF;

#[derive(Debug)]
struct Status {
    uids: Vec<u32>,
    gids: Vec<u32>,
    groups: String,
    inheritable: u64,
    permitted: u64,
    effective: u64,
    bounding: u64,
    ambient: u64,
    no_new_privs: u32,
    seccomp: u32,
}

fn status(pid: i32) -> Status {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .trim()
            .to_string()
    };
    let ids = |name: &str| -> Vec<u32> {
        field(name)
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let caps = |name: &str| u64::from_str_radix(&field(name), 16).unwrap();
    Status {
        uids: ids("Uid"),
        gids: ids("Gid"),
        groups: field("Groups"),
        inheritable: caps("CapInh"),
        permitted: caps("CapPrm"),
        effective: caps("CapEff"),
        bounding: caps("CapBnd"),
        ambient: caps("CapAmb"),
        no_new_privs: field("NoNewPrivs").parse().unwrap(),
        seccomp: field("Seccomp").parse().unwrap(),
    }
}

/// Checks what every confined QEMU has in common; returns its uid.
fn confined(pid: i32, caps: u64) -> u32 {
    let s = status(pid);
    let uid = s.uids[0];
    assert!(
        s.uids.iter().all(|&u| u == uid) && s.gids.iter().all(|&g| g == uid),
        "real, effective, saved and file ids are the VM user's: {s:?}"
    );
    assert!(
        (UID_BASE..UID_BASE + UID_SLOTS).contains(&uid),
        "a uid from cabin's range: {s:?}"
    );
    assert_eq!(s.groups, "", "no supplementary groups: {s:?}");
    for (what, v) in [
        ("permitted", s.permitted),
        ("effective", s.effective),
        ("inheritable", s.inheritable),
        ("bounding", s.bounding),
        ("ambient", s.ambient),
    ] {
        assert_eq!(v, caps, "{what} capabilities {v:#x}, not {caps:#x}: {s:?}");
    }
    assert_eq!(s.no_new_privs, 1, "no privileges to gain: {s:?}");
    assert_eq!(s.seccomp, 2, "QEMU's seccomp filter is on: {s:?}");
    uid
}

/// The QEMU processes of `data` started since `before`.
fn new_qemu(data: &Path, before: &[i32]) -> i32 {
    let mut found = Vec::new();
    wait_for("the VM's QEMU", Duration::from_secs(30), || {
        found = qemu_processes_mentioning(data)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "{found:?}");
    found[0]
}

/// `sh -c script` as `uid` (and its group), without capabilities: what an escaped
/// QEMU could do.
fn as_vm_user(uid: u32, script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

fn run_ok(d: &Path, args: &[&str]) -> String {
    let o = cabin_in(d).args(args).output().unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

struct Remove<'a>(&'a Path, &'a [&'a str]);
impl Drop for Remove<'_> {
    fn drop(&mut self) {
        for n in self.1 {
            let _ = cabin_in(self.0).args(["rm", "-f", n]).output();
        }
    }
}

#[test]
fn container_vms_run_qemu_as_a_user_of_their_own_with_only_what_their_shares_need() {
    if !is_root() {
        eprintln!("skipped: QEMU is confined when cabin runs as root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    import_busybox(d, "bb");
    let _rm = Remove(d, &["plain", "rw", "ro", "port"]);

    // No share: nothing at all.
    run_ok(d, &["run", "-d", "--name", "plain", "bb", "sleep", "1000"]);
    let plain = new_qemu(d, &[]);
    let plain_uid = confined(plain, 0);

    // A read-write share: what 9p passthrough needs to store the guest's owners and
    // modes on the host (chown, dac_override, fowner, fsetid), and nothing more.
    let shared = tempfile::tempdir().unwrap();
    let s = shared.path().to_str().unwrap();
    run_ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            "rw",
            "-v",
            &format!("{s}:/mnt"),
            "bb",
            "sleep",
            "1000",
        ],
    );
    let rw = new_qemu(d, &[plain]);
    let rw_uid = confined(rw, 0x1b);
    run_ok(
        d,
        &[
            "exec",
            "rw",
            "sh",
            "-c",
            "echo hi > /mnt/made && chown 1234:4321 /mnt/made && mkdir /mnt/dir",
        ],
    );
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(shared.path().join("made")).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (1234, 4321),
            "the guest's owner, not the VM user"
        );
        assert_eq!(
            std::fs::metadata(shared.path().join("dir")).unwrap().uid(),
            0
        );
    }

    // Read-only: reading any file the user shared, no more.
    run_ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            "ro",
            "-v",
            &format!("{s}:/mnt:ro"),
            "bb",
            "sleep",
            "1000",
        ],
    );
    let ro = new_qemu(d, &[plain, rw]);
    let ro_uid = confined(ro, 0x4);
    assert_eq!(run_ok(d, &["exec", "ro", "cat", "/mnt/made"]), "hi\n");

    // A published port below 1024 (QEMU's user network listens on it): that one
    // capability.
    let low = (600..1024)
        .rev()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    run_ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            "port",
            "-p",
            &format!("127.0.0.1:{low}:80"),
            "bb",
            "sleep",
            "1000",
        ],
    );
    let port = new_qemu(d, &[plain, rw, ro]);
    let port_uid = confined(port, 1 << 10);

    let mut uids = vec![plain_uid, rw_uid, ro_uid, port_uid];
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), 4, "every VM has a user of its own");

    // What an escaped QEMU could do as its user: signal its own process, but not
    // another VM's QEMU, and not read cabin's store.
    let o = as_vm_user(plain_uid, &format!("kill -0 {plain}"));
    assert!(o.status.success(), "the check itself works: {}", stderr(&o));
    let o = as_vm_user(plain_uid, &format!("kill -0 {rw}"));
    assert!(
        !o.status.success(),
        "one VM user cannot signal another's QEMU"
    );
    let disk = std::fs::read_dir(d.join("images/disks"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let o = as_vm_user(plain_uid, &format!("head -c1 '{}'", disk.display()));
    assert!(
        !o.status.success() && stderr(&o).contains("Permission denied"),
        "the image store is out of reach: {}",
        stderr(&o)
    );

    // Still tied to its parent: a supervisor killed with SIGKILL takes its QEMU along,
    // although the uid changed after fork.
    let supervisor: i32 = std::fs::read_to_string(format!("/proc/{plain}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: the supervisor this test started.
    unsafe { libc::kill(supervisor, libc::SIGKILL) };
    wait_for(
        "QEMU to die with its parent",
        Duration::from_secs(10),
        || !pid_alive(plain),
    );
}

#[test]
fn a_full_vm_runs_qemu_as_a_user_of_its_own() {
    if !is_root() {
        eprintln!("skipped: QEMU is confined when cabin runs as root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = vm_in(self.0, &["stop", "desk"]);
        }
    }
    let _stop = Stop(d);
    vm_ok(
        d,
        &[
            "create",
            "desk",
            "--cpu",
            "1",
            "--memory",
            "256MB",
            "--disk-size",
            "10GB",
        ],
    );
    vm_ok(d, &["run", "desk", "--detach"]);
    let qemu = new_qemu(d, &[]);
    let uid = confined(qemu, 0);
    // Its disk is a descriptor cabin opened: by path, the VM user cannot reach it.
    let disk = d.join("vms/desk/disk.img");
    let o = as_vm_user(uid, &format!("head -c1 '{}'", disk.display()));
    assert!(
        !o.status.success() && stderr(&o).contains("Permission denied"),
        "{}",
        stderr(&o)
    );
    // The runner records its QEMU, so that a later command can find one left behind.
    let recorded: Vec<i32> = run_dirs(d)
        .iter()
        .filter_map(|r| std::fs::read_to_string(r.join("vmm.pid")).ok())
        .map(|p| p.trim().parse().unwrap())
        .collect();
    assert_eq!(recorded, [qemu]);
    vm_ok(d, &["stop", "desk"]);
    wait_for("QEMU to end", Duration::from_secs(30), || !pid_alive(qemu));

    // With a read-only shared folder: reading what the user shares, nothing else.
    let shared = tempfile::tempdir().unwrap();
    vm_ok(
        d,
        &[
            "run",
            "desk",
            "--detach",
            "--shared-dir",
            &format!("{}:ro", shared.path().display()),
        ],
    );
    let qemu = new_qemu(d, &[]);
    confined(qemu, 0x4);
}
