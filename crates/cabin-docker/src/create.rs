//! Docker's create body (`POST /containers/create`) as a cabin container: its `Config`
//! and `HostConfig` mapped onto a [`ContainerSpec`] and [`CreateOptions`]. Unknown and
//! zero fields are ignored, as Docker ignores them; what cabin cannot do is refused
//! with a message naming it, never silently dropped.

use std::collections::BTreeMap;

use cabin_containers::containers::CreateOptions;
use cabin_containers::health::HealthCheck;
use cabin_containers::spec::{RestartPolicy, Rlimit, UserNetwork};
use cabin_containers::volumes::{parse_mount_flag, parse_tmpfs_flag, parse_volume_flag};
use cabin_containers::{AccelRequest, ContainerSpec, RootSource};
use cabin_net::NetworkMode;
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// The body as the docker CLI and SDKs send it (null anywhere means unset).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Value>,
    pub entrypoint: Option<Value>,
    pub image: Option<String>,
    pub working_dir: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    /// Paths that get an anonymous volume unless something is mounted there.
    pub volumes: Option<BTreeMap<String, Value>>,
    pub host_config: Option<HostConfig>,
    pub networking_config: Option<NetworkingConfig>,
    pub healthcheck: Option<Healthcheck>,
}

/// Docker's health check: durations in nanoseconds, 0 for the default.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    pub test: Option<Vec<String>>,
    pub interval: Option<i64>,
    pub timeout: Option<i64>,
    pub start_period: Option<i64>,
    pub retries: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkingConfig {
    pub endpoints_config: Option<BTreeMap<String, Option<EndpointConfig>>>,
}

/// A container's settings on one network (also the body's part of
/// `POST /networks/{id}/connect`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    pub aliases: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    pub binds: Option<Vec<String>>,
    pub mounts: Option<Vec<Mount>>,
    pub port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    pub publish_all_ports: Option<bool>,
    pub auto_remove: Option<bool>,
    pub restart_policy: Option<Restart>,
    pub readonly_rootfs: Option<bool>,
    pub memory: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub ulimits: Option<Vec<Ulimit>>,
    pub init: Option<bool>,
    pub network_mode: Option<String>,
    pub tmpfs: Option<BTreeMap<String, String>>,
    pub privileged: Option<bool>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub security_opt: Option<Vec<String>>,
    /// The client's terminal, `[rows, cols]` (`[0, 0]` when it has none).
    pub console_size: Option<[u16; 2]>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub read_only: Option<bool>,
    pub tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TmpfsOptions {
    pub size_bytes: Option<u64>,
    pub mode: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    pub host_ip: Option<String>,
    pub host_port: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Restart {
    pub name: Option<String>,
    pub maximum_retry_count: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// A command as Docker allows it: a list, or (older clients) one string split on
/// spaces; null is unset.
fn command(v: &Option<Value>, field: &str) -> Result<Option<Vec<String>>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(String::from).collect())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(String::from).ok_or_else(|| {
                    ApiError::bad_request(format!("{field}: every item must be a string"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ApiError::bad_request(format!(
            "{field} must be a list of strings"
        ))),
    }
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(e.to_string())
}

/// Docker's `PORT/PROTO` key: the container port and protocol.
fn port_key(key: &str) -> Result<(u16, &str), ApiError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("invalid port {key:?}")))?;
    Ok((port, proto))
}

