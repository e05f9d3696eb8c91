//! Pulling from a real registry (Debian's docker-registry on 127.0.0.1) that an
//! independent client (skopeo) filled.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::fault_proxy::{Action, FaultProxy, Rule, MANIFESTS};
use common::*;
use serde_json::{json, Value};

/// One registry per test binary, dying with the test process.
fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| start(None))
}

/// A second one that wants a username and password (htpasswd, bcrypt).
fn auth_registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| start(Some(("tester", "s3cret"))))
}

fn start(user: Option<(&str, &str)>) -> Registry {
    let dir = std::env::temp_dir().join(format!(
        "cabin-test-registry-{}-{}",
        std::process::id(),
        user.is_some()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    remove_at_exit(dir.clone());
    let auth = match user {
        None => String::new(),
        Some((u, p)) => htpasswd_auth(&dir, u, p),
    };
    start_registry(&dir, |_| auth)
}

fn image_cmd(data: &Path, args: &[&str]) -> std::process::Output {
    cabin_in(data).arg("image").args(args).output().unwrap()
}

fn blob(data: &Path, digest: &str) -> PathBuf {
    data.join("images/blobs/sha256")
        .join(&digest["sha256:".len()..])
}

/// Imports the busybox root filesystem into `data` and writes it as an OCI layout that
/// skopeo can read. With `multi`, the layout's entry is an image index with an arm64
/// decoy next to the real linux/amd64 image. Returns (layout dir, manifest digest).
fn busybox_layout(data: &Path, tag: &str, multi: bool) -> (PathBuf, String) {
    // Each test's layer is its own (tests share the registry, and one corrupts a blob).
    let rootfs = busybox_copy(&data.join(format!("rootfs-{tag}")));
    std::fs::write(rootfs.join("etc/test-tag"), tag).unwrap();
    let o = image_cmd(data, &["import", rootfs.to_str().unwrap(), "local/bb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = stdout(&o).trim().to_string();
    let layout = data.join(format!("layout-{tag}"));
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(data, &digest)).unwrap()).unwrap();
    let mut digests = vec![
        digest.clone(),
        manifest["config"]["digest"].as_str().unwrap().to_string(),
    ];
    digests.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    for d in &digests {
        std::fs::copy(blob(data, d), blobs.join(&d[7..])).unwrap();
    }
    let size = std::fs::metadata(blob(data, &digest)).unwrap().len();
    let mut entry = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size});
    if multi {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                 "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let idx_digest = format!("sha256:{}", sha256_hex(&bytes));
        std::fs::write(blobs.join(&idx_digest[7..]), &bytes).unwrap();
        entry = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx_digest, "size": bytes.len()});
    }
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
    )
    .unwrap();
    // The local copy goes, so what runs later must come from the registry.
    assert!(image_cmd(data, &["rm", "local/bb"]).status.success());
    (layout, digest)
}

/// The digest of the first layer of the manifest `digest` in an OCI layout.
fn first_layer(layout: &Path, digest: &str) -> String {
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap(),
    )
    .unwrap();
    manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()[..64].to_string()
}

/// The busybox image (with a layer of its own) put into `reg` by skopeo as
/// cabin/TAG:1. Returns the layout it came from and its manifest digest.
fn published(reg: &Registry, data: &Path, tag: &str) -> (PathBuf, String) {
    let (layout, digest) = busybox_layout(data, tag, false);
    skopeo_copy(&layout, tag, &format!("{}/cabin/{tag}:1", reg.addr), &[]);
    (layout, digest)
}

fn skopeo_copy(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo is installed (apt-get install skopeo)");
    assert!(o.status.success(), "skopeo copy: {}", stderr(&o));
}

#[test]
fn an_image_skopeo_pushed_pulls_and_runs_in_oci_and_docker_formats() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (layout, _) = busybox_layout(d, "v1", false);
    for (tag, extra) in [("oci", vec![]), ("v2s2", vec!["--format", "v2s2"])] {
        let reference = format!("{}/cabin/busybox:{tag}", reg.addr);
        skopeo_copy(&layout, "v1", &reference, &extra);
        let o = image_cmd(d, &["pull", &reference]);
        assert!(o.status.success(), "pull {tag}: {}", stderr(&o));
        let o = cabin_in(d)
            .args(["run", &reference, "echo", "pulled", tag])
            .output()
            .unwrap();
        assert_eq!(stdout(&o), format!("pulled {tag}\n"), "{}", stderr(&o));
    }
    // skopeo's view of the registry agrees with what cabin stored.
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/cabin/busybox:oci", reg.addr))
        .output()
        .unwrap();
    let raw_digest = format!("sha256:{}", sha256_hex(&o.stdout));
    let o = image_cmd(d, &["ls", "--format", "json"]);
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ours = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"].as_str().unwrap().ends_with(":oci"))
        .unwrap();
    assert_eq!(ours["digest"], raw_digest.as_str());
}

