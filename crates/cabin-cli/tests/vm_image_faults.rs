//! Bad VM images and failing registries (`cabin vm pull`), against Debian's
//! docker-registry on 127.0.0.1: images are assembled here, blob by blob, from the
//! format's description (../shared/reference/lume.md §4), not by cabin's own encoder;
//! registry faults come from a proxy that misbehaves on purpose
//! (common/fault_proxy.rs). Each failure must be a clear error that leaves no VM
//! behind, and a staging directory only where a pull run again resumes from it.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use common::fault_proxy::{Action, FaultProxy, Rule, BLOBS, UPLOADS};
use common::vm_disks::*;
use common::vm_transfer::*;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------
// Building images by hand and putting them into the registry over plain HTTP.

fn digest_of(b: &[u8]) -> String {
    let h = Sha256::digest(b);
    format!(
        "sha256:{}",
        h.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn curl(args: &[&str], body: Option<&[u8]>) -> Output {
    let mut c = Command::new("curl");
    c.args(["-sS", "--fail-with-body"]).args(args);
    let mut file = None;
    if let Some(b) = body {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b).unwrap();
        c.arg("--data-binary")
            .arg(format!("@{}", f.path().display()));
        file = Some(f);
    }
    let o = c.output().expect("curl is installed");
    drop(file);
    assert!(
        o.status.success(),
        "curl {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    o
}

/// Uploads `bytes` as a blob of `repo` (monolithic: POST, then PUT with the digest).
fn put_blob(addr: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = digest_of(bytes);
    let o = curl(
        &[
            "-i",
            "-X",
            "POST",
            "-H",
            "Content-Length: 0",
            &format!("http://{addr}/v2/{repo}/blobs/uploads/"),
        ],
        None,
    );
    let head = stdout(&o);
    let location = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("location")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Location in {head}"));
    let location = if location.starts_with('/') {
        format!("http://{addr}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{location}{sep}digest={digest}"),
        ],
        Some(bytes),
    );
    digest
}

/// A blob with its media type and descriptor annotations.
#[derive(Clone)]
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
    annotations: Value,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            bytes,
            annotations: json!({}),
        }
    }

    fn digest(&self) -> String {
        digest_of(&self.bytes)
    }

    fn descriptor(&self) -> Value {
        let mut d = json!({
            "mediaType": self.media_type,
            "digest": self.digest(),
            "size": self.bytes.len(),
        });
        if self.annotations.as_object().is_some_and(|a| !a.is_empty()) {
            d["annotations"] = self.annotations.clone();
        }
        d
    }
}

/// Uploads the blobs, then the manifest naming them as `cabin/NAME:TAG`; the manifest.
fn publish(addr: &str, image: &str, config: &Blob, layers: &[Blob], annotations: Value) -> Value {
    let (name, tag) = image.split_once(':').unwrap();
    let repo = format!("{ORG}/{name}");
    put_blob(addr, &repo, &config.bytes);
    for l in layers {
        put_blob(addr, &repo, &l.bytes);
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        "annotations": annotations,
    });
    curl(
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{addr}/v2/{repo}/manifests/{tag}"),
        ],
        Some(&serde_json::to_vec(&manifest).unwrap()),
    );
    manifest
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

/// Apple's LZ4 stream (lume.md §4 B), block by block: `stored[i]` says whether block
/// `i` is written as it is (`bv4-`) rather than compressed (`bv41`).
fn apple_lz4(raw: &[u8], block: usize, stored: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, b) in raw.chunks(block).enumerate() {
        if stored(i) {
            out.extend_from_slice(b"bv4-");
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        } else {
            let c = lz4_flex::block::compress(b);
            out.extend_from_slice(b"bv41");
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
    }
    out.extend_from_slice(b"bv4$");
    out
}

const OCI_CONFIG: &str = "application/vnd.trycua.lume.config.v1+json";
const OCI_NVRAM: &str = "application/vnd.trycua.lume.nvram.v1";
const OCI_DISK: &str = "application/vnd.trycua.lume.disk.v1";

