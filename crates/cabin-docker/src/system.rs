//! `/_ping`, `/version` and `/info`: what the docker CLI asks before anything else, and
//! `docker version` / `docker info`, with cabin's own facts (accelerator, runtime,
//! guest kernel); `/system/df` for `docker system df`.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cabin_containers::store::Status;
use serde_json::json;

use crate::app::App;
use crate::error::{json, ApiError};
use crate::{API_VERSION, MIN_API_VERSION};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `HEAD`/`GET /_ping`: "OK" (the HEAD reply loses its body in `dispatch`).
pub fn ping() -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `GET /version`.
pub fn version(_app: &App) -> Response {
    // The engine's details are the reply's own facts too.
    let mut v = json!({
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "GitCommit": "",
        "GoVersion": "",
        "BuildTime": "",
    });
    let mut details = v.clone();
    details["Experimental"] = json!("false");
    v["Platform"] = json!({"Name": "cabin (a VM per container)"});
    v["Version"] = json!(VERSION);
    v["Components"] = json!([{"Name": "Engine", "Version": VERSION, "Details": details}]);
    json(StatusCode::OK, &v)
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// `GET /info`: the counts, the host, and what runs the containers.
pub async fn info(app: &Arc<App>) -> Result<Response, ApiError> {
    let (records, _) = app.containers.list().await?;
    let running = records
        .iter()
        .filter(|r| matches!(r.status, Status::Running { paused: false, .. }))
        .count();
    let paused = records
        .iter()
        .filter(|r| matches!(r.status, Status::Running { paused: true, .. }))
        .count();
    let host = app.host.clone();
    let accel = app.accel;
    let (facts, images) = tokio::task::spawn_blocking(move || {
        let facts = cabin_containers::system::info(&host, accel);
        let images = cabin_image::store::Store::open(host.paths.image_store())
            .and_then(|s| s.refs())
            .map_or(0, |r| r.len());
        (facts, images)
    })
    .await
    .map_err(ApiError::internal)?;
    let fact = |key: &str| {
        facts
            .0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut warnings = Vec::new();
    if fact("accelerator") != "kvm" {
        warnings.push(format!(
            "WARNING: containers run under QEMU's emulator (TCG), not KVM: {}",
            fact("accelerator reason")
        ));
    }
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": "",
            "Name": name,
            "ServerVersion": VERSION,
            "OperatingSystem": "cabin (a VM per container)",
            "OSType": "linux",
            "Architecture": std::env::consts::ARCH,
            "KernelVersion": kernel_version(),
            "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "MemTotal": mem_total(),
            "Containers": records.len(),
            "ContainersRunning": running,
            "ContainersPaused": paused,
            "ContainersStopped": records.len() - running - paused,
            "Images": images,
            "Driver": "cabin (ext4 image + qcow2 layer)",
            "DockerRootDir": app.host.paths.data.display().to_string(),
            "DefaultRuntime": "cabin",
            "Runtimes": {"cabin": {"path": "cabin (VM per container)"}},
            "Isolation": "",
            "InitBinary": "cabin-init",
            "Swarm": {"LocalNodeState": "inactive", "NodeID": "", "NodeAddr": ""},
            "Labels": [
                format!("cabin.accelerator={}", fact("accelerator")),
                format!("cabin.guest-kernel={}", fact("guest kernel")),
            ],
            "Warnings": warnings,
        }),
    ))
}

/// `GET /system/df`: images (with how many containers use each), containers (with the
/// bytes their own files take) and volumes (with their disks' allocated bytes and how
/// many containers mount them); cabin keeps no build cache.
pub async fn df(app: &Arc<App>) -> Result<Response, ApiError> {
    let (records, _) = app.containers.list().await?;
    let mut images = crate::images::summaries(app).await?;
    let bare = |n: &str| n.strip_suffix(":latest").unwrap_or(n).to_string();
    for i in &mut images {
        let names: Vec<String> = i["RepoTags"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str()).map(bare).collect())
            .unwrap_or_default();
        let users = records
            .iter()
            .filter(|r| names.contains(&bare(&r.root)))
            .count();
        i["Containers"] = json!(users);
    }
    let layers: u64 = images.iter().filter_map(|i| i["Size"].as_u64()).sum();
    let a = app.clone();
    let containers = tokio::task::spawn_blocking(move || {
        let now = cabin_base::time::now_unix();
        records
            .iter()
            .map(|r| {
                let mut v = crate::containers::summary(r, None, now);
                v["SizeRw"] = json!(a.containers.disk_bytes(&r.id));
                v["SizeRootFs"] = json!(0);
                v
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    let users = app.containers.volume_users().await?;
    let volumes = app.containers.volumes();
    let volumes = tokio::task::spawn_blocking(move || {
        volumes
            .list()
            .iter()
            .map(|v| {
                let refs = users.iter().filter(|(name, _)| *name == v.name).count();
                let size = cabin_containers::system::allocated_bytes(&volumes.disk(&v.name));
                json!({
                    "Name": v.name, "Driver": "local", "Scope": "local", "Labels": {},
                    "Mountpoint": volumes.disk(&v.name),
                    "UsageData": {"Size": size, "RefCount": refs},
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "LayersSize": layers, "Images": images, "Containers": containers,
            "Volumes": volumes, "BuildCache": [],
        }),
    ))
}
