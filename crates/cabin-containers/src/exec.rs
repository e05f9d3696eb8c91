//! `exec`: another process in a running detached container, both sides.
//!
//! The client sends [`Request::Exec`](crate::control::Request) to the container's
//! supervisor (the one holder of the VM's agent connection), which starts the process
//! with what the container's own process started with under the exec's settings, and
//! relays frames: `Started` or `Failed` first, then stdout and stderr, then `Exit`; stdin
//! and terminal sizes go the other way.

use cabin_proto::v1::{ProcessRef, StartProcessRequest, TtySize};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::agent::{self, Agent};
use crate::control::{self, ExecRequest, Frame, Incoming, Request};
use crate::error::RunError;
use crate::process::{self, Output, Stream};
use crate::vm::ProcessSettings;

/// Fills in what an exec leaves to the container, as docker does: the variables its
/// process started with (and TERM with a terminal) under the exec's own, its working
/// directory and user unless the exec names others.
pub fn completed(mut req: ExecRequest, started: &ProcessSettings) -> ExecRequest {
    let mut env = Vec::with_capacity(started.env.len() + req.env.len() + 1);
    if req.tty.is_some() {
        env.push("TERM=xterm".to_string());
    }
    env.extend(started.env.iter().cloned());
    env.append(&mut req.env);
    req.env = env;
    if req.cwd.is_empty() {
        req.cwd = started.cwd.clone();
    }
    if req.user.is_empty() {
        req.user = started.user.clone();
    }
    req
}

// The supervisor's side.

/// Runs one exec'd process and relays its stdio and exit code over `conn`.
pub async fn relay(mut agent: Agent, process: ProcessRef, req: ExecRequest, conn: UnixStream) {
    let (mut rd, mut wr) = conn.into_split();
    let tty = req.tty.is_some();
    let start = StartProcessRequest {
        container_id: process.container_id.clone(),
        process_id: process.process_id.clone(),
        args: req.args,
        env: req.env,
        cwd: req.cwd,
        user: req.user,
        tty: req.tty.is_some(),
        tty_size: req.tty.map(|(rows, cols)| TtySize {
            rows: rows as u32,
            cols: cols as u32,
        }),
        rlimits: Vec::new(),
        stdin: req.stdin,
        init: false,
        // The container's first process's, in the guest.
        capabilities: None,
        no_new_privileges: false,
    };
    if let Err(e) = agent::call(
        "StartProcess",
        cabin_proto::CALL_TIMEOUT,
        agent.start_process(start),
    )
    .await
    {
        let failed = Frame::Failed {
            code: RunError::from(e.clone()).exit_code(),
            message: e.message().to_string(),
        };
        let _ = control::write_frame(&mut wr, &failed).await;
        return;
    }
    if control::write_frame(&mut wr, &Frame::Started)
        .await
        .is_err()
    {
        return;
    }
    // What the client sends from now on: stdin (with -i) and window sizes (with -t).
    let stdin = req
        .stdin
        .then(|| agent::stdin_writer(&agent, process.clone()));
    let (a, p) = (agent.clone(), process.clone());
    tokio::spawn(async move {
        let (mut tx, done) = match stdin {
            Some((tx, done)) => (Some(tx), Some(done)),
            None => (None, None),
        };
        while let Ok(Incoming::Frame(frame)) = control::read_frame(&mut rd).await {
            match frame {
                Frame::Stdin(data) => {
                    if let Some(t) = &tx {
                        if t.send(data).await.is_err() {
                            tx = None;
                        }
                    }
                }
                Frame::StdinEof => tx = None,
                Frame::Resize { rows, cols } => {
                    let _ = process::resize(&a, &p, rows, cols).await;
                }
                Frame::Signal(n) => {
                    let _ = process::signal(&a, &p, n, std::time::Duration::from_secs(5)).await;
                }
                _ => {}
            }
        }
        // The client has gone. A terminal's input never ends by itself, so its process
        // is hung up on, as a closed SSH session's shell is (a process that already
        // ended makes this a no-op).
        if tty {
            let _ = process::signal(&a, &p, libc::SIGHUP, std::time::Duration::from_secs(5)).await;
        }
        drop(tx);
        if let Some(done) = done {
            let _ = done.await;
        }
    });
    let mut output = process::output(&agent, process.clone());
    while let Some(Output { stream, data }) = output.recv().await {
        let frame = match stream {
            Stream::Stdout => Frame::Stdout(data),
            Stream::Stderr => Frame::Stderr(data),
        };
        if control::write_frame(&mut wr, &frame).await.is_err() {
            break;
        }
    }
    let code = match agent.wait(process).await {
        Ok(s) => process::exit_code(&s.into_inner()),
        Err(_) => 125,
    };
    let _ = control::write_frame(&mut wr, &Frame::Exit(code)).await;
}

// The client's side.

