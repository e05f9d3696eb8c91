//! Pulling images from OCI registries (the distribution protocol, through oci-client):
//! image indexes and Docker manifest lists (linux/amd64 is chosen), OCI and Docker v2
//! manifests, anonymous and token auth, several blobs at once, blobs already stored are
//! skipped, interrupted downloads resume with HTTP Range, transient errors are retried
//! with back-off, and every blob is verified before it enters the store.

use std::io::Write;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use serde_json::Value;

use crate::image::{self, normalize_reference, Image, ImageError};
use crate::registry::{
    auth_of, classify, client_for, registry_error, registry_failure, Fault, RegistryOptions,
};
use crate::store::{digest_hex, sha256_hex, Store, StoreError};
use oci_client::errors::OciDistributionError;

const MAX_MANIFEST_BYTES: usize = 4 << 20;

const ACCEPTED: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

pub type PullOptions = RegistryOptions;

/// Fetches a manifest and checks that its bytes hash to the digest it is known by.
/// Layers cabin can apply: OCI and Docker filesystem layers, whatever the compression
/// (it is recognised by content). Artifacts (Helm charts, signatures, ...) are not.
fn is_filesystem_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.v1.tar")
        || media_type.starts_with("application/vnd.oci.image.layer.nondistributable.v1.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.diff.tar")
        || media_type.starts_with("application/vnd.docker.image.rootfs.foreign.diff.tar")
}

/// Transient failures and rate limiting are retried, with back-off.
fn is_retryable(e: &OciDistributionError) -> bool {
    matches!(classify(e), Fault::Transient | Fault::RateLimited)
}

async fn fetch_manifest(
    client: &Client,
    r: &Reference,
    auth: &RegistryAuth,
    name: &str,
    retries: u32,
) -> Result<(Vec<u8>, String), ImageError> {
    let mut attempt = 0;
    let (bytes, digest) = loop {
        match client.pull_manifest_raw(r, auth, ACCEPTED).await {
            Ok(v) => break v,
            Err(e) if attempt < retries && is_retryable(&e) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250 << (attempt - 1).min(5))).await;
            }
            Err(e) => return Err(registry_failure(name, &e)),
        }
    };
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(registry_error(name, "manifest larger than 4 MiB"));
    }
    let actual = format!("sha256:{}", sha256_hex(&bytes));
    let expected = r.digest().map(str::to_string).unwrap_or(digest);
    if !expected.is_empty() && expected != actual {
        return Err(ImageError::Store(StoreError::DigestMismatch {
            expected,
            actual,
        }));
    }
    Ok((bytes.to_vec(), actual))
}

/// Picks linux/amd64 from an index or manifest list.
pub fn choose_platform(index_bytes: &[u8], name: &str) -> Result<String, ImageError> {
    let index: ImageIndex =
        serde_json::from_slice(index_bytes).map_err(|e| ImageError::Invalid {
            image: name.to_string(),
            what: "image index",
            detail: e.to_string(),
        })?;
    let mut seen = Vec::new();
    for m in index.manifests() {
        if let Some(p) = m.platform() {
            let (os, arch) = (p.os().to_string(), p.architecture().to_string());
            if os == "linux" && arch == "amd64" {
                return Ok(m.digest().to_string());
            }
            seen.push(format!("{os}/{arch}"));
        }
    }
    Err(ImageError::Invalid {
        image: name.to_string(),
        what: "image index",
        detail: format!("no linux/amd64 image (it has: {})", seen.join(", ")),
    })
}