#[test]
fn run_pulls_a_missing_image_and_an_index_resolves_to_linux_amd64() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (layout, manifest_digest) = busybox_layout(d, "multi", true);
    let reference = format!("{}/cabin/multi:1", reg.addr);
    skopeo_copy(&layout, "multi", &reference, &["--all"]);
    let o = cabin_in(d)
        .args(["run", &reference, "echo", "auto-pulled"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "auto-pulled\n", "{}", stderr(&o));
    assert!(stderr(&o).contains("pulling it"), "{}", stderr(&o));
    let o = image_cmd(d, &["inspect", &reference]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["digest"],
        manifest_digest.as_str(),
        "the amd64 manifest was chosen"
    );
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (layout, digest) = published(reg, d, "resume");
    let reference = format!("{}/cabin/resume:1", reg.addr);
    let layer = first_layer(&layout, &digest);
    let full = std::fs::read(layout.join("blobs/sha256").join(&layer[7..])).unwrap();
    // What an interrupted pull leaves: the first half of the layer.
    let half = full.len() / 2;
    std::fs::create_dir_all(d.join("images/ingest")).unwrap();
    std::fs::write(
        d.join("images/ingest")
            .join(format!("partial-{}", &layer[7..])),
        &full[..half],
    )
    .unwrap();
    let o = image_cmd(d, &["pull", &reference]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(blob(d, &layer)).unwrap(),
        full,
        "the blob is whole"
    );
    let log = std::fs::read_to_string(&reg.log).unwrap();
    let line = log
        .lines()
        .rev()
        .find(|l| {
            l.contains(&format!("/v2/cabin/resume/blobs/{layer}"))
                && l.contains("response completed")
                && l.contains("GET")
        })
        .unwrap_or_else(|| panic!("no blob GET in the registry log:\n{log}"));
    assert!(line.contains("http.response.status=206"), "{line}");
    assert!(
        line.contains(&format!("http.response.written={}", full.len() - half)),
        "only the missing half was sent: {line}"
    );
}

#[test]
fn registry_faults_are_clear_and_store_nothing() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image_cmd(d, &["pull", &format!("{}/cabin/nothing:here", reg.addr)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no such image or tag"),
        "{}",
        stderr(&o)
    );

    // A blob corrupted in the registry's storage is refused.
    let (layout, digest) = published(reg, d, "corrupt");
    let reference = format!("{}/cabin/corrupt:1", reg.addr);
    let layer = first_layer(&layout, &digest);
    let stored = reg
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..])
        .join("data");
    let mut bytes = std::fs::read(&stored).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let o = image_cmd(d, &["pull", &reference]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&layer) && stderr(&o).contains("does not match"),
        "{}",
        stderr(&o)
    );
    assert!(
        !blob(d, &layer).exists(),
        "the corrupt blob never entered the store"
    );
    let o = image_cmd(d, &["ls", "-q"]);
    assert_eq!(stdout(&o), "", "no image was named");
}

