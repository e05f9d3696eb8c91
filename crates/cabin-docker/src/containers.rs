//! The container endpoints: list, create, inspect, start, stop, kill, restart, wait,
//! attach, logs, resize and remove, each a call of `Containers` and a reply in
//! Docker's shape.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cabin_base::time::{now_unix, rfc3339};
use cabin_containers::containers::{ContainerError, LogOptions, Started, WaitFor};
use cabin_containers::control::{Process, Stats};
use cabin_containers::health::{Health, HealthCheck, HealthStatus, HealthTest};
use cabin_containers::process::signal_number;
use cabin_containers::spec::RestartPolicy;
use cabin_containers::store::{Record, RemovedExit, Status};
use cabin_containers::volumes::MountSpec;
use cabin_containers::{ContainerSpec, RootSource};
use cabin_image::image;
use cabin_net::NetworkMode;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::App;
use crate::create::{spec_of, CreateBody};
use crate::error::{json, ApiError};
use crate::request::{body, filters, labels_match, Query};
use crate::stream::{Framing, Hijack, Out, Writer};

/// Docker's default stop timeout.
const STOP_TIMEOUT: u64 = 10;
/// A time Docker shows for "never".
const NEVER: &str = "0001-01-01T00:00:00Z";

pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

fn state_name(s: &Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running { paused: true, .. } => "paused",
        Status::Running { .. } => "running",
        Status::Exited { .. } => "exited",
    }
}

