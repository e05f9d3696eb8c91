//! `cabin run -t` in a real terminal (tmux): line editing, window size, Ctrl-C.

mod common;

use std::time::Duration;

use common::terminal::{tmux, Tmux};
use common::*;

#[test]
fn interactive_terminal_works_like_docker_run_it() {
    let session = format!("cabin-tty-{}", std::process::id());
    let socket = format!("cabin-test-{}", std::process::id());
    let cmd = format!(
        "env CABIN_DATA_DIR={} CABIN_ACCEL=tcg {} run -i -t --rootfs {} -- sh; echo EXITED=$?; sleep 60",
        shared_data_dir().display(),
        env!("CARGO_BIN_EXE_cabin"),
        busybox_rootfs().display()
    );
    let t = |args: &[&str]| {
        let mut full = vec!["-L", socket.as_str()];
        full.extend_from_slice(args);
        tmux(&full)
    };
    t(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "100",
        "-y",
        "30",
        &cmd,
    ]);
    let screen = || t(&["capture-pane", "-p", "-t", &session]);
    wait_for("the shell prompt", Duration::from_secs(60), || {
        screen().contains("/ #")
    });
    t(&[
        "send-keys",
        "-t",
        &session,
        "tty; stty size; echo $TERM",
        "Enter",
    ]);
    wait_for("tty output", Duration::from_secs(20), || {
        screen().contains("xterm")
    });
    let s = screen();
    assert!(s.contains("/dev/pts/0"), "{s}");
    assert!(
        s.contains("30 100"),
        "the window size reaches the container: {s}"
    );
    // Line editing: type a wrong word, erase it with backspace, finish the line.
    t(&[
        "send-keys",
        "-t",
        &session,
        "echo wrongX",
        "BSpace",
        "BSpace",
        "BSpace",
        "BSpace",
        "BSpace",
        "BSpace",
        "fixed",
        "Enter",
    ]);
    wait_for("edited line", Duration::from_secs(20), || {
        screen().lines().any(|l| l.trim() == "fixed")
    });
    // Ctrl-C interrupts the foreground program, not the container.
    t(&["send-keys", "-t", &session, "sleep 50", "Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    t(&["send-keys", "-t", &session, "C-c"]);
    t(&["send-keys", "-t", &session, "echo after-interrupt", "Enter"]);
    wait_for("the shell after Ctrl-C", Duration::from_secs(20), || {
        screen().lines().any(|l| l.trim() == "after-interrupt")
    });
    // A resized window reaches the container.
    t(&["resize-window", "-t", &session, "-x", "90", "-y", "25"]);
    std::thread::sleep(Duration::from_millis(500));
    t(&["send-keys", "-t", &session, "stty size", "Enter"]);
    wait_for("new size", Duration::from_secs(20), || {
        screen().contains("25 90")
    });
    t(&["send-keys", "-t", &session, "exit 7", "Enter"]);
    wait_for("cabin to exit", Duration::from_secs(30), || {
        screen().contains("EXITED=7")
    });
    t(&["kill-server"]);
}

#[test]
fn with_init_the_terminal_belongs_to_the_command() {
    let cmd = format!(
        "env CABIN_DATA_DIR={} CABIN_ACCEL=tcg {} run -i -t --init --rootfs {} -- sh; echo EXITED=$?; sleep 60",
        shared_data_dir().display(),
        env!("CARGO_BIN_EXE_cabin"),
        busybox_rootfs().display()
    );
    let t = Tmux::start("init", &cmd);
    t.wait_for("the shell prompt", |s| s.contains("/ #"));
    t.keys(&["echo pid=$$ pid1=$(cat /proc/1/comm)", "Enter"]);
    t.wait_for("the pids", |s| s.contains("pid1=cabin-reaper"));
    assert!(!t.screen().contains("pid=1 "), "{}", t.screen());
    // Ctrl-C reaches the foreground program through the terminal: the shell (not
    // PID 1, and in the terminal's foreground group) lives on.
    t.keys(&["sleep 50", "Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    t.keys(&["C-c"]);
    t.keys(&["echo after-interrupt", "Enter"]);
    t.wait_for("the shell after Ctrl-C", |s| {
        s.lines().any(|l| l.trim() == "after-interrupt")
    });
    t.keys(&["exit 4", "Enter"]);
    t.wait_for("cabin to exit", |s| s.contains("EXITED=4"));
}

#[test]
fn exec_it_gives_a_running_container_a_terminal() {
    let _c = Cleanup(&["tty-exec"]);
    let o = run_detached(&["--name", "tty-exec"], &["sleep", "1000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cmd = format!(
        "env CABIN_DATA_DIR={} {} exec -it tty-exec sh; echo EXITED=$?; sleep 60",
        shared_data_dir().display(),
        env!("CARGO_BIN_EXE_cabin"),
    );
    let t = Tmux::start("exec", &cmd);
    t.wait_for("the shell prompt", |s| s.contains("/ #"));
    t.keys(&["tty; stty size; echo term=$TERM", "Enter"]);
    t.wait_for("tty output", |s| s.contains("term=xterm"));
    let s = t.screen();
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(
        s.contains("30 100"),
        "the window size reaches the process: {s}"
    );
    t.run(&["resize-window", "-t", &t.session, "-x", "90", "-y", "25"]);
    std::thread::sleep(Duration::from_millis(500));
    t.keys(&["stty size", "Enter"]);
    t.wait_for("the new size", |s| s.contains("25 90"));
    // Raw mode: Ctrl-C goes through the terminal to the foreground program.
    t.keys(&["sleep 50", "Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    t.keys(&["C-c"]);
    t.keys(&["echo after-interrupt", "Enter"]);
    t.wait_for("the shell after Ctrl-C", |s| {
        s.lines().any(|l| l.trim() == "after-interrupt")
    });
    t.keys(&["exit 7", "Enter"]);
    t.wait_for("cabin exec to exit", |s| s.contains("EXITED=7"));
    assert!(
        ps_line("tty-exec").unwrap().contains("Up "),
        "the container runs on"
    );
}
