//! Containers that live on: `cabin run -d` and the commands that manage them, on real
//! VMs owned by real supervisor processes.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_detached_container_runs_logs_stops_and_is_removed() {
    let _c = Cleanup(&["lc-web"]);
    let o = run_detached(&["--name", "lc-web"], &["sh", "-c", SERVER]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(ps_line("lc-web").unwrap().contains("Up "));
    assert!(cabin_ok(&["ps", "-q"]).contains(&id[..12]));
    eventually("the first output in the log", || {
        cabin_ok(&["logs", "lc-web"]).contains("started")
    });
    // A running container is not removed without -f.
    let o = cabin().args(["rm", "lc-web"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is running"), "{}", stderr(&o));
    assert!(ps_line("lc-web").unwrap().contains("Up "));

    assert_eq!(cabin_ok(&["stop", "-t", "5", "lc-web"]), "lc-web\n");
    assert!(ps_line("lc-web").unwrap().contains("Exited (0)"));
    assert!(!cabin_ok(&["ps"]).contains("lc-web"));
    let logs = cabin_ok(&["logs", "-t", "lc-web"]);
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert!(
        lines[0].starts_with("20") && lines[0].ends_with(" started"),
        "{logs}"
    );
    assert!(lines[1].ends_with(" bye"), "{logs}");
    assert_eq!(cabin_ok(&["logs", "-n", "1", &id[..12]]), "bye\n");
    let record = inspect("lc-web");
    assert_eq!(record["status"], "exited");
    assert_eq!(record["code"], 0);
    assert_eq!(record["id"], id.as_str());

    assert_eq!(cabin_ok(&["rm", "lc-web"]), "lc-web\n");
    assert!(ps_line("lc-web").is_none());
    let o = cabin().args(["rm", "lc-web"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such container: lc-web"));
}

#[test]
fn exit_codes_come_back_through_wait_kill_and_failed_starts() {
    let _c = Cleanup(&["ec-three", "ec-term", "ec-missing", "ec-rm"]);
    let o = run_detached(&["--name", "ec-three"], &["sh", "-c", "exit 3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cabin_ok(&["wait", "ec-three"]), "3\n");

    let o = run_detached(&["--name", "ec-term"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cabin_ok(&["kill", "-s", "TERM", "ec-term"]), "ec-term\n");
    // sleep is PID 1 of its container and has no TERM handler: like docker, it lives
    // on; KILL ends it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(ps_line("ec-term").unwrap().contains("Up "));
    // Paused and let go on; then killed while paused (the VM goes on first).
    assert_eq!(cabin_ok(&["pause", "ec-term"]), "ec-term\n");
    assert!(ps_line("ec-term").unwrap().contains("(Paused)"));
    cabin_ok(&["unpause", "ec-term"]);
    assert!(!ps_line("ec-term").unwrap().contains("(Paused)"));
    cabin_ok(&["pause", "ec-term"]);
    cabin_ok(&["kill", "ec-term"]);
    assert_eq!(cabin_ok(&["wait", "ec-term"]), "137\n");
    let o = cabin().args(["kill", "ec-term"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));

    // A start that fails says why, with docker's exit code, and is recorded.
    let o = run_detached(&["--name", "ec-missing"], &["no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );
    assert!(ps_line("ec-missing").unwrap().contains("Exited (127)"));
    assert!(cabin_ok(&["logs", "ec-missing"]).is_empty());

    // --rm: gone once it exits.
    let o = run_detached(&["--rm", "--name", "ec-rm"], &["true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("--rm to remove the container", || {
        ps_line("ec-rm").is_none()
    });

    cabin_ok(&["rm", "ec-three", "ec-term", "ec-missing"]);
}

#[test]
fn names_and_bad_requests_get_clear_errors() {
    let _c = Cleanup(&["nm-dup"]);
    let o = run_detached(&["--name", "nm-dup"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_detached(&["--name", "nm-dup"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    let o = run_detached(&["--name", "a/b"], &["true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("invalid container name"),
        "{}",
        stderr(&o)
    );
    // A detached container may have a terminal: its process sees one.
    let _t = Cleanup(&["nm-tty"]);
    let o = run_detached(&["-t", "--name", "nm-tty"], &["sh", "-c", "tty; exit 5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cabin_ok(&["wait", "nm-tty"]).trim(), "5");
    let logs = cabin().args(["logs", "nm-tty"]).output().unwrap();
    assert!(stdout(&logs).contains("/dev/pts/0"), "{}", stdout(&logs));
    for cmd in [&["logs"][..], &["stop"], &["kill"], &["wait"], &["inspect"]] {
        let o = cabin().args(cmd).arg("nm-nope").output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd:?}");
        assert!(
            stderr(&o).contains("no such container: nm-nope"),
            "{cmd:?}: {}",
            stderr(&o)
        );
    }
    // The other container was not disturbed by any of this.
    assert!(ps_line("nm-dup").unwrap().contains("Up "));
    assert_eq!(cabin_ok(&["rm", "-f", "nm-dup"]), "nm-dup\n");
    assert!(ps_line("nm-dup").is_none());
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}

#[test]
fn a_killed_supervisor_takes_its_vm_along_and_the_container_shows_exited() {
    let _c = Cleanup(&["ks-victim"]);
    let o = run_detached(&["--name", "ks-victim"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let supervisor = inspect("ks-victim")["supervisor_pid"].as_u64().unwrap() as u32;
    let vms = children_of(supervisor);
    assert_eq!(vms.len(), 1, "one QEMU under the supervisor");
    // SAFETY: SIGKILL to the supervisor this test started.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    eventually("QEMU to die with its supervisor", || {
        !std::path::Path::new(&format!("/proc/{}", vms[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", vms[0]))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let line = ps_line("ks-victim").unwrap();
    assert!(line.contains("Exited (137)"), "{line}");
    let record = inspect("ks-victim");
    assert!(
        record["reason"]
            .as_str()
            .unwrap()
            .contains("supervisor process died"),
        "{record}"
    );
    cabin_ok(&["rm", "ks-victim"]);
}

#[test]
fn restart_policies_start_the_process_again_until_stopped() {
    let _c = Cleanup(&["rp-fail", "rp-always"]);
    let o = run_detached(
        &[
            "--name",
            "rp-fail",
            "--restart",
            "on-failure:2",
            "-l",
            "team=infra",
        ],
        &["sh", "-c", "echo try; exit 1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cabin_ok(&["wait", "rp-fail"]), "1\n");
    let record = inspect("rp-fail");
    assert_eq!(record["restart_count"], 2, "{record}");
    assert_eq!(record["labels"], serde_json::json!([["team", "infra"]]));
    assert_eq!(cabin_ok(&["logs", "rp-fail"]).matches("try\n").count(), 3);

    let o = run_detached(
        &["--name", "rp-always", "--restart", "always"],
        &["sh", "-c", "echo up; sleep 0.3"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    eventually("two restarts", || {
        inspect("rp-always")["restart_count"].as_u64().unwrap() >= 2
    });
    assert!(ps_line("rp-always").unwrap().contains("Up "));
    assert_eq!(cabin_ok(&["stop", "-t", "1", "rp-always"]), "rp-always\n");
    let after_stop = inspect("rp-always");
    assert_eq!(after_stop["status"], "exited", "{after_stop}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        inspect("rp-always")["restart_count"],
        after_stop["restart_count"]
    );

    for bad in [&["--restart", "sometimes"][..], &["--label", "novalue"]] {
        let o = run_detached(bad, &["true"]);
        assert_eq!(o.status.code(), Some(125), "{bad:?}");
    }
}

#[test]
fn stats_report_cpu_memory_and_processes_from_the_guest() {
    let _c = Cleanup(&["st-busy", "st-done"]);
    let o = run_detached(
        &["--name", "st-busy", "--memory", "64m"],
        &["sh", "-c", "sleep 100 & while :; do :; done"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = cabin_ok(&["stats", "--no-stream", "st-busy"]);
    let line = out
        .lines()
        .find(|l| l.contains("st-busy"))
        .unwrap_or_else(|| panic!("{out}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let cpu: f64 = fields[2].trim_end_matches('%').parse().unwrap();
    assert!(cpu > 50.0, "a busy loop uses its vCPU: {line}");
    assert!(line.contains("/ 64.0MiB"), "{line}");
    assert_eq!(
        fields[fields.len() - 2],
        "2",
        "the shell and its sleep: {line}"
    );
    // What the VM costs the host, beside what the guest's cgroup counts.
    assert!(fields.last().unwrap().ends_with("MiB"), "{line}");

    // New limits, at once in its cgroup and in stats; more memory than its VM has
    // (sized for 64m) is refused, and nothing changes.
    cabin_ok(&["update", "--memory", "32m", "--cpus", "0.5", "st-busy"]);
    assert_eq!(
        cabin_ok(&[
            "exec",
            "st-busy",
            "cat",
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/cpu.max"
        ]),
        "33554432\n50000 100000\n"
    );
    let o = cabin()
        .args(["update", "--memory", "1g", "st-busy"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("its VM has room for 64 MiB"),
        "{}",
        stderr(&o)
    );
    assert!(cabin_ok(&["stats", "--no-stream", "st-busy"]).contains("/ 32.0MiB"));
    let o = cabin().args(["update", "st-busy"]).output().unwrap();
    assert!(stderr(&o).contains("nothing to update"), "{}", stderr(&o));

    let o = run_detached(&["--name", "st-done"], &["true"]);
    assert!(o.status.success());
    cabin_ok(&["wait", "st-done"]);
    let o = cabin()
        .args(["stats", "--no-stream", "st-done"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
}

#[test]
fn exec_runs_more_processes_in_a_running_container() {
    let _c = Cleanup(&["ex-box", "ex-done"]);
    let o = run_detached(
        &["--name", "ex-box", "-e", "FROM_RUN=1"],
        &["sleep", "1000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Same PID namespace (sleep is PID 1 there), same hostname and file system, the
    // container's environment plus exec's own, output and exit status back.
    let o = cabin()
        .args(["exec", "-e", "FROM_EXEC=2", "-w", "/tmp", "ex-box", "sh", "-c"])
        .arg("echo $$ $(cat /proc/1/cmdline | tr '\\0' ' ')$(pwd) $FROM_RUN$FROM_EXEC; echo made > /tmp/f; echo oops >&2; exit 5")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let out = stdout(&o);
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_ne!(fields[0], "1", "{out}");
    assert_eq!(&fields[1..], ["sleep", "1000", "/tmp", "12"], "{out}");
    assert_eq!(stderr(&o), "oops\n");
    assert_eq!(cabin_ok(&["exec", "ex-box", "cat", "/tmp/f"]), "made\n");
    // stdin with -i.
    let mut child = cabin()
        .args(["exec", "-i", "ex-box", "wc", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&vec![b'x'; 100_000]).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o).trim(), "100000");
    // docker's codes for commands that cannot run; a stopped container is refused.
    let o = cabin()
        .args(["exec", "ex-box", "no-such-command"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );
    let o = run_detached(&["--name", "ex-done"], &["true"]);
    assert!(o.status.success());
    cabin_ok(&["wait", "ex-done"]);
    let o = cabin().args(["exec", "ex-done", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    // The container itself was not disturbed.
    assert!(ps_line("ex-box").unwrap().contains("Up "));
}

#[test]
fn exec_starts_from_the_containers_settings_and_can_have_a_terminal() {
    let _c = Cleanup(&["ex-image"]);
    // An image with an environment, a working directory and a user of its own.
    let o = cabin()
        .args(["image", "import"])
        .arg(busybox_rootfs())
        .args(["exec-env:1", "-e", "FROM_IMAGE=image", "-e", "SHARED=image"])
        .args(["-w", "/tmp", "-u", "user"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin()
        .args([
            "run",
            "-d",
            "--name",
            "ex-image",
            "-e",
            "SHARED=run",
            "exec-env:1",
        ])
        .args(["sleep", "1000"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // HOSTNAME as the container's process has it: its hostname.
    let show = "echo \"$FROM_IMAGE|$SHARED|$FROM_HOST|${NOT_ON_HOST-unset}|$(id -u)|$(pwd)|$([ \"$HOSTNAME\" = $(hostname) ] && echo hostname)\"";
    let o = cabin()
        .env("FROM_HOST", "host value")
        .env_remove("NOT_ON_HOST")
        .args([
            "exec",
            "-e",
            "FROM_HOST",
            "-e",
            "NOT_ON_HOST",
            "ex-image",
            "sh",
            "-c",
            show,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "image|run|host value|unset|1000|/tmp|hostname\n"
    );
    // The exec's own options win over the container's.
    let o = cabin()
        .args([
            "exec",
            "-u",
            "0",
            "-w",
            "/",
            "-e",
            "SHARED=exec",
            "ex-image",
            "sh",
            "-c",
            show,
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&o).starts_with("image|exec||unset|0|/|"),
        "{}",
        stdout(&o)
    );

    // -t: a terminal (output comes through it, with its line endings), TERM, and a
    // default size when cabin itself has no terminal.
    let o = cabin()
        .args([
            "exec",
            "-t",
            "ex-image",
            "sh",
            "-c",
            "tty; echo $TERM; stty size; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert!(out.ends_with("\r\nxterm\r\n24 80\r\n"), "{out:?}");
    assert!(ps_line("ex-image").unwrap().contains("Up "));
}

fn create(opts: &[&str], cmd: &[&str]) {
    let o = cabin()
        .arg("create")
        .args(opts)
        .arg("--rootfs")
        .arg(busybox_rootfs())
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn start_a_follows_this_runs_output_and_exits_with_its_code() {
    let _c = Cleanup(&["sa-out", "sa-fast"]);
    create(
        &["--name", "sa-out"],
        &[
            "sh",
            "-c",
            "echo out; echo err >&2; printf partial; sleep 1; echo more; exit 5",
        ],
    );
    for run in 1..=2 {
        let o = cabin().args(["start", "-a", "sa-out"]).output().unwrap();
        assert_eq!(o.status.code(), Some(5), "run {run}: {}", stderr(&o));
        // Only this run's output, even when the log holds the earlier one too.
        assert_eq!(stdout(&o), "out\npartialmore\n", "run {run}");
        assert_eq!(stderr(&o), "err\n", "run {run}");
    }
    assert_eq!(
        cabin_ok(&["logs", "sa-out"]).matches("more").count(),
        2,
        "the log keeps both runs"
    );
    // A run over before cabin could attach: its output and code come from the log
    // and the record.
    create(&["--name", "sa-fast"], &["sh", "-c", "echo fast; exit 2"]);
    let o = cabin().args(["start", "-a", "sa-fast"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stdout(&o), "fast\n");
}

#[test]
fn start_ai_connects_stdin_of_containers_created_with_i() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    let _c = Cleanup(&["sa-in", "sa-noin", "sa-prompt"]);
    create(
        &["-i", "--name", "sa-in"],
        &["sh", "-c", "read line; echo got:$line; wc -c; exit 4"],
    );
    let mut child = cabin()
        .args(["start", "-a", "-i", "sa-in"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello\n").unwrap();
        stdin.write_all(&[b'x'; 100_000]).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "got:hello\n100000\n");
    assert_eq!(inspect("sa-in")["stdin"], true);

    create(&["--name", "sa-noin"], &["cat"]);
    let o = cabin().args(["start", "-i", "sa-noin"]).output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("created without -i"), "{}", stderr(&o));
    assert!(
        ps_line("sa-noin").unwrap().contains("Created"),
        "not started"
    );

    // Output comes as it is written: a prompt without a newline shows before the
    // answer is typed.
    create(
        &["-i", "--name", "sa-prompt"],
        &["sh", "-c", "printf 'name? '; read name; echo \"hi $name\""],
    );
    let mut child = cabin()
        .args(["start", "-ai", "sa-prompt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"name? ") {
        assert_eq!(
            out.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    child.stdin.take().unwrap().write_all(b"bob\n").unwrap();
    out.read_to_end(&mut seen).unwrap();
    assert_eq!(String::from_utf8_lossy(&seen), "name? hi bob\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn signals_to_start_a_reach_the_container() {
    use std::io::Read;
    let _c = Cleanup(&["sa-sig"]);
    create(&["--name", "sa-sig"], &["sh", "-c", SERVER]);
    let mut child = cabin()
        .args(["start", "-a", "sa-sig"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"started\n") {
        assert_eq!(out.read(&mut byte).unwrap(), 1);
        seen.push(byte[0]);
    }
    // SAFETY: a signal to the cabin process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    out.read_to_end(&mut seen).unwrap();
    assert_eq!(String::from_utf8_lossy(&seen), "started\nbye\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(ps_line("sa-sig").unwrap().contains("Exited (0)"));
}
