//! What a container is made of, as the user asked for it: its [`ContainerSpec`], kept
//! as a versioned JSON record beside its state (`<data>/containers/<id>/config.json`),
//! written when the container is created and read by its supervisor at every start.
//! Nothing in it is a command line: renaming a flag of the CLI changes nothing here.
//!
//! The record carries a top-level `"version"`. A record of a newer version is refused
//! (this cabin cannot know what its fields mean), and a container made by a cabin
//! before these records (its options were a saved command line, `run-args.json`) is
//! refused with what to do; neither is ever misread.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cabin_base::files::{read_bounded, write_atomic};
use cabin_net::NetworkMode;
use cabin_vmm::{AccelRequest, PortForward};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::root::RootSource;
use crate::volumes::MountSpec;

/// The version of `config.json` this cabin writes and reads.
pub const SPEC_VERSION: u32 = 1;
/// The record's file in the container's directory.
pub const SPEC_FILE: &str = "config.json";
/// What the cabin before versioned records kept instead.
const LEGACY_ARGS_FILE: &str = "run-args.json";
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// A resource limit (`--ulimit NAME=SOFT[:HARD]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

/// A process's capability sets, by name (`CAP_CHOWN`), as OCI's runtime spec has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapabilitySets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
    /// The sets are root's: a process of another user has none (Docker's way); else
    /// they are kept across the change of user (runc's).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub root_only: bool,
}

/// Docker's default capabilities.
const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];

/// Linux's capabilities in number order (linux/capability.h), without `CAP_`.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The number of capability `name` (`CAP_NET_ADMIN`, or without the prefix; any case).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|n| n as u32)
}

impl CapabilitySets {
    /// Docker's sets for `--cap-add` and `--cap-drop` (names with or without `CAP_`,
    /// any case; `ALL`): its default set, or every capability when `add` has ALL,
    /// without the dropped ones (all, with ALL), with the added ones; root's only,
    /// as Docker gives them.
    pub fn docker(add: &[String], drop: &[String]) -> Result<CapabilitySets, SpecError> {
        let bare = |n: &String| -> Result<Option<&'static str>, SpecError> {
            if n.eq_ignore_ascii_case("all") {
                return Ok(None);
            }
            capability_number(n)
                .map(|i| Some(CAPABILITIES[i as usize]))
                .ok_or_else(|| SpecError::Invalid(format!("unknown capability {n:?}")))
        };
        let (mut set, mut adds) = (Vec::new(), Vec::new());
        let mut add_all = false;
        for n in add {
            match bare(n)? {
                Some(c) => adds.push(c),
                None => add_all = true,
            }
        }
        set.extend(if add_all {
            &CAPABILITIES[..]
        } else {
            &DOCKER_DEFAULT[..]
        });
        for n in drop {
            match bare(n)? {
                Some(c) => set.retain(|s| *s != c),
                None => set.clear(),
            }
        }
        for c in adds {
            if !set.contains(&c) {
                set.push(c);
            }
        }
        Ok(CapabilitySets::root_set(&set))
    }

    /// Every capability (Docker's `--privileged`, inside the container's VM).
    pub fn all() -> CapabilitySets {
        CapabilitySets::root_set(&CAPABILITIES)
    }

    fn root_set(set: &[&str]) -> CapabilitySets {
        let names: Vec<String> = set.iter().map(|c| format!("CAP_{c}")).collect();
        CapabilitySets {
            bounding: names.clone(),
            effective: names.clone(),
            permitted: names,
            inheritable: Vec::new(),
            ambient: Vec::new(),
            root_only: true,
        }
    }

    /// The sets as the guest takes them: numbers.
    pub fn numbers(&self) -> Result<cabin_proto::v1::Capabilities, SpecError> {
        let numbers = |set: &[String]| -> Result<Vec<u32>, SpecError> {
            set.iter()
                .map(|n| {
                    capability_number(n)
                        .ok_or_else(|| SpecError::Invalid(format!("unknown capability {n:?}")))
                })
                .collect()
        };
        Ok(cabin_proto::v1::Capabilities {
            bounding: numbers(&self.bounding)?,
            effective: numbers(&self.effective)?,
            permitted: numbers(&self.permitted)?,
            inheritable: numbers(&self.inheritable)?,
            ambient: numbers(&self.ambient)?,
            root_only: self.root_only,
        })
    }
}

