//! A full disk on the write paths the pull, import and VM tests do not cover (issue 18):
//! volume create, container create and run, image load, image save and `cabin cp` out
//! of a container. Each is a clear error that says what to do, leaves nothing half made
//! (the store check passes, listings show nothing new, a destination keeps what it had),
//! and the same command succeeds once there is room. The disks are small tmpfs mounts.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::*;

fn cabin_out(d: &Path, args: &[&str]) -> std::process::Output {
    cabin_in(d).args(args).output().unwrap()
}

fn ok(d: &Path, args: &[&str]) -> String {
    let o = cabin_out(d, args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Fails with a full disk's message and what to do about it.
fn full(d: &Path, args: &[&str], code: i32) {
    let o = cabin_out(d, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains("No space left on device"), "{args:?}: {err}");
    assert!(
        err.contains("run the same command again"),
        "{args:?} says what to do: {err}"
    );
}

/// Fills the file system of `dir` to the last byte; removing the file makes room.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join(".filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // What is left is smaller than one chunk; take it too.
    for _ in 0..16 {
        let _ = f.write_all(&chunk[..4096]);
    }
    path
}

fn check_passes(d: &Path) {
    let o = cabin_out(d, &["system", "check"]);
    assert!(
        o.status.success(),
        "the store stays consistent: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
    }
    !is_root()
}

#[test]
fn a_full_data_disk_refuses_volume_create_run_and_image_load_clearly_and_keeps_the_store_consistent(
) {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // Another image, saved to an archive outside the small disk, to load later.
    let other = work.path().join("other");
    let rootfs = busybox_copy(&work.path().join("rootfs"));
    std::fs::write(rootfs.join("payload"), vec![7u8; 4 << 20]).unwrap();
    ok(
        &other,
        &["image", "import", rootfs.to_str().unwrap(), "other:1"],
    );
    let archive = work.path().join("other.tar");
    ok(
        &other,
        &["image", "save", "-o", archive.to_str().unwrap(), "other:1"],
    );

    let data = work.path().join("data");
    let disk = SmallDisk::mount(&data, "96m");
    let d = data.as_path();
    import_busybox(d, "bb");
    // Everything a run needs is made once while there is room (the initramfs).
    assert_eq!(ok(d, &["run", "--rm", "bb", "echo", "warm"]), "warm\n");
    ok(d, &["volume", "create", "kept"]);

    let filler = fill(d);
    full(d, &["volume", "create", "v2"], 1);
    full(d, &["run", "-d", "--name", "c1", "bb", "sleep", "100"], 125);
    full(d, &["run", "--rm", "bb", "true"], 125);
    full(d, &["image", "load", "-i", archive.to_str().unwrap()], 1);
    assert_eq!(ok(d, &["volume", "ls", "-q"]), "kept\n");
    assert_eq!(ok(d, &["ps", "-a", "-q"]), "", "no half-made container");
    let images = ok(d, &["image", "ls"]);
    assert!(!images.contains("other"), "{images}");
    check_passes(d);
    assert!(run_dirs(d).is_empty(), "{:?}", run_dirs(d));

    // Room again: the same commands succeed.
    std::fs::remove_file(filler).unwrap();
    ok(d, &["volume", "create", "v2"]);
    ok(d, &["image", "load", "-i", archive.to_str().unwrap()]);
    ok(d, &["run", "-d", "--name", "c1", "bb", "sleep", "100"]);
    assert_eq!(
        ok(d, &["run", "--rm", "other:1", "wc", "-c", "/payload"]).trim(),
        "4194304 /payload"
    );
    ok(d, &["rm", "-f", "c1"]);
    check_passes(d);
    drop(disk);
}

#[test]
fn copying_out_to_a_full_disk_is_clear_and_the_destination_keeps_what_it_had() {
    if skip() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    import_busybox(d, "bb");
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = cabin_in(self.0).args(["rm", "-f", "cpc"]).output();
        }
    }
    let _rm = Remove(d);
    ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            "cpc",
            "bb",
            "sh",
            "-c",
            "mkdir /dir && echo a > /dir/a && dd if=/dev/urandom of=/dir/big bs=1M count=3 2>/dev/null && echo ready > /ready && sleep 1000",
        ],
    );
    wait_for(
        "the container's files",
        std::time::Duration::from_secs(60),
        || {
            cabin_out(d, &["exec", "cpc", "cat", "/ready"])
                .status
                .success()
        },
    );
    let sums = ok(d, &["exec", "cpc", "sha256sum", "/dir/a", "/dir/big"]);

    let dest = tempfile::tempdir().unwrap();
    let small = SmallDisk::mount(dest.path(), "2m");
    std::fs::write(dest.path().join("keep"), "mine\n").unwrap();
    let dest_str = dest.path().to_str().unwrap();
    full(d, &["cp", "cpc:/dir/big", dest_str], 1);
    full(d, &["cp", "cpc:/dir", dest_str], 1);
    let filler = fill(dest.path());
    full(
        d,
        &[
            "image",
            "save",
            "-o",
            dest.path().join("bb.tar").to_str().unwrap(),
            "bb",
        ],
        1,
    );
    std::fs::remove_file(filler).unwrap();
    let left: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["keep"], "nothing half copied or half saved");
    assert_eq!(
        std::fs::read_to_string(dest.path().join("keep")).unwrap(),
        "mine\n"
    );

    small.grow("16m");
    ok(d, &["cp", "cpc:/dir", dest_str]);
    let host = std::process::Command::new("sha256sum")
        .args(["a", "big"])
        .current_dir(dest.path().join("dir"))
        .output()
        .unwrap();
    let hashes = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    assert_eq!(hashes(&stdout(&host)), hashes(&sums), "copied whole");
    check_passes(d);
}

