//! Lumier's contract on cabin: the image made by `scripts/make-lumier-image.sh` runs
//! Docker-style under `cabin run`, drives `cabin serve` through Lume's API from inside
//! its container (host.docker.internal), shows the VM in Chromium on the published
//! port 8006, stops the VM when the container stops, and finds it again next time; the
//! same image, saved by cabin and loaded into Debian's Docker engine, does the same
//! there.

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
    let start = Instant::now();
    loop {
        let o = cabin_in(data).args(["logs", name]).output().unwrap();
        let both = format!("{}{}", stdout(&o), stderr(&o));
        if both.contains(needle) {
            return both;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
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
    let docker_log = |needle: &str| -> String {
        let start = Instant::now();
        loop {
            let o = docker.cmd(&["logs", "lumier-docker"]).output().unwrap();
            let both = format!("{}{}", stdout(&o), stderr(&o));
            if both.contains(needle) {
                return both;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "no {needle:?} from Docker's container:\n{both}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
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
