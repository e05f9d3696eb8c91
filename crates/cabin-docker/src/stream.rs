//! Docker's streams. Attach and exec take over their connection: the reply is `101
//! UPGRADED` (`Upgrade: tcp`) and the socket is then raw and full duplex, stdin coming
//! in unframed, output going out either raw (with a terminal) or in Docker's 8-byte
//! frames (`[stream, 0, 0, 0, length as u32 big-endian]`, 1 stdout, 2 stderr), which
//! logs use too inside an ordinary reply.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::error::ApiError;

pub type Conn = TokioIo<hyper::upgrade::Upgraded>;

/// Which of a process's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Stdout = 1,
    Stderr = 2,
}

impl Out {
    pub fn of(stderr: bool) -> Out {
        if stderr {
            Out::Stderr
        } else {
            Out::Stdout
        }
    }
}

/// `data` as one of Docker's frames (several when it is larger than a frame holds).
pub fn frame(out: Out, data: &[u8], into: &mut Vec<u8>) {
    for chunk in data.chunks(u32::MAX as usize) {
        into.extend_from_slice(&[out as u8, 0, 0, 0]);
        into.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        into.extend_from_slice(chunk);
    }
}

/// How output is written to a client: framed, or raw (a terminal's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Multiplexed,
    Raw,
}

impl Framing {
    pub fn of(tty: bool) -> Framing {
        if tty {
            Framing::Raw
        } else {
            Framing::Multiplexed
        }
    }

    pub fn encode(self, out: Out, data: &[u8]) -> Vec<u8> {
        match self {
            Framing::Raw => data.to_vec(),
            Framing::Multiplexed => {
                let mut v = Vec::with_capacity(data.len() + 8);
                frame(out, data, &mut v);
                v
            }
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Raw => "application/vnd.docker.raw-stream",
            Framing::Multiplexed => "application/vnd.docker.multiplexed-stream",
        }
    }
}

/// A connection that is being taken over: answer with [`Hijack::response`], and the
/// raw connection arrives through [`Hijack::conn`] once the reply has gone.
pub struct Hijack {
    upgrade: hyper::upgrade::OnUpgrade,
    framing: Framing,
    fd: Option<RawFd>,
}

/// The descriptor of a request's connection (recorded when it was accepted), to tell
/// when a hijacked client has hung up.
#[derive(Debug, Clone, Copy)]
pub struct ConnFd(pub RawFd);

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for ConnFd
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> ConnFd {
        ConnFd(stream.io().as_raw_fd())
    }
}

/// Whether the peer of the socket `fd` has closed it entirely (not only its writing
/// side, which a client does when its stdin ends).
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting; the descriptor belongs to a connection the
    // caller still holds, so it cannot have been closed and reused.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

impl Hijack {
    /// Takes over `req`'s connection; it must ask for it (`Upgrade: tcp`), as the docker
    /// CLI and SDKs do.
    pub fn of(req: &mut Request, framing: Framing) -> Result<Hijack, ApiError> {
        let asked = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
        if !asked {
            return Err(ApiError::bad_request(
                "this endpoint takes over the connection: send Connection: Upgrade and Upgrade: tcp",
            ));
        }
        let fd = req
            .extensions()
            .get::<axum::extract::ConnectInfo<ConnFd>>()
            .map(|c| c.0 .0);
        Ok(Hijack {
            upgrade: hyper::upgrade::on(req),
            framing,
            fd,
        })
    }

    /// The connection's descriptor, for [`Writer::start`].
    pub fn fd(&self) -> Option<RawFd> {
        self.fd
    }

    pub fn response(&self) -> Response {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.framing.content_type()),
        );
        r
    }

    /// The raw connection, split, once the 101 has been sent; None if the client left.
    pub async fn conn(self) -> Option<(ReadHalf<Conn>, WriteHalf<Conn>)> {
        let upgraded = self.upgrade.await.ok()?;
        Some(tokio::io::split(TokioIo::new(upgraded)))
    }
}

/// How much output may wait for a client that does not read before it is cut off.
const MAX_BACKLOG: usize = 64 << 20;
/// How often a quiet connection is checked for a client that hung up.
const HANGUP_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Output for a hijacked connection: the callbacks of the library push into it, one
/// writer task sends it, and the connection's write side is shut (the client's
/// end-of-output) when the pushers are done. A client that stops reading while output
/// piles up beyond [`MAX_BACKLOG`] is disconnected (the container is not held back).
pub struct Writer {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    framing: Framing,
    backlog: Arc<AtomicUsize>,
    gone: tokio::sync::watch::Receiver<bool>,
}

impl Writer {
    /// Starts the writer task on `wr` (the connection `fd`, when known, is watched for
    /// a client that hangs up); it ends when every [`Writer`] is dropped, or the client
    /// goes away, which [`Writer::gone`] tells.
    pub fn start(
        mut wr: WriteHalf<Conn>,
        framing: Framing,
        fd: Option<RawFd>,
    ) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let pending = backlog.clone();
        let (gone_tx, gone) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut check = tokio::time::interval(HANGUP_CHECK);
            loop {
                let data = tokio::select! {
                    d = rx.recv() => d,
                    _ = check.tick() => {
                        if fd.is_some_and(hung_up) {
                            let _ = gone_tx.send(true);
                            return;
                        }
                        continue;
                    }
                };
                let Some(data) = data else { break };
                if pending.load(Ordering::Relaxed) > MAX_BACKLOG
                    || wr.write_all(&data).await.is_err()
                {
                    let _ = gone_tx.send(true);
                    return;
                }
                pending.fetch_sub(data.len(), Ordering::Relaxed);
            }
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        });
        (
            Writer {
                tx,
                framing,
                backlog,
                gone,
            },
            task,
        )
    }

    /// Becomes true when the client has gone away (hung up, stopped reading, or its
    /// connection failed).
    pub fn gone(&self) -> tokio::sync::watch::Receiver<bool> {
        self.gone.clone()
    }

    pub fn send(&self, out: Out, data: &[u8]) {
        if !data.is_empty() {
            let data = self.framing.encode(out, data);
            self.backlog.fetch_add(data.len(), Ordering::Relaxed);
            let _ = self.tx.send(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_stream_and_the_big_endian_length() {
        let v = Framing::Multiplexed.encode(Out::Stderr, b"hi\n");
        assert_eq!(v, [2, 0, 0, 0, 0, 0, 0, 3, b'h', b'i', b'\n']);
        assert_eq!(Framing::Raw.encode(Out::Stdout, b"x"), b"x");
    }
}
