//! `cabin serve`: Lume's HTTP API (the routes, request and reply shapes, status codes
//! and messages of `lume serve`) on 127.0.0.1, over the same VM library as `cabin vm`,
//! so the command line and the API see the same VMs. See `routes` for how requests are
//! matched and where cabin departs from Lume on purpose (query strings; `run` reports
//! a failed start instead of a 202; `stop` answers once the VM is down, without
//! Lume's extra 5 s sleep).

mod app;
#[cfg(fuzzing)]
pub mod fuzzing;
pub mod guard;
mod handlers;
mod log;
pub mod routes;
mod vm_images;
mod wire;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use cabin_base::Host;
use cabin_vmm::AccelRequest;

use app::{App, Request};
use routes::{Match, Route};
use wire::Reply;

pub const DEFAULT_PORT: u16 = 7777;

pub struct Options {
    /// The address to listen on: 127.0.0.1 unless the user says otherwise.
    pub listen: std::net::IpAddr,
    /// Beyond the loopback, serve Lume's API without the token anyway (for Lume's
    /// clients that cannot send one): anyone who reaches the port drives the VMs.
    pub lume_api_open_to_the_network: bool,
    /// 0 picks a free port (the log line says which).
    pub port: u16,
    /// The console's session token (see `guard`).
    pub token: String,
    /// The web console, served beside Lume's API behind the same guard.
    pub console: Option<Console>,
    /// What the front end read of its environment.
    pub host: Host,
    /// The accelerator VMs started through the API ask for.
    pub accel: AccelRequest,
    /// The server's VM image transfers, which the console shows too.
    pub transfers: Arc<cabin_machines::activity::Transfers>,
}

/// The web console's routes and which paths are its own (they need a session).
pub struct Console {
    pub router: Router,
    pub is_console: fn(&str) -> bool,
}

/// Why the server could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("Port {0} is already in use by another process")]
    PortInUse(u16),
    #[error("cannot listen on {listen}:{port}: {source}")]
    Listen {
        listen: std::net::IpAddr,
        port: u16,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serving(std::io::Error),
}

/// Serves until SIGTERM or SIGINT. VMs started through the API run on (each in a
/// process of its own) after the server stops.
pub async fn serve(opts: Options) -> Result<(), ServeError> {
    let listen = opts.listen;
    let listen_error = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            ServeError::PortInUse(opts.port)
        } else {
            ServeError::Listen {
                listen,
                port: opts.port,
                source,
            }
        }
    };
    let listener = tokio::net::TcpListener::bind((listen, opts.port))
        .await
        .map_err(listen_error)?;
    let port = listener.local_addr().map_err(listen_error)?.port();
    let app = Arc::new(App::new(opts.host, opts.accel, opts.transfers));
    let lume = Router::new().fallback(dispatch).with_state(app.clone());
    let console_at = opts.console.is_some();
    let (router, is_console) = match opts.console {
        Some(c) => (c.router.merge(lume), c.is_console),
        None => (lume, (|_: &str| false) as fn(&str) -> bool),
    };
    let guard = Arc::new(guard::Guard::new(
        opts.token.clone(),
        listen,
        port,
        !listen.is_loopback() && !opts.lume_api_open_to_the_network,
        is_console,
    ));
    let router = router.layer(axum::middleware::from_fn_with_state(guard, guard::check));
    if console_at {
        // Printed, not logged: the token stays out of `GET /lume/logs`.
        let shown = if listen.is_unspecified() {
            "127.0.0.1".to_string()
        } else if listen.is_ipv6() {
            format!("[{listen}]")
        } else {
            listen.to_string()
        };
        println!("Console: http://{shown}:{port}/?token={}", opts.token);
    }
    app.log.info(&format!("Server started port={port}"));
    axum::serve(listener, router)
        .with_graceful_shutdown(stop_signal())
        .await
        .map_err(ServeError::Serving)?;
    app.log.info("Server stopped");
    Ok(())
}

/// Completes at SIGTERM or SIGINT (each caller hears them).
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn dispatch(State(app): State<Arc<App>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let reply = match routes::find(&method, uri.path()) {
        Match::NotFound => Reply::text(StatusCode::NOT_FOUND, "Not found"),
        Match::MissingParam(text) => Reply::text(StatusCode::BAD_REQUEST, text),
        Match::Found(Route::Health, _) => Reply::text(StatusCode::OK, "ok"),
        Match::Found(route, param) => {
            let worker = app.clone();
            let query = uri.query().map(String::from);
            let done = tokio::task::spawn_blocking(move || {
                let req = Request {
                    param,
                    query: query.as_deref(),
                    body: &body,
                };
                handlers::handle(&worker, route, &req)
            })
            .await;
            match done {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => e.reply(),
                Err(_) => Reply::message(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
    };
    match reply.error_message() {
        None => app.log.info(&format!(
            "Request method={method} path={} status={}",
            uri.path(),
            reply.status.as_u16()
        )),
        Some(m) => app.log.error(&format!(
            "Request failed method={method} path={} status={} message={m}",
            uri.path(),
            reply.status.as_u16()
        )),
    }
    reply.into_response()
}
