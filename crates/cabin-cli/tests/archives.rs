//! save and load, checked against skopeo's archive transports; and a real distribution
//! (Debian made with debootstrap) imported and run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn image(data: &Path, args: &[&str]) -> std::process::Output {
    cabin_in(data).arg("image").args(args).output().unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed")
}

#[test]
fn save_and_load_round_trip_and_interoperate_with_skopeo() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image(
        d,
        &["import", busybox_rootfs().to_str().unwrap(), "saved/bb:2"],
    );
    let digest = stdout(&o).trim().to_string();
    let archive = d.join("bb.tar");
    let o = image(d, &["save", "-o", archive.to_str().unwrap(), "saved/bb:2"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // skopeo reads the archive both as docker-archive and as oci-archive.
    let o = skopeo(&["inspect", &format!("docker-archive:{}", archive.display())]);
    assert!(o.status.success(), "docker-archive: {}", stderr(&o));
    let o = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:2", archive.display()),
    ]);
    assert!(o.status.success(), "oci-archive: {}", stderr(&o));

    // Loaded into an empty store, it has the same digest, name and runs.
    let other = tempfile::tempdir().unwrap();
    let o = image(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!("Loaded image: saved/bb:2 ({digest})")
    );
    let o = cabin_in(other.path())
        .args(["run", "saved/bb:2", "echo", "loaded"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "loaded\n", "{}", stderr(&o));

    // What skopeo writes in docker's (legacy) archive format loads too.
    let legacy = d.join("legacy.tar");
    let o = skopeo(&[
        "copy",
        "--quiet",
        &format!("oci-archive:{}:2", archive.display()),
        &format!("docker-archive:{}:legacy/bb:1", legacy.display()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let third = tempfile::tempdir().unwrap();
    let o = image(third.path(), &["load", "-i", legacy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Loaded image: legacy/bb:1"),
        "{}",
        stdout(&o)
    );
    let o = cabin_in(third.path())
        .args(["run", "legacy/bb:1", "echo", "legacy"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "legacy\n", "{}", stderr(&o));
}

#[test]
fn a_tampered_archive_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image(d, &["import", busybox_rootfs().to_str().unwrap(), "t:1"]);
    assert!(o.status.success());
    let archive = d.join("t.tar");
    assert!(image(d, &["save", "-o", archive.to_str().unwrap(), "t:1"])
        .status
        .success());
    // Flip a byte inside the layer blob: its name no longer matches its content.
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&archive, &bytes).unwrap();
    let other = tempfile::tempdir().unwrap();
    let o = image(other.path(), &["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mismatch") || stderr(&o).contains("does not match"),
        "{}",
        stderr(&o)
    );
    let o = image(other.path(), &["ls", "-q"]);
    assert_eq!(stdout(&o), "", "nothing was named");
    expect_error(
        &image(other.path(), &["load", "-i", "/nonexistent.tar"]),
        1,
        "/nonexistent.tar",
    );
}

#[test]
fn a_debian_root_filesystem_runs_its_own_programs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: debootstrap needs root");
        return;
    }
    let rootfs = debian_rootfs(&[]);
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image(d, &["import", &rootfs, "debian:bookworm", "--cmd", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_in(d)
        .args([
            "run",
            "debian:bookworm",
            "bash",
            "-c",
            "apt-get --version | head -1; dpkg -l | grep -c '^ii'; \
             printf 'b\\na\\nc\\n' | sort | tr '\\n' ' '; echo; \
             seq 1 5 | paste -sd+ | bc 2>/dev/null || echo $(( $(seq 1 5 | paste -sd+) )); \
             stat -c '%U %a' /usr/bin/passwd; id -un",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("apt "), "{out}");
    assert!(
        lines[1].parse::<u32>().unwrap() > 80,
        "a minbase system has its packages: {out}"
    );
    assert_eq!(lines[2].trim(), "a b c");
    assert_eq!(lines[3], "15");
    assert_eq!(
        lines[4], "root 4755",
        "setuid bits survive the image: {out}"
    );
    assert_eq!(lines[5], "root");
}
