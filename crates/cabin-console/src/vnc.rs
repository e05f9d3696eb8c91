//! A VM's screen in the browser: noVNC speaks RFB in binary websocket messages; cabin
//! logs in to QEMU's VNC server with the VM's password, then offers the browser a
//! session without authentication (the console's own session is the check) and relays
//! the rest of the protocol both ways untouched. The password never leaves the host.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use cabin_vmm::vnc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::state::{running_vm, Storage};
use crate::{Console, ConsoleError};

/// How much of the VNC server's output one websocket message carries at most.
const CHUNK: usize = 64 << 10;

pub(crate) async fn screen(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(storage): Query<Storage>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ConsoleError> {
    let (_, session) = running_vm(&console, &name, &storage)?;
    let (port, password) = session
        .vnc()
        .ok_or_else(|| ConsoleError::NoScreen(name.clone()))?;
    // Logged in before the upgrade: a failure is an HTTP answer the page can show (and
    // a plain GET of this address, which the page makes to learn why a websocket
    // failed, gets it too).
    let mut server = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|source| ConsoleError::Unreachable {
            name: name.clone(),
            what: "VNC server",
            source,
        })?;
    vnc::login(&mut server, &password)
        .await
        .map_err(|source| ConsoleError::Vnc {
            name: name.clone(),
            source,
        })?;
    let upgrade = upgrade.map_err(|_| ConsoleError::NotWebsocket)?;
    Ok(upgrade
        .protocols(["binary"])
        .max_message_size(crate::ws::MESSAGE_LIMIT)
        .on_upgrade(move |socket| relay(socket, server)))
}

/// The browser's side of the handshake (version, no authentication, success), then the
/// relay.
async fn relay(mut ws: WebSocket, server: TcpStream) {
    let Some(rest) = cabin_web::rfb::greet(&mut ws, vnc::Offer::Open).await else {
        let _ = ws.send(Message::Close(None)).await;
        return;
    };
    let (mut from_server, mut to_server) = server.into_split();
    if !rest.is_empty() && to_server.write_all(&rest).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            read = from_server.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if to_server.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}
