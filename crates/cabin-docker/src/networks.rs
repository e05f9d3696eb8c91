//! The network endpoints: list, inspect, create, remove, prune, connect and
//! disconnect, over `cabin_net::networks` (user-defined networks, each a bridge of its
//! own) and the two networks every host has: `bridge` (`cabin0`, `--network bridge`)
//! and `none`. `host` does not exist: each container has its own kernel.
//!
//! Containers join a network when they start: connect and disconnect change what a
//! container that is not running joins next (compose connects before it starts).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use cabin_containers::spec::UserNetwork;
use cabin_net::bridge::{self, Net};
use cabin_net::networks::{NetworkError, NetworkRecord, Networks};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::create::EndpointConfig;
use crate::error::{blocking, json, ApiError};
use crate::request::{body, filters, labels_match, Query};

/// The networks every host has, as (name, ID).
const BUILTIN: [(&str, &str); 2] = [
    ("bridge", "62726964676500000000000000000000"),
    ("none", "6e6f6e65000000000000000000000000"),
];

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        let status = match &e {
            NetworkError::NotFound(_) => StatusCode::NOT_FOUND,
            NetworkError::Exists(_) => StatusCode::CONFLICT,
            NetworkError::InUse { .. } => StatusCode::FORBIDDEN,
            NetworkError::InvalidName(_)
            | NetworkError::Reserved(_)
            | NetworkError::Ambiguous(_)
            | NetworkError::NotConnected { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// The containers attached to `net` now, as Docker lists them in a network.
fn attached(net: &Net) -> Map<String, Value> {
    bridge::endpoints(net)
        .into_iter()
        .map(|e| {
            let v = json!({
                "Name": e.names.first().cloned().unwrap_or_default(),
                "EndpointID": e.container_id, "MacAddress": e.mac,
                "IPv4Address": format!("{}/24", e.ip), "IPv6Address": "",
            });
            (e.container_id, v)
        })
        .collect()
}

fn builtin_json(name: &str, id: &str) -> Value {
    let (driver, config, containers) = if name == "bridge" {
        let net = Net::default_bridge();
        (
            "bridge",
            json!([{"Subnet": format!("{}/24", net.subnet), "Gateway": net.gateway().to_string()}]),
            attached(&net),
        )
    } else {
        ("null", json!([]), Map::new())
    };
    json!({
        "Name": name, "Id": id, "Created": "0001-01-01T00:00:00Z", "Scope": "local",
        "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers, "Options": {}, "Labels": {},
    })
}

fn record_json(r: &NetworkRecord, with_containers: bool) -> Value {
    let labels: BTreeMap<&str, &str> = r
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let containers = if with_containers {
        attached(&r.net())
    } else {
        Map::new()
    };
    json!({
        "Name": r.name, "Id": r.id,
        "Created": cabin_base::time::rfc3339(r.created_unix * 1_000_000_000, false),
        "Scope": "local", "Driver": "bridge", "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [
            {"Subnet": format!("{}/24", r.subnet), "Gateway": r.gateway().to_string()}
        ]},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers,
        "Options": {"com.docker.network.bridge.name": r.net().bridge}, "Labels": labels,
    })
}

/// Whether network `v` passes Docker's network filters.
fn wanted(v: &Value, f: &BTreeMap<String, Vec<String>>, builtin: bool) -> bool {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    f.iter().all(|(key, values)| {
        if key == "label" {
            return labels_match(values, |k| v["Labels"][k].as_str());
        }
        values.iter().any(|want| match key.as_str() {
            "name" => s("Name").contains(want.as_str()),
            "id" => s("Id").starts_with(want.as_str()),
            "driver" => s("Driver") == *want,
            "scope" => want == "local",
            "type" => (want == "builtin") == builtin,
            _ => false,
        })
    })
}

/// `GET /networks[?filters=]`.
pub async fn list(app: &Arc<App>, q: &Query) -> Result<Response, ApiError> {
    let f = filters(q)?;
    for key in f.keys() {
        if !["name", "id", "driver", "scope", "type", "label"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid filter {key:?} (cabin filters networks on name, id, driver, scope, type and label)"
            )));
        }
    }
    let networks = Networks::open(&app.host.paths);
    let rows = blocking(move || {
        let mut rows: Vec<Value> = BUILTIN
            .iter()
            .map(|(n, id)| builtin_json(n, id))
            .filter(|v| wanted(v, &f, true))
            .collect();
        rows.extend(
            networks
                .list()
                .iter()
                .map(|r| record_json(r, false))
                .filter(|v| wanted(v, &f, false)),
        );
        Ok(rows)
    })
    .await?;
    Ok(json(StatusCode::OK, &Value::Array(rows)))
}

