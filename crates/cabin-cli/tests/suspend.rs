//! Full VMs suspended and resumed, on real QEMU under TCG with a Debian guest made from
//! an image: `vm suspend` (and the API's `POST /lume/vms/NAME/suspend`) saves the
//! running guest and ends it; `vm run` resumes it where it was, with the host's clock,
//! a new VM generation ID and its address; what must not touch a suspended VM's disk
//! is refused; a saved state that is damaged or no longer matches is discarded with a
//! notice and the VM boots; a VM with a mounted shared folder is refused and runs on;
//! memory the guest frees goes back to the host. A suspended VM pushed with its memory
//! resumes where it was after a pull, with a MAC address of its own; a second copy
//! whose address is taken boots; Lume's layers alone give the whole disk.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::http::http;
use common::vm_ok as ok;
use common::*;
use serde_json::Value;

/// The tests of this file one at a time: their VMs share the host's bridge, and a VM
/// suspended holds no address, so the other test's VM could take the one a resumed
/// guest still uses (which makes a pulled copy boot instead of resuming, by design).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// What both tests start from: their turn, and a data directory with the Debian
/// system imported (None: not root, as debootstrap and the bridge need).
fn debian_system() -> Option<(std::sync::MutexGuard<'static, ()>, tempfile::TempDir)> {
    if !is_root() {
        return None;
    }
    let one = one_at_a_time();
    let data = tempfile::tempdir().unwrap();
    import_debian_system(data.path());
    Some((one, data))
}

/// Stops (and so discards the saved state of) the test's VM when the test ends.
struct StopVm<'a>(&'a Path);

impl Drop for StopVm<'_> {
    fn drop(&mut self) {
        let _ = vm_in(self.0, &["stop", "deb"]);
    }
}

fn details(data: &Path) -> Value {
    details_of(data, "deb")
}

fn details_of(data: &Path, name: &str) -> Value {
    let v: Value = serde_json::from_str(&ok(data, &["get", name, "-f", "json"])).unwrap();
    v[0].clone()
}

fn wait_for_ssh(data: &Path) {
    wait_for_ssh_of(data, "deb")
}

