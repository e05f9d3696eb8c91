//! Lumier's contract on cabin: the image made by `scripts/make-lumier-image.sh` runs
//! Docker-style under `cabin run`, drives `cabin serve` through Lume's API from inside
//! its container (host.docker.internal), shows the VM in Chromium on the published
//! port 8006, stops the VM when the container stops, and finds it again next time; the
//! same image, saved by cabin and loaded into Debian's Docker engine, does the same
//! there. A Debian VM made by cabin, pushed to a registry, is pulled by Lumier, boots
//! on its own under UEFI and runs the shared folder's on-logon hook over SSH.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::dockerd::*;
use common::web::*;
use common::*;

/// The Lumier image in `data`'s store.
fn lumier_image(data: &Path) {
    let o = Command::new(workspace_root().join("scripts/make-lumier-image.sh"))
        .env("CABIN_DATA_DIR", data)
        .env("CABIN", env!("CARGO_BIN_EXE_cabin"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "cabin-lumier:latest");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the container's log contains `needle`; the log.
fn log_until(data: &Path, name: &str, needle: &str) -> String {
    log_within(data, name, needle, Duration::from_secs(180))
}

/// Waits up to `limit` for the container's log to contain `needle`; the log.
fn log_within(data: &Path, name: &str, needle: &str, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        let o = cabin_in(data).args(["logs", name]).output().unwrap();
        let both = format!("{}{}", stdout(&o), stderr(&o));
        if both.contains(needle) {
            return both;
        }
        assert!(
            start.elapsed() < limit,
            "{name} never logged {needle:?}:\n{both}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs a container of the Lumier image that is expected to fail: its exit code and
/// what it printed.
fn failing_run(data: &Path, env: &[String]) -> (i32, String) {
    let mut args = vec!["run".to_string(), "--rm".into()];
    for e in env {
        args.push("-e".into());
        args.push(e.clone());
    }
    args.push("cabin-lumier:latest".into());
    let o = cabin_in(data).args(&args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&o), stderr(&o)),
    )
}

/// Waits until the log of Docker's container `name` contains `needle`; the log.
fn docker_log_until(docker: &Dockerd, name: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let o = docker.cmd(&["logs", name]).output().unwrap();
        let both = format!("{}{}", stdout(&o), stderr(&o));
        if both.contains(needle) {
            return both;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no {needle:?} from Docker's container {name}:\n{both}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn printed_url(log: &str, web_port: u16) -> String {
    log.lines()
        .find(|l| l.starts_with("http://localhost:8006/vnc.html?password="))
        .unwrap_or_else(|| panic!("no viewer URL in:\n{log}"))
        .replace(":8006/", &format!(":{web_port}/"))
}

#[test]
fn the_lumier_image_runs_a_vm_docker_style_and_shows_it_on_port_8006() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    lumier_image(d);
    let root = bootable_busybox(&d.join("rootfs"));
    let o = cabin_in(d)
        .args(["image", "import", root.to_str().unwrap(), "local/bbvm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The VM in a storage path, as Lumier's HOST_STORAGE_PATH names it.
    let storage = d.join("lumier-vms");
    std::fs::create_dir_all(&storage).unwrap();
    vm_ok(
        d,
        &[
            "create",
            "desk",
            "--image",
            "local/bbvm",
            "--disk-size",
            "10GB",
            "--memory",
            "256MB",
            "--storage",
            storage.to_str().unwrap(),
        ],
    );
    let serve = Console::start(d, &[]);
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = cabin_in(self.0).args(["rm", "-f", "lumier-desk"]).output();
            let storage = self.0.join("lumier-vms");
            let _ = vm_in(
                self.0,
                &["stop", "desk", "--storage", storage.to_str().unwrap()],
            );
        }
    }
    let _cleanup = Cleanup(d);

    let web_port = free_port();
    let env = |extra: &[String]| -> Vec<String> {
        let mut e = vec![
            "VM_NAME=desk".to_string(),
            format!("HOST_STORAGE_PATH={}", storage.display()),
            format!("LUME_API_PORT={}", serve.port),
            "RAM_SIZE=256".into(),
            "CPU_CORES=1".into(),
        ];
        e.extend_from_slice(extra);
        e
    };
    let run = |extra: &[String]| {
        let mut args = vec![
            "run".to_string(),
            "-d".into(),
            "--name".into(),
            "lumier-desk".into(),
            "-p".into(),
            format!("{web_port}:8006"),
        ];
        for e in env(extra) {
            args.push("-e".into());
            args.push(e);
        }
        args.push("cabin-lumier:latest".into());
        let o = cabin_in(d).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let details = || -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&vm_ok(
            d,
            &[
                "get",
                "desk",
                "-f",
                "json",
                "--storage",
                storage.to_str().unwrap(),
            ],
        ))
        .unwrap();
        if v.is_array() {
            v[0].clone()
        } else {
            v
        }
    };

    // First run: the screen straight from the VM's VNC server (no token given).
    run(&[]);
    let log = log_until(d, "lumier-desk", "vnc.html?password=");
    assert!(log.contains("Found VM desk: starting it again"), "{log}");
    let url = printed_url(&log, web_port);
    assert!(url.ends_with("&autoconnect=true"), "{url}");
    let vm = details();
    assert_eq!(vm["status"], "running", "{vm}");
    assert_eq!(vm["cpuCount"], 1, "{vm}");
    let password = url
        .split("password=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(
        vm["vncUrl"]
            .as_str()
            .unwrap()
            .contains(&format!(":{password}@")),
        "the printed password is the VM's: {vm}"
    );
    let out = test_output_dir();
    let v = browser(&["lumier", &url, out.to_str().unwrap()]);
    assert!(v["wrong"].as_str().unwrap().contains("refused"), "{v:#}");
    assert!(
        v["lit"].as_u64().unwrap() > 1000,
        "the screen shows the VM: {v:#}"
    );

    // Stopping the container stops the VM; its storage is persistent: it stays.
    let o = cabin_in(d).args(["stop", "lumier-desk"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = log_until(d, "lumier-desk", "VM desk stopped");
    assert!(!log.contains("deleted"), "{log}");
    assert_eq!(details()["status"], "stopped");

    // Second run, with cabin serve's token: the screen comes through the console's
    // websocket, and the same VM (its disk) starts again.
    let o = cabin_in(d).args(["rm", "lumier-desk"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    run(&[format!("CABIN_TOKEN={}", serve.token)]);
    let log = log_until(d, "lumier-desk", "vnc.html?password=");
    assert!(log.contains("Found VM desk: starting it again"), "{log}");
    let v = browser(&[
        "lumier",
        &printed_url(&log, web_port),
        out.to_str().unwrap(),
    ]);
    assert!(v["lit"].as_u64().unwrap() > 1000, "{v:#}");
    let o = cabin_in(d).args(["stop", "lumier-desk"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    log_until(d, "lumier-desk", "VM desk stopped");

    // The same image under Debian's Docker engine (on the host's network, where
    // host.docker.internal is the loopback).
    let docker = Dockerd::start(&d.join("dockerd"));
    let tar = d.join("lumier.tar");
    let o = cabin_in(d)
        .args([
            "image",
            "save",
            "-o",
            tar.to_str().unwrap(),
            "cabin-lumier:latest",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = docker
        .cmd(&["load", "-i", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        "lumier-docker".into(),
        "--network".into(),
        "host".into(),
        "--add-host".into(),
        "host.docker.internal:127.0.0.1".into(),
    ];
    for e in env(&[]) {
        args.push("-e".into());
        args.push(e);
    }
    args.push("cabin-lumier:latest".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = docker.cmd(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let docker_log = |needle: &str| docker_log_until(&docker, "lumier-docker", needle);
    let log = docker_log("vnc.html?password=");
    assert!(log.contains("Found VM desk: starting it again"), "{log}");
    let v = browser(&["lumier", &printed_url(&log, 8006), out.to_str().unwrap()]);
    assert!(v["lit"].as_u64().unwrap() > 1000, "{v:#}");
    let o = docker
        .cmd(&["stop", "-t", "60", "lumier-docker"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    docker_log("VM desk stopped");
    assert_eq!(details()["status"], "stopped");
    let _ = docker.cmd(&["rm", "-f", "lumier-docker"]).output();
    drop(docker);

    // On Docker's bridge: a second cabin serve listens on the bridge's address, where
    // Lume's API asks for the token; the container reaches it at host-gateway and
    // passes the token it is given, and the screen comes through the console's
    // websocket, so the VM's VNC port stays on the loopback.
    let bridge = Bridge::create("cabinlumt0", "172.31.251.1");
    let docker = Dockerd::start_on(&d.join("dockerd-bridge"), &bridge);
    let o = docker
        .cmd(&["load", "-i", tar.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let wide = Console::start(d, &["--listen", &bridge.gateway]);
    let wrong = failing_run(
        d,
        &[
            "VM_NAME=desk".into(),
            format!("LUME_API_HOST={}", bridge.gateway),
            format!("LUME_API_PORT={}", wide.port),
            "CABIN_TOKEN=not-the-token-at-all".into(),
        ],
    );
    assert_eq!(wrong.0, 1, "{}", wrong.1);
    assert!(
        wrong.1.contains("Lume's API needs the token"),
        "{}",
        wrong.1
    );
    let bridge_port = free_port();
    let mut args = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        "lumier-bridge".into(),
        "-p".into(),
        format!("{bridge_port}:8006"),
        "--add-host".into(),
        "host.docker.internal:host-gateway".into(),
        "-e".into(),
        format!("CABIN_TOKEN={}", wide.token),
    ];
    for e in env(&[format!("LUME_API_PORT={}", wide.port)]) {
        args.push("-e".into());
        args.push(e);
    }
    args.push("cabin-lumier:latest".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = docker.cmd(&args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let bridge_log = |needle: &str| docker_log_until(&docker, "lumier-bridge", needle);
    let log = bridge_log("vnc.html?password=");
    assert!(
        log.contains(&format!("through the Lume API at {}:", bridge.gateway)),
        "{log}"
    );
    let v = browser(&[
        "lumier",
        &printed_url(&log, bridge_port),
        out.to_str().unwrap(),
    ]);
    assert!(v["lit"].as_u64().unwrap() > 1000, "{v:#}");
    let o = docker
        .cmd(&["stop", "-t", "60", "lumier-bridge"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    bridge_log("VM desk stopped");
    assert_eq!(details()["status"], "stopped");
    let _ = docker.cmd(&["rm", "-f", "lumier-bridge"]).output();
    drop(docker);
    drop(wide);
    drop(bridge);

    // Bad input: each a clear message, nothing made.
    let (code, log) = failing_run(d, &env(&["VERSION=not-an-image".into()]));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("REGISTRY/ORGANIZATION/IMAGE:TAG"), "{log}");
    let (code, log) = failing_run(d, &env(&["LUME_API_PORT=1".into()]));
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("cannot reach cabin serve's Lume API"), "{log}");
    let api = format!("LUME_API_PORT={}", serve.port);
    let (code, log) = failing_run(d, &["VM_NAME=nowhere".into(), api.clone()]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("VERSION is not set"), "{log}");
    let (code, log) = failing_run(
        d,
        &[
            "VM_NAME=nowhere".into(),
            api,
            "VERSION=127.0.0.1:1/org/nothing:1".into(),
        ],
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("the Lume API refused POST /lume/pull"),
        "{log}"
    );
    let vms = vm_ok(d, &["ls", "-f", "json"]);
    assert!(!vms.contains("nowhere"), "{vms}");
}

#[test]
fn lumier_pulls_a_debian_vm_that_boots_on_its_own_and_runs_the_on_logon_hook() {
    if !is_root() {
        eprintln!("skipped: debootstrap and the VMs' bridge need root");
        return;
    }
    let rootfs = debian_rootfs(&["--system"]);
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    lumier_image(d);
    let o = cabin_in(d)
        .args(["image", "import", &rootfs, "debian-system:12"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // A VM made from the image and pushed in Lume's format, then deleted here: what
    // Lumier pulls is all there is.
    vm_ok(
        d,
        &[
            "create",
            "made",
            "--image",
            "debian-system:12",
            "--disk-size",
            "10GB",
        ],
    );
    let reg = start_registry(&d.join("reg"), |_| String::new());
    vm_ok(
        d,
        &[
            "push",
            "made",
            "debian:12",
            "--registry",
            &reg.addr,
            "--organization",
            "cabin",
        ],
    );
    vm_ok(d, &["delete", "--force", "made"]);

    let storage = d.join("vms-here");
    let share = d.join("share");
    std::fs::create_dir_all(&storage).unwrap();
    std::fs::create_dir_all(share.join("lifecycle")).unwrap();
    // The guest's `lume` writes as itself into the host's folder.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&share, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hook = share.join("lifecycle/on-logon.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho \"hook says hello as $(id -un)\"\n\
         printf '%s %s %s\\n' \"$1\" \"$2\" \"$(id -un)\" > \"$2/from-the-guest\"\n",
    )
    .unwrap();
    let serve = Console::start(d, &[]);
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = cabin_in(self.0).args(["rm", "-f", "lumier-deb"]).output();
            let storage = self.0.join("vms-here");
            let _ = vm_in(
                self.0,
                &["stop", "debdesk", "--storage", storage.to_str().unwrap()],
            );
        }
    }
    let _cleanup = Cleanup(d);
    let web_port = free_port();
    let run = || {
        let o = cabin_in(d)
            .args(["run", "-d", "--name", "lumier-deb", "-p"])
            .arg(format!("{web_port}:8006"))
            .arg("-v")
            .arg(format!("{}:/shared", share.display()))
            .args([
                "-e",
                "VM_NAME=debdesk",
                "-e",
                "RAM_SIZE=1024",
                "-e",
                "CPU_CORES=2",
            ])
            .arg("-e")
            .arg(format!("VERSION={}/cabin/debian:12", reg.addr))
            .arg("-e")
            .arg(format!("HOST_STORAGE_PATH={}", storage.display()))
            .arg("-e")
            .arg(format!("HOST_SHARED_PATH={}", share.display()))
            .arg("-e")
            .arg(format!("LUME_API_PORT={}", serve.port))
            .arg("cabin-lumier:latest")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    };

    let started = Instant::now();
    run();
    let log = log_within(
        d,
        "lumier-deb",
        "vnc.html?password=",
        Duration::from_secs(600),
    );
    eprintln!(
        "pulled, booted under UEFI and addressed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(log.contains("Pulling"), "{log}");
    let url = printed_url(&log, web_port);
    let password = url
        .split("password=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let log = log_within(d, "lumier-deb", "On-logon hook", Duration::from_secs(400));
    assert!(log.contains("On-logon hook finished"), "{log}");
    assert!(
        log.contains("hook says hello as lume"),
        "the hook's output is logged: {log}"
    );
    let wrote = std::fs::read_to_string(share.join("from-the-guest")).unwrap();
    assert_eq!(wrote, format!("{password} /mnt/shared/share lume\n"));
    // The pulled VM booted its own system to a login prompt, took its name and name
    // servers by DHCP, and mounted the shared folder.
    let st = storage.to_str().unwrap();
    let o = vm_in(
        d,
        &[
            "ssh",
            "debdesk",
            "--storage",
            st,
            "--",
            "hostname; sleep 1; grep -c ^nameserver /etc/resolv.conf; findmnt -no FSTYPE /mnt/shared/share",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "debdesk\n1\n9p\n");
    wait_for("a login prompt", Duration::from_secs(120), || {
        stdout(&vm_in(d, &["logs", "debdesk", "--storage", st])).contains(" login:")
    });
    let out = test_output_dir().join("lumier-debian");
    let v = browser(&["lumier", &url, out.to_str().unwrap()]);
    assert!(v["lit"].as_u64().unwrap() > 1000, "{v:#}");
    let o = cabin_in(d).args(["stop", "lumier-deb"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    log_until(d, "lumier-deb", "VM debdesk stopped");

    // Again, with a hook that fails: reported, and the VM keeps running.
    std::fs::remove_file(share.join("from-the-guest")).unwrap();
    std::fs::write(&hook, "echo about to fail; exit 3\n").unwrap();
    let o = cabin_in(d).args(["rm", "lumier-deb"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    run();
    let log = log_within(d, "lumier-deb", "On-logon hook", Duration::from_secs(600));
    assert!(log.contains("Found VM debdesk: starting it again"), "{log}");
    assert!(
        log.contains("On-logon hook: the hook failed with exit code 3; the VM keeps running"),
        "{log}"
    );
    assert!(log.contains("about to fail"), "{log}");
    let vm: serde_json::Value = serde_json::from_str(&vm_ok(
        d,
        &["get", "debdesk", "-f", "json", "--storage", st],
    ))
    .unwrap();
    let vm = if vm.is_array() { vm[0].clone() } else { vm };
    assert_eq!(vm["status"], "running", "{vm}");
    let o = cabin_in(d).args(["stop", "lumier-deb"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    log_until(d, "lumier-deb", "VM debdesk stopped");
}

#[test]
fn a_vm_that_never_gets_an_address_is_reported_and_stopped() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    lumier_image(d);
    // No system on its disk: the firmware stops in its shell, with no address ever.
    vm_ok(
        d,
        &[
            "create",
            "blank",
            "--disk-size",
            "10GB",
            "--memory",
            "256MB",
        ],
    );
    let serve = Console::start(d, &[]);
    let (code, log) = failing_run(
        d,
        &[
            "VM_NAME=blank".into(),
            format!("LUME_API_PORT={}", serve.port),
            format!("HOST_STORAGE_PATH={}", d.join("vms").display()),
            "RAM_SIZE=256".into(),
            "CPU_CORES=1".into(),
        ],
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("VM blank did not run with an address within 90 s (it shows: status \"running\", address none, VNC on); it was stopped"),
        "{log}"
    );
    let vm: serde_json::Value =
        serde_json::from_str(&vm_ok(d, &["get", "blank", "-f", "json"])).unwrap();
    let vm = if vm.is_array() { vm[0].clone() } else { vm };
    assert_eq!(vm["status"], "stopped", "nothing left running: {vm}");
}