fn matches_filters(
    r: &Record,
    health: Option<HealthStatus>,
    f: &BTreeMap<String, Vec<String>>,
) -> Result<bool, ApiError> {
    for (key, values) in f {
        let any = |pred: &dyn Fn(&str) -> bool| values.iter().any(|v| pred(v));
        let ok = match key.as_str() {
            "status" => any(&|v| v == state_name(&r.status)),
            "name" => any(&|v| r.name.contains(v.trim_start_matches('/'))),
            "id" => any(&|v| r.id.starts_with(v)),
            "label" => labels_match(values, |k| {
                r.labels
                    .iter()
                    .find(|(lk, _)| lk == k)
                    .map(|(_, v)| v.as_str())
            }),
            "ancestor" => any(&|v| r.root == v),
            "health" => any(&|v| v == health.map_or("none", HealthStatus::as_str)),
            other => {
                return Err(ApiError::bad_request(format!(
                "invalid filter {other:?} (cabin filters on status, name, id, label, ancestor and health)"
            )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A container's network as Docker shows it.
struct NetView<'a> {
    mode: NetworkMode,
    /// A user-defined network's name and the aliases asked for there.
    user: Option<(&'a str, &'a [String])>,
    ip: &'a str,
    gateway: &'a str,
}

impl NetView<'_> {
    /// `HostConfig.NetworkMode`.
    fn mode(&self) -> &str {
        match (self.user, self.mode) {
            (Some((name, _)), _) => name,
            (None, NetworkMode::User) => "default",
            (None, NetworkMode::Bridge) => "bridge",
            (None, NetworkMode::None) => "none",
            (None, NetworkMode::Pod) => "pod",
        }
    }

    /// `NetworkSettings.Networks`: one entry, under the name Docker gives the network
    /// (SDKs look it up by `HostConfig.NetworkMode`, `default` meaning `bridge`). On a
    /// user-defined network its aliases include the start of its ID, as Docker's do
    /// (compose checks for it).
    fn networks(&self, container_id: &str) -> Value {
        let name = match (self.user, self.mode) {
            (Some((name, _)), _) => name,
            (None, NetworkMode::User | NetworkMode::Bridge) => "bridge",
            (None, NetworkMode::None) => "none",
            (None, NetworkMode::Pod) => "pod",
        };
        let aliases = self.user.map(|(_, a)| {
            let mut a = a.to_vec();
            a.push(container_id[..12.min(container_id.len())].to_string());
            a
        });
        let ip = self.ip;
        json!({ name: {
            "IPAddress": ip, "IPPrefixLen": if ip.is_empty() { 0 } else { 24 },
            "Gateway": self.gateway, "MacAddress": "", "NetworkID": name, "EndpointID": "",
            "Aliases": aliases,
        }})
    }
}

fn ports(r: &Record) -> Vec<Value> {
    r.network
        .iter()
        .flat_map(|n| &n.published)
        .map(|p| {
            json!({"IP": p.host_ip.to_string(), "PrivatePort": p.guest_port,
                   "PublicPort": p.host_port, "Type": p.protocol.as_str()})
        })
        .collect()
}

fn labels(r: &Record) -> BTreeMap<&str, &str> {
    r.labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `GET /containers/json`: newest first; running ones unless `all`.
pub async fn list(app: &Arc<App>, q: &Query) -> Result<Response, ApiError> {
    let f = filters(q)?;
    let all = q.flag("all");
    let limit = q.number::<i64>("limit")?.filter(|l| *l > 0);
    let (records, _) = app.containers.list().await?;
    let now = now_unix();
    let mut rows = Vec::new();
    for r in records {
        let shown = all || matches!(r.status, Status::Running { .. }) || f.contains_key("status");
        let health = app.containers.health_status(&r);
        if !shown || !matches_filters(&r, health, &f)? {
            continue;
        }
        if limit.is_some_and(|l| rows.len() as i64 >= l) {
            break;
        }
        rows.push(summary(&r, health, now));
    }
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

/// A container as `GET /containers/json` lists it.
pub fn summary(r: &Record, health: Option<HealthStatus>, now: u64) -> Value {
    let n = r.network.as_ref();
    let view = NetView {
        mode: n.and_then(|n| n.mode.parse().ok()).unwrap_or_default(),
        user: n
            .and_then(|n| n.network.as_deref())
            .map(|name| (name, &[][..])),
        ip: n.and_then(|n| n.ip_address.as_deref()).unwrap_or(""),
        gateway: n.and_then(|n| n.gateway.as_deref()).unwrap_or(""),
    };
    json!({
        "Id": r.id,
        "Names": [format!("/{}", r.name)],
        "Image": r.root,
        "ImageID": "",
        "Command": r.command.join(" "),
        "Created": r.created_unix,
        "State": state_name(&r.status),
        "Status": cabin_containers::health::describe(r.status.describe(now), health),
        "Ports": ports(r),
        "Labels": labels(r),
        "Mounts": [],
        "HostConfig": {"NetworkMode": view.mode()},
        "NetworkSettings": {"Networks": view.networks(&r.id)},
    })
}

/// `POST /containers/create[?name=]`: 201 with the ID; 404 when the image is not here
/// (the CLI pulls it then and asks again).
pub async fn create(app: &Arc<App>, q: &Query, req: Request) -> Result<Response, ApiError> {
    let b: CreateBody = body(req).await?;
    let (spec, opts) = spec_of(&b, q.get("name"), app.accel)?;
    if let RootSource::Image(name) = &spec.root {
        let name = name.clone();
        crate::images::with_store(app, move |s| image::resolve(s, &name).map(drop)).await?;
    }
    // A missing network is a bad request, not a 404: the CLI would take that for a
    // missing image and pull it.
    let record = app
        .containers
        .create(&spec, opts)
        .await
        .map_err(|e| match e {
            ContainerError::Network(n) => ApiError::bad_request(n.to_string()),
            e => e.into(),
        })?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": record.id, "Warnings": []}),
    ))
}

fn time_or_never(unix: Option<u64>) -> String {
    unix.map_or_else(|| NEVER.to_string(), |t| rfc3339(t * 1_000_000_000, false))
}

fn port_key(p: &cabin_vmm::PortForward) -> String {
    format!("{}/{}", p.guest_port, p.protocol.as_str())
}

/// Docker's inspect of one container.
/// Docker's `State.Health`.
fn health_json(h: &Health) -> Value {
    let log: Vec<Value> = h
        .log
        .iter()
        .map(|p| {
            json!({
                "Start": rfc3339(p.start_unix_nanos, true), "End": rfc3339(p.end_unix_nanos, true),
                "ExitCode": p.exit_code, "Output": p.output,
            })
        })
        .collect();
    json!({"Status": h.status.as_str(), "FailingStreak": h.failing_streak, "Log": log})
}

/// Docker's `Config.Healthcheck` (durations in nanoseconds).
fn healthcheck_json(c: &HealthCheck) -> Value {
    let test: Vec<String> = match &c.test {
        HealthTest::Shell(line) => vec!["CMD-SHELL".into(), line.clone()],
        HealthTest::Exec(args) if c.disabled() => args.clone(),
        HealthTest::Exec(args) => std::iter::once("CMD".to_string())
            .chain(args.iter().cloned())
            .collect(),
    };
    json!({
        "Test": test, "Interval": c.interval.as_nanos() as u64, "Timeout": c.timeout.as_nanos() as u64,
        "StartPeriod": c.start_period.as_nanos() as u64, "Retries": c.retries,
    })
}

fn inspect_json(
    r: &Record,
    spec: Option<&ContainerSpec>,
    image_id: &str,
    health: Option<&Health>,
) -> Value {
    let (running, code, reason, started, finished, pid) = match &r.status {
        Status::Created => (false, 0, None, None, None, 0),
        Status::Running {
            supervisor_pid,
            started_unix,
            ..
        } => (true, 0, None, Some(*started_unix), None, *supervisor_pid),
        Status::Exited {
            code,
            reason,
            finished_unix,
        } => (false, *code, reason.clone(), None, Some(*finished_unix), 0),
    };
    let oom = cabin_containers::store::oom_killed(reason.as_deref());
    let default_spec;
    let spec = match spec {
        Some(s) => s,
        None => {
            default_spec = ContainerSpec::new(RootSource::Image(r.root.clone()), r.command.clone());
            &default_spec
        }
    };
    let mut bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in &spec.publish {
        bindings.entry(port_key(p)).or_default().push(json!({
            "HostIp": p.host_ip.to_string(),
            "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.to_string() },
        }));
    }
    let mut live: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in r.network.iter().flat_map(|n| &n.published) {
        live.entry(port_key(p)).or_default().push(json!({
            "HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string(),
        }));
    }
    let exposed: BTreeMap<String, Value> = spec
        .publish
        .iter()
        .map(|p| (port_key(p), json!({})))
        .collect();
    let mounts: Vec<Value> = spec
        .mounts
        .iter()
        .map(|m| match m {
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => json!({"Type": "bind", "Source": source, "Destination": target,
                        "Mode": if *read_only { "ro" } else { "" }, "RW": !read_only,
                        "Propagation": "rprivate"}),
            MountSpec::Volume {
                name,
                target,
                read_only,
            } => json!({"Type": "volume", "Name": name, "Source": "", "Destination": target,
                        "Driver": "local", "Mode": "", "RW": !read_only}),
            MountSpec::Tmpfs { target, .. } => {
                json!({"Type": "tmpfs", "Source": "", "Destination": target, "Mode": "", "RW": true})
            }
        })
        .collect();
    let binds: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            MountSpec::Bind {
                source,
                target,
                read_only,
            } => Some(format!(
                "{}:{target}{}",
                source.display(),
                if *read_only { ":ro" } else { "" }
            )),
            _ => None,
        })
        .collect();
    let (restart_name, restart_max) = match spec.restart {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::OnFailure(n) => ("on-failure", n.unwrap_or(0)),
        RestartPolicy::Always => ("always", 0),
    };
    let n = r.network.as_ref();
    let ip = n.and_then(|n| n.ip_address.clone()).unwrap_or_default();
    let view = NetView {
        mode: spec.network,
        user: spec
            .user_network
            .as_ref()
            .map(|u| (u.name.as_str(), u.aliases.as_slice())),
        ip: &ip,
        gateway: n.and_then(|n| n.gateway.as_deref()).unwrap_or(""),
    };
    let network_mode = view.mode();
    let mut v = json!({
        "Id": r.id,
        "Created": rfc3339(r.created_unix * 1_000_000_000, false),
        "Path": r.command.first().cloned().unwrap_or_default(),
        "Args": r.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state_name(&r.status),
            "Running": running,
            "Paused": matches!(r.status, Status::Running { paused: true, .. }),
            "Restarting": false,
            "OOMKilled": oom,
            "Dead": false,
            "Pid": pid,
            "ExitCode": code,
            "Error": reason.unwrap_or_default(),
            "StartedAt": time_or_never(started),
            "FinishedAt": time_or_never(finished),
        },
        "Image": image_id,
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "cabin",
        "Platform": "linux",
        "HostConfig": {
            "Binds": binds,
            "NetworkMode": network_mode,
            "PortBindings": bindings,
            "RestartPolicy": {"Name": restart_name, "MaximumRetryCount": restart_max},
            "AutoRemove": r.auto_remove,
            "ReadonlyRootfs": spec.read_only,
            "Memory": spec.memory_bytes.unwrap_or(0),
            "NanoCpus": spec.cpus.map_or(0, |c| (c * 1e9) as i64),
            "PidsLimit": spec.pids_limit,
            "Init": spec.init,
            "Runtime": "cabin",
            // cabin keeps output as docker's json-file driver does (SDKs read logs
            // only from drivers they know).
            "LogConfig": {"Type": "json-file", "Config": {}},
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": spec.hostname.clone().unwrap_or_default(),
            "User": spec.user,
            "Env": spec.env,
            "Cmd": spec.args,
            "Entrypoint": spec.entrypoint,
            "Image": r.root,
            "WorkingDir": spec.cwd,
            "Labels": labels(r),
            "Tty": spec.tty,
            "OpenStdin": spec.stdin,
            "StdinOnce": false,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "ExposedPorts": exposed,
            "Healthcheck": spec.healthcheck.as_ref().map(healthcheck_json),
        },
        "NetworkSettings": {
            "Ports": live,
            "IPAddress": ip,
            "Networks": view.networks(&r.id),
        },
    });
    if let Some(h) = health {
        v["State"]["Health"] = health_json(h);
    }
    v
}

/// The ID of the image `name` names, as `sha256:...` (empty when it is not there).
async fn image_id(app: &App, name: &str) -> String {
    let dir = app.host.paths.image_store();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        let store = cabin_image::store::Store::open(dir).ok()?;
        image::resolve(&store, &name)
            .ok()
            .map(|i| i.manifest_digest)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// `GET /containers/{id}/json`.
pub async fn inspect(app: &Arc<App>, id: &str) -> Result<Response, ApiError> {
    let r = app.containers.get(id).await?;
    let spec = app.containers.spec(&r.id).await.ok();
    let image = image_id(app, &r.root).await;
    Ok(json(
        StatusCode::OK,
        &inspect_json(
            &r,
            spec.as_ref(),
            &image,
            app.containers.health(&r.id).as_ref(),
        ),
    ))
}

/// A start that did not run the process, as Docker's error (its wording decides the
/// CLI's exit code: 127 for a command not found, 126 not executable, else 125).
fn start_failure(code: i32, reason: Option<String>) -> Result<(), ApiError> {
    match reason {
        Some(reason) if code >= 125 => Err(ApiError::internal(reason)),
        _ => Ok(()),
    }
}

/// `POST /containers/{id}/start`: 204; 304 when it runs already.
pub async fn start(app: &Arc<App>, id: &str) -> Result<Response, ApiError> {
    let r = app.containers.get(id).await?;
    if matches!(r.status, Status::Running { .. }) {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    match app.containers.start(&r.id).await? {
        Started::Running(_) | Started::Removed(None) => {}
        Started::Exited(r) => {
            if let Status::Exited { code, reason, .. } = r.status {
                start_failure(code, reason)?;
            }
        }
        Started::Removed(Some(RemovedExit { code, reason })) => start_failure(code, reason)?,
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

fn timeout(q: &Query) -> Result<Duration, ApiError> {
    let t = q.number::<i64>("t")?.unwrap_or(STOP_TIMEOUT as i64);
    Ok(Duration::from_secs(t.max(0) as u64))
}

/// `POST /containers/{id}/stop[?t=]`: 204 once it has stopped; 304 when it was not
/// running.
pub async fn stop(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = app.containers.get(id).await?;
    if !matches!(r.status, Status::Running { .. }) {
        return Ok(empty(StatusCode::NOT_MODIFIED));
    }
    app.containers.stop(&r.id, timeout(q)?).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart[?t=]`.
pub async fn restart(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    app.containers.restart(id, timeout(q)?).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill[?signal=]`: SIGKILL unless another is named (by name,
/// with or without SIG, or number).
pub async fn kill(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let signal = match q.get("signal").filter(|s| !s.is_empty()) {
        None => libc::SIGKILL,
        Some(s) => {
            signal_number(s).ok_or_else(|| ApiError::bad_request(format!("invalid signal: {s}")))?
        }
    };
    app.containers.kill(id, signal).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/pause` and `unpause`: the container's whole VM stops, or
/// goes on.
pub async fn pause(app: &Arc<App>, id: &str, pause: bool) -> Result<Response, ApiError> {
    if pause {
        app.containers.pause(id).await?;
    } else {
        app.containers.unpause(id).await?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait[?condition=]`: the headers at once (the CLI starts the
/// container only once it has them), `{"StatusCode":N}` when the condition is met.
pub async fn wait(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let condition = match q.get("condition").unwrap_or("") {
        "" | "not-running" => WaitFor::NotRunning,
        "next-exit" => WaitFor::NextExit,
        "removed" => WaitFor::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition {other:?}: use not-running, next-exit or removed"
            )))
        }
    };
    // Read before the headers go: a run started after them is the one waited for.
    let record = app.containers.get(id).await?;
    let containers = app.containers.clone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let waited = containers.wait_after(record, condition);
        let body = tokio::select! {
            r = waited => match r {
                Ok(code) => json!({"StatusCode": code, "Error": null}),
                Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.to_string()}}),
            },
            // The client went away (`docker run -d` always leaves its wait).
            _ = tx.closed() => return,
        };
        let _ = tx.send(Ok(Bytes::from(format!("{body}\n")))).await;
    });
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// `POST /containers/{id}/attach?stream=1&stdout=1&stderr=1[&stdin=1]`: the connection
/// becomes the run's output (from its start: an attach before `start` misses nothing)
/// and its stdin; it is closed when the run ends.
pub async fn attach(
    app: &Arc<App>,
    id: &str,
    q: &Query,
    mut req: Request,
) -> Result<Response, ApiError> {
    let r = app.containers.get(id).await?;
    let spec = app.containers.spec(&r.id).await?;
    let framing = Framing::of(spec.tty);
    let hijack = Hijack::of(&mut req, framing)?;
    let fd = hijack.fd();
    let (want_out, want_err) = (q.flag("stdout"), q.flag("stderr"));
    let use_stdin = q.flag("stdin") && r.stdin;
    // Taken before the reply: `start` comes after it, and this run is the one followed.
    let next = if matches!(r.status, Status::Running { .. }) {
        None
    } else {
        Some(app.containers.next_run(&r.id).await?)
    };
    let reply = hijack.response();
    let containers = app.containers.clone();
    let id = r.id.clone();
    tokio::spawn(async move {
        let Some((rd, wr)) = hijack.conn().await else {
            return;
        };
        let (writer, written) = Writer::start(wr, framing, fd);
        let mut gone = writer.gone();
        let mut out = |stderr: bool, data: &[u8]| {
            if (stderr && want_err) || (!stderr && want_out) {
                writer.send(Out::of(stderr), data);
            }
        };
        // Without stdin the CLI half-closes its side at once: that end says nothing
        // about its leaving, so the run is followed to its end either way.
        let stdin: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> =
            if use_stdin { Some(Box::new(rd)) } else { None };
        let followed = async {
            match next {
                Some(next) => containers.follow_run(next, stdin, &mut out).await,
                None => containers.follow(&id, stdin, &mut out).await,
            }
        };
        // A client that left is let go of (and its hold on the supervisor with it).
        tokio::select! {
            _ = followed => {}
            _ = gone.wait_for(|g| *g) => {}
        }
        drop(writer);
        let _ = written.await;
    });
    Ok(reply)
}

/// The `h` and `w` of a resize.
pub fn size(q: &Query) -> Result<(u16, u16), ApiError> {
    match (q.number::<u16>("h")?, q.number::<u16>("w")?) {
        (Some(h), Some(w)) if h > 0 && w > 0 => Ok((h, w)),
        _ => Err(ApiError::bad_request(
            "give the terminal's size as h (rows) and w (columns), both above 0",
        )),
    }
}

/// `POST /containers/{id}/resize?h=&w=`: the container's terminal takes the size (one
/// asked for while its VM boots is applied once it runs).
pub async fn resize(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let (rows, cols) = size(q)?;
    app.containers.resize(id, rows, cols).await?;
    Ok(empty(StatusCode::OK))
}

/// Docker's `since` for logs: `0` is from the start, as none.
fn since_nanos(q: &Query) -> Result<Option<u64>, ApiError> {
    Ok(q.instant("since")?.filter(|n| *n > 0))
}

/// `GET /containers/{id}/logs`: what was kept, in Docker's frames (raw with a
/// terminal); `follow`: then what comes, until the container stops.
pub async fn logs(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let tail = match q.get("tail") {
        None | Some("" | "all") => None,
        Some(n) => Some(n.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("invalid tail {n:?}: use a number or all"))
        })?),
    };
    let opts = LogOptions {
        follow: q.flag("follow"),
        tail: tail.map(|t| t.max(0) as usize),
        since_unix_nanos: since_nanos(q)?,
    };
    let (want_out, want_err, stamps) = (q.flag("stdout"), q.flag("stderr"), q.flag("timestamps"));
    let r = app.containers.get(id).await?;
    let tty = app.containers.spec(&r.id).await.is_ok_and(|s| s.tty);
    let framing = Framing::of(tty);
    let mut logs = app.containers.logs(&r.id, opts).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            // A follower of a quiet container would otherwise not see its client leave.
            let next = tokio::select! {
                n = logs.next() => n,
                _ = tx.closed() => return,
            };
            let entries = match next {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let mut chunk = Vec::new();
            for e in entries {
                let stderr = e.stream == "stderr";
                if !(stderr && want_err || !stderr && want_out) {
                    continue;
                }
                let line = if stamps {
                    format!("{} {}", rfc3339(e.time, true), e.log)
                } else {
                    e.log
                };
                chunk.extend(framing.encode(Out::of(stderr), line.as_bytes()));
            }
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // the client left
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(framing.content_type()),
    );
    Ok(resp)
}

