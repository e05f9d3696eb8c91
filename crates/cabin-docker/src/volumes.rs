//! The volume endpoints: create, list, inspect, remove, prune, over cabin's named
//! volumes (each an ext4 disk that the VMs of the containers using it mount).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cabin_base::time::rfc3339;
use cabin_containers::volumes::{VolumeInfo, DEFAULT_VOLUME_BYTES};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::error::{blocking, json, ApiError};
use crate::request::Query;
use crate::request::{body, filters};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    pub(crate) driver_opts: Option<BTreeMap<String, String>>,
}

fn volume_json(app: &App, v: &VolumeInfo) -> Value {
    json!({
        "Name": v.name,
        "Driver": "local",
        "Mountpoint": app.containers.volumes().disk(&v.name),
        "CreatedAt": rfc3339(v.created_unix * 1_000_000_000, false),
        "Labels": {},
        "Scope": "local",
        "Options": {"size": v.size_bytes.to_string()},
        "UsageData": null,
    })
}

/// `GET /volumes`.
pub async fn list(app: &Arc<App>, q: &Query) -> Result<Response, ApiError> {
    let f = filters(q)?;
    let volumes = app.containers.volumes();
    let all = blocking(move || Ok(volumes.list())).await?;
    let names = f.get("name");
    let rows: Vec<Value> = all
        .iter()
        .filter(|v| names.is_none_or(|n| n.iter().any(|n| v.name.contains(n.as_str()))))
        .map(|v| volume_json(app, v))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"Volumes": rows, "Warnings": []}),
    ))
}

/// `POST /volumes/create`: 201; an existing volume of that name is returned as it is.
/// Without a name, one is made up (an anonymous volume). `DriverOpts.size` sets its
/// size (Docker's units, `10g`).
pub async fn create(app: &Arc<App>, req: Request) -> Result<Response, ApiError> {
    let b: CreateBody = body(req).await?;
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "local")
    {
        return Err(ApiError::bad_request(format!(
            "volume driver {d:?} is not available: cabin's volumes are local"
        )));
    }
    let size = match b.driver_opts.as_ref().and_then(|o| o.get("size")) {
        Some(s) => cabin_base::sizes::parse_size(s, cabin_base::sizes::Dialect::Docker)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => DEFAULT_VOLUME_BYTES,
    };
    if let Some(k) = b
        .driver_opts
        .iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| *k != "size")
    {
        return Err(ApiError::bad_request(format!(
            "volume option {k:?} is not supported (cabin's volumes take size)"
        )));
    }
    let name = match b.name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => cabin_base::random::id().map_err(ApiError::internal)?,
    };
    let volumes = app.containers.volumes();
    let info = blocking(move || {
        volumes
            .create(&name, size)
            .map_err(|e| cabin_containers::ContainerError::from(e).into())
    })
    .await?;
    Ok(json(StatusCode::CREATED, &volume_json(app, &info)))
}

/// `GET /volumes/{name}`.
pub async fn inspect(app: &Arc<App>, name: &str) -> Result<Response, ApiError> {
    let volumes = app.containers.volumes();
    let owned = name.to_string();
    let info = blocking(move || {
        volumes
            .inspect(&owned)
            .map_err(|e| cabin_containers::ContainerError::from(e).into())
    })
    .await?;
    Ok(json(StatusCode::OK, &volume_json(app, &info)))
}

/// `DELETE /volumes/{name}[?force=1]`: 204; 409 while a container names it; with
/// `force`, a volume that is not there is no error.
pub async fn remove(app: &Arc<App>, name: &str, q: &Query) -> Result<Response, ApiError> {
    match app.containers.remove_volume(name).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e) => {
            let e = ApiError::from(e);
            if q.flag("force") && e.status == StatusCode::NOT_FOUND {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            Err(e)
        }
    }
}

/// Whether `name` is one cabin made up (`docker run -v /path`, a create without a
/// name): 32 or 64 hexadecimal digits, as Docker's anonymous volumes are named.
pub fn anonymous(name: &str) -> bool {
    matches!(name.len(), 32 | 64) && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `POST /volumes/prune`: the unused anonymous volumes (all unused ones with the
/// `all=true` filter, as Docker since API 1.42).
pub async fn prune(app: &Arc<App>, q: &Query) -> Result<Response, ApiError> {
    let f = filters(q)?;
    let all = f
        .get("all")
        .is_some_and(|v| v.iter().any(|v| v == "true" || v == "1"));
    let users = app.containers.volume_users().await?;
    let volumes = app.containers.volumes();
    let candidates: Vec<VolumeInfo> = {
        let v = app.containers.volumes();
        blocking(move || Ok(v.list())).await?
    };
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for v in candidates {
        if (!all && !anonymous(&v.name)) || users.iter().any(|(u, _)| *u == v.name) {
            continue;
        }
        let used = std::fs::metadata(volumes.disk(&v.name))
            .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
            .unwrap_or(0);
        if app.containers.remove_volume(&v.name).await.is_ok() {
            reclaimed += used;
            deleted.push(v.name);
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_made_up_names_are_anonymous() {
        assert!(anonymous("0123456789abcdef0123456789abcdef"));
        assert!(!anonymous("data"));
        assert!(!anonymous("0123456789abcdef0123456789abcdeg"));
    }
}
