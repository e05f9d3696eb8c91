//! What gets mounted into a container besides its image (`-v`, `--mount`, `--tmpfs`),
//! and named volumes: sparse ext4 disk images under `<data>/volumes/<name>/` that
//! outlive their containers.
//!
//! A volume is a block device in the guest, so one running container at a time can
//! use it: the VM's owner holds the volume's `in-use.lock` while it runs. Host folders
//! (`-v /host/dir:/path`) are shared live over virtio-9p instead.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::store::valid_name;
use cabin_base::files::create_private_dir;
use cabin_base::lock::{self, Lock, Mode, Wait};

use cabin_base::Paths;

/// Size of a new volume's file system unless told otherwise (sparse: it costs what is
/// written).
pub const DEFAULT_VOLUME_BYTES: u64 = 64 << 30;
/// The smallest volume (an ext4 file system with its journal needs room).
pub const MIN_VOLUME_BYTES: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSpec {
    /// A host directory, shared live.
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        /// tmpfs mount data: size=..., mode=...
        options: String,
    },
}

impl MountSpec {
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. }
            | MountSpec::Volume { target, .. }
            | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// A mount the user wrote that cannot be: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountSpecError {
    #[error("invalid mount {spec:?}: {why}")]
    Invalid { spec: String, why: String },
    #[error(
        "invalid tmpfs options in {spec:?}: {option:?} (allowed: size, mode, nr_inodes, uid, gid)"
    )]
    TmpfsOption { spec: String, option: String },
    #[error("cannot share {}: it is not a directory (cabin shares host directories; share the folder that holds it)", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot share {}: no such directory on the host; create it first", .0.display())]
    NoSuchDirectory(PathBuf),
    #[error("cannot share {}: {detail}", path.display())]
    Unshareable { path: PathBuf, detail: String },
}

fn invalid(spec: &str, why: impl Into<String>) -> MountSpecError {
    MountSpecError::Invalid {
        spec: spec.to_string(),
        why: why.into(),
    }
}

fn check_target(spec: &str, target: &str) -> Result<(), MountSpecError> {
    if !target.starts_with('/') {
        return Err(invalid(
            spec,
            format!("the container path {target:?} must be absolute"),
        ));
    }
    if target.split('/').all(|c| c.is_empty() || c == ".") {
        return Err(invalid(spec, "cannot mount over the container's root"));
    }
    if target.contains(['\0', '\n']) {
        return Err(invalid(spec, "bad characters in the path"));
    }
    Ok(())
}

/// A host path as given: absolute, or relative to the current directory (`./data`).
fn host_path(spec: &str, source: &str) -> Result<PathBuf, MountSpecError> {
    let p = Path::new(source);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| invalid(spec, format!("{e}")))?
            .join(p)
    };
    Ok(abs)
}

fn source_kind(
    spec: &str,
    source: &str,
    target: &str,
    read_only: bool,
) -> Result<MountSpec, MountSpecError> {
    check_target(spec, target)?;
    if source.starts_with('/') || source.starts_with('.') {
        Ok(MountSpec::Bind {
            source: host_path(spec, source)?,
            target: target.to_string(),
            read_only,
        })
    } else if valid_name(source) {
        Ok(MountSpec::Volume {
            name: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    } else {
        Err(invalid(
            spec,
            format!(
                "{source:?} is neither a host path (absolute or starting with .) nor a volume name"
            ),
        ))
    }
}

/// docker's `-v SOURCE:TARGET[:ro|:rw]`.
pub fn parse_volume_flag(spec: &str) -> Result<MountSpec, MountSpecError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, read_only) = match parts.as_slice() {
        [s, t] => (*s, *t, false),
        [s, t, "ro"] => (*s, *t, true),
        [s, t, "rw"] => (*s, *t, false),
        [_, _, o] => {
            return Err(invalid(
                spec,
                format!("unknown option {o:?} (use ro or rw)"),
            ))
        }
        [_] => {
            return Err(invalid(
                spec,
                "give SOURCE:TARGET (a host directory or volume name, and a container path)",
            ))
        }
        _ => return Err(invalid(spec, "too many ':'")),
    };
    if source.is_empty() {
        return Err(invalid(spec, "empty source"));
    }
    source_kind(spec, source, target, read_only)
}

