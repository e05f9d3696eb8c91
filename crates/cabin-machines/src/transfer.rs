//! VM images to and from OCI registries in Lume's format, against the VM store: a
//! stopped VM pushed from its directory; an image pulled into a hidden staging
//! directory (`<location>/.<name>.pulling/`) that becomes the VM directory by one
//! rename once disk, NVRAM and config are complete, so a half-pulled VM is never
//! listed. An interrupted pull leaves its staging directory and journal: the same pull
//! run again resumes there. With caching on (Lume's `cachingEnabled`, or asked for
//! per pull) the image is pulled once into the cache and each VM made from it is a
//! clone (copy-on-write where the file system can).

use std::fs;
use std::path::{Path, PathBuf};

use cabin_image::credentials::Credentials;
use cabin_image::lume::attachment::{self, Attachment};
use cabin_image::lume::manifest::VmDescription;
use cabin_image::lume::pull::{self, Pulled};
use cabin_image::lume::push::{self, PushOptions, PushReport};
use cabin_image::lume::LumeError;
use cabin_image::registry::RegistryOptions;
use serde::{Deserialize, Serialize};

use crate::from_image::DirectBoot;
use crate::settings::Settings;
use crate::store::{self, io_err, Vm, VmConfig, VmError, CONFIG, DISK, NVRAM};
use crate::suspend::{self, PulledState};
use cabin_base::lock::{self, Mode, Wait};
use cabin_base::Host;

pub const DEFAULT_REGISTRY: &str = "ghcr.io";
pub const DEFAULT_ORGANIZATION: &str = "trycua";
/// Lume writes the digest of the manifest a VM was pulled from here.
pub const MANIFEST_DIGEST: &str = ".manifest-digest";
const PUSH_WORK: &str = ".lume_oci_push_cache";
const LOCK: &str = "lock";

/// `IMAGE:TAG` in `REGISTRY/ORGANIZATION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub organization: String,
    pub name: String,
    pub tag: String,
}

fn valid_component(s: &str, slash: bool) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b"._-".contains(&b)
                || (slash && b == b'/')
        })
        && !s.starts_with(['.', '-', '/'])
        && !s.contains("..")
}

impl ImageRef {
    /// Parses `image[:tag]` (tag `latest` when absent) for `registry`/`organization`.
    pub fn parse(image: &str, registry: &str, organization: &str) -> Result<ImageRef, VmError> {
        let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid_component(name, false) || !tag_ok {
            return Err(VmError::Invalid(format!(
                "Invalid image reference {image:?}: use NAME:TAG with a lower-case name (letters, digits, '.', '_', '-')"
            )));
        }
        if !organization.is_empty() && !valid_component(organization, true) {
            return Err(VmError::Invalid(format!(
                "Invalid organization {organization:?}: lower-case letters, digits, '.', '_', '-'"
            )));
        }
        if registry.is_empty() || registry.contains('/') || registry.len() > 255 {
            return Err(VmError::Invalid(format!(
                "Invalid registry {registry:?}: give a host[:port]"
            )));
        }
        Ok(ImageRef {
            registry: registry.to_string(),
            organization: organization.to_string(),
            name: name.to_string(),
            tag: tag.to_string(),
        })
    }

    /// `registry/organization/name`.
    pub fn repository(&self) -> String {
        if self.organization.is_empty() {
            format!("{}/{}", self.registry, self.name)
        } else {
            format!("{}/{}/{}", self.registry, self.organization, self.name)
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository(), self.tag)
    }
}

fn lume_err(e: LumeError) -> VmError {
    match e {
        LumeError::Io(m) => VmError::Failed(m),
        other => VmError::Invalid(other.to_string()),
    }
}

