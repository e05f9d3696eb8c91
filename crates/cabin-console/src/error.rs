//! What can go wrong in a console request, and the status and message the page shows.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cabin_containers::store::StoreError;
use cabin_containers::ContainerError;
use cabin_machines::store::VmError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error("VM {0} shows no screen: it runs without VNC (start it with VNC enabled)")]
    NoScreen(String),
    #[error("VM {0} has no serial console socket: it was started by an older cabin; stop and start it again")]
    NoSerial(String),
    #[error("cannot reach VM {name}'s {what}: {source}")]
    Unreachable {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("VM {name}'s screen: {source}")]
    Vnc {
        name: String,
        source: cabin_vmm::vnc::VncError,
    },
    #[error("no such action {0:?}: use start or stop")]
    Action(String),
    #[error("the console's {0} was not built in: run `npm ci --prefix web` (scripts/setup.sh does) and build cabin again")]
    NotBuilt(String),
    #[error("no such file: {0}")]
    NoFile(String),
    #[error("this address is a websocket: open it from the console's page")]
    NotWebsocket,
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::Vm(VmError::NotFound(_))
            | ConsoleError::Container(ContainerError::Store(StoreError::NotFound(_)))
            | ConsoleError::NoFile(_) => StatusCode::NOT_FOUND,
            ConsoleError::Vm(
                VmError::Running(_) | VmError::Pushing(_) | VmError::NotRunning(_),
            )
            | ConsoleError::Container(ContainerError::NotRunning(_))
            | ConsoleError::NoScreen(_)
            | ConsoleError::NoSerial(_) => StatusCode::CONFLICT,
            ConsoleError::Vm(VmError::Invalid(_)) | ConsoleError::Action(_) => {
                StatusCode::BAD_REQUEST
            }
            ConsoleError::Unreachable { .. } | ConsoleError::Vnc { .. } => StatusCode::BAD_GATEWAY,
            ConsoleError::NotBuilt(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::NotWebsocket => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}
