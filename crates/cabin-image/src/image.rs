//! Images in the store: names, import of a root filesystem, the ready-to-use disk of an
//! image, listing and removal.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::layer::{self, LayerError, Limits};
use crate::rootfs::{self, RootfsError};
use crate::store::{hex, Store, StoreError};

/// Manifests and configs are small; anything bigger is not one.
const MAX_METADATA_BYTES: u64 = 4 << 20;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image name {0:?}: use NAME[:TAG] with lowercase letters, digits and . _ - / in the name")]
    BadReference(String),
    #[error("no such image: {0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {image}: {source}")]
    Layer { image: String, source: LayerError },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("image {image}: invalid {what}: {detail}")]
    Invalid {
        image: String,
        what: &'static str,
        detail: String,
    },
    #[error("pulling {image}: {detail}")]
    Registry { image: String, detail: String },
    #[error("importing {path}: {source}")]
    Import { path: PathBuf, source: io::Error },
    #[error("saving images to {path}: {source}")]
    Save { path: PathBuf, source: io::Error },
}

/// Normalises "[registry/]name[:tag]" to "...:tag" (tag "latest" by default) after
/// validating it. A registry is a first component with a dot or a port, or "localhost".
pub fn normalize_reference(r: &str) -> Result<String, ImageError> {
    let bad = || ImageError::BadReference(r.to_string());
    // Docker Hub names are kept in their familiar short form, as docker shows them.
    let r = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|p| r.strip_prefix(p))
    .unwrap_or(r);
    let (name, tag) = match r.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (r, "latest"),
    };
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (Some(first), rest)
        }
        _ => (None, name),
    };
    let registry_ok = registry.is_none_or(|reg| {
        let (host, port) = reg.split_once(':').unwrap_or((reg, "1"));
        !host.is_empty()
            && !host.starts_with(['.', '-'])
            && !host.contains("..")
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
            && !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
    });
    let path_ok = !path.is_empty()
        && name.len() <= 255
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && !c.starts_with(['.', '-', '_'])
        });
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !tag.starts_with(['.', '-']);
    if registry_ok && path_ok && tag_ok {
        Ok(format!("{name}:{tag}"))
    } else {
        Err(bad())
    }
}

#[derive(Debug, Clone)]
pub struct Image {
    /// The name it was found by ("" when found by digest).
    pub reference: String,
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

impl Image {
    /// Short id, as docker shows it: the first 12 hex digits of the manifest digest.
    pub fn id(&self) -> &str {
        &self.manifest_digest["sha256:".len().."sha256:".len() + 12]
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The extended attributes of `path` (not following a symlink), as PAX records.
fn xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 4096];
    // SAFETY: llistxattr into our buffer of the size passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // Filesystems without xattrs simply have none.
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(Vec::new())
        } else {
            Err(e)
        };
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
    {
        let cname = std::ffi::CString::new(name)?;
        let mut value = vec![0u8; 65536];
        // SAFETY: lgetxattr into our buffer of the size passed.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.push((
                format!("SCHILY.xattr.{}", String::from_utf8_lossy(name)),
                value,
            ));
        }
    }
    Ok(out)
}

/// Appends `root/rel` and everything below it, in name order, with ownership, modes,
/// times and extended attributes (so file capabilities survive an import).
fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> io::Result<()> {
    let path = root.join(rel);
    let meta = fs::symlink_metadata(&path)?;
    if !rel.as_os_str().is_empty() {
        let attrs = xattrs(&path)?;
        if !attrs.is_empty() {
            b.append_pax_extensions(attrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        append_entry(b, &path, rel, &meta)?;
    }
    if meta.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for n in names {
            append_tree(b, root, &rel.join(n))?;
        }
    }
    Ok(())
}

fn append_entry<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
    meta: &fs::Metadata,
) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let ft = meta.file_type();
    let kind = if ft.is_char_device() {
        tar::EntryType::Char
    } else if ft.is_block_device() {
        tar::EntryType::Block
    } else if ft.is_fifo() {
        tar::EntryType::Fifo
    } else if ft.is_socket() {
        return Ok(()); // sockets belong to running programs, not to images
    } else {
        return b.append_path_with_name(path, rel);
    };
    // tar::Builder names special files by their full host path; build their header here.
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_size(0);
    let rdev = meta.rdev();
    h.set_device_major(libc::major(rdev))?;
    h.set_device_minor(libc::minor(rdev))?;
    b.append_data(&mut h, rel, io::empty())
}

