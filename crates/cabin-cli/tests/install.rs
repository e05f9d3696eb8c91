//! `scripts/install.sh`: cabin installed under a prefix runs containers from there,
//! finding its guest files in the installed layout (not the source tree or the build
//! cache), its systemd units verify, and `--uninstall` takes it all away again.

mod common;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

fn install(args: &[&str]) -> Output {
    Command::new(workspace_root().join("scripts/install.sh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_installed_cabin_runs_containers_from_its_prefix_and_uninstalls_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("prefix");
    let p = prefix.to_str().unwrap();
    let o = install(&["--prefix", p, "--binary", env!("CARGO_BIN_EXE_cabin")]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let files = [
        "bin/cabin",
        "bin/containerd-shim-cabin-v2",
        "lib/cabin/cabin-init",
        "lib/cabin/vmlinux",
        "lib/cabin/bzImage-vm",
        "lib/systemd/system/cabin.service",
        "lib/systemd/user/cabin.service",
    ];
    for f in files {
        assert!(prefix.join(f).is_file(), "{f} installed");
    }
    let shim = Command::new(prefix.join("bin/containerd-shim-cabin-v2"))
        .arg("-v")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&shim.stdout).contains("io.containerd.cabin.v2"),
        "{shim:?}"
    );

    // The units are what systemd accepts (these machines run no systemd: checked, not
    // started).
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/cabin.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={p}/bin/cabin serve --docker-socket /run/cabin/docker.sock --pool 2"
        )),
        "{unit}"
    );
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(prefix.join("lib/systemd/system/cabin.service"))
        .output()
        .expect("systemd-analyze is installed");
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let runtime = t.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["--user", "verify"])
        .arg(prefix.join("lib/systemd/user/cabin.service"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // Run from the prefix with a home and cache of its own: nothing of the source tree's
    // build or the kernel build cache can be found, only the installed layout.
    let home = t.path().join("home");
    let installed = |args: &[&str]| {
        let mut c = Command::new(prefix.join("bin/cabin"));
        c.args(args)
            .env("HOME", &home)
            .env("XDG_CACHE_HOME", home.join("cache"))
            .env("CABIN_DATA_DIR", home.join("data"))
            .env("CABIN_ACCEL", "tcg")
            .env("CABIN_SNAPSHOTS", "off")
            .env_remove("CABIN_KERNEL")
            .env_remove("CABIN_VM_KERNEL")
            .env_remove("CABIN_INIT")
            .env_remove("CABIN_BIN")
            .stdin(Stdio::null());
        c
    };
    let o = installed(&["system", "info", "--format", "json"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["guest_kernel"], format!("{p}/lib/cabin/vmlinux"));
    assert_eq!(info["guest_init"], format!("{p}/lib/cabin/cabin-init"));
    let o = installed(&["run", "--rm", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["echo", "from the prefix"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from the prefix\n");

    // What the service runs: the server with the Docker socket, driven by the docker CLI.
    let socket = t.path().join("docker.sock");
    let mut serve = installed(&["serve", "--port", "0", "--docker-socket"]);
    serve
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = spawn_for_test_process(serve).unwrap();
    wait_for("the Docker socket", Duration::from_secs(20), || {
        UnixStream::connect(&socket).is_ok()
    });
    let o = installed(&["image", "import"])
        .arg(busybox_rootfs())
        .arg("local/bb")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = Command::new("/usr/local/bin/docker")
        .args(["run", "--rm", "local/bb", "echo", "through the service"])
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env("DOCKER_CONFIG", t.path().join("docker-config"))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "through the service\n");

    let o = install(&["--prefix", p, "--uninstall"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in files {
        assert!(!prefix.join(f).exists(), "{f} removed");
    }
    assert!(!Path::new(&prefix.join("lib/cabin")).exists());
}
