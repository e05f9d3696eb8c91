//! What containerd hands the shim for a task, turned into cabin's terms: the bundle's
//! OCI `config.json` becomes a [`ContainerSpec`], the snapshotter's mounts become the
//! root directory the container's disk is built from, and an exec's OCI process
//! becomes an [`ExecRequest`]. Everything here is read from files and requests other
//! programs wrote, so sizes are bounded and every refusal says what is wrong.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cabin_base::confined::{Leaf, Links};
use cabin_containers::control::{ExecRequest, Limits};
use cabin_containers::spec::{CapabilitySets, Rlimit};
use cabin_containers::volumes::MountSpec;
use cabin_containers::{AccelRequest, ContainerSpec, RootSource};
use cabin_net::NetworkMode;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

/// The bundle's OCI runtime spec.
pub const CONFIG_FILE: &str = "config.json";
/// A config.json larger than this is not a real one.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Why a bundle cannot become a container.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle {bundle} has no readable {CONFIG_FILE}: {source}")]
    NoConfig { bundle: PathBuf, source: io::Error },
    #[error("the bundle's {CONFIG_FILE} is not a valid OCI runtime spec: {0}")]
    InvalidConfig(String),
    #[error("the bundle's {CONFIG_FILE} has no process to run (process.args is empty)")]
    NoProcess,
    #[error("the task's root filesystem {0} is missing or empty: containerd gave no snapshot mounts and the bundle's root.path holds nothing")]
    NoRoot(PathBuf),
    #[error("mounting the task's root filesystem ({what}) on {target}: {detail}")]
    Mount {
        what: String,
        target: PathBuf,
        detail: String,
    },
    #[error("the exec's process spec is not valid: {0}")]
    InvalidProcess(String),
    #[error("the task's new resources are not valid: {0}")]
    InvalidResources(String),
}

/// Reads `bundle`'s config.json (bounded).
pub fn read_config(bundle: &Path) -> Result<Spec, BundleError> {
    let bytes = cabin_base::files::read_bounded(&bundle.join(CONFIG_FILE), MAX_CONFIG_BYTES)
        .map_err(|source| BundleError::NoConfig {
            bundle: bundle.to_path_buf(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| BundleError::InvalidConfig(e.to_string()))
}

/// One of the snapshotter's mounts for the task's root (`CreateTaskRequest.rootfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// CRI's annotation saying whether a container is a pod's sandbox or one of its
/// containers.
pub const CONTAINER_TYPE_ANNOTATION: &str = "io.kubernetes.cri.container-type";

/// A task's part in a CRI pod, from its spec's annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodPart {
    /// Not CRI's (`ctr run`).
    Alone,
    Sandbox,
    /// A container of the pod whose sandbox is the task with this ID.
    Member(String),
}

pub fn pod_part(spec: &Spec) -> PodPart {
    let Some(a) = spec.annotations().as_ref() else {
        return PodPart::Alone;
    };
    match (
        a.get(CONTAINER_TYPE_ANNOTATION).map(String::as_str),
        a.get(crate::SANDBOX_ANNOTATION),
    ) {
        (Some("sandbox"), _) => PodPart::Sandbox,
        (Some("container"), Some(sandbox)) => PodPart::Member(sandbox.clone()),
        _ => PodPart::Alone,
    }
}

/// A place a task's root or one of its folders is mounted on. On a pod's share the
/// guest can write, so the place is made and opened without following links, and the
/// mount is made on that open directory or file (`/proc/self/fd/N`): nothing the guest
/// renames or links meanwhile can move it elsewhere on the host.
pub struct MountPoint {
    /// Its real path (labels, unmounts).
    pub path: PathBuf,
    /// The path the mount is made on.
    on: PathBuf,
    _open: Option<std::fs::File>,
}

impl MountPoint {
    /// A place cabin alone writes (the bundle's `rootfs`).
    pub fn at(path: PathBuf) -> MountPoint {
        MountPoint {
            on: path.clone(),
            path,
            _open: None,
        }
    }

    /// `rel` below `share` (a pod's share), made as `leaf` where missing.
    pub fn in_share(share: &Path, rel: &Path, leaf: Leaf) -> Result<MountPoint, BundleError> {
        let path = share.join(rel);
        let failed = |e: io::Error| BundleError::Mount {
            what: "its mount point".into(),
            target: path.clone(),
            detail: e.to_string(),
        };
        let root = cabin_base::confined::Root::open(share, Links::Refuse).map_err(failed)?;
        let open = root.make_path(rel, leaf, 0o755).map_err(failed)?;
        Ok(MountPoint {
            on: PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&open)
            )),
            path,
            _open: Some(open),
        })
    }
}

