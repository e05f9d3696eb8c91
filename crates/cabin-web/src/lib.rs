//! The files cabin's web pages are made of, built into the binary by build.rs: the
//! project's own pages and scripts (`web/console/`) and the pinned libraries they load
//! (noVNC's core, xterm.js and its fit add-on, with their licences). Both servers of
//! pages use them: `cabin serve`'s console and the Lumier image's viewer on port 8006,
//! and both greet a browser's VNC client the same way (`rfb`).

pub mod rfb;

mod built {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// A built-in file by its path: `console/...` for the project's own, `vendor/...` for
/// the libraries.
pub fn lookup(path: &str) -> Option<&'static [u8]> {
    built::FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| built::FILES[i].1)
}

/// The npm packages that were not installed when cabin was built (their files are
/// missing): `npm ci --prefix web` installs them.
pub fn missing_libraries() -> &'static [&'static str] {
    built::MISSING
}

/// The media type of a file by its name.
pub fn content_type(path: &str) -> &'static str {
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

/// A built-in file as an HTTP response (`Cache-Control: no-cache`: a new cabin's files
/// are never mixed with an old one's; no sniffing); None when there is no such file.
pub fn file_response(path: &str) -> Option<axum::response::Response> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let bytes = lookup(path)?;
    Some(
        (
            [
                (header::CONTENT_TYPE, content_type(path)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
    )
}

/// A built-in page: as a file, and never framed by another site (clickjacking), with
/// scripts and connections to its own server only.
pub fn page_response(path: &str) -> Option<axum::response::Response> {
    use axum::http::{header, HeaderValue};
    let mut r = file_response(path)?;
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pages_are_built_in_and_sorted_for_lookup() {
        assert!(built::FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for page in ["index.html", "vm.html", "container.html", "lumier.html"] {
            assert!(lookup(&format!("console/{page}")).is_some(), "{page}");
        }
        assert!(lookup("console/../Cargo.toml").is_none());
        assert_eq!(
            content_type("vendor/novnc/core/rfb.js"),
            "text/javascript; charset=utf-8"
        );
    }
}
