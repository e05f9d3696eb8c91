//! Full VM images through an OCI registry in Lume's format (`cabin vm push`, `vm pull`),
//! against Debian's docker-registry on 127.0.0.1: round trips checked by hash and
//! allocated size, what `skopeo inspect` reads, the image cache, and pulls and pushes
//! killed midway that resume with only what was missing. Bad images and registry
//! faults: tests/vm_image_faults.rs; the API's routes: tests/api.rs.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::vm_disks::*;
use common::vm_transfer::*;
use common::*;
use serde_json::Value;

/// Pulls `image` as VM `name` and checks that its disk holds what `src`'s does.
fn pulls_back_whole(data: &Path, reg: &Registry, image: &str, name: &str, src: &Path) {
    let o = pull(data, &reg.addr, image, name, &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        sha256(&vms_dir(data).join(name).join("disk.img")),
        sha256(&src.join("disk.img"))
    );
}

fn skopeo_raw(reg: &Registry, image: &str) -> Value {
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{ORG}/{image}", reg.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn push(data: &Path, reg: &Registry, name: &str, image: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "push",
        name,
        image,
        "--registry",
        &reg.addr,
        "--organization",
        ORG,
    ];
    args.extend_from_slice(extra);
    vm_ok(data, &args)
}

#[test]
fn push_and_pull_round_trip_a_sparse_10gb_disk_in_lumes_format() {
    let (_t, reg, data) = fresh();
    let src = make_vm(&data, "src", 10 << 30);
    let disk = src.join("disk.img");
    let chunk = 16u64 << 20;
    // Data at the start, in the middle, at the very end; two chunks with the same
    // content (uploaded once, listed twice).
    write_at(&disk, 0, &pattern(1, 3 << 20));
    write_at(&disk, (3 << 30) + 12345, &pattern(2, 5 << 20));
    write_at(&disk, (10 << 30) - 4096, &pattern(3, 4096));
    let same = pattern(4, chunk as usize);
    write_at(&disk, 40 * chunk, &same);
    write_at(&disk, 90 * chunk, &same);

    let out = push(
        &data,
        &reg,
        "src",
        "linux-test:v1",
        &["--chunk-size-mb", "16", "--additional-tags", "latest"],
    );
    assert!(out.contains("Push complete"), "{out}");
    let line = out.lines().find(|l| l.contains("Push complete")).unwrap();
    assert_eq!(field(line, "chunks"), "640");
    let first_uploaded: usize = field(line, "uploaded").parse().unwrap();
    // As Lume uploads: one streamed PUT per blob, no PATCH per piece.
    assert_eq!(reg.answered("PUT", "/blobs/uploads/"), first_uploaded);
    assert_eq!(reg.answered("PATCH", "/blobs/uploads/"), 0);

    // What a registry client reads: Lume's media types and annotations.
    let m = skopeo_raw(&reg, "linux-test:v1");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.trycua.lume.config.v1+json"
    );
    assert_eq!(
        m["config"]["annotations"]["org.opencontainers.image.title"],
        "config.json"
    );
    let a = &m["annotations"];
    assert_eq!(a["org.trycua.lume.os"], "linux");
    assert_eq!(a["org.trycua.lume.cpu-count"], "2");
    assert_eq!(a["org.trycua.lume.memory-size"], (2u64 << 30).to_string());
    assert_eq!(a["org.trycua.lume.disk-size"], (10u64 << 30).to_string());
    assert_eq!(
        a["org.trycua.lume.total-uncompressed-size"],
        (10u64 << 30).to_string()
    );
    assert_eq!(a["org.trycua.lume.display"], "1024x768");
    assert_eq!(a["org.trycua.lume.network-mode"], "nat");
    assert!(a["org.trycua.lume.upload-time"].is_string());
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 641);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.trycua.lume.nvram.v1"
    );
    assert_eq!(
        layers[0]["annotations"]["org.opencontainers.image.title"],
        "nvram.bin"
    );
    let mut digests = HashSet::new();
    for (i, l) in layers[1..].iter().enumerate() {
        let an = &l["annotations"];
        assert_eq!(l["mediaType"], "application/vnd.trycua.lume.disk.v1");
        assert_eq!(
            an["org.opencontainers.image.title"],
            format!("disk.img.part.{i}")
        );
        assert_eq!(an["org.trycua.lume.part.number"], i.to_string());
        assert_eq!(an["org.trycua.lume.part.total"], "640");
        assert_eq!(
            an["org.trycua.lume.part.offset"],
            (i as u64 * chunk).to_string()
        );
        assert_eq!(an["org.trycua.lume.chunk.size"], chunk.to_string());
        assert_eq!(
            an["org.trycua.lume.content.uncompressed-size"],
            chunk.to_string()
        );
        assert!(an["org.trycua.lume.content.uncompressed-digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"));
        digests.insert(l["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(
        layers[41]["digest"], layers[91]["digest"],
        "identical chunks, one blob"
    );
    assert_eq!(
        layers[2]["digest"], layers[600]["digest"],
        "all-zero chunks, one blob"
    );
    // Chunks 0, 192, 639, 40 = 90, and the zero chunk.
    assert_eq!(digests.len(), 5, "{digests:?}");
    assert_eq!(
        first_uploaded,
        digests.len() + 2,
        "each blob once, with config and NVRAM"
    );
    let stored = std::fs::read_dir(reg.storage.join("docker/registry/v2/blobs/sha256"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count();
    assert_eq!(stored, first_uploaded + 1, "the blobs and one manifest");
    // `latest` names the same manifest.
    assert_eq!(skopeo_raw(&reg, "linux-test:latest"), m);

    // Deterministic compression: a second push uploads nothing but the manifest.
    let out = push(
        &data,
        &reg,
        "src",
        "linux-test:v2",
        &["--chunk-size-mb", "16"],
    );
    let line = out.lines().find(|l| l.contains("Push complete")).unwrap();
    assert_eq!(field(line, "uploaded"), "0", "{line}");
    let m2 = skopeo_raw(&reg, "linux-test:v2");
    assert_eq!(m2["layers"], m["layers"]);

    // Pull: the same bytes, the same holes, a new MAC.
    let gets_before = reg.blob_gets();
    let o = pull(&data, &reg.addr, "linux-test:v1", "copy", &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        reg.blob_gets() - gets_before <= digests.len() + 2,
        "each blob fetched once"
    );
    let copy = vms_dir(&data).join("copy");
    assert_eq!(sha256(&copy.join("disk.img")), sha256(&disk));
    assert_eq!(
        std::fs::metadata(copy.join("disk.img")).unwrap().len(),
        10 << 30
    );
    let (a_src, a_copy) = (allocated(&disk), allocated(&copy.join("disk.img")));
    assert!(
        a_copy <= a_src + (1 << 20),
        "holes kept: {a_copy} allocated vs {a_src}"
    );
    assert!(a_copy < 64 << 20, "{a_copy}");
    assert_eq!(
        std::fs::read(copy.join("nvram.bin")).unwrap(),
        std::fs::read(src.join("nvram.bin")).unwrap()
    );
    let (cs, cc) = (vm_config(&src), vm_config(&copy));
    for k in [
        "os",
        "cpuCount",
        "memorySize",
        "diskSize",
        "display",
        "networkMode",
        "machineIdentifier",
    ] {
        assert_eq!(cs[k], cc[k], "{k}");
    }
    assert_ne!(cs["macAddress"], cc["macAddress"]);
    assert!(copy.join(".manifest-digest").is_file());
    assert!(
        hidden(&vms_dir(&data)).is_empty(),
        "{:?}",
        hidden(&vms_dir(&data))
    );
    let ls = vm_ok(&data, &["ls"]);
    assert!(ls.contains("copy") && ls.contains("stopped"), "{ls}");

    // The default name is IMAGE_TAG; a taken name is refused before any transfer.
    let o = pull(&data, &reg.addr, "linux-test:v1", "copy", &[]);
    expect_error(&o, 1, "Virtual machine already exists with name: copy");
    // Single-layer images pull too (a small disk: one gzip stream of the whole disk is
    // slow in a debug build).
    let small = make_vm(&data, "small", 64 << 20);
    write_at(&small.join("disk.img"), 1 << 20, &pattern(5, 3 << 20));
    push(&data, &reg, "small", "linux-one:v1", &["--single-layer"]);
    let one = skopeo_raw(&reg, "linux-one:v1");
    assert_eq!(one["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        one["layers"][1]["annotations"]["org.opencontainers.image.title"],
        "disk.img"
    );
    assert!(one["layers"][1]["annotations"]
        .get("org.trycua.lume.part.offset")
        .is_none());
    let o = vm_in(
        &data,
        &[
            "pull",
            "linux-one:v1",
            "--registry",
            &reg.addr,
            "--organization",
            ORG,
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        sha256(&vms_dir(&data).join("linux-one_v1/disk.img")),
        sha256(&small.join("disk.img"))
    );
}

#[test]
fn a_cached_image_makes_more_vms_without_a_second_download() {
    let (_t, reg, data) = fresh();
    let src = make_vm(&data, "src", 256 << 20);
    write_at(&src.join("disk.img"), 0, &pattern(7, 6 << 20));
    write_at(&src.join("disk.img"), 200 << 20, &pattern(8, 2 << 20));
    push(&data, &reg, "src", "cached:v1", &["--chunk-size-mb", "4"]);

    let o = pull(&data, &reg.addr, "cached:v1", "first", &["--cache"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("fetched=0 "), "{}", stdout(&o));
    let gets = reg.blob_gets();
    let o = pull(&data, &reg.addr, "cached:v1", "second", &["--cache"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("fetched=0 (cloned from the cache)"),
        "{}",
        stdout(&o)
    );
    assert_eq!(reg.blob_gets(), gets, "no blob fetched for the second VM");
    let want = sha256(&src.join("disk.img"));
    let (first, second) = (vms_dir(&data).join("first"), vms_dir(&data).join("second"));
    for vm in [&first, &second] {
        assert_eq!(sha256(&vm.join("disk.img")), want);
        assert!(allocated(&vm.join("disk.img")) < 32 << 20, "holes kept");
    }
    assert_ne!(
        vm_config(&first)["macAddress"],
        vm_config(&second)["macAddress"]
    );

    // `vm images` lists the cached image (Lume's shape); prune empties the cache and
    // leaves the VMs made from it whole.
    let list: Value = serde_json::from_str(&vm_ok(&data, &["images", "-f", "json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["repository"], "cached:v1");
    assert_eq!(list[0]["imageId"].as_str().unwrap().len(), 12);
    assert!(vm_ok(&data, &["prune"]).contains("Successfully removed cached images"));
    assert_eq!(vm_ok(&data, &["images", "-f", "json"]).trim(), "[]");
    assert_eq!(sha256(&second.join("disk.img")), want);
    // With the cache gone, a cached pull downloads again.
    let o = pull(&data, &reg.addr, "cached:v1", "third", &["--cache"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(reg.blob_gets() > gets);
    assert!(
        hidden(&vms_dir(&data)).is_empty(),
        "{:?}",
        hidden(&vms_dir(&data))
    );
}

/// A VM whose 64 MiB disk has 48 chunks of 1 MiB with distinct data and 16 holes.
fn many_chunk_vm(data: &Path, name: &str) -> PathBuf {
    let dir = make_vm(data, name, 64 << 20);
    for i in 0..64u64 {
        if i % 4 != 3 {
            write_at(&dir.join("disk.img"), i << 20, &pattern(100 + i, 1 << 20));
        }
    }
    dir
}

/// Starts `cabin vm ARGS` in the background, lets it run until `progressed` holds, then
/// freezes the registry (every transfer hangs where it is), kills cabin with SIGKILL
/// and thaws the registry: a transfer killed midway, at a point the test chooses.
fn kill_midway(data: &Path, reg: &Registry, args: &[&str], progressed: impl Fn() -> bool) {
    kill_midway_and(data, reg, args, progressed, || {});
}

/// [`kill_midway`], running `while_frozen` while the transfer hangs.
fn kill_midway_and(
    data: &Path,
    reg: &Registry,
    args: &[&str],
    progressed: impl Fn() -> bool,
    while_frozen: impl FnOnce(),
) {
    let mut cmd = cabin_in(data);
    cmd.arg("vm")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = spawn_for_test_process(cmd).unwrap();
    let start = std::time::Instant::now();
    while !progressed() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cabin finished before the test could interrupt it"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(120));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    reg.freeze();
    std::thread::sleep(std::time::Duration::from_millis(300));
    while_frozen();
    child.kill().unwrap();
    child.wait().unwrap();
    reg.thaw();
}

fn journal_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn a_pull_killed_midway_resumes_and_fetches_only_the_missing_chunks() {
    let (_t, reg, data) = fresh();
    let src = many_chunk_vm(&data, "src");
    push(&data, &reg, "src", "resume:v1", &["--chunk-size-mb", "1"]);
    let m = skopeo_raw(&reg, "resume:v1");
    let disk_blobs: HashSet<String> = m["layers"].as_array().unwrap()[1..]
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(disk_blobs.len(), 49, "48 data chunks and one hole");

    let before = reg.blob_gets();
    let args = [
        "pull",
        "resume:v1",
        "copy",
        "--registry",
        &reg.addr,
        "--organization",
        ORG,
        "--parallel",
        "1",
    ];
    // Config, NVRAM, then disk chunks one at a time: stop after about a dozen.
    kill_midway_and(
        &data,
        &reg,
        &args,
        || reg.blob_gets() - before >= 14,
        || {
            // The same pull from another process meanwhile is refused, not mixed in.
            let o = pull(&data, &reg.addr, "resume:v1", "copy", &[]);
            expect_error(
                &o,
                1,
                "a pull of copy is already under way in another process",
            );
        },
    );

    let stage = vms_dir(&data).join(".copy.pulling");
    assert!(!vms_dir(&data).join("copy").exists());
    assert!(!vm_ok(&data, &["ls"]).contains("copy"));
    let done = journal_lines(&stage.join("pull-journal"));
    assert!(
        !done.is_empty() && done.len() < 64,
        "a partial journal: {done:?}"
    );
    let done_blobs: HashSet<String> = done
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    // (The hole's blob lists 16 offsets, recorded together once all are written.)
    let hole_done = done.len() - done_blobs.len() + 1 == 16;
    let done_data = done_blobs.len() - usize::from(hole_done);

    let before = reg.blob_gets();
    let o = pull(&data, &reg.addr, "resume:v1", "copy", &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let line = stdout(&o);
    assert_eq!(
        field(&line, "parts_resumed"),
        done.len().to_string(),
        "{line}"
    );
    assert_eq!(
        field(&line, "parts_written"),
        (64 - done.len()).to_string(),
        "{line}"
    );
    // Config and NVRAM again, then only the blobs not written before.
    assert_eq!(
        reg.blob_gets() - before,
        2 + 49 - done_data - usize::from(hole_done),
        "only what was missing is fetched"
    );
    let copy = vms_dir(&data).join("copy");
    assert_eq!(
        sha256(&copy.join("disk.img")),
        sha256(&src.join("disk.img"))
    );
    assert!(allocated(&copy.join("disk.img")) <= allocated(&src.join("disk.img")) + (1 << 20));
    assert!(!copy.join("pull-journal").exists() && !copy.join("lock").exists());
    assert!(
        hidden(&vms_dir(&data)).is_empty(),
        "{:?}",
        hidden(&vms_dir(&data))
    );
}

#[test]
fn an_interrupted_push_resumes_without_compressing_or_sending_chunks_again() {
    let (_t, reg, data) = fresh();
    let src = many_chunk_vm(&data, "src");
    let blobs_stored = || {
        std::fs::read_dir(reg.storage.join("docker/registry/v2/blobs/sha256"))
            .map(|d| {
                d.flatten()
                    .flat_map(|d| std::fs::read_dir(d.path()).unwrap())
                    .count()
            })
            .unwrap_or(0)
    };
    let args = one_by_one_push_args("src", "pushed:v1", &reg.addr);
    // Config and NVRAM first, then the chunks in order.
    kill_midway(&data, &reg, &args, || {
        reg.answered("PUT", "/blobs/uploads/") >= 12
    });

    let work = src.join(".lume_oci_push_cache");
    let done = journal_lines(&work.join("push-journal"));
    assert!(!done.is_empty() && done.len() < 64, "{done:?}");
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{ORG}/pushed:v1", reg.addr))
        .output()
        .unwrap();
    assert!(!o.status.success(), "no manifest after an interrupted push");
    let stored = blobs_stored();

    let puts = reg.answered("PUT", "/blobs/uploads/");
    let out = push(&data, &reg, "src", "pushed:v1", &["--chunk-size-mb", "1"]);
    let line = out.lines().find(|l| l.contains("Push complete")).unwrap();
    assert_eq!(field(line, "resumed"), done.len().to_string(), "{line}");
    // Config, NVRAM and 49 disk blobs in all; those stored already are not sent again.
    let uploaded: usize = field(line, "uploaded").parse().unwrap();
    assert_eq!(
        uploaded,
        51 - stored,
        "{line} stored={stored} done={done:?}"
    );
    assert_eq!(reg.answered("PUT", "/blobs/uploads/") - puts, uploaded);
    assert!(!work.exists(), "a finished push removes its work directory");
    // What was pushed in two goes pulls back whole.
    pulls_back_whole(&data, &reg, "pushed:v1", "back", &src);
}

#[test]
fn push_and_pull_show_a_progress_bar_with_speed_and_eta_on_a_terminal() {
    let (_t, reg, data) = fresh();
    many_chunk_vm(&data, "src");
    let cabin = format!(
        "env CABIN_DATA_DIR={} {} vm",
        data.display(),
        env!("CARGO_BIN_EXE_cabin")
    );
    let at = format!("--registry {} --organization {ORG}", reg.addr);
    let term = common::terminal::Tmux::start(
        "vm-bars",
        &format!(
            "{cabin} push src bars:1 {at} --chunk-size-mb 1; echo PUSH-DONE; \
             {cabin} pull bars:1 copy {at}; echo PULL-DONE; sleep 60"
        ),
    );
    term.wait_for("the push and the pull", |s| s.contains("PULL-DONE"));
    let screen = term.screen();
    let bars: Vec<&str> = screen
        .lines()
        .filter(|l| l.starts_with("disk.img ["))
        .collect();
    assert_eq!(bars.len(), 2, "one bar each for push and pull:\n{screen}");
    for bar in bars {
        assert!(bar.contains("[====="), "a full bar: {bar}");
        assert!(bar.contains("/s") && bar.contains("eta"), "{bar}");
    }
    assert!(screen.contains("Push complete") && screen.contains("Pull complete"));

    // Piped, the same commands print no terminal codes.
    let o = pull(&data, &reg.addr, "bars:1", "piped", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = stdout(&o) + &stderr(&o);
    assert!(!all.contains('\x1b') && !all.contains('\r'), "{all:?}");
}

#[test]
fn a_registry_wanting_credentials_refuses_clearly_until_cabin_login() {
    let t = tempfile::tempdir().unwrap();
    let regdir = t.path().join("reg");
    let auth = htpasswd_auth(&regdir, "tester", "s3cret");
    let reg = start_registry(&regdir, |_| auth);
    let data = t.path().join("data");
    let src = make_vm(&data, "src", 32 << 20);
    write_at(&src.join("disk.img"), 0, &pattern(9, 1 << 20));
    let args = [
        "push",
        "src",
        "private:1",
        "--registry",
        &reg.addr,
        "--organization",
        ORG,
    ];
    let o = vm_in(&data, &args);
    expect_error(&o, 1, "wants credentials with push rights: cabin login");
    assert!(
        !stderr(&o).contains("resume"),
        "nothing to resume: {}",
        stderr(&o)
    );
    assert!(!src.join(".lume_oci_push_cache").exists());
    let o = pull(&data, &reg.addr, "private:1", "copy", &[]);
    expect_error(&o, 1, "wants credentials");
    assert!(
        hidden(&vms_dir(&data)).is_empty(),
        "{:?}",
        hidden(&vms_dir(&data))
    );

    let o = login(&data, &reg.addr, "tester", "s3cret");
    assert!(o.status.success(), "{}", stderr(&o));
    vm_ok(&data, &args);
    pulls_back_whole(&data, &reg, "private:1", "copy", &src);
}

#[test]
fn a_registry_dying_mid_push_is_a_clear_error_and_the_push_resumes_once_it_is_back() {
    let (_t, mut reg, data) = fresh();
    let src = many_chunk_vm(&data, "src");
    let mut cmd = cabin_in(&data);
    cmd.arg("vm")
        .args(one_by_one_push_args("src", "dying:v1", &reg.addr))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = spawn_for_test_process(cmd).unwrap();
    wait_for("some uploads", std::time::Duration::from_secs(60), || {
        reg.answered("PUT", "/blobs/uploads/") >= 12
    });
    reg.kill();
    let o = child.wait_with_output().unwrap();
    expect_error(&o, 1, "(is the registry reachable?)");
    expect_error(&o, 1, "push again to resume");
    assert!(src.join(".lume_oci_push_cache/push-journal").is_file());

    reg.restart();
    let out = push(&data, &reg, "src", "dying:v1", &["--chunk-size-mb", "1"]);
    let line = out.lines().find(|l| l.contains("Push complete")).unwrap();
    let resumed: usize = field(line, "resumed").parse().unwrap();
    assert!(resumed >= 8, "{line}");
    pulls_back_whole(&data, &reg, "dying:v1", "back", &src);
}

#[test]
fn a_dry_run_push_describes_the_image_without_contacting_any_registry() {
    let (_t, reg, data) = fresh();
    let src = many_chunk_vm(&data, "src");
    let dry = vm_ok(
        &data,
        &[
            "push",
            "src",
            "dry:v1",
            "--registry",
            "127.0.0.1:1",
            "--organization",
            ORG,
            "--chunk-size-mb",
            "1",
            "--dry-run",
        ],
    );
    assert!(
        dry.contains("Dry run complete") && dry.contains("chunks=64"),
        "{dry}"
    );
    let json_end = dry.rfind("\n[").unwrap();
    let planned: Value = serde_json::from_str(&dry[..json_end]).unwrap();
    assert!(!src.join(".lume_oci_push_cache").exists());
    // The real push lists exactly the layers the dry run described.
    push(&data, &reg, "src", "dry:v1", &["--chunk-size-mb", "1"]);
    assert_eq!(skopeo_raw(&reg, "dry:v1")["layers"], planned["layers"]);
}

/// Types `command` on the VM's serial console (its socket) and reads until a whole
/// line that is `marker` followed by digits (not the echo of what was typed); that
/// line.
fn serial_answer(socket: &Path, command: &str, marker: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let start = std::time::Instant::now();
    let mut seen = String::new();
    s.write_all(format!("\n{command}\n").as_bytes()).unwrap();
    loop {
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        // Whole lines only: the last one may still be arriving.
        let complete = &seen[..seen.rfind('\n').unwrap_or(0)];
        let answer = complete.lines().find(|l| {
            l.trim()
                .strip_prefix(marker)
                .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
        });
        if let Some(line) = answer {
            return line.trim().to_string();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "no {marker} on the serial console: {seen}"
        );
    }
}

#[test]
fn a_vm_made_from_an_image_boots_on_its_own_once_pushed_and_pulled_and_grows_its_root() {
    let w = tempfile::tempdir().unwrap();
    let data = w.path().join("data");
    let reg = start_registry(&w.path().join("registry"), |_| String::new());
    let root = common::web::bootable_busybox(&w.path().join("rootfs"));
    let o = cabin_in(&data)
        .args(["image", "import", root.to_str().unwrap(), "local/bbvm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    vm_ok(
        &data,
        &[
            "create",
            "maker",
            "--image",
            "local/bbvm",
            "--disk-size",
            "10GB",
            "--memory",
            "256MB",
            "--cpu",
            "1",
        ],
    );
    push(&data, &reg, "maker", "standalone:1", &[]);
    let o = pull(&data, &reg.addr, "standalone:1", "copy", &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let dir = vms_dir(&data).join("copy");
    // Neither cabin's boot record nor the kernel beside the disk travelled: the disk
    // alone boots (UEFI, its own boot loader and kernel).
    assert!(!dir.join("cabin-boot.json").exists());
    assert!(!dir.join("vmlinuz").exists());
    vm_ok(&data, &["set", "copy", "--disk-size", "11GB"]);
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = vm_in(self.0, &["stop", "copy"]);
        }
    }
    let _stop = Stop(&data);
    vm_ok(&data, &["run", "copy", "--detach"]);
    wait_for(
        "the copy to boot its image's init",
        std::time::Duration::from_secs(180),
        || stdout(&vm_in(&data, &["logs", "copy"])).contains("console-test-vm ready"),
    );
    let log = stdout(&vm_in(&data, &["logs", "copy"]));
    assert!(
        log.contains("root=/dev/vda2"),
        "its own command line: {log}"
    );
    let details = || -> Value {
        let v: Value = serde_json::from_str(&vm_ok(&data, &["get", "copy", "-f", "json"])).unwrap();
        if v.is_array() {
            v[0].clone()
        } else {
            v
        }
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // On cabin's bridge its DHCP request is answered, and the address reported.
        wait_for(
            "the copy's address",
            std::time::Duration::from_secs(60),
            || details()["ipAddress"].is_string(),
        );
        let ip = details()["ipAddress"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.89."), "{ip}");
    }
    // The root partition grew with the disk (11 GB, less the ESP and the tables).
    let session: Value =
        serde_json::from_slice(&std::fs::read(dir.join("sessions.json")).unwrap()).unwrap();
    let socket = PathBuf::from(session["serialSocket"].as_str().unwrap());
    let line = serial_answer(
        &socket,
        "echo vda2=$(awk '$4==\"vda2\"{print $3}' /proc/partitions)",
        "vda2=",
    );
    let kib: u64 = line
        .trim_start_matches("vda2=")
        .parse()
        .unwrap_or_else(|_| panic!("{line}"));
    assert_eq!(kib, ((11u64 << 30) / 512 - 33 - 133_120) / 2, "{line}");
}