/// A pod's network namespace, made by CRI and wired by CNI (the sandbox spec names its
/// path): the VM's card takes over its interface. The host's own namespace is never
/// taken over (a spec naming it gets the user-mode network, as any task joining a
/// namespace by path).
fn pod_network(c: &mut ContainerSpec, spec: &Spec) {
    let Some(path) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|n| n.iter().find(|n| n.typ() == LinuxNamespaceType::Network))
        .and_then(|n| n.path().clone())
    else {
        return;
    };
    let inode = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let ours = inode(Path::new("/proc/self/ns/net"));
    if inode(&path).is_some() && inode(&path) != ours {
        c.network = NetworkMode::Pod;
        c.netns = Some(path);
    }
}

/// A pod's VM is its sandbox's: on the pod's network when CNI made one, and sized for
/// the pod's containers when CRI says what they need (containerd 1.7's
/// `io.kubernetes.cri.sandbox-memory` and `sandbox-cpu-quota`/`-period` annotations);
/// else as a container without limits.
pub fn sandbox_vm(c: &mut ContainerSpec, spec: &Spec) {
    pod_network(c, spec);
    let Some(a) = spec.annotations().as_ref() else {
        return;
    };
    let number = |key: &str| {
        a.get(&format!("io.kubernetes.cri.sandbox-{key}"))
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v > 0)
    };
    if let Some(memory) = number("memory") {
        c.memory_bytes = Some(memory as u64);
    }
    if let Some(quota) = number("cpu-quota") {
        let period = number("cpu-period").unwrap_or(100_000);
        c.cpus = Some(quota as f64 / period as f64);
    }
}

/// The directory the task's root filesystem is in: containerd's snapshot mounted on
/// `target` when it gave mounts (in order), else the spec's `root.path` (relative to
/// the bundle), as `ctr run --rootfs` leaves it, bound on `target` when that is not
/// the bundle's `rootfs` (a pod member's root, on its pod's share).
pub async fn root_dir(
    bundle: &Path,
    spec: &Spec,
    mounts: &[RootMount],
    target: &MountPoint,
) -> Result<PathBuf, BundleError> {
    let dir = if mounts.is_empty() {
        let path = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let dir = bundle.join(path);
        if target.path == bundle.join("rootfs") {
            dir
        } else {
            bind(&dir, target, false)?;
            target.path.clone()
        }
    } else {
        if target._open.is_none() {
            std::fs::create_dir_all(&target.path).map_err(|e| BundleError::Mount {
                what: "its mount point".into(),
                target: target.path.clone(),
                detail: e.to_string(),
            })?;
        }
        for m in mounts {
            let mount = containerd_shim::protos::api::Mount {
                type_: m.kind.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
                ..Default::default()
            };
            if let Err(e) =
                containerd_shim::asynchronous::util::mount_rootfs(&mount, &target.on).await
            {
                // What was mounted before it goes too.
                unmount_root(&target.path);
                return Err(BundleError::Mount {
                    what: format!("{} {}", m.kind, m.source),
                    target: target.path.clone(),
                    detail: e.to_string(),
                });
            }
        }
        target.path.clone()
    };
    let has_entries = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
    if !has_entries {
        unmount_root(&target.path);
        return Err(BundleError::NoRoot(dir));
    }
    Ok(dir)
}

/// `source` (a directory or a file) bound on `target`, read-only on the host too when
/// asked (the guest's own read-only mount is not all that stands between a guest and
/// the host's files).
pub fn bind(source: &Path, target: &MountPoint, read_only: bool) -> Result<(), BundleError> {
    use nix::mount::MsFlags;
    let failed = |e: &dyn std::fmt::Display| BundleError::Mount {
        what: format!("bind {}", source.display()),
        target: target.path.clone(),
        detail: e.to_string(),
    };
    if target._open.is_none() {
        std::fs::create_dir_all(&target.path).map_err(|e| failed(&e))?;
    }
    nix::mount::mount(
        Some(source),
        &target.on,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| failed(&e))?;
    if read_only {
        // The new mount is on top of the open place now: its real path names it.
        nix::mount::mount(
            None::<&str>,
            &target.path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| failed(&e))?;
    }
    Ok(())
}

