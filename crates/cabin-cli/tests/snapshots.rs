//! Boot snapshots: containers resume a saved idle VM instead of booting a kernel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn snapshot_files(data: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data.join("snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                // A builder's partial files start with a dot.
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "state")
                        && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default()
}

fn prepare(data: &Path, extra: &[&str]) -> std::process::Output {
    cabin_in(data)
        .env("CABIN_SNAPSHOTS", "on")
        .args(["system", "prepare"])
        .args(extra)
        .output()
        .unwrap()
}

fn run_on(data: &Path, opts: &[&str], args: &[&str]) -> std::process::Output {
    run_in(data, &[("CABIN_SNAPSHOTS", "on")], opts, args)
}

fn fresh_data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cabin-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    remove_at_exit(dir.clone());
    dir
}

#[test]
fn a_prepared_snapshot_is_resumed_and_behaves_like_a_boot() {
    let data = fresh_data_dir("snap-resume");
    let o = prepare(&data, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("boot snapshot saved: "),
        "{}",
        stdout(&o)
    );
    let o = prepare(&data, &[]);
    assert!(
        stdout(&o).starts_with("boot snapshot already there"),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot_files(&data).len(), 1);

    // Besides output, randomness and the clock: what the VM readied before the snapshot
    // (the network card configured, a container's /dev and cgroup made) is the
    // container's own after the resume.
    let script = "echo out; echo err >&2; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; \
        cat /sys/class/net/eth0/address; ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; \
        ip route | grep ^default; ls /dev | tr '\\n' ' '; echo; ls /dev/pts | tr '\\n' ' '; echo; \
        cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.swap.max; exit 7";
    let a = run_on(&data, &["--timings"], &["sh", "-c", script]);
    let b = run_on(&data, &[], &["sh", "-c", script]);
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(7), "{}", stderr(o));
        assert!(stderr(o).contains("err\n"));
    }
    assert!(
        stderr(&a).contains("resumed from boot snapshot"),
        "{}",
        stderr(&a)
    );
    let lines = |o: &std::process::Output| stdout(o).lines().map(String::from).collect::<Vec<_>>();
    let (la, lb) = (lines(&a), lines(&b));
    assert_eq!(la[0], "out");
    // Each resumed VM reseeds its random number generator from the host.
    assert_eq!(la[1].len(), 32, "{la:?}");
    assert_ne!(
        la[1], lb[1],
        "two resumed VMs produced the same random bytes"
    );
    // Each has a MAC address of its own (not the snapshot's, not the other's), on the
    // network the snapshot's VM configured.
    assert_ne!(la[3], lb[3], "two resumed VMs have the same MAC address");
    for l in [&la, &lb] {
        assert!(
            l[3].starts_with("52:54:00:") && l[3] != "52:54:00:ca:b1:00",
            "{l:?}"
        );
        assert_eq!(l[4], "inet 10.0.2.15/24", "{l:?}");
        assert!(l[5].starts_with("default via 10.0.2.2 "), "{l:?}");
        // Its own /dev, with its own devpts instance (nothing open in it yet).
        for node in [
            "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue",
            "fd",
        ] {
            assert!(
                l[6].split(' ').any(|n| n == node),
                "/dev lacks {node}: {l:?}"
            );
        }
        assert_eq!(l[7].trim(), "ptmx", "{l:?}");
        // Its own cgroup, which it sees as the root, set up as a container's is.
        assert_eq!(l[8], "0::/", "{l:?}");
        assert_eq!(l[9], "0", "{l:?}");
    }
    // The guest's clock is the host's, not the saved one.
    let guest: i64 = la[2].parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host - guest).abs() < 30,
        "guest clock {guest}, host {host}"
    );

    // The resumed VM reads the container's own disk (not the template's placeholder)
    // and writes to its own layer.
    let root = busybox_copy(&data.join("rootfs-marked"));
    std::fs::write(root.join("marker"), "from the image\n").unwrap();
    let o = cabin_in(&data)
        .env("CABIN_SNAPSHOTS", "on")
        .args(["run", "--rootfs"])
        .arg(&root)
        .args(["--", "sh", "-c", "cat /marker; echo new > /new; cat /new"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "from the image\nnew\n", "{}", stderr(&o));

    // Another VM shape has a snapshot of its own.
    let o = prepare(&data, &["--memory", "200m"]);
    assert!(
        stdout(&o).starts_with("boot snapshot saved: "),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot_files(&data).len(), 2);
    let o = run_on(
        &data,
        &["--memory", "200m", "--timings"],
        &["cat", "/sys/fs/cgroup/memory.max"],
    );
    assert_eq!(stdout(&o), format!("{}\n", 200 << 20), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from boot snapshot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_run_without_a_snapshot_builds_one_in_the_background() {
    let data = fresh_data_dir("snap-background");
    let o = run_on(&data, &["--timings"], &["echo", "booted"]);
    assert_eq!(stdout(&o), "booted\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("guest kernel booted in"),
        "{}",
        stderr(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot_files(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no snapshot was built in the background"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = run_on(&data, &["--timings"], &["echo", "resumed"]);
    assert_eq!(stdout(&o), "resumed\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from boot snapshot"),
        "{}",
        stderr(&o)
    );
}

/// Runs `echo still-runs; exit 4` in `data` and checks that it booted (no snapshot
/// fitted any more) with a notice containing `notice`.
fn boots_with_notice(data: &Path, notice: &str) {
    let o = run_in(
        data,
        &[("CABIN_SNAPSHOTS", "on")],
        &["--timings"],
        &["sh", "-c", "echo still-runs; exit 4"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "still-runs\n");
    assert!(
        stderr(&o).contains(notice) && stderr(&o).contains("booting normally"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("guest kernel booted in"),
        "{}",
        stderr(&o)
    );
}

/// Waits for the snapshot at `state` to be rebuilt in the background; its size.
fn rebuilt(state: &Path) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Builders write elsewhere and rename: whatever appears here is whole.
        if let Ok(m) = std::fs::metadata(state) {
            return m.len();
        }
        assert!(Instant::now() < deadline, "the snapshot was not rebuilt");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_damaged_snapshot_is_removed_and_the_run_boots() {
    let data = fresh_data_dir("snap-damaged");
    assert!(prepare(&data, &[]).status.success());
    let state = snapshot_files(&data).pop().unwrap();
    let memory = state.with_extension("memory");
    let description = state.with_extension("json");
    let whole = std::fs::read(&state).unwrap();

    // A truncated state file is found out by its size before QEMU sees it.
    std::fs::write(&state, &whole[..whole.len() / 3]).unwrap();
    boots_with_notice(&data, "its state file changed on disk");
    assert!(!memory.exists() && !description.exists());
    // Rebuilt in the background, whole: its state as its description says.
    rebuilt(&state);
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&description).unwrap()).unwrap();
    let rebuilt_state = std::fs::read(&state).unwrap();
    assert_eq!(d["state_bytes"], rebuilt_state.len() as u64, "{d}");
    assert_eq!(d["state_digest"], sha256_hex(&rebuilt_state), "{d}");

    // A page of the memory file changed on disk: found out as the memory is loaded
    // (this data directory's memory holder has not loaded this template yet).
    let memory_bytes = std::fs::read(&memory).unwrap();
    let page = memory_bytes
        .chunks(4096)
        .position(|p| p.iter().any(|&b| b != 0))
        .expect("the template's memory holds data");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&memory)
            .unwrap();
        let flipped = [memory_bytes[page * 4096 + 100] ^ 0xff];
        f.write_all_at(&flipped, (page * 4096 + 100) as u64)
            .unwrap();
    }
    drop(memory_bytes);
    boots_with_notice(&data, "memory file changed on disk");
    assert!(!memory.exists());
    rebuilt(&state);

    // A state file that passes every check but does not resume (as after a QEMU
    // upgrade in place): QEMU refuses it, and the run boots all the same.
    let mut bad = std::fs::read(&state).unwrap();
    let half = bad.len() / 2;
    bad.truncate(half);
    std::fs::write(&state, &bad).unwrap();
    let mut d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&description).unwrap()).unwrap();
    d["state_bytes"] = bad.len().into();
    d["state_digest"] = sha256_hex(&bad).into();
    std::fs::write(&description, serde_json::to_vec(&d).unwrap()).unwrap();
    boots_with_notice(&data, "could not be resumed");
    assert!(
        rebuilt(&state) > half as u64,
        "the damaged snapshot was kept"
    );
}