impl ContainerSpec {
    /// Docker's security options (`--privileged`, `--cap-add`, `--cap-drop`,
    /// `--security-opt`), as Docker gives them. Privileged is every capability and
    /// nothing masked, inside the container's VM (no host device is passed in).
    pub fn apply_docker_security(
        &mut self,
        privileged: bool,
        cap_add: &[String],
        cap_drop: &[String],
        security_opt: &[String],
    ) -> Result<(), SpecError> {
        if privileged {
            self.capabilities = Some(CapabilitySets::all());
            self.masked_paths = Some(Vec::new());
            self.readonly_paths = Some(Vec::new());
        } else if !cap_add.is_empty() || !cap_drop.is_empty() {
            self.capabilities = Some(CapabilitySets::docker(cap_add, cap_drop)?);
        }
        for opt in security_opt {
            match opt.replace('=', ":").as_str() {
                "no-new-privileges" | "no-new-privileges:true" => self.no_new_privileges = true,
                "no-new-privileges:false" => self.no_new_privileges = false,
                // What a container of cabin has already: no seccomp profile or LSM
                // label of Docker's in its VM.
                "seccomp:unconfined" | "apparmor:unconfined" | "label:disable" => {}
                other => {
                    return Err(SpecError::Invalid(format!(
                        "unsupported security option {other:?}: cabin takes no-new-privileges (a container's VM is its isolation; it has no seccomp profile or LSM label of Docker's)"
                    )))
                }
            }
        }
        Ok(())
    }

    /// What the spec asks that no container can have, found before it is created.
    pub fn check(&self) -> Result<(), SpecError> {
        if let Some(caps) = &self.capabilities {
            caps.numbers()?;
        }
        for path in self
            .masked_paths
            .iter()
            .chain(&self.readonly_paths)
            .flatten()
        {
            let p = Path::new(path);
            let normal = p.is_absolute()
                && p.components().count() > 1
                && p.components()
                    .skip(1)
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !normal {
                return Err(SpecError::Invalid(format!(
                    "masked and read-only paths must be absolute, below / and without '..': {path:?}"
                )));
            }
        }
        if matches!(self.pod, Some(crate::pod::PodRole::Member { .. })) {
            crate::pod::check_member(self).map_err(|e| SpecError::Invalid(e.to_string()))?;
        }
        Ok(())
    }
}

/// When a container's process ends, whether the supervisor starts it again (docker's
/// `--restart`). A container stopped with `cabin stop` is never restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// After a non-zero exit, at most this many times (None: without limit).
    OnFailure(Option<u32>),
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid restart policy {0:?}: use no, on-failure[:N] or always")]
pub struct RestartPolicyError(pub String);

impl std::str::FromStr for RestartPolicy {
    type Err = RestartPolicyError;
    fn from_str(s: &str) -> Result<Self, RestartPolicyError> {
        let bad = || RestartPolicyError(s.to_string());
        match s.split_once(':') {
            None => match s {
                "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure(None)),
                "always" | "unless-stopped" => Ok(RestartPolicy::Always),
                _ => Err(bad()),
            },
            Some(("on-failure", n)) => n
                .parse()
                .map(|n| RestartPolicy::OnFailure(Some(n)))
                .map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }
}

impl fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::OnFailure(None) => f.write_str("on-failure"),
            RestartPolicy::OnFailure(Some(n)) => write!(f, "on-failure:{n}"),
            RestartPolicy::Always => f.write_str("always"),
        }
    }
}

