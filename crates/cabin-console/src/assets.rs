//! The console's files, built into the binary (see build.rs): its pages, scripts and
//! styles, and the pinned libraries they load. Served with `Cache-Control: no-cache`
//! (a new cabin's files are never mixed with an old one's) and no sniffing.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::ConsoleError;

mod built {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// A built-in file by its path under `/assets/`.
pub(crate) fn lookup(path: &str) -> Option<&'static [u8]> {
    built::FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| built::FILES[i].1)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "text/plain; charset=utf-8",
    }
}

fn serve(path: &str) -> Result<Response, ConsoleError> {
    let Some(bytes) = lookup(path) else {
        if path.starts_with("vendor/") && !built::MISSING.is_empty() {
            return Err(ConsoleError::NotBuilt(format!(
                "libraries ({})",
                built::MISSING.join(", ")
            )));
        }
        return Err(ConsoleError::NoFile(path.to_string()));
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type(path)),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

pub(crate) async fn file(Path(path): Path<String>) -> Result<Response, ConsoleError> {
    serve(&path)
}

/// A page: the console's HTML, which draws itself from `/api/` and `/ws/`. Framing by
/// other sites is refused (clickjacking), and scripts load only from the console.
fn page(name: &str) -> Result<Response, ConsoleError> {
    let mut r = serve(&format!("console/{name}"))?;
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, "DENY".parse().unwrap());
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
         connect-src 'self'; frame-ancestors 'none'"
            .parse()
            .unwrap(),
    );
    h.insert(header::REFERRER_POLICY, "no-referrer".parse().unwrap());
    Ok(r)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_are_built_in_and_sorted_for_lookup() {
        assert!(built::FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for page in ["index.html", "vm.html", "container.html"] {
            assert!(lookup(&format!("console/{page}")).is_some(), "{page}");
        }
        assert!(lookup("console/../Cargo.toml").is_none());
        assert_eq!(
            content_type("vendor/novnc/core/rfb.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