fn oci_config() -> Blob {
    let mut b = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec_pretty(&json!({
            "mediatype": OCI_CONFIG,
            "os": "linux",
            "storage": [
                {"file": "nvram.bin", "mediatype": OCI_NVRAM},
                {"file": "disk.img", "mediatype": OCI_DISK},
            ],
        }))
        .unwrap(),
    );
    b.annotations = json!({"org.opencontainers.image.title": "config.json"});
    b
}

fn oci_nvram() -> Blob {
    let mut b = Blob::new(OCI_NVRAM, pattern(77, 64 << 10));
    b.annotations = json!({"org.opencontainers.image.title": "nvram.bin"});
    b
}

/// The disk's parts as OCI layers: part `i` is `raw[i]`, gzipped, at the sum of the
/// sizes before it.
fn oci_parts(raw: &[Vec<u8>]) -> Vec<Blob> {
    let mut offset = 0;
    raw.iter()
        .enumerate()
        .map(|(i, r)| {
            let mut b = Blob::new(OCI_DISK, gzip(r));
            b.annotations = json!({
                "org.opencontainers.image.title": format!("disk.img.part.{i}"),
                "org.trycua.lume.part.number": i.to_string(),
                "org.trycua.lume.part.total": raw.len().to_string(),
                "org.trycua.lume.part.offset": offset.to_string(),
                "org.trycua.lume.chunk.size": r.len().to_string(),
                "org.trycua.lume.content.uncompressed-size": r.len().to_string(),
                "org.trycua.lume.content.uncompressed-digest": digest_of(r),
            });
            offset += r.len();
            b
        })
        .collect()
}

fn oci_annotations(disk_size: usize) -> Value {
    json!({
        "org.trycua.lume.os": "linux",
        "org.trycua.lume.cpu-count": "2",
        "org.trycua.lume.memory-size": (2u64 << 30).to_string(),
        "org.trycua.lume.disk-size": disk_size.to_string(),
        "org.trycua.lume.total-uncompressed-size": disk_size.to_string(),
        "org.trycua.lume.display": "1024x768",
        "org.trycua.lume.network-mode": "nat",
        "org.trycua.lume.upload-time": "2026-01-01T00:00:00Z",
    })
}

/// Publishes an OCI-format image of `raw` parts, after `tweak` changes its layers.
fn oci_image(addr: &str, image: &str, raw: &[Vec<u8>], tweak: impl FnOnce(&mut Vec<Blob>)) {
    let mut layers = vec![oci_nvram()];
    layers.extend(oci_parts(raw));
    tweak(&mut layers);
    let size = raw.iter().map(Vec::len).sum();
    publish(addr, image, &oci_config(), &layers, oci_annotations(size));
}

/// `n` parts of 1 MiB with distinct data.
fn distinct_parts(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| pattern(200 + i, MIB)).collect()
}

// ---------------------------------------------------------------------------------
// Pulling, and what a failed pull leaves.

