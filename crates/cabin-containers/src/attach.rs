//! `cabin start -a [-i]`: the output of a detached container's process, from the start
//! of its current run, then live; its stdin when it was created with `-i`; its exit
//! code at the end.
//!
//! The client sends a [`Request::Attach`](crate::control::Request); the connection then
//! carries frames (see [`crate::control`]). The supervisor
//! writes the log and accepts attachments in one task, so the moment a client attaches
//! splits the output cleanly: the supervisor writes out what it holds of unfinished
//! lines and answers `LOGGED` with two offsets of the log, where this run's output
//! begins and where it stands now; the client prints that part from the log, and
//! everything after comes to it live (`STDOUT`, `STDERR`), then `EXIT` with the run's
//! exit code. Nothing is lost or printed twice, and a partial line (a prompt) shows at
//! once rather than when its newline comes.

use std::path::Path;

use cabin_proto::v1::ProcessRef;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agent::{self, Agent};
use crate::control::{self, AttachRequest, Frame, Incoming, Request};
use crate::log::{self, LogWriter};

/// Output frames waiting for a client beyond this are too many: the client is too slow
/// to follow, and is let go rather than holding up the supervisor.
const CLIENT_BACKLOG: usize = 256;

struct Client {
    frames: mpsc::Sender<Frame>,
    writer: tokio::task::JoinHandle<()>,
}

/// The supervisor's side: the attached clients. They stay attached across the runs of
/// a restart policy and hear the exit code once the container has stopped for good.
#[derive(Default)]
pub struct Attached {
    run_start: u64,
    clients: Vec<Client>,
    /// Clients' stdin, for the process once it runs.
    pending_stdin: Vec<tokio::net::unix::OwnedReadHalf>,
}

impl Attached {
    /// A run of the process starts; `log_size` is the log's size then.
    pub fn run_started(&mut self, log_size: u64) {
        self.run_start = log_size;
    }

    /// Attaches a client: from now on it gets the output live, and what the log holds
    /// of the current run first. `stdin_open`: the container's process has an open
    /// stdin (it was created with -i); a client's stdin waits in `pending_stdin` until
    /// [`Attached::connect_stdin`] (a client may attach while the VM still boots).
    pub fn add(
        &mut self,
        conn: UnixStream,
        req: AttachRequest,
        log: &mut LogWriter,
        stdin_open: bool,
    ) {
        let (rd, mut wr) = conn.into_split();
        let (tx, mut rx) = mpsc::channel::<Frame>(CLIENT_BACKLOG);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if control::write_frame(&mut wr, &frame).await.is_err() {
                    return;
                }
            }
        });
        if req.stdin && !stdin_open {
            let _ = tx.try_send(Frame::Failed {
                code: 1,
                message: "the container was created without -i: its standard input is closed"
                    .into(),
            });
            return;
        }
        // What is logged so far is the client's to read; from here on output comes live.
        let _ = log.flush();
        let logged = Frame::Logged {
            run_start: self.run_start,
            live_from: log.size(),
        };
        if tx.try_send(logged).is_err() {
            return;
        }
        if req.stdin {
            self.pending_stdin.push(rd);
        }
        self.clients.push(Client { frames: tx, writer });
    }

    /// Sends the waiting clients' stdin to the process (once it runs).
    pub fn connect_stdin(&mut self, agent: &Agent, process: &ProcessRef) {
        for mut rd in self.pending_stdin.drain(..) {
            let (input, done) = agent::stdin_writer(agent, process.clone());
            tokio::spawn(async move {
                while let Ok(Incoming::Frame(Frame::Stdin(data))) =
                    control::read_frame(&mut rd).await
                {
                    if input.send(data).await.is_err() {
                        break;
                    }
                }
                // The client's end of input is the process's (docker's stdin-once).
                drop(input);
                let _ = done.await;
            });
        }
    }

    /// Output of the process, for every attached client.
    pub fn output(&mut self, stderr: bool, data: &[u8]) {
        let frame = if stderr {
            Frame::Stderr(data.to_vec())
        } else {
            Frame::Stdout(data.to_vec())
        };
        self.clients
            .retain(|c| c.frames.try_send(frame.clone()).is_ok());
    }

    /// The container has stopped with `code` (its record says so): each client gets
    /// the code after its last output. Returns once they have it (or 5 s have passed),
    /// so that it reaches them before the supervisor exits.
    pub async fn finish(self, code: i32) {
        let deadline = std::time::Duration::from_secs(5);
        for c in self.clients {
            let _ = tokio::time::timeout(deadline, c.frames.send(Frame::Exit(code))).await;
            drop(c.frames);
            let _ = tokio::time::timeout(deadline, c.writer).await;
        }
    }
}

/// How an attachment ended.
pub enum Detached {
    /// The run ended with this exit code.
    Exited(i32),
    /// The connection ended without one (the supervisor went away, or the run ended
    /// before the attachment was taken): the container's record has the rest.
    /// `attached`: the output up to then was printed.
    Lost { attached: bool },
}

/// Attaches to the running container whose directory is `container_dir`: hands its
/// output to `out` (stderr flag, bytes) from the start of the current run, sends
/// `stdin` to it when given, until the run ends.
pub async fn attach(
    container_dir: &Path,
    stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    out: &mut (dyn FnMut(bool, &[u8]) + Send),
) -> Result<Detached, AttachError> {
    match request(container_dir, stdin.is_some()).await {
        Ok(conn) => stream(conn, container_dir, stdin, out).await,
        Err(_) => Ok(Detached::Lost { attached: false }),
    }
}

/// Asks the supervisor of the container in `container_dir` for an attachment (an error
/// when there is no supervisor listening, yet or any more).
pub async fn request(container_dir: &Path, stdin: bool) -> std::io::Result<UnixStream> {
    control::connect(container_dir, &Request::Attach(AttachRequest { stdin })).await
}

/// Follows an attachment [`request`] made: see [`attach`].
pub async fn stream(
    conn: UnixStream,
    container_dir: &Path,
    stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    out: &mut (dyn FnMut(bool, &[u8]) + Send),
) -> Result<Detached, AttachError> {
    let (mut rd, wr) = conn.into_split();
    // Both go to the stdin pump once the supervisor has answered.
    let mut pump = stdin.map(|input| (input, wr));
    let mut attached = false;
    loop {
        let frame = match control::read_frame(&mut rd).await {
            Ok(Incoming::Frame(f)) => f,
            // Refused (the container is restarting) or cut off.
            _ => return Ok(Detached::Lost { attached }),
        };
        match frame {
            Frame::Logged {
                run_start,
                live_from,
            } => {
                let logged = log::read_between(container_dir, run_start, live_from)
                    .map_err(AttachError::Log)?;
                for e in logged {
                    out(e.stream == "stderr", e.log.as_bytes());
                }
                attached = true;
                if let Some((mut input, mut wr)) = pump.take() {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
                        loop {
                            match input.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    let data = Frame::Stdin(buf[..n].to_vec());
                                    if control::write_frame(&mut wr, &data).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = control::write_frame(&mut wr, &Frame::StdinEof).await;
                    });
                }
            }
            Frame::Stdout(data) => out(false, &data),
            Frame::Stderr(data) => out(true, &data),
            Frame::Exit(code) => return Ok(Detached::Exited(code)),
            Frame::Failed { message, .. } => return Err(AttachError::Refused(message)),
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0}")]
    Refused(String),
    #[error("reading the container's log: {0}")]
    Log(std::io::Error),
}