/// The descriptor numbers a QEMU process has open on the template's memory file.
fn template_memory_fds(pid: i32) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_link(p)
                .is_ok_and(|t| t.to_string_lossy().contains("memfd:cabin-template-memory"))
        })
        .collect()
}

/// A field of /proc/PID/smaps for the template memory's mapping, in kB.
fn template_mapping_kb(pid: i32, field: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_mapping =
            first.contains('-') && first.chars().all(|c| c == '-' || c.is_ascii_hexdigit());
        if is_mapping {
            inside = line.contains("/memfd:cabin-template-memory");
        } else if inside && line.starts_with(field) {
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("QEMU {pid} does not map the template's memory");
}

#[test]
fn resumed_containers_share_the_templates_memory_and_none_can_change_it() {
    let data = fresh_data_dir("snap-shared");
    assert!(prepare(&data, &[]).status.success());
    /// Removes the containers however the test ends.
    struct Removed<'a>(&'a Path, Vec<String>);
    impl Drop for Removed<'_> {
        fn drop(&mut self) {
            let _ = cabin_in(self.0).args(["rm", "-f"]).args(&self.1).output();
        }
    }
    let mut ids = Removed(&data, Vec::new());
    for i in 0..2 {
        let o = run_in(
            &data,
            &[("CABIN_SNAPSHOTS", "on")],
            &["-d", "--name", &format!("idle{i}")],
            // Each guest writes 64 MiB of its own memory (tmpfs) before idling.
            &[
                "sh",
                "-c",
                "head -c 67108864 /dev/urandom > /dev/shm/fill; sleep 600",
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        ids.1.push(stdout(&o).trim().to_string());
    }
    let qemus = qemu_processes_mentioning(&data);
    assert_eq!(qemus.len(), 2, "{qemus:?}");
    // Both map one memory file: the same inode, sealed, its pages shared.
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> = qemus
        .iter()
        .map(|&pid| {
            let fds = template_memory_fds(pid);
            assert!(!fds.is_empty(), "QEMU {pid} has no template memory open");
            std::fs::metadata(&fds[0]).unwrap().ino()
        })
        .collect();
    assert_eq!(inodes[0], inodes[1], "the two VMs map different files");
    let file = template_memory_fds(qemus[0]).remove(0);
    let before = sha256_hex(&std::fs::read(&file).unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    // Wait until both guests have written their 64 MiB.
    for id in &ids.1 {
        loop {
            let o = cabin_in(&data)
                .args(["exec", id, "sh", "-c", "stat -c %s /dev/shm/fill"])
                .output()
                .unwrap();
            if stdout(&o).trim() == "67108864" {
                break;
            }
            assert!(Instant::now() < deadline, "{}", stderr(&o));
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for &pid in &qemus {
        // Pages of a memory file count as dirty (they are in no file on disk).
        let shared =
            template_mapping_kb(pid, "Shared_Clean:") + template_mapping_kb(pid, "Shared_Dirty:");
        assert!(
            shared > 8 << 10,
            "QEMU {pid} shares only {shared} kB of the template's memory"
        );
        // What the guest wrote is private to it.
        let private = template_mapping_kb(pid, "Private_Dirty:");
        assert!(private > 60 << 10, "QEMU {pid}: {private} kB private");
    }
    // The guests' writes reached none of the shared pages, and nobody can write them:
    // not QEMU (a VM user), not even root through a writable descriptor.
    assert_eq!(sha256_hex(&std::fs::read(&file).unwrap()), before);
    let writable = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    use std::os::unix::fs::FileExt;
    let e = writable.write_at(b"x", 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    assert!(writable.set_len(0).is_err());
    // Each VM has its own entropy and MAC all the same.
    let read = |id: &str, cmd: &str| {
        let o = cabin_in(&data)
            .args(["exec", id, "sh", "-c", cmd])
            .output()
            .unwrap();
        stdout(&o)
    };
    let (a, b) = (&ids.1[0], &ids.1[1]);
    let random = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(read(a, random), read(b, random));
    let mac = "cat /sys/class/net/eth0/address";
    assert_ne!(read(a, mac), read(b, mac));
    // stats and inspect show what the VM costs the host next to the container's cgroup.
    let o = cabin_in(&data)
        .args(["stats", "--no-stream", a])
        .output()
        .unwrap();
    let table = stdout(&o);
    assert!(
        table.lines().next().unwrap().ends_with("VM HOST MEM"),
        "{table}"
    );
    let host_mib: f64 = table
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .trim_end_matches("MiB")
        .parse()
        .unwrap();
    assert!(host_mib > 10.0, "{table}");
    let o = cabin_in(&data).args(["inspect", a]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let vm_host = v[0]["memory"]["vm_host_bytes"].as_u64().unwrap();
    let container = v[0]["memory"]["container_bytes"].as_u64().unwrap();
    assert!(vm_host > 10 << 20 && container > 60 << 20, "{v}");
    assert!(
        v[0]["name"].is_string(),
        "the record's own fields stay: {v}"
    );
}

#[test]
fn the_memory_holder_leaves_when_its_data_directory_is_removed() {
    let data = fresh_data_dir("snap-holder");
    assert!(prepare(&data, &[]).status.success());
    let o = run_on(&data, &[], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lock = data.join("snapshots/memory.lock");
    let holders: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t == lock))
            })
        })
        .collect();
    assert_eq!(holders.len(), 1, "one memory holder per data directory");
    // A second run uses the same holder.
    assert!(run_on(&data, &[], &["true"]).status.success());
    assert!(pid_alive(holders[0]));
    std::fs::remove_dir_all(&data).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(holders[0]) {
        assert!(
            Instant::now() < deadline,
            "the memory holder outlived its data directory"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