/// How an exec could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The process did not start: its exit code (127 not found, 126 not executable, 125
    /// otherwise) and why.
    #[error("{message}")]
    NotStarted { code: i32, message: String },
    #[error("the exec ended without a status")]
    Lost,
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Protocol(#[from] control::FrameError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What an exec'd process does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Output(Output),
    /// It ended, with this exit code.
    Exited(i32),
}

/// A running exec'd process, from the client's side.
pub struct ExecSession {
    rd: OwnedReadHalf,
    to_supervisor: mpsc::Sender<Frame>,
    stdin: bool,
}

impl ExecSession {
    /// Starts `req` in the container whose directory is `container_dir`; returns once the
    /// process runs.
    pub async fn start(
        container_dir: &std::path::Path,
        req: ExecRequest,
    ) -> Result<ExecSession, ExecError> {
        let stdin = req.stdin;
        let conn = control::connect(container_dir, &Request::Exec(req)).await?;
        let (mut rd, mut wr) = conn.into_split();
        match control::read_frame(&mut rd).await? {
            Incoming::Frame(Frame::Started) => {}
            Incoming::Frame(Frame::Failed { code, message }) => {
                return Err(ExecError::NotStarted { code, message })
            }
            Incoming::Refused(why) => return Err(ExecError::Refused(why)),
            _ => return Err(ExecError::Lost),
        }
        // One task writes every frame to the supervisor (stdin, window sizes), so that
        // reading never waits on writing.
        let (to_supervisor, mut frames) = mpsc::channel::<Frame>(8);
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                if control::write_frame(&mut wr, &frame).await.is_err() {
                    return;
                }
            }
        });
        Ok(ExecSession {
            rd,
            to_supervisor,
            stdin,
        })
    }

    /// The process's stdin (when the exec asked for it): bytes sent reach it in order;
    /// dropping the sender ends its input.
    pub fn stdin(&self) -> Option<mpsc::Sender<Vec<u8>>> {
        if !self.stdin {
            return None;
        }
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let frames = self.to_supervisor.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if frames.send(Frame::Stdin(data)).await.is_err() {
                    return;
                }
            }
            // (Fails harmlessly when the relay has gone.)
            let _ = frames.send(Frame::StdinEof).await;
        });
        Some(tx)
    }

    /// Tells the process's terminal its new size.
    pub async fn resize(&self, rows: u16, cols: u16) {
        let _ = self.to_supervisor.send(Frame::Resize { rows, cols }).await;
    }

    /// Sends signal `n` to the process.
    pub async fn signal(&self, n: i32) {
        let _ = self.to_supervisor.send(Frame::Signal(n)).await;
    }

    /// A handle that resizes the terminal from elsewhere (a window-size watcher).
    pub fn resizer(&self) -> Resizer {
        Resizer(self.to_supervisor.clone())
    }

    /// The next thing the process does: output, or its end.
    pub async fn next(&mut self) -> Result<ExecEvent, ExecError> {
        loop {
            return match control::read_frame(&mut self.rd).await? {
                Incoming::Frame(Frame::Stdout(data)) => Ok(ExecEvent::Output(Output {
                    stream: Stream::Stdout,
                    data,
                })),
                Incoming::Frame(Frame::Stderr(data)) => Ok(ExecEvent::Output(Output {
                    stream: Stream::Stderr,
                    data,
                })),
                Incoming::Frame(Frame::Exit(code)) => Ok(ExecEvent::Exited(code)),
                Incoming::Frame(_) => continue,
                Incoming::Refused(why) => Err(ExecError::Refused(why)),
                Incoming::End => Err(ExecError::Lost),
            };
        }
    }
}

/// Resizes an exec'd process's terminal.
#[derive(Clone)]
pub struct Resizer(mpsc::Sender<Frame>);

impl Resizer {
    pub async fn resize(&self, rows: u16, cols: u16) -> bool {
        self.0.send(Frame::Resize { rows, cols }).await.is_ok()
    }

    /// Sends signal `n` to the process.
    pub async fn signal(&self, n: i32) -> bool {
        self.0.send(Frame::Signal(n)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_starts_from_what_the_container_started_with() {
        let started = ProcessSettings {
            env: vec!["HOSTNAME=h".into(), "A=image".into()],
            cwd: "/app".into(),
            user: "app".into(),
        };
        let req = |env: &[&str], cwd: &str, user: &str, tty| ExecRequest {
            args: vec!["sh".into()],
            env: env.iter().map(|e| e.to_string()).collect(),
            cwd: cwd.into(),
            user: user.into(),
            stdin: false,
            tty,
        };
        let x = completed(req(&["A=exec"], "", "", None), &started);
        assert_eq!(x.env, ["HOSTNAME=h", "A=image", "A=exec"]);
        assert_eq!((x.cwd.as_str(), x.user.as_str()), ("/app", "app"));
        let x = completed(req(&[], "/tmp", "0", Some((24, 80))), &started);
        assert_eq!(x.env, ["TERM=xterm", "HOSTNAME=h", "A=image"]);
        assert_eq!((x.cwd.as_str(), x.user.as_str()), ("/tmp", "0"));
    }
}
