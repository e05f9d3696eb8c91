//! A task's stdio as containerd gives it: paths of fifos its client made (`ctr`'s,
//! CRI's log copier), empty when a stream is not wanted. Output is written to them
//! from a channel, so that the container's output never waits on the shim's locks,
//! and they are closed when the process ends: that end is how the client learns
//! there is no more (CRI's ExecSync waits for it). Input is read until the client's
//! end closes or containerd says `CloseIO`.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};

/// The three paths of a process's stdio (each may be empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// Why a stdio path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error("stdio {0:?} is not supported: cabin's shim writes to fifos and files (logging binaries, binary://, are not supported)")]
    Unsupported(String),
}

/// The file a stdio URI names: a bare path or `fifo://` and `file://` ones.
fn file_path(uri: &str) -> Result<Option<&str>, StdioError> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(p) = uri
        .strip_prefix("fifo://")
        .or_else(|| uri.strip_prefix("file://"))
    {
        return Ok(Some(p));
    }
    if uri.contains("://") {
        return Err(StdioError::Unsupported(uri.to_string()));
    }
    Ok(Some(uri))
}

/// Checks that every path of `paths` is one the shim can use.
pub fn check(paths: &Paths) -> Result<(), StdioError> {
    for p in [&paths.stdin, &paths.stdout, &paths.stderr] {
        file_path(p)?;
    }
    Ok(())
}

/// Output queued for a client that does not read is dropped beyond this (cabin's log
/// of the container keeps all of it).
const MAX_QUEUED: usize = 16 << 20;
/// How long a process's end waits for its output to reach a client that stopped
/// reading.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Output of one process on its way to the client: (stderr?, bytes).
pub struct OutputSender {
    tx: mpsc::UnboundedSender<(bool, Vec<u8>)>,
    queued: Arc<AtomicUsize>,
}

impl OutputSender {
    pub fn send(&self, is_err: bool, data: Vec<u8>) {
        let len = data.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return;
        }
        if self.tx.send((is_err, data)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
        }
    }

    /// As a callback (what `Containers::follow_run` writes to).
    pub fn sink(&self) -> impl FnMut(bool, &[u8]) + Send + '_ {
        move |is_err, data| self.send(is_err, data.to_vec())
    }
}

/// Opens a stdout or stderr path for writing without waiting for its reader: a fifo
/// read and write (so that the open never blocks, and what is written before the
/// client reads waits in it), a file for appending.
async fn open_output(path: &str) -> io::Result<Box<dyn AsyncWrite + Unpin + Send>> {
    let is_fifo = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo());
    if is_fifo {
        let fifo = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)?;
        Ok(Box::new(fifo))
    } else {
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .await?;
        Ok(Box::new(file))
    }
}

/// Starts writing a process's output to `paths`' stdout and stderr; the sender takes
/// it, and the returned receiver fires once all of it is written and both are
/// closed (after the sender is dropped).
pub fn output(paths: &Paths) -> (OutputSender, oneshot::Receiver<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, Vec<u8>)>();
    let queued = Arc::new(AtomicUsize::new(0));
    let (done_tx, done) = oneshot::channel();
    let stdout = file_path(&paths.stdout).ok().flatten().map(str::to_owned);
    let stderr = file_path(&paths.stderr).ok().flatten().map(str::to_owned);
    let counter = queued.clone();
    tokio::spawn(async move {
        let open = |p: Option<String>| async move {
            match p {
                Some(p) => open_output(&p)
                    .await
                    .map_err(|e| log::warn!("opening {p}: {e}"))
                    .ok(),
                None => None,
            }
        };
        let (mut out, mut err) = (open(stdout).await, open(stderr).await);
        while let Some((is_err, data)) = rx.recv().await {
            counter.fetch_sub(data.len(), Ordering::AcqRel);
            let file = if is_err { &mut err } else { &mut out };
            if let Some(f) = file {
                if f.write_all(&data).await.is_err() {
                    // The reader went: what follows for it is dropped.
                    *file = None;
                }
            }
        }
        for f in [out.as_mut(), err.as_mut()].into_iter().flatten() {
            let _ = f.flush().await;
        }
        drop((out, err));
        let _ = done_tx.send(());
    });
    (OutputSender { tx, queued }, done)
}

/// Waits until a process's output has been written and closed (`done`, from
/// [`output`]), for a bounded time: a client that stopped reading does not hold the
/// process's exit.
pub async fn flushed(done: oneshot::Receiver<()>) {
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, done).await;
}

/// A process's input: read from the client's fifo from the moment the process is
/// made (containerd's client may write, and close its end, before the process
/// starts), handed to the process when it starts.
pub struct Input {
    /// What was read, for the process.
    pub data: mpsc::Receiver<Vec<u8>>,
    /// Ends the input (containerd's `CloseIO`): what the client wrote before it is
    /// still delivered, then the process reads the end.
    pub close: oneshot::Sender<()>,
}

