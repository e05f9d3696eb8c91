//! containerd runs its tasks in cabin's VMs: Debian's containerd 1.6 on a private
//! socket, driven by `ctr`, with `--runtime io.containerd.cabin.v2` selecting
//! `containerd-shim-cabin-v2`. Every task here boots a real VM.

mod common;

use std::time::Duration;

use common::containerd::{Containerd, IMAGE, RUNTIME};
use common::terminal::Tmux;
use common::*;

fn scratch(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("cabin-ctrd-{name}-{}", std::process::id()))
}

#[test]
fn ctr_run_gives_the_tasks_output_exit_codes_and_stdin_and_leaves_nothing_behind() {
    let c = Containerd::start(&scratch("run"));
    let o = c.run(
        "t1",
        &[
            "sh",
            "-c",
            "echo hello from a VM; uname -r; echo to stderr >&2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("hello from a VM\n"), "{out}");
    // The guest's kernel, not the host's: it runs in a VM.
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(out.lines().nth(1), Some(host_kernel.trim()));
    assert!(stderr(&o).contains("to stderr"), "{}", stderr(&o));

    assert_eq!(c.run("t2", &["sh", "-c", "exit 3"]).status.code(), Some(3));
    assert_eq!(c.run("t3", &["no-such-command"]).status.code(), Some(127));

    // ctr passes its stdin on: what is piped in reaches the process, then its end.
    let o = c.ctr_with_input(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            IMAGE,
            "t4",
            "sh",
            "-c",
            "tr a-z A-Z; echo end",
        ],
        b"piped through a vm\n",
    );
    assert_eq!(stdout(&o), "PIPED THROUGH A VM\nend\n", "{}", stderr(&o));

    // A bundle with a root directory of its own (`ctr run --rootfs`): no snapshot.
    let rootfs = busybox_copy(&c.dir.join("tree"));
    let o = c.ctr_out(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--rootfs",
        rootfs.to_str().unwrap(),
        "t5",
        "ls",
        "/bin/busybox",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.assert_nothing_left();
}

#[test]
fn a_detached_task_takes_execs_pauses_signals_and_reports_processes_metrics_and_events() {
    let mut c = Containerd::start(&scratch("detached"));
    let events_log = c.dir.join("events.log");
    let mut events = c.ctr(&["events"]);
    events.stdout(std::fs::File::create(&events_log).unwrap());
    let mut events = spawn_for_test_process(events).unwrap();

    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "d1",
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
    ]);
    // cabin sees it too, as containerd's.
    let tasks = c.cabin_tasks();
    assert!(
        tasks
            .iter()
            .any(|l| l.contains("containerd.default.d1") && l.contains("Up")),
        "{tasks:?}"
    );
    assert!(c.ctr_ok(&["task", "ls"]).contains("RUNNING"));
    // cabin's own commands reach it, by the name it has in cabin's store.
    eventually("cabin exec to read the task's counter", || {
        let o = cabin_in(&c.data)
            .args(["exec", "containerd.default.d1", "cat", "/tmp/count"])
            .output()
            .unwrap();
        stdout(&o).trim().parse::<u64>().is_ok()
    });

    let o = c.ctr_out(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "d1",
        "sh",
        "-c",
        "echo in the exec; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "in the exec\n");
    let o = c.ctr_with_input(
        &["task", "exec", "--exec-id", "e2", "d1", "wc", "-c"],
        b"12345",
    );
    assert_eq!(stdout(&o).trim(), "5", "{}", stderr(&o));
    let o = c.ctr_out(&["task", "exec", "--exec-id", "e3", "d1", "no-such-command"]);
    assert_ne!(o.status.code(), Some(0));

    // Its processes (the guest's), and its cgroup's figures.
    let ps = c.ctr_ok(&["task", "ps", "d1"]);
    assert!(ps.lines().count() >= 2, "{ps}");
    let metrics = c.ctr_ok(&["task", "metrics", "d1"]);
    let usage = metrics
        .lines()
        .find(|l| l.starts_with("memory.usage "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(usage > 0, "{metrics}");
    assert!(metrics.contains("pids.current"), "{metrics}");

    // Paused, the VM does not advance; resumed, it goes on.
    let count = |c: &Containerd, id: &str| -> u64 {
        c.ctr_ok(&["task", "exec", "--exec-id", id, "d1", "cat", "/tmp/count"])
            .trim()
            .parse()
            .unwrap()
    };
    // (Compared with as long a time running, so that a loaded machine's slower loop
    // does not decide it.)
    let before = count(&c, "c1");
    c.ctr_ok(&["task", "pause", "d1"]);
    assert!(c.ctr_ok(&["task", "ls"]).contains("PAUSED"));
    std::thread::sleep(Duration::from_secs(3));
    c.ctr_ok(&["task", "resume", "d1"]);
    let after_pause = count(&c, "c2");
    std::thread::sleep(Duration::from_secs(3));
    let later = count(&c, "c3");
    let (paused, running) = (after_pause - before, later - after_pause);
    assert!(
        running >= 5 && running > 2 * paused,
        "3 s paused: {before} -> {after_pause}; 3 s running: -> {later}"
    );

    // containerd restarts: the shim and its task are found again.
    let _ = events.kill();
    let _ = events.wait();
    c.restart();
    let mut events = c.ctr(&["events"]);
    events.stdout(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&events_log)
            .unwrap(),
    );
    let mut events = spawn_for_test_process(events).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(c.ctr_ok(&["task", "ls"]).contains("RUNNING"));
    assert_eq!(
        c.ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            "r1",
            "d1",
            "echo",
            "still here"
        ]),
        "still here\n"
    );

    // The guest's OOM killer ends a task over its memory limit: 137, and /tasks/oom.
    let o = c.ctr_out(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        "33554432",
        IMAGE,
        "oom1",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}{}", stdout(&o), stderr(&o));

    // SIGTERM: the shell as PID 1 ignores it, as with runc; SIGKILL ends it with 137.
    c.ctr_ok(&["task", "kill", "d1"]);
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.ctr_ok(&["task", "ls"]).contains("RUNNING"));
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "d1"]);
    eventually("the task to stop", || {
        c.ctr_ok(&["task", "ls"]).contains("STOPPED")
    });
    let o = c.ctr_out(&["task", "delete", "d1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    c.ctr_ok(&["container", "rm", "d1"]);
    c.assert_nothing_left();

    let _ = events.kill();
    let _ = events.wait();
    let log = std::fs::read_to_string(&events_log).unwrap();
    let at = |what: &str| {
        log.find(what)
            .unwrap_or_else(|| panic!("no {what} event in:\n{log}"))
    };
    let order = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "\"exit_status\":3",
        "/tasks/paused",
        "/tasks/resumed",
        "\"id\":\"d1\",\"pid\"",
        "/tasks/delete {\"container_id\":\"d1\"",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) < at(pair[1]),
            "{} before {} in:\n{log}",
            pair[0],
            pair[1]
        );
    }
    assert!(log.contains("\"exit_status\":137"), "{log}");
    assert!(
        log.contains("/tasks/oom {\"container_id\":\"oom1\"}"),
        "{log}"
    );
}

