//! What every request on `cabin serve`'s TCP listener must show before a route sees it.
//!
//! - `Host` names this server: 127.0.0.1, `localhost`, `::1`, `host.docker.internal`
//!   or `host.containers.internal` (containers reaching the host) or the address it
//!   listens on (any address literal
//!   when it listens on all of them). A web page that rebinds its own DNS name to
//!   127.0.0.1 sends its name, and is refused.
//! - An `Origin`, when a browser sends one, is this server's own (`http://` and the
//!   `Host`): a web page elsewhere cannot drive VMs through the browser, on any route,
//!   Lume's included, websockets included.
//! - The console's paths (the console says which) need the session token: in the
//!   query of the URL `cabin serve` printed, which sets a session cookie (HttpOnly,
//!   SameSite=Strict), or that cookie. Lume's API needs it too (cookie, `Authorization:
//!   Bearer`, or `?token=`) when the server listens beyond the loopback.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The rules of one server.
pub struct Guard {
    token: String,
    listen: IpAddr,
    /// The cookie's name: one per port, as cookies do not tell ports apart.
    cookie: String,
    /// Lume's API also needs the token (the server listens beyond the loopback).
    api_needs_token: bool,
    /// Which paths are the console's (the rest is Lume's API).
    is_console: fn(&str) -> bool,
}

impl Guard {
    pub fn new(
        token: String,
        listen: IpAddr,
        port: u16,
        api_needs_token: bool,
        is_console: fn(&str) -> bool,
    ) -> Guard {
        Guard {
            token,
            listen,
            cookie: format!("cabin_console_{port}"),
            api_needs_token,
            is_console,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if [
            "127.0.0.1",
            "localhost",
            "::1",
            "host.docker.internal",
            "host.containers.internal",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return true;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip == self.listen || self.listen.is_unspecified(),
            Err(_) => false,
        }
    }

    fn token_matches(&self, offered: &str) -> bool {
        let (a, b) = (self.token.as_bytes(), offered.as_bytes());
        // Compared in time that does not depend on where they differ.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The host part of a `Host` header: without its port, an IPv6 address without its
/// brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn query_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// Every value the request's cookies give `name` (another page on localhost may have
/// set one of the same name for a narrower path: any of them may be the session).
fn cookie_values(req: &Request, name: &str) -> Vec<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .collect()
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}

/// The middleware: checks `req` and passes it on, or answers 400, 401 or 403.
pub async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
    else {
        return refuse(StatusCode::BAD_REQUEST, "a request needs a Host header");
    };
    if !guard.host_allowed(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "this server does not answer to the name {host:?}: use 127.0.0.1 or localhost"
            ),
        );
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let own = format!("http://{host}");
        if origin.to_str().ok() != Some(own.as_str()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "a request from another web site (its Origin is not this server's) is refused",
            );
        }
    }
    let lume = !(guard.is_console)(req.uri().path());
    if lume && !guard.api_needs_token {
        return next.run(req).await;
    }
    let from_query = query_token(req.uri().query());
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let cookies = cookie_values(&req, &guard.cookie);
    let query_ok = from_query
        .as_deref()
        .is_some_and(|t| guard.token_matches(t));
    let ok = query_ok
        || cookies.iter().any(|t| guard.token_matches(t))
        || (lume && bearer.as_deref().is_some_and(|t| guard.token_matches(t)));
    if !ok {
        let message = if lume {
            "this server listens beyond the loopback: Lume's API needs the token (Authorization: Bearer TOKEN)"
        } else if from_query.is_some() {
            "the console's token is wrong: open the Console URL that cabin serve printed"
        } else {
            "the console needs a session: open the Console URL that cabin serve printed (http://...?token=...)"
        };
        return refuse(StatusCode::UNAUTHORIZED, message);
    }
    let mut response = next.run(req).await;
    if query_ok {
        let cookie = format!(
            "{}={}; HttpOnly; SameSite=Strict; Path=/",
            guard.cookie, guard.token
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// A new session token: 32 URL-safe characters (192 bits).
pub fn new_token() -> std::io::Result<String> {
    const SYMBOLS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    Ok(cabin_base::random::bytes::<32>()?
        .iter()
        .map(|b| SYMBOLS[(b & 63) as usize] as char)
        .collect())
}

/// Whether `token` (read from a file) may be a session token: URL-safe characters only,
/// and long enough to guess at no better than chance.
pub fn valid_token(token: &str) -> bool {
    token.len() >= 16
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> bool {
        false
    }

    #[test]
    fn hosts_are_this_servers_names_only() {
        let local = Guard::new("t".into(), "127.0.0.1".parse().unwrap(), 7777, false, none);
        for ok in [
            "127.0.0.1:7777",
            "localhost:7777",
            "LOCALHOST",
            "[::1]:7777",
            "host.docker.internal:7777",
        ] {
            assert!(local.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:7777",
            "10.0.0.5:7777",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!local.host_allowed(bad), "{bad}");
        }
        let lan = Guard::new("t".into(), "192.168.1.9".parse().unwrap(), 7777, true, none);
        assert!(lan.host_allowed("192.168.1.9:7777"));
        assert!(!lan.host_allowed("192.168.1.10:7777"));
        let all = Guard::new("t".into(), "0.0.0.0".parse().unwrap(), 7777, true, none);
        assert!(all.host_allowed("172.17.0.1:7777"));
        assert!(!all.host_allowed("rebound.example:7777"));
    }

    #[test]
    fn tokens_are_url_safe_and_compared_whole() {
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert!(valid_token(&t), "{t}");
        assert_ne!(t, new_token().unwrap());
        let g = Guard::new(t.clone(), "127.0.0.1".parse().unwrap(), 1, false, none);
        assert!(g.token_matches(&t));
        assert!(!g.token_matches(&t[..31]));
        assert!(!g.token_matches(""));
        assert!(!valid_token("short"));
        assert!(!valid_token("has space in it, long enough"));
    }
}