fn io(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> VmError {
    move |e| lume_err(cabin_image::lume::io_error(&what, e))
}

/// Registry options for `registry`: credentials saved by `cabin login`, else (for
/// ghcr.io) Lume's environment variables as the host read them.
pub fn registry_options(host: &Host, registry: &str) -> Result<RegistryOptions, VmError> {
    let saved = Credentials::at(host.paths.credentials())
        .get(registry)
        .map_err(io_err("reading saved credentials"))?;
    Ok(RegistryOptions {
        auth: saved.map(|c| (c.username, c.password)).or_else(|| {
            (registry == "ghcr.io")
                .then(|| host.ghcr_credentials.clone())
                .flatten()
        }),
        ..RegistryOptions::default()
    })
}

/// What the VM image is to describe, from a VM's config.
fn description(c: &VmConfig) -> VmDescription {
    VmDescription {
        os: c.os.clone(),
        cpu_count: c.cpu_count,
        memory_size: c.memory_size,
        disk_size: c.disk_size,
        display: c.display.clone(),
        network_mode: c.network_mode.clone(),
        hardware_model: c.hardware_model.clone(),
        machine_identifier: c.machine_identifier.clone(),
    }
}

pub struct PushRequest<'a> {
    pub vm: &'a Vm,
    pub image: &'a ImageRef,
    pub additional_tags: &'a [String],
    pub chunk_size_mb: u64,
    pub single_layer: bool,
    /// Compress and describe the image without contacting the registry.
    pub dry_run: bool,
    /// A suspended VM's saved state goes too (cabin's own layers after Lume's), so that
    /// a pull of the image resumes it. The state holds the guest's memory: its secrets
    /// and its random number generator's state.
    pub with_memory: bool,
}

/// Why a running VM is not pushed, and what to do.
pub fn running_refusal(vm: &Vm, with_memory: bool) -> VmError {
    VmError::Invalid(format!(
        "{}; {}",
        VmError::Running(vm.name.clone()),
        match with_memory {
            true => "suspend it before pushing it with its memory (cabin vm suspend)",
            false => "stop it before pushing (its disk is changing)",
        }
    ))
}

/// Pushes a stopped VM, or a suspended one with its memory.
pub async fn push(req: &PushRequest<'_>, opts: RegistryOptions) -> Result<PushReport, VmError> {
    let vm = req.vm;
    // Held for the whole push: no run starts under it (its disk and state would move).
    let _held = match store::lock_config(vm, lock::Mode::Shared) {
        Ok(f) => f,
        Err(VmError::Running(_)) => return Err(running_refusal(vm, req.with_memory)),
        Err(e) => return Err(e),
    };
    let mut attachments = Vec::new();
    if req.with_memory {
        let out = suspend::outgoing(vm)?;
        let dir = vm.dir.join(PUSH_WORK);
        fs::create_dir_all(&dir).map_err(io("creating the push's work directory"))?;
        let description = dir.join(Attachment::StateDescription.file());
        fs::write(&description, &out.description).map_err(io("writing the state's description"))?;
        attachments.push((Attachment::StateDescription, description));
        if let Some(k) = out.kernel {
            attachments.push((Attachment::Kernel, k));
        }
        attachments.push((Attachment::State, out.state));
    } else {
        vm.refuse_if_suspended()?;
    }
    let config = vm.config()?;
    let mut tags = vec![req.image.tag.clone()];
    for t in req.additional_tags {
        ImageRef::parse(&format!("{}:{t}", req.image.name), &req.image.registry, "")?;
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let popts = PushOptions {
        registry: opts,
        chunk_size: req.chunk_size_mb.saturating_mul(1 << 20),
        single_layer: req.single_layer,
        work_dir: vm.dir.join(PUSH_WORK),
        dry_run: req.dry_run,
        attachments,
    };
    let r = push::push(
        &vm.disk(),
        &vm.dir.join(NVRAM),
        &description(&config),
        &req.image.repository(),
        &tags,
        &popts,
    )
    .await;
    match r {
        Ok(report) => {
            let _ = fs::remove_dir_all(vm.dir.join(PUSH_WORK));
            Ok(report)
        }
        // The work directory keeps the journal of what was uploaded, if anything was.
        Err(e @ LumeError::Registry { .. }) if journal_has_entries(&vm.dir) => {
            Err(VmError::Invalid(format!(
                "{e}; push again to resume (chunks already uploaded are not sent again)"
            )))
        }
        Err(e) => {
            if !journal_has_entries(&vm.dir) {
                let _ = fs::remove_dir_all(vm.dir.join(PUSH_WORK));
            }
            Err(lume_err(e))
        }
    }
}

/// Whether an interrupted push of the VM in `dir` recorded any uploaded chunk.
fn journal_has_entries(dir: &Path) -> bool {
    fs::read_to_string(dir.join(PUSH_WORK).join(push::JOURNAL))
        .is_ok_and(|j| j.lines().nth(1).is_some())
}

pub struct PullRequest<'a> {
    pub image: &'a ImageRef,
    /// The VM's name (default `<image>_<tag>`, as Lume's CLI names it).
    pub name: Option<&'a str>,
    pub storage: Option<&'a str>,
    /// Pull into the image cache and clone from there (also when the settings say
    /// `cachingEnabled`).
    pub cache: bool,
    /// Leave out a suspended VM's saved state if the image carries one (the VM boots).
    pub without_memory: bool,
}