/// Asserts that no VM `name` exists in `location` or in `vm ls`, and that the only
/// staging directory left is `name`'s when `staging_kept`, none otherwise.
fn nothing_usable(data: &Path, location: &Path, name: &str, staging_kept: bool) {
    assert!(
        !location.join(name).exists(),
        "{} exists",
        location.join(name).display()
    );
    let ls = vm_ok(data, &["ls"]);
    assert!(!ls.contains(name), "vm ls lists {name}: {ls}");
    let left = hidden(location);
    if staging_kept {
        assert_eq!(left, vec![format!(".{name}.pulling")]);
        assert!(location
            .join(format!(".{name}.pulling/pull-journal"))
            .is_file());
    } else {
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

// ---------------------------------------------------------------------------------
// The tests.

#[test]
fn a_legacy_lz4_image_assembled_from_the_format_description_pulls_byte_for_byte() {
    let (_t, reg, data) = fresh();
    // Three chunks: data around an all-zero MiB run; all zeros; data in blocks stored
    // and compressed by turns. The declared disk is 2 MiB longer than the chunks.
    let mut a = pattern(11, 4 * MIB);
    a[MIB..3 * MIB].fill(0);
    let b = vec![0u8; 4 * MIB];
    let c = pattern(12, 2 * MIB);
    let disk_size = 12 * MIB;
    let chunks = [
        apple_lz4(&a, 64 << 10, |_| false),
        apple_lz4(&b, 64 << 10, |_| false),
        apple_lz4(&c, 64 << 10, |i| i % 2 == 1),
    ];
    assert!(chunks[2].windows(4).any(|w| w == b"bv4-"));
    assert!(chunks[1].len() < 64 << 10, "zeros compress");
    let raw = [&a, &b, &c];
    let config = json!({
        "os": "linux",
        "cpuCount": 2,
        "memorySize": 2u64 << 30,
        "diskSize": disk_size,
        "display": "1024x768",
        "macAddress": "02:11:22:33:44:55",
        "networkMode": "nat",
        "machineIdentifier": "AAECAwQFBgcICQoLDA0ODw==",
    });
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec_pretty(&config).unwrap(),
    );
    let nvram = Blob::new("application/octet-stream", pattern(13, 128 << 10));
    let mut layers = vec![config.clone(), nvram.clone()];
    for (bytes, r) in chunks.iter().zip(raw) {
        let mut l = Blob::new("application/octet-stream+lz4", bytes.clone());
        l.annotations = json!({
            "org.trycua.lume.uncompressed-size": r.len().to_string(),
            "org.trycua.lume.uncompressed-content-digest": digest_of(r),
        });
        layers.push(l);
    }
    publish(
        &reg.addr,
        "legacy:v1",
        &config,
        &layers,
        json!({
            "org.trycua.lume.upload-time": "2025-01-01T00:00:00Z",
            "org.trycua.lume.uncompressed-disk-size": disk_size.to_string(),
        }),
    );

    let line = pulled_ok(&pull(&data, &reg.addr, "legacy:v1", "old", &[]));
    assert_eq!(field(&line, "parts_written"), "3", "{line}");
    let vm = vms_dir(&data).join("old");
    let disk = std::fs::read(vm.join("disk.img")).unwrap();
    assert_eq!(disk.len(), disk_size);
    let mut want = Vec::new();
    for r in raw {
        want.extend_from_slice(r);
    }
    want.resize(disk_size, 0);
    assert!(disk == want, "the disk is the chunks concatenated");
    let alloc = allocated(&vm.join("disk.img"));
    assert!(
        alloc <= (4 * MIB + (256 << 10)) as u64,
        "holes kept: {alloc}"
    );
    assert_eq!(std::fs::read(vm.join("nvram.bin")).unwrap(), nvram.bytes);
    let c = vm_config(&vm);
    assert_eq!(c["os"], "linux");
    assert_eq!(c["cpuCount"], 2);
    assert_eq!(c["memorySize"], 2u64 << 30);
    assert_eq!(c["diskSize"], disk_size);
    assert_eq!(c["display"], "1024x768");
    assert_eq!(c["machineIdentifier"], "AAECAwQFBgcICQoLDA0ODw==");
    let mac = c["macAddress"].as_str().unwrap();
    assert_ne!(mac, "02:11:22:33:44:55", "a fresh MAC");
    assert!(
        mac.len() == 17
            && mac.split(':').count() == 6
            && mac
                .split(':')
                .all(|o| o.len() == 2 && u8::from_str_radix(o, 16).is_ok()),
        "{mac}"
    );
    assert!(vm_ok(&data, &["ls"]).contains("old"));
    assert!(hidden(&vms_dir(&data)).is_empty());

    // The same chunks with a bad block, or without the end marker, are refused.
    let mut bad = chunks[2].clone();
    bad.truncate(bad.len() - 4);
    let mut l = layers.clone();
    l[4].bytes = bad;
    publish(&reg.addr, "legacy:cut", &config, &l, json!({}));
    let o = pull(&data, &reg.addr, "legacy:cut", "cut", &[]);
    expect_error(
        &o,
        1,
        "is not a valid LZ4 stream: corrupt LZ4 stream: the stream ends without its end marker (bv4$)",
    );
    nothing_usable(&data, &vms_dir(&data), "cut", false);
}

#[test]
fn a_disk_blob_that_is_not_gzip_is_a_clear_error_naming_the_part() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(3);
    let mut bad = String::new();
    oci_image(&reg.addr, "notgzip:1", &raw, |layers| {
        layers[2].bytes = b"this is not a gzip stream at all".repeat(100);
        bad = layers[2].digest();
    });
    let o = pull(&data, &reg.addr, "notgzip:1", "badgz", &[]);
    expect_error(
        &o,
        1,
        &format!(
            "invalid VM image {}/{ORG}/notgzip:1: disk part 1 ({bad}) is not a valid gzip stream",
            reg.addr
        ),
    );
    nothing_usable(&data, &vms_dir(&data), "badgz", false);
}