impl Serialize for RestartPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl RestartPolicy {
    pub fn wants_restart(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

/// Whole seconds on the wire.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Durations as seconds with a fraction (health check timings are often below one).
pub(crate) mod seconds_f64 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// A user-defined network a container joins, and the extra names (aliases) its peers
/// there may call it by (docker's `--network-alias`, compose's service names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNetwork {
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Everything a container is made of. Paths in it are absolute (a front end resolves
/// relative ones where the user gave them), so it means the same wherever it is read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub root: RootSource,
    /// Replaces the image's entrypoint (and drops its Cmd), as docker's --entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// The command; empty means the image's Cmd.
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub stdin: bool,
    /// A reaper runs as PID 1 with the command as its child (docker's --init).
    pub init: bool,
    pub hostname: Option<String>,
    /// Mount the root filesystem read-only (docker's --read-only).
    pub read_only: bool,
    /// CPUs as docker's --cpus: the VM gets ceil(cpus) vCPUs, the cgroup the exact quota.
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub pids_limit: Option<u64>,
    pub rlimits: Vec<Rlimit>,
    /// A guest kernel other than cabin's.
    pub kernel: Option<PathBuf>,
    pub accel: AccelRequest,
    #[serde(with = "seconds")]
    pub boot_timeout: Duration,
    pub extra_kernel_args: String,
    pub network: NetworkMode,
    /// With `network` bridge: a user-defined network to join instead of `cabin0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_network: Option<UserNetwork>,
    /// Its health check (`--health-cmd`, or the image's HEALTHCHECK); None: the image's
    /// if it has one. `HealthTest::Exec(["NONE"])` turns the image's off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::HealthCheck>,
    /// Published ports (`-p`); a host port 0 is any free one, chosen at each start.
    pub publish: Vec<PortForward>,
    /// Host folders, volumes and tmpfs mounts, in order.
    pub mounts: Vec<MountSpec>,
    pub restart: RestartPolicy,
    /// The terminal's size at the start (`-t`): rows and columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty_size: Option<(u16, u16)>,
    /// With `network` pod: the network namespace (a path such as
    /// `/var/run/netns/cni-...`) whose interface the VM's card takes over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// Its part in a pod (several containers in one VM, as containerd's sandboxes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<crate::pod::PodRole>,
    /// Its processes' capabilities, as OCI's sets; None: docker's default set, which a
    /// user other than root loses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilitySets>,
    /// Paths its processes see masked (nothing there) and read-only, absolute in the
    /// container; None: docker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_paths: Option<Vec<String>>,
    /// Its processes cannot gain privileges by exec (set-user-ID files, file
    /// capabilities): OCI's noNewPrivileges.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_new_privileges: bool,
    /// The container's name, for its peers on a bridge network (its record has it).
    #[serde(skip)]
    pub name: Option<String>,
    /// The container's ID in the store, for its network endpoint (its record has it).
    #[serde(skip)]
    pub container_id: Option<String>,
    /// Keep the container's writable layer in this file from one start to the next
    /// (containers in the store); None: a layer that dies with the VM.
    #[serde(skip)]
    pub layer: Option<PathBuf>,
}

impl ContainerSpec {
    pub fn new(root: RootSource, args: Vec<String>) -> Self {
        ContainerSpec {
            root,
            entrypoint: None,
            args,
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            tty: false,
            stdin: false,
            init: false,
            hostname: None,
            read_only: false,
            cpus: None,
            memory_bytes: None,
            pids_limit: None,
            rlimits: Vec::new(),
            kernel: None,
            accel: AccelRequest::Auto,
            boot_timeout: Duration::from_secs(60),
            extra_kernel_args: String::new(),
            network: NetworkMode::default(),
            user_network: None,
            healthcheck: None,
            publish: Vec::new(),
            mounts: Vec::new(),
            restart: RestartPolicy::No,
            tty_size: None,
            netns: None,
            pod: None,
            capabilities: None,
            masked_paths: None,
            readonly_paths: None,
            no_new_privileges: false,
            name: None,
            container_id: None,
            layer: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("container {id} was made by an earlier cabin, which kept its options as a command line; it cannot be started by this one: remove it (cabin rm {id}) and create it again")]
    Legacy { id: String },
    #[error("container {id}'s record was written by a newer cabin (version {version}; this one reads {SPEC_VERSION}): upgrade cabin to start it")]
    Newer { id: String, version: u32 },
    #[error(
        "container {id} has no record of its options ({SPEC_FILE}); remove it (cabin rm {id})"
    )]
    Missing { id: String },
    #[error("container {id}'s record of its options is unreadable ({detail}); remove it (cabin rm {id})")]
    Unreadable { id: String, detail: String },
    #[error("saving container {id}'s options: {source}")]
    Write { id: String, source: io::Error },
    #[error("invalid container: {0}")]
    Invalid(String),
}

#[derive(Serialize)]
struct Record<'a> {
    version: u32,
    #[serde(flatten)]
    spec: &'a ContainerSpec,
}

