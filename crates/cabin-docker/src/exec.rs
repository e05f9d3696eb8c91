//! The exec endpoints: create (remembered here, as Docker does, until started), start
//! (the connection becomes the process's stdio), resize and inspect (its exit code,
//! recorded before its stream is closed: the CLI asks the moment the stream ends).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cabin_base::random;
use cabin_containers::control::ExecRequest;
use cabin_containers::exec::{ExecEvent, ExecSession};
use cabin_containers::process::Stream;
use cabin_containers::store::Status;
use cabin_containers::ContainerError;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::app::App;
use crate::error::{json, ApiError};
use crate::execs::{Exec, State};
use crate::request::body;
use crate::stream::{Framing, Hijack, Out, Writer};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CreateBody {
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    tty: Option<bool>,
    attach_stdin: Option<bool>,
    attach_stdout: Option<bool>,
    attach_stderr: Option<bool>,
    privileged: Option<bool>,
    /// The client's terminal, `[rows, cols]`.
    console_size: Option<[u16; 2]>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct StartBody {
    detach: Option<bool>,
}

/// `POST /containers/{id}/exec`: 201 with the exec's ID; 409 when it is not running.
pub async fn create(app: &Arc<App>, id: &str, req: Request) -> Result<Response, ApiError> {
    let b: CreateBody = body(req).await?;
    let r = app.containers.get(id).await?;
    if !matches!(r.status, Status::Running { .. }) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("container {} is not running", r.id),
        ));
    }
    if b.privileged == Some(true) {
        return Err(ApiError::bad_request(
            "privileged execs are not supported: the container's VM is its own machine",
        ));
    }
    let args = b.cmd.unwrap_or_default();
    if args.is_empty() {
        return Err(ApiError::bad_request("no command given: set Cmd"));
    }
    let exec_id = random::id().map_err(ApiError::internal)?;
    app.execs.insert(
        exec_id.clone(),
        Exec {
            container: r.id,
            req: ExecRequest {
                args,
                env: b.env.unwrap_or_default(),
                cwd: b.working_dir.unwrap_or_default(),
                user: b.user.unwrap_or_default(),
                stdin: b.attach_stdin.unwrap_or(false),
                // Docker's default size until the client says (a resize follows).
                tty: (b.tty == Some(true)).then_some(match b.console_size {
                    Some([rows, cols]) if rows > 0 && cols > 0 => (rows, cols),
                    _ => (24, 80),
                }),
            },
            stdout: b.attach_stdout.unwrap_or(true),
            stderr: b.attach_stderr.unwrap_or(true),
            state: State::Created,
            serial: 0,
            resizer: None,
        },
    );
    Ok(json(StatusCode::CREATED, &json!({"Id": exec_id})))
}

/// Relays `session`'s output to `writer` (and `stdin` to it) until it ends; its exit
/// code (-1 when the relay was lost).
async fn relay(
    mut session: ExecSession,
    stdin: Option<tokio::io::ReadHalf<crate::stream::Conn>>,
    writer: Option<&Writer>,
    (want_out, want_err): (bool, bool),
) -> i32 {
    let pump = match (session.stdin(), stdin) {
        (Some(tx), Some(mut rd)) => Some(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).await.is_err() {
                            return;
                        }
                    }
                }
            }
        })),
        _ => None,
    };
    let code = loop {
        match session.next().await {
            Ok(ExecEvent::Output(o)) => {
                let stderr = o.stream == Stream::Stderr;
                if let Some(w) = writer.filter(|_| if stderr { want_err } else { want_out }) {
                    w.send(Out::of(stderr), &o.data);
                }
            }
            Ok(ExecEvent::Exited(code)) => break code,
            Err(_) => break -1,
        }
    };
    if let Some(p) = pump {
        p.abort();
    }
    code
}

