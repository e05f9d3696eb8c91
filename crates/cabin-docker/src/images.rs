//! The image endpoints: list, pull (`POST /images/create`, with Docker's progress
//! stream), inspect and remove, over cabin's image store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cabin_base::time::unix_seconds;
use cabin_image::image::{self, Image, ImageError};
use cabin_image::registry::{Progress, ProgressHook};
use cabin_image::store::Store;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::App;
use crate::error::{json, ApiError};
use crate::request::Query;

/// How many progress lines wait for a slow client; more are dropped (the final lines
/// never are).
const PROGRESS_BACKLOG: usize = 64;
/// An `X-Registry-Auth` header larger than this is not a login.
const MAX_AUTH_HEADER: usize = 16 << 10;

/// Runs `f` on the image store, off the server's threads.
pub(crate) async fn with_store<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Store) -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ApiError> {
    let dir = app.host.paths.image_store();
    crate::error::blocking(move || {
        let store = Store::open(dir).map_err(ImageError::from)?;
        Ok(f(&store)?)
    })
    .await
}

/// The registry options for `reference`: `cabin login`'s credentials, or the client's
/// `X-Registry-Auth` when it sends one.
pub(crate) fn registry_options(
    app: &App,
    reference: &str,
    headers: &HeaderMap,
) -> Result<cabin_image::registry::RegistryOptions, ApiError> {
    let creds = cabin_image::credentials::Credentials::at(app.host.paths.credentials());
    let mut opts = cabin_image::credentials::options_for(reference, &creds, Default::default())
        .map_err(|e| ApiError::internal(format!("reading saved credentials: {e}")))?;
    if let Some(auth) = auth_of(headers)? {
        opts.auth = Some(auth);
    }
    Ok(opts)
}

/// `GET /images/json`: one entry per image, with all its names.
pub async fn list(app: &Arc<App>) -> Result<Response, ApiError> {
    Ok(json(StatusCode::OK, &Value::Array(summaries(app).await?)))
}

/// The images as `GET /images/json` lists them: one per manifest, with all its names.
pub async fn summaries(app: &Arc<App>) -> Result<Vec<Value>, ApiError> {
    let rows = with_store(app, image::list).await?;
    let mut by_digest: Vec<(String, Vec<String>, u64, String)> = Vec::new();
    for l in rows {
        match by_digest.iter_mut().find(|(d, ..)| *d == l.manifest_digest) {
            Some(entry) => entry.1.push(l.name),
            None => by_digest.push((l.manifest_digest, vec![l.name], l.size, l.created)),
        }
    }
    let out: Vec<Value> = by_digest
        .into_iter()
        .map(|(digest, names, size, created)| {
            let repo_digests: Vec<String> = names
                .iter()
                .map(|n| {
                    format!(
                        "{}@{digest}",
                        n.rsplit_once(':').map_or(n.as_str(), |(r, _)| r)
                    )
                })
                .collect();
            json!({
                "Id": digest,
                "ParentId": "",
                "RepoTags": names,
                "RepoDigests": repo_digests,
                "Created": unix_seconds(&created).unwrap_or(0),
                "Size": size,
                "SharedSize": -1,
                "VirtualSize": size,
                "Labels": {},
                "Containers": -1,
            })
        })
        .collect();
    Ok(out)
}

fn inspect_json(img: &Image) -> Value {
    let c = img.config.config().clone().unwrap_or_default();
    let size: u64 = img.manifest.layers().iter().map(|l| l.size()).sum();
    let name = &img.reference;
    json!({
        "Id": img.manifest_digest,
        "RepoTags": if name.is_empty() { vec![] } else { vec![name.clone()] },
        "RepoDigests": if name.is_empty() { vec![] } else {
            vec![format!("{}@{}", name.rsplit_once(':').map_or(name.as_str(), |(r, _)| r), img.manifest_digest)]
        },
        "Parent": "",
        "Comment": "",
        "Created": img.config.created().clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "Author": img.config.author().clone().unwrap_or_default(),
        "Os": img.config.os().to_string(),
        "Architecture": img.config.architecture().to_string(),
        "Size": size,
        "VirtualSize": size,
        "Config": {
            "Env": c.env(),
            "Cmd": c.cmd(),
            "Entrypoint": c.entrypoint(),
            "WorkingDir": c.working_dir().clone().unwrap_or_default(),
            "User": c.user().clone().unwrap_or_default(),
            "Labels": c.labels(),
            "ExposedPorts": c.exposed_ports().as_ref().map(|p| {
                p.iter().map(|k| (k.clone(), json!({}))).collect::<serde_json::Map<_, _>>()
            }),
            "StopSignal": c.stop_signal(),
        },
        "RootFS": {
            "Type": "layers",
            "Layers": img.config.rootfs().diff_ids(),
        },
    })
}