/// Unmounts whatever is mounted on `target`, the task's root (nothing: nothing to do),
/// never following a link there.
pub fn unmount_root(target: &Path) {
    use nix::mount::MntFlags;
    // Lazily: a snapshot still busy (a disk being built from it) goes when it is free.
    while nix::mount::umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).is_ok() {}
}

/// The container the task is: its process, limits and mounts from `spec`, its root
/// filesystem from `root`.
pub fn container_spec(
    spec: &Spec,
    root: &Path,
    stdin: bool,
    accel: AccelRequest,
) -> Result<ContainerSpec, BundleError> {
    let process = spec.process().as_ref().ok_or(BundleError::NoProcess)?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(BundleError::NoProcess);
    }
    // The whole command line, as runc runs it: a root directory has no image
    // defaults to merge with.
    let mut c = ContainerSpec::new(RootSource::Dir(root.to_path_buf()), args);
    c.env = process.env().clone().unwrap_or_default();
    c.cwd = process.cwd().display().to_string();
    c.user = user_of(process);
    c.tty = process.terminal().unwrap_or(false);
    c.stdin = stdin;
    c.accel = accel;
    c.hostname = spec
        .hostname()
        .clone()
        .filter(|h| !h.is_empty())
        .or_else(|| pod_hostname(spec));
    c.read_only = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    c.rlimits = process
        .rlimits()
        .iter()
        .flatten()
        .filter_map(|r| {
            let name = serde_json::to_value(r.typ()).ok()?;
            let name = name.as_str()?.strip_prefix("RLIMIT_")?.to_ascii_lowercase();
            Some(Rlimit {
                name,
                soft: r.soft(),
                hard: r.hard(),
            })
        })
        .collect();
    if let Some(linux) = spec.linux() {
        if let Some(res) = linux.resources() {
            let limits = limits_of(res);
            c.memory_bytes = limits.memory_bytes.filter(|m| *m > 0);
            c.cpus = limits.cpus.filter(|c| *c > 0.0);
            c.pids_limit = limits.pids_limit.filter(|p| *p > 0);
        }
        c.network = network_of(linux.namespaces().as_deref().unwrap_or_default());
        // As runc: paths the spec does not list are neither masked nor read-only.
        c.masked_paths = Some(linux.masked_paths().clone().unwrap_or_default());
        c.readonly_paths = Some(linux.readonly_paths().clone().unwrap_or_default());
    } else {
        c.network = NetworkMode::User;
        c.masked_paths = Some(Vec::new());
        c.readonly_paths = Some(Vec::new());
    }
    // As runc: a spec without capabilities gives the process none.
    c.capabilities = Some(
        process
            .capabilities()
            .as_ref()
            .map(capability_sets)
            .unwrap_or_default(),
    );
    c.no_new_privileges = process.no_new_privileges().unwrap_or(false);
    c.mounts = mounts_of(spec);
    c.check()
        .map_err(|e| BundleError::InvalidConfig(e.to_string()))?;
    Ok(c)
}

/// OCI resources as cabin's limits: None where they say nothing, Some(0) where they
/// say "no limit" (-1, or a CPU quota of none).
pub fn limits_of(res: &oci_spec::runtime::LinuxResources) -> Limits {
    Limits {
        memory_bytes: res
            .memory()
            .as_ref()
            .and_then(|m| m.limit())
            .map(|l| l.max(0) as u64),
        cpus: res.cpu().as_ref().and_then(|cpu| {
            let quota = cpu.quota()?;
            if quota <= 0 {
                return Some(0.0);
            }
            let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
            Some(quota as f64 / period as f64)
        }),
        pids_limit: res.pids().as_ref().map(|p| p.limit().max(0) as u64),
    }
}

/// containerd's Update: the new resources (OCI's LinuxResources as JSON, in an Any)
/// as cabin's limits.
pub fn update_limits(type_url: &str, value: &[u8]) -> Result<Limits, BundleError> {
    if !type_url.ends_with("LinuxResources") {
        return Err(BundleError::InvalidResources(format!(
            "{type_url:?} is not OCI's LinuxResources"
        )));
    }
    let res: oci_spec::runtime::LinuxResources =
        serde_json::from_slice(value).map_err(|e| BundleError::InvalidResources(e.to_string()))?;
    Ok(limits_of(&res))
}

