//! The Docker Engine API on a unix socket (`cabin serve --docker-socket PATH`): the
//! docker CLI, docker-compose and the Docker SDKs drive cabin's containers, each in its
//! own VM, unchanged. A thin front end: every request is parsed here, done by
//! `cabin_containers::Containers` and the image store, and answered in Docker's shapes.
//! Containers made here and with the `cabin` CLI are the same containers.
//!
//! - [`routes`]: which endpoint a request names.
//! - `error`: Docker's error replies (the status codes its clients act on); `request`:
//!   what handlers read of a request (query, bounded JSON body, filters); `app`: what
//!   they share.
//! - `system`: ping, version, info. `containers`: the container endpoints, `create`
//!   the mapping of Docker's create body onto a container spec, `exec` the exec
//!   endpoints (`execs` their registry), `images` the image endpoints, `volumes` the
//!   volume endpoints, `networks` the network endpoints.
//! - `events`: `/events`, from the store's changes and the image endpoints.
//! - `transfer`: push, login checks, `docker save` and `docker load`.
//! - `stream`: hijacked connections (attach, exec) and Docker's stream framing;
//!   `archive`: `docker cp`'s archives.
//!
//! What the docker CLI really sends and depends on is recorded in
//! `shared/reference/docker-api.md`; the tests drive the real CLI.

mod app;
mod archive;
mod containers;
mod create;
mod error;
mod events;
mod exec;
mod execs;
#[cfg(fuzzing)]
pub mod fuzzing;
mod images;
mod networks;
mod request;
pub mod routes;
mod stream;
mod system;
mod transfer;
mod volumes;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cabin_base::Host;
use cabin_containers::{AccelRequest, Containers};

use app::App;
use error::ApiError;
use request::Query;
use routes::{ContainerOp, ExecOp, NetworkOp, Route};

/// The API version cabin speaks: the docker CLI v28 and v29 both accept it, and it is
/// recent enough that `docker run` waits with `/wait` (not `/events`).
pub const API_VERSION: &str = "1.44";
/// The oldest version a client may ask for.
pub const MIN_API_VERSION: &str = "1.24";

pub struct Options {
    /// Where the socket is made.
    pub socket: PathBuf,
    /// What the front end read of its environment.
    pub host: Host,
    /// The accelerator of the containers created through the API.
    pub accel: AccelRequest,
}

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{} is the socket of a Docker API server that is running; stop it, or give another --docker-socket", .0.display())]
    InUse(PathBuf),
    #[error("{} exists and is not a socket; remove it or give another --docker-socket", .0.display())]
    NotASocket(PathBuf),
    #[error("cannot listen on {}: {source}", path.display())]
    Listen { path: PathBuf, source: io::Error },
    #[error("opening the container store: {0}")]
    Store(#[from] cabin_containers::ContainerError),
    #[error("serving the Docker API: {0}")]
    Serving(io::Error),
}

/// Binds the socket at `path`: a stale one (no server answers on it) is replaced, a
/// live one is refused. The socket is made 0660: its owner and group may drive it.
pub async fn bind(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(ServeError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => return Err(ServeError::NotASocket(path.to_path_buf())),
        Err(_) => {}
    }
    let listen = |source| ServeError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(listen)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(listen)?;
    Ok(listener)
}

/// Serves on `listener` until `shutdown` completes; the socket file is removed then.
/// Containers run on (each owned by its supervisor) after the server stops.
pub async fn serve(
    opts: Options,
    listener: tokio::net::UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let app = Arc::new(App {
        containers: Containers::open(&opts.host)?,
        host: opts.host,
        accel: opts.accel,
        execs: execs::Execs::default(),
        events: Arc::new(events::Events::default()),
    });
    events::watch(&app.containers, app.events.clone())?;
    let router = Router::new().fallback(dispatch).with_state(app);
    let router = router.into_make_service_with_connect_info::<stream::ConnFd>();
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serving);
    let _ = std::fs::remove_file(&opts.socket);
    served
}

async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let route = routes::find(req.method(), req.uri().path());
    let head = req.method() == Method::HEAD;
    let mut response = match handle(&app, route, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let headers = response.headers_mut();
    for (k, v) in [
        ("api-version", API_VERSION),
        ("ostype", "linux"),
        ("docker-experimental", "false"),
        (
            "server",
            concat!("cabin/", env!("CARGO_PKG_VERSION"), " (linux)"),
        ),
    ] {
        headers.insert(k, HeaderValue::from_static(v));
    }
    if head {
        *response.body_mut() = axum::body::Body::empty();
    }
    response
}

