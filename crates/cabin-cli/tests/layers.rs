//! A container's file system changes last from one start to the next, until it is
//! removed; a layer whose image is gone is a clear error.

mod common;

use common::*;

#[test]
fn file_changes_survive_stop_start_restart_and_restart_policies() {
    let _c = Cleanup(&["ly-keep", "ly-again"]);
    let o = run_detached(
        &["--name", "ly-keep"],
        &[
            "sh",
            "-c",
            "echo start >> /var/starts; echo started; while :; do sleep 0.2; done",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    cabin_ok(&[
        "exec",
        "ly-keep",
        "sh",
        "-c",
        "echo kept > /etc/kept && rm /bin/true",
    ]);
    cabin_ok(&["stop", "-t", "1", "ly-keep"]);
    cabin_ok(&["start", "ly-keep"]);
    eventually("the second start's output", || {
        cabin_ok(&["logs", "ly-keep"]) == "started\nstarted\n"
    });
    assert_eq!(cabin_ok(&["exec", "ly-keep", "cat", "/etc/kept"]), "kept\n");
    assert_eq!(
        cabin_ok(&[
            "exec",
            "ly-keep",
            "sh",
            "-c",
            "ls /bin/true 2>&1; cat /var/starts"
        ]),
        "ls: /bin/true: No such file or directory\nstart\nstart\n",
        "a deletion is kept too"
    );
    cabin_ok(&["restart", "-t", "1", "ly-keep"]);
    eventually("the third start to be written after the other two", || {
        cabin_ok(&["exec", "ly-keep", "cat", "/var/starts"]) == "start\nstart\nstart\n"
    });
    let layer = shared_data_dir()
        .join("containers")
        .join(&id)
        .join("layer.qcow2");
    assert!(layer.is_file());
    cabin_ok(&["rm", "-f", "ly-keep"]);
    assert!(!layer.exists(), "the layer goes with the container");

    // A process started again by its restart policy finds what it wrote before.
    let o = run_detached(
        &["--name", "ly-again", "--restart", "on-failure:2"],
        &["sh", "-c", "echo run >> /runs; wc -l < /runs; exit 1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cabin_ok(&["wait", "ly-again"]), "1\n");
    assert_eq!(cabin_ok(&["logs", "ly-again"]), "1\n2\n3\n");
}

#[test]
fn a_layer_whose_image_is_gone_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let cabin_here = || cabin_in(data.path());
    let o = cabin_here()
        .args(["create", "--name", "ly-orphan", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", "touch /mark; exit 0"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_here().args(["start", "ly-orphan"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_here().args(["wait", "ly-orphan"]).output().unwrap();
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    // The cached image disk disappears (say, removed by hand).
    for e in std::fs::read_dir(data.path().join("rootfs"))
        .unwrap()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "ext4") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    // Starting again rebuilds the directory's disk; the old layer sits on the old
    // file, which is gone: refused, with what to do.
    let o = cabin_here().args(["start", "ly-orphan"]).output().unwrap();
    let r = inspect_in(data.path(), "ly-orphan");
    let reason = r["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        stderr(&o).contains("is gone from the store or was rebuilt")
            || reason.contains("is gone from the store or was rebuilt"),
        "{}{reason}",
        stderr(&o)
    );
    let o = cabin_here()
        .args(["rm", "-f", "ly-orphan"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn inspect_in(data: &std::path::Path, name: &str) -> serde_json::Value {
    let o = cabin_in(data).args(["inspect", name]).output().unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v[0].clone()
}
