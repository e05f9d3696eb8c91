//! Snapshot templates: a container VM saved the moment cabin-init came up idle, before
//! it touched any disk, so that later containers resume it (tens of milliseconds)
//! instead of booting a kernel (most of a second under TCG).
//!
//! A template's RAM is a file of its own (`KEY.memory`) and its saved state holds none
//! (QEMU's `x-ignore-shared`), so resuming reads a few hundred kilobytes instead of the
//! guest's memory. The VMs resumed from a template map that memory copy-on-write from
//! one sealed memory file (see [`crate::holder`]): idle containers of one shape share
//! every page none of them changed, and none can change a page another one sees.
//!
//! A template fits exactly one VM shape: the QEMU binary, kernel, initramfs, accelerator,
//! vCPUs, memory, kernel arguments and device layout, all folded into its key, which is
//! computed from the very QEMU command line the VM would get. The container's disk is
//! the one thing that differs between the saved VM and a resumed one: every container
//! disk is presented with the same virtual size ([`DISK_BYTES`]), and cabin-init drops
//! the block device's cached pages before mounting it.
//!
//! Templates are built in the background after a run found none (see `cabin system
//! prepare`), one builder per key (a lock file), written under temporary names and
//! renamed (the description first, the state last), so a reader sees a whole template
//! or none. Sizes and digests in the description are checked before a template is
//! trusted; one that is damaged, changed on disk or fails to resume is removed and the
//! run boots normally.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cabin_vmm::qemu::{self, Qemu};
use cabin_vmm::{DiskFormat, DiskSpec, GuestMemory, MicroVmSpec, NetBackend, RunningVm, VmBackend};
use sha2::{Digest, Sha256};

use cabin_base::files::{create_private_dir, identity};

use cabin_base::Paths;
use cabin_vmm::rundir::RunDir;

/// The virtual size of every container's disk device (sparse; the file system inside
/// is as large as its image). Images larger than this boot without a snapshot.
pub const DISK_BYTES: u64 = 1 << 40;

/// How long a template VM may take to boot before the build gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a build may take in all (its VM's boot, then the save).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(150);

/// The files a VM's template depends on besides its command line.
fn dependencies(qemu: &Qemu, spec: &MicroVmSpec) -> [PathBuf; 3] {
    [
        qemu.binary.clone(),
        spec.kernel.clone(),
        spec.initrd.clone(),
    ]
}

/// The key of the snapshot a VM with this spec can resume from. Paths that differ from
/// VM to VM (run directory, disk files) are left out; everything else of the QEMU
/// command line is in, so any change to how cabin starts QEMU invalidates old snapshots.
pub fn key(qemu: &Qemu, spec: &MicroVmSpec) -> String {
    let mut canonical = spec.clone();
    canonical.run_dir = PathBuf::from("/run-dir");
    canonical.restore = None;
    canonical.memory = GuestMemory::Private;
    for (i, d) in canonical.disks.iter_mut().enumerate() {
        d.path = PathBuf::from(format!("/disk{i}"));
        d.format = DiskFormat::Raw;
        d.backing = None;
        // The host's caching of a disk is no part of the guest's state.
        d.volatile = true;
    }
    // Published ports and shared folders live on the host side of their devices: the
    // guest sees the same card and the same 9p devices whatever they lead to.
    match &mut canonical.nic {
        Some(NetBackend::User { forwards }) => forwards.clear(),
        Some(NetBackend::Tap(fd)) => *fd = None,
        None => {}
    }
    for (i, s) in canonical.shares.iter_mut().enumerate() {
        s.path = PathBuf::from(format!("/share{i}"));
        s.read_only = false;
    }
    let mut h = Sha256::new();
    for dep in dependencies(qemu, spec) {
        h.update(identity(&dep).as_bytes());
        h.update([0]);
    }
    for arg in qemu::command_line(&canonical) {
        h.update(arg.as_bytes());
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A template's files in the snapshots directory: `KEY.json` (what it was made from and
/// the digests of the other two, written first), `KEY.memory` (the guest's RAM, sparse)
/// and `KEY.state` (CPU and device state, renamed into place last: a template is there
/// once its state is).
fn file(dir: &Path, key: &str, ext: &str) -> PathBuf {
    dir.join(format!("{key}.{ext}"))
}

const MANIFEST_VERSION: u32 = 1;

/// What `KEY.json` says.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    version: u32,
    memory_bytes: u64,
    /// See [`for_each_page`]: the digest of the memory's non-zero pages.
    memory_digest: String,
    state_bytes: u64,
    state_digest: String,
    /// The identities of the QEMU binary, kernel and initramfs it was made with.
    made_from: Vec<String>,
}

/// A template that checked out: its saved state, read and checked, and what its memory
/// must be.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    pub key: String,
    /// The state file's bytes as checked against the description: what a VM resumes
    /// from ([`Template::state_file`]), never the file read again.
    state: Vec<u8>,
    state_digest: String,
    pub memory: PathBuf,
    pub memory_bytes: u64,
    pub memory_digest: String,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("key", &self.key)
            .field("state_bytes", &self.state.len())
            .field("memory", &self.memory)
            .field("memory_digest", &self.memory_digest)
            .finish()
    }
}