/// Opens `paths`' stdin (None: the process has none) and reads it from now on.
///
/// The fifo is opened for reading without waiting for the client's end, and read only
/// when the kernel says it is readable: a fifo whose writer has not come yet is not
/// readable, one whose writer came and went is (at its end), so a client that is late
/// is not mistaken for one that is done. The input ends when the client closes its
/// end, or with containerd's `CloseIO`, whichever comes first; what the client wrote
/// before either is delivered.
pub fn input(paths: &Paths) -> io::Result<Option<Input>> {
    let Some(path) = file_path(&paths.stdin).ok().flatten().map(str::to_owned) else {
        return Ok(None);
    };
    let fifo = tokio::net::unix::pipe::OpenOptions::new().open_receiver(&path)?;
    let (sink, data) = mpsc::channel(8);
    let (close, mut closed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            tokio::select! {
                ready = fifo.readable() => {
                    if ready.is_err() {
                        return;
                    }
                    match fifo.try_read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if sink.send(buf[..n].to_vec()).await.is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
                _ = &mut closed => break,
            }
        }
        // Closed: what the client wrote before is in the fifo; nothing more comes.
        // Read straight from the (non-blocking) descriptor: the runtime may not have
        // heard yet that it is readable.
        loop {
            match nix::unistd::read(&fifo, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sink.send(buf[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Some(Input { data, close }))
}

/// Forwards `input` to `sink` (an exec's stdin) until it ends, then drops `sink`.
pub fn forward(mut input: mpsc::Receiver<Vec<u8>>, sink: mpsc::Sender<Vec<u8>>) {
    tokio::spawn(async move {
        while let Some(data) = input.recv().await {
            if sink.send(data).await.is_err() {
                return;
            }
        }
    });
}

/// A channel of input as a reader (what `Containers::follow_run` reads a container's
/// stdin from).
pub struct ChannelReader {
    rx: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            pending: Vec::new(),
        }
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(data)) => self.pending = data,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn fifo_and_file_uris_are_paths_and_logging_binaries_are_refused() {
        assert_eq!(file_path("").unwrap(), None);
        assert_eq!(
            file_path("/run/x/t-stdout").unwrap(),
            Some("/run/x/t-stdout")
        );
        assert_eq!(file_path("fifo:///run/x").unwrap(), Some("/run/x"));
        assert_eq!(file_path("file:///var/log/x").unwrap(), Some("/var/log/x"));
        let e = file_path("binary:///usr/bin/logger?a=b").unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
    }

    #[tokio::test]
    async fn output_reaches_its_files_in_order_and_they_are_closed_at_the_end() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let err = t.path().join("err");
        std::fs::write(&out, "").unwrap();
        std::fs::write(&err, "").unwrap();
        let paths = Paths {
            stdin: String::new(),
            stdout: out.display().to_string(),
            stderr: format!("file://{}", err.display()),
        };
        let (tx, done) = output(&paths);
        for i in 0..100 {
            tx.send(i % 2 == 1, format!("{i} ").into_bytes());
        }
        drop(tx);
        done.await.unwrap();
        let out = std::fs::read_to_string(out).unwrap();
        assert!(out.starts_with("0 2 4 ") && out.ends_with("98 "), "{out}");
        assert!(std::fs::read_to_string(err).unwrap().starts_with("1 3 5 "));
    }

    /// A fifo in a temporary directory, as a process's stdin.
    fn stdin_fifo() -> (tempfile::TempDir, std::path::PathBuf, Paths) {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("in");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = Paths {
            stdin: fifo.display().to_string(),
            ..Paths::default()
        };
        (t, fifo, paths)
    }

    #[tokio::test]
    async fn input_written_before_close_io_arrives_and_close_io_ends_it() {
        let (_t, fifo, paths) = stdin_fifo();
        let input = input(&paths).unwrap().unwrap();
        // The client's end stays open (as containerd's does): only CloseIO ends it,
        // and what it wrote just before is not lost.
        let mut writer = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(&fifo)
            .unwrap();
        writer.write_all(b"hello").await.unwrap();
        input.close.send(()).unwrap();
        let mut reader = ChannelReader::new(input.data);
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reader.read_to_end(&mut got),
        )
        .await
        .expect("CloseIO ends the input")
        .unwrap();
        assert_eq!(got, b"hello");
        drop(writer);
    }

    #[tokio::test]
    async fn a_late_client_is_waited_for_and_its_closing_ends_the_input() {
        let (_t, fifo, paths) = stdin_fifo();
        let input = input(&paths).unwrap().unwrap();
        let mut reader = ChannelReader::new(input.data);
        // No writer for a while: that is not the end.
        let mut early = [0u8; 1];
        assert!(tokio::time::timeout(
            std::time::Duration::from_millis(300),
            reader.read(&mut early)
        )
        .await
        .is_err());
        let mut writer = tokio::net::unix::pipe::OpenOptions::new()
            .open_sender(&fifo)
            .unwrap();
        writer.write_all(b"late").await.unwrap();
        drop(writer);
        let mut got = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reader.read_to_end(&mut got),
        )
        .await
        .expect("the writer's end ends the input")
        .unwrap();
        assert_eq!(got, b"late");
        drop(input.close);
    }

    #[tokio::test]
    async fn a_client_that_never_opens_its_end_leaves_nothing_hanging() {
        let (_t, _fifo, paths) = stdin_fifo();
        let input = input(&paths).unwrap().unwrap();
        input.close.send(()).unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            ChannelReader::new(input.data).read_to_end(&mut rest),
        )
        .await
        .expect("the input ends")
        .unwrap();
        assert!(rest.is_empty());
    }
}
