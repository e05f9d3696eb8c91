//! Boot snapshots: containers resume a saved idle VM instead of booting a kernel.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn snapshot_files(data: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data.join("snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "vmstate"))
                .collect()
        })
        .unwrap_or_default()
}

fn prepare(data: &Path, extra: &[&str]) -> std::process::Output {
    cabin_in(data)
        .env("CABIN_SNAPSHOTS", "on")
        .args(["system", "prepare"])
        .args(extra)
        .output()
        .unwrap()
}

fn run_on(data: &Path, opts: &[&str], args: &[&str]) -> std::process::Output {
    run_in(data, &[("CABIN_SNAPSHOTS", "on")], opts, args)
}

fn fresh_data_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cabin-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    remove_at_exit(dir.clone());
    dir
}

#[test]
fn a_prepared_snapshot_is_resumed_and_behaves_like_a_boot() {
    let data = fresh_data_dir("snap-resume");
    let o = prepare(&data, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("boot snapshot saved: "),
        "{}",
        stdout(&o)
    );
    let o = prepare(&data, &[]);
    assert!(
        stdout(&o).starts_with("boot snapshot already there"),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot_files(&data).len(), 1);

    let script = "echo out; echo err >&2; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s; exit 7";
    let a = run_on(&data, &["--timings"], &["sh", "-c", script]);
    let b = run_on(&data, &[], &["sh", "-c", script]);
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(7), "{}", stderr(o));
        assert!(stderr(o).contains("err\n"));
    }
    assert!(
        stderr(&a).contains("resumed from boot snapshot"),
        "{}",
        stderr(&a)
    );
    let lines = |o: &std::process::Output| stdout(o).lines().map(String::from).collect::<Vec<_>>();
    let (la, lb) = (lines(&a), lines(&b));
    assert_eq!(la[0], "out");
    // Each resumed VM reseeds its random number generator from the host.
    assert_eq!(la[1].len(), 32, "{la:?}");
    assert_ne!(
        la[1], lb[1],
        "two resumed VMs produced the same random bytes"
    );
    // The guest's clock is the host's, not the saved one.
    let guest: i64 = la[2].parse().unwrap();
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (host - guest).abs() < 30,
        "guest clock {guest}, host {host}"
    );

    // The resumed VM reads the container's own disk (not the template's placeholder)
    // and writes to its own layer.
    let root = busybox_copy(&data.join("rootfs-marked"));
    std::fs::write(root.join("marker"), "from the image\n").unwrap();
    let o = cabin_in(&data)
        .env("CABIN_SNAPSHOTS", "on")
        .args(["run", "--rootfs"])
        .arg(&root)
        .args(["--", "sh", "-c", "cat /marker; echo new > /new; cat /new"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "from the image\nnew\n", "{}", stderr(&o));

    // Another VM shape has a snapshot of its own.
    let o = prepare(&data, &["--memory", "200m"]);
    assert!(
        stdout(&o).starts_with("boot snapshot saved: "),
        "{}",
        stdout(&o)
    );
    assert_eq!(snapshot_files(&data).len(), 2);
    let o = run_on(
        &data,
        &["--memory", "200m", "--timings"],
        &["cat", "/sys/fs/cgroup/memory.max"],
    );
    assert_eq!(stdout(&o), format!("{}\n", 200 << 20), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from boot snapshot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_run_without_a_snapshot_builds_one_in_the_background() {
    let data = fresh_data_dir("snap-background");
    let o = run_on(&data, &["--timings"], &["echo", "booted"]);
    assert_eq!(stdout(&o), "booted\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("guest kernel booted in"),
        "{}",
        stderr(&o)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while snapshot_files(&data).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no snapshot was built in the background"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = run_on(&data, &["--timings"], &["echo", "resumed"]);
    assert_eq!(stdout(&o), "resumed\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resumed from boot snapshot"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_damaged_snapshot_is_removed_and_the_run_boots() {
    let data = fresh_data_dir("snap-damaged");
    assert!(prepare(&data, &[]).status.success());
    let snap = snapshot_files(&data).pop().unwrap();
    // Keep the file's start (QEMU accepts the stream's header) and cut the rest.
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&snap, &bytes[..bytes.len() / 3]).unwrap();

    let o = run_in(
        &data,
        &[("CABIN_SNAPSHOTS", "on")],
        &["--timings"],
        &["sh", "-c", "echo still-runs; exit 4"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "still-runs\n");
    assert!(
        stderr(&o).contains("could not be resumed") && stderr(&o).contains("booting normally"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("guest kernel booted in"),
        "{}",
        stderr(&o)
    );
    // The damaged file is gone; a rebuilt one (started in the background) is whole.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Builders write elsewhere and rename: whatever appears here is whole.
        if let Ok(m) = std::fs::metadata(&snap) {
            assert!(
                m.len() > (bytes.len() / 2) as u64,
                "the damaged snapshot was kept"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the snapshot was not rebuilt");
        std::thread::sleep(Duration::from_millis(200));
    }
}