#[test]
fn a_pushed_image_reads_back_with_skopeo_and_a_second_push_uploads_nothing() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let rootfs = busybox_copy(&d.join("rootfs"));
    std::fs::write(rootfs.join("etc/pushed"), "yes").unwrap();
    let o = image_cmd(d, &["import", rootfs.to_str().unwrap(), "mine:1"]);
    let digest = stdout(&o).trim().to_string();
    let dest = format!("{}/cabin/pushed:1", reg.addr);
    let o = image_cmd(d, &["push", "mine:1", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), digest);
    assert!(
        stderr(&o).contains("2 blobs uploaded, 0 already there"),
        "{}",
        stderr(&o)
    );

    // skopeo reads the same manifest and copies every blob out, verifying digests.
    let o = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .output()
        .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&o.stdout)), digest);
    let out = d.join("copied");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{dest}"))
        .arg(format!("oci:{}:x", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let o = image_cmd(d, &["push", "mine:1", &dest]);
    assert!(
        stderr(&o).contains("0 blobs uploaded, 2 already there"),
        "{}",
        stderr(&o)
    );

    // Pulled elsewhere, it runs.
    let other = tempfile::tempdir().unwrap();
    let o = cabin_in(other.path())
        .args(["run", &dest, "cat", "/etc/pushed"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "yes", "{}", stderr(&o));
}

#[test]
fn login_saves_checked_credentials_that_pull_and_push_use() {
    let reg = auth_registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let o = image_cmd(
        d,
        &["import", busybox_rootfs().to_str().unwrap(), "private:1"],
    );
    assert!(o.status.success());
    let dest = format!("{}/cabin/private:1", reg.addr);

    let o = image_cmd(d, &["push", "private:1", &dest]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wants credentials"), "{}", stderr(&o));

    let login = |password: &str| login(d, &reg.addr, "tester", password);
    let o = login("wrong");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("refused these credentials"),
        "{}",
        stderr(&o)
    );
    assert!(
        !d.join("credentials.json").exists(),
        "nothing saved for a failed login"
    );

    let o = login("s3cret");
    assert_eq!(stdout(&o).trim(), "Login Succeeded", "{}", stderr(&o));
    let mode = std::fs::metadata(d.join("credentials.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let o = image_cmd(d, &["push", "private:1", &dest]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(image_cmd(d, &["rm", "private:1"]).status.success());
    let o = cabin_in(d)
        .args(["run", &dest, "echo", "private"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "private\n", "{}", stderr(&o));

    let o = cabin_in(d).args(["logout", &reg.addr]).output().unwrap();
    assert!(o.status.success());
    assert!(image_cmd(d, &["rm", &dest]).status.success());
    let o = image_cmd(d, &["pull", &dest]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "after logout the pull is refused again"
    );
}

/// A proxy in front of the registry that misbehaves on purpose (common/fault_proxy.rs):
/// the first manifest request gets a 503, and the first GET of `cut_blob` is cut off
/// after half its body.
fn fault_proxy(upstream: &str, cut_blob: &str) -> FaultProxy {
    FaultProxy::start(
        upstream,
        vec![
            Rule::on(&[], MANIFESTS, Action::status(503)).times(1),
            Rule::on(&["GET"], cut_blob, Action::CutHalf).times(1),
        ],
    )
}

/// A proxy answering every manifest request itself: "429"/"403" with that status,
/// "garbage" with a body that is not JSON (and no digest header to give it away).
fn misbehaving_proxy(upstream: &str, mode: &str) -> FaultProxy {
    let action = match mode {
        "garbage" => Action::Reply {
            status: 200,
            headers: vec![(
                "Content-Type".into(),
                "application/vnd.oci.image.manifest.v1+json".into(),
            )],
            body: b"{not json".to_vec(),
        },
        status => Action::status(status.parse().unwrap()),
    };
    FaultProxy::start(upstream, vec![Rule::on(&[], MANIFESTS, action)])
}

#[test]
fn a_503_and_a_connection_cut_mid_blob_are_retried_and_resumed() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (layout, digest) = published(reg, d, "faulty");
    let layer = first_layer(&layout, &digest);
    let proxy = fault_proxy(&reg.addr, &layer);
    let o = image_cmd(d, &["pull", &format!("{}/cabin/faulty:1", proxy.addr)]);
    assert!(
        o.status.success(),
        "{}\nproxy saw: {:?}",
        stderr(&o),
        proxy.seen()
    );
    let seen = proxy.seen();
    let refused = seen
        .iter()
        .position(|e| e.action == "503")
        .expect("a 503 was served");
    assert!(
        seen[refused + 1..]
            .iter()
            .any(|e| e.path.contains("/manifests/1") && e.action == "pass"),
        "the manifest was asked for again after the 503: {seen:?}"
    );
    assert_eq!(proxy.count_action("cut"), 1, "{seen:?}");
    let gets: Vec<_> = seen
        .iter()
        .filter(|e| e.method == "GET" && e.path.contains(&layer))
        .collect();
    assert!(
        gets.len() >= 2,
        "the cut blob was asked for again: {seen:?}"
    );
    assert!(
        gets.last().unwrap().range,
        "and resumed with a Range request: {seen:?}"
    );
    let full = std::fs::read(layout.join("blobs/sha256").join(&layer[7..])).unwrap();
    assert_eq!(std::fs::read(blob(d, &layer)).unwrap(), full);
}

#[test]
fn a_full_disk_during_pull_is_clear_and_a_retry_after_making_room_succeeds() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let reg = registry();
    let work = tempfile::tempdir().unwrap();
    // An image with 24 MB that does not compress.
    let rootfs = busybox_copy(&work.path().join("rootfs"));
    let mut noise = vec![0u8; 24 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(rootfs.join("noise"), &noise).unwrap();
    let builder = work.path().join("builder");
    let o = image_cmd(&builder, &["import", rootfs.to_str().unwrap(), "big:1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = format!("{}/cabin/big:1", reg.addr);
    assert!(image_cmd(&builder, &["push", "big:1", &reference])
        .status
        .success());

    let data = work.path().join("data");
    let _disk = SmallDisk::mount(&data, "8m");
    let o = image_cmd(&data, &["pull", &reference]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("No space left on device"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("run the same command again"),
        "{}",
        stderr(&o)
    );
    let o = image_cmd(&data, &["ls", "-q"]);
    assert_eq!(stdout(&o), "", "nothing named after a failed pull");
    let blobs: Vec<_> = std::fs::read_dir(data.join("images/blobs/sha256"))
        .unwrap()
        .flatten()
        .collect();
    for b in &blobs {
        let name = format!("sha256:{}", b.file_name().to_string_lossy());
        let bytes = std::fs::read(b.path()).unwrap();
        assert_eq!(
            format!("sha256:{}", sha256_hex(&bytes)),
            name,
            "every stored blob is whole"
        );
    }
    // Room is made; the same command now succeeds (and resumes what it had).
    let st = Command::new("mount")
        .args(["-o", "remount,size=200m"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success());
    let o = image_cmd(&data, &["pull", &reference]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn pull_shows_progress_bars_on_a_terminal_and_nothing_when_piped() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    let (layout, digest) = published(reg, d, "bars");
    let reference = format!("{}/cabin/bars:1", reg.addr);
    let layer = first_layer(&layout, &digest);

    let o = image_cmd(d, &["pull", &reference]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains('\x1b') && !stderr(&o).contains('\r'),
        "no terminal codes when piped: {:?}",
        stderr(&o)
    );

    // In a real terminal: one bar per blob, named by its short digest, full at the end.
    let term = tempfile::tempdir().unwrap();
    let socket = format!("cabin-bars-{}", std::process::id());
    let cmd = format!(
        "env CABIN_DATA_DIR={} {} image pull {reference}; echo PULL-DONE; sleep 30",
        term.path().display(),
        env!("CARGO_BIN_EXE_cabin")
    );
    let tmux = |args: &[&str]| {
        let o = Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        "bars",
        "-x",
        "150",
        "-y",
        "20",
        &cmd,
    ]);
    wait_for("the pull to finish", Duration::from_secs(30), || {
        tmux(&["capture-pane", "-p", "-t", "bars"]).contains("PULL-DONE")
    });
    let screen = tmux(&["capture-pane", "-p", "-t", "bars"]);
    tmux(&["kill-server"]);
    let short = &layer[7..19];
    let line = screen
        .lines()
        .find(|l| l.starts_with(short))
        .unwrap_or_else(|| panic!("no bar for {short}:\n{screen}"));
    assert!(
        line.contains("[=============================="),
        "a full bar: {line}"
    );
}

#[test]
fn rate_limits_refusals_and_garbage_manifests_are_clear_errors() {
    let reg = registry();
    let data = tempfile::tempdir().unwrap();
    let d = data.path();
    published(reg, d, "misbehave");
    for (mode, expected) in [
        ("429", "rate-limiting"),
        ("403", "wants credentials"),
        ("garbage", "invalid manifest: not JSON"),
    ] {
        let proxy = misbehaving_proxy(&reg.addr, mode);
        let o = image_cmd(d, &["pull", &format!("{}/cabin/misbehave:1", proxy.addr)]);
        assert_eq!(o.status.code(), Some(1), "{mode}");
        assert!(stderr(&o).contains(expected), "{mode}: {}", stderr(&o));
        let label = if mode == "garbage" { "200" } else { mode };
        let answered = proxy.count_action(label);
        if mode == "429" {
            assert!(answered > 1, "a rate limit is retried before giving up");
        } else {
            assert_eq!(answered, 1, "{mode} is final, not retried");
        }
        assert_eq!(stdout(&image_cmd(d, &["ls", "-q"])), "", "nothing named");
    }
}