/// The spec's capability sets by name, as runc applies them.
fn capability_sets(caps: &oci_spec::runtime::LinuxCapabilities) -> CapabilitySets {
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut names: Vec<String> = set
            .iter()
            .flatten()
            .filter_map(|c| Some(serde_json::to_value(c).ok()?.as_str()?.to_string()))
            .collect();
        names.sort();
        names
    };
    CapabilitySets {
        bounding: names(caps.bounding()),
        effective: names(caps.effective()),
        permitted: names(caps.permitted()),
        inheritable: names(caps.inheritable()),
        ambient: names(caps.ambient()),
        root_only: false,
    }
}

/// A pod's container has no host name of its own: it joins its sandbox's UTS
/// namespace, and CRI binds the pod's `/etc/hostname` file into it. cabin's VM takes
/// the name from that file.
fn pod_hostname(spec: &Spec) -> Option<String> {
    let source = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/etc/hostname"))?
        .source()
        .clone()?;
    let bytes = cabin_base::files::read_bounded(&source, 256).ok()?;
    let name = String::from_utf8(bytes).ok()?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// containerd resolves user names before the spec is written: numeric IDs.
fn user_of(process: &Process) -> String {
    let u = process.user();
    format!("{}:{}", u.uid(), u.gid())
}

/// A new, empty network namespace (`ctr run` without `--net-host`) is a VM without a
/// network card; the host's network (no network namespace in the spec) is the VM's
/// user-mode network, which reaches what the host reaches. A namespace path (CRI's
/// pod network, made by CNI) is not joined yet: such tasks get the user-mode network.
fn network_of(namespaces: &[oci_spec::runtime::LinuxNamespace]) -> NetworkMode {
    match namespaces
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Network)
    {
        Some(n) if n.path().is_none() => NetworkMode::None,
        _ => NetworkMode::User,
    }
}

/// Leaves out the binds of single files: a VM of its own takes folders (9p shares),
/// not files. cabin-init writes the container's own /etc/hosts, /etc/hostname and
/// /etc/resolv.conf.
pub fn drop_file_binds(c: &mut ContainerSpec) {
    c.mounts.retain(|m| match m {
        MountSpec::Bind { source, target, .. } if !source.is_dir() => {
            log::info!(
                "the file {} bound on {target} is left out: only a pod's containers take files",
                source.display()
            );
            false
        }
        _ => true,
    });
}

/// Makes `c` a container of the pod whose sandbox is cabin's container `sandbox`: it
/// runs in the sandbox's VM, on its network. Its host folders and files (CRI's
/// /etc/hosts and /etc/resolv.conf among them) reach that running VM on the pod's
/// share: each is bound at `<task>/mounts/<n>` there.
pub fn join_pod(
    c: &mut ContainerSpec,
    sandbox: &str,
    share: &Path,
    task: &str,
) -> Result<(), BundleError> {
    c.pod = Some(cabin_containers::pod::PodRole::Member {
        sandbox: sandbox.to_string(),
    });
    c.network = NetworkMode::None;
    c.publish.clear();
    for (n, m) in c.mounts.iter_mut().enumerate() {
        if let MountSpec::Bind {
            source, read_only, ..
        } = m
        {
            let leaf = if source.is_dir() {
                Leaf::Dir
            } else {
                Leaf::File
            };
            let place = MountPoint::in_share(
                share,
                &Path::new(task).join("mounts").join(n.to_string()),
                leaf,
            )?;
            bind(source, &place, *read_only)?;
            *source = place.path;
        }
    }
    Ok(())
}