/// `GET /images/{name}/json`.
pub async fn inspect(app: &Arc<App>, name: &str) -> Result<Response, ApiError> {
    let name = name.to_string();
    let img = with_store(app, move |s| image::resolve(s, &name)).await?;
    Ok(json(StatusCode::OK, &inspect_json(&img)))
}

/// `GET /images/{name}/history`: the config's history, newest first; each step that
/// made a layer has that layer's size, the newest carries the image's ID and names.
pub async fn history(app: &Arc<App>, name: &str) -> Result<Response, ApiError> {
    let name = name.to_string();
    let (img, names) = with_store(app, move |s| {
        let img = image::resolve(s, &name)?;
        let names: Vec<String> = image::list(s)?
            .into_iter()
            .filter(|l| l.manifest_digest == img.manifest_digest)
            .map(|l| l.name)
            .collect();
        Ok((img, names))
    })
    .await?;
    Ok(json(
        StatusCode::OK,
        &Value::Array(history_json(&img, names)),
    ))
}

fn history_json(img: &Image, names: Vec<String>) -> Vec<Value> {
    let mut layers = img.manifest.layers().iter().map(|l| l.size());
    let empty = Vec::new();
    let steps = img.config.history().as_ref().unwrap_or(&empty);
    let mut out: Vec<Value> = steps
        .iter()
        .map(|h| {
            let size = if h.empty_layer().unwrap_or(false) {
                0
            } else {
                layers.next().unwrap_or(0)
            };
            json!({
                "Id": "<missing>",
                "Created": h.created().as_deref().and_then(unix_seconds).unwrap_or(0),
                "CreatedBy": h.created_by().clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": h.comment().clone().unwrap_or_default(),
            })
        })
        .collect();
    if out.is_empty() {
        out.push(
            json!({"Id": "", "Created": 0, "CreatedBy": "", "Tags": null,
                        "Size": img.manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
                        "Comment": ""}),
        );
    }
    out.reverse();
    out[0]["Id"] = json!(img.manifest_digest);
    out[0]["Tags"] = json!(names);
    out
}

/// `DELETE /images/{name}[?force=1]`: the name goes (and what nothing else uses); 409
/// while a container is made of it, unless forced.
pub async fn remove(app: &Arc<App>, name: &str, q: &Query) -> Result<Response, ApiError> {
    let owned = name.to_string();
    let img = with_store(app, move |s| image::resolve(s, &owned)).await?;
    let digest = img.manifest_digest.clone();
    let other_names = with_store(app, move |s| {
        Ok(s.refs()?.values().filter(|d| **d == digest).count() > 1)
    })
    .await?;
    // Another name keeps the image: this one is only untagged.
    if !q.flag("force") && !other_names {
        let (records, _) = app.containers.list().await?;
        for r in records {
            let owned = r.root.clone();
            let same = with_store(app, move |s| Ok(image::resolve(s, &owned).ok()))
                .await?
                .is_some_and(|i| i.manifest_digest == img.manifest_digest);
            if same {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                        &r.id[..12],
                        img.id()
                    ),
                ));
            }
        }
    }
    let owned = name.to_string();
    let removed = with_store(app, move |s| image::remove(s, &owned)).await?;
    let mut out = Vec::new();
    if !img.reference.is_empty() {
        out.push(json!({"Untagged": img.reference}));
        app.events.image("untag", &img.reference);
    }
    if !other_names {
        out.push(json!({"Deleted": removed}));
        app.events.image("delete", &removed);
    }
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// `POST /images/{name}/tag?repo=R&tag=T`: 201.
pub async fn tag(app: &Arc<App>, name: &str, q: &Query) -> Result<Response, ApiError> {
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("give the new name as repo (and tag)"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.to_string(),
    };
    let source = name.to_string();
    let tagged = with_store(app, move |s| image::tag(s, &source, &target)).await?;
    app.events.image("tag", &tagged);
    Ok(StatusCode::CREATED.into_response())
}

/// `POST /images/prune`: what no named image uses goes (cabin keeps no unnamed images).
pub async fn prune(app: &Arc<App>) -> Result<Response, ApiError> {
    let freed = with_store(app, image::prune).await?;
    Ok(json(
        StatusCode::OK,
        &json!({"ImagesDeleted": null, "SpaceReclaimed": freed}),
    ))
}

/// The login in Docker's `X-Registry-Auth` header (base64url JSON), if it has one.
pub(crate) fn auth_of(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(v) = headers.get("x-registry-auth") else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("invalid X-Registry-Auth header: expected base64 of JSON");
    if v.len() > MAX_AUTH_HEADER {
        return Err(bad());
    }
    let text = v.to_str().map_err(|_| bad())?.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (user, password) = (field("username"), field("password"));
    Ok((!user.is_empty()).then_some((user, password)))
}

