//! `cabin run` end to end: real VMs, real processes.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn output_streams_and_exit_code_come_back() {
    let o = run(
        &[],
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    );
    assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "to-stdout\n");
    assert!(stderr(&o).contains("to-stderr\n"));
}

#[test]
fn missing_command_exits_127_and_non_executable_126() {
    let o = run(&[], &["no-such-command"]);
    expect_error(
        &o,
        127,
        "\"no-such-command\": executable file not found in $PATH",
    );
    let o = run(&[], &["/etc/passwd"]);
    expect_error(&o, 126, "permission denied");
    let o = run(&[], &["/no/such/path"]);
    assert_eq!(o.status.code(), Some(127));
}

#[test]
fn stdin_is_piped_with_i_and_empty_without() {
    let mut child = cabin()
        .args(["run", "-i", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", "wc -l; echo after-eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // More than one protocol chunk, to cross chunk boundaries.
    let line = "x".repeat(99) + "\n";
    for _ in 0..1000 {
        input.write_all(line.as_bytes()).unwrap();
    }
    drop(input);
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).split_whitespace().collect::<Vec<_>>(),
        ["1000", "after-eof"]
    );

    let o = run(&[], &["cat"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "", "without -i stdin is empty");
}

#[test]
fn env_workdir_user_and_hostname_are_applied() {
    let o = run(
        &[
            "-e",
            "GREETING=hi there",
            "-w",
            "/srv/app",
            "-u",
            "user",
            "--hostname",
            "box1",
        ],
        &[
            "sh",
            "-c",
            "echo \"$GREETING|$(pwd)|$HOME|$(hostname)|$(id -u):$(id -g):$(id -G)\"",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "hi there|/srv/app|/home/user|box1|1000:1000:1000 10 100\n"
    );

    let o = run(
        &["-u", "4242:55"],
        &["sh", "-c", "id -u; id -g; echo $HOME"],
    );
    assert_eq!(
        stdout(&o),
        "4242\n55\n/\n",
        "numeric ids need no passwd entry"
    );

    let o = run(&["-u", "nosuchuser"], &["true"]);
    expect_error(&o, 125, "unable to find user nosuchuser");
}

#[test]
fn container_is_isolated_like_docker() {
    let o = run(
        &[],
        &[
            "sh",
            "-c",
            "echo pid=$$; grep CapBnd /proc/self/status; grep CapEff /proc/self/status; \
             cat /proc/timer_list | wc -c; ls /proc | grep -c '^[0-9]'; \
             grep -c . /proc/mounts >/dev/null && grep ' / ' /proc/mounts; \
             touch /proc/sys/kernel/hostname 2>&1 || echo proc-sys-read-only; \
             cat /sys/fs/cgroup/cgroup.controllers",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "pid=1",
        "the process is PID 1 of its own PID namespace"
    );
    // Docker's default capability set, nothing more.
    assert_eq!(lines[1], "CapBnd:\t00000000a80425fb");
    assert_eq!(lines[2], "CapEff:\t00000000a80425fb");
    assert_eq!(lines[3], "0", "/proc/timer_list is masked");
    assert!(
        lines[4].parse::<u32>().unwrap() <= 3,
        "only the container's processes are visible: {out}"
    );
    assert!(lines[5].starts_with("/dev/vda / ext4 rw"), "{out}");
    assert!(out.contains("proc-sys-read-only"), "{out}");
    assert!(out.contains("memory") && out.contains("pids"), "{out}");

    // Docker's options change that: only KILL (bit 5) left; privileged has every
    // capability and /proc/timer_list unmasked; an unknown option is refused.
    let o = run(
        &["--cap-drop", "ALL", "--cap-add", "kill"],
        &["grep", "CapEff", "/proc/self/status"],
    );
    assert_eq!(stdout(&o), "CapEff:\t0000000000000020\n", "{}", stderr(&o));
    let o = run(
        &["--privileged"],
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; cat /proc/timer_list | wc -c",
        ],
    );
    let out = stdout(&o);
    assert!(out.starts_with("CapEff:\t000001ffffffffff\n"), "{out}");
    assert_ne!(out.lines().nth(1), Some("0"), "{out}");
    let o = run(&["--security-opt", "seccomp=x.json"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unsupported security option"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn memory_limit_is_enforced_and_oom_kill_reported() {
    let o = run_booted(
        &["--memory", "32m"],
        &[
            "sh",
            "-c",
            "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert_eq!(stdout(&o), "start\n");
    assert!(
        stderr(&o).contains("ran out of memory (limit 32 MiB)"),
        "{}",
        stderr(&o)
    );
    let o = run_booted(&["--memory", "32m"], &["cat", "/sys/fs/cgroup/memory.max"]);
    assert_eq!(stdout(&o), format!("{}\n", 32 << 20));
}

#[test]
fn cpu_and_pids_limits_reach_the_cgroup() {
    let o = run_booted(
        &[
            "--cpus",
            "0.5",
            "--pids-limit",
            "20",
            "--ulimit",
            "nofile=100:200",
        ],
        &[
            "sh",
            "-c",
            "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; ulimit -n; ulimit -Hn; nproc",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "50000 100000\n20\n100\n200\n1\n");
}

#[test]
fn sigterm_is_forwarded_to_the_process() {
    let mut child = spawn_run(&[
        "sh",
        "-c",
        "trap 'echo got-TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got-TERM\n");
    assert_eq!(status.code(), Some(42));
}

#[test]
fn writes_stay_in_the_container_and_never_reach_the_cached_image() {
    let data = tempfile::tempdir().unwrap();
    let run_in = |args: &[&str]| {
        cabin_in(data.path())
            .arg("run")
            .arg("--rootfs")
            .arg(busybox_rootfs())
            .arg("--")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run_in(&[
        "sh",
        "-c",
        "echo secret > /etc/leak && rm /bin/ls && echo wrote",
    ]);
    assert_eq!(stdout(&o), "wrote\n", "{}", stderr(&o));
    let images: Vec<_> = std::fs::read_dir(data.path().join("rootfs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(images.len(), 1, "one cached image: {images:?}");
    let before = std::fs::read(&images[0]).unwrap();
    let o = run_in(&[
        "sh",
        "-c",
        "cat /etc/leak 2>/dev/null || echo no-leak; test -e /bin/ls && echo ls-present",
    ]);
    assert_eq!(stdout(&o), "no-leak\nls-present\n");
    assert_eq!(
        std::fs::read(&images[0]).unwrap(),
        before,
        "the cached image is unchanged"
    );
    assert!(
        run_dirs(data.path()).is_empty(),
        "no run directory left behind"
    );
}

#[test]
fn timings_show_where_start_up_time_goes() {
    let o = run(&["--timings"], &["true"]);
    assert_eq!(o.status.code(), Some(0));
    let err = stderr(&o);
    for phase in [
        "boot assets",
        "root filesystem image",
        "QEMU spawned",
        "init answering",
        "container created",
        "process started",
        "process exited",
        "VM torn down",
    ] {
        assert!(err.contains(phase), "missing {phase:?} in:\n{err}");
    }
    // The shared data directory has a boot snapshot; without it the kernel boots.
    assert!(err.contains("resumed from boot snapshot"), "{err}");
    let o = run_booted(&["--timings"], &["true"]);
    assert!(
        stderr(&o).contains("guest kernel booted in"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn system_info_reports_qemu_accelerator_and_kernel() {
    let o = cabin()
        .args(["system", "info", "--format", "json"])
        .env_remove("CABIN_ACCEL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["qemu_version"]
        .as_str()
        .unwrap()
        .starts_with("QEMU emulator version"));
    let accel = v["accelerator"].as_str().unwrap();
    assert!(accel == "kvm" || accel == "tcg");
    assert!(!v["accelerator_reason"].as_str().unwrap().is_empty());
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        assert_eq!(accel, "tcg", "PVM's /dev/kvm cannot run our guest");
        assert!(v["accelerator_reason"].as_str().unwrap().contains("PVM"));
    }
    assert!(std::path::Path::new(v["guest_kernel"].as_str().unwrap()).is_file());
    if accel == "tcg" {
        // Left to choose, cabin says once that it fell back to software emulation.
        let o = cabin()
            .env_remove("CABIN_ACCEL")
            .args(["run", "--rootfs"])
            .arg(busybox_rootfs())
            .args(["--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            stderr(&o)
                .matches("using QEMU's software emulation (TCG)")
                .count(),
            1,
            "{}",
            stderr(&o)
        );
    }
    let o = cabin()
        .args(["system", "info"])
        .env("CABIN_ACCEL", "kvm")
        .output()
        .unwrap();
    assert!(stdout(&o).contains("kvm was requested"), "{}", stdout(&o));
}

#[test]
fn parallel_containers_do_not_interfere() {
    let spawn = |n: u32| {
        let script = format!("echo {n} > /tmp/n; sleep 1; cat /tmp/n; exit {n}");
        spawn_run(&["sh", "-c", &script])
    };
    let (a, b) = (spawn(5), spawn(6));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert_eq!(
        (a.status.code(), stdout(&a)),
        (Some(5), "5\n".to_string()),
        "{}",
        stderr(&a)
    );
    assert_eq!(
        (b.status.code(), stdout(&b)),
        (Some(6), "6\n".to_string()),
        "{}",
        stderr(&b)
    );
    let _ = Duration::ZERO;
}

#[test]
fn read_only_roots_refuse_writes_and_env_files_set_variables() {
    let o = run(
        &["--read-only"],
        &[
            "sh",
            "-c",
            "touch /x 2>&1; echo shm > /dev/shm/ok && cat /dev/shm/ok; grep ' / ' /proc/mounts",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("shm\n"), "{out}");
    assert!(out.contains(" / ext4 ro,"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env");
    std::fs::write(&file, "# settings\nFROM_FILE=yes\nBOTH=file\n").unwrap();
    let o = run(
        &["--env-file", file.to_str().unwrap(), "-e", "BOTH=flag"],
        &["sh", "-c", "echo $FROM_FILE $BOTH"],
    );
    assert_eq!(stdout(&o), "yes flag\n", "{}", stderr(&o));
    std::fs::write(&file, "BAD KEY=1\n").unwrap();
    let o = run(&["--env-file", file.to_str().unwrap()], &["true"]);
    expect_error(&o, 125, "invalid line");
}
