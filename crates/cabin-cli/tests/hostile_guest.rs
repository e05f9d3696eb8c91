//! A hostile guest: `cabin-hostile-init` (cabin-init's test-only binary, feature
//! `hostile`, built by scripts/test.sh) boots in place of cabin-init and sends garbage,
//! a frame too large, half a frame before going down, or floods its console without
//! answering. Each run must end in bounded time with one clear error, the host's memory
//! bounded (measured: the peak RSS of `cabin run`), nothing left behind, and a container
//! of the same data directory running beside it untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn hostile_init() -> PathBuf {
    let p = workspace_root().join("target/x86_64-unknown-linux-gnu/release/cabin-hostile-init");
    assert!(
        p.is_file(),
        "{} is missing: build it with scripts/build-init.sh --features hostile --bin cabin-hostile-init (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The busybox tree with `/hostile` naming `mode`.
fn hostile_rootfs(dir: &Path, mode: &str) -> PathBuf {
    let root = dir.join(format!("root-{mode}"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(root.join("hostile"), mode).unwrap();
    root
}

/// Runs `cmd` to its end, sampling its resident memory; its output, the peak RSS (KiB)
/// and how long it took.
fn run_measured(mut cmd: Command) -> (std::process::Output, u64, Duration) {
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(s) = std::fs::read_to_string(&status) {
            let hwm = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok());
            match hwm {
                Some(kib) => peak = peak.max(kib),
                None => break, // a zombie: it has ended
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    (out, sampler.join().unwrap(), started.elapsed())
}

#[test]
fn a_guest_that_sends_garbage_oversized_frames_floods_or_hangs_up_gets_a_clear_error_and_costs_bounded_memory(
) {
    let init = hostile_init();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cases: [(&str, &[&str]); 4] = [
        (
            "garbage",
            &["the guest agent's channel failed during Hello, not in cabin's protocol"],
        ),
        (
            "oversized",
            &["the guest agent's channel failed during Hello", "frame"],
        ),
        (
            "hangup",
            &["the VM stopped unexpectedly", "hostile init: hangup"],
        ),
        (
            "flood",
            &[
                "the guest agent did not answer Hello within 15 s",
                "flood flood",
            ],
        ),
    ];
    for (mode, expected) in cases {
        let root = hostile_rootfs(dir.path(), mode);
        let mut cmd = cabin_in(&data);
        cmd.env("CABIN_INIT", &init)
            .args(["run", "--rm", "--boot-timeout", "15", "--rootfs"])
            .arg(&root)
            .arg("true");
        // Beside the first one, an honest container of the same data directory.
        let honest = (mode == "garbage").then(|| {
            let mut c = cabin_in(&data);
            c.args(["run", "--rm", "--rootfs"])
                .arg(busybox_rootfs())
                .args(["echo", "untouched"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().unwrap()
        });
        let (out, peak_kib, took) = run_measured(cmd);
        let err = stderr(&out);
        eprintln!(
            "{mode}: exit {:?} after {:.1} s, peak RSS {peak_kib} KiB: {}",
            out.status.code(),
            took.as_secs_f64(),
            err.lines().next().unwrap_or_default()
        );
        assert_eq!(out.status.code(), Some(125), "{mode}: {err}");
        for e in expected {
            assert!(err.contains(e), "{mode}: wanted {e:?} in: {err}");
        }
        assert!(
            peak_kib < 512 << 10,
            "{mode}: cabin run peaked at {peak_kib} KiB"
        );
        assert!(
            took < Duration::from_secs(90),
            "{mode}: took {took:?} (the boot deadline is 15 s)"
        );
        if let Some(h) = honest {
            let o = h.wait_with_output().unwrap();
            assert!(o.status.success(), "honest container: {}", stderr(&o));
            assert_eq!(stdout(&o), "untouched\n");
        }
    }
    assert!(run_dirs(&data).is_empty(), "{:?}", run_dirs(&data));
    assert!(qemu_processes_mentioning(&data).is_empty(), "QEMU left");
}