impl Template {
    /// The checked state in a sealed memory file of its own, at offset 0, for one VM
    /// to resume from: a state file changed or replaced after the check cannot reach
    /// QEMU.
    pub fn state_file(&self) -> io::Result<OwnedFd> {
        use std::io::{Seek, Write};
        let mut f = cabin_base::memfd::create(c"cabin-saved-state")?;
        f.write_all(&self.state)?;
        f.rewind()?;
        cabin_base::memfd::freeze(&f)?;
        Ok(f.into())
    }
}

/// The largest state file a template may have: a container VM's device state is tens
/// of kilobytes (its RAM is in the memory file); a description claiming more is not
/// believed, nor read.
const MAX_STATE_BYTES: u64 = 64 << 20;

/// What [`find`] found for a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Usable(Template),
    Missing,
    /// There was one, but it was damaged or changed on disk: it has been removed (the
    /// reason says what was wrong).
    Discarded(String),
}

/// The template for `key`, if one has been built and its files are whole (sizes, and
/// the state's digest; the memory's digest is checked as it is loaded). A damaged one
/// is removed.
pub fn find(paths: &Paths, key: &str) -> Found {
    find_in(&paths.snapshots(), key)
}

fn find_in(dir: &Path, key: &str) -> Found {
    let state = file(dir, key, "state");
    if !state.is_file() {
        return Found::Missing;
    }
    match check(dir, key) {
        Ok(t) => Found::Usable(t),
        Err(why) => {
            discard_in(dir, key);
            Found::Discarded(why)
        }
    }
}

fn read_manifest(dir: &Path, key: &str) -> Result<Manifest, String> {
    cabin_base::files::read_bounded(&file(dir, key, "json"), 64 << 10)
        .map_err(|e| format!("its description cannot be read: {e}"))
        .and_then(|b| {
            serde_json::from_slice(&b).map_err(|e| format!("its description is not cabin's: {e}"))
        })
}

fn check(dir: &Path, key: &str) -> Result<Template, String> {
    let manifest = read_manifest(dir, key)?;
    if manifest.version != MANIFEST_VERSION {
        return Err(format!(
            "it was made by another cabin (description version {})",
            manifest.version
        ));
    }
    if manifest.state_bytes > MAX_STATE_BYTES {
        return Err(format!(
            "its description claims a state of {} bytes, more than a template has",
            manifest.state_bytes
        ));
    }
    let state = file(dir, key, "state");
    let bytes = cabin_base::files::read_bounded(&state, manifest.state_bytes)
        .map_err(|e| format!("its state file cannot be read whole: {e}"))?;
    if bytes.len() as u64 != manifest.state_bytes || hex_digest(&bytes) != manifest.state_digest {
        return Err("its state file changed on disk".into());
    }
    let memory = file(dir, key, "memory");
    let len = fs::metadata(&memory).map(|m| m.len()).unwrap_or(u64::MAX);
    if len != manifest.memory_bytes {
        return Err("its memory file is missing or of the wrong size".into());
    }
    Ok(Template {
        key: key.to_string(),
        state: bytes,
        state_digest: manifest.state_digest,
        memory,
        memory_bytes: manifest.memory_bytes,
        memory_digest: manifest.memory_digest,
    })
}