/// The spec's mounts cabin makes in the VM: host directories and files (binds; files
/// reach only a pod's containers, see [`drop_file_binds`]) and tmpfs mounts. The
/// kernel's file systems (proc, sysfs, devpts, mqueue, cgroup) are cabin-init's own in
/// every container.
fn mounts_of(spec: &Spec) -> Vec<MountSpec> {
    let mut out = Vec::new();
    for m in spec.mounts().iter().flatten() {
        let target = m.destination().display().to_string();
        let options = m.options().clone().unwrap_or_default();
        let kind = m.typ().as_deref().unwrap_or("");
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if is_bind {
            // The guest's own /dev, /proc and /sys are cabin-init's (CRI binds the
            // pod's /dev/shm from the host: the container gets its own).
            let kernel_owned = ["/dev", "/proc", "/sys"]
                .iter()
                .any(|k| target == *k || target.starts_with(&format!("{k}/")));
            let Some(source) = m.source().as_ref().filter(|_| !kernel_owned) else {
                continue;
            };
            if !(source.is_dir() || source.is_file()) {
                continue;
            }
            out.push(MountSpec::Bind {
                source: source.clone(),
                target,
                read_only: options.iter().any(|o| o == "ro"),
            });
        } else if kind == "tmpfs" && !matches!(target.as_str(), "/dev" | "/dev/shm" | "/run") {
            let options = options
                .iter()
                .filter(|o| {
                    o.split('=')
                        .next()
                        .is_some_and(|k| matches!(k, "size" | "mode" | "nr_inodes" | "uid" | "gid"))
                })
                .cloned()
                .collect::<Vec<_>>()
                .join(",");
            out.push(MountSpec::Tmpfs { target, options });
        }
    }
    out
}

