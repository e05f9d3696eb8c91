//! `cabin cp`: files between the host and a running detached container, as tar
//! archives (see cabin-archive) that travel host ⇄ supervisor ⇄ guest.
//!
//! The client connects to the container's supervisor (the one holder of the VM's agent
//! connection) with a [`Request::CopyOut`](crate::control::Request) or `CopyIn`; the
//! connection then carries frames (see [`crate::control`]): the archive in `Archive`
//! frames, `ArchiveEnd` from the host when it has sent all of it, and `Done` or `Error`
//! from the supervisor. In the guest the archive is read or written inside the
//! container's own view of its files (cabin-init's copy.rs).
//!
//! What comes out of the guest is treated as hostile: it is extracted with
//! cabin_archive::place, which refuses unsafe paths and writing through links, drops
//! set-ID bits, and moves nothing into place until the whole archive has arrived.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use cabin_proto::v1::{CopyInChunk, CopyInTarget};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::agent::{self, Agent};
use crate::control::{self, CopyInRequest, CopyOutRequest, Frame, FrameError, Incoming, Request};

// The supervisor's side.

async fn send_error(wr: &mut OwnedWriteHalf, message: &str) {
    let _ = control::write_frame(wr, &Frame::Error(message.to_string())).await;
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
                if control::write_frame(&mut wr, &Frame::Archive(chunk.data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => return send_error(&mut wr, e.message()).await,
        }
    }
    let _ = control::write_frame(&mut wr, &Frame::Done).await;
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
            f = control::read_frame(&mut rd), if tx.is_some() => {
                let Some(sender) = tx.as_ref() else { continue };
                let chunk = match f {
                    Ok(Incoming::Frame(Frame::Archive(data))) => CopyInChunk { target: None, data, end: false },
                    Ok(Incoming::Frame(Frame::ArchiveEnd)) => CopyInChunk { target: None, data: Vec::new(), end: true },
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
            let _ = control::write_frame(&mut wr, &Frame::Done).await;
        }
        Err(e) => send_error(&mut wr, e.message()).await,
    }
}

// The client's side.

/// Where a copy out of a container goes.
pub enum HostDest {
    /// The archive itself (`cabin cp CONTAINER:PATH -`, a server's response body).
    Archive(Box<dyn Write + Send>),
    Path {
        path: PathBuf,
        /// The source path ended in `/.`: its contents, not itself.
        contents_only: bool,
    },
}

/// Where a copy into a container comes from.
pub enum HostSource {
    /// A tar archive (`cabin cp - CONTAINER:DIR`, a server's request body).
    Archive(Box<dyn Read + Send>),
    Path {
        path: PathBuf,
        contents_only: bool,
        follow_link: bool,
    },
}

