//! Containers created, started, restarted and pruned. A test binary of its own: prune
//! removes every stopped container of its data directory, which other tests share.

mod common;

use common::*;

#[test]
fn created_containers_start_restart_and_are_pruned() {
    let _c = Cleanup(&["cr-box", "cr-done"]);
    let o = cabin()
        .args(["create", "--name", "cr-box", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", SERVER])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(ps_line("cr-box").unwrap().contains("Created"));
    assert!(
        !cabin_ok(&["ps"]).contains("cr-box"),
        "created is not running"
    );

    assert_eq!(cabin_ok(&["start", "cr-box"]).trim(), id);
    assert!(ps_line("cr-box").unwrap().contains("Up "));
    eventually("the first start's output", || {
        cabin_ok(&["logs", "cr-box"]).contains("started")
    });
    assert_eq!(cabin_ok(&["restart", "-t", "5", "cr-box"]).trim(), id);
    assert!(ps_line("cr-box").unwrap().contains("Up "));
    eventually("the second start's output", || {
        cabin_ok(&["logs", "cr-box"]) == "started\nbye\nstarted\n"
    });

    let o = run_detached(&["--name", "cr-done"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let done_id = stdout(&o).trim().to_string();
    assert_eq!(cabin_ok(&["wait", "cr-done"]), "0\n");
    // Prune removes what is not running and leaves the running container alone.
    let pruned = cabin_ok(&["container", "prune"]);
    assert_eq!(pruned, format!("{}\n", &done_id[..12]));
    assert!(ps_line("cr-done").is_none(), "{pruned}");
    assert!(ps_line("cr-box").unwrap().contains("Up "));
    let o = cabin()
        .args(["run", "--name", "x", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("need -d"), "{}", stderr(&o));
}

#[test]
fn containers_whose_records_this_cabin_cannot_read_are_refused_with_what_to_do() {
    let data = tempfile::tempdir().unwrap();
    let cabin_here = |args: &[&str]| cabin_in(data.path()).args(args).output().unwrap();
    let o = cabin_in(data.path())
        .args(["create", "--name", "old", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let dir = data.path().join("containers").join(&id);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["version"], 1, "{spec}");
    assert_eq!(spec["args"], serde_json::json!(["true"]), "{spec}");

    // A record from a newer cabin: refused, not misread.
    let mut newer = spec.clone();
    newer["version"] = 2.into();
    std::fs::write(dir.join("config.json"), newer.to_string()).unwrap();
    let o = cabin_here(&["start", "old"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("written by a newer cabin (version 2"),
        "{}",
        stderr(&o)
    );

    // What the cabin before versioned records kept instead: its command line.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("run-args.json"),
        r#"["run","--rootfs","/x","true"]"#,
    )
    .unwrap();
    let o = cabin_here(&["start", "old"]);
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("made by an earlier cabin") && err.contains(&format!("cabin rm {id}")),
        "{err}"
    );
    // Nothing was started for it, and it can still be removed.
    let ps = stdout(&cabin_here(&["ps", "-a"]));
    assert!(ps.contains("Created"), "{ps}");
    assert!(cabin_here(&["rm", "old"]).status.success());
    assert!(!dir.exists());
}
