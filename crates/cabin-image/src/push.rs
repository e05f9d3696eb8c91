//! Pushing images to OCI registries: blobs the registry has are skipped, the others are
//! streamed up several at a time, then the manifest is put exactly as stored, so its
//! digest is the same on both sides.

use std::io::Read;

use futures::{StreamExt, TryStreamExt};
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;

use crate::image::{self, ImageError};
use crate::registry::{
    auth_of, client_for, registry_error, registry_failure, ProgressHook, RegistryOptions,
};
use crate::store::Store;

const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct PushReport {
    pub manifest_digest: String,
    pub uploaded: usize,
    pub skipped: usize,
}

async fn push_blob(
    client: &Client,
    r: &Reference,
    store: &Store,
    digest: &str,
    name: &str,
    progress: &ProgressHook,
) -> Result<bool, ImageError> {
    let total = std::fs::metadata(store.blob_path(digest)?)
        .map(|m| m.len())
        .unwrap_or(0);
    if client
        .blob_exists(r, digest)
        .await
        .map_err(|e| registry_failure(name, &e))?
    {
        progress.start(digest, total, total);
        progress.finish(digest);
        return Ok(false);
    }
    progress.start(digest, total, 0);
    let path = store.blob_path(digest)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).ok();
    let file = std::fs::File::open(&path).map_err(|source| ImageError::Import {
        path: path.clone(),
        source,
    })?;
    // The blob is streamed in chunks, never held whole in memory.
    let (hook, id) = (progress.clone(), digest.to_string());
    let stream = futures::stream::unfold(file, move |mut f| {
        let (hook, id) = (hook.clone(), id.clone());
        async move {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    hook.advance(&id, n as u64);
                    Some((Ok(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(oci_client::errors::OciDistributionError::IoError(e)), f)),
            }
        }
    });
    client
        .push_blob_stream(r, stream, digest, size)
        .await
        .map_err(|e| registry_failure(name, &e))?;
    progress.finish(digest);
    Ok(true)
}

/// Pushes the local image `source` to `destination` ([REGISTRY/]NAME[:TAG]).
pub async fn push(
    store: &Store,
    source: &str,
    destination: &str,
    opts: &RegistryOptions,
) -> Result<PushReport, ImageError> {
    let img = image::resolve(store, source)?;
    let r: Reference = destination
        .parse()
        .map_err(|e| ImageError::BadReference(format!("{destination} ({e})")))?;
    let client = client_for(&r, opts.insecure);
    client
        .auth(&r, &auth_of(opts), RegistryOperation::Push)
        .await
        .map_err(|e| registry_failure(destination, &e))?;
    let mut digests = vec![img.manifest.config().digest().to_string()];
    digests.extend(img.manifest.layers().iter().map(|l| l.digest().to_string()));
    let results: Vec<bool> = futures::stream::iter(
        digests
            .iter()
            .map(|d| push_blob(&client, &r, store, d, destination, &opts.progress)),
    )
    .buffer_unordered(opts.parallel.max(1))
    .try_collect()
    .await?;
    let manifest = store.read_blob(&img.manifest_digest, 4 << 20)?;
    let media_type = serde_json::from_slice::<Value>(&manifest)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
    let content_type = media_type
        .parse()
        .map_err(|_| registry_error(destination, format!("bad media type {media_type}")))?;
    client
        .push_manifest_raw(&r, manifest, content_type)
        .await
        .map_err(|e| registry_failure(destination, &e))?;
    let uploaded = results.iter().filter(|u| **u).count();
    Ok(PushReport {
        manifest_digest: img.manifest_digest,
        uploaded,
        skipped: results.len() - uploaded,
    })
}
