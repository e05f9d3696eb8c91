//! Host folders shared live, named volumes that outlive their containers, tmpfs mounts,
//! and the errors for mounts that cannot be.

mod common;

use common::*;

#[test]
fn a_host_folder_is_shared_live_both_ways_and_ro_is_enforced() {
    let _c = Cleanup(&["vol-share"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("before.txt"), "from the host\n").unwrap();
    let rw = format!("{}:/share", dir.path().display());
    let ro = format!("{}:/readonly:ro", dir.path().display());
    let o = run_detached(
        &["--name", "vol-share", "-v", &rw, "-v", &ro],
        &["sleep", "1000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        cabin_ok(&["exec", "vol-share", "cat", "/share/before.txt"]),
        "from the host\n"
    );
    // Host -> container, while it runs.
    std::fs::write(dir.path().join("later.txt"), "written later\n").unwrap();
    assert_eq!(
        cabin_ok(&[
            "exec",
            "vol-share",
            "cat",
            "/share/later.txt",
            "/readonly/later.txt"
        ]),
        "written later\nwritten later\n"
    );
    // Container -> host.
    cabin_ok(&[
        "exec",
        "vol-share",
        "sh",
        "-c",
        "mkdir /share/sub && echo guest > /share/sub/g.txt",
    ]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("sub/g.txt")).unwrap(),
        "guest\n"
    );
    let o = cabin()
        .args(["exec", "vol-share", "touch", "/readonly/nope"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("nope").exists());
}

#[test]
fn named_volumes_outlive_their_containers_and_serve_one_at_a_time() {
    let _c = Cleanup(&["vol-holder"]);
    let vol = format!("testvol-{}", std::process::id());
    let mount = format!("{vol}:/data");
    let o = run(
        &["-v", &mount],
        &["sh", "-c", "echo kept > /data/file && sync"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["-v", &mount], &["cat", "/data/file"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "kept\n");
    assert!(cabin_ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
    let info: serde_json::Value =
        serde_json::from_str(&cabin_ok(&["volume", "inspect", &vol])).unwrap();
    assert_eq!(info[0]["Name"], vol.as_str());
    assert_eq!(info[0]["InUse"], false);

    // While a running container has it, nobody else gets it, and it stays.
    let o = run_detached(&["--name", "vol-holder", "-v", &mount], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["-v", &mount], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains(&format!("volume {vol} is in use by a running container")),
        "{}",
        stderr(&o)
    );
    let o = cabin().args(["volume", "rm", &vol]).output().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is used by container(s) vol-holder"),
        "{}",
        stderr(&o)
    );
    // Written by one container, read by the next after it stopped.
    cabin_ok(&[
        "exec",
        "vol-holder",
        "sh",
        "-c",
        "echo second >> /data/file",
    ]);
    cabin_ok(&["rm", "-f", "vol-holder"]);
    let o = run(
        &["-v", &format!("{vol}:/data:ro")],
        &["sh", "-c", "cat /data/file; touch /data/x"],
    );
    assert_eq!(stdout(&o), "kept\nsecond\n");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert_eq!(cabin_ok(&["volume", "rm", &vol]), format!("{vol}\n"));
    assert!(!cabin_ok(&["volume", "ls", "-q"]).lines().any(|l| l == vol));
    let o = cabin().args(["volume", "inspect", &vol]).output().unwrap();
    assert!(stderr(&o).contains(&format!("no such volume: {vol}")));
}

#[test]
fn tmpfs_mounts_and_a_read_only_root() {
    let o = run(
        &[
            "--read-only",
            "--tmpfs",
            "/scratch:size=8m",
            "--mount",
            "type=tmpfs,target=/cache,tmpfs-size=4m",
        ],
        &[
            "sh",
            "-c",
            "df -k /scratch /cache | awk 'NR>1{print $2}'; echo ok > /scratch/f && cat /scratch/f; touch /root-file",
        ],
    );
    assert_eq!(stdout(&o), "8192\n4096\nok\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn mount_points_stay_inside_the_container_root() {
    // The image's /mnt is an absolute symlink that would lead out of the root if
    // followed on the guest itself.
    let root = tempfile::tempdir().unwrap();
    let rootfs = busybox_copy(&root.path().join("rootfs"));
    std::fs::remove_dir_all(rootfs.join("mnt")).ok();
    std::os::unix::fs::symlink("/../../../../etc/escape", rootfs.join("mnt")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc/escape")).unwrap();
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("marker"), "inside\n").unwrap();
    let o = cabin()
        .args(["run", "--rm", "-v"])
        .arg(format!("{}:/mnt/share", shared.path().display()))
        .arg("--rootfs")
        .arg(&rootfs)
        .args(["cat", "/etc/escape/share/marker"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "inside\n");
}

#[test]
fn impossible_mounts_are_refused_before_any_vm_starts() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            "/nonexistent/cabin-test:/x".into(),
            "no such directory on the host; create it first",
        ),
        (
            format!("{}:/x", file.path().display()),
            "it is not a directory",
        ),
        ("/tmp:relative".into(), "must be absolute"),
        ("/tmp:/x:rx".into(), "unknown option \"rx\""),
        ("bad volume:/x".into(), "neither a host path"),
    ];
    for (spec, message) in cases {
        let o = run(&["-v", &spec], &["true"]);
        assert_eq!(o.status.code(), Some(125), "{spec}");
        assert!(stderr(&o).contains(message), "{spec}: {}", stderr(&o));
    }
    let o = run(&["-v", "/tmp:/x", "--tmpfs", "/x"], &["true"]);
    assert!(stderr(&o).contains("/x is mounted twice"), "{}", stderr(&o));
    let o = run(&["--mount", "type=nfs,target=/x"], &["true"]);
    assert!(
        stderr(&o).contains("unknown type \"nfs\""),
        "{}",
        stderr(&o)
    );
}