/// docker's `--tmpfs PATH[:OPTIONS]`.
pub fn parse_tmpfs_flag(spec: &str) -> Result<MountSpec, MountSpecError> {
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    check_target(spec, target)?;
    check_tmpfs_options(spec, options)?;
    Ok(MountSpec::Tmpfs {
        target: target.to_string(),
        options: options.to_string(),
    })
}

fn check_tmpfs_options(spec: &str, options: &str) -> Result<(), MountSpecError> {
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let key = o.split('=').next().unwrap_or("");
        if !["size", "mode", "nr_inodes", "uid", "gid"].contains(&key) {
            return Err(MountSpecError::TmpfsOption {
                spec: spec.to_string(),
                option: o.to_string(),
            });
        }
    }
    Ok(())
}

/// docker's `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]`.
pub fn parse_mount_flag(spec: &str) -> Result<MountSpec, MountSpecError> {
    let mut kind = "volume";
    let (mut source, mut target) = (None, None);
    let mut read_only = false;
    let mut tmpfs = Vec::new();
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (k, v) {
            ("type", Some(v)) => kind = v,
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "destination" | "dst", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => read_only = false,
            ("tmpfs-size", Some(v)) => tmpfs.push(format!("size={v}")),
            ("tmpfs-mode", Some(v)) => tmpfs.push(format!("mode={v}")),
            _ => return Err(invalid(spec, format!("unknown field {field:?}"))),
        }
    }
    let target = target.ok_or_else(|| invalid(spec, "no target"))?;
    match kind {
        "tmpfs" => {
            check_target(spec, target)?;
            let options = tmpfs.join(",");
            check_tmpfs_options(spec, &options)?;
            Ok(MountSpec::Tmpfs {
                target: target.to_string(),
                options,
            })
        }
        "bind" => {
            let source = source.ok_or_else(|| invalid(spec, "no source"))?;
            check_target(spec, target)?;
            Ok(MountSpec::Bind {
                source: host_path(spec, source)?,
                target: target.to_string(),
                read_only,
            })
        }
        "volume" => {
            let source = source.ok_or_else(|| invalid(spec, "no source"))?;
            if !valid_name(source) {
                return Err(invalid(spec, format!("invalid volume name {source:?}")));
            }
            source_kind(spec, source, target, read_only)
        }
        other => Err(invalid(
            spec,
            format!("unknown type {other:?} (use bind, volume or tmpfs)"),
        )),
    }
}

