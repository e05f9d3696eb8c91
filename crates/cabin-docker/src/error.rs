//! Docker's error replies: a status and `{"message": ...}` with the content type
//! exactly `application/json` (the CLI prints the raw body otherwise). Clients act on
//! the status: 404 makes `run` pull and `inspect` try the next kind of object, 409 is a
//! conflict, 304 "already so"; the messages use Docker's wording where clients or
//! users match on it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cabin_containers::store::StoreError;
use cabin_containers::volumes::VolumeError;
use cabin_containers::ContainerError;
use cabin_image::image::ImageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }
}

/// A JSON reply with Docker's exact content type.
/// Runs blocking work (the store, the file system, host commands) off the server's
/// threads; a task that panicked is a 500.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut r = (status, value.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

impl From<ContainerError> for ApiError {
    fn from(e: ContainerError) -> ApiError {
        let e = match e {
            ContainerError::Network(n) => return n.into(),
            e => e,
        };
        let status = match &e {
            ContainerError::Store(StoreError::NotFound(name)) => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("No such container: {name}"),
                )
            }
            ContainerError::Store(StoreError::NameInUse { name, id }) => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    format!("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."),
                )
            }
            ContainerError::Running(name) => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    format!("cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"),
                )
            }
            ContainerError::NotRunning(name) => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    format!("Container {name} is not running"),
                )
            }
            ContainerError::Store(StoreError::Ambiguous(..))
            | ContainerError::Store(StoreError::InvalidName(_))
            | ContainerError::InvalidLabel(_)
            | ContainerError::NoStdin(_) => StatusCode::BAD_REQUEST,
            ContainerError::Volume(VolumeError::NotFound(name)) => {
                return ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("get {name}: no such volume"),
                )
            }
            ContainerError::Volume(VolumeError::InvalidName(_) | VolumeError::TooSmall) => {
                StatusCode::BAD_REQUEST
            }
            ContainerError::RunningNetworkChange(_) | ContainerError::OneNetwork { .. } => {
                StatusCode::CONFLICT
            }
            ContainerError::VolumeUsed { .. }
            | ContainerError::Volume(VolumeError::InUse(_))
            | ContainerError::UnreadableRecord(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        match &e {
            ImageError::NotFound(name) => {
                ApiError::new(StatusCode::NOT_FOUND, format!("No such image: {name}"))
            }
            ImageError::BadReference(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e),
        }
    }
}