#[test]
fn a_terminal_task_gets_its_window_size_and_its_changes() {
    let c = Containerd::start(&scratch("tty"));
    let cmd = format!(
        "ctr -a {} run -t --rm --runtime {RUNTIME} {IMAGE} tt1 sh; echo EXIT=$?; sleep 60",
        c.socket.display()
    );
    let t = Tmux::start("ctrd-tty", &cmd);
    t.wait_for("the shell's prompt", |s| s.contains("/ #"));
    t.keys(&["stty size; tty", "Enter"]);
    t.wait_for("the terminal's size", |s| {
        s.contains("30 100") && s.contains("/dev/pts/0")
    });
    t.run(&["resize-window", "-t", &t.session, "-x", "120", "-y", "40"]);
    t.ask_until("stty size", "the new size", "40 120");
    t.keys(&["exit 7", "Enter"]);
    t.wait_for("the exit code", |s| s.contains("EXIT=7"));
    c.assert_nothing_left();
}

#[test]
fn bad_bundles_a_dead_vm_and_a_killed_shim_are_handled() {
    let c = Containerd::start(&scratch("failures"));
    // A spec with nothing to run.
    let spec = c.dir.join("empty-args.json");
    let tree = busybox_copy(&c.dir.join("tree"));
    let mut json: serde_json::Value = serde_json::from_str(&c.ctr_ok(&["oci", "spec"])).unwrap();
    json["process"]["args"] = serde_json::json!([]);
    json["root"]["path"] = serde_json::json!(tree);
    std::fs::write(&spec, json.to_string()).unwrap();
    let o = c.ctr_out(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--config",
        spec.to_str().unwrap(),
        "bad1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no process to run"), "{}", stderr(&o));
    let _ = c.ctr_out(&["container", "rm", "bad1"]);
    // A root directory that holds nothing.
    let empty = c.dir.join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let o = c.ctr_out(&[
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--rootfs",
        empty.to_str().unwrap(),
        "bad2",
        "/bin/true",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing or empty"), "{}", stderr(&o));
    let _ = c.ctr_out(&["container", "rm", "bad2"]);

    // The VM dies under a running task: containerd sees the task exit.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "v1",
        "sleep",
        "600",
    ]);
    let qemu = qemu_processes_mentioning(&c.data);
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    // SAFETY: kill(2) with a pid just read from /proc.
    unsafe { libc::kill(qemu[0], libc::SIGKILL) };
    eventually("the task to stop", || {
        c.ctr_ok(&["task", "ls"]).contains("STOPPED")
    });
    c.ctr_ok(&["task", "delete", "v1"]);
    c.ctr_ok(&["container", "rm", "v1"]);

    // The shim is killed: containerd's clean-up (the shim's `delete`) removes the VM.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        IMAGE,
        "k1",
        "sleep",
        "600",
    ]);
    let shims = c.shims();
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill(2) with a pid just read from /proc.
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    eventually("containerd to see the task gone", || {
        !c.ctr_ok(&["task", "ls"]).contains("RUNNING")
    });
    let _ = c.ctr_out(&["task", "delete", "k1"]);
    c.ctr_ok(&["container", "rm", "k1"]);
    c.assert_nothing_left();
}

