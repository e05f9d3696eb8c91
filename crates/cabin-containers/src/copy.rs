//! `cabin cp`: files between the host and a running detached container, as tar
//! archives (see cabin-archive) that travel host ⇄ supervisor ⇄ guest.
//!
//! The CLI connects to the container's supervisor (the one holder of the VM's agent
//! connection) with a [`Control::CopyOut`](crate::supervisor::Control) or `CopyIn`
//! request; the connection then carries frames (see [`crate::supervisor::frame`]): the
//! archive in `ARCHIVE` frames, `ARCHIVE_END` from the host when it has sent all of it,
//! and `DONE` or `ERROR` from the supervisor. In the guest the archive is read or
//! written inside the container's own view of its files (cabin-init's copy.rs).
//!
//! What comes out of the guest is treated as hostile: it is extracted with
//! cabin_archive::place, which refuses unsafe paths and writing through links, drops
//! set-ID bits, and moves nothing into place until the whole archive has arrived.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cabin_proto::v1::{CopyInChunk, CopyInTarget};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::agent::{self, Agent};
use crate::supervisor::{control_socket, frame, Control};

/// Frame kinds of a copy connection.
pub const ARCHIVE: u8 = 16;
pub const ARCHIVE_END: u8 = 17;
pub const DONE: u8 = 18;
/// The copy failed: a message.
pub const ERROR: u8 = 19;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyOutRequest {
    /// Absolute, in the container.
    pub path: String,
    pub follow_link: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyInRequest {
    /// Absolute, in the container.
    pub path: String,
    /// The archive's one top-level directory's contents go into `path`.
    pub contents_only: bool,
    /// The archive (anyone's) is extracted as it is into the directory `path`.
    pub extract: bool,
}

// The supervisor's side.

async fn send_error(wr: &mut OwnedWriteHalf, message: &str) {
    let _ = frame::write(wr, ERROR, message.as_bytes()).await;
}

/// Streams a container path's archive from the guest to the client on `conn`.
pub async fn relay_out(
    mut agent: Agent,
    container_id: String,
    req: CopyOutRequest,
    conn: UnixStream,
) {
    let (_rd, mut wr) = conn.into_split();
    let call = agent.copy_out(cabin_proto::v1::CopyOutRequest {
        container_id,
        path: req.path,
        follow_link: req.follow_link,
    });
    let mut stream = match agent::call("CopyOut", cabin_proto::CALL_TIMEOUT, call).await {
        Ok(s) => s,
        Err(e) => return send_error(&mut wr, e.message()).await,
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                // A client that went away ends the call (the stream is dropped), and
                // with it the guest's work.
                if frame::write(&mut wr, ARCHIVE, &chunk.data).await.is_err() {
                    return;
                }
            }
            Err(e) => return send_error(&mut wr, e.message()).await,
        }
    }
    let _ = frame::write(&mut wr, DONE, &[]).await;
}