/// `POST /exec/{id}/start`: the connection becomes the process's stdio (Docker's
/// frames), closed when it ends; with `Detach`, a plain 200 and it runs on.
pub async fn start(app: &Arc<App>, id: &str, mut req: Request) -> Result<Response, ApiError> {
    let exec = app.execs.get(id)?;
    if exec.state != State::Created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("exec {id} has already been started"),
        ));
    }
    let framing = Framing::of(exec.req.tty.is_some());
    let hijack = Hijack::of(&mut req, framing).ok();
    let b: StartBody = body(req).await?;
    let detach = b.detach.unwrap_or(false);
    if !detach && hijack.is_none() {
        return Err(ApiError::bad_request(
            "exec start takes over the connection: send Connection: Upgrade and Upgrade: tcp, or Detach",
        ));
    }
    let wants = (exec.stdout, exec.stderr);
    let app = app.clone();
    let id = id.to_string();
    let Some(hijack) = hijack.filter(|_| !detach) else {
        app.execs.set(&id, State::Running);
        let session = started_session(&app, &id, &exec).await?;
        tokio::spawn(async move {
            let code = match session {
                Ok(s) => relay(s, None, None, wants).await,
                Err(e) => e.exec_code().unwrap_or(126),
            };
            app.execs.set(&id, State::Exited(code));
        });
        return Ok(StatusCode::OK.into_response());
    };
    // As Docker: the process starts once the connection is taken over, so that its
    // first output cannot reach a client still reading the reply's headers (clients
    // that read them through a buffer, as docker-py does, would lose it).
    app.containers.get(&exec.container).await.and_then(|r| {
        if matches!(r.status, cabin_containers::store::Status::Running { .. }) {
            Ok(())
        } else {
            Err(ContainerError::NotRunning(r.name))
        }
    })?;
    app.execs.set(&id, State::Running);
    let reply = hijack.response();
    let fd = hijack.fd();
    tokio::spawn(async move {
        let conn = hijack.conn().await;
        // Its size may have come since (a resize before the start).
        let exec = app.execs.get(&id).unwrap_or(exec);
        let session = match started_session(&app, &id, &exec).await {
            Ok(s) => s,
            Err(e) => Err(ContainerError::Supervisor {
                name: exec.container.clone(),
                source: cabin_containers::control::CallError::Refused(e.message),
            }),
        };
        let Some((rd, wr)) = conn else {
            if let Ok(s) = session {
                let code = relay(s, None, None, wants).await;
                app.execs.set(&id, State::Exited(code));
            }
            return;
        };
        let (writer, written) = Writer::start(wr, framing, fd);
        let mut gone = writer.gone();
        let code = match session {
            Ok(s) => {
                let relayed = relay(s, exec.req.stdin.then_some(rd), Some(&writer), wants);
                // A client that left is let go of: the process runs on in the
                // container, as Docker's do, and no one waits for it here.
                tokio::select! {
                    code = relayed => code,
                    _ = gone.wait_for(|g| *g) => return,
                }
            }
            Err(e) => {
                writer.send(Out::Stderr, format!("{e}\n").as_bytes());
                e.exec_code().unwrap_or(126)
            }
        };
        // Before the stream closes: the CLI asks for the code the moment it does.
        app.execs.set(&id, State::Exited(code));
        drop(writer);
        let _ = written.await;
    });
    Ok(reply)
}

/// Starts exec `id`'s process: the session, or the start's failure as Docker reports a
/// command that could not run (its message, 126 or 127); any other failure is the
/// caller's error to tell.
async fn started_session(
    app: &App,
    id: &str,
    exec: &Exec,
) -> Result<Result<ExecSession, ContainerError>, ApiError> {
    match app.containers.exec(&exec.container, exec.req.clone()).await {
        Ok(s) => {
            let resizer = exec.req.tty.is_some().then(|| s.resizer());
            app.execs.update(id, |e| e.resizer = resizer);
            Ok(Ok(s))
        }
        Err(e @ ContainerError::ExecNotStarted { .. }) => Ok(Err(e)),
        Err(e) => {
            app.execs.set(id, State::Created);
            Err(e.into())
        }
    }
}

/// `POST /exec/{id}/resize?h=&w=`: its terminal takes the size (before it starts: it
/// starts at that size).
pub async fn resize(
    app: &Arc<App>,
    id: &str,
    q: &crate::request::Query,
) -> Result<Response, ApiError> {
    let (rows, cols) = crate::containers::size(q)?;
    let exec = app.execs.get(id)?;
    if exec.req.tty.is_none() {
        return Err(ApiError::bad_request(format!(
            "exec {id} has no terminal (it was not made with Tty)"
        )));
    }
    match exec.resizer {
        Some(r) => {
            r.resize(rows, cols).await;
        }
        None => app.execs.update(id, |e| e.req.tty = Some((rows, cols))),
    }
    Ok(StatusCode::OK.into_response())
}

/// `GET /exec/{id}/json`.
pub fn inspect(app: &Arc<App>, id: &str) -> Result<Response, ApiError> {
    let e = app.execs.get(id)?;
    let (running, code) = match e.state {
        State::Created => (false, None),
        State::Running => (true, None),
        State::Exited(c) => (false, Some(c)),
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": id,
            "ContainerID": e.container,
            "Running": running,
            "ExitCode": code,
            "Pid": 0,
            "OpenStdin": e.req.stdin,
            "OpenStdout": e.stdout,
            "OpenStderr": e.stderr,
            "CanRemove": false,
            "DetachKeys": "",
            "ProcessConfig": {
                "tty": e.req.tty.is_some(),
                "entrypoint": e.req.args.first(),
                "arguments": e.req.args.iter().skip(1).collect::<Vec<_>>(),
                "privileged": false,
                "user": e.req.user,
            },
        }),
    ))
}