#[test]
fn the_specs_capabilities_masked_paths_and_no_new_privileges_are_the_tasks() {
    let c = Containerd::start(&scratch("security"));
    // What the task's process has, as the kernel says: its effective and bounding
    // capability sets, no_new_privs, and whether /proc/keys is masked and /proc/sys
    // read-only (mounts over them).
    let report = |id: &str, options: &[&str]| {
        let mut args = vec!["run", "--rm", "--runtime", RUNTIME];
        args.extend_from_slice(options);
        args.extend_from_slice(&[
            IMAGE,
            id,
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' '; \
             grep -c -E ' /proc/(keys|sys) ' /proc/self/mountinfo || true",
        ]);
        c.ctr_ok(&args)
    };
    // ctr's default spec: docker's 14 capabilities, no_new_privs, the masked and
    // read-only paths.
    assert_eq!(
        report("s1", &[]),
        "CapEff: 00000000a80425fb\nCapBnd: 00000000a80425fb\nNoNewPrivs: 1\n2\n"
    );
    // One more (NET_ADMIN, bit 12), one fewer (CHOWN, bit 0); new privileges allowed.
    assert_eq!(
        report(
            "s2",
            &[
                "--cap-add",
                "CAP_NET_ADMIN",
                "--cap-drop",
                "CAP_CHOWN",
                "--allow-new-privs"
            ]
        ),
        "CapEff: 00000000a80435fa\nCapBnd: 00000000a80435fa\nNoNewPrivs: 0\n2\n"
    );
    // Privileged: ctr gives every capability it has itself (those of this test's
    // process, which may lack some here) that the guest's kernel knows; nothing masked.
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = ours
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let all = format!("{:016x}", ours & ((1 << 41) - 1));
    let privileged = report("s3", &["--privileged"]);
    assert!(
        privileged.starts_with(&format!("CapEff: {all}\nCapBnd: {all}\n")),
        "{privileged}"
    );
    assert!(privileged.ends_with("\n0\n"), "{privileged}");
    c.assert_nothing_left();
}

#[test]
fn a_pods_containers_made_with_cris_annotations_share_its_vm_and_end_with_it() {
    let c = Containerd::start(&scratch("pod"));
    let run = |id: &str, kind: &str, cmd: &[&str]| {
        let kind = format!("io.kubernetes.cri.container-type={kind}");
        let mut args = vec![
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--annotation",
            &kind,
            "--annotation",
            "io.kubernetes.cri.sandbox-id=p1",
            IMAGE,
            id,
        ];
        args.extend_from_slice(cmd);
        c.ctr_out(&args)
    };
    let o = run("p1", "sandbox", &["sleep", "600"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run("p1-a", "container", &["sleep", "600"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        qemu_processes_mentioning(&c.data).len(),
        1,
        "{:?}",
        c.cabin_tasks()
    );
    // The pod's network namespace, processes of its own.
    let ns = |id: &str, exec: &str| {
        c.ctr_ok(&[
            "task",
            "exec",
            "--exec-id",
            exec,
            id,
            "sh",
            "-c",
            "readlink /proc/self/ns/net; readlink /proc/self/ns/pid",
        ])
    };
    let (sandbox, member) = (ns("p1", "e1"), ns("p1-a", "e2"));
    let (s, m): (Vec<&str>, Vec<&str>) = (sandbox.lines().collect(), member.lines().collect());
    assert!(s[0].starts_with("net:["), "{sandbox}");
    assert_eq!(s[0], m[0], "one network namespace");
    assert_ne!(s[1], m[1], "two PID namespaces");
    // A pod's container pauses with its pod, not alone.
    let o = c.ctr_out(&["task", "pause", "p1-a"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("paused with its pod"), "{}", stderr(&o));

    // The sandbox ends: its VM, and so its containers.
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "p1"]);
    eventually("the pod's container to end with its VM", || {
        c.ctr_ok(&["task", "ls"])
            .lines()
            .any(|l| l.starts_with("p1-a") && l.contains("STOPPED"))
    });
    // A container of a pod whose sandbox does not run is refused, and says why.
    let o = run("p1-b", "container", &["true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    for id in ["p1-b", "p1-a", "p1"] {
        let _ = c.ctr_out(&["task", "delete", id]);
        let _ = c.ctr_out(&["container", "delete", id]);
    }
    c.assert_nothing_left();
}
