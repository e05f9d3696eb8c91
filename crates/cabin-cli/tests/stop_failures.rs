//! Containers that do not go quietly, and hosts that cannot take another VM: each gets
//! a clear outcome, and the other containers carry on.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The QEMU process a container's supervisor runs.
fn qemu_of(name: &str) -> i32 {
    let supervisor = inspect(name)["supervisor_pid"].as_u64().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).unwrap();
    children
        .split_whitespace()
        .map(|p| p.parse::<i32>().unwrap())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("qemu"))
        })
        .expect("the supervisor runs QEMU")
}

#[test]
fn a_process_ignoring_sigterm_is_killed_after_the_timeout() {
    let _c = Cleanup(&["sf-stubborn", "sf-bystander"]);
    let o = run_detached(&["--name", "sf-bystander"], &["sh", "-c", SERVER]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_detached(
        &["--name", "sf-stubborn"],
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.2; done",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("the trap to be set", || {
        cabin_ok(&["logs", "sf-stubborn"]).contains("ready")
    });
    let t = Instant::now();
    assert_eq!(
        cabin_ok(&["stop", "-t", "1", "sf-stubborn"]),
        "sf-stubborn\n"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "SIGKILL came before the timeout"
    );
    let r = inspect("sf-stubborn");
    assert_eq!(r["status"], "exited");
    assert_eq!(r["code"], 137);
    assert!(ps_line("sf-bystander").unwrap().contains("Up "));
}

#[test]
fn a_hung_guest_is_killed_on_stop() {
    let _c = Cleanup(&["sf-hung", "sf-neighbour"]);
    let o = run_detached(&["--name", "sf-neighbour"], &["sh", "-c", SERVER]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_detached(&["--name", "sf-hung"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The whole VM stops answering: its QEMU is frozen.
    let qemu = qemu_of("sf-hung");
    // SAFETY: SIGSTOP to the QEMU this test started.
    unsafe { libc::kill(qemu, libc::SIGSTOP) };
    let t = Instant::now();
    let o = cabin()
        .args(["stop", "-t", "1", "sf-hung"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "stop took {:?}",
        t.elapsed()
    );
    eventually("the frozen QEMU to be gone", || !pid_alive(qemu));
    let r = inspect("sf-hung");
    assert_eq!(r["status"], "exited");
    assert!(
        r["reason"].as_str().is_some_and(|s| !s.is_empty()),
        "a hung VM's end says why: {r}"
    );
    assert!(ps_line("sf-neighbour").unwrap().contains("Up "));
    assert!(cabin_ok(&["exec", "sf-neighbour", "echo", "alive"]).contains("alive"));
}

#[test]
fn a_vm_the_host_cannot_hold_is_refused_and_others_carry_on() {
    let _c = Cleanup(&["sf-small", "sf-huge"]);
    let o = run_detached(&["--name", "sf-small"], &["sh", "-c", SERVER]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_booted(&["--memory", "64t"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("not enough memory on the host for this VM"),
        "{}",
        stderr(&o)
    );
    let o = run_detached(&["--name", "sf-huge", "--memory", "64t"], &["true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not enough memory"), "{}", stderr(&o));
    assert!(ps_line("sf-small").unwrap().contains("Up "));
}