#[test]
fn chunks_whose_declared_size_or_digest_is_wrong_are_refused() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(2);
    let last = MIB; // the last part's true size
                    // Declared larger than it decompresses to (the total follows, so the plan holds).
    let mut layers = vec![oci_nvram()];
    layers.extend(oci_parts(&raw));
    layers[2].annotations["org.trycua.lume.content.uncompressed-size"] =
        json!((last + 4096).to_string());
    layers[2].annotations["org.trycua.lume.chunk.size"] = json!((last + 4096).to_string());
    publish(
        &reg.addr,
        "sizes:big",
        &oci_config(),
        &layers,
        oci_annotations(2 * MIB + 4096),
    );
    let o = pull(&data, &reg.addr, "sizes:big", "big", &[]);
    expect_error(
        &o,
        1,
        &format!(
            "disk part 1 decompresses to {last} bytes, not the {} its manifest declares",
            last + 4096
        ),
    );
    nothing_usable(&data, &vms_dir(&data), "big", false);

    // Declared smaller.
    layers[2].annotations["org.trycua.lume.content.uncompressed-size"] =
        json!((last - 4096).to_string());
    layers[2].annotations["org.trycua.lume.chunk.size"] = json!((last - 4096).to_string());
    publish(
        &reg.addr,
        "sizes:small",
        &oci_config(),
        &layers,
        oci_annotations(2 * MIB - 4096),
    );
    let o = pull(&data, &reg.addr, "sizes:small", "small", &[]);
    expect_error(
        &o,
        1,
        &format!(
            "disk part 1 ({}) decompresses to more than the {} bytes its manifest declares",
            layers[2].digest(),
            last - 4096
        ),
    );
    nothing_usable(&data, &vms_dir(&data), "small", false);

    // The right size, another content digest.
    let mut layers = vec![oci_nvram()];
    layers.extend(oci_parts(&raw));
    let other = digest_of(b"something else");
    layers[1].annotations["org.trycua.lume.content.uncompressed-digest"] = json!(other);
    publish(
        &reg.addr,
        "digest:1",
        &oci_config(),
        &layers,
        oci_annotations(2 * MIB),
    );
    let o = pull(&data, &reg.addr, "digest:1", "dig", &[]);
    expect_error(
        &o,
        1,
        &format!(
            "disk part 0 decompresses to {}, not the {other} its manifest declares; nothing of it was kept",
            digest_of(&raw[0])
        ),
    );
    nothing_usable(&data, &vms_dir(&data), "dig", false);
}

#[test]
fn blobs_corrupted_in_transit_do_not_match_their_digest() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(3);
    let mut layers = vec![oci_nvram()];
    layers.extend(oci_parts(&raw));
    let config = oci_config();
    publish(
        &reg.addr,
        "corrupt:1",
        &config,
        &layers,
        oci_annotations(3 * MIB),
    );
    // A byte of a disk part flipped where gzip does not look (its header's time).
    let part = layers[2].digest();
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["GET"], &part, Action::Corrupt(5))],
    );
    let o = pull(&data, &proxy.addr, "corrupt:1", "flip", &[]);
    expect_error(
        &o,
        1,
        &format!("blob {part} does not match its digest (got sha256:"),
    );
    assert_eq!(proxy.count_action("corrupt"), 1, "{:?}", proxy.seen());
    nothing_usable(&data, &vms_dir(&data), "flip", false);

    // The config blob.
    let cd = config.digest();
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["GET"], &cd, Action::Corrupt(10))],
    );
    let o = pull(&data, &proxy.addr, "corrupt:1", "flipc", &[]);
    expect_error(
        &o,
        1,
        &format!("blob {cd} does not match its digest (got sha256:"),
    );
    nothing_usable(&data, &vms_dir(&data), "flipc", false);

    // In the middle of the deflate data: still the digest that is blamed.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["GET"], &part, Action::Corrupt(4000))],
    );
    let o = pull(&data, &proxy.addr, "corrupt:1", "flipm", &[]);
    expect_error(
        &o,
        1,
        &format!("blob {part} does not match its digest (got sha256:"),
    );
    nothing_usable(&data, &vms_dir(&data), "flipm", false);
}