/// The process of an exec: the OCI `Process` containerd sends as JSON in the request's
/// `spec` (type URL `types.containerd.io/opencontainers/runtime-spec/1/Process`).
pub fn exec_request(json: &[u8], stdin: bool) -> Result<ExecRequest, BundleError> {
    let process: Process =
        serde_json::from_slice(json).map_err(|e| BundleError::InvalidProcess(e.to_string()))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(BundleError::InvalidProcess("its args are empty".into()));
    }
    let tty = process.terminal().unwrap_or(false).then(|| {
        let size = process.console_size();
        (
            size.map(|s| s.height() as u16)
                .filter(|h| *h > 0)
                .unwrap_or(24),
            size.map(|s| s.width() as u16)
                .filter(|w| *w > 0)
                .unwrap_or(80),
        )
    });
    Ok(ExecRequest {
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().display().to_string(),
        user: user_of(&process),
        stdin,
        tty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    const CTR_SPEC: &str = r#"{
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": true,
            "user": {"uid": 1000, "gid": 100},
            "args": ["sh", "-c", "echo hi"],
            "env": ["PATH=/bin", "A=b"],
            "cwd": "/work",
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
            "capabilities": {
                "bounding": ["CAP_KILL", "CAP_CHOWN"],
                "effective": ["CAP_KILL"],
                "permitted": ["CAP_KILL"]
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "box",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "size=65536k"]},
            {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]},
            {"destination": "/dev/shm", "type": "bind", "source": "/tmp", "options": ["rbind"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind"]}
        ],
        "linux": {
            "resources": {
                "memory": {"limit": 268435456},
                "cpu": {"quota": 150000, "period": 100000},
                "pids": {"limit": 64}
            },
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    }"#;

    #[test]
    fn new_resources_change_only_what_they_name_and_minus_one_means_no_limit() {
        let l = update_limits(
            "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
            br#"{"memory": {"limit": 67108864}, "cpu": {"shares": 2, "quota": -1}}"#,
        )
        .unwrap();
        assert_eq!(
            l,
            Limits {
                memory_bytes: Some(64 << 20),
                cpus: Some(0.0),
                pids_limit: None
            }
        );
        assert!(update_limits("types.containerd.io/WindowsResources", b"{}").is_err());
        assert!(update_limits("x/LinuxResources", b"not json").is_err());
    }

    #[test]
    fn a_spec_that_masks_a_path_outside_the_root_is_refused() {
        let bad = CTR_SPEC.replace(
            r#""maskedPaths": ["/proc/kcore"]"#,
            r#""maskedPaths": ["/../etc"]"#,
        );
        let e = container_spec(
            &spec(&bad),
            Path::new("/b/rootfs"),
            false,
            AccelRequest::Auto,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("without '..'"), "{e}");
    }

    #[test]
    fn a_ctr_spec_becomes_the_container_it_describes() {
        let s = spec(CTR_SPEC);
        let c = container_spec(&s, Path::new("/b/rootfs"), true, AccelRequest::Auto).unwrap();
        assert_eq!(c.root, RootSource::Dir("/b/rootfs".into()));
        assert_eq!(c.args, ["sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.env, ["PATH=/bin", "A=b"]);
        assert_eq!((c.cwd.as_str(), c.user.as_str()), ("/work", "1000:100"));
        assert!(c.tty && c.stdin && c.read_only);
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(c.memory_bytes, Some(256 << 20));
        assert_eq!(c.cpus, Some(1.5));
        assert_eq!(c.pids_limit, Some(64));
        assert_eq!(
            c.rlimits,
            [Rlimit {
                name: "nofile".into(),
                soft: 512,
                hard: 1024
            }]
        );
        // A new network namespace without a path: no network card.
        assert_eq!(c.network, NetworkMode::None);
        assert_eq!(
            c.capabilities,
            Some(CapabilitySets {
                bounding: vec!["CAP_CHOWN".into(), "CAP_KILL".into()],
                effective: vec!["CAP_KILL".into()],
                permitted: vec!["CAP_KILL".into()],
                inheritable: vec![],
                ambient: vec![],
                root_only: false,
            })
        );
        assert!(c.no_new_privileges);
        assert_eq!(c.masked_paths, Some(vec!["/proc/kcore".to_string()]));
        assert_eq!(c.readonly_paths, Some(vec!["/proc/sys".to_string()]));
        assert_eq!(
            c.mounts,
            [
                MountSpec::Tmpfs {
                    target: "/scratch".into(),
                    options: "size=65536k".into()
                },
                MountSpec::Bind {
                    source: "/tmp".into(),
                    target: "/data".into(),
                    read_only: true
                },
                MountSpec::Bind {
                    source: "/etc/hosts".into(),
                    target: "/etc/hosts".into(),
                    read_only: false
                },
            ]
        );
        // A task of its own takes folders, not files.
        let mut own = c.clone();
        drop_file_binds(&mut own);
        assert_eq!(own.mounts.len(), 2);
    }

    #[test]
    fn the_host_network_is_the_user_mode_network_and_a_spec_without_a_process_is_refused() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"},"linux":{"namespaces":[{"type":"pid"}]}}"#,
        );
        let c = container_spec(&s, Path::new("/r"), false, AccelRequest::Auto).unwrap();
        assert_eq!(c.network, NetworkMode::User);
        assert!(!c.stdin && !c.tty && !c.read_only);
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}}"#,
        );
        assert!(matches!(
            container_spec(&s, Path::new("/r"), false, AccelRequest::Auto),
            Err(BundleError::NoProcess)
        ));
    }

    #[test]
    fn a_pod_container_takes_its_host_name_from_the_pods_hostname_file() {
        let t = tempfile::tempdir().unwrap();
        let file = t.path().join("hostname");
        std::fs::write(&file, "pod1\n").unwrap();
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":0,"gid":0}},"args":["true"],"cwd":"/"}},
               "mounts":[{{"destination":"/etc/hostname","type":"bind","source":"{}","options":["rbind","ro"]}}]}}"#,
            file.display()
        ));
        let c = container_spec(&s, Path::new("/r"), false, AccelRequest::Auto).unwrap();
        assert_eq!(c.hostname.as_deref(), Some("pod1"));
        // A file reaches a pod's containers only (on the pod's share).
        assert_eq!(c.mounts.len(), 1);
        let mut own = c.clone();
        drop_file_binds(&mut own);
        assert!(own.mounts.is_empty());
    }

    #[test]
    fn an_exec_process_is_read_from_its_json_and_garbage_is_refused() {
        let x = exec_request(
            br#"{"terminal":true,"consoleSize":{"height":30,"width":100},"user":{"uid":5,"gid":6},"args":["ls","/"],"env":["A=1"],"cwd":"/tmp"}"#,
            true,
        )
        .unwrap();
        assert_eq!(x.args, ["ls", "/"]);
        assert_eq!((x.user.as_str(), x.cwd.as_str()), ("5:6", "/tmp"));
        assert_eq!(x.tty, Some((30, 100)));
        assert!(x.stdin);
        assert!(matches!(
            exec_request(b"{nope", false),
            Err(BundleError::InvalidProcess(_))
        ));
        assert!(matches!(
            exec_request(br#"{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}"#, false),
            Err(BundleError::InvalidProcess(_))
        ));
    }

    #[test]
    fn a_bundle_without_config_or_with_a_broken_one_says_so() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_config(t.path()),
            Err(BundleError::NoConfig { .. })
        ));
        std::fs::write(t.path().join(CONFIG_FILE), "{\"ociVersion\": 3").unwrap();
        let e = read_config(t.path()).unwrap_err();
        assert!(
            e.to_string().contains("not a valid OCI runtime spec"),
            "{e}"
        );
    }
}