/// Checks a host folder to be shared: it must exist and be a directory.
pub fn check_host_dir(source: &Path) -> Result<PathBuf, MountSpecError> {
    match fs::metadata(source) {
        Ok(m) if m.is_dir() => fs::canonicalize(source).map_err(|e| MountSpecError::Unshareable {
            path: source.to_path_buf(),
            detail: e.to_string(),
        }),
        Ok(_) => Err(MountSpecError::NotADirectory(source.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(MountSpecError::NoSuchDirectory(source.to_path_buf()))
        }
        Err(e) => Err(MountSpecError::Unshareable {
            path: source.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeInfo {
    pub name: String,
    pub created_unix: u64,
    /// The file system's size.
    pub size_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no such volume: {0}")]
    NotFound(String),
    #[error("invalid volume name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("volume {0} is in use by a running container; stop it first")]
    InUse(String),
    #[error("a volume must be at least 8 MiB")]
    TooSmall,
    #[error("mkfs.ext4 is missing: install it with `apt-get install e2fsprogs`")]
    NoMkfs,
    #[error("volume {name}: {detail}")]
    Io { name: String, detail: String },
}

pub struct Volumes {
    dir: PathBuf,
}

/// `.new-NAME-PID` of a `volume create` whose process is gone.
fn abandoned_staging(name: &str) -> bool {
    name.strip_prefix(".new-")
        .and_then(|rest| rest.rsplit_once('-'))
        .and_then(|(_, pid)| pid.parse().ok())
        .is_some_and(|pid| !cabin_base::spawn::process_alive(pid))
}

/// A volume attached to a running VM: the disk and the lock that keeps it to one.
pub struct AttachedVolume {
    pub disk: PathBuf,
    _lock: Lock,
}

const INFO: &str = "volume.json";
const DISK: &str = "disk.ext4";

impl Volumes {
    pub fn open(paths: &Paths) -> Volumes {
        Volumes {
            dir: paths.volumes(),
        }
    }

    fn io(name: &str) -> impl Fn(io::Error) -> VolumeError + '_ {
        move |e| VolumeError::Io {
            name: name.to_string(),
            detail: e.to_string(),
        }
    }

    pub fn disk(&self, name: &str) -> PathBuf {
        self.dir.join(name).join(DISK)
    }

    /// For `system check`: how many volumes there are, those whose record or disk is
    /// missing or unreadable (with why), and what killed `volume create`s left
    /// (`.new-NAME-PID`, its process gone).
    pub fn damage(&self) -> (usize, Vec<(String, String)>, Vec<PathBuf>) {
        let (mut count, mut damaged, mut abandoned) = (0, Vec::new(), Vec::new());
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return (0, damaged, abandoned);
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".new-") {
                if abandoned_staging(&name) {
                    abandoned.push(e.path());
                }
                continue;
            }
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            count += 1;
            match self.inspect(&name) {
                Err(err) => damaged.push((name, err.to_string())),
                Ok(_) if !self.disk(&name).is_file() => {
                    damaged.push((name, "its disk (disk.ext4) is missing".into()))
                }
                Ok(_) => {}
            }
        }
        (count, damaged, abandoned)
    }

    pub fn exists(&self, name: &str) -> bool {
        self.dir.join(name).join(INFO).is_file()
    }

    /// Creates a volume (an empty ext4 file system of `size` bytes), or returns the
    /// existing one of that name.
    pub fn create(&self, name: &str, size: u64) -> Result<VolumeInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        if self.exists(name) {
            return self.inspect(name);
        }
        if size < MIN_VOLUME_BYTES {
            return Err(VolumeError::TooSmall);
        }
        create_private_dir(&self.dir).map_err(Self::io(name))?;
        let staging = self.dir.join(format!(".new-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        // What killed creates left goes now, as the image store's leftovers do.
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if abandoned_staging(&e.file_name().to_string_lossy()) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        fs::create_dir(&staging).map_err(Self::io(name))?;
        let made = (|| {
            let disk = staging.join(DISK);
            let out = Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "cabin-volume", "-m", "0", "-E"])
                .arg("lazy_itable_init=1,lazy_journal_init=1,nodiscard")
                .arg(&disk)
                .arg(format!("{}k", size / 1024))
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .output()
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => VolumeError::NoMkfs,
                    _ => Self::io(name)(e),
                })?;
            if !out.status.success() {
                return Err(VolumeError::Io {
                    name: name.to_string(),
                    detail: format!(
                        "mkfs.ext4 failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                });
            }
            // Every disk a container VM gets has the same device size (see snapshot.rs).
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&disk)
                .map_err(Self::io(name))?;
            if f.metadata().map_err(Self::io(name))?.len() < crate::snapshot::DISK_BYTES {
                f.set_len(crate::snapshot::DISK_BYTES)
                    .map_err(Self::io(name))?;
            }
            let info = VolumeInfo {
                name: name.to_string(),
                created_unix: cabin_base::time::now_unix(),
                size_bytes: size,
            };
            fs::write(
                staging.join(INFO),
                serde_json::to_vec_pretty(&info).expect("serialisable"),
            )
            .map_err(Self::io(name))?;
            Ok(info)
        })();
        let info = match made {
            Ok(i) => i,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        match fs::rename(&staging, self.dir.join(name)) {
            Ok(()) => Ok(info),
            // Someone else made it first: theirs stands.
            Err(_) if self.exists(name) => {
                let _ = fs::remove_dir_all(&staging);
                self.inspect(name)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                Err(Self::io(name)(e))
            }
        }
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        let bytes = match fs::read(self.dir.join(name).join(INFO)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(Self::io(name)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| VolumeError::Io {
            name: name.to_string(),
            detail: format!("its record is unreadable: {e}"),
        })
    }

    pub fn list(&self) -> Vec<VolumeInfo> {
        let mut v: Vec<VolumeInfo> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (!name.starts_with('.'))
                    .then(|| self.inspect(&name).ok())
                    .flatten()
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn lock(&self, name: &str) -> Result<Option<Lock>, VolumeError> {
        lock::lock_path(
            &self.dir.join(name).join("in-use.lock"),
            Mode::Exclusive,
            Wait::NoWait,
        )
        .map_err(Self::io(name))
    }

    pub fn in_use(&self, name: &str) -> bool {
        matches!(self.lock(name), Ok(None))
    }

    /// The volume for a container starting now (created on first use, as docker does).
    pub fn attach(&self, name: &str) -> Result<AttachedVolume, VolumeError> {
        self.create(name, DEFAULT_VOLUME_BYTES)?;
        let lock = self
            .lock(name)?
            .ok_or_else(|| VolumeError::InUse(name.to_string()))?;
        Ok(AttachedVolume {
            disk: self.disk(name),
            _lock: lock,
        })
    }

    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        self.inspect(name)?;
        let _lock = self
            .lock(name)?
            .ok_or_else(|| VolumeError::InUse(name.to_string()))?;
        let doomed = self
            .dir
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(self.dir.join(name), &doomed).map_err(Self::io(name))?;
        fs::remove_dir_all(&doomed).map_err(Self::io(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_parse_like_docker() {
        assert_eq!(
            parse_volume_flag("/srv/data:/data:ro").unwrap(),
            MountSpec::Bind {
                source: "/srv/data".into(),
                target: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume_flag("pgdata:/var/lib/pg").unwrap(),
            MountSpec::Volume {
                name: "pgdata".into(),
                target: "/var/lib/pg".into(),
                read_only: false
            }
        );
        match parse_volume_flag("./here:/x").unwrap() {
            MountSpec::Bind { source, .. } => assert!(source.is_absolute()),
            m => panic!("{m:?}"),
        }
        for bad in [
            "/data",
            "a:relative",
            "/a:/b:rx",
            "/a:/",
            "bad name:/x",
            "/a:/b:ro:x",
            ":/x",
        ] {
            assert!(parse_volume_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_and_tmpfs_flags_parse_like_docker() {
        assert_eq!(
            parse_mount_flag("type=bind,source=/srv,target=/srv,readonly").unwrap(),
            MountSpec::Bind {
                source: "/srv".into(),
                target: "/srv".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_mount_flag("type=tmpfs,dst=/scratch,tmpfs-size=64m").unwrap(),
            MountSpec::Tmpfs {
                target: "/scratch".into(),
                options: "size=64m".into()
            }
        );
        assert_eq!(
            parse_mount_flag("source=cache,target=/cache").unwrap(),
            MountSpec::Volume {
                name: "cache".into(),
                target: "/cache".into(),
                read_only: false
            }
        );
        assert_eq!(
            parse_tmpfs_flag("/run:size=8m,mode=755").unwrap(),
            MountSpec::Tmpfs {
                target: "/run".into(),
                options: "size=8m,mode=755".into()
            }
        );
        for bad in [
            "type=nfs,target=/x",
            "type=bind,target=/x",
            "source=x",
            "type=volume,source=/abs,target=/x",
            "type=bind,source=/a,target=/b,colour=red",
        ] {
            assert!(parse_mount_flag(bad).is_err(), "{bad}");
        }
        assert!(parse_tmpfs_flag("/x:exec").is_err());
        assert!(parse_tmpfs_flag("relative").is_err());
    }

    #[test]
    fn host_dirs_must_exist_and_be_directories() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_host_dir(t.path()).is_ok());
        let f = t.path().join("file");
        fs::write(&f, "x").unwrap();
        assert!(check_host_dir(&f)
            .unwrap_err()
            .to_string()
            .contains("not a directory"));
        assert!(check_host_dir(&t.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("no such directory on the host"));
    }

    #[test]
    fn volumes_are_created_locked_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let v = Volumes::open(&Paths::at(t.path()));
        let info = v.create("data", 64 << 20).unwrap();
        assert_eq!(info.size_bytes, 64 << 20);
        assert_eq!(v.list(), vec![info.clone()]);
        assert_eq!(
            v.create("data", 1 << 30).unwrap(),
            info,
            "an existing volume stands"
        );
        let attached = v.attach("data").unwrap();
        assert!(attached.disk.is_file());
        assert!(matches!(v.attach("data"), Err(VolumeError::InUse(_))));
        assert!(matches!(v.remove("data"), Err(VolumeError::InUse(_))));
        drop(attached);
        v.remove("data").unwrap();
        assert!(v.list().is_empty());
        assert!(matches!(v.inspect("data"), Err(VolumeError::NotFound(_))));
        assert!(matches!(
            v.create("../x", 1 << 20),
            Err(VolumeError::InvalidName(_))
        ));
    }
}