/// `GET /networks/{id}`.
pub async fn inspect(app: &Arc<App>, name: &str) -> Result<Response, ApiError> {
    if let Some((n, id)) = BUILTIN.iter().find(|(n, id)| *n == name || *id == name) {
        let v = blocking(move || Ok(builtin_json(n, id))).await?;
        return Ok(json(StatusCode::OK, &v));
    }
    if name == "host" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "network host not found: each cabin container has its own VM and kernel",
        ));
    }
    let networks = Networks::open(&app.host.paths);
    let name = name.to_string();
    let v = blocking(move || Ok(record_json(&networks.get(&name)?, true))).await?;
    Ok(json(StatusCode::OK, &v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<Value>>,
}

/// `POST /networks/create`: 201 with the new network's ID.
pub async fn create(app: &Arc<App>, req: Request) -> Result<Response, ApiError> {
    let b: CreateBody = body(req).await?;
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("a network needs a name (Name)"))?;
    if let Some(d) = b
        .driver
        .as_deref()
        .filter(|d| !d.is_empty() && *d != "bridge")
    {
        return Err(ApiError::bad_request(format!(
            "network driver {d:?} is not available: cabin's networks are bridges (driver bridge)"
        )));
    }
    if b.internal == Some(true) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "cabin has no internal networks yet: its networks reach the outside through NAT",
        ));
    }
    if b.enable_ipv6 == Some(true) {
        return Err(ApiError::bad_request(
            "cabin's networks are IPv4 only: leave EnableIPv6 off",
        ));
    }
    if b.ipam.and_then(|i| i.config).is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::bad_request(
            "cabin picks each network's subnet (a /24 in 10.89.0.0/16): leave the IPAM config out",
        ));
    }
    let labels: Vec<(String, String)> = b.labels.unwrap_or_default().into_iter().collect();
    let networks = Networks::open(&app.host.paths);
    let r = blocking(move || Ok(networks.create(&name, labels)?)).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": r.id, "Warning": ""}),
    ))
}

fn builtin_refusal(name: &str) -> Option<ApiError> {
    (BUILTIN.iter().any(|(n, _)| *n == name) || name == "host").then(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{name} is a pre-defined network and cannot be removed or connected to by name here"),
        )
    })
}

/// `DELETE /networks/{id}`: 204; 403 while containers are attached.
pub async fn remove(app: &Arc<App>, name: &str) -> Result<Response, ApiError> {
    if let Some(e) = builtin_refusal(name) {
        return Err(e);
    }
    let networks = Networks::open(&app.host.paths);
    let name = name.to_string();
    blocking(move || Ok(networks.remove(&name).map(drop)?)).await?;
    Ok(crate::containers::empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: removes the user-defined networks no container is attached
/// to and no container is set to join.
pub async fn prune(app: &Arc<App>) -> Result<Response, ApiError> {
    let removed = app.containers.prune_networks().await?;
    Ok(json(StatusCode::OK, &json!({"NetworksDeleted": removed})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ConnectBody {
    container: Option<String>,
    endpoint_config: Option<EndpointConfig>,
}

/// `POST /networks/{id}/connect` and `/disconnect`: what a container that is not
/// running joins at its next start.
pub async fn connect(
    app: &Arc<App>,
    network: &str,
    req: Request,
    join: bool,
) -> Result<Response, ApiError> {
    let b: ConnectBody = body(req).await?;
    let container = b
        .container
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::bad_request("name the container (Container)"))?;
    if BUILTIN.iter().any(|(n, _)| *n == network) {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("cabin connects containers to user-defined networks only, not to {network}: choose its network when it is created (--network)"),
        ));
    }
    if join {
        let aliases = b
            .endpoint_config
            .and_then(|e| e.aliases)
            .unwrap_or_default();
        let u = UserNetwork {
            name: network.to_string(),
            aliases,
        };
        app.containers.connect(&container, u).await?;
    } else {
        app.containers.disconnect(&container, network).await?;
    }
    Ok(crate::containers::empty(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filters_pick_by_name_label_and_type() {
        let v = json!({"Name": "proj_default", "Id": "abcdef", "Driver": "bridge",
                       "Labels": {"com.docker.compose.project": "proj"}});
        let f = |k: &str, v: &str| BTreeMap::from([(k.to_string(), vec![v.to_string()])]);
        assert!(wanted(&v, &f("name", "proj"), false));
        assert!(wanted(&v, &f("id", "abc"), false));
        assert!(wanted(
            &v,
            &f("label", "com.docker.compose.project=proj"),
            false
        ));
        assert!(wanted(&v, &f("label", "com.docker.compose.project"), false));
        assert!(wanted(&v, &f("type", "custom"), false));
        assert!(!wanted(&v, &f("type", "builtin"), false));
        assert!(!wanted(&v, &f("label", "x"), false));
        assert!(!wanted(&v, &f("driver", "overlay"), false));
    }
}