/// What a finished copy out of a container left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Device nodes and pipes, which are not copied to the host.
    pub skipped_special: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot reach the container's supervisor: {0}")]
    Unreachable(io::Error),
    /// The guest or the supervisor said why, in these words.
    #[error("{0}")]
    Failed(String),
    #[error("the container's supervisor ended the copy")]
    Ended,
    #[error("reading from the supervisor: {0}")]
    Protocol(#[from] FrameError),
    #[error("{0}")]
    Archive(#[from] cabin_archive::Error),
    #[error("no such file or directory: {}", .0.display())]
    SourceMissing(PathBuf),
    #[error("{} is not a directory", .0.display())]
    SourceNotDirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    Source { path: PathBuf, source: io::Error },
    #[error("reading the archive: {0}")]
    ReadArchive(io::Error),
    #[error("writing the archive: {0}")]
    WriteArchive(io::Error),
    #[error("the extraction failed: {0}")]
    Extraction(String),
}

async fn connect(container_dir: &Path, req: &Request) -> Result<UnixStream, CopyError> {
    control::connect(container_dir, req)
        .await
        .map_err(CopyError::Unreachable)
}

/// The next frame: a refusal or the end of the connection is an error.
async fn next_frame(rd: &mut (impl tokio::io::AsyncReadExt + Unpin)) -> Result<Frame, CopyError> {
    match control::read_frame(rd).await? {
        Incoming::Frame(f) => Ok(f),
        Incoming::Refused(why) => Err(CopyError::Failed(why)),
        Incoming::End => Err(CopyError::Ended),
    }
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

/// Copies `src` out of the running container whose directory is `container_dir`.
pub async fn copy_out(
    container_dir: &Path,
    src: &str,
    follow_link: bool,
    dest: HostDest,
) -> Result<Copied, CopyError> {
    let req = Request::CopyOut(CopyOutRequest {
        path: src.to_string(),
        follow_link,
    });
    let (mut rd, _wr) = connect(container_dir, &req).await?.into_split();
    let (path, contents_only) = match dest {
        HostDest::Path {
            path,
            contents_only,
        } => (path, contents_only),
        HostDest::Archive(mut out) => loop {
            match next_frame(&mut rd).await? {
                Frame::Archive(data) => {
                    // The writer blocks (a pipe, a socket): off the async threads.
                    out = tokio::task::spawn_blocking(move || {
                        let mut out = out;
                        out.write_all(&data).map(|()| out)
                    })
                    .await
                    .map_err(|e| CopyError::WriteArchive(io::Error::other(e)))?
                    .map_err(CopyError::WriteArchive)?;
                }
                Frame::Done => {
                    out.flush().map_err(CopyError::WriteArchive)?;
                    return Ok(Copied::default());
                }
                Frame::Error(m) => return Err(CopyError::Failed(m)),
                _ => {}
            }
        },
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
            Ok(Frame::Archive(data)) => (Ok(data), false),
            Ok(Frame::Done) => break,
            Ok(Frame::Error(m)) => {
                guest_error = Some(CopyError::Failed(m.clone()));
                (Err(m), true)
            }
            Ok(_) => continue,
            Err(e) => {
                let m = e.to_string();
                guest_error = Some(e);
                (Err(m), true)
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
        .map_err(|e| CopyError::Extraction(e.to_string()))?;
    match (placed, guest_error) {
        (_, Some(e)) => Err(e),
        (Ok(done), None) => Ok(Copied {
            skipped_special: done.skipped_special,
        }),
        (Err(e), None) => Err(CopyError::Archive(e)),
    }
}

/// Copies into the running container whose directory is `container_dir`; its files
/// belong to root there.
pub async fn copy_in(container_dir: &Path, src: HostSource, dest: &str) -> Result<(), CopyError> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
    let (req, producer) = match src {
        HostSource::Archive(mut input) => {
            let req = CopyInRequest {
                path: dest.to_string(),
                contents_only: false,
                extract: true,
            };
            let producer = tokio::task::spawn_blocking(move || -> Result<(), CopyError> {
                let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
                loop {
                    let n = input.read(&mut buf).map_err(CopyError::ReadArchive)?;
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
                    return Err(CopyError::SourceMissing(path))
                }
                Err(source) => return Err(CopyError::Source { path, source }),
                Ok(m) if contents_only && !m.is_dir() => {
                    return Err(CopyError::SourceNotDirectory(path))
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
            let producer = tokio::task::spawn_blocking(move || -> Result<(), CopyError> {
                let out = io::BufWriter::with_capacity(cabin_proto::CHUNK_BYTES, ChannelWriter(tx));
                let opts = cabin_archive::PackOptions {
                    follow_top: follow_link,
                };
                cabin_archive::pack(&path, &top, opts, out).map_err(CopyError::Archive)
            });
            (req, producer)
        }
    };
    let (mut rd, mut wr) = connect(container_dir, &Request::CopyIn(req))
        .await?
        .into_split();
    // The archive is sent by a task of its own, so that the frames coming back are
    // read by one plain loop (a frame read raced against other work could be cut
    // half-way and lose its bytes).
    let sender = tokio::spawn(async move {
        while let Some(data) = rx.recv().await {
            // A failed write means the supervisor hung up; its last frame says why.
            if control::write_frame(&mut wr, &Frame::Archive(data))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        // Only a complete archive is marked complete: when the source failed half-way
        // the connection closes without the mark, and the container is left as it was.
        producer
            .await
            .map_err(|e| CopyError::Extraction(e.to_string()))
            .and_then(|r| r)?;
        let _ = control::write_frame(&mut wr, &Frame::ArchiveEnd).await;
        // Held open until the answer has come.
        std::future::pending::<Result<(), CopyError>>().await
    });
    let answer = loop {
        match next_frame(&mut rd).await {
            Ok(Frame::Done) => break Ok(()),
            Ok(Frame::Error(m)) => break Err(CopyError::Failed(m)),
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