/// Makes a gzip-compressed layer of a directory; returns (digest, size, diff_id).
fn layer_from_dir(store: &Store, dir: &Path) -> Result<(String, u64, String), ImageError> {
    let import_err = |source| ImageError::Import {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        return Err(import_err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a directory",
        )));
    }
    let blob = store.blob_writer()?;
    let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
    let mut builder = tar::Builder::new(HashingWriter {
        inner: gz,
        hasher: Sha256::new(),
    });
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    // Plain entries only: Docker (and Go's archive/tar users) cannot read GNU sparse
    // ones, which the tar crate would write for files with holes.
    builder.sparse(false);
    append_tree(&mut builder, dir, Path::new("")).map_err(import_err)?;
    let hashing = builder.into_inner().map_err(import_err)?;
    let diff_id = format!("sha256:{}", hex(&hashing.hasher.finalize()));
    let blob = hashing.inner.finish().map_err(import_err)?;
    let (digest, size) = store.commit(blob, None)?;
    Ok((digest, size, diff_id))
}

/// Stores a tar or tar.gz file as a layer; returns (digest, size, diff_id, gzip).
fn layer_from_tarball(
    store: &Store,
    path: &Path,
) -> Result<(String, u64, String, bool), ImageError> {
    let import_err = |source| ImageError::Import {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(path).map_err(import_err)?;
    let mut blob = store.blob_writer()?;
    io::copy(&mut f, &mut blob).map_err(import_err)?;
    let (digest, size) = store.commit(blob, None)?;
    let stored = store.blob_path(&digest)?;
    let mut head = [0u8; 2];
    let gzip = fs::File::open(&stored)
        .and_then(|mut f| f.read(&mut head))
        .map_err(import_err)?
        == 2
        && head == [0x1f, 0x8b];
    let diff_id = if gzip {
        // The diff_id is the digest of the uncompressed tar.
        let dec = flate2::read::MultiGzDecoder::new(fs::File::open(&stored).map_err(import_err)?);
        let mut sink = HashingWriter {
            inner: io::sink(),
            hasher: Sha256::new(),
        };
        io::copy(&mut dec.take(64 << 30), &mut sink).map_err(import_err)?;
        format!("sha256:{}", hex(&sink.hasher.finalize()))
    } else {
        digest.clone()
    };
    Ok((digest, size, diff_id, gzip))
}

/// What an imported image runs by default.
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    pub cmd: Vec<String>,
    /// Empty: none (the command runs as it is).
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// Ports the image says it listens on, `PORT/PROTO`.
    pub exposed_ports: Vec<String>,
}