#[test]
fn invalid_config_blobs_are_refused_with_the_reason() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(1);
    // OCI format: not JSON.
    let mut layers = vec![oci_nvram()];
    layers.extend(oci_parts(&raw));
    let mut config = oci_config();
    config.bytes = b"{\"os\": \"linux\", oops".to_vec();
    publish(
        &reg.addr,
        "conf:json",
        &config,
        &layers,
        oci_annotations(MIB),
    );
    let o = pull(&data, &reg.addr, "conf:json", "cj", &[]);
    expect_error(&o, 1, "the config blob is not JSON");
    nothing_usable(&data, &vms_dir(&data), "cj", false);
    // OCI format: no os anywhere.
    config.bytes = br#"{"mediatype": "application/vnd.trycua.lume.config.v1+json"}"#.to_vec();
    let mut annotations = oci_annotations(MIB);
    annotations
        .as_object_mut()
        .unwrap()
        .remove("org.trycua.lume.os");
    publish(&reg.addr, "conf:noos", &config, &layers, annotations);
    let o = pull(&data, &reg.addr, "conf:noos", "cn", &[]);
    expect_error(&o, 1, "the config blob names no os");
    nothing_usable(&data, &vms_dir(&data), "cn", false);

    // Legacy format: Lume's config.json without its CPU count.
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        br#"{"os": "linux", "memorySize": 2147483648, "diskSize": 1048576}"#.to_vec(),
    );
    let mut part = Blob::new(
        "application/octet-stream+lz4",
        apple_lz4(&raw[0], 64 << 10, |_| false),
    );
    part.annotations = json!({"org.trycua.lume.uncompressed-size": MIB.to_string()});
    publish(&reg.addr, "conf:legacy", &config, &[part], json!({}));
    let o = pull(&data, &reg.addr, "conf:legacy", "cl", &[]);
    expect_error(
        &o,
        1,
        "the config blob is not Lume's config.json (missing field `cpuCount`",
    );
    nothing_usable(&data, &vms_dir(&data), "cl", false);
}