fn hex_digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes template `t`, which could not be used, unless the template of its key on
/// disk is another one now (rebuilt since `t` was looked up, by another process): that
/// one is left alone. A description that cannot be read any more means `t`'s files are
/// damaged: they go.
pub fn discard(paths: &Paths, t: &Template) {
    let dir = paths.snapshots();
    let replaced = read_manifest(&dir, &t.key)
        .is_ok_and(|m| m.state_digest != t.state_digest || m.memory_digest != t.memory_digest);
    if !replaced {
        discard_in(&dir, &t.key)
    }
}

fn discard_in(dir: &Path, key: &str) {
    // The state goes first: without it the rest is never used.
    for ext in ["state", "memory", "json"] {
        let _ = fs::remove_file(file(dir, key, ext));
    }
}

/// Waits (up to [`BUILD_TIMEOUT`]) until no process builds the template `key` (its
/// builder holds the key's lock for the whole build).
pub async fn wait_for_builder(paths: &Paths, key: &str) -> io::Result<()> {
    let lock = file(&paths.snapshots(), key, "lock");
    let wait = tokio::task::spawn_blocking(move || {
        cabin_base::lock::lock_path_waiting(&lock, cabin_base::lock::Mode::Exclusive).map(drop)
    });
    match tokio::time::timeout(BUILD_TIMEOUT, wait).await {
        Ok(done) => done.map_err(io::Error::other)?,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the boot snapshot {key} was still being built after {BUILD_TIMEOUT:?}"),
        )),
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Built {
    Built(PathBuf),
    AlreadyThere(PathBuf),
    /// Another process is building it right now.
    InProgress,
}

/// Boots a template VM shaped like `spec` (its disks replaced by empty placeholders,
/// its RAM in a memory file), waits until cabin-init is idle, and saves it as the
/// template for `spec`'s key.
pub async fn build(paths: &Paths, qemu: &Qemu, spec: &MicroVmSpec) -> io::Result<Built> {
    let key = key(qemu, spec);
    let dir = paths.snapshots();
    if let Found::Usable(_) = find_in(&dir, &key) {
        return Ok(Built::AlreadyThere(file(&dir, &key, "state")));
    }
    create_private_dir(&dir)?;
    let Some(_lock) = cabin_base::lock::lock_path(
        &file(&dir, &key, "lock"),
        cabin_base::lock::Mode::Exclusive,
        cabin_base::lock::Wait::NoWait,
    )?
    else {
        return Ok(Built::InProgress);
    };
    if let Found::Usable(_) = find_in(&dir, &key) {
        return Ok(Built::AlreadyThere(file(&dir, &key, "state")));
    }
    remove_partial(&dir, &key);
    prune_stale(&dir);

    let run_dir = RunDir::create(&paths.run_root(), &cabin_base::random::id()?)?;
    let result = boot_and_save(qemu, spec, &run_dir.path, &dir, &key).await;
    let _ = run_dir.remove();
    result.map(Built::Built)
}