pub struct PullOutcome {
    pub vm: Vm,
    /// The image carried a suspended VM's state: whether it was put in place (the
    /// VM resumes at its first run), or why it was left out.
    pub memory: Memory,
    /// None when the VM was cloned from the cache without a download.
    pub pulled: Option<Pulled>,
    pub manifest_digest: String,
}

/// What became of a suspended VM's state an image carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Memory {
    /// The image carried none (or the pull was asked to leave it out).
    None,
    /// It is in place: the VM's first run resumes it.
    Resumes,
    /// It could not be used, and why: the VM boots.
    LeftOut(String),
}

/// The VM name a pull makes.
pub fn pull_name(req: &PullRequest) -> Result<String, VmError> {
    store::normalize_name(
        &req.name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}_{}", req.image.name, req.image.tag)),
    )
}

/// A held flock on `<dir>/lock` (created with the directory).
struct DirLock(#[allow(dead_code)] lock::Lock);

fn lock_dir(dir: &Path, what: &str) -> Result<DirLock, VmError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    match lock::lock_path(&dir.join(LOCK), Mode::Exclusive, Wait::NoWait) {
        Ok(Some(l)) => Ok(DirLock(l)),
        Ok(None) => Err(VmError::Invalid(format!(
            "a pull of {what} is already under way in another process"
        ))),
        Err(e) => Err(io("locking the pull")(e)),
    }
}

/// Where a pull of `name` into `parent` is staged.
pub fn staging_dir(parent: &Path, name: &str) -> PathBuf {
    parent.join(format!(".{name}.pulling"))
}

/// Makes `dir` (holding a pulled disk.img and maybe nvram.bin) a complete VM directory:
/// config.json with a fresh MAC address, the UEFI variable store if the image had none,
/// `.manifest-digest`; the pull's own files removed.
fn complete(dir: &Path, pulled: &Pulled) -> Result<Memory, VmError> {
    let d = &pulled.vm;
    let mut config = VmConfig {
        os: d.os.clone(),
        cpu_count: d.cpu_count,
        memory_size: d.memory_size,
        disk_size: d.disk_size,
        mac_address: store::random_mac()?,
        display: d.display.clone(),
        hardware_model: d.hardware_model.clone(),
        machine_identifier: d
            .machine_identifier
            .clone()
            .map(Ok)
            .unwrap_or_else(store::random_machine_id)
            .map(Some)?,
        network_mode: d.network_mode.clone(),
    };
    if !pulled.has_nvram {
        fs::copy(store::OVMF_VARS, dir.join(NVRAM)).map_err(io(format!(
            "the image has no NVRAM and the UEFI variable store template {} could not be copied (apt-get install ovmf)",
            store::OVMF_VARS
        )))?;
    }
    fs::write(dir.join(MANIFEST_DIGEST), &pulled.manifest_digest)
        .map_err(io("writing .manifest-digest"))?;
    // Before config.json: a VM cabin cannot give another MAC address keeps its state's.
    let memory = adopt_memory(dir, pulled, &mut config);
    if let Memory::LeftOut(why) = &memory {
        let _ = fs::write(dir.join(MEMORY_LEFT_OUT), why);
    }
    let tmp = dir.join(".config.json.tmp");
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(&config).expect("serialisable"),
    )
    .and_then(|()| fs::rename(&tmp, dir.join(CONFIG)))
    .map_err(io("writing config.json"))?;
    let _ = fs::remove_file(dir.join(pull::JOURNAL));
    Ok(memory)
}

