//! Lume's routes, matched as Lume matches them: the first route whose method matches
//! and whose path has as many `/`-separated segments wins, `:param` segments matching
//! any one segment. So a VM may be called `clone` (`GET /lume/vms/clone` is that VM),
//! and a known path with another method is `404 Not found`, not 405.
//!
//! Unlike Lume, the query string is never part of the match (Lume's router compares it
//! too, so `GET /lume/vms?storage=x` was a 404). A trailing slash is ignored, as in
//! Lume; an empty parameter (`/lume/vms//run`) is `400 Missing VM name`.

use axum::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ListVms,
    GetVm,
    DeleteVm,
    CreateVm,
    CloneVm,
    SetVm,
    RunVm,
    StopVm,
    SuspendVm,
    SetupVm,
    Ipsw,
    Pull,
    PullStart,
    Prune,
    Images,
    GetConfig,
    SetConfig,
    ListLocations,
    AddLocation,
    RemoveLocation,
    Logs,
    DefaultLocation,
    Push,
    HostStatus,
    /// cabin's addition: cua-computer's Lumier provider probes it.
    Health,
}

/// Lume's 23 routes, in Lume's order, and `/health`.
pub const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/lume/vms", Route::ListVms),
    ("GET", "/lume/vms/:name", Route::GetVm),
    ("DELETE", "/lume/vms/:name", Route::DeleteVm),
    ("POST", "/lume/vms", Route::CreateVm),
    ("POST", "/lume/vms/clone", Route::CloneVm),
    ("PATCH", "/lume/vms/:name", Route::SetVm),
    ("POST", "/lume/vms/:name/run", Route::RunVm),
    ("POST", "/lume/vms/:name/stop", Route::StopVm),
    ("POST", "/lume/vms/:name/suspend", Route::SuspendVm),
    ("POST", "/lume/vms/:name/setup", Route::SetupVm),
    ("GET", "/lume/ipsw", Route::Ipsw),
    ("POST", "/lume/pull", Route::Pull),
    ("POST", "/lume/pull/start", Route::PullStart),
    ("POST", "/lume/prune", Route::Prune),
    ("GET", "/lume/images", Route::Images),
    ("GET", "/lume/config", Route::GetConfig),
    ("POST", "/lume/config", Route::SetConfig),
    ("GET", "/lume/config/locations", Route::ListLocations),
    ("POST", "/lume/config/locations", Route::AddLocation),
    (
        "DELETE",
        "/lume/config/locations/:name",
        Route::RemoveLocation,
    ),
    ("GET", "/lume/logs", Route::Logs),
    (
        "POST",
        "/lume/config/locations/default/:name",
        Route::DefaultLocation,
    ),
    ("POST", "/lume/vms/push", Route::Push),
    ("GET", "/lume/host/status", Route::HostStatus),
    ("GET", "/health", Route::Health),
];

#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    /// The route and its `:name` parameter (percent-decoded), if it has one.
    Found(Route, Option<String>),
    /// The route matched but its parameter is empty: the text of the 400.
    MissingParam(&'static str),
    NotFound,
}

fn segments(path: &str) -> Vec<&str> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return Vec::new();
    }
    p.split('/').collect()
}

/// Matches a request's path (without its query string).
pub fn find(method: &Method, path: &str) -> Match {
    let got = segments(path);
    for (m, pattern, route) in ROUTES {
        if method.as_str() != *m {
            continue;
        }
        let want = segments(pattern);
        if want.len() != got.len() {
            continue;
        }
        let mut param = None;
        let fits = want.iter().zip(&got).all(|(w, g)| {
            if w.starts_with(':') {
                param = Some(*g);
                true
            } else {
                w == g
            }
        });
        if !fits {
            continue;
        }
        let Some(raw) = param else {
            return Match::Found(*route, None);
        };
        let name = percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned();
        if name.is_empty() {
            return Match::MissingParam(if pattern.contains("locations") {
                "Missing location name"
            } else {
                "Missing VM name"
            });
        }
        return Match::Found(*route, Some(name));
    }
    Match::NotFound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(method: &str, path: &str) -> Match {
        find(&Method::from_bytes(method.as_bytes()).unwrap(), path)
    }

    #[test]
    fn routes_match_as_lume_matches_them() {
        // Lume's 24, and cabin's suspend.
        assert_eq!(ROUTES.len(), 25);
        assert_eq!(
            m("POST", "/lume/vms/web/suspend"),
            Match::Found(Route::SuspendVm, Some("web".into()))
        );
        assert_eq!(m("GET", "/lume/vms"), Match::Found(Route::ListVms, None));
        assert_eq!(m("GET", "/lume/vms/"), Match::Found(Route::ListVms, None));
        assert_eq!(
            m("GET", "/lume/vms/web"),
            Match::Found(Route::GetVm, Some("web".into()))
        );
        assert_eq!(
            m("GET", "/lume/vms/clone"),
            Match::Found(Route::GetVm, Some("clone".into())),
            "a VM may be called clone"
        );
        assert_eq!(
            m("POST", "/lume/vms/clone"),
            Match::Found(Route::CloneVm, None)
        );
        assert_eq!(m("POST", "/lume/vms/push"), Match::Found(Route::Push, None));
        assert_eq!(
            m("POST", "/lume/vms/my%20vm/run"),
            Match::Found(Route::RunVm, Some("my vm".into()))
        );
        assert_eq!(
            m("POST", "/lume/vms//run"),
            Match::MissingParam("Missing VM name")
        );
        assert_eq!(
            m("DELETE", "/lume/config/locations/%20"),
            Match::Found(Route::RemoveLocation, Some(" ".into()))
        );
        assert_eq!(
            m("POST", "/lume/config/locations/default/"),
            Match::NotFound,
            "a trailing slash goes, leaving a path no POST route has"
        );
        assert_eq!(
            m("POST", "/lume/config/locations/default/fast"),
            Match::Found(Route::DefaultLocation, Some("fast".into()))
        );
        assert_eq!(m("PUT", "/lume/vms/web"), Match::NotFound);
        assert_eq!(m("GET", "/lume/vms/web/run"), Match::NotFound);
        assert_eq!(m("GET", "/lume"), Match::NotFound);
        assert_eq!(m("GET", "/"), Match::NotFound);
        assert_eq!(m("GET", "/health"), Match::Found(Route::Health, None));
    }
}