/// Imports a root filesystem (a directory, or a tar/tar.gz file) as a one-layer image.
pub fn import(
    store: &Store,
    src: &Path,
    reference: &str,
    cfg: &ImportConfig,
) -> Result<Image, ImageError> {
    let reference = normalize_reference(reference)?;
    for p in &cfg.exposed_ports {
        let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        if port.parse::<u16>().map_or(true, |n| n == 0) || !matches!(proto, "tcp" | "udp") {
            return Err(ImageError::Invalid {
                image: reference.clone(),
                what: "exposed port",
                detail: format!("{p:?} is not PORT[/tcp|udp]"),
            });
        }
    }
    let meta = fs::metadata(src).map_err(|source| ImageError::Import {
        path: src.to_path_buf(),
        source,
    })?;
    let (layer_digest, layer_size, diff_id, gzip) = if meta.is_dir() {
        let (d, s, id) = layer_from_dir(store, src)?;
        (d, s, id, true)
    } else {
        layer_from_tarball(store, src)?
    };
    let now = cabin_base::time::now_rfc3339();
    let mut env = vec![DEFAULT_PATH.to_string()];
    env.extend(cfg.env.iter().cloned());
    let mut config = json!({
        "created": now,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": env,
            // A shell by default, unless an entrypoint is the program.
            "Cmd": if cfg.cmd.is_empty() && cfg.entrypoint.is_empty() {
                vec!["/bin/sh".to_string()]
            } else {
                cfg.cmd.clone()
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [ { "created": now, "created_by": format!("cabin image import {}", src.display()) } ],
    });
    if let Some(w) = &cfg.working_dir {
        config["config"]["WorkingDir"] = json!(w);
    }
    if let Some(u) = &cfg.user {
        config["config"]["User"] = json!(u);
    }
    if !cfg.entrypoint.is_empty() {
        config["config"]["Entrypoint"] = json!(cfg.entrypoint);
    }
    if !cfg.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = cfg
            .exposed_ports
            .iter()
            .map(|p| {
                let p = if p.contains('/') {
                    p.clone()
                } else {
                    format!("{p}/tcp")
                };
                (p, json!({}))
            })
            .collect();
        config["config"]["ExposedPorts"] = serde_json::Value::Object(ports);
    }
    let config_bytes = serde_json::to_vec(&config).expect("json serialises");
    let config_digest = store.put_bytes(&config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_bytes.len(),
        },
        "layers": [ {
            "mediaType": if gzip { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.oci.image.layer.v1.tar" },
            "digest": layer_digest,
            "size": layer_size,
        } ],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("json serialises");
    let manifest_digest = store.put_bytes(&manifest_bytes)?;
    store.update_refs(|refs| refs.insert(reference.clone(), manifest_digest.clone()))?;
    load(store, &reference, &manifest_digest)
}

/// Loads and validates the image whose manifest is `manifest_digest`, under `reference`.
pub fn load(store: &Store, reference: &str, manifest_digest: &str) -> Result<Image, ImageError> {
    let invalid = |what, detail: String| ImageError::Invalid {
        image: reference.to_string(),
        what,
        detail,
    };
    let manifest_bytes = store.read_blob(manifest_digest, MAX_METADATA_BYTES)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| invalid("manifest", e.to_string()))?;
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = store.read_blob(&config_digest, MAX_METADATA_BYTES)?;
    let config: ImageConfiguration =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid("config", e.to_string()))?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(invalid(
            "config",
            format!(
                "{} layers in the manifest but {} diff_ids in the config",
                manifest.layers().len(),
                config.rootfs().diff_ids().len()
            ),
        ));
    }
    Ok(Image {
        reference: reference.to_string(),
        manifest_digest: manifest_digest.to_string(),
        manifest,
        config,
    })
}

/// Finds an image by name[:tag], full digest, or id prefix (at least 4 hex digits).
pub fn resolve(store: &Store, what: &str) -> Result<Image, ImageError> {
    let refs = store.refs()?;
    if what.starts_with("sha256:") {
        return load(store, "", what).map_err(|e| match e {
            ImageError::Store(StoreError::MissingBlob(_)) => ImageError::NotFound(what.into()),
            e => e,
        });
    }
    if let Ok(r) = normalize_reference(what) {
        if let Some(d) = refs.get(&r) {
            return load(store, &r, d);
        }
    }
    if what.len() >= 4 && what.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches: Vec<(&String, &String)> = refs
            .iter()
            .filter(|(_, d)| d["sha256:".len()..].starts_with(what))
            .collect();
        matches.dedup_by(|a, b| a.1 == b.1);
        if matches.len() == 1 {
            return load(store, matches[0].0, matches[0].1);
        }
    }
    Err(ImageError::NotFound(what.to_string()))
}

/// An image as listings show it: one row per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name, `registry/repository:tag`.
    pub name: String,
    pub manifest_digest: String,
    /// Docker's short id (see [`Image::id`]).
    pub id: String,
    /// Its layers' compressed size, in bytes.
    pub size: u64,
    /// When it was built, as its config says (RFC 3339), if it says.
    pub created: String,
}

/// Every named image in the store, by name.
pub fn list(store: &Store) -> Result<Vec<Listed>, ImageError> {
    let mut rows = Vec::new();
    for name in store.refs()?.keys() {
        let img = resolve(store, name)?;
        rows.push(Listed {
            name: name.clone(),
            size: img.manifest.layers().iter().map(|l| l.size()).sum(),
            created: img.config.created().clone().unwrap_or_default(),
            id: img.id().to_string(),
            manifest_digest: img.manifest_digest,
        });
    }
    Ok(rows)
}

/// The image's root filesystem as an ext4 disk, built from its layers on first use and
/// kept (one per manifest). Returns the path and whether this call built it.
pub fn ensure_disk(store: &Store, image: &Image) -> Result<(PathBuf, bool), ImageError> {
    let disk = store.disk_path(&image.manifest_digest)?;
    if disk.is_file() {
        return Ok((disk, false));
    }
    // Unpacking is metadata-heavy: a RAM-backed staging directory is several times
    // faster than most disks, so it is used when the image comfortably fits in memory,
    // with a byte budget (a small image can decompress to anything); when the budget or
    // the tmpfs runs out, the store's own disk is used.
    let compressed: u64 = image.manifest.layers().iter().map(|l| l.size()).sum();
    if let Some((shm, budget)) = ram_staging_base(compressed.saturating_mul(4)) {
        match unpack_and_build(store, image, &shm, &disk, budget) {
            Err(ImageError::Layer { source, .. }) if outgrew_ram(&source) => {}
            r => return r.map(|()| (disk, true)),
        }
    }
    let limit = Limits::default().max_bytes;
    unpack_and_build(store, image, &store.tmp_dir(), &disk, limit).map(|()| (disk, true))
}

