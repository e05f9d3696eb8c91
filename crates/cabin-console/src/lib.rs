//! cabin's web console, served by `cabin serve` beside Lume's API: a dashboard of the
//! VMs of every storage location and of the containers, a VM's screen (noVNC, through
//! a websocket bridged to QEMU's VNC server, cabin logging in for the browser) and its
//! serial console (xterm.js), a container's logs and a shell in it. The routes here
//! trust that the server in front of them checked the session token, `Host` and
//! `Origin` (`cabin_api::guard`); everything they do goes through the libraries, as the
//! CLI's commands do.

mod actions;
mod assets;
mod error;
mod serial;
mod state;
mod terminal;
mod vnc;
mod ws;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use cabin_base::Host;
use cabin_containers::Containers;
use cabin_machines::activity::Transfers;
use cabin_vmm::AccelRequest;

pub use error::ConsoleError;

/// What the console's handlers share.
pub struct Console {
    host: Host,
    accel: AccelRequest,
    containers: Containers,
    serial: serial::Hubs,
    /// The server's VM image pulls and pushes (started through Lume's API).
    transfers: Arc<Transfers>,
}

impl Console {
    pub fn new(
        host: Host,
        accel: AccelRequest,
        transfers: Arc<Transfers>,
    ) -> Result<Console, ConsoleError> {
        Ok(Console {
            containers: Containers::open(&host)?,
            host,
            accel,
            serial: Default::default(),
            transfers,
        })
    }
}

/// The console's routes: pages at `/`, `/vm/NAME` and `/container/NAME`, their files
/// under `/assets/`, the dashboard's data and actions under `/api/`, websockets under
/// `/ws/`.
pub fn router(console: Console) -> Router {
    let console = Arc::new(console);
    Router::new()
        .route("/", get(assets::dashboard))
        .route("/vm/{name}", get(assets::vm_page))
        .route("/container/{name}", get(assets::container_page))
        .route("/assets/{*path}", get(assets::file))
        .route("/api/state", get(state::state))
        .route("/api/vms/{name}/{action}", post(actions::vm))
        .route("/api/containers/{name}/{action}", post(actions::container))
        .route("/ws/vm/{name}/screen", get(vnc::screen))
        .route("/ws/vm/{name}/serial", get(serial::serial))
        .route("/ws/container/{name}/shell", get(terminal::shell))
        .route("/ws/container/{name}/logs", get(terminal::logs))
        .with_state(console)
}

/// Whether a request's path is the console's: the server in front asks for a session
/// for these; everything else is Lume's API (whose unknown paths answer Lume's 404).
pub fn is_console_path(path: &str) -> bool {
    path == "/"
        || ["/vm/", "/container/", "/assets/", "/api/", "/ws/"]
            .iter()
            .any(|p| path.starts_with(p))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_consoles_paths_leave_lumes_alone() {
        for p in [
            "/",
            "/vm/web",
            "/container/x",
            "/assets/console/vm.js",
            "/api/state",
            "/ws/vm/a/screen",
        ] {
            assert!(super::is_console_path(p), "{p}");
        }
        for p in ["/lume/vms", "/health", "/nope", "/vmx", "/favicon.ico"] {
            assert!(!super::is_console_path(p), "{p}");
        }
    }
}