/// In a cached image: why the saved state it carried was left out (the VMs made from
/// it say so).
const MEMORY_LEFT_OUT: &str = ".memory-left-out";

/// Puts the saved state a pull brought (in `attachments/`) in place, if it did.
fn adopt_memory(dir: &Path, pulled: &Pulled, config: &mut VmConfig) -> Memory {
    let has = |a: Attachment| pulled.attachments.contains(&a);
    let from = dir.join(attachment::DIR);
    let pair = (has(Attachment::StateDescription), has(Attachment::State));
    let memory = match (&pulled.attachments_refused, pair) {
        (Some(why), _) => Memory::LeftOut(why.clone()),
        (None, (false, false)) => Memory::None,
        (None, (true, true)) => {
            let files = PulledState {
                description: from.join(Attachment::StateDescription.file()),
                state: from.join(Attachment::State.file()),
                kernel: has(Attachment::Kernel).then(|| from.join(Attachment::Kernel.file())),
            };
            match suspend::adopt(dir, &files, config) {
                None => Memory::Resumes,
                Some(why) => Memory::LeftOut(why),
            }
        }
        _ => Memory::LeftOut("the image carries only part of it".into()),
    };
    let _ = fs::remove_dir_all(&from);
    memory
}

/// Renames a complete staging directory into place (never over an existing VM).
fn place(stage: &Path, dest: &Path, name: &str) -> Result<(), VmError> {
    let _ = fs::remove_file(stage.join(LOCK));
    if dest.exists() {
        return Err(VmError::Exists(name.to_string()));
    }
    fs::rename(stage, dest).map_err(io("moving the pulled VM into place"))
}

/// Metadata of a cached image (`metadata.json`, as Lume's cache keeps it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheMetadata {
    pub image: String,
    pub manifest_id: String,
    pub timestamp: String,
}

fn cache_root(settings: &Settings) -> PathBuf {
    settings.expand(&settings.cache_directory)
}

fn cache_image_dir(settings: &Settings, image: &ImageRef) -> PathBuf {
    let mut d = cache_root(settings).join(image.registry.replace(':', "_"));
    if !image.organization.is_empty() {
        d = d.join(&image.organization);
    }
    d.join(&image.name)
}