#[test]
fn overlapping_gapped_or_oversized_chunk_layouts_are_refused_before_any_disk_download() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(3);
    let cases: [(&str, u64, usize, String); 3] = [
        // (tag, offset of part 2, declared size, message)
        (
            "overlap",
            (MIB + MIB / 2) as u64,
            3 * MIB,
            format!("disk parts overlap at offset {}", MIB + MIB / 2),
        ),
        (
            "gap",
            3 * MIB as u64,
            4 * MIB,
            format!(
                "the disk parts leave a gap from offset {} to {}",
                2 * MIB,
                3 * MIB
            ),
        ),
        (
            "oversized",
            2 * MIB as u64,
            2 * MIB,
            format!(
                "the disk parts end at {}, past the declared disk size {}",
                3 * MIB,
                2 * MIB
            ),
        ),
    ];
    for (tag, offset, declared, message) in cases {
        let mut layers = vec![oci_nvram()];
        layers.extend(oci_parts(&raw));
        layers[3].annotations["org.trycua.lume.part.offset"] = json!(offset.to_string());
        let disk: Vec<String> = layers[1..].iter().map(Blob::digest).collect();
        publish(
            &reg.addr,
            &format!("layout:{tag}"),
            &oci_config(),
            &layers,
            oci_annotations(declared),
        );
        let o = pull(&data, &reg.addr, &format!("layout:{tag}"), tag, &[]);
        expect_error(&o, 1, &message);
        nothing_usable(&data, &vms_dir(&data), tag, false);
        for d in &disk {
            assert_eq!(reg.answered("GET", d), 0, "{tag}: no disk blob fetched");
        }
    }
    // Legacy: chunks adding up to more than the declared disk.
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(
            &json!({"os": "linux", "cpuCount": 2, "memorySize": 2u64 << 30, "diskSize": MIB}),
        )
        .unwrap(),
    );
    let parts: Vec<Blob> = raw[..2]
        .iter()
        .map(|r| {
            let mut b = Blob::new(
                "application/octet-stream+lz4",
                apple_lz4(r, 64 << 10, |_| false),
            );
            b.annotations = json!({"org.trycua.lume.uncompressed-size": MIB.to_string()});
            b
        })
        .collect();
    publish(&reg.addr, "layout:legacy", &config, &parts, json!({}));
    let o = pull(&data, &reg.addr, "layout:legacy", "leg", &[]);
    expect_error(
        &o,
        1,
        &format!(
            "the disk parts add up to {} bytes, past the declared disk size {MIB}",
            2 * MIB
        ),
    );
    nothing_usable(&data, &vms_dir(&data), "leg", false);
    for p in &parts {
        assert_eq!(reg.answered("GET", &p.digest()), 0, "no disk blob fetched");
    }
}

#[test]
fn a_registry_failing_mid_pull_is_a_clear_error_and_a_second_pull_resumes() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(12);
    oci_image(&reg.addr, "mid:1", &raw, |_| {});
    // Config, NVRAM and 5 disk blobs pass; every later blob download is cut short.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["GET"], BLOBS, Action::Cut(1000)).after(7)],
    );
    let o = pull(&data, &proxy.addr, "mid:1", "mid", &["--parallel", "2"]);
    expect_error(
        &o,
        1,
        &format!(
            "registry error for {}/{ORG}/mid:1: fetching disk part ",
            proxy.addr
        ),
    );
    expect_error(&o, 1, " failed: the download broke off after 1000 of ");
    expect_error(&o, 1, "pull again to resume (what was fetched is kept in ");
    expect_error(&o, 1, "/vms/.mid.pulling and the same pull resumes from it");
    assert!(proxy.count_action("cut") > 1, "retried: {:?}", proxy.seen());
    nothing_usable(&data, &vms_dir(&data), "mid", true);

    let line = pulled_ok(&pull(&data, &reg.addr, "mid:1", "mid", &[]));
    assert_eq!(field(&line, "parts_resumed"), "5", "{line}");
    assert_eq!(field(&line, "parts_written"), "7", "{line}");
    let disk = std::fs::read(vms_dir(&data).join("mid/disk.img")).unwrap();
    assert!(disk == raw.concat(), "the disk is whole");
    assert!(hidden(&vms_dir(&data)).is_empty());
    assert!(vm_ok(&data, &["ls"]).contains("mid"));
}

#[test]
fn a_full_storage_location_is_a_clear_error_and_the_pull_resumes_once_there_is_room() {
    let (t, reg, data) = fresh();
    let loc = t.path().join("small");
    let Some(_unmount) = small_tmpfs(&loc, "4m") else {
        return;
    };
    // A named location, so that `vm ls` looks there too.
    let o = cabin_in(&data)
        .args(["config", "storage", "add", "small"])
        .arg(&loc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let raw = distinct_parts(12);
    oci_image(&reg.addr, "full:1", &raw, |_| {});
    // One part at a time, so that the parts before the one that finds the disk full
    // are finished and journaled whatever the machine's load.
    let o = pull(
        &data,
        &reg.addr,
        "full:1",
        "full",
        &["--storage", "small", "--parallel", "1"],
    );
    expect_error(&o, 1, "writing disk part ");
    expect_error(&o, 1, "No space left on device");
    expect_error(
        &o,
        1,
        "the disk is full: free some space there or use another storage location (--storage), then run it again (it resumes where it stopped)",
    );
    expect_error(
        &o,
        1,
        "the same pull resumes from it; delete that directory to free its space",
    );
    nothing_usable(&data, &loc, "full", true);

    // Room made: the same command resumes and completes.
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&loc)
        .status()
        .unwrap();
    assert!(st.success());
    let line = pulled_ok(&pull(
        &data,
        &reg.addr,
        "full:1",
        "full",
        &["--storage", "small"],
    ));
    let resumed: usize = field(&line, "parts_resumed").parse().unwrap();
    assert!(resumed >= 1, "{line}");
    let disk = std::fs::read(loc.join("full/disk.img")).unwrap();
    assert!(disk == raw.concat(), "the disk is whole");
    assert!(hidden(&loc).is_empty());
    assert!(vm_ok(&data, &["ls"]).contains("full"), "listed once whole");
}