fn wait_for_ssh_of(data: &Path, name: &str) {
    wait_for(
        &format!("{name}'s SSH server"),
        Duration::from_secs(240),
        || {
            let v = details_of(data, name);
            if v["status"] == "stopped" {
                let log = console_of(data, name);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{name} stopped on its way up; its console ended with:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            v["sshAvailable"] == true
        },
    );
}

/// Runs `script` in the guest as root.
fn guest(data: &Path, script: &str) -> String {
    guest_of(data, "deb", script)
}

fn guest_of(data: &Path, name: &str, script: &str) -> String {
    ok(data, &["ssh", name, "--", script])
}

/// The VM's generation ID as QEMU reports it, over the monitor the runner leaves free.
fn generation_id(data: &Path) -> String {
    let session: Value =
        serde_json::from_slice(&std::fs::read(data.join("vms/deb/sessions.json")).unwrap())
            .unwrap();
    let serial = PathBuf::from(session["serialSocket"].as_str().unwrap());
    let s = UnixStream::connect(serial.with_file_name("monitor.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut lines = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let mut answer = |cmd: &str| {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").unwrap();
        loop {
            let mut l = String::new();
            lines.read_line(&mut l).unwrap();
            let v: Value = serde_json::from_str(&l).unwrap();
            if v.get("event").is_none() {
                return v;
            }
        }
    };
    answer("qmp_capabilities");
    let v = answer("query-vm-generation-id");
    v["return"]["guid"]
        .as_str()
        .expect("a generation ID")
        .to_string()
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn console(data: &Path) -> String {
    console_of(data, "deb")
}

fn console_of(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join(format!("vms/{name}/console.log"))).unwrap_or_default()
}

/// Runs the VM in the background; its runner's stderr (notices) goes to `run.log`.
fn run_vm(data: &Path, extra: &[&str]) {
    let mut args = vec!["run", "deb", "--detach"];
    args.extend_from_slice(extra);
    ok(data, &args);
}

fn run_log(data: &Path) -> String {
    run_log_of(data, "deb")
}

fn run_log_of(data: &Path, name: &str) -> String {
    std::fs::read_to_string(data.join(format!("vms/{name}/run.log"))).unwrap_or_default()
}

#[test]
fn a_suspended_vm_resumes_where_it_was_with_a_fresh_clock_and_generation_id() {
    let Some((_one, data)) = debian_system() else {
        eprintln!("skipped: debootstrap and the bridge need root");
        return;
    };
    let d = data.path();
    let _stop = StopVm(d);
    ok(
        d,
        &[
            "create",
            "deb",
            "--image",
            "debian-system:12",
            "--memory",
            "1GB",
            "--cpu",
            "2",
        ],
    );
    run_vm(d, &[]);
    wait_for_ssh(d);
    let ip = details(d)["ipAddress"].as_str().unwrap().to_string();
    // State that lives only in the guest's memory: a file on a tmpfs, a process.
    let before = guest(
        d,
        "echo only-in-memory > /dev/shm/mark; \
         setsid sleep 100000 </dev/null >/dev/null 2>&1 & echo $!; \
         cat /proc/sys/kernel/random/boot_id; \
         ls /sys/bus/platform/drivers/vmgenid | grep -c ':'",
    );
    let before: Vec<&str> = before.lines().collect();
    let (sleeper, boot_id) = (before[0].to_string(), before[1].to_string());
    assert_eq!(
        before[2], "1",
        "the guest's vmgenid driver is bound: {before:?}"
    );
    let generation = generation_id(d);

    // Memory the guest uses and frees goes back to the host (free page reporting).
    let qemu = qemu_processes_mentioning(d)[0];
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{qemu}/status")).unwrap();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .parse::<u64>()
            .unwrap();
        kb << 10
    };
    guest(
        d,
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=400 status=none",
    );
    let filled = rss();
    guest(d, "rm /dev/shm/fill");
    let mut given_back = 0;
    wait_for(
        "the freed memory to reach the host",
        Duration::from_secs(60),
        || {
            given_back = filled.saturating_sub(rss());
            given_back > 250 << 20
        },
    );
    eprintln!(
        "QEMU held {} MiB with 400 MiB filled in the guest, {} MiB fewer once freed",
        filled >> 20,
        given_back >> 20
    );

    // Suspended: the state in its directory, readable by its owner only, no QEMU.
    let out = ok(d, &["suspend", "deb"]);
    assert!(out.contains("VM suspended name=deb"), "{out}");
    let dir = d.join("vms/deb");
    let state = dir.join("suspended.state");
    assert!(state.metadata().unwrap().len() > 1 << 20);
    assert_eq!(
        state.metadata().unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(qemu_processes_mentioning(d).is_empty());
    assert_eq!(details(d)["status"], "suspended");
    let ls = ok(d, &["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("deb ") && l.contains(" suspended ")),
        "{ls}"
    );
    // What would change the machine or copy a disk that belongs with its memory.
    for args in [
        &["set", "deb", "--memory", "2GB"][..],
        &["clone", "deb", "deb-copy"],
        &["suspend", "deb"],
        &["push", "deb", "deb:1", "--registry", "127.0.0.1:1"],
    ] {
        let o = vm_in(d, args);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(
            stderr(&o).contains("Virtual machine is suspended: deb"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(!d.join("vms/deb-copy").exists());
    let o = vm_in(d, &["run", "deb", "--detach", "--disk", "/nonexistent.img"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("was suspended with other shared folders or disks (none)"),
        "{}",
        stderr(&o)
    );

    // Resumed, some seconds later: the same boot, process and file; the host's time;
    // a new generation ID; its address; the state gone (the disk has moved on).
    std::thread::sleep(Duration::from_secs(5));
    let t = Instant::now();
    run_vm(d, &[]);
    wait_for_ssh(d);
    eprintln!("resumed to SSH in {:?}", t.elapsed());
    wait_for(
        "the guest's clock to be set",
        Duration::from_secs(120),
        || console(d).contains("the guest's clock is set to the host's"),
    );
    let host_before = unix_now();
    let after = guest(
        d,
        &format!(
            "cat /dev/shm/mark; kill -0 {sleeper} && echo alive; \
             cat /proc/sys/kernel/random/boot_id; date +%s.%N"
        ),
    );
    let host_after = unix_now();
    let after: Vec<&str> = after.lines().collect();
    assert_eq!(after[0], "only-in-memory", "{after:?}");
    assert_eq!(after[1], "alive", "{after:?}");
    assert_eq!(after[2], boot_id, "it did not boot again");
    let guest_time: f64 = after[3].parse().unwrap();
    assert!(
        guest_time > host_before - 2.0 && guest_time < host_after + 2.0,
        "the guest's clock {guest_time} is not the host's ({host_before}..{host_after})"
    );
    assert_ne!(generation_id(d), generation, "a new generation ID");
    assert_eq!(details(d)["ipAddress"], ip.as_str());
    assert_eq!(details(d)["status"], "running");
    assert!(!state.exists() && !dir.join("suspended.json").exists());

    // The API's suspend; a truncated state is discarded with a notice and the VM boots.
    let mut serve = cabin_in(d);
    serve
        .args(["serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut server = spawn_for_test_process(serve).unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let port: u16 = loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "cabin serve ended");
        if let Some(rest) = l.split("Server started port=").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    // The API's push reads cabin's own withMemory (the push itself is the CLI's, tested
    // with a registry in the next test): a running VM is refused with what to do.
    let r = http(
        port,
        "POST",
        "/lume/vms/push",
        Some(
            r#"{"name":"deb","imageName":"deb-api","tags":["1"],"registry":"127.0.0.1:1","withMemory":true}"#,
        ),
    );
    assert!(
        r.error()
            .contains("suspend it before pushing it with its memory"),
        "{r:?}"
    );
    let r = http(port, "POST", "/lume/vms/deb/suspend", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["message"], "VM suspended successfully");
    let listed = http(port, "GET", "/lume/vms/deb", None).json();
    assert_eq!(listed["status"], "suspended", "{listed}");
    let r = http(port, "POST", "/lume/vms/deb/suspend", None);
    assert!(
        r.error().contains("Virtual machine is suspended: deb"),
        "{r:?}"
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();

    let len = state.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap()
        .set_len(len - 4096)
        .unwrap();
    run_vm(d, &[]);
    wait_for_ssh(d);
    assert!(
        run_log(d).contains("deb's saved state cannot be used (the state file is"),
        "{}",
        run_log(d)
    );
    let booted = guest(d, "cat /proc/sys/kernel/random/boot_id; ls /dev/shm");
    assert!(!booted.contains(&boot_id), "it booted: {booted}");
    assert!(!booted.contains("mark"), "{booted}");
    assert!(!state.exists());

    // A state QEMU cannot load (same size, its contents overwritten): discarded, booted.
    ok(d, &["suspend", "deb"]);
    let len = state.metadata().unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(&vec![0x5a; 4096.min(len as usize)]).unwrap();
    drop(f);
    run_vm(d, &[]);
    wait_for_ssh(d);
    assert!(
        run_log(d).contains("deb's saved state could not be loaded"),
        "{}",
        run_log(d)
    );
    assert!(!state.exists());

    // A VM whose memory changed since (by hand: `vm set` refuses): discarded, booted.
    ok(d, &["suspend", "deb"]);
    let config = dir.join("config.json");
    let mut c: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    c["memorySize"] = Value::from(768u64 << 20);
    std::fs::write(&config, c.to_string()).unwrap();
    run_vm(d, &[]);
    wait_for_ssh(d);
    assert!(
        run_log(d).contains(
            "deb's saved state no longer matches (it was saved with 2 CPUs and 1024 MiB of memory, and now has 2 and 768)"
        ),
        "{}",
        run_log(d)
    );

    // Stopping a suspended VM discards its state: it boots at its next run.
    ok(d, &["suspend", "deb"]);
    let out = ok(d, &["stop", "deb"]);
    assert!(out.contains("its saved state was discarded"), "{out}");
    assert_eq!(details(d)["status"], "stopped");
    assert!(!state.exists());

    // A shared folder mounted in the guest: QEMU cannot save it; the VM runs on.
    let share = tempfile::tempdir().unwrap();
    run_vm(
        d,
        &["--shared-dir", &format!("{}:ro", share.path().display())],
    );
    wait_for_ssh(d);
    let o = vm_in(d, &["suspend", "deb"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("deb cannot be suspended")
            && stderr(&o).contains("a VM with shared folders mounted cannot be suspended"),
        "{}",
        stderr(&o)
    );
    assert_eq!(guest(d, "echo still here").trim(), "still here");
    assert_eq!(details(d)["status"], "running");
    assert!(!state.exists() && !dir.join(".suspended.state.partial").exists());
}

#[test]
fn a_vm_pushed_with_its_memory_resumes_after_a_pull_with_a_mac_address_of_its_own() {
    let Some((_one, data)) = debian_system() else {
        eprintln!("skipped: debootstrap and the bridge need root");
        return;
    };
    let d = data.path();
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            for name in ["orig", "early", "copy", "second"] {
                let _ = vm_in(self.0, &["stop", name]);
            }
        }
    }
    let _stop = Stop(d);
    ok(
        d,
        &[
            "create",
            "orig",
            "--image",
            "debian-system:12",
            "--memory",
            "768MB",
            "--disk-size",
            "10GB",
        ],
    );
    ok(d, &["run", "orig", "--detach"]);
    wait_for_ssh_of(d, "orig");
    let ip = details_of(d, "orig")["ipAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let before = guest_of(
        d,
        "orig",
        "echo only-in-memory > /dev/shm/mark; cat /proc/sys/kernel/random/boot_id; \
         cat /sys/class/net/eth0/address",
    );
    let before: Vec<&str> = before.lines().collect();
    let (boot_id, orig_mac) = (before[0].to_string(), before[1].to_string());
    let reg = start_registry(&d.join("reg"), |_| String::new());
    let push = |name: &str, image: &str, extra: &[&str]| {
        let mut args = vec!["push", name, image, "--registry", &reg.addr];
        args.extend_from_slice(extra);
        vm_in(d, &args)
    };
    // Running: refused with what to do.
    let o = push("orig", "deb-mem:1", &["--with-memory"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("suspend it before pushing it with its memory"),
        "{}",
        stderr(&o)
    );
    ok(d, &["suspend", "orig"]);
    let o = push(
        "orig",
        "deb-mem:1",
        &["--with-memory", "--chunk-size-mb", "64"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Lume's layers first, as Lume reads them; cabin's after, with annotations of its
    // own (none of Lume's sums counts them).
    let o = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{}/v2/trycua/deb-mem/manifests/1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "fetching the manifest");
    let m: Value = serde_json::from_slice(&o.stdout).unwrap();
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    let first_cabin = types
        .iter()
        .position(|t| t.starts_with("application/vnd.cabin."))
        .expect("cabin's layers");
    assert!(types[..first_cabin]
        .iter()
        .all(|t| t.starts_with("application/vnd.trycua.lume.")));
    assert!(types[first_cabin..]
        .iter()
        .all(|t| t.starts_with("application/vnd.cabin.")));
    assert!(
        types
            .iter()
            .filter(|t| **t == "application/vnd.cabin.vm.state.v1+gzip")
            .count()
            >= 1,
        "{types:?}"
    );
    for l in &m["layers"].as_array().unwrap()[first_cabin..] {
        let keys: Vec<&String> = l["annotations"].as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(|k| !k.starts_with("org.trycua.")),
            "{keys:?}"
        );
    }
    // A copy pulled while the original is still here (suspended, with the same MAC
    // address and address): it boots, with a MAC address of its own.
    ok(d, &["pull", "deb-mem:1", "early", "--registry", &reg.addr]);
    assert_eq!(details_of(d, "early")["status"], "suspended");
    ok(d, &["run", "early", "--detach"]);
    assert!(
        run_log_of(d, "early").contains(&format!(
            "was pulled with the memory of a VM, and orig has its MAC address {orig_mac}"
        )),
        "{}",
        run_log_of(d, "early")
    );
    ok(d, &["stop", "early"]);
    ok(d, &["delete", "--force", "early"]);
    // The original goes (as when the image is pulled on another host).
    ok(d, &["delete", "--force", "orig"]);

    let out = ok(d, &["pull", "deb-mem:1", "copy", "--registry", &reg.addr]);
    assert!(out.contains("carries its VM's saved memory"), "{out}");
    // Lume's layers alone (what Lume's pull reads): the whole disk, no state.
    ok(
        d,
        &[
            "pull",
            "deb-mem:1",
            "lume-only",
            "--registry",
            &reg.addr,
            "--without-memory",
        ],
    );
    assert_eq!(details_of(d, "lume-only")["status"], "stopped");
    assert!(!d.join("vms/lume-only/suspended.state").exists());
    let same = std::process::Command::new("cmp")
        .arg(d.join("vms/lume-only/disk.img"))
        .arg(d.join("vms/copy/disk.img"))
        .status()
        .unwrap();
    assert!(same.success(), "the disks differ");
    ok(d, &["delete", "--force", "lume-only"]);
    assert_eq!(details_of(d, "copy")["status"], "suspended");
    let config: Value =
        serde_json::from_slice(&std::fs::read(d.join("vms/copy/config.json")).unwrap()).unwrap();
    let copy_mac = config["macAddress"].as_str().unwrap().to_string();
    assert_ne!(copy_mac, orig_mac);
    let t = Instant::now();
    ok(d, &["run", "copy", "--detach"]);
    // Resumed, not booted: no notice about its saved state.
    assert!(
        !run_log_of(d, "copy").contains("saved state"),
        "{}",
        run_log_of(d, "copy")
    );
    wait_for_ssh_of(d, "copy");
    eprintln!("pulled copy resumed to SSH in {:?}", t.elapsed());
    // The clock and the MAC address are refreshed over SSH once it answers: wait for
    // the outcome, whichever it is, and say which.
    let refreshed = |c: &str| {
        c.contains("has its own MAC address now")
            || c.contains("keeps the MAC address it was suspended with")
            || c.contains("clock could not be set")
    };
    let t = Instant::now();
    while !refreshed(&console_of(d, "copy")) {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the copy's clock and MAC address were not refreshed; cabin's console lines:\n{}\nrun.log:\n{}",
            console_of(d, "copy")
                .lines()
                .filter(|l| l.starts_with("[cabin]"))
                .collect::<Vec<_>>()
                .join("\n"),
            run_log_of(d, "copy")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        console_of(d, "copy").contains("has its own MAC address now"),
        "{}",
        console_of(d, "copy")
            .lines()
            .filter(|l| l.starts_with("[cabin]"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = guest_of(
        d,
        "copy",
        "cat /dev/shm/mark; cat /proc/sys/kernel/random/boot_id; cat /sys/class/net/eth0/address; hostname",
    );
    let after: Vec<&str> = after.lines().collect();
    assert_eq!(after[0], "only-in-memory", "{after:?}");
    assert_eq!(after[1], boot_id, "it resumed, it did not boot");
    assert_eq!(after[2], copy_mac, "{after:?}");
    // its own name, not the original's
    assert_eq!(after[3], "copy", "{after:?}");
    assert!(console_of(d, "copy").contains("the guest's host name is copy now"));
    assert_eq!(details_of(d, "copy")["ipAddress"], ip.as_str());

    // A second copy with memory while the first runs with its address: it boots with
    // an address and MAC of its own instead.
    // (Through the image cache, which keeps the state with the image.)
    let out = ok(
        d,
        &[
            "pull",
            "deb-mem:1",
            "second",
            "--registry",
            &reg.addr,
            "--cache",
        ],
    );
    assert!(out.contains("carries its VM's saved memory"), "{out}");
    assert_eq!(details_of(d, "second")["status"], "suspended");
    ok(d, &["run", "second", "--detach"]);
    wait_for_ssh_of(d, "second");
    assert!(
        run_log_of(d, "second").contains("was pulled with the memory of a VM whose address"),
        "{}",
        run_log_of(d, "second")
    );
    let second = guest_of(
        d,
        "second",
        "cat /proc/sys/kernel/random/boot_id; cat /sys/class/net/eth0/address; ls /dev/shm",
    );
    let second: Vec<&str> = second.lines().collect();
    assert_ne!(second[0], boot_id, "it booted");
    assert_ne!(second[1], copy_mac);
    assert_ne!(second[1], orig_mac);
    assert_ne!(details_of(d, "second")["ipAddress"], ip.as_str());
}