/// Docker's progress lines for a pull or a push: per blob, its size and how much has
/// gone, at most five lines a second each.
struct Lines {
    tx: mpsc::Sender<Bytes>,
    /// What a blob under way and a finished one are said to be.
    words: (&'static str, &'static str),
    /// Per blob: its size, what has come, when it was last told.
    blobs: Mutex<HashMap<String, (u64, u64, Instant)>>,
}

const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub(crate) fn line(v: Value) -> Bytes {
    Bytes::from(format!("{v}\r\n"))
}

pub(crate) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Lines {
    fn tell(&self, digest: &str, total: u64, current: u64) {
        let _ = self.tx.try_send(line(json!({
            "status": self.words.0, "id": short(digest),
            "progressDetail": {"current": current, "total": total},
        })));
    }
}

impl Progress for Lines {
    fn start(&self, digest: &str, total: u64, done: u64) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        blobs.insert(digest.to_string(), (total, done, Instant::now()));
        self.tell(digest, total, done);
    }
    fn advance(&self, digest: &str, bytes: u64) {
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((total, current, last)) = blobs.get_mut(digest) {
            *current += bytes;
            if last.elapsed() >= PROGRESS_EVERY {
                *last = Instant::now();
                self.tell(digest, *total, *current);
            }
        }
    }
    fn finish(&self, digest: &str) {
        let _ = self
            .tx
            .try_send(line(json!({"status": self.words.1, "id": short(digest)})));
    }
}

/// `POST /images/create?fromImage=NAME&tag=TAG`: pulls, answering with Docker's stream
/// of JSON progress lines; a failure after the stream began is its last line.
pub async fn pull(app: &Arc<App>, q: &Query, headers: &HeaderMap) -> Result<Response, ApiError> {
    let Some(from) = q.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "importing images (fromSrc) is not served by cabin's Docker API yet; pull with fromImage",
        ));
    };
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with("sha256:") => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let name = image::normalize_reference(&reference).map_err(ApiError::from)?;
    let opts = registry_options(app, &name, headers)?;
    let (repo, tag) = match name.rsplit_once(':') {
        Some((r, t)) => (r.to_string(), t.to_string()),
        None => (name.clone(), "latest".to_string()),
    };
    let first = line(json!({"status": format!("Pulling from {repo}"), "id": tag}));
    let app2 = app.clone();
    Ok(registry_stream(
        app,
        vec![first],
        opts,
        ("Downloading", "Pull complete"),
        move |store, opts, rt| {
            let img = rt
                .block_on(cabin_image::pull::pull(&store, &reference, &opts))
                .map_err(|e| e.to_string())?;
            app2.events.image("pull", &name);
            Ok(vec![
                line(json!({"status": format!("Digest: {}", img.manifest_digest)})),
                line(json!({"status": format!("Status: Downloaded newer image for {name}")})),
            ])
        },
    ))
}

/// A registry transfer's answer: `first`, then its progress as Docker's JSON lines,
/// then the lines `run` ends with, or its failure as the last line (the status is sent
/// before the transfer ends). `run` goes on a blocking thread of its own (the
/// transfers' futures are not Send) with a handle to block on them.
pub(crate) fn registry_stream(
    app: &App,
    first: Vec<Bytes>,
    mut opts: cabin_image::registry::RegistryOptions,
    words: (&'static str, &'static str),
    run: impl FnOnce(
            Store,
            cabin_image::registry::RegistryOptions,
            tokio::runtime::Handle,
        ) -> Result<Vec<Bytes>, String>
        + Send
        + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(PROGRESS_BACKLOG);
    opts.progress = ProgressHook(Some(Arc::new(Lines {
        tx: tx.clone(),
        words,
        blobs: Mutex::default(),
    })));
    let store_dir = app.host.paths.image_store();
    tokio::spawn(async move {
        for l in first {
            let _ = tx.send(l).await;
        }
        let rt = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || {
            let store = Store::open(store_dir).map_err(|e| e.to_string())?;
            run(store, opts, rt)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        let last = match done {
            Ok(lines) => lines,
            Err(m) => vec![line(json!({"errorDetail": {"message": m}, "error": m}))],
        };
        for l in last {
            if tx.send(l).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, std::io::Error>);
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_header_is_read_and_an_empty_one_is_none() {
        let mut h = HeaderMap::new();
        h.insert("x-registry-auth", HeaderValue::from_static("e30="));
        assert_eq!(auth_of(&h).unwrap(), None);
        let enc = base64::engine::general_purpose::URL_SAFE
            .encode(br#"{"username":"u","password":"p","serveraddress":"r"}"#);
        h.insert("x-registry-auth", HeaderValue::from_str(&enc).unwrap());
        assert_eq!(auth_of(&h).unwrap(), Some(("u".into(), "p".into())));
        h.insert("x-registry-auth", HeaderValue::from_static("!!!"));
        assert!(auth_of(&h).is_err());
    }
}
