//! The viewer on port 8006: noVNC's page at `/vnc.html` (Lumier's URL, with
//! `?password=...&autoconnect=true`), a status page while the VM is being made, and
//! the websocket `/websockify` that noVNC connects to. The browser logs in with the
//! VM's VNC password, checked here; the screen comes from cabin serve's console
//! websocket (with `CABIN_TOKEN`) or straight from the VM's VNC server on the host.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cabin_vmm::vnc::{self, Offer};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;

/// How much one message from the VNC server carries at most.
const CHUNK: usize = 64 << 10;

/// Where the screen comes from, once the VM runs.
#[derive(Clone)]
pub struct Screen {
    pub vm: String,
    pub password: String,
    /// The VM's VNC port on the host.
    pub vnc_port: u16,
    /// cabin serve's address and the `Host` it is asked with.
    pub api: SocketAddr,
    pub api_host: String,
    pub token: Option<String>,
    /// The VM's storage, as Lume's API is told it.
    pub storage: String,
}

#[derive(Clone, Serialize, Default)]
pub struct Status {
    /// What is happening, for the page.
    pub stage: String,
    pub ready: bool,
    pub error: Option<String>,
}

#[derive(Default)]
pub struct Viewer {
    status: Mutex<Status>,
    screen: Mutex<Option<Screen>>,
}

impl Viewer {
    pub fn stage(&self, text: &str) {
        println!("{text}");
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.stage = text.to_string();
    }

    pub fn ready(&self, screen: Screen) {
        *self.screen.lock().unwrap_or_else(|p| p.into_inner()) = Some(screen);
        self.status.lock().unwrap_or_else(|p| p.into_inner()).ready = true;
    }

    pub fn failed(&self, why: &str) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.ready = false;
        s.error = Some(why.to_string());
        drop(s);
        *self.screen.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn screen(&self) -> Option<Screen> {
        self.screen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

pub fn router(viewer: Arc<Viewer>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/vnc.html", get(page))
        .route("/assets/{*path}", get(file))
        .route("/status", get(status))
        .route("/websockify", get(websockify))
        .with_state(viewer)
}

async fn page() -> Response {
    cabin_web::page_response("console/lumier.html")
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "no viewer page built in").into_response())
}

async fn file(Path(path): Path<String>) -> Response {
    cabin_web::file_response(&path)
        .unwrap_or_else(|| (StatusCode::NOT_FOUND, "no such file").into_response())
}

async fn status(State(v): State<Arc<Viewer>>) -> Json<Status> {
    Json(v.status.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

async fn websockify(State(v): State<Arc<Viewer>>, upgrade: WebSocketUpgrade) -> Response {
    let Some(screen) = v.screen() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the VM is not running yet: see /status",
        )
            .into_response();
    };
    upgrade
        .protocols(["binary"])
        .max_message_size(256 << 10)
        .on_upgrade(move |ws| serve(ws, screen))
}

/// The screen's source, logged in and standing before `ClientInit`.
enum Upstream {
    Vnc(TcpStream),
    Console(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
}

async fn connect(screen: &Screen) -> Result<Upstream, String> {
    match &screen.token {
        None => {
            let address = SocketAddr::new(screen.api.ip(), screen.vnc_port);
            let mut s = TcpStream::connect(address)
                .await
                .map_err(|e| format!("cannot reach the VM's VNC server at {address}: {e}"))?;
            vnc::login(&mut s, &screen.password)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Upstream::Vnc(s))
        }
        Some(token) => {
            let url = format!(
                "ws://{}/ws/vm/{}/screen?token={token}&storage={}",
                screen.api_host,
                crate::lume::encode(&screen.vm),
                crate::lume::encode(&screen.storage)
            );
            let tcp = TcpStream::connect(screen.api)
                .await
                .map_err(|e| format!("cannot reach cabin serve at {}: {e}", screen.api))?;
            let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
                .await
                .map_err(|e| format!("cabin serve's console refused the screen: {e}"))?;
            // The console greets without authentication: version, type 1, result.
            let mut got = Vec::new();
            let mut step = 0;
            while step < 3 {
                match ws.next().await {
                    Some(Ok(tungstenite::Message::Binary(b))) => got.extend_from_slice(&b),
                    Some(Ok(_)) => continue,
                    _ => return Err("cabin serve's console closed the screen".into()),
                }
                while step < 3 {
                    let need = [12, 2, 4][step];
                    if got.len() < need {
                        break;
                    }
                    let part: Vec<u8> = got.drain(..need).collect();
                    let reply: Option<Vec<u8>> = match step {
                        0 => Some(vnc::VERSION.to_vec()),
                        1 if part == [1, 1] => Some(vec![1]),
                        2 if part == [0, 0, 0, 0] => None,
                        _ => return Err("cabin serve's console spoke unexpectedly".into()),
                    };
                    if let Some(r) = reply {
                        ws.send(tungstenite::Message::Binary(r.into()))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    step += 1;
                }
            }
            Ok(Upstream::Console(Box::new(ws)))
        }
    }
}

async fn serve(mut ws: WebSocket, screen: Screen) {
    // The browser first shows it knows the VM's password.
    let Some(rest) = cabin_web::rfb::greet(&mut ws, Offer::Password(screen.password.clone())).await
    else {
        let _ = ws.send(Message::Close(None)).await;
        return;
    };
    let upstream = match connect(&screen).await {
        Ok(u) => u,
        Err(why) => {
            eprintln!("lumier: the screen: {why}");
            let _ = ws.send(Message::Close(None)).await;
            return;
        }
    };
    match upstream {
        Upstream::Vnc(tcp) => relay_tcp(ws, tcp, rest).await,
        Upstream::Console(up) => relay_ws(ws, *up, rest).await,
    }
}

async fn relay_tcp(mut ws: WebSocket, tcp: TcpStream, rest: Vec<u8>) {
    let (mut rd, mut wr) = tcp.into_split();
    if !rest.is_empty() && wr.write_all(&rest).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() { break },
            },
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(b))) => if wr.write_all(&b).await.is_err() { break },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break,
            },
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}

async fn relay_ws(
    mut ws: WebSocket,
    mut up: tokio_tungstenite::WebSocketStream<TcpStream>,
    rest: Vec<u8>,
) {
    if !rest.is_empty()
        && up
            .send(tungstenite::Message::Binary(rest.into()))
            .await
            .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            m = up.next() => match m {
                Some(Ok(tungstenite::Message::Binary(b))) => {
                    if ws.send(Message::Binary(b)).await.is_err() { break }
                }
                Some(Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_))) => {}
                _ => break,
            },
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if up.send(tungstenite::Message::Binary(b)).await.is_err() { break }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break,
            },
        }
    }
    let _ = ws.send(Message::Close(None)).await;
    let _ = up.close(None).await;
}