#[test]
fn a_container_whose_host_disk_fills_up_is_paused_and_goes_on_once_there_is_room() {
    if skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let _disk = SmallDisk::mount(&data, "96m");
    let d = data.as_path();
    import_busybox(d, "bb");
    struct Remove<'a>(&'a Path);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = cabin_in(self.0).args(["rm", "-f", "chat"]).output();
        }
    }
    let _rm = Remove(d);
    // Writes to its own disk (a qcow2 layer on the full host disk) and to its log.
    ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            "chat",
            "bb",
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo line $i; echo $i > /count; dd if=/dev/urandom of=/f$((i % 50)) bs=64k count=1 2>/dev/null; sync; sleep 0.2; done",
        ],
    );
    // The container's output, and cabin's notes about it (on stderr, as docker's
    // logs show a container's stderr).
    let lines = || {
        let o = cabin_out(d, &["logs", "chat"]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o) + &stderr(&o)
    };
    let timeout = std::time::Duration::from_secs(60);
    wait_for("the container's first lines", timeout, || {
        lines().lines().count() >= 3
    });
    let filler = fill(d);
    // Its next write to its disk fails for lack of room: QEMU pauses the VM, and the
    // guest sees no I/O error. Nothing can be logged meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(5));
    std::fs::remove_file(filler).unwrap();
    wait_for("the VM to go on", timeout, || {
        lines().contains("there is room on the host's disk again: the VM goes on")
    });
    let last = || -> u64 {
        ok(d, &["logs", "chat"])
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .max()
            .unwrap_or(0)
    };
    let resumed_at = last();
    wait_for("lines after the pause", timeout, || {
        last() >= resumed_at + 3
    });
    let o = cabin_out(
        d,
        &[
            "exec",
            "chat",
            "sh",
            "-c",
            "echo fine > /written && cat /written /count",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("fine\n"),
        "its disk takes writes again: {out}"
    );
    let count: u64 = out.lines().nth(1).unwrap().parse().unwrap();
    assert!(count >= resumed_at + 3, "{out}");
    assert!(ok(d, &["ps"]).contains("chat"), "still running");
}
