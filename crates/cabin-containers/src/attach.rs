//! `cabin start -a [-i]`: the output of a detached container's process, from the start
//! of its current run, then live; its stdin when it was created with `-i`; its exit
//! code at the end.
//!
//! The client sends a [`Control::Attach`](crate::supervisor::Control) request; the
//! connection then carries frames (see [`crate::supervisor::frame`]). The supervisor
//! writes the log and accepts attachments in one task, so the moment a client attaches
//! splits the output cleanly: the supervisor writes out what it holds of unfinished
//! lines and answers `LOGGED` with two offsets of the log, where this run's output
//! begins and where it stands now; the client prints that part from the log, and
//! everything after comes to it live (`STDOUT`, `STDERR`), then `EXIT` with the run's
//! exit code. Nothing is lost or printed twice, and a partial line (a prompt) shows at
//! once rather than when its newline comes.

use std::path::Path;

use cabin_proto::v1::ProcessRef;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agent::{self, Agent};
use crate::log::{self, LogWriter};
use crate::supervisor::{control_socket, frame, Control};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachRequest {
    /// Send the client's stdin to the process.
    pub stdin: bool,
}

/// Output frames waiting for a client beyond this are too many: the client is too slow
/// to follow, and is let go rather than holding up the supervisor.
const CLIENT_BACKLOG: usize = 256;

struct Client {
    frames: mpsc::Sender<(u8, Vec<u8>)>,
    writer: tokio::task::JoinHandle<()>,
}

/// The supervisor's side: the attached clients. They stay attached across the runs of
/// a restart policy and hear the exit code once the container has stopped for good.
#[derive(Default)]
pub struct Attached {
    run_start: u64,
    clients: Vec<Client>,
}

impl Attached {
    /// A run of the process starts; `log_size` is the log's size then.
    pub fn run_started(&mut self, log_size: u64) {
        self.run_start = log_size;
    }

    /// Attaches a client. `stdin` is the process's open stdin, None when it has none
    /// (the container was not created with -i).
    pub fn add(
        &mut self,
        conn: UnixStream,
        req: AttachRequest,
        log: &mut LogWriter,
        stdin: Option<(&Agent, &ProcessRef)>,
    ) {
        let (mut rd, mut wr) = conn.into_split();
        let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(CLIENT_BACKLOG);
        let writer = tokio::spawn(async move {
            while let Some((kind, payload)) = rx.recv().await {
                if frame::write(&mut wr, kind, &payload).await.is_err() {
                    return;
                }
            }
        });
        let stdin = match (req.stdin, stdin) {
            (false, _) => None,
            (true, Some(s)) => Some(s),
            (true, None) => {
                let mut refusal = 1i32.to_be_bytes().to_vec();
                refusal.extend_from_slice(
                    b"the container was created without -i: its standard input is closed",
                );
                let _ = tx.try_send((frame::FAILED, refusal));
                return;
            }
        };
        // What is logged so far is the client's to read; from here on output comes live.
        let _ = log.flush();
        let mut offsets = self.run_start.to_be_bytes().to_vec();
        offsets.extend_from_slice(&log.size().to_be_bytes());
        if tx.try_send((frame::LOGGED, offsets)).is_err() {
            return;
        }
        if let Some((agent, process)) = stdin {
            let (input, done) = agent::stdin_writer(agent, process.clone());
            tokio::spawn(async move {
                while let Ok(Some((kind, data))) = frame::read(&mut rd).await {
                    if kind != frame::STDIN || input.send(data).await.is_err() {
                        break;
                    }
                }
                // The client's end of input is the process's (docker's stdin-once).
                drop(input);
                let _ = done.await;
            });
        }
        self.clients.push(Client { frames: tx, writer });
    }

    /// Output of the process, for every attached client.
    pub fn output(&mut self, stderr: bool, data: &[u8]) {
        let kind = if stderr { frame::STDERR } else { frame::STDOUT };
        self.clients
            .retain(|c| c.frames.try_send((kind, data.to_vec())).is_ok());
    }

    /// The container has stopped with `code` (its record says so): each client gets
    /// the code after its last output. Returns once they have it (or 5 s have passed),
    /// so that it reaches them before the supervisor exits.
    pub async fn finish(self, code: i32) {
        let deadline = std::time::Duration::from_secs(5);
        for c in self.clients {
            let exit = (frame::EXIT, code.to_be_bytes().to_vec());
            let _ = tokio::time::timeout(deadline, c.frames.send(exit)).await;
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

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Attaches to the running container whose directory is `container_dir`: prints its
/// output with `out` (stderr flag, bytes) from the start of the current run, sends
/// `stdin` to it when given, until the run ends.
pub async fn attach(
    container_dir: &Path,
    stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
    out: &mut dyn FnMut(bool, &[u8]),
) -> Result<Detached, String> {
    let req = Control::Attach(AttachRequest {
        stdin: stdin.is_some(),
    });
    let lost = Ok(Detached::Lost { attached: false });
    let mut conn = match UnixStream::connect(control_socket(container_dir)).await {
        Ok(c) => c,
        Err(_) => return lost,
    };
    let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    if conn.write_all(&line).await.is_err() {
        return lost;
    }
    let (mut rd, wr) = conn.into_split();
    // Both go to the stdin pump once the supervisor has answered.
    let mut pump = stdin.map(|input| (input, wr));
    let mut attached = false;
    loop {
        let (kind, payload) = match frame::read(&mut rd).await {
            Ok(Some(f)) => f,
            // Refused (a JSON line: the container is restarting) or cut off.
            Ok(None) | Err(_) => return Ok(Detached::Lost { attached }),
        };
        match kind {
            frame::LOGGED if payload.len() == 16 => {
                let (from, to) = (u64_at(&payload, 0), u64_at(&payload, 8));
                let logged = log::read_between(container_dir, from, to)
                    .map_err(|e| format!("reading the container's log: {e}"))?;
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
                                    if frame::write(&mut wr, frame::STDIN, &buf[..n])
                                        .await
                                        .is_err()
                                    {
                                        return;
                                    }
                                }
                            }
                        }
                        let _ = frame::write(&mut wr, frame::STDIN_EOF, &[]).await;
                    });
                }
            }
            frame::STDOUT | frame::STDERR => out(kind == frame::STDERR, &payload),
            frame::EXIT if payload.len() == 4 => {
                let code = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                return Ok(Detached::Exited(code));
            }
            frame::FAILED if payload.len() >= 4 => {
                return Err(String::from_utf8_lossy(&payload[4..]).into_owned())
            }
            _ => {}
        }
    }
}