async fn boot_and_save(
    qemu: &Qemu,
    spec: &MicroVmSpec,
    run_dir: &Path,
    dir: &Path,
    key: &str,
) -> io::Result<PathBuf> {
    let mut template = spec.clone();
    template.run_dir = run_dir.to_path_buf();
    template.restore = None;
    for (i, d) in template.disks.iter_mut().enumerate() {
        let placeholder = run_dir.join(format!("placeholder{i}.raw"));
        fs::File::create(&placeholder)?.set_len(DISK_BYTES)?;
        *d = DiskSpec {
            path: placeholder,
            format: DiskFormat::Raw,
            volatile: true,
            backing: None,
            ..d.clone()
        };
    }
    if let Some(NetBackend::User { forwards }) = &mut template.nic {
        forwards.clear();
    }
    if let Some(NetBackend::Tap(_)) = &template.nic {
        template.nic = Some(NetBackend::Tap(Some(Arc::new(
            cabin_net::tap::detached_tap()?,
        ))));
    }
    for (i, s) in template.shares.iter_mut().enumerate() {
        let placeholder = run_dir.join(format!("share{i}"));
        fs::create_dir(&placeholder)?;
        s.path = placeholder;
        s.read_only = false;
    }
    let memory = cabin_base::memfd::create(c"cabin-template-memory")?;
    memory.set_len(spec.memory_mib << 20)?;
    let memory = Arc::new(OwnedFd::from(memory));
    template.memory = GuestMemory::TemplateFile(memory.clone());
    let partial = |ext: &str| dir.join(format!(".partial-{key}-{}.{ext}", std::process::id()));
    let (partial_state, partial_memory) = (partial("state"), partial("memory"));
    let mut vm = qemu.start(&template)?;
    let saved = async {
        vm.wait_agent_opened(BOOT_TIMEOUT).await?;
        // cabin-init opens the port and then polls for the host; let it get there.
        tokio::time::sleep(Duration::from_millis(50)).await;
        vm.save_state(&partial_state).await
    }
    .await;
    // The memory is read once QEMU, which wrote it, is gone.
    let _ = vm.kill().await;
    let written = saved.and_then(|()| {
        let memory = fs::File::from(memory.try_clone()?);
        let memory_digest = save_memory(&memory, &partial_memory)?;
        let state = fs::read(&partial_state)?;
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            memory_bytes: memory.metadata()?.len(),
            memory_digest,
            state_bytes: state.len() as u64,
            state_digest: hex_digest(&state),
            made_from: dependencies(qemu, spec)
                .iter()
                .map(|d| identity(d))
                .collect(),
        };
        // The description goes first (a template without one is stale, prune_stale),
        // the state last (a template is there once its state is).
        cabin_base::files::write_atomic(
            &file(dir, key, "json"),
            &serde_json::to_vec_pretty(&manifest)?,
            0o600,
        )?;
        fs::rename(&partial_memory, file(dir, key, "memory"))?;
        let done = file(dir, key, "state");
        fs::rename(&partial_state, &done)?;
        fs::File::open(dir)?.sync_all()?;
        Ok(done)
    });
    if written.is_err() {
        let _ = fs::remove_file(&partial_state);
        let _ = fs::remove_file(&partial_memory);
    }
    written.map_err(|e| {
        let console = vm.console_excerpt();
        if console.is_empty() {
            e
        } else {
            io::Error::new(e.kind(), format!("{e}{console}"))
        }
    })
}

const PAGE: u64 = 4096;

/// Calls `f(offset, page)` for every page of `file`'s first `len` bytes that is not all
/// zeros, reading only the parts the file system holds data for. The memory digest is
/// taken over exactly these (offset, page) pairs, so it does not depend on how the file
/// system stores zeros.
fn for_each_page(
    file: &fs::File,
    len: u64,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let seek = |from: u64, whence: i32| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor owned by `file`.
        let r = unsafe { libc::lseek(file.as_raw_fd(), from as libc::off_t, whence) };
        if r >= 0 {
            return Ok(Some(r as u64));
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
            e => Err(e),
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let Some(data) = seek(at, libc::SEEK_DATA)? else {
            break;
        };
        let start = data / PAGE * PAGE;
        let end = seek(data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        let mut pos = start;
        while pos < end {
            let n = ((end - pos).div_ceil(PAGE) * PAGE).min(buf.len() as u64) as usize;
            let chunk = &mut buf[..n];
            chunk.fill(0);
            let mut got = 0;
            while got < n {
                match file.read_at(&mut chunk[got..], pos + got as u64)? {
                    0 => break,
                    k => got += k,
                }
            }
            for (i, page) in chunk.chunks(PAGE as usize).enumerate() {
                let offset = pos + i as u64 * PAGE;
                if offset < len && !is_zero(page) {
                    f(offset, page)?;
                }
            }
            pos += n as u64;
        }
        at = end.max(pos);
    }
    Ok(())
}

fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: u64 has no invalid bit patterns; align_to splits off what is unaligned.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

fn page_digest(h: &mut Sha256, offset: u64, page: &[u8]) {
    h.update(offset.to_le_bytes());
    h.update(page);
}

/// Writes the template's RAM (the memory file QEMU wrote) to `dest` sparsely; its
/// digest.
fn save_memory(memory: &fs::File, dest: &Path) -> io::Result<String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let len = memory.metadata()?.len();
    let out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    out.set_len(len)?;
    let mut h = Sha256::new();
    for_each_page(memory, len, |offset, page| {
        page_digest(&mut h, offset, page);
        out.write_all_at(page, offset)
    })?;
    out.sync_all()?;
    Ok(hex(&h.finalize()))
}

