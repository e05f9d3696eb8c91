//! `--init`: a reaper as PID 1 of the container, the command its child, on real VMs.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The processes of a container whose state is Z (exited, never waited for).
fn zombies(name: &str) -> Vec<String> {
    let stats = cabin_ok(&[
        "exec",
        name,
        "sh",
        "-c",
        "for f in /proc/[0-9]*/stat; do cat $f 2>/dev/null; echo; done",
    ]);
    stats
        .lines()
        .filter(|l| {
            l.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .map(String::from)
        .collect()
}

#[test]
fn the_reaper_is_pid_1_and_exit_codes_pass_through() {
    let o = run(
        &["--init"],
        &[
            "sh",
            "-c",
            "tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm; echo $$; exit 3",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("cabin-reaper -- sh -c "),
        "PID 1 is the reaper: {out}"
    );
    assert_eq!(lines[1], "cabin-reaper");
    assert_ne!(lines[2], "1", "the command is not PID 1: {out}");
    // A command killed by a signal: 128+N, as without --init.
    let o = run(&["--init"], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    // A command that does not exist is still reported as docker reports it.
    let o = run(&["--init"], &["no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    // Without --init the command is PID 1 itself.
    let o = run(&[], &["sh", "-c", "echo $$"]);
    assert_eq!(stdout(&o), "1\n");
}

#[test]
fn orphans_are_reaped_with_init_and_left_as_zombies_without() {
    let _c = Cleanup(&["in-reaped", "in-zombies"]);
    // The inner shell leaves a short sleep behind; the orphan becomes PID 1's child
    // once the shell exits, and PID 1 is then `sleep 1000` (without --init), which
    // never waits for it.
    let script = "sh -c 'sleep 0.2 &'; exec sleep 1000";
    for (name, opts) in [("in-zombies", &[][..]), ("in-reaped", &["--init"][..])] {
        let mut args = vec!["--name", name];
        args.extend_from_slice(opts);
        let o = run_detached(&args, &["sh", "-c", script]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    eventually("the orphan to end as a zombie without --init", || {
        zombies("in-zombies").len() == 1
    });
    // By now the other container's orphan has ended too; the reaper collected it.
    let z = zombies("in-reaped");
    assert!(z.is_empty(), "zombies under the reaper: {z:?}");
    assert!(cabin_ok(&["exec", "in-reaped", "cat", "/proc/1/comm"]).starts_with("cabin-reaper"));
}

#[test]
fn stop_reaches_a_command_without_a_handler_and_one_with_a_trap() {
    let _c = Cleanup(&["in-plain", "in-trap"]);
    // sleep has no SIGTERM handler: as PID 1 it would ignore SIGTERM until the
    // SIGKILL 30 s later; as the reaper's child it dies of it at once.
    let o = run_detached(&["--init", "--name", "in-plain"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let started = Instant::now();
    assert_eq!(cabin_ok(&["stop", "-t", "30", "in-plain"]), "in-plain\n");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "SIGTERM ended it: {:?}",
        started.elapsed()
    );
    assert_eq!(inspect("in-plain")["code"], 143);

    let o = run_detached(&["--init", "--name", "in-trap"], &["sh", "-c", SERVER]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("the server to start", || {
        cabin_ok(&["logs", "in-trap"]).contains("started")
    });
    assert_eq!(cabin_ok(&["stop", "-t", "30", "in-trap"]), "in-trap\n");
    assert_eq!(cabin_ok(&["logs", "in-trap"]), "started\nbye\n");
    assert_eq!(inspect("in-trap")["code"], 0);
}

#[test]
fn init_is_recorded_and_kept_by_start_and_restart() {
    let _c = Cleanup(&["in-kept"]);
    let o = cabin()
        .args(["create", "--init", "--name", "in-kept", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sleep", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inspect("in-kept")["init"], true);
    let pid1 = || cabin_ok(&["exec", "in-kept", "cat", "/proc/1/comm"]);
    // The reaper names itself once it runs, a moment after the container does.
    cabin_ok(&["start", "in-kept"]);
    eventually("the reaper as PID 1", || pid1() == "cabin-reaper\n");
    cabin_ok(&["restart", "-t", "30", "in-kept"]);
    eventually("the reaper as PID 1 again", || pid1() == "cabin-reaper\n");
}