/// `POST /containers/prune`: every container that is not running goes.
pub async fn prune(app: &Arc<App>) -> Result<Response, ApiError> {
    let removed = app.containers.prune().await?;
    Ok(json(
        StatusCode::OK,
        &json!({"ContainersDeleted": removed, "SpaceReclaimed": 0}),
    ))
}

/// Docker's CPU figures of a sample: the guest's time since boot times its vCPUs is the
/// "system" time, so that the CLI's share (container delta / system delta × CPUs)
/// comes out as the share of one vCPU, as Docker's does of one host CPU.
fn cpu_json(s: Option<&Stats>, vcpus: u32) -> Value {
    let (total, system) = s.map_or((0, 0), |s| {
        (
            s.cpu_usage_micros * 1000,
            s.sampled_boottime_nanos * u64::from(vcpus),
        )
    });
    json!({
        "cpu_usage": {"total_usage": total, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": system,
        "online_cpus": if s.is_some() { vcpus } else { 0 },
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// What the statistics are read against: the VM's vCPUs, and its memory (the limit of a
/// container without one of its own).
#[derive(Clone, Copy)]
struct Shape {
    vcpus: u32,
    memory_bytes: u64,
}

fn stats_json(r: &Record, now: Option<&Stats>, before: Option<&Stats>, shape: Shape) -> Value {
    let vcpus = shape.vcpus;
    let stamp = |s: Option<&Stats>| {
        s.map_or_else(
            || NEVER.to_string(),
            |_| rfc3339(cabin_base::time::now_unix_nanos(), true),
        )
    };
    json!({
        "read": stamp(now),
        "preread": if before.is_some() { stamp(before) } else { NEVER.to_string() },
        "id": r.id,
        "name": format!("/{}", r.name),
        "pids_stats": {"current": now.map_or(0, |s| s.pids)},
        "cpu_stats": cpu_json(now, vcpus),
        "precpu_stats": cpu_json(before, vcpus),
        "memory_stats": {
            "usage": now.map_or(0, |s| s.memory_bytes),
            "limit": now.map_or(0, |s| match s.memory_limit_bytes {
                0 => shape.memory_bytes,
                l => l.min(shape.memory_bytes),
            }),
            "stats": {},
        },
        "blkio_stats": {},
        "networks": {},
        "num_procs": 0,
        "storage_stats": {},
    })
}

/// `GET /containers/{id}/stats[?stream=0][&one-shot=1]`: a sample a second (with the
/// one before, for the CPU share) until the container stops; with `stream=0` one
/// sample, taken a second after another unless `one-shot`.
pub async fn stats(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let r = app.containers.get(id).await?;
    let spec = app.containers.spec(&r.id).await?;
    let shape = Shape {
        vcpus: spec.vcpus(),
        memory_bytes: spec.vm_memory_mib() << 20,
    };
    let stream = !matches!(q.get("stream"), Some("0" | "false" | "False"));
    let one_shot = q.flag("one-shot");
    let containers = app.containers.clone();
    let sample = move |id: String| {
        let containers = containers.clone();
        async move { containers.stats(&id).await.ok() }
    };
    if !stream {
        let first = sample(r.id.clone()).await;
        let (before, now) = if one_shot || first.is_none() {
            (None, first)
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (first, sample(r.id.clone()).await)
        };
        return Ok(json(
            StatusCode::OK,
            &stats_json(&r, now.as_ref(), before.as_ref(), shape),
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut before: Option<Stats> = None;
        loop {
            let now = sample(r.id.clone()).await;
            let line = stats_json(&r, now.as_ref(), before.as_ref(), shape);
            if tx.send(Ok(Bytes::from(format!("{line}\n")))).await.is_err() || now.is_none() {
                return; // the client left, or the container stopped
            }
            before = now;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `DELETE /containers/{id}[?force=1][&v=1]`: 204; 409 when it runs and `force` is not
/// given.
pub async fn remove(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let volumes = match app.containers.get(id).await {
        Ok(r) => r.volumes,
        Err(_) => Vec::new(), // (an unreadable record can still go, with force)
    };
    app.containers.remove(id, q.flag("force")).await?;
    // `rm -v`: its anonymous volumes go with it (named ones stay, as with Docker).
    if q.flag("v") {
        for v in volumes.iter().filter(|v| crate::volumes::anonymous(v)) {
            let _ = app.containers.remove_volume(v).await;
        }
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /containers/{id}/top[?ps_args=]`: the container's processes as `ps -ef` lists
/// them (other `ps` options are refused: there is no `ps` of the host to give them to).
pub async fn top(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let args = q.get("ps_args").unwrap_or("").trim();
    if !["", "-ef", "ef", "-e", "aux"].contains(&args) {
        return Err(ApiError::bad_request(format!(
            "cabin lists a container's processes as ps -ef does; it takes no ps options ({args:?})"
        )));
    }
    let processes = app.containers.top(id).await?;
    let rows: Vec<Vec<String>> = processes.iter().map(|p| p.columns()).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"Titles": Process::TITLES, "Processes": rows}),
    ))
}

/// `POST /containers/{id}/rename?name=NEW`.
pub async fn rename(app: &Arc<App>, id: &str, q: &Query) -> Result<Response, ApiError> {
    let name = q.get("name").unwrap_or("");
    let name = name.strip_prefix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(ApiError::bad_request("rename needs a new name (name=...)"));
    }
    app.containers.rename(id, name).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `docker update`'s body: what it names changes; zero (the CLI sends zeros for the
/// flags not given) and absent leave a limit as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct UpdateBody {
    memory: i64,
    nano_cpus: i64,
    cpu_quota: i64,
    cpu_period: i64,
    /// Absent: as it is; 0 or -1: no limit.
    pids_limit: Option<i64>,
    restart_policy: Option<RestartPolicyBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct RestartPolicyBody {
    name: String,
}

impl UpdateBody {
    fn limits(&self) -> cabin_containers::control::Limits {
        let cpus = if self.nano_cpus > 0 {
            Some(self.nano_cpus as f64 / 1e9)
        } else if self.cpu_quota > 0 {
            let period = if self.cpu_period > 0 {
                self.cpu_period
            } else {
                100_000
            };
            Some(self.cpu_quota as f64 / period as f64)
        } else {
            None
        };
        cabin_containers::control::Limits {
            memory_bytes: (self.memory > 0).then_some(self.memory as u64),
            cpus,
            pids_limit: self.pids_limit.map(|p| p.max(0) as u64),
        }
    }
}

/// `POST /containers/{id}/update`: new memory, CPU and pids limits, at once in the
/// running container and for its later starts.
pub async fn update(app: &Arc<App>, id: &str, req: Request) -> Result<Response, ApiError> {
    let b: UpdateBody = body(req).await?;
    if b.restart_policy
        .as_ref()
        .is_some_and(|r| !r.name.is_empty())
    {
        return Err(ApiError::bad_request(
            "cabin cannot change a container's restart policy after it is made: create it again with --restart",
        ));
    }
    app.containers.update(id, b.limits()).await?;
    Ok(json(StatusCode::OK, &json!({"Warnings": []})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_updates_zeros_leave_limits_as_they_are() {
        let b: UpdateBody = serde_json::from_str(
            r#"{"Memory": 67108864, "NanoCpus": 0, "CpuQuota": 0, "PidsLimit": null,
                "RestartPolicy": {"Name": ""}}"#,
        )
        .unwrap();
        let l = b.limits();
        assert_eq!(
            (l.memory_bytes, l.cpus, l.pids_limit),
            (Some(64 << 20), None, None)
        );
        let b: UpdateBody =
            serde_json::from_str(r#"{"NanoCpus": 500000000, "PidsLimit": -1}"#).unwrap();
        let l = b.limits();
        assert_eq!((l.cpus, l.pids_limit), (Some(0.5), Some(0)));
    }

    fn record(status: Status) -> Record {
        Record {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "web".into(),
            root: "alpine".into(),
            command: vec!["echo".into(), "hi".into()],
            created_unix: 1_700_000_000,
            status,
            auto_remove: false,
            labels: vec![("app".into(), "x".into())],
            restart_count: 0,
            init: false,
            stdin: false,
            volumes: vec![],
            network: None,
            lost: false,
        }
    }

    #[test]
    fn inspect_has_what_the_clis_templates_and_logs_read() {
        let r = record(Status::Exited {
            code: 3,
            reason: None,
            finished_unix: 1_700_000_100,
        });
        let v = inspect_json(&r, None, "sha256:abc", None);
        assert_eq!(v["State"]["Status"], "exited");
        assert_eq!(v["State"]["ExitCode"], 3);
        assert_eq!(v["State"]["FinishedAt"], "2023-11-14T22:15:00Z");
        assert_eq!(v["State"]["StartedAt"], NEVER);
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["Config"]["Tty"], false);
        assert_eq!(v["Config"]["Image"], "alpine");
        assert_eq!(v["Path"], "echo");
        assert_eq!(v["Created"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn filters_take_both_of_dockers_shapes_and_refuse_unknown_keys() {
        let q = |f: &str| Query(vec![("filters".into(), f.into())]);
        let r = record(Status::Created);
        let f = filters(&q(r#"{"status":["created"],"label":["app=x"]}"#)).unwrap();
        assert!(matches_filters(&r, None, &f).unwrap());
        let f = filters(&q(r#"{"name":{"we":true}}"#)).unwrap();
        assert!(matches_filters(&r, None, &f).unwrap());
        let f = filters(&q(r#"{"status":["running"]}"#)).unwrap();
        assert!(!matches_filters(&r, None, &f).unwrap());
        let f = filters(&q(r#"{"label":["app=y"]}"#)).unwrap();
        assert!(!matches_filters(&r, None, &f).unwrap());
        let f = filters(&q(r#"{"colour":["red"]}"#)).unwrap();
        assert!(matches_filters(&r, None, &f).is_err());
        assert!(filters(&q("{not json")).is_err());
    }

    #[test]
    fn since_takes_seconds_with_a_fraction() {
        let q = |s: &str| Query(vec![("since".into(), s.into())]);
        assert_eq!(since_nanos(&q("12")).unwrap(), Some(12_000_000_000));
        assert_eq!(since_nanos(&q("12.5")).unwrap(), Some(12_500_000_000));
        assert_eq!(since_nanos(&q("0")).unwrap(), None);
        assert!(since_nanos(&q("x")).is_err());
    }
}
