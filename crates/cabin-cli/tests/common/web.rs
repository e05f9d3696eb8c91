//! Helpers for the tests of cabin serve's web side: the server with its console (its
//! printed URL and token), plain HTTP and websocket clients, a VM that boots busybox,
//! and the browser script `web/tests/console.mjs` (Debian's Chromium through
//! playwright-core).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// `cabin serve` with its console, killed when dropped.
pub struct Console {
    pub process: std::process::Child,
    pub port: u16,
    pub token: String,
    pub log: PathBuf,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Console {
    pub fn start(data: &Path, args: &[&str]) -> Console {
        std::fs::create_dir_all(data).unwrap();
        let log = data.join(format!("serve-{}.log", args.len()));
        let mut cmd = cabin_in(data);
        cmd.args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::options().append(true).open(&log).unwrap(),
            ));
        let mut process = spawn_for_test_process(cmd).unwrap();
        let start = Instant::now();
        let text = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("INFO: Server started port=") {
                break text;
            }
            if let Ok(Some(st)) = process.try_wait() {
                panic!("cabin serve exited ({st}): {text}");
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The Console line comes first, then Lume's.
        let console_line = text
            .lines()
            .position(|l| l.starts_with("Console: http://"))
            .expect("a Console line");
        let started = text
            .lines()
            .position(|l| l.contains("Server started"))
            .unwrap();
        assert!(console_line < started, "{text}");
        let url = text.lines().nth(console_line).unwrap()["Console: ".len()..].to_string();
        let (address, token) = url.split_once("/?token=").expect("URL with a token");
        let port: u16 = address.rsplit_once(':').unwrap().1.parse().unwrap();
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{token}"
        );
        Console {
            process,
            port,
            token: token.to_string(),
            log,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/?token={}", self.port, self.token)
    }

    pub fn cookie(&self) -> String {
        format!("cabin_console_{}={}", self.port, self.token)
    }

    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One HTTP/1.1 request with these headers; (status, headers, body).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        request(self.port, method, path, headers)
    }

    /// A request of the console's own page (its session cookie and Origin).
    pub fn api(&self, method: &str, path: &str) -> Reply {
        let (cookie, origin) = (self.cookie(), self.origin());
        self.request(method, path, &[("Cookie", &cookie), ("Origin", &origin)])
    }
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

pub fn post_json(port: u16, path: &str, body: &str) -> Reply {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    Reply {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head: head.to_string(),
        body: body.to_string(),
    }
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A websocket handshake to `path` with these headers: the socket, or the refusal's
/// status and body.
pub fn websocket(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<tungstenite::WebSocket<TcpStream>, (u16, String)> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err((
            r.status().as_u16(),
            String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("websocket {path}: {e}"),
    }
}

pub fn next_binary(ws: &mut tungstenite::WebSocket<TcpStream>) -> Vec<u8> {
    loop {
        match ws.read().unwrap() {
            tungstenite::Message::Binary(b) => return b.to_vec(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// A busybox root file system that boots as a VM: busybox's init with a shell on the
/// serial console (ttyS0) and one on the screen (tty1); booted without an address on
/// its kernel command line (a copy booted by its own boot loader), it asks for one by
/// DHCP.
pub fn bootable_busybox(dest: &Path) -> PathBuf {
    let root = busybox_copy(dest);
    for d in ["proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).unwrap();
    std::fs::write(
        root.join("etc/inittab"),
        "::sysinit:/bin/mount -t proc proc /proc\n\
         ::sysinit:/bin/sh -c 'grep -q \" ip=\" /proc/cmdline || \
         { ip link set eth0 up; udhcpc -i eth0 -n -q -s /bin/true -t 10 -T 2; }'\n\
         ::sysinit:/bin/echo console-test-vm ready\n\
         ::respawn:-/bin/sh\n\
         tty1::respawn:-/bin/sh\n",
    )
    .unwrap();
    root
}

/// Runs the browser script `web/tests/console.mjs` with `args`; its JSON result.
pub fn browser(args: &[&str]) -> serde_json::Value {
    let o = Command::new("node")
        .arg(workspace_root().join("web/tests/console.mjs"))
        .args(args)
        .current_dir(workspace_root().join("web"))
        .output()
        .expect("node runs (scripts/setup.sh installs Node.js and the web packages)");
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{e}: {out}\n{}", String::from_utf8_lossy(&o.stderr)));
    assert!(o.status.success() && v["error"].is_null(), "{v:#}");
    assert_eq!(v["problems"], serde_json::json!([]), "{v:#}");
    v
}

pub fn test_output_dir() -> PathBuf {
    let d = workspace_root().join("target/test-output");
    std::fs::create_dir_all(&d).unwrap();
    d
}