async fn handle(app: &Arc<App>, route: Route, req: Request) -> Result<Response, ApiError> {
    let query = Query::parse(req.uri().query());
    match route {
        Route::Ping => Ok(system::ping()),
        Route::Version => Ok(system::version(app).into_response()),
        Route::Info => system::info(app).await,
        Route::Events => events::stream(&app.events, &query).await,
        Route::DiskUsage => system::df(app).await,
        Route::ContainerList => containers::list(app, &query).await,
        Route::ContainerCreate => containers::create(app, &query, req).await,
        Route::Container(id, op) => match op {
            ContainerOp::Inspect => containers::inspect(app, &id).await,
            ContainerOp::Start => containers::start(app, &id).await,
            ContainerOp::Stop => containers::stop(app, &id, &query).await,
            ContainerOp::Kill => containers::kill(app, &id, &query).await,
            ContainerOp::Pause => containers::pause(app, &id, true).await,
            ContainerOp::Unpause => containers::pause(app, &id, false).await,
            ContainerOp::Restart => containers::restart(app, &id, &query).await,
            ContainerOp::Wait => containers::wait(app, &id, &query).await,
            ContainerOp::Attach => containers::attach(app, &id, &query, req).await,
            ContainerOp::Resize => containers::resize(app, &id, &query).await,
            ContainerOp::Logs => containers::logs(app, &id, &query).await,
            ContainerOp::Stats => containers::stats(app, &id, &query).await,
            ContainerOp::Remove => containers::remove(app, &id, &query).await,
            ContainerOp::Exec => exec::create(app, &id, req).await,
            ContainerOp::ArchiveStat => archive::get(app, &id, &query, true).await,
            ContainerOp::ArchiveGet => archive::get(app, &id, &query, false).await,
            ContainerOp::ArchivePut => archive::put(app, &id, &query, req).await,
            ContainerOp::Rename => containers::rename(app, &id, &query).await,
            ContainerOp::Top => containers::top(app, &id, &query).await,
            ContainerOp::Update => containers::update(app, &id, req).await,
        },
        Route::Exec(id, op) => match op {
            ExecOp::Start => exec::start(app, &id, req).await,
            ExecOp::Resize => exec::resize(app, &id, &query).await,
            ExecOp::Inspect => exec::inspect(app, &id),
        },
        Route::ImageList => images::list(app).await,
        Route::ImageCreate => images::pull(app, &query, req.headers()).await,
        Route::ImageInspect(name) => images::inspect(app, &name).await,
        Route::ImageRemove(name) => images::remove(app, &name, &query).await,
        Route::ImageTag(name) => images::tag(app, &name, &query).await,
        Route::ImageHistory(name) => images::history(app, &name).await,
        Route::ImagePush(name) => transfer::push(app, &name, &query, req.headers()).await,
        Route::ImageSave(name) => transfer::save(app, name.as_deref(), &query).await,
        Route::ImageLoad => transfer::load(app, req).await,
        Route::Auth => transfer::auth(req).await,
        Route::ImagePrune => images::prune(app).await,
        Route::ContainerPrune => containers::prune(app).await,
        Route::VolumeList => volumes::list(app, &query).await,
        Route::VolumeCreate => volumes::create(app, req).await,
        Route::VolumeInspect(name) => volumes::inspect(app, &name).await,
        Route::VolumeRemove(name) => volumes::remove(app, &name, &query).await,
        Route::VolumePrune => volumes::prune(app, &query).await,
        Route::NetworkList => networks::list(app, &query).await,
        Route::NetworkCreate => networks::create(app, req).await,
        Route::NetworkPrune => networks::prune(app).await,
        Route::Network(name, op) => match op {
            NetworkOp::Inspect => networks::inspect(app, &name).await,
            NetworkOp::Remove => networks::remove(app, &name).await,
            NetworkOp::Connect => networks::connect(app, &name, req, true).await,
            NetworkOp::Disconnect => networks::connect(app, &name, req, false).await,
        },
        Route::NoSuch(kind, name) => {
            discard_body(req).await;
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{kind} {name} not found"),
            ))
        }
        Route::Missing(why) => {
            discard_body(req).await;
            Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, why))
        }
        Route::Unsupported => {
            let why = format!(
                "cabin does not serve {} {} yet",
                req.method(),
                req.uri().path()
            );
            discard_body(req).await;
            Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, why))
        }
    }
}

/// How much of an unserved request's body is read and thrown away before the answer.
const DISCARD_LIMIT: u64 = 256 << 20;
/// How long an unserved request's body may take to arrive.
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads and drops the body of a request cabin will not serve, so that a client still
/// writing (`docker build` streams its whole context before it reads a reply) sees the
/// error instead of a broken pipe. Bounded in bytes and time: past either, the answer
/// goes out and the connection closes.
async fn discard_body(req: Request) {
    use tokio_stream::StreamExt;
    let mut body = req.into_body().into_data_stream();
    let mut seen = 0u64;
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DISCARD_LIMIT {
                break;
            }
        }
    })
    .await;
}
