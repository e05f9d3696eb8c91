//! `docker cp`: `HEAD`/`GET`/`PUT /containers/{id}/archive?path=`. A path's stat
//! travels in the `X-Docker-Container-Path-Stat` header (base64 of JSON with Go's file
//! mode bits); its content is a tar archive whose one top entry is the path's base
//! name, both ways. The archives stream through `Containers::copy_out`/`copy_in`,
//! whose readers and writers run on blocking threads, over bounded channels.

use std::io::{self, Read, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cabin_containers::copy::{HostDest, HostSource};
use cabin_containers::ContainerError;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::app::App;
use crate::error::ApiError;
use crate::request::Query;

/// How much of an archive's start is read to find its first entry's header (a long
/// name or PAX records come before it).
const HEAD_BYTES: usize = 64 << 10;
const STAT_HEADER: &str = "x-docker-container-path-stat";

/// A writer on a blocking thread sending to an async reader.
struct ChannelWriter(mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader on a blocking thread fed by an async writer.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    chunk: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

fn path_of(q: &Query) -> Result<String, ApiError> {
    match q.get("path") {
        Some(p) if p.starts_with('/') => Ok(p.to_string()),
        Some(p) if !p.is_empty() => Ok(format!("/{p}")),
        _ => Err(ApiError::bad_request(
            "give the path in the container: ?path=/...",
        )),
    }
}

/// A copy's failure as Docker words it: a missing path is a 404.
fn copy_error(e: ContainerError, id: &str, path: &str) -> ApiError {
    let m = e.to_string();
    if m.to_ascii_lowercase().contains("no such file") {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Could not find the file {path} in container {id}"),
        );
    }
    if matches!(e, ContainerError::Copy(_)) && m.contains("not a directory") {
        return ApiError::bad_request(m);
    }
    e.into()
}

/// Go's `os.FileMode` of a tar entry (what the docker CLI decodes).
fn go_mode(h: &tar::Header) -> u32 {
    let mode = h.mode().unwrap_or(0);
    let mut m = mode & 0o777;
    if mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m | match h.entry_type() {
        tar::EntryType::Directory => 1 << 31,
        tar::EntryType::Symlink => 1 << 27,
        tar::EntryType::Fifo => 1 << 25,
        tar::EntryType::Block => 1 << 26,
        tar::EntryType::Char => (1 << 26) | (1 << 21),
        _ => 0,
    }
}

/// The stat header of the archive whose start is `head`, for `path`.
fn stat_of(head: &[u8], path: &str) -> Result<HeaderValue, ApiError> {
    let mut archive = tar::Archive::new(head);
    let bad = |what: &str| ApiError::internal(format!("the container's archive of {path}: {what}"));
    let mut entries = archive.entries().map_err(|e| bad(&e.to_string()))?;
    let entry = entries
        .next()
        .ok_or_else(|| bad("it is empty"))?
        .map_err(|e| bad(&e.to_string()))?;
    let h = entry.header();
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let link = entry
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.display().to_string())
        .unwrap_or_default();
    let stat = json!({
        "name": if name.is_empty() { "/" } else { name },
        "size": h.size().unwrap_or(0),
        "mode": go_mode(h),
        "mtime": cabin_base::time::rfc3339(h.mtime().unwrap_or(0) * 1_000_000_000, false),
        "linkTarget": link,
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(stat.to_string());
    HeaderValue::from_str(&encoded).map_err(ApiError::internal)
}

/// `HEAD` (`head_only`) or `GET /containers/{id}/archive?path=`: the stat header, and
/// with GET the archive.
pub async fn get(
    app: &Arc<App>,
    id: &str,
    q: &Query,
    head_only: bool,
) -> Result<Response, ApiError> {
    let path = path_of(q)?;
    let record = app.containers.get(id).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    let (done_tx, done_rx) = oneshot::channel();
    let containers = app.containers.clone();
    let (cid, src) = (record.id.clone(), path.clone());
    tokio::spawn(async move {
        let r = containers
            .copy_out(
                &cid,
                &src,
                false,
                HostDest::Archive(Box::new(ChannelWriter(tx))),
            )
            .await;
        let _ = done_tx.send(r);
    });
    // The start of the archive, for its first entry's header.
    let mut head: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while len < HEAD_BYTES {
        match rx.recv().await {
            Some(c) => {
                len += c.len();
                head.push(c);
            }
            None => break,
        }
    }
    if len == 0 {
        return Err(match done_rx.await {
            Ok(Err(e)) => copy_error(e, &record.name, &path),
            _ => ApiError::internal(format!("the copy of {path} produced no archive")),
        });
    }
    let joined: Vec<u8> = head.iter().flat_map(|c| c.iter().copied()).collect();
    let stat = stat_of(&joined, &path)?;
    let mut response = if head_only {
        // Dropping the receiver ends the copy.
        StatusCode::OK.into_response()
    } else {
        let rest = ReceiverStream::new(rx);
        let body = tokio_stream::iter(head).chain(rest).map(Ok::<_, io::Error>);
        let mut r = Response::new(Body::from_stream(body));
        r.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-tar"),
        );
        r
    };
    response.headers_mut().insert(STAT_HEADER, stat);
    Ok(response)
}

/// `PUT /containers/{id}/archive?path=DIR`: the tar body is unpacked in directory DIR
/// of the running container (which must exist).
pub async fn put(app: &Arc<App>, id: &str, q: &Query, req: Request) -> Result<Response, ApiError> {
    let path = path_of(q)?;
    let record = app.containers.get(id).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    let mut body = req.into_body().into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(io::Error::other);
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let reader = ChannelReader {
        rx,
        chunk: Bytes::new(),
    };
    app.containers
        .copy_in(&record.id, HostSource::Archive(Box::new(reader)), &path)
        .await
        .map_err(|e| copy_error(e, &record.name, &path))?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive_of(kind: tar::EntryType, mode: u32, link: Option<&str>) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, "entry", io::empty()).unwrap();
        b.into_inner().unwrap()
    }

    fn decode(v: HeaderValue) -> serde_json::Value {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_bytes())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_stat_header_has_gos_mode_bits_and_the_link_target() {
        let dir =
            decode(stat_of(&archive_of(tar::EntryType::Directory, 0o755, None), "/etc/").unwrap());
        assert_eq!(dir["name"], "etc");
        assert_eq!(dir["mode"], (1u32 << 31) | 0o755);
        assert_eq!(dir["mtime"], "2023-11-14T22:13:20Z");
        let link = decode(
            stat_of(
                &archive_of(tar::EntryType::Symlink, 0o777, Some("/x")),
                "/a/l",
            )
            .unwrap(),
        );
        assert_eq!(link["mode"], (1u32 << 27) | 0o777);
        assert_eq!(link["linkTarget"], "/x");
        let suid = decode(
            stat_of(
                &archive_of(tar::EntryType::Regular, 0o4755, None),
                "/bin/su",
            )
            .unwrap(),
        );
        assert_eq!(suid["mode"], (1u32 << 23) | 0o755);
        assert!(stat_of(b"", "/x").is_err());
    }

    #[test]
    fn paths_must_be_given_and_are_absolute() {
        let q = |p: &str| Query(vec![("path".into(), p.into())]);
        assert_eq!(path_of(&q("tmp")).unwrap(), "/tmp");
        assert_eq!(path_of(&q("/tmp")).unwrap(), "/tmp");
        assert!(path_of(&Query(vec![])).is_err());
    }
}
