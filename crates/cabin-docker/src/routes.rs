//! Which endpoint a request names. Docker's paths carry an optional `/vX.Y` prefix
//! (any version is served the same) and what the user typed: a container by name, ID
//! or ID prefix, an image by a name with its registry, slashes and tag
//! (`/images/ghcr.io/a/b:1/json`), matched greedily.

use axum::http::Method;

/// What is done to one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerOp {
    Inspect,
    Start,
    Stop,
    Kill,
    Pause,
    Unpause,
    Restart,
    Wait,
    Attach,
    Resize,
    Logs,
    Exec,
    Remove,
    /// Resource use, once or every second.
    Stats,
    /// `docker cp`: the stat of a path (HEAD), its archive (GET), an archive put (PUT).
    ArchiveStat,
    ArchiveGet,
    ArchivePut,
    Rename,
    Top,
    /// `docker update`: new limits.
    Update,
}

/// What is done to one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkOp {
    Inspect,
    Remove,
    Connect,
    Disconnect,
}

/// What is done to one exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOp {
    Start,
    Resize,
    Inspect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Version,
    Info,
    Events,
    /// `docker system df`.
    DiskUsage,
    ContainerList,
    ContainerCreate,
    Container(String, ContainerOp),
    Exec(String, ExecOp),
    ImageList,
    ImageCreate,
    ImageInspect(String),
    ImageRemove(String),
    ImageTag(String),
    ImageHistory(String),
    ImagePush(String),
    /// `docker save`: one image by name, or those of the `names` query.
    ImageSave(Option<String>),
    ImageLoad,
    Auth,
    ImagePrune,
    ContainerPrune,
    VolumeList,
    VolumeCreate,
    VolumeInspect(String),
    VolumeRemove(String),
    VolumePrune,
    NetworkList,
    NetworkCreate,
    NetworkPrune,
    Network(String, NetworkOp),
    /// An inspect of another kind of object (`docker inspect NAME` tries images,
    /// networks, volumes and plugins in turn): cabin has none by that name.
    NoSuch(&'static str, String),
    /// An endpoint of Docker's that cabin does not have, and why (a 501 that says so).
    Missing(&'static str),
    /// A known endpoint cabin does not serve yet, or an unknown one.
    Unsupported,
}

/// The path without its `/vX.Y` prefix, as segments (percent-decoded).
fn segments(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let versioned = parts.first().is_some_and(|p| {
        p.strip_prefix('v')
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
    });
    if versioned {
        parts.remove(0);
    }
    parts
}

/// The route of `method` on `path`.
pub fn find(method: &Method, path: &str) -> Route {
    let parts = segments(path);
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let m = method.as_str();
    let get = m == "GET" || m == "HEAD";
    match (m, p.as_slice()) {
        (_, ["_ping"]) if get => Route::Ping,
        ("GET", ["version"]) => Route::Version,
        ("GET", ["info"]) => Route::Info,
        ("GET", ["events"]) => Route::Events,
        ("GET", ["system", "df"]) => Route::DiskUsage,
        ("GET", ["containers", "json"]) => Route::ContainerList,
        ("POST", ["containers", "create"]) => Route::ContainerCreate,
        ("POST", ["containers", "prune"]) => Route::ContainerPrune,
        ("POST", ["images", "prune"]) => Route::ImagePrune,
        ("POST", ["auth"]) => Route::Auth,
        ("GET", ["images", "get"]) => Route::ImageSave(None),
        ("POST", ["images", "load"]) => Route::ImageLoad,
        ("GET", ["images", name @ .., "history"]) if !name.is_empty() => {
            Route::ImageHistory(name.join("/"))
        }
        ("GET", ["images", name @ .., "get"]) if !name.is_empty() => {
            Route::ImageSave(Some(name.join("/")))
        }
        ("POST", ["images", name @ .., "push"]) if !name.is_empty() => {
            Route::ImagePush(name.join("/"))
        }
        ("POST", ["images", name @ .., "tag"]) if !name.is_empty() => {
            Route::ImageTag(name.join("/"))
        }
        ("GET", ["volumes"]) => Route::VolumeList,
        ("POST", ["volumes", "create"]) => Route::VolumeCreate,
        ("POST", ["volumes", "prune"]) => Route::VolumePrune,
        ("GET", ["volumes", name]) => Route::VolumeInspect(name.to_string()),
        ("DELETE", ["volumes", name]) => Route::VolumeRemove(name.to_string()),
        ("DELETE", ["containers", id]) => Route::Container(id.to_string(), ContainerOp::Remove),
        (_, ["containers", id, op]) => {
            let op = match (m, *op) {
                ("GET", "json") => ContainerOp::Inspect,
                ("POST", "start") => ContainerOp::Start,
                ("POST", "stop") => ContainerOp::Stop,
                ("POST", "kill") => ContainerOp::Kill,
                ("POST", "pause") => ContainerOp::Pause,
                ("POST", "unpause") => ContainerOp::Unpause,
                ("POST", "restart") => ContainerOp::Restart,
                ("POST", "wait") => ContainerOp::Wait,
                ("POST", "attach") => ContainerOp::Attach,
                ("POST", "resize") => ContainerOp::Resize,
                ("GET", "logs") => ContainerOp::Logs,
                ("GET", "stats") => ContainerOp::Stats,
                ("POST", "exec") => ContainerOp::Exec,
                ("HEAD", "archive") => ContainerOp::ArchiveStat,
                ("GET", "archive") => ContainerOp::ArchiveGet,
                ("PUT", "archive") => ContainerOp::ArchivePut,
                ("POST", "rename") => ContainerOp::Rename,
                ("POST", "update") => ContainerOp::Update,
                ("GET", "top") => ContainerOp::Top,
                _ => return Route::Unsupported,
            };
            Route::Container(id.to_string(), op)
        }
        // `docker inspect NAME` asks for a container first, whatever NAME is: an image's
        // name with slashes is no container (a 404, and the CLI goes on to images).
        (_, ["containers", id @ .., _]) if id.len() > 1 => {
            Route::NoSuch("container", id.join("/"))
        }
        (_, ["exec", id, op]) => {
            let op = match (m, *op) {
                ("POST", "start") => ExecOp::Start,
                ("POST", "resize") => ExecOp::Resize,
                ("GET", "json") => ExecOp::Inspect,
                _ => return Route::Unsupported,
            };
            Route::Exec(id.to_string(), op)
        }
        ("GET", ["images", "json"]) => Route::ImageList,
        ("POST", ["images", "create"]) => Route::ImageCreate,
        ("GET", ["images", name @ .., "json"]) if !name.is_empty() => {
            Route::ImageInspect(name.join("/"))
        }
        ("DELETE", ["images", name @ ..]) if !name.is_empty() => Route::ImageRemove(name.join("/")),
        ("GET", ["networks"]) => Route::NetworkList,
        ("POST", ["networks", "create"]) => Route::NetworkCreate,
        ("POST", ["networks", "prune"]) => Route::NetworkPrune,
        ("GET", ["networks", name]) => Route::Network(name.to_string(), NetworkOp::Inspect),
        ("DELETE", ["networks", name]) => Route::Network(name.to_string(), NetworkOp::Remove),
        ("POST", ["networks", name, "connect"]) => {
            Route::Network(name.to_string(), NetworkOp::Connect)
        }
        ("POST", ["networks", name, "disconnect"]) => {
            Route::Network(name.to_string(), NetworkOp::Disconnect)
        }
        ("POST", ["build"]) | ("POST", ["build", "prune"]) | ("POST", ["session"]) => Route::Missing(
            "cabin cannot build images yet (docker build and compose's build: come in a later release); build with docker or buildah, push to a registry and pull or run the image from there",
        ),
        ("GET", ["images", "search"]) => Route::Missing(
            "cabin does not search registries; find images on the registry's own site, then pull them by name",
        ),
        (_, ["swarm", ..]) | (_, ["services", ..]) | (_, ["nodes", ..]) | (_, ["secrets", ..])
        | (_, ["configs", ..]) | (_, ["tasks", ..]) => {
            Route::Missing("cabin is not a swarm manager: swarm, services, nodes, secrets, configs and tasks are not there")
        }
        ("GET", ["plugins", name, "json"]) => Route::NoSuch("plugin", name.to_string()),
        (_, ["plugins", ..]) => Route::Missing("cabin has no plugins"),
        _ => Route::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_version_prefix_and_none_name_the_same_endpoint() {
        for p in ["/_ping", "/v1.44/_ping", "/v1.50/_ping", "/v1.12/_ping"] {
            assert_eq!(find(&Method::HEAD, p), Route::Ping, "{p}");
        }
        assert_eq!(
            find(&Method::POST, "/v1.44/containers/web/start"),
            Route::Container("web".into(), ContainerOp::Start)
        );
        assert_eq!(
            find(&Method::DELETE, "/containers/0123abc"),
            Route::Container("0123abc".into(), ContainerOp::Remove)
        );
        assert_eq!(find(&Method::GET, "/v1.44/version"), Route::Version);
        assert_eq!(
            find(&Method::HEAD, "/v1.44/containers/web/archive"),
            Route::Container("web".into(), ContainerOp::ArchiveStat)
        );
        // A container named like a version is a container.
        assert_eq!(
            find(&Method::GET, "/v1.44/containers/v1/json"),
            Route::Container("v1".into(), ContainerOp::Inspect)
        );
    }

    #[test]
    fn image_names_keep_their_registry_slashes_and_tag() {
        assert_eq!(
            find(&Method::GET, "/v1.44/images/ghcr.io/a/b:1/json"),
            Route::ImageInspect("ghcr.io/a/b:1".into())
        );
        assert_eq!(
            find(&Method::DELETE, "/v1.44/images/127.0.0.1:5000/busybox:x"),
            Route::ImageRemove("127.0.0.1:5000/busybox:x".into())
        );
        assert_eq!(
            find(&Method::GET, "/images/sha256%3Aabc/json"),
            Route::ImageInspect("sha256:abc".into())
        );
    }

    #[test]
    fn what_cabin_does_not_serve_is_unsupported_not_a_container() {
        assert!(
            matches!(find(&Method::POST, "/v1.44/build"), Route::Missing(m) if m.contains("build"))
        );
        assert!(matches!(
            find(&Method::GET, "/images/search"),
            Route::Missing(_)
        ));
        assert_eq!(
            find(&Method::GET, "/v1.44/containers/web/changes"),
            Route::Unsupported
        );
        assert_eq!(
            find(&Method::GET, "/v1.44/networks/x"),
            Route::Network("x".into(), NetworkOp::Inspect)
        );
        assert_eq!(
            find(&Method::POST, "/v1.41/networks/proj_default/connect"),
            Route::Network("proj_default".into(), NetworkOp::Connect)
        );
        assert_eq!(
            find(&Method::POST, "/v1.44/images/127.0.0.1:5000/a/b/push"),
            Route::ImagePush("127.0.0.1:5000/a/b".into())
        );
        assert_eq!(
            find(&Method::GET, "/v1.44/images/get"),
            Route::ImageSave(None)
        );
        assert_eq!(
            find(&Method::GET, "/v1.44/containers/local/bb/json"),
            Route::NoSuch("container", "local/bb".into())
        );
        assert_eq!(
            find(&Method::GET, "/images/a:1/history"),
            Route::ImageHistory("a:1".into())
        );
        assert_eq!(
            find(&Method::POST, "/networks/create"),
            Route::NetworkCreate
        );
        assert_eq!(
            find(&Method::POST, "/v1.44/images/a/b:1/tag"),
            Route::ImageTag("a/b:1".into())
        );
        assert_eq!(
            find(&Method::POST, "/v1.44/containers/prune"),
            Route::ContainerPrune
        );
    }
}