fn outgrew_ram(e: &LayerError) -> bool {
    match e {
        LayerError::TooBig(_) => true,
        LayerError::Entry { source, .. } | LayerError::Io(source) => {
            source.raw_os_error() == Some(libc::ENOSPC)
        }
        _ => false,
    }
}

/// /dev/shm and a byte budget (a quarter of the memory available now) when `estimate`
/// bytes fit in that budget.
fn ram_staging_base(estimate: u64) -> Option<(PathBuf, u64)> {
    let available = cabin_base::memory::Headroom::now().available()?;
    let shm = PathBuf::from("/dev/shm");
    let budget = available / 4;
    (estimate < budget && shm.is_dir()).then_some((shm, budget))
}

fn unpack_and_build(
    store: &Store,
    image: &Image,
    base: &Path,
    disk: &Path,
    budget: u64,
) -> Result<(), ImageError> {
    rootfs::remove_abandoned(base, "cabin-unpack-");
    let staging = base.join(format!(
        "cabin-unpack-{}-{}",
        std::process::id(),
        rootfs::unique_suffix()
    ));
    fs::create_dir_all(&staging).map_err(|source| ImageError::Import {
        path: staging.clone(),
        source,
    })?;
    let result = unpack(store, image, &staging, budget)
        .and_then(|()| rootfs::build_image(&staging, disk).map_err(ImageError::from));
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Applies the image's layers, in order, to the directory `root` (which should be
/// empty), writing at most `budget` bytes.
pub fn unpack(store: &Store, image: &Image, root: &Path, budget: u64) -> Result<(), ImageError> {
    // Each layer's uncompressed content must be what the config records (diff_ids);
    // load() has checked there is one per layer.
    let diff_ids = image.config.rootfs().diff_ids();
    let mut left = budget;
    for (desc, diff_id) in image.manifest.layers().iter().zip(diff_ids) {
        let digest = desc.digest().to_string();
        let path = store.blob_path(&digest)?;
        if !path.is_file() {
            return Err(StoreError::MissingBlob(digest).into());
        }
        let limits = Limits {
            max_bytes: left,
            ..Limits::default()
        };
        let used =
            layer::apply_layer_checked(root, &path, limits, Some(diff_id)).map_err(|source| {
                ImageError::Layer {
                    image: image.reference.clone(),
                    source,
                }
            })?;
        left = left.saturating_sub(used);
    }
    Ok(())
}

/// Removes the name; blobs and disks no name refers to any more are deleted.
pub fn remove(store: &Store, reference: &str) -> Result<String, ImageError> {
    let image = resolve(store, reference)?;
    let removed = store.update_refs(|refs| {
        if image.reference.is_empty() {
            refs.retain(|_, d| *d != image.manifest_digest);
        } else {
            refs.remove(&image.reference);
        }
        image.manifest_digest.clone()
    })?;
    prune(store)?;
    Ok(removed)
}

/// Deletes every blob and disk that no named image uses.
pub fn prune(store: &Store) -> Result<u64, ImageError> {
    let refs = store.refs()?;
    let mut keep = std::collections::HashSet::new();
    let mut keep_disks = std::collections::HashSet::new();
    for d in refs.values() {
        keep.insert(d.clone());
        keep_disks.insert(store.disk_path(d)?);
        if let Ok(img) = load(store, "", d) {
            keep.insert(img.manifest.config().digest().to_string());
            for l in img.manifest.layers() {
                keep.insert(l.digest().to_string());
            }
        }
    }
    let mut freed = 0;
    let blob_dir = store.root().join("blobs/sha256");
    for e in fs::read_dir(&blob_dir)
        .map_err(|source| ImageError::Import {
            path: blob_dir.clone(),
            source,
        })?
        .flatten()
    {
        let digest = format!("sha256:{}", e.file_name().to_string_lossy());
        if !keep.contains(&digest) {
            freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = fs::remove_file(e.path());
        }
    }
    let disk_dir = store.root().join("disks");
    for e in fs::read_dir(&disk_dir)
        .map_err(|source| ImageError::Import {
            path: disk_dir.clone(),
            source,
        })?
        .flatten()
    {
        if !keep_disks.contains(&e.path()) {
            freed += e.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(freed)
}

/// Adds `target` as another name of the image `source`.
pub fn tag(store: &Store, source: &str, target: &str) -> Result<String, ImageError> {
    let image = resolve(store, source)?;
    let target = normalize_reference(target)?;
    store.update_refs(|refs| refs.insert(target.clone(), image.manifest_digest.clone()))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_and_validated() {
        assert_eq!(normalize_reference("busybox").unwrap(), "busybox:latest");
        assert_eq!(normalize_reference("my/app:1.0").unwrap(), "my/app:1.0");
        assert_eq!(
            normalize_reference("localhost:5000/app").unwrap(),
            "localhost:5000/app:latest"
        );
        for bad in [
            "", "UPPER", "../x", "a:b:c", "x:", "-x", "a b", "x/", "a:-t",
        ] {
            assert!(normalize_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_staging_budget_stops_an_image_that_outgrows_it() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        // 4 MB of zeros: a few KB compressed, so only the budget can stop it.
        fs::write(src.join("zeros"), vec![0u8; 4 << 20]).unwrap();
        let img = import(&store, &src, "budget:1", &ImportConfig::default()).unwrap();
        let compressed: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
        assert!(compressed < 64 << 10, "{compressed}");
        let staging = t.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        let disk = t.path().join("disk.ext4");
        match unpack_and_build(&store, &img, &staging, &disk, 1 << 20) {
            Err(ImageError::Layer { source, .. }) => assert!(outgrew_ram(&source), "{source}"),
            other => panic!("expected the budget to stop it, got {other:?}"),
        }
        assert!(!disk.exists());
        assert_eq!(
            fs::read_dir(&staging).unwrap().count(),
            0,
            "staging removed"
        );
        unpack_and_build(&store, &img, &staging, &disk, 64 << 20).unwrap();
        assert!(disk.is_file());
    }

    #[test]
    fn an_imported_directory_keeps_extended_attributes() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        let file = src.join("bin/tool");
        fs::write(&file, "x").unwrap();
        let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: setxattr with a valid path, name and value.
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"user.cabin".as_ptr(),
                b"cap".as_ptr().cast(),
                3,
                0,
            )
        };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
        let img = import(&store, &src, "xattr:1", &ImportConfig::default()).unwrap();
        let (disk, _) = ensure_disk(&store, &img).unwrap();
        // debugfs reads the attribute back from the image's ext4 disk.
        let out = std::process::Command::new("debugfs")
            .args(["-R", "ea_get /bin/tool user.cabin"])
            .arg(&disk)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("cap"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    #[test]
    fn a_file_with_holes_is_a_plain_entry_that_docker_can_read() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(&src).unwrap();
        // 8 MB with a hole in the middle and data at both ends.
        let f = fs::File::create(src.join("holey")).unwrap();
        f.set_len(8 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"end", (8 << 20) - 3).unwrap();
        drop(f);
        let cfg = ImportConfig {
            entrypoint: vec!["/holey".into()],
            exposed_ports: vec!["8006".into()],
            ..Default::default()
        };
        let img = import(&store, &src, "holes:1", &cfg).unwrap();
        let layer = &img.manifest.layers()[0];
        let blob = store.read_blob(layer.digest().as_ref(), 64 << 20).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let kind = entry.header().entry_type();
            assert!(
                kind == tar::EntryType::Regular || kind == tar::EntryType::Directory,
                "{:?} is {kind:?}",
                entry.path().unwrap()
            );
        }
        let config = store
            .read_blob(img.manifest.config().digest().as_ref(), 1 << 20)
            .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/holey"])
        );
        assert_eq!(
            config["config"]["Cmd"],
            serde_json::json!([]),
            "no shell by default"
        );
        assert!(config["config"]["ExposedPorts"]["8006/tcp"].is_object());
        let bad = ImportConfig {
            exposed_ports: vec!["80/sctp".into()],
            ..Default::default()
        };
        let e = import(&store, &src, "holes:2", &bad).unwrap_err();
        assert!(e.to_string().contains("PORT[/tcp|udp]"), "{e}");
    }
}
