//! Images: import a root filesystem, run it by name with its defaults, reuse its disk,
//! remove it; hostile archives fail cleanly; `cabin system check` finds damage and
//! leftovers and repairs what is not the user's.

mod common;

use std::path::Path;

use common::*;

fn image(data: &Path, args: &[&str]) -> std::process::Output {
    cabin_in(data).arg("image").args(args).output().unwrap()
}

fn run_image(data: &Path, args: &[&str]) -> std::process::Output {
    cabin_in(data).arg("run").args(args).output().unwrap()
}

#[test]
fn an_imported_image_runs_by_name_with_its_defaults_and_is_unpacked_once() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let rootfs = busybox_rootfs().to_str().unwrap();
    let o = image(
        d,
        &[
            "import",
            rootfs,
            "demo/busybox:1",
            "--cmd",
            "sh",
            "--cmd",
            "-c",
            "--cmd",
            "echo default-cmd $GREETING; pwd; id -u",
            "-e",
            "GREETING=hi",
            "-w",
            "/srv",
            "-u",
            "user",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = stdout(&o).trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let o = image(d, &["ls", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "demo/busybox:1");
    assert_eq!(v[0]["digest"], digest.as_str());

    // The image's Cmd, Env, WorkingDir and User apply.
    let o = run_image(d, &["--timings", "demo/busybox:1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "default-cmd hi\n/srv\n1000\n");
    assert!(stderr(&o).contains("unpacked"), "{}", stderr(&o));

    // A second run does no unpacking; options override the image's defaults.
    let o = run_image(
        d,
        &[
            "--timings",
            "-w",
            "/",
            "-u",
            "0",
            "-e",
            "GREETING=yo",
            "demo/busybox:1",
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u",
        ],
    );
    assert_eq!(stdout(&o), "yo\n/\n0\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cached, no unpacking"),
        "{}",
        stderr(&o)
    );

    // system df counts the image and its disk.
    let o = cabin_in(d)
        .args(["system", "df", "--format", "json"])
        .output()
        .unwrap();
    let usage: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = |t: &str| {
        usage
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["type"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(row("images (names)")["count"], 1);
    assert!(
        row("images (names)")["bytes"].as_u64().unwrap() > 500_000,
        "{usage}"
    );
    assert_eq!(row("image disks")["count"], 1);

    // --entrypoint replaces the image's entrypoint and drops its Cmd.
    let o = run_image(
        d,
        &[
            "--entrypoint",
            "echo",
            "demo/busybox:1",
            "from",
            "entrypoint",
        ],
    );
    assert_eq!(stdout(&o), "from entrypoint\n");

    // By id prefix, and after tagging.
    let id = &digest[7..19];
    let o = run_image(d, &[id, "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(image(d, &["tag", "demo/busybox:1", "other"])
        .status
        .success());
    let o = image(d, &["rm", "demo/busybox:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_image(d, &["other", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "the other name still works: {}",
        stderr(&o)
    );
    assert!(image(d, &["rm", "other"]).status.success());

    // Nothing is left once no name refers to it.
    let blobs = d.join("images/blobs/sha256");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(d.join("images/disks")).unwrap().count(),
        0
    );
    expect_error(
        &run_image(d, &["other", "true"]),
        125,
        "no such image: other",
    );
}

#[test]
fn bad_names_and_missing_images_are_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image(
        d,
        &["import", busybox_rootfs().to_str().unwrap(), "Bad Name"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("invalid image name \"Bad Name\""),
        "{}",
        stderr(&o)
    );
    let o = image(d, &["import", "/nonexistent/dir", "x"]);
    assert!(stderr(&o).contains("/nonexistent/dir"), "{}", stderr(&o));
    expect_error(
        &run_image(d, &["nosuchimage"]),
        125,
        "no such image: nosuchimage",
    );
    let o = image(d, &["rm", "nosuchimage"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_hostile_tarball_fails_to_unpack_and_leaves_the_store_consistent() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    // A tar whose entry climbs out of the root: written by hand, as no honest tool would.
    let mut h = tar::Header::new_gnu();
    let name = b"../../escaped";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"evil"[..]).unwrap();
    let tarball = d.join("evil.tar");
    std::fs::write(&tarball, b.into_inner().unwrap()).unwrap();

    let o = image(d, &["import", tarball.to_str().unwrap(), "evil"]);
    assert!(
        o.status.success(),
        "import only stores the archive: {}",
        stderr(&o)
    );
    let o = run_image(d, &["evil", "true"]);
    expect_error(
        &o,
        125,
        "image evil:latest: layer entry \"../../escaped\" tries to leave the image's root",
    );
    assert!(!d.join("images/escaped").exists() && !d.join("escaped").exists());
    assert_eq!(
        std::fs::read_dir(d.join("images/disks")).unwrap().count(),
        0,
        "no disk"
    );
    assert_eq!(
        std::fs::read_dir(d.join("images/tmp")).unwrap().count(),
        0,
        "no staging left"
    );
    assert!(run_dirs(d).is_empty());
}

/// `cabin system check ARGS`: its exit code and output.
fn system_check(data: &Path, args: &[&str]) -> (i32, String) {
    let o = cabin_in(data)
        .args(["system", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&o), stderr(&o)),
    )
}

#[test]
fn system_check_finds_damage_and_leftovers_and_repairs_what_is_not_the_users() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image(
        d,
        &["import", busybox_rootfs().to_str().unwrap(), "check:1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_in(d)
        .args(["vm", "create", "broken", "--disk-size", "10GB"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin_in(d)
        .args(["create", "--name", "kept", "check:1", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let o = cabin_in(d)
        .args(["volume", "create", "notes"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let (code, out) = system_check(d, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("The store is consistent"), "{out}");
    assert!(
        out.contains("1 image names, 1 VMs, 1 containers, 1 volumes"),
        "{out}"
    );

    // A damaged layer, a name of nothing, a broken VM record, and what killed commands
    // left: an unfinished blob, a disk being built, a VM being created.
    let store = d.join("images");
    let refs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("refs.json")).unwrap()).unwrap();
    let manifest_hex = refs["check:1"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("blobs/sha256").join(manifest_hex)).unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layer_path = store
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&layer_path).unwrap();
    bytes.push(0);
    std::fs::write(&layer_path, bytes).unwrap();
    let mut refs = refs.clone();
    refs["ghost:1"] = format!("sha256:{}", "1".repeat(64)).into();
    std::fs::write(store.join("refs.json"), refs.to_string()).unwrap();
    std::fs::write(d.join("vms/broken/config.json"), "{half").unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(store.join(format!("ingest/{dead}-1-0")), "half a blob").unwrap();
    let partial = store.join(format!("ingest/partial-{}", "2".repeat(64)));
    std::fs::write(&partial, "a download to resume").unwrap();
    std::fs::write(store.join(format!("disks/.building-{dead}-1.ext4")), "").unwrap();
    let staging = d.join(format!("vms/.desk.staging-{dead}"));
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("disk.img"), "").unwrap();
    std::fs::write(d.join("containers").join(&id).join("state.json"), "[]").unwrap();
    std::fs::remove_file(d.join("volumes/notes/disk.ext4")).unwrap();
    let volume_staging = d.join(format!("volumes/.new-more-{dead}"));
    std::fs::create_dir_all(&volume_staging).unwrap();

    let (code, out) = system_check(d, &[]);
    assert_eq!(code, 1, "{out}");
    for needle in [
        &format!("blob {layer} is damaged"),
        "image ghost:1 points at manifest",
        "--repair would remove the name ghost:1",
        &format!("ingest/{dead}-1-0 was left half made"),
        &format!(".building-{dead}-1.ext4 was left half made"),
        &format!(".desk.staging-{dead} was left half made by a vm create or clone"),
        "VM broken:",
        "cabin vm delete --force broken",
        &format!("container {id}: its record is unreadable"),
        &format!("cabin rm -f {id}"),
        "volume notes: its disk (disk.ext4) is missing",
        &format!(".new-more-{dead} was left half made by a volume create"),
        "9 problems left (cabin system check --repair fixes what it can)",
    ] {
        assert!(out.contains(needle), "{needle:?} in:\n{out}");
    }
    assert!(
        !out.contains("partial-"),
        "a partial download is not a problem: {out}"
    );

    // Repaired: all but the VM, the container and the volume, which are the user's.
    let (code, out) = system_check(d, &["--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("repaired: remove the name ghost:1"), "{out}");
    assert!(out.contains("3 problems left\n"), "{out}");
    assert!(!staging.exists() && !layer_path.exists() && partial.exists());
    assert!(!volume_staging.exists());
    assert!(
        d.join("vms/broken/disk.img").exists(),
        "the VM's disk stays"
    );
    // The image lost its damaged layer: said, with what to do.
    let (code, out) = system_check(d, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "image check:1 is incomplete: layer {layer} is not in the store"
        )),
        "{out}"
    );
    assert!(out.contains("pull or import check:1 again"), "{out}");
    let o = image(d, &["rm", "check:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [
        &["vm", "delete", "--force", "broken"][..],
        &["rm", "-f", &id],
        &["volume", "rm", "notes"],
    ] {
        let o = cabin_in(d).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let (code, out) = system_check(d, &[]);
    assert_eq!(code, 0, "{out}");

    // The next vm create and volume create sweep what killed ones left, as image
    // builds do theirs.
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(&volume_staging).unwrap();
    for args in [
        &["vm", "create", "again", "--disk-size", "10GB"][..],
        &["volume", "create", "again"],
    ] {
        let o = cabin_in(d).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert!(!staging.exists() && !volume_staging.exists());
    let (code, out) = system_check(d, &[]);
    assert_eq!(code, 0, "{out}");
}
