//! The console's files (`cabin_web`): its pages, scripts and styles, and the pinned
//! libraries they load.

use axum::extract::Path;
use axum::response::Response;

use crate::ConsoleError;

fn not_there(path: &str) -> ConsoleError {
    let missing = cabin_web::missing_libraries();
    if path.starts_with("vendor/") && !missing.is_empty() {
        return ConsoleError::NotBuilt(format!("libraries ({})", missing.join(", ")));
    }
    ConsoleError::NoFile(path.to_string())
}

pub(crate) async fn file(Path(path): Path<String>) -> Result<Response, ConsoleError> {
    cabin_web::file_response(&path).ok_or_else(|| not_there(&path))
}

fn page(name: &str) -> Result<Response, ConsoleError> {
    let path = format!("console/{name}");
    cabin_web::page_response(&path).ok_or_else(|| not_there(&path))
}

pub(crate) async fn dashboard() -> Result<Response, ConsoleError> {
    page("index.html")
}

pub(crate) async fn vm_page() -> Result<Response, ConsoleError> {
    page("vm.html")
}

pub(crate) async fn container_page() -> Result<Response, ConsoleError> {
    page("container.html")
}
