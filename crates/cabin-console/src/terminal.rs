//! A container in the browser: a shell in it (exec with a terminal, resized with the
//! window) and its logs, followed. Both speak the console's terminal protocol (`ws`).

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use cabin_containers::containers::LogOptions;
use cabin_containers::control::ExecRequest;
use cabin_containers::exec::{ExecEvent, ExecSession};
use cabin_containers::ContainerError;
use serde::Deserialize;

use crate::ws::{self, FromBrowser};
use crate::{Console, ConsoleError};

/// How many earlier log entries a logs view starts with.
const LOG_TAIL: usize = 500;

#[derive(Deserialize)]
pub(crate) struct Size {
    rows: Option<u16>,
    cols: Option<u16>,
}

pub(crate) async fn shell(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(size): Query<Size>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ConsoleError> {
    let rows = size.rows.filter(|r| (1..=1000).contains(r)).unwrap_or(24);
    let cols = size.cols.filter(|c| (1..=1000).contains(c)).unwrap_or(80);
    let record = console.containers.get(&name).await?;
    if !matches!(
        record.status,
        cabin_containers::store::Status::Running { .. }
    ) {
        return Err(ContainerError::NotRunning(record.name).into());
    }
    let upgrade = upgrade.map_err(|_| ConsoleError::NotWebsocket)?;
    // Started before the upgrade: a missing shell is an HTTP answer the page shows.
    let session = console
        .containers
        .exec(
            &name,
            ExecRequest {
                args: vec!["/bin/sh".into()],
                env: vec!["TERM=xterm-256color".into()],
                cwd: String::new(),
                user: String::new(),
                stdin: true,
                tty: Some((rows, cols)),
            },
        )
        .await?;
    Ok(upgrade
        .max_message_size(ws::MESSAGE_LIMIT)
        .on_upgrade(move |socket| run_shell(socket, session)))
}

async fn run_shell(mut socket: WebSocket, mut session: ExecSession) {
    let Some(stdin) = session.stdin() else {
        return;
    };
    let resizer = session.resizer();
    loop {
        tokio::select! {
            event = session.next() => match event {
                Ok(ExecEvent::Output(out)) => {
                    if socket.send(ws::output(&out.data)).await.is_err() {
                        break;
                    }
                }
                Ok(ExecEvent::Exited(code)) => {
                    let _ = socket.send(ws::status(&format!("the shell exited with code {code}"))).await;
                    break;
                }
                Err(e) => {
                    let _ = socket.send(ws::status(&format!("the shell was lost: {e}"))).await;
                    break;
                }
            },
            msg = socket.recv() => match ws::parse(msg) {
                FromBrowser::Input(data) => {
                    if stdin.send(data).await.is_err() {
                        break;
                    }
                }
                FromBrowser::Resize { rows, cols } => {
                    resizer.resize(rows, cols).await;
                }
                // The page closed: the shell's input ends, and with it (for a shell)
                // the shell.
                FromBrowser::Closed => break,
                FromBrowser::Other => {}
            },
        }
    }
}

pub(crate) async fn logs(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ConsoleError> {
    let mut logs = console
        .containers
        .logs(
            &name,
            LogOptions {
                follow: true,
                tail: Some(LOG_TAIL),
                since_unix_nanos: None,
            },
        )
        .await?;
    let upgrade = upgrade.map_err(|_| ConsoleError::NotWebsocket)?;
    Ok(upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        loop {
            tokio::select! {
                next = logs.next() => match next {
                    Ok(Some(entries)) => {
                        let text: Vec<u8> = entries.iter().flat_map(|e| e.log.bytes()).collect();
                        if socket.send(ws::output(&text)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        let _ = socket.send(ws::status("the container stopped")).await;
                        return;
                    }
                    Err(e) => {
                        let _ = socket.send(ws::status(&format!("reading the logs: {e}"))).await;
                        return;
                    }
                },
                msg = socket.recv() => {
                    if ws::parse(msg) == FromBrowser::Closed {
                        return;
                    }
                }
            }
        }
    }))
}
