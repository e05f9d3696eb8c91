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