#[derive(Deserialize)]
struct Version {
    version: Option<u32>,
}

/// Writes `spec` as container `id`'s record in `dir`, crash-safely.
pub fn write(dir: &Path, id: &str, spec: &ContainerSpec) -> Result<(), SpecError> {
    let bytes = serde_json::to_vec_pretty(&Record {
        version: SPEC_VERSION,
        spec,
    })
    .map_err(|e| SpecError::Write {
        id: id.to_string(),
        source: e.into(),
    })?;
    write_atomic(&dir.join(SPEC_FILE), &bytes, 0o600).map_err(|source| SpecError::Write {
        id: id.to_string(),
        source,
    })
}

/// Reads container `id`'s record from `dir` (see the module comment for what is
/// refused).
pub fn read(dir: &Path, id: &str) -> Result<ContainerSpec, SpecError> {
    let unreadable = |detail: String| SpecError::Unreadable {
        id: id.to_string(),
        detail,
    };
    let bytes = match read_bounded(&dir.join(SPEC_FILE), MAX_SPEC_BYTES) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(if dir.join(LEGACY_ARGS_FILE).exists() {
                SpecError::Legacy { id: id.to_string() }
            } else {
                SpecError::Missing { id: id.to_string() }
            })
        }
        Err(e) => return Err(unreadable(e.to_string())),
    };
    match serde_json::from_slice::<Version>(&bytes) {
        Ok(Version {
            version: Some(SPEC_VERSION),
        }) => {}
        Ok(Version {
            version: Some(version),
        }) if version > SPEC_VERSION => {
            return Err(SpecError::Newer {
                id: id.to_string(),
                version,
            })
        }
        Ok(Version { version }) => return Err(unreadable(format!("unknown version {version:?}"))),
        Err(e) => return Err(unreadable(e.to_string())),
    }
    serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_cap_add_and_cap_drop_start_from_its_default_set() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let c = CapabilitySets::docker(&s(&["net_admin"]), &s(&["CAP_CHOWN"])).unwrap();
        assert_eq!(c.bounding.len(), 14);
        assert!(c.bounding.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.bounding.contains(&"CAP_CHOWN".to_string()));
        assert!(c.root_only && c.inheritable.is_empty());
        let c = CapabilitySets::docker(&s(&["KILL"]), &s(&["ALL"])).unwrap();
        assert_eq!(c.effective, ["CAP_KILL"]);
        let c = CapabilitySets::docker(&s(&["ALL"]), &s(&["SYS_ADMIN"])).unwrap();
        assert_eq!(c.permitted.len(), 40);
        assert!(CapabilitySets::docker(&s(&["FLY"]), &[]).is_err());
    }

    #[test]
    fn capabilities_are_numbered_as_linux_numbers_them_and_unknown_ones_are_refused() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("net_admin"), Some(12));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("CAP_NOPE"), None);
        let mut s = spec();
        s.capabilities = Some(CapabilitySets {
            bounding: vec!["CAP_KILL".into(), "CAP_SYS_ADMIN".into()],
            ambient: vec!["CAP_KILL".into()],
            ..Default::default()
        });
        let n = s.capabilities.as_ref().unwrap().numbers().unwrap();
        assert_eq!((n.bounding, n.ambient), (vec![5, 21], vec![5]));
        assert!(s.check().is_ok());
        s.capabilities.as_mut().unwrap().effective = vec!["CAP_FLY".into()];
        assert!(s.check().unwrap_err().to_string().contains("CAP_FLY"));
        s.capabilities = None;
        s.readonly_paths = Some(vec!["proc/sys".into()]);
        assert!(s.check().is_err(), "a relative path");
    }

    fn spec() -> ContainerSpec {
        let mut s = ContainerSpec::new(
            RootSource::Image("busybox:latest".into()),
            vec!["sh".into(), "-c".into(), "echo hi".into()],
        );
        s.env = vec!["A=1".into()];
        s.memory_bytes = Some(64 << 20);
        s.accel = AccelRequest::Force(cabin_vmm::Accel::Tcg);
        s.network = NetworkMode::Bridge;
        s.publish = vec![cabin_net::ports::parse_publish("8080:80/udp").unwrap()];
        s.mounts = vec![MountSpec::Tmpfs {
            target: "/scratch".into(),
            options: "size=8m".into(),
        }];
        s.rlimits = vec![Rlimit {
            name: "nofile".into(),
            soft: 1024,
            hard: 4096,
        }];
        s.restart = RestartPolicy::OnFailure(Some(3));
        s
    }

    #[test]
    fn a_spec_round_trips_through_its_versioned_record() {
        let t = tempfile::tempdir().unwrap();
        let mut s = spec();
        write(t.path(), "c1", &s).unwrap();
        let text = std::fs::read_to_string(t.path().join(SPEC_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["version"], SPEC_VERSION);
        assert_eq!(v["restart"], "on-failure:3");
        assert_eq!(v["root"]["image"], "busybox:latest");
        // What only a run has is not kept.
        s.tty_size = Some((24, 80));
        s.layer = Some("/x".into());
        s.name = Some("web".into());
        let back = read(t.path(), "c1").unwrap();
        assert_eq!(back, spec());
    }

    #[test]
    fn old_newer_and_damaged_records_are_refused_with_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let e = read(t.path(), "c1").unwrap_err();
        assert!(matches!(e, SpecError::Missing { .. }), "{e}");
        std::fs::write(t.path().join(LEGACY_ARGS_FILE), r#"["run","busybox"]"#).unwrap();
        let e = read(t.path(), "c1").unwrap_err().to_string();
        assert!(
            e.contains("earlier cabin") && e.contains("cabin rm c1"),
            "{e}"
        );
        let mut newer = serde_json::to_value(Record {
            version: SPEC_VERSION,
            spec: &spec(),
        })
        .unwrap();
        newer["version"] = 2.into();
        std::fs::write(t.path().join(SPEC_FILE), newer.to_string()).unwrap();
        let e = read(t.path(), "c1").unwrap_err().to_string();
        assert!(e.contains("newer cabin (version 2"), "{e}");
        std::fs::write(t.path().join(SPEC_FILE), r#"{"root":{"image":"x"}}"#).unwrap();
        let e = read(t.path(), "c1").unwrap_err().to_string();
        assert!(e.contains("unknown version None"), "{e}");
        std::fs::write(t.path().join(SPEC_FILE), r#"{"version":1,"root":7}"#).unwrap();
        let e = read(t.path(), "c1").unwrap_err().to_string();
        assert!(e.contains("unreadable"), "{e}");
    }

    #[test]
    fn restart_policies_parse_print_and_decide() {
        let p = |s: &str| s.parse::<RestartPolicy>();
        assert_eq!(p("no"), Ok(RestartPolicy::No));
        assert_eq!(p("always"), Ok(RestartPolicy::Always));
        assert_eq!(p("on-failure"), Ok(RestartPolicy::OnFailure(None)));
        assert_eq!(p("on-failure:3"), Ok(RestartPolicy::OnFailure(Some(3))));
        assert!(p("on-failure:x").is_err() && p("sometimes").is_err() && p("no:1").is_err());
        for s in ["no", "always", "on-failure", "on-failure:3"] {
            assert_eq!(p(s).unwrap().to_string(), s);
        }
        assert!(!RestartPolicy::No.wants_restart(1, 0));
        assert!(RestartPolicy::Always.wants_restart(0, 100));
        let twice = RestartPolicy::OnFailure(Some(2));
        assert!(!twice.wants_restart(0, 0));
        assert!(twice.wants_restart(1, 1));
        assert!(!twice.wants_restart(1, 2));
    }
}