/// The container `body` describes, and how it is kept. `name` is the `?name=` of the
/// request.
pub fn spec_of(
    body: &CreateBody,
    name: Option<&str>,
    accel: AccelRequest,
) -> Result<(ContainerSpec, CreateOptions), ApiError> {
    let image = body
        .image
        .as_deref()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| bad("no image given: set Image in the request"))?;
    let host = body.host_config.as_ref();
    let mut c = ContainerSpec::new(
        RootSource::Image(image.to_string()),
        command(&body.cmd, "Cmd")?.unwrap_or_default(),
    );
    c.entrypoint = command(&body.entrypoint, "Entrypoint")?;
    c.env = body.env.clone().unwrap_or_default();
    c.cwd = body.working_dir.clone().unwrap_or_default();
    c.user = body.user.clone().unwrap_or_default();
    c.hostname = body.hostname.clone().filter(|h| !h.is_empty());
    c.stdin = body.open_stdin.unwrap_or(false);
    c.tty = body.tty.unwrap_or(false);
    c.accel = accel;
    if let Some(h) = &body.healthcheck {
        c.healthcheck = HealthCheck::from_docker(
            h.test.as_deref().unwrap_or_default(),
            h.interval.unwrap_or(0),
            h.timeout.unwrap_or(0),
            h.start_period.unwrap_or(0),
            h.retries.unwrap_or(0),
        )
        .map_err(bad)?;
    }
    let name = name
        .map(|n| n.trim_start_matches('/'))
        .filter(|n| !n.is_empty());
    c.name = name.map(String::from);
    let mut auto_remove = false;
    if let Some(h) = host {
        c.apply_docker_security(
            h.privileged == Some(true),
            h.cap_add.as_deref().unwrap_or_default(),
            h.cap_drop.as_deref().unwrap_or_default(),
            h.security_opt.as_deref().unwrap_or_default(),
        )
        .map_err(bad)?;
        auto_remove = h.auto_remove.unwrap_or(false);
        if let Some([rows, cols]) = h.console_size.filter(|[r, c]| *r > 0 && *c > 0) {
            c.tty_size = c.tty.then_some((rows, cols));
        }
        c.read_only = h.readonly_rootfs.unwrap_or(false);
        c.init = h.init.unwrap_or(false);
        c.memory_bytes = h.memory.filter(|m| *m > 0).map(|m| m as u64);
        c.cpus = h.nano_cpus.filter(|n| *n > 0).map(|n| n as f64 / 1e9);
        c.pids_limit = h.pids_limit.filter(|p| *p > 0).map(|p| p as u64);
        for u in h.ulimits.iter().flatten() {
            if u.soft < 0 || u.hard < 0 || u.soft > u.hard {
                return Err(bad(format!(
                    "invalid ulimit {}: soft {} and hard {} must be positive, soft at most hard",
                    u.name, u.soft, u.hard
                )));
            }
            c.rlimits.push(Rlimit {
                name: u.name.clone(),
                soft: u.soft as u64,
                hard: u.hard as u64,
            });
        }
        if let Some(r) = &h.restart_policy {
            c.restart = match r.name.as_deref().unwrap_or("") {
                "" | "no" => RestartPolicy::No,
                "always" | "unless-stopped" => RestartPolicy::Always,
                "on-failure" => RestartPolicy::OnFailure(r.maximum_retry_count.filter(|n| *n > 0)),
                other => return Err(bad(format!("invalid restart policy {other:?}"))),
            };
        }
        c.network = match h.network_mode.as_deref().unwrap_or("") {
            "" | "default" => NetworkMode::default(),
            "none" => NetworkMode::None,
            "bridge" => NetworkMode::Bridge,
            "host" => {
                return Err(bad(
                    "network mode host is not possible: each container has its own VM and kernel; publish ports instead (-p)",
                ))
            }
            other => {
                // A user-defined network (that it exists is checked by the caller).
                let aliases = body
                    .networking_config
                    .as_ref()
                    .and_then(|n| n.endpoints_config.as_ref())
                    .and_then(|e| e.get(other))
                    .and_then(|e| e.as_ref())
                    .and_then(|e| e.aliases.clone())
                    .unwrap_or_default();
                c.user_network = Some(UserNetwork {
                    name: other.to_string(),
                    aliases,
                });
                NetworkMode::Bridge
            }
        };
        for b in h.binds.iter().flatten() {
            c.mounts.push(parse_volume_flag(b).map_err(bad)?);
        }
        for m in h.mounts.iter().flatten() {
            c.mounts.push(mount(m)?);
        }
        for (path, options) in h.tmpfs.iter().flatten() {
            let flag = if options.is_empty() {
                path.clone()
            } else {
                format!("{path}:{options}")
            };
            c.mounts.push(parse_tmpfs_flag(&flag).map_err(bad)?);
        }
        for (key, bindings) in h.port_bindings.iter().flatten() {
            let (guest, proto) = port_key(key)?;
            for b in bindings.iter().flatten() {
                let ip = b
                    .host_ip
                    .as_deref()
                    .filter(|i| !i.is_empty())
                    .unwrap_or("0.0.0.0");
                if ip.contains(':') {
                    continue; // IPv6 bindings: cabin publishes on IPv4.
                }
                let host_port = b.host_port.as_deref().unwrap_or("");
                let spec = format!("{ip}:{host_port}:{guest}/{proto}");
                c.publish
                    .push(cabin_net::ports::parse_publish(&spec).map_err(bad)?);
            }
        }
        if h.publish_all_ports == Some(true) {
            for key in body.exposed_ports.iter().flatten().map(|(k, _)| k) {
                let (guest, proto) = port_key(key)?;
                if !c.publish.iter().any(|p| p.guest_port == guest) {
                    c.publish.push(
                        cabin_net::ports::parse_publish(&format!("0.0.0.0::{guest}/{proto}"))
                            .map_err(bad)?,
                    );
                }
            }
        }
    }
    for target in body.volumes.iter().flatten().map(|(t, _)| t) {
        if c.mounts.iter().any(|m| m.target() == target) {
            continue;
        }
        let name = cabin_base::random::id().map_err(ApiError::internal)?;
        c.mounts
            .push(parse_volume_flag(&format!("{name}:{target}")).map_err(bad)?);
    }
    let labels = body
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((
        c,
        CreateOptions {
            name: name.map(String::from),
            labels,
            auto_remove,
        },
    ))
}

