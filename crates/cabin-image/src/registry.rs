//! What pulls and pushes share: the registry client, its options, error wording.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::image::ImageError;

/// Told about blob transfers, for progress display.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes begins, `done` of them already in place.
    fn start(&self, digest: &str, total: u64, done: u64);
    fn advance(&self, digest: &str, bytes: u64);
    /// The blob is complete (transferred, or found already there).
    fn finish(&self, digest: &str);
}

#[derive(Clone, Default)]
pub struct ProgressHook(pub Option<std::sync::Arc<dyn Progress>>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressHook(on)"
        } else {
            "ProgressHook(off)"
        })
    }
}

impl ProgressHook {
    pub fn start(&self, digest: &str, total: u64, done: u64) {
        if let Some(p) = &self.0 {
            p.start(digest, total, done);
        }
    }
    pub fn advance(&self, digest: &str, bytes: u64) {
        if let Some(p) = &self.0 {
            p.advance(digest, bytes);
        }
    }
    pub fn finish(&self, digest: &str) {
        if let Some(p) = &self.0 {
            p.finish(digest);
        }
    }
}

#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Plain HTTP for this registry (always allowed for localhost and 127.0.0.0/8).
    pub insecure: bool,
    /// Blobs transferred at once.
    pub parallel: usize,
    /// Attempts per blob after the first, with exponential back-off.
    pub retries: u32,
    /// Username and password for this registry (from `cabin login`).
    pub auth: Option<(String, String)>,
    pub progress: ProgressHook,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure: false,
            parallel: 4,
            retries: 4,
            auth: None,
            progress: ProgressHook::default(),
        }
    }
}

fn is_local(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(registry);
    host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub fn client_for(reference: &Reference, insecure: bool) -> Client {
    Client::new(config_for(reference, insecure))
}

/// A client whose blob uploads are one `PUT` each, streamed (as Lume uploads VM image
/// blobs), rather than a `PATCH` per piece read: a 500 MB chunk is two requests, not
/// hundreds of round trips.
pub fn monolithic_client_for(reference: &Reference, insecure: bool) -> Client {
    Client::new(ClientConfig {
        use_monolithic_push: true,
        ..config_for(reference, insecure)
    })
}

fn config_for(reference: &Reference, insecure: bool) -> ClientConfig {
    // oci-client brings no TLS crypto provider of its own; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = reference.resolve_registry().to_string();
    let protocol = if insecure {
        ClientProtocol::Http
    } else if is_local(&registry) {
        ClientProtocol::HttpsExcept(vec![registry])
    } else {
        ClientProtocol::Https
    };
    ClientConfig {
        protocol,
        read_timeout: Some(Duration::from_secs(60)),
        connect_timeout: Some(Duration::from_secs(10)),
        ..Default::default()
    }
}

pub fn auth_of(opts: &RegistryOptions) -> RegistryAuth {
    match &opts.auth {
        Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// What kind of failure a registry error is, from its status and error codes (never
/// from its text, which carries URLs whose port numbers look like status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Credentials,
    NotFound,
    RateLimited,
    /// Worth retrying: a server error, a connection that failed or broke.
    Transient,
    Other,
}

fn by_status(code: u16) -> Fault {
    match code {
        401 | 403 => Fault::Credentials,
        404 => Fault::NotFound,
        429 => Fault::RateLimited,
        500..=599 => Fault::Transient,
        _ => Fault::Other,
    }
}

pub fn classify(e: &OciDistributionError) -> Fault {
    use OciDistributionError as E;
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => Fault::Credentials,
        E::ImageManifestNotFoundError(_) => Fault::NotFound,
        E::ServerError { code, .. } => by_status(*code),
        E::RequestError(r) if r.status().is_some() => {
            by_status(r.status().map(|s| s.as_u16()).unwrap_or(0))
        }
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| match err.code {
                OciErrorCode::Unauthorized | OciErrorCode::Denied => Fault::Credentials,
                OciErrorCode::ManifestUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::BlobUnknown
                | OciErrorCode::NotFound => Fault::NotFound,
                OciErrorCode::Toomanyrequests => Fault::RateLimited,
                _ => Fault::Other,
            })
            .find(|f| *f != Fault::Other)
            .unwrap_or(Fault::Other),
        E::RequestError(r) if r.is_connect() || r.is_timeout() || r.is_request() || r.is_body() => {
            Fault::Transient
        }
        E::IoError(_) => Fault::Transient,
        _ => Fault::Other,
    }
}

/// A registry failure as the user sees it, with what it most likely means.
pub fn registry_failure(image: &str, e: &OciDistributionError) -> ImageError {
    let hint = match classify(e) {
        Fault::Credentials => " (the registry wants credentials this pull did not have)",
        Fault::NotFound => " (no such image or tag in the registry)",
        Fault::RateLimited => " (the registry is rate-limiting; try again later)",
        Fault::Transient => {
            " (is the registry reachable? use --insecure for a plain-HTTP registry)"
        }
        Fault::Other => "",
    };
    registry_error(image, format!("{e}{hint}"))
}

pub fn registry_error(image: &str, detail: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        image: image.to_string(),
        detail: detail.to_string(),
    }
}

/// Checks credentials against a registry: a request that needs authorization must not be
/// refused for it. Returns Ok for valid (or unneeded) credentials.
pub async fn check_login(registry: &str, opts: &RegistryOptions) -> Result<(), ImageError> {
    let probe: Reference = format!("{registry}/cabin-login-probe:latest")
        .parse()
        .map_err(|e| ImageError::BadReference(format!("{registry} ({e})")))?;
    let client = client_for(&probe, opts.insecure);
    let accepted = ["application/vnd.oci.image.manifest.v1+json"];
    match client
        .pull_manifest_raw(&probe, &auth_of(opts), &accepted)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match classify(&e) {
            Fault::Credentials => Err(registry_error(
                registry,
                "login failed: the registry refused these credentials",
            )),
            Fault::Transient => Err(registry_failure(registry, &e)),
            // 404 and friends: the credentials were accepted.
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_registries_may_use_plain_http() {
        assert!(is_local("localhost:5000"));
        assert!(is_local("127.0.0.1:5000"));
        assert!(is_local("[::1]:5000"));
        assert!(!is_local("registry.example.com"));
        assert!(!is_local("127.example.com:5000"));
        assert!(!is_local("10.0.0.1:5000"));
    }
}