/// Downloads one blob into the store, resuming a partial download and retrying
/// transient failures.
async fn fetch_blob(
    client: &Client,
    r: &Reference,
    store: &Store,
    digest: &str,
    size: u64,
    opts: &PullOptions,
    name: &str,
) -> Result<(), ImageError> {
    let (retries, progress) = (opts.retries, &opts.progress);
    if store.has_blob(digest) {
        progress.start(digest, size, size);
        progress.finish(digest);
        return Ok(());
    }
    digest_hex(digest)?;
    let partial = store.partial_path(digest)?;
    let mut last_error = String::new();
    for attempt in 0..=retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(250 << (attempt - 1).min(5))).await;
        }
        let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if have > size {
            let _ = std::fs::remove_file(&partial);
            continue;
        }
        progress.start(digest, size, have);
        if have < size || size == 0 {
            let response = if have > 0 {
                client.pull_blob_stream_partial(r, digest, have, None).await
            } else {
                client
                    .pull_blob_stream(r, digest)
                    .await
                    .map(oci_client::client::BlobResponse::Full)
            };
            let (stream, append) = match response {
                Ok(oci_client::client::BlobResponse::Full(s)) => (s, false),
                Ok(oci_client::client::BlobResponse::Partial(s)) => (s, true),
                Err(e) => {
                    if !is_retryable(&e) {
                        return Err(registry_failure(name, &e));
                    }
                    last_error = e.to_string();
                    continue;
                }
            };
            let mut file = match std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(append)
                .truncate(!append)
                .open(&partial)
            {
                Ok(f) => f,
                Err(e) => {
                    return Err(StoreError::Io {
                        path: partial,
                        source: e,
                    }
                    .into())
                }
            };
            let mut written = if append { have } else { 0 };
            let mut body = stream.stream;
            let mut failed = false;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        written += bytes.len() as u64;
                        if written > size {
                            drop(file);
                            let _ = std::fs::remove_file(&partial);
                            return Err(registry_error(
                                name,
                                format!("blob {digest} is larger than the {size} bytes its manifest says"),
                            ));
                        }
                        if let Err(e) = file.write_all(&bytes) {
                            return Err(StoreError::Io {
                                path: partial,
                                source: e,
                            }
                            .into());
                        }
                        progress.advance(digest, bytes.len() as u64);
                    }
                    Err(e) => {
                        // The bytes so far stay: the next attempt resumes after them.
                        last_error = e.to_string();
                        failed = true;
                        break;
                    }
                }
            }
            if file.sync_all().is_err() || failed {
                continue;
            }
            if written < size {
                last_error = format!("the registry sent {written} of {size} bytes");
                continue;
            }
        }
        return match store.commit_file(&partial, digest) {
            Ok(()) => {
                progress.finish(digest);
                Ok(())
            }
            Err(StoreError::DigestMismatch { expected, actual }) => Err(ImageError::Registry {
                image: name.to_string(),
                detail: format!(
                    "blob {expected} does not match its digest (got {actual}); it was discarded"
                ),
            }),
            Err(e) => Err(e.into()),
        };
    }
    Err(registry_error(
        name,
        format!("downloading blob {digest} failed: {last_error}"),
    ))
}

/// Pulls `reference` into the store and names it.
pub async fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
    let name = normalize_reference(reference)?;
    let r: Reference = reference
        .parse()
        .map_err(|e| ImageError::BadReference(format!("{reference} ({e})")))?;
    let client = client_for(&r, opts.insecure);
    let auth = auth_of(opts);

    let (mut bytes, mut digest) = fetch_manifest(&client, &r, &auth, &name, opts.retries).await?;
    let kind: Value = serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
        image: name.clone(),
        what: "manifest",
        detail: format!("not JSON: {e}"),
    })?;
    if kind.get("manifests").is_some() {
        let chosen = choose_platform(&bytes, &name)?;
        digest_hex(&chosen)?;
        let by_digest = r.clone_with_digest(chosen);
        (bytes, digest) = fetch_manifest(&client, &by_digest, &auth, &name, opts.retries).await?;
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
            image: name.clone(),
            what: "manifest",
            detail: e.to_string(),
        })?;
    let mut blobs = vec![(
        manifest.config().digest().to_string(),
        manifest.config().size(),
    )];
    for l in manifest.layers() {
        let mt = l.media_type().to_string();
        if !is_filesystem_layer(&mt) {
            return Err(ImageError::Invalid {
                image: name.clone(),
                what: "manifest",
                detail: format!("unsupported layer media type {mt}"),
            });
        }
        blobs.push((l.digest().to_string(), l.size()));
    }
    for (d, _) in &blobs {
        digest_hex(d)?;
    }
    let parallel = opts.parallel.max(1);
    futures::stream::iter(
        blobs
            .iter()
            .map(|(d, size)| fetch_blob(&client, &r, store, d, *size, opts, &name)),
    )
    .buffer_unordered(parallel)
    .try_collect::<Vec<()>>()
    .await?;

    let stored = store.put_bytes(&bytes)?;
    debug_assert_eq!(stored, digest);
    let image = image::load(store, &name, &digest)?;
    store.update_refs(|refs| refs.insert(name.clone(), digest.clone()))?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_filesystem_layers_are_accepted() {
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert!(is_filesystem_layer(ok), "{ok}");
        }
        for bad in [
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
            "application/vnd.dev.cosign.simplesigning.v1+json",
            "text/plain",
        ] {
            assert!(!is_filesystem_layer(bad), "{bad}");
        }
    }

    #[test]
    fn retries_follow_status_codes_not_text() {
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1:40177/v2/x/manifests/1".into(),
            message: String::new(),
        };
        assert!(is_retryable(&server(503)));
        assert!(is_retryable(&server(429)));
        assert!(!is_retryable(&server(404)));
        assert!(
            !is_retryable(&server(401)),
            "a port with 401 in it is no 401"
        );
        assert_eq!(classify(&server(403)), Fault::Credentials);
        assert_eq!(
            classify(&OciDistributionError::UnauthorizedError {
                url: "http://127.0.0.1:5000/v2/".into()
            }),
            Fault::Credentials
        );
    }

    #[test]
    fn index_selection_picks_linux_amd64_or_says_what_there_is() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('a'), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('b'), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}}
            ]
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        assert_eq!(choose_platform(&bytes, "x").unwrap(), d('b'));
        let only_arm = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [ {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d('a'), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64"}} ]
        });
        let e = choose_platform(&serde_json::to_vec(&only_arm).unwrap(), "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("no linux/amd64 image (it has: linux/arm64)"),
            "{e}"
        );
    }
}
