//! The Lume API's way in for `fuzz/` (compiled only under `--cfg fuzzing`, which cargo
//! fuzz sets): one request as the server reads it, without a socket. Every route's
//! matching and body parsing runs; handlers run for the requests whose effects stay in
//! the fuzzer's own data directory (reads, and VM create, set, clone, delete and stop
//! without a storage location, which could name any path). Handlers that boot a VM or
//! reach a registry (run, setup, pull, push) are fuzzed up to their bodies.

use axum::http::Method;
use cabin_base::Host;
use cabin_vmm::AccelRequest;

use crate::app::{App, Request};
use crate::routes::{self, Match, Route};
use crate::{handlers, wire};

/// Reads one request: `method`, `path`, the query string and the body.
pub fn request(host: &Host, method: &[u8], path: &str, query: Option<&str>, body: &[u8]) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let Match::Found(route, param) = routes::find(&method, path) else {
        return;
    };
    let req = Request { param, query, body };
    // Each body type, whichever route was named: the parsers are the boundary.
    let _ = wire::body::<wire::CreateVm>(body);
    let _ = wire::body::<wire::CloneVm>(body);
    let _ = wire::body::<wire::SetVm>(body);
    let _ = wire::optional_body::<wire::RunVm>(body);
    let _ = wire::optional_body::<wire::Storage>(body);
    let _ = wire::body::<wire::SetupVm>(body);
    let _ = wire::body::<wire::Pull>(body);
    let _ = wire::body::<wire::Push>(body);
    let _ = wire::body::<wire::SetConfig>(body);
    let _ = wire::body::<wire::AddLocation>(body);
    let names_a_location = |s: &[u8]| {
        s.windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"storage") || w.eq_ignore_ascii_case(b"locatio"))
    };
    let confined = !names_a_location(body) && !names_a_location(query.unwrap_or("").as_bytes());
    let runs = match route {
        Route::RunVm | Route::SetupVm | Route::Pull | Route::PullStart | Route::Push => false,
        Route::SetConfig | Route::AddLocation | Route::RemoveLocation => false,
        Route::DefaultLocation | Route::Prune => false,
        Route::CreateVm
        | Route::CloneVm
        | Route::SetVm
        | Route::DeleteVm
        | Route::StopVm
        | Route::SuspendVm => confined,
        _ => method == Method::GET,
    };
    if runs {
        let app = App::new(host.clone(), AccelRequest::Auto, Default::default());
        let _ = handlers::handle(&app, route, &req).map(|r| r.error_message());
    }
}