#[test]
fn a_pull_stalled_by_the_registry_and_killed_resumes_from_its_hidden_staging_dir() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(8);
    oci_image(&reg.addr, "stall:1", &raw, |_| {});
    // Config, NVRAM and 3 disk blobs pass; the next download sends 100 bytes and
    // then nothing, holding its connection open.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["GET"], BLOBS, Action::StallAfter(100)).after(5)],
    );
    let mut cmd = cabin_in(&data);
    cmd.args([
        "vm",
        "pull",
        "stall:1",
        "stalled",
        "--registry",
        &proxy.addr,
    ])
    .args(["--organization", ORG, "--parallel", "1"])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let mut child = spawn_for_test_process(cmd).unwrap();
    wait_for(
        "the stalled download",
        std::time::Duration::from_secs(60),
        || proxy.count_action("stall") == 1,
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "cabin waits on the stall"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(proxy.count("GET", BLOBS), 6, "{:?}", proxy.seen());
    nothing_usable(&data, &vms_dir(&data), "stalled", true);

    let line = pulled_ok(&pull(&data, &reg.addr, "stall:1", "stalled", &[]));
    assert_eq!(field(&line, "parts_resumed"), "3", "{line}");
    assert_eq!(field(&line, "parts_written"), "5", "{line}");
    let disk = std::fs::read(vms_dir(&data).join("stalled/disk.img")).unwrap();
    assert!(disk == raw.concat(), "the disk is whole");
    assert!(hidden(&vms_dir(&data)).is_empty());
}

#[test]
fn blob_uploads_failing_for_good_midway_stop_a_push_that_resumes_later() {
    let (_t, reg, data) = fresh();
    let src = make_vm(&data, "src", 16 << 20);
    for i in 0..16u64 {
        if i % 4 != 3 {
            write_at(&src.join("disk.img"), i << 20, &pattern(300 + i, MIB));
        }
    }
    // Every upload request (start, chunks, final PUT) after the first 12 is refused.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Rule::on(&["POST", "PATCH", "PUT"], UPLOADS, Action::status(500)).after(12)],
    );
    let o = vm_in(&data, &one_by_one_push_args("src", "up:1", &proxy.addr));
    expect_error(
        &o,
        1,
        "(the registry failed with HTTP 500; try again later)",
    );
    expect_error(&o, 1, "push again to resume");
    assert!(proxy.count_action("500") > 1, "retried: {:?}", proxy.seen());
    assert!(
        reg.answered("PUT", UPLOADS) >= 1,
        "the uploads before the fault reached the registry"
    );
    assert!(src.join(".lume_oci_push_cache/push-journal").is_file());

    let out = vm_ok(
        &data,
        &[
            "push",
            "src",
            "up:1",
            "--registry",
            &reg.addr,
            "--organization",
            ORG,
            "--chunk-size-mb",
            "1",
        ],
    );
    let line = out.lines().find(|l| l.contains("Push complete")).unwrap();
    let resumed: usize = field(line, "resumed").parse().unwrap();
    assert!(resumed >= 1, "{line}");
    let line = pulled_ok(&pull(&data, &reg.addr, "up:1", "back", &[]));
    assert_eq!(field(&line, "parts_resumed"), "0", "{line}");
    assert_eq!(
        sha256(&vms_dir(&data).join("back/disk.img")),
        sha256(&src.join("disk.img"))
    );
}