/// The template's RAM in a memory file of its own, sealed against every change, after
/// checking it against the template's description. Many VMs map it copy-on-write; none
/// can alter it for the others.
pub fn load_memory(t: &Template) -> io::Result<fs::File> {
    use std::os::unix::fs::FileExt;
    let src = fs::File::open(&t.memory)?;
    if src.metadata()?.len() != t.memory_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the template's memory file changed size on disk",
        ));
    }
    let memory = cabin_base::memfd::create(c"cabin-template-memory")?;
    memory.set_len(t.memory_bytes)?;
    let mut h = Sha256::new();
    for_each_page(&src, t.memory_bytes, |offset, page| {
        page_digest(&mut h, offset, page);
        memory.write_all_at(page, offset)
    })?;
    if hex(&h.finalize()) != t.memory_digest {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the template's memory file changed on disk",
        ));
    }
    cabin_base::memfd::freeze(&memory)?;
    Ok(memory)
}

/// Removes templates made from a kernel, initramfs or QEMU that has since changed or
/// gone (their keys can never come up again, and each holds tens of megabytes), files
/// of a template without its description, and boot snapshots of the format before
/// templates (`.vmstate`, `.deps`).
fn prune_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(ext) = path.extension().and_then(|x| x.to_str()) else {
            continue;
        };
        let Some(key) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if key.starts_with('.') {
            continue;
        }
        let stale = match ext {
            "vmstate" | "deps" => true,
            "state" | "memory" => !file(dir, key, "json").exists(),
            "json" => !cabin_base::files::read_bounded(&path, 64 << 10)
                .ok()
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                .is_some_and(|m| {
                    m.made_from.iter().all(|line| {
                        line.split_once('\t')
                            .is_some_and(|(p, _)| identity(Path::new(p)) == *line)
                    })
                }),
            _ => false,
        };
        if stale {
            if ext == "json" {
                discard_in(dir, key);
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Partial files of builders that died (their lock is free, or we would not be here).
fn remove_partial(dir: &Path, building: &str) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(rest) = name.strip_prefix(".partial-") {
                let (key, pid) = match rest.split_once('-') {
                    Some((key, p)) => (key, p.split('.').next().and_then(|p| p.parse().ok())),
                    None => (rest, None),
                };
                // The key being built is this process's, under its lock: whatever of it
                // is partial was left by a build that ended (this process's own, a
                // cancelled one, or one whose pid came back), and would block this one.
                if key == building || !pid.is_some_and(cabin_base::spawn::process_alive) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_vmm::Accel;

    fn spec(run_dir: &str, disk: &str) -> MicroVmSpec {
        MicroVmSpec {
            kernel: "/nonexistent/vmlinux".into(),
            initrd: "/nonexistent/initrd".into(),
            extra_cmdline: String::new(),
            cpus: 1,
            memory_mib: 512,
            disks: vec![DiskSpec {
                path: disk.into(),
                format: DiskFormat::Qcow2,
                read_only: false,
                serial: "rootfs".into(),
                volatile: true,
                backing: None,
            }],
            nic: Some(NetBackend::User {
                forwards: Vec::new(),
            }),
            shares: Vec::new(),
            accel: Accel::Tcg,
            run_dir: run_dir.into(),
            restore: None,
            memory: GuestMemory::Private,
        }
    }

    /// A template for `key` in `dir` made from `made_from`, with `memory` as its RAM.
    fn template(dir: &Path, key: &str, made_from: Vec<String>, memory: &[u8]) {
        let mem = cabin_base::memfd::create(c"test").unwrap();
        {
            use std::io::Write;
            (&mem).write_all(memory).unwrap();
        }
        let partial = dir.join(format!(".partial-{key}-1.memory"));
        let memory_digest = save_memory(&mem, &partial).unwrap();
        fs::rename(&partial, file(dir, key, "memory")).unwrap();
        let state = format!("state of {key}");
        let m = Manifest {
            version: MANIFEST_VERSION,
            memory_bytes: memory.len() as u64,
            memory_digest,
            state_bytes: state.len() as u64,
            state_digest: hex_digest(state.as_bytes()),
            made_from,
        };
        fs::write(file(dir, key, "json"), serde_json::to_vec(&m).unwrap()).unwrap();
        fs::write(file(dir, key, "state"), state).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut left: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        left
    }

    #[test]
    fn templates_of_changed_or_vanished_files_and_old_snapshots_are_pruned() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("snapshots");
        fs::create_dir(&dir).unwrap();
        let kernel = t.path().join("vmlinux");
        fs::write(&kernel, "one").unwrap();
        let old = identity(&kernel);
        template(&dir, "changed", vec![old.clone()], b"x");
        template(
            &dir,
            "vanished",
            vec![identity(&t.path().join("gone"))],
            b"x",
        );
        // "changed" was made from a kernel that has since been rebuilt.
        fs::write(&kernel, "two, longer").unwrap();
        assert_ne!(old, identity(&kernel));
        template(&dir, "current", vec![identity(&kernel)], b"x");
        fs::write(t.path().join("gone"), "now here").unwrap();
        // Boot snapshots of the format before templates, and files without a description.
        fs::write(dir.join("old.vmstate"), "state").unwrap();
        fs::write(dir.join("old.deps"), "deps").unwrap();
        fs::write(dir.join("orphan.state"), "state").unwrap();
        fs::write(dir.join("orphan.memory"), "memory").unwrap();
        prune_stale(&dir);
        assert_eq!(
            names(&dir),
            ["current.json", "current.memory", "current.state"]
        );
    }

    #[test]
    fn a_template_damaged_on_disk_is_found_out_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let mut ram = vec![0u8; 64 << 10];
        ram[5000] = 1;
        ram[40000..40010].copy_from_slice(b"0123456789");
        template(dir, "k", Vec::new(), &ram);
        let Found::Usable(found) = find_in(dir, "k") else {
            panic!("a whole template is usable");
        };
        // Its memory loads into a sealed memory file holding the same bytes.
        let loaded = load_memory(&found).unwrap();
        assert!(cabin_base::memfd::is_frozen(&loaded));
        assert_eq!(
            fs::read(format!("/proc/self/fd/{}", loaded.as_raw_fd())).unwrap(),
            ram
        );
        // Holes stay holes on disk.
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&found.memory).unwrap().blocks() * 512 < ram.len() as u64);

        // A page changed in the memory file: refused as it loads.
        {
            use std::os::unix::fs::FileExt;
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&found.memory)
                .unwrap();
            f.write_all_at(b"X", 40000).unwrap();
        }
        let e = load_memory(&found).unwrap_err();
        assert!(e.to_string().contains("changed on disk"), "{e}");
        // A truncated memory file or a changed state file: discarded when looked up.
        fs::OpenOptions::new()
            .write(true)
            .open(&found.memory)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(matches!(find_in(dir, "k"), Found::Discarded(why) if why.contains("size")));
        assert_eq!(names(dir), Vec::<String>::new());
        template(dir, "k", Vec::new(), &ram);
        fs::write(file(dir, "k", "state"), "state of a different VM").unwrap();
        assert!(matches!(find_in(dir, "k"), Found::Discarded(why) if why.contains("state")));
        assert_eq!(find_in(dir, "k"), Found::Missing);
    }

    #[test]
    fn a_vm_resumes_from_the_state_as_checked_and_only_the_template_looked_up_is_discarded() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::at(t.path());
        let dir = paths.snapshots();
        fs::create_dir_all(&dir).unwrap();
        template(&dir, "k", Vec::new(), &[1u8; 4096]);
        let Found::Usable(first) = find_in(&dir, "k") else {
            panic!("a whole template is usable");
        };
        // The state file changed after the check: the VM gets the bytes checked, from
        // the start of a sealed file.
        fs::write(file(&dir, "k", "state"), "something else").unwrap();
        let state = first.state_file().unwrap();
        assert!(cabin_base::memfd::is_frozen(&state));
        // SAFETY: lseek on a descriptor this test owns.
        let offset = unsafe { libc::lseek(state.as_raw_fd(), 0, libc::SEEK_CUR) };
        assert_eq!(offset, 0);
        assert_eq!(
            fs::read(format!("/proc/self/fd/{}", state.as_raw_fd())).unwrap(),
            b"state of k"
        );
        // Rebuilt by another process since it was looked up: discarding the old one
        // leaves the new one alone.
        discard_in(&dir, "k");
        template(&dir, "k", Vec::new(), &[2u8; 4096]);
        discard(&paths, &first);
        let Found::Usable(second) = find_in(&dir, "k") else {
            panic!("the rebuilt template was removed");
        };
        assert_ne!(second.memory_digest, first.memory_digest);
        // The template looked up is removed while it is the one on disk.
        discard(&paths, &second);
        assert_eq!(find_in(&dir, "k"), Found::Missing);
    }

    #[test]
    fn partial_files_of_the_key_being_built_go_whoever_left_them() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let me = std::process::id();
        for name in [
            format!(".partial-k-{me}.state"),
            format!(".partial-k-{me}.memory"),
            format!(".partial-other-{me}.state"),
            ".partial-other-999999999.state".into(),
        ] {
            fs::write(dir.join(name), "x").unwrap();
        }
        remove_partial(dir, "k");
        // another key's build in a live process is left alone; a dead one's is not
        assert_eq!(names(dir), [format!(".partial-other-{me}.state")]);
    }

    #[test]
    fn a_description_claiming_a_huge_state_is_not_believed_nor_read() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        template(dir, "k", Vec::new(), &[1u8; 4096]);
        let mut m = read_manifest(dir, "k").unwrap();
        m.state_bytes = u64::MAX;
        fs::write(file(dir, "k", "json"), serde_json::to_vec(&m).unwrap()).unwrap();
        assert!(
            matches!(find_in(dir, "k"), Found::Discarded(why) if why.contains("claims")),
            "{:?}",
            names(dir)
        );
        assert_eq!(names(dir), Vec::<String>::new());
    }

    #[test]
    fn key_ignores_per_vm_paths_but_not_the_vm_shape() {
        let q = Qemu {
            binary: "/nonexistent/qemu".into(),
        };
        let a = key(&q, &spec("/run/a", "/a.qcow2"));
        assert_eq!(a, key(&q, &spec("/run/b", "/b.qcow2")));
        let mut more_memory = spec("/run/a", "/a.qcow2");
        more_memory.memory_mib = 1024;
        assert_ne!(a, key(&q, &more_memory));
        let mut args = spec("/run/a", "/a.qcow2");
        args.extra_cmdline = "cabin.trace".into();
        assert_ne!(a, key(&q, &args));
        let mut ro = spec("/run/a", "/a.qcow2");
        ro.disks[0].read_only = true;
        assert_ne!(a, key(&q, &ro));
        // Published ports and shared folders' host paths do not change the guest.
        let mut published = spec("/run/a", "/a.qcow2");
        published.nic = Some(NetBackend::User {
            forwards: vec![cabin_vmm::PortForward {
                protocol: cabin_vmm::Protocol::Tcp,
                host_ip: std::net::Ipv4Addr::LOCALHOST,
                host_port: 8080,
                guest_port: 80,
            }],
        });
        assert_eq!(a, key(&q, &published));
        let share = |path: &str| cabin_vmm::ShareSpec {
            path: path.into(),
            tag: "share0".into(),
            read_only: path.ends_with("ro"),
        };
        let mut shared = spec("/run/a", "/a.qcow2");
        shared.shares.push(share("/srv/one"));
        let mut shared_elsewhere = spec("/run/b", "/b.qcow2");
        shared_elsewhere.shares.push(share("/srv/two-ro"));
        assert_ne!(a, key(&q, &shared));
        assert_eq!(key(&q, &shared), key(&q, &shared_elsewhere));
        let mut offline = spec("/run/a", "/a.qcow2");
        offline.nic = None;
        assert_ne!(a, key(&q, &offline));
    }
}