/// Feeds the client's archive on `conn` to the guest; answers DONE or ERROR.
pub async fn relay_in(
    mut agent: Agent,
    container_id: String,
    req: CopyInRequest,
    conn: UnixStream,
) {
    let (mut rd, mut wr) = conn.into_split();
    let (tx, rx) = mpsc::channel::<CopyInChunk>(8);
    let first = CopyInChunk {
        target: Some(CopyInTarget {
            container_id,
            path: req.path,
            contents_only: req.contents_only,
            extract: req.extract,
        }),
        data: Vec::new(),
        end: false,
    };
    if tx.send(first).await.is_err() {
        return;
    }
    // No deadline on the whole call: it lasts as long as the archive takes to send.
    let call = agent.copy_in(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::pin!(call);
    let mut tx = Some(tx);
    let result = loop {
        tokio::select! {
            r = &mut call => break r,
            f = frame::read(&mut rd), if tx.is_some() => {
                let sender = tx.as_ref().expect("checked by the guard");
                let chunk = match f {
                    Ok(Some((ARCHIVE, data))) => CopyInChunk { target: None, data, end: false },
                    Ok(Some((ARCHIVE_END, _))) => CopyInChunk { target: None, data: Vec::new(), end: true },
                    // The client went away or broke the protocol: the stream ends
                    // without `end`, and the guest places nothing.
                    _ => {
                        tx = None;
                        continue;
                    }
                };
                let end = chunk.end;
                if sender.send(chunk).await.is_err() || end {
                    tx = None;
                }
            }
        }
    };
    match result {
        Ok(_) => {
            let _ = frame::write(&mut wr, DONE, &[]).await;
        }
        Err(e) => send_error(&mut wr, e.message()).await,
    }
}

// The client's side.

/// Where a copy out of a container goes.
pub enum HostDest {
    /// The archive itself, to standard output (`cabin cp CONTAINER:PATH -`).
    Stdout,
    Path {
        path: PathBuf,
        /// The source path ended in `/.`: its contents, not itself.
        contents_only: bool,
    },
}

/// Where a copy into a container comes from.
pub enum HostSource {
    /// A tar archive on standard input (`cabin cp - CONTAINER:DIR`).
    Stdin,
    Path {
        path: PathBuf,
        contents_only: bool,
        follow_link: bool,
    },
}

async fn connect(container_dir: &Path, req: &Control) -> Result<UnixStream, String> {
    let mut conn = UnixStream::connect(control_socket(container_dir))
        .await
        .map_err(|e| format!("cannot reach the container's supervisor: {e}"))?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    conn.write_all(&line).await.map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The next frame, or the supervisor's refusal (a JSON line, e.g. while the container
/// restarts).
async fn next_frame(rd: &mut OwnedReadHalf) -> Result<(u8, Vec<u8>), String> {
    let mut kind = [0u8; 1];
    match rd.read_exact(&mut kind).await {
        Ok(_) => {}
        Err(_) => return Err("the container's supervisor ended the copy".into()),
    }
    if kind[0] == b'{' {
        let mut line = String::from("{");
        let _ = tokio::io::BufReader::new(rd.take(4096))
            .read_line(&mut line)
            .await;
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        return Err(v["error"]
            .as_str()
            .unwrap_or("the supervisor refused the copy")
            .to_string());
    }
    let mut len = [0u8; 4];
    rd.read_exact(&mut len)
        .await
        .map_err(|e| format!("reading from the supervisor: {e}"))?;
    let len = u32::from_be_bytes(len);
    if len > frame::MAX {
        return Err("the supervisor sent a frame too large".into());
    }
    let mut payload = vec![0u8; len as usize];
    rd.read_exact(&mut payload)
        .await
        .map_err(|e| format!("reading from the supervisor: {e}"))?;
    Ok((kind[0], payload))
}

/// A blocking reader of chunks sent from async code; an `Err` chunk is a read error.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A blocking writer whose bytes async code receives as chunks.
struct ChannelWriter(mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(buf.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the copy was abandoned"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `cabin cp CONTAINER:SRC DEST`: copies `src` out of the running container whose
/// directory is `container_dir`.
pub async fn copy_out(
    container_dir: &Path,
    src: &str,
    follow_link: bool,
    dest: HostDest,
) -> Result<(), String> {
    let req = Control::CopyOut(CopyOutRequest {
        path: src.to_string(),
        follow_link,
    });
    let (mut rd, _wr) = connect(container_dir, &req).await?.into_split();
    let HostDest::Path {
        path,
        contents_only,
    } = dest
    else {
        let mut out = io::stdout().lock();
        loop {
            match next_frame(&mut rd).await? {
                (ARCHIVE, data) => out
                    .write_all(&data)
                    .map_err(|e| format!("writing to standard output: {e}"))?,
                (DONE, _) => return out.flush().map_err(|e| e.to_string()),
                (ERROR, m) => return Err(String::from_utf8_lossy(&m).into_owned()),
                _ => {}
            }
        }
    };
    // The guest names the archive's entry after the path it was asked for; a guest
    // that names it otherwise is refused (see UnpackOptions::top).
    let top = cabin_archive::top_name(Path::new(src));
    let (tx, rx) = mpsc::channel(8);
    let reader = ChannelReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    };
    let extract = tokio::task::spawn_blocking(move || {
        let opts = cabin_archive::UnpackOptions {
            keep_setid: false,
            top: Some(top),
        };
        cabin_archive::place(io::BufReader::new(reader), &path, contents_only, &opts)
    });
    let mut guest_error = None;
    loop {
        let (chunk, last) = match next_frame(&mut rd).await {
            Ok((ARCHIVE, data)) => (Ok(data), false),
            Ok((DONE, _)) => break,
            Ok((ERROR, m)) => {
                let m = String::from_utf8_lossy(&m).into_owned();
                guest_error = Some(m.clone());
                (Err(m), true)
            }
            Ok(_) => continue,
            Err(e) => {
                guest_error = Some(e.clone());
                (Err(e), true)
            }
        };
        // A send fails once extraction has stopped (it failed): its error says why.
        if tx.send(chunk).await.is_err() || last {
            break;
        }
    }
    drop(tx);
    let placed = extract
        .await
        .map_err(|e| format!("the extraction failed: {e}"))?;
    match (placed, guest_error) {
        (_, Some(e)) => Err(e),
        (Ok(done), None) => {
            if done.skipped_special > 0 {
                eprintln!(
                    "cabin: skipped {} device nodes and pipes (they are not copied to the host)",
                    done.skipped_special
                );
            }
            Ok(())
        }
        (Err(e), None) => Err(e.message),
    }
}

/// `cabin cp SRC CONTAINER:DEST`: copies into the running container whose directory is
/// `container_dir`; its files belong to root there.
pub async fn copy_in(container_dir: &Path, src: HostSource, dest: &str) -> Result<(), String> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let (req, producer) = match src {
        HostSource::Stdin => {
            let req = CopyInRequest {
                path: dest.to_string(),
                contents_only: false,
                extract: true,
            };
            let producer = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let mut stdin = io::stdin().lock();
                let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
                loop {
                    let n = stdin
                        .read(&mut buf)
                        .map_err(|e| format!("reading standard input: {e}"))?;
                    if n == 0 {
                        return Ok(());
                    }
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return Ok(());
                    }
                }
            });
            (req, producer)
        }
        HostSource::Path {
            path,
            contents_only,
            follow_link,
        } => {
            let meta = if follow_link {
                std::fs::metadata(&path)
            } else {
                std::fs::symlink_metadata(&path)
            };
            match meta {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(format!("no such file or directory: {}", path.display()))
                }
                Err(e) => return Err(format!("{}: {e}", path.display())),
                Ok(m) if contents_only && !m.is_dir() => {
                    return Err(format!("{} is not a directory", path.display()))
                }
                Ok(_) => {}
            }
            // Named after the source ("." after the directory it is).
            let top = match path.file_name() {
                Some(n) => n.to_os_string(),
                None => std::fs::canonicalize(&path)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_os_string()))
                    .unwrap_or_else(|| "root".into()),
            };
            let req = CopyInRequest {
                path: dest.to_string(),
                contents_only,
                extract: false,
            };
            let producer = tokio::task::spawn_blocking(move || -> Result<(), String> {
                let out = io::BufWriter::with_capacity(cabin_proto::CHUNK_BYTES, ChannelWriter(tx));
                let opts = cabin_archive::PackOptions {
                    follow_top: follow_link,
                };
                cabin_archive::pack(&path, &top, opts, out).map_err(|e| e.message)
            });
            (req, producer)
        }
    };
    let (mut rd, mut wr) = connect(container_dir, &Control::CopyIn(req))
        .await?
        .into_split();
    // The archive is sent by a task of its own, so that the frames coming back are
    // read by one plain loop (a frame read raced against other work could be cut
    // half-way and lose its bytes).
    let sender = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            // A failed write means the supervisor hung up; its last frame says why.
            if frame::write(&mut wr, ARCHIVE, &data).await.is_err() {
                return Ok(());
            }
        }
        // Only a complete archive is marked complete: when the source failed half-way
        // the connection closes without the mark, and the container is left as it was.
        producer.await.map_err(|e| e.to_string()).and_then(|r| r)?;
        let _ = frame::write(&mut wr, ARCHIVE_END, &[]).await;
        // Held open until the answer has come.
        std::future::pending::<Result<(), String>>().await
    });
    let answer = loop {
        match next_frame(&mut rd).await {
            Ok((DONE, _)) => break Ok(()),
            Ok((ERROR, m)) => break Err(String::from_utf8_lossy(&m).into_owned()),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    // Why the source failed, if it did, says more than what the guest made of it.
    if sender.is_finished() {
        if let Ok(Err(e)) = sender.await {
            return Err(e);
        }
    } else {
        sender.abort();
    }
    answer
}
