//! A VM's screen offered to a browser: the server's side of the VNC handshake on a
//! websocket (noVNC's binary messages), for both servers of pages (the console, with no
//! authentication; the Lumier viewer, with the VM's password).

use axum::extract::ws::{Message, WebSocket};
use cabin_vmm::vnc::{Offer, ServerHandshake, Step};

/// The most a browser may send before the handshake is over.
const HANDSHAKE_LIMIT: usize = 4096;
/// How long a browser has to finish the handshake.
const HANDSHAKE_TIME: std::time::Duration = std::time::Duration::from_secs(20);

/// The server's side of a VNC handshake with a browser on `ws`, in binary messages;
/// what the browser sent past it (the start of its `ClientInit`), or None when it
/// failed or left.
pub async fn greet(ws: &mut WebSocket, offer: Offer) -> Option<Vec<u8>> {
    tokio::time::timeout(HANDSHAKE_TIME, handshake(ws, offer))
        .await
        .ok()
        .flatten()
}

async fn handshake(ws: &mut WebSocket, offer: Offer) -> Option<Vec<u8>> {
    let mut h = ServerHandshake::new(offer);
    ws.send(Message::Binary(h.greeting().into())).await.ok()?;
    let mut received = 0usize;
    loop {
        let data = match ws.recv().await? {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        };
        received += data.len();
        if received > HANDSHAKE_LIMIT {
            return None;
        }
        match h.feed(&data) {
            Step::Continue(send) => {
                if !send.is_empty() {
                    ws.send(Message::Binary(send.into())).await.ok()?;
                }
            }
            Step::Done { send, rest } => {
                ws.send(Message::Binary(send.into())).await.ok()?;
                return Some(rest);
            }
            Step::Refused { send, .. } => {
                if !send.is_empty() {
                    let _ = ws.send(Message::Binary(send.into())).await;
                }
                return None;
            }
        }
    }
}