/// One `HostConfig.Mounts` entry, checked as `--mount` is.
fn mount(m: &Mount) -> Result<cabin_containers::volumes::MountSpec, ApiError> {
    let kind = m.kind.as_deref().unwrap_or("volume");
    let target = m.target.as_deref().unwrap_or("");
    let source = m.source.as_deref().unwrap_or("");
    if [kind, target, source].iter().any(|s| s.contains(',')) {
        return Err(bad(format!(
            "mount {source:?} on {target:?}: commas in paths are not supported"
        )));
    }
    let mut flag = format!("type={kind},target={target}");
    if !source.is_empty() {
        flag.push_str(&format!(",source={source}"));
    }
    if m.read_only == Some(true) {
        flag.push_str(",readonly");
    }
    if let Some(t) = &m.tmpfs_options {
        if let Some(s) = t.size_bytes {
            flag.push_str(&format!(",tmpfs-size={s}"));
        }
        if let Some(mode) = t.mode {
            flag.push_str(&format!(",tmpfs-mode={mode:o}"));
        }
    }
    parse_mount_flag(&flag).map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_containers::volumes::MountSpec;

    fn parse(body: &str) -> Result<(ContainerSpec, CreateOptions), ApiError> {
        let b: CreateBody = serde_json::from_str(body).unwrap();
        spec_of(&b, Some("/web"), AccelRequest::Auto)
    }

    #[test]
    fn the_docker_clis_run_body_becomes_the_container_it_describes() {
        let (c, o) = parse(
            r#"{"Hostname":"h","User":"1:2","Env":["A=1"],"Cmd":["echo","hi"],"Image":"alpine",
            "WorkingDir":"/w","Entrypoint":null,"Labels":{"k":"v"},"Tty":false,"OpenStdin":true,
            "ExposedPorts":{"80/tcp":{}},"Volumes":{},"OnBuild":null,
            "HostConfig":{"Binds":["/tmp:/data:ro"],"AutoRemove":true,"NetworkMode":"default",
            "RestartPolicy":{"Name":"on-failure","MaximumRetryCount":3},"Memory":268435456,
            "NanoCpus":1500000000,"PidsLimit":null,"Ulimits":[{"Name":"nofile","Soft":10,"Hard":20}],
            "PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]},"Tmpfs":{"/run":"size=1m"},
            "Init":true,"ReadonlyRootfs":true,"MemorySwappiness":-1,"ConsoleSize":[30,100]},
            "NetworkingConfig":{"EndpointsConfig":{"default":{}}}}"#,
        )
        .unwrap();
        assert_eq!(c.root, RootSource::Image("alpine".into()));
        assert_eq!(c.args, ["echo", "hi"]);
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.env, ["A=1"]);
        assert_eq!((c.cwd.as_str(), c.user.as_str()), ("/w", "1:2"));
        assert_eq!(c.hostname.as_deref(), Some("h"));
        assert!(c.stdin && c.init && c.read_only && !c.tty);
        assert_eq!(c.tty_size, None, "no terminal, no size");
        assert_eq!(c.memory_bytes, Some(256 << 20));
        assert_eq!(c.cpus, Some(1.5));
        assert_eq!(c.pids_limit, None);
        assert_eq!(c.restart, RestartPolicy::OnFailure(Some(3)));
        assert_eq!(c.rlimits[0].name, "nofile");
        assert_eq!(c.publish.len(), 1);
        assert_eq!(c.publish[0].host_ip.to_string(), "0.0.0.0");
        assert_eq!(
            (c.publish[0].host_port, c.publish[0].guest_port),
            (8080, 80)
        );
        assert!(
            matches!(&c.mounts[0], MountSpec::Bind { read_only: true, target, .. } if target == "/data")
        );
        assert!(matches!(&c.mounts[1], MountSpec::Tmpfs { target, .. } if target == "/run"));
        assert_eq!(o.name.as_deref(), Some("web"));
        assert!(o.auto_remove);
        assert_eq!(o.labels, [("k".to_string(), "v".to_string())]);
    }

    #[test]
    fn an_empty_entrypoint_resets_the_images_and_a_string_command_is_split() {
        let (c, _) = parse(r#"{"Image":"a","Entrypoint":[""],"Cmd":"sh -c true"}"#).unwrap();
        assert_eq!(c.entrypoint, Some(vec![String::new()]));
        assert_eq!(c.args, ["sh", "-c", "true"]);
    }

    #[test]
    fn a_terminal_starts_at_the_clients_size() {
        let (c, _) =
            parse(r#"{"Image":"a","Tty":true,"HostConfig":{"ConsoleSize":[30,100]}}"#).unwrap();
        assert!(c.tty);
        assert_eq!(c.tty_size, Some((30, 100)));
        let (c, _) =
            parse(r#"{"Image":"a","Tty":true,"HostConfig":{"ConsoleSize":[0,0]}}"#).unwrap();
        assert_eq!(c.tty_size, None);
    }

    #[test]
    fn declared_volumes_without_a_mount_get_an_anonymous_one() {
        let (c, _) = parse(
            r#"{"Image":"a","Volumes":{"/data":{},"/cfg":{}},"HostConfig":{"Binds":["/tmp:/cfg"]}}"#,
        )
        .unwrap();
        assert_eq!(c.mounts.len(), 2);
        assert!(matches!(&c.mounts[0], MountSpec::Bind { target, .. } if target == "/cfg"));
        assert!(
            matches!(&c.mounts[1], MountSpec::Volume { name, target, .. } if target == "/data" && name.len() == 32)
        );
    }

    #[test]
    fn capabilities_privileged_and_no_new_privileges_become_the_spec() {
        let (c, _) = parse(
            r#"{"Image":"a","HostConfig":{"CapAdd":["NET_ADMIN"],"CapDrop":["CAP_CHOWN"],
                "SecurityOpt":["no-new-privileges"]}}"#,
        )
        .unwrap();
        let caps = c.capabilities.unwrap();
        assert!(caps.root_only && caps.effective.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.effective.contains(&"CAP_CHOWN".to_string()));
        assert!(c.no_new_privileges && c.masked_paths.is_none());
        let (c, _) = parse(r#"{"Image":"a","HostConfig":{"Privileged":true}}"#).unwrap();
        assert_eq!(c.capabilities.unwrap().bounding.len(), 41);
        assert_eq!(c.masked_paths, Some(vec![]));
        let (c, _) = parse(r#"{"Image":"a","HostConfig":{}}"#).unwrap();
        assert!(c.capabilities.is_none(), "Docker's defaults, in the guest");
    }

    #[test]
    fn publish_all_gives_every_exposed_port_a_free_host_port() {
        let (c, _) = parse(
            r#"{"Image":"a","ExposedPorts":{"80/tcp":{},"53/udp":{}},"HostConfig":{"PublishAllPorts":true}}"#,
        )
        .unwrap();
        assert_eq!(c.publish.len(), 2);
        assert!(c.publish.iter().all(|p| p.host_port == 0));
    }

    #[test]
    fn a_user_network_is_joined_with_its_aliases() {
        let (c, _) = parse(
            r#"{"Image":"a","HostConfig":{"NetworkMode":"proj_default"},
                "NetworkingConfig":{"EndpointsConfig":{"proj_default":{"Aliases":["web"]}}}}"#,
        )
        .unwrap();
        assert_eq!(c.network, NetworkMode::Bridge);
        let u = c.user_network.unwrap();
        assert_eq!(
            (u.name.as_str(), u.aliases),
            ("proj_default", vec!["web".to_string()])
        );
        let (c, _) = parse(r#"{"Image":"a","HostConfig":{"NetworkMode":"n"}}"#).unwrap();
        assert_eq!(c.user_network.unwrap().aliases, Vec::<String>::new());
    }

    #[test]
    fn what_a_vm_cannot_be_is_refused_with_the_reason() {
        let e = parse(r#"{"Image":"a","HostConfig":{"NetworkMode":"host"}}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("own VM"), "{}", e.message);
        let e = parse(r#"{"Image":"a","HostConfig":{"CapAdd":["FLY"]}}"#).unwrap_err();
        assert!(e.message.contains("FLY"), "{}", e.message);
        let e =
            parse(r#"{"Image":"a","HostConfig":{"SecurityOpt":["seccomp=p.json"]}}"#).unwrap_err();
        assert!(e.message.contains("security option"), "{}", e.message);
        let e = parse(r#"{"Cmd":["x"]}"#).unwrap_err();
        assert!(e.message.contains("no image"), "{}", e.message);
        let e = parse(r#"{"Image":"a","HostConfig":{"PortBindings":{"0/tcp":[{}]}}}"#).unwrap_err();
        assert_eq!(e.status, 400);
        let e = parse(r#"{"Image":"a","HostConfig":{"Binds":["relative"]}}"#).unwrap_err();
        assert_eq!(e.status, 400);
    }
}
