//! The Docker API's way in for `fuzz/` (compiled only under `--cfg fuzzing`, which
//! cargo fuzz sets): what the server reads of one request, without a socket or a
//! store: the route a method and path name, the query string's flags, numbers, times
//! and filters, the `X-Registry-Auth` header, and the body of the route as its handler
//! reads it, down to the container spec a create body becomes.

use axum::http::{HeaderMap, HeaderValue, Method};
use cabin_vmm::AccelRequest;

use crate::request::{filters, Query};
use crate::routes::{self, ContainerOp, ExecOp, NetworkOp, Route};

fn parse<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Option<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(T::default());
    }
    serde_json::from_slice(body).ok()
}

/// Reads one request: `method`, `path`, the query string, an `X-Registry-Auth` value and
/// the body.
pub fn request(method: &[u8], path: &str, query: Option<&str>, auth: &[u8], body: &[u8]) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let route = routes::find(&method, path);
    let q = Query::parse(query);
    let _ = filters(&q);
    for key in ["since", "until"] {
        let _ = q.instant(key);
    }
    for key in ["t", "tail", "h", "w", "signal"] {
        let _ = q.number::<i64>(key);
    }
    let _ = q.flag("force");
    if let Ok(v) = HeaderValue::from_bytes(auth) {
        let mut headers = HeaderMap::new();
        headers.insert("x-registry-auth", v);
        let _ = crate::images::auth_of(&headers);
    }
    match route {
        Route::ContainerCreate => {
            if let Some(b) = parse::<crate::create::CreateBody>(body) {
                let _ = crate::create::spec_of(&b, q.get("name"), AccelRequest::Auto);
            }
        }
        Route::Container(_, ContainerOp::Exec) => {
            let _ = parse::<crate::exec::CreateBody>(body);
        }
        Route::Exec(_, ExecOp::Start) => {
            let _ = parse::<crate::exec::StartBody>(body);
        }
        Route::NetworkCreate => {
            let _ = parse::<crate::networks::CreateBody>(body);
        }
        Route::Network(_, NetworkOp::Connect | NetworkOp::Disconnect) => {
            let _ = parse::<crate::networks::ConnectBody>(body);
        }
        Route::Auth => {
            let _ = parse::<crate::transfer::AuthBody>(body);
        }
        Route::VolumeCreate => {
            if let Some(b) = parse::<crate::volumes::CreateBody>(body) {
                if let Some(size) = b.driver_opts.as_ref().and_then(|o| o.get("size")) {
                    let _ = cabin_base::sizes::parse_size(size, cabin_base::sizes::Dialect::Docker);
                }
            }
        }
        _ => {}
    }
}