#[test]
fn a_full_disk_during_vm_pull_is_clear_and_the_same_pull_resumes_once_there_is_room() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let (t, reg, _) = fresh();
    let raw = distinct_parts(12);
    oci_image(&reg.addr, "roomy:1", &raw, |_| {});
    // The data directory on a 6 MiB tmpfs: the 12 MiB disk cannot fit.
    let data = t.path().join("small");
    let disk = SmallDisk::mount(&data, "6m");

    let o = pull(&data, &reg.addr, "roomy:1", "roomy", &["--parallel", "1"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for want in [
        "No space left on device",
        "the disk is full",
        "run it again (it resumes where it stopped)",
    ] {
        assert!(err.contains(want), "wanted {want:?} in {err}");
    }
    nothing_usable(&data, &vms_dir(&data), "roomy", true);
    let check = cabin_in(&data).args(["system", "check"]).output().unwrap();
    assert!(check.status.success(), "{}", stdout(&check));

    // Room made: the same pull resumes what it had written and finishes.
    disk.grow("64m");
    let line = pulled_ok(&pull(&data, &reg.addr, "roomy:1", "roomy", &[]));
    assert_ne!(field(&line, "parts_resumed"), "0", "{line}");
    let disk = std::fs::read(vms_dir(&data).join("roomy/disk.img")).unwrap();
    assert_eq!(disk, raw.concat());
    let check = cabin_in(&data).args(["system", "check"]).output().unwrap();
    assert!(check.status.success(), "{}", stdout(&check));
}

#[test]
fn saved_memory_that_is_malformed_corrupt_or_oversized_is_left_out_and_the_vm_pulls_whole() {
    let (_t, reg, data) = fresh();
    let raw = distinct_parts(2);
    let description = || Blob::new("application/vnd.cabin.vm.suspended.v1+json", b"{}".to_vec());
    // One gzip part of a state, at offset 0, with what its annotations claim.
    let state = |bytes: &[u8], claimed_size: u64, claimed_digest: String| {
        let mut b = Blob::new("application/vnd.cabin.vm.state.v1+gzip", gzip(bytes));
        b.annotations = json!({
            "org.cabin.part.offset": "0",
            "org.cabin.content.uncompressed-size": claimed_size.to_string(),
            "org.cabin.content.uncompressed-digest": claimed_digest,
            "org.cabin.content.total-size": claimed_size.to_string(),
        });
        b
    };
    let bytes = b"a guest's memory".to_vec();
    let cases: [(&str, Vec<Blob>, &str); 3] = [
        (
            "twice",
            vec![description(), description()],
            "more than one suspended.json layer",
        ),
        (
            "corrupt",
            vec![
                description(),
                state(&bytes, bytes.len() as u64, digest_of(b"other bytes")),
            ],
            "suspended.state",
        ),
        // 4 GiB claimed for the 2 GiB VM: refused before anything of it is fetched.
        (
            "huge",
            vec![
                description(),
                state(b"more memory", 4 << 30, digest_of(&bytes)),
            ],
            "larger than a VM of 2048 MiB has",
        ),
    ];
    for (name, extra, why) in cases {
        let mut digests = Vec::new();
        oci_image(&reg.addr, &format!("memory:{name}"), &raw, |layers| {
            digests = extra.iter().map(Blob::digest).collect();
            layers.extend(extra);
        });
        let o = pull(&data, &reg.addr, &format!("memory:{name}"), name, &[]);
        pulled_ok(&o);
        let err = stderr(&o);
        assert!(
            err.contains("The image's saved memory was left out (") && err.contains(why),
            "{name}: {err}"
        );
        // The VM Lume's layers make, whole, and nothing of the memory kept.
        let vm = vms_dir(&data).join(name);
        assert!(std::fs::read(vm.join("disk.img")).unwrap() == raw.concat());
        assert!(!vm.join("attachments").exists() && !vm.join("suspended.state").exists());
        assert!(vm_ok(&data, &["ls"]).contains(name));
        if name == "huge" {
            assert_eq!(reg.answered("GET", &digests[1]), 0, "the state was fetched");
        }
    }
}
