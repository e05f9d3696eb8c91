//! Images on the move: push to a registry (`POST /images/{name}/push`, with Docker's
//! progress stream and the client's `X-Registry-Auth`), a login check (`POST /auth`,
//! what `docker login` asks before it keeps the credentials on its side), and archives
//! (`docker save` as `GET /images/get` or `/images/{name}/get`, `docker load` as
//! `POST /images/load`), over `cabin_image::push` and `cabin_image::archive`.
//!
//! Archives pass through a staged file in the image store's temporary directory: a
//! save is written whole (and verified) before it is sent, a load received whole before
//! it is read; the file goes as soon as it is open (or read).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use cabin_image::archive;
use cabin_image::image::{self, ImageError};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::app::App;
use crate::error::{json, ApiError};
use crate::images::{line, registry_options, registry_stream, with_store};
use crate::request::{body, Query};

/// The largest archive `docker load` may send.
const MAX_LOAD_BYTES: u64 = 64 << 30;

/// `POST /images/{name}/push?tag=TAG`: pushes the local image NAME:TAG to the registry
/// its name says, answering with Docker's progress stream.
pub async fn push(
    app: &Arc<App>,
    name: &str,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => name.to_string(),
    };
    let reference = image::normalize_reference(&reference)?;
    let opts = registry_options(app, &reference, headers)?;
    // Refused before the stream starts: the image must be here.
    let owned = reference.clone();
    with_store(app, move |s| image::resolve(s, &owned).map(drop)).await?;
    let repo = reference
        .rsplit_once(':')
        .map_or(reference.as_str(), |(r, _)| r);
    let first = line(json!({"status": format!("The push refers to repository [{repo}]")}));
    let tag = reference
        .rsplit_once(':')
        .map_or("latest", |(_, t)| t)
        .to_string();
    Ok(registry_stream(
        app,
        vec![first],
        opts,
        ("Pushing", "Pushed"),
        move |store, opts, rt| {
            let pushed = rt
                .block_on(cabin_image::push::push(
                    &store, &reference, &reference, &opts,
                ))
                .map_err(|e| e.to_string())?;
            let digest = pushed.manifest_digest;
            Ok(vec![
                line(json!({"status": format!("{tag}: digest: {digest}")})),
                line(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest}})),
            ])
        },
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
}

/// `POST /auth`: whether the registry takes these credentials. cabin keeps nothing:
/// the client sends them with each pull and push, as with Docker.
pub async fn auth(req: Request) -> Result<Response, ApiError> {
    let b: AuthBody = body(req).await?;
    let registry = match b.serveraddress.trim() {
        "" | "https://index.docker.io/v1/" => "registry-1.docker.io".to_string(),
        s => s
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    };
    let opts = cabin_image::registry::RegistryOptions {
        auth: Some((b.username, b.password)),
        ..Default::default()
    };
    // (The check's future is not Send.)
    let rt = tokio::runtime::Handle::current();
    let checked = tokio::task::spawn_blocking(move || {
        rt.block_on(cabin_image::registry::check_login(&registry, &opts))
    })
    .await
    .map_err(ApiError::internal)?;
    match checked {
        Ok(()) => Ok(json(
            StatusCode::OK,
            &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
        )),
        Err(e) => Err(ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

/// A staged archive in the image store's temporary directory, removed when dropped
/// (also when the client leaves and the handler is cancelled).
struct Staged(std::path::PathBuf);

impl std::ops::Deref for Staged {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn staged(app: &App, what: &str) -> Result<Staged, ApiError> {
    let dir = cabin_image::store::Store::open(app.host.paths.image_store())
        .map_err(ImageError::from)?
        .tmp_dir();
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    let id = cabin_base::random::id().map_err(ApiError::internal)?;
    Ok(Staged(dir.join(format!("{what}-{id}.tar"))))
}

/// `GET /images/get?names=A&names=B` and `GET /images/{name}/get`: the images as one
/// tar archive (the format `docker save` writes since Docker 25).
pub async fn save(app: &Arc<App>, name: Option<&str>, q: &Query) -> Result<Response, ApiError> {
    let names: Vec<String> = match name {
        Some(n) => vec![n.to_string()],
        None => {
            q.0.iter()
                .filter(|(k, v)| k == "names" && !v.is_empty())
                .map(|(_, v)| v.clone())
                .collect()
        }
    };
    if names.is_empty() {
        return Err(ApiError::bad_request("name the images to save (names=...)"));
    }
    let path = staged(app, "save")?;
    // The staged file goes with the blocking work, which runs on if the client leaves.
    let path = with_store(app, move |s| archive::save(s, &names, &path).map(|()| path)).await?;
    // Open, it can go from the directory at once.
    let file = tokio::fs::File::open(&*path).await;
    drop(path);
    let mut file = file.map_err(ApiError::internal)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; 256 << 10];
            let sent = match file.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    tx.send(Ok(Bytes::from(buf))).await
                }
                Err(e) => tx.send(Err(e)).await,
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(r)
}

/// `POST /images/load[?quiet=1]`: reads an archive (`docker save`'s, old or new, an OCI
/// layout, cabin's) and answers with what it stored, as Docker's JSON lines.
pub async fn load(app: &Arc<App>, req: Request) -> Result<Response, ApiError> {
    let path = staged(app, "load")?;
    let received = async {
        let mut f = tokio::fs::File::create(&*path).await?;
        let mut stream = req.into_body().into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            total += chunk.len() as u64;
            if total > MAX_LOAD_BYTES {
                return Err(std::io::Error::other(format!(
                    "the archive is larger than {} GiB",
                    MAX_LOAD_BYTES >> 30
                )));
            }
            f.write_all(&chunk).await?;
        }
        f.flush().await
    }
    .await;
    if let Err(e) = received {
        return Err(ApiError::bad_request(format!("receiving the archive: {e}")));
    }
    let dir = app.host.paths.image_store();
    let loaded = tokio::task::spawn_blocking(move || {
        let store = cabin_image::store::Store::open(dir).map_err(ImageError::from)?;
        archive::load(&store, &path)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut out = String::new();
    for (name, digest) in &loaded {
        let said = if name.is_empty() {
            format!("Loaded image ID: {digest}\n")
        } else {
            app.events.image("load", name);
            format!("Loaded image: {name}\n")
        };
        out.push_str(&format!("{}\r\n", json!({ "stream": said })));
    }
    let mut r = Response::new(Body::from(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}