/// Pulls an image into a new VM.
pub async fn pull(
    settings: &Settings,
    req: &PullRequest<'_>,
    opts: RegistryOptions,
) -> Result<PullOutcome, VmError> {
    let name = pull_name(req)?;
    if store::find(settings, &name, req.storage).is_ok() {
        return Err(VmError::Exists(name));
    }
    let (location_name, parent) = settings.resolve(req.storage)?;
    let dest = parent.join(&name);
    let image = req.image.to_string();
    let repo = req.image.repository();
    // The name is taken first, so that a second pull of it fails at once.
    let stage = staging_dir(&parent, &name);
    let _lock = lock_dir(&stage, &name)?;
    let fetched = async {
        let (client, r) = pull::client(&repo, &req.image.tag, &opts).await?;
        let (manifest, digest) = pull::fetch_manifest(&client, &r, &image, &opts).await?;
        Ok::<_, LumeError>((client, r, manifest, digest))
    }
    .await;
    let (client, r, manifest, digest) = fetched.map_err(|e| {
        // Nothing fetched yet: a staging directory holding only its lock goes.
        if !stage.join(pull::JOURNAL).exists() {
            let _ = fs::remove_dir_all(&stage);
        }
        lume_err(e)
    })?;
    let vm = Vm {
        name: name.clone(),
        location_name,
        dir: dest.clone(),
    };
    let from = pull::Source {
        client: &client,
        r: &r,
        image: &image,
        manifest: &manifest,
        manifest_digest: &digest,
    };
    let with_memory = !req.without_memory;
    if !(req.cache || settings.caching_enabled) {
        let pulled = pull::pull_manifest_into(&stage, &from, &opts, with_memory)
            .await
            .map_err(|e| failed(e, &stage))?;
        let memory = complete(&stage, &pulled)?;
        place(&stage, &dest, &name)?;
        let memory = settle(&vm, memory);
        return Ok(PullOutcome {
            vm,
            memory,
            pulled: Some(pulled),
            manifest_digest: digest,
        });
    }
    // Through the cache: the image once, then a clone per VM.
    let image_dir = cache_image_dir(settings, req.image);
    let hex = digest.trim_start_matches("sha256:").to_string();
    let entry = image_dir.join(&hex);
    let mut pulled = None;
    if !entry.join(CONFIG).is_file() {
        let cstage = image_dir.join(format!(".{hex}.pulling"));
        // The VM's own staging directory holds nothing but its lock until the image
        // is in the cache: it goes if that fails (the cache's staging stays to resume).
        let _clock = lock_dir(&cstage, &image).inspect_err(|_| {
            let _ = fs::remove_dir_all(&stage);
        })?;
        let p = pull::pull_manifest_into(&cstage, &from, &opts, with_memory)
            .await
            .map_err(|e| {
                let _ = fs::remove_dir_all(&stage);
                failed(e, &cstage)
            })?;
        // A state left out here is said by each VM made from the cache (MEMORY_LEFT_OUT).
        complete(&cstage, &p)?;
        let meta = CacheMetadata {
            image: image.clone(),
            manifest_id: digest.clone(),
            timestamp: cabin_base::time::now_rfc3339(),
        };
        fs::write(
            cstage.join("metadata.json"),
            serde_json::to_vec(&meta).expect("json"),
        )
        .map_err(io("writing the cache's metadata.json"))?;
        let _ = fs::remove_file(cstage.join(LOCK));
        if fs::rename(&cstage, &entry).is_err() && !entry.join(CONFIG).is_file() {
            return Err(VmError::Failed(format!(
                "moving {} into the cache failed",
                image
            )));
        }
        // Older pulls of the same image go (Lume keeps the newest only).
        if let Ok(entries) = fs::read_dir(&image_dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n != hex && !n.starts_with('.') {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        pulled = Some(p);
    }
    let made = (|| {
        let _ = fs::remove_file(stage.join(DISK));
        store::copy_disk(&entry.join(DISK), &stage.join(DISK))?;
        fs::copy(entry.join(NVRAM), stage.join(NVRAM)).map_err(io("copying nvram.bin"))?;
        let cached = Vm {
            name: name.clone(),
            location_name: String::new(),
            dir: entry.clone(),
        };
        let mut c = cached.config()?;
        c.mac_address = store::random_mac()?;
        let memory = copy_memory(&cached, &stage, with_memory, &mut c);
        fs::write(
            stage.join(CONFIG),
            serde_json::to_vec_pretty(&c).expect("json"),
        )
        .map_err(io("writing config.json"))?;
        fs::write(stage.join(MANIFEST_DIGEST), &digest).map_err(io("writing .manifest-digest"))?;
        let _ = fs::remove_file(stage.join(pull::JOURNAL));
        Ok(memory)
    })();
    let memory = match made {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    place(&stage, &dest, &name)?;
    let memory = settle(&vm, memory);
    Ok(PullOutcome {
        vm,
        memory,
        pulled,
        manifest_digest: digest,
    })
}

/// The pulled VM `vm` is in place: its saved state, if any, goes with its disks from
/// now on (or is removed, and the VM boots, if that cannot be recorded).
fn settle(vm: &Vm, memory: Memory) -> Memory {
    if memory != Memory::Resumes {
        return memory;
    }
    match suspend::settle(vm) {
        Ok(()) => Memory::Resumes,
        Err(e) => {
            let _ = suspend::discard(vm);
            Memory::LeftOut(e.to_string())
        }
    }
}

/// A cached image's saved state (and the kernel it runs), copied into the VM made from
/// it in `stage` (whose `config` takes the state's MAC address where cabin cannot give
/// the guest another), unless it is to be left out.
fn copy_memory(cached: &Vm, stage: &Path, with_memory: bool, config: &mut VmConfig) -> Memory {
    let record = match suspend::saved(cached) {
        _ if !with_memory => return Memory::None,
        suspend::Saved::State(r) => r,
        _ => {
            return match fs::read_to_string(cached.dir.join(MEMORY_LEFT_OUT)) {
                Ok(why) => Memory::LeftOut(why),
                Err(_) => Memory::None,
            }
        }
    };
    let copied = (|| -> Result<bool, VmError> {
        let direct = DirectBoot::read(&cached.dir)?;
        if let Some(d) = &direct {
            fs::copy(cached.dir.join(&d.kernel), stage.join(&d.kernel))
                .map_err(io("copying the kernel"))?;
            d.write(stage)?;
        }
        for f in [store::SUSPENDED_RECORD, store::SUSPENDED_STATE] {
            fs::copy(cached.dir.join(f), stage.join(f)).map_err(io(format!("copying {f}")))?;
        }
        Ok(direct.is_some())
    })();
    match copied {
        Ok(direct) => {
            if !direct {
                config.mac_address = record.mac.clone();
            }
            Memory::Resumes
        }
        Err(e) => {
            let _ = suspend::discard_in(stage);
            Memory::LeftOut(e.to_string())
        }
    }
}

/// A failed pull: an invalid image leaves nothing behind; a registry or disk failure
/// keeps what was fetched, for the same pull to resume from.
fn failed(e: LumeError, stage: &Path) -> VmError {
    let note = format!(
        " (what was fetched is kept in {} and the same pull resumes from it; delete that directory to free its space)",
        stage.display()
    );
    match e {
        LumeError::Invalid { .. } => {
            let _ = fs::remove_dir_all(stage);
            lume_err(e)
        }
        LumeError::Io(m) => VmError::Failed(m + &note),
        other => VmError::Invalid(other.to_string() + &note),
    }
}

/// A cached image, for `vm images` and `GET /lume/images`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedImage {
    pub repository: String,
    pub image_id: String,
}

/// The images in the cache (complete entries only), sorted.
pub fn images(settings: &Settings) -> Vec<CachedImage> {
    let mut out = Vec::new();
    let mut stack = vec![cache_root(settings)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') || !p.is_dir() {
                continue;
            }
            let meta = p.join("metadata.json");
            match fs::read(&meta)
                .ok()
                .and_then(|b| serde_json::from_slice::<CacheMetadata>(&b).ok())
            {
                Some(m) if p.join(CONFIG).is_file() => {
                    let repo = m
                        .image
                        .rsplit_once('/')
                        .map_or(m.image.as_str(), |(_, r)| r);
                    out.push(CachedImage {
                        repository: repo.to_string(),
                        image_id: m
                            .manifest_id
                            .trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect(),
                    });
                }
                _ if stack.len() < 64 => stack.push(p),
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| (&a.repository, &a.image_id).cmp(&(&b.repository, &b.image_id)));
    out
}

/// Removes every cached image (Lume's `prune`).
pub fn prune(settings: &Settings) -> Result<(), VmError> {
    let root = cache_root(settings);
    match fs::remove_dir_all(&root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmError::Failed(format!("removing {}: {e}", root.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r = ImageRef::parse("ubuntu-noble:24.04", "127.0.0.1:5000", "cabin").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/cabin/ubuntu-noble:24.04");
        let r = ImageRef::parse("x", "ghcr.io", "").unwrap();
        assert_eq!(r.to_string(), "ghcr.io/x:latest");
        for bad in ["", "Up:1", "a:", "../a:1", "a b:1"] {
            assert!(ImageRef::parse(bad, "ghcr.io", "o").is_err(), "{bad}");
        }
        assert!(ImageRef::parse("a:1", "ghcr.io", "../x").is_err());
        let req = PullRequest {
            image: &ImageRef::parse("ubuntu:latest", "r", "o").unwrap(),
            name: None,
            storage: None,
            cache: false,
            without_memory: false,
        };
        assert_eq!(pull_name(&req).unwrap(), "ubuntu_latest");
    }
}
