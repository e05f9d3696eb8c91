//! A VM's serial console in the browser. QEMU serves it on one unix socket that takes
//! one client at a time, so the console holds one connection per VM and shares it: what
//! the guest writes goes to every open terminal, what any of them types goes to the
//! guest. A terminal starts with the end of the console log, so it opens on context
//! rather than a blank screen. `cabin vm logs` keeps reading the log QEMU writes.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use cabin_base::sync::Locked;
use cabin_machines::runner::CONSOLE_LOG;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};

use crate::state::{running_vm, Storage};
use crate::ws::{self, FromBrowser};
use crate::{Console, ConsoleError};

/// How much of the console log a new terminal is shown first.
const BACKLOG: u64 = 16 << 10;

/// The shared connections, by serial socket.
pub(crate) type Hubs = Mutex<HashMap<PathBuf, Weak<Hub>>>;

/// One VM's serial connection, alive while a terminal uses it.
pub(crate) struct Hub {
    output: broadcast::Sender<Bytes>,
    input: mpsc::Sender<Vec<u8>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn hub(console: &Console, socket: &FsPath) -> std::io::Result<Arc<Hub>> {
    if let Some(h) = console.serial.locked().get(socket).and_then(Weak::upgrade) {
        return Ok(h);
    }
    let stream = UnixStream::connect(socket).await?;
    let (mut rd, mut wr) = stream.into_split();
    let (output, _) = broadcast::channel::<Bytes>(256);
    let (input, mut typed) = mpsc::channel::<Vec<u8>>(64);
    let out = output.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 << 10];
        while let Ok(n @ 1..) = rd.read(&mut buf).await {
            let _ = out.send(Bytes::copy_from_slice(&buf[..n]));
        }
        // Nothing more will come (the VM stopped): an empty message says so.
        let _ = out.send(Bytes::new());
    });
    let writer = tokio::spawn(async move {
        while let Some(data) = typed.recv().await {
            if wr.write_all(&data).await.is_err() {
                return;
            }
        }
    });
    let h = Arc::new(Hub {
        output,
        input,
        tasks: vec![reader, writer],
    });
    let mut hubs = console.serial.locked();
    // Another terminal may have connected meanwhile: keep one connection.
    if let Some(existing) = hubs.get(socket).and_then(Weak::upgrade) {
        return Ok(existing);
    }
    hubs.retain(|_, w| w.strong_count() > 0);
    hubs.insert(socket.to_path_buf(), Arc::downgrade(&h));
    Ok(h)
}

/// The last `BACKLOG` bytes of the console log.
fn backlog(log: &FsPath) -> Vec<u8> {
    let Ok(mut f) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(BACKLOG)));
    let mut out = Vec::new();
    let _ = f.take(BACKLOG).read_to_end(&mut out);
    out
}

pub(crate) async fn serial(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    Query(storage): Query<Storage>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ConsoleError> {
    let (vm, session) = running_vm(&console, &name, &storage)?;
    let socket = session
        .serial_socket
        .ok_or_else(|| ConsoleError::NoSerial(name.clone()))?;
    let upgrade = upgrade.map_err(|_| ConsoleError::NotWebsocket)?;
    let hub = hub(&console, &socket)
        .await
        .map_err(|source| ConsoleError::Unreachable {
            name: name.clone(),
            what: "serial console",
            source,
        })?;
    let log = vm.dir.join(CONSOLE_LOG);
    Ok(upgrade
        .max_message_size(ws::MESSAGE_LIMIT)
        .on_upgrade(move |socket| attach(socket, hub, log)))
}

async fn attach(mut socket: WebSocket, hub: Arc<Hub>, log: PathBuf) {
    let mut output = hub.output.subscribe();
    let earlier = tokio::task::spawn_blocking(move || backlog(&log))
        .await
        .unwrap_or_default();
    if !earlier.is_empty() && socket.send(ws::output(&earlier)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = output.recv() => match out {
                Ok(data) if data.is_empty() => {
                    let _ = socket.send(ws::status("the VM's serial console closed")).await;
                    return;
                }
                Ok(data) => {
                    if socket.send(ws::output(&data)).await.is_err() {
                        return;
                    }
                }
                // A terminal that fell behind skips what it missed.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = socket.send(ws::status("the VM's serial console closed")).await;
                    return;
                }
            },
            msg = socket.recv() => match ws::parse(msg) {
                FromBrowser::Input(data) => {
                    if hub.input.send(data).await.is_err() {
                        return;
                    }
                }
                FromBrowser::Closed => return,
                FromBrowser::Resize { .. } | FromBrowser::Other => {}
            },
        }
    }
}
