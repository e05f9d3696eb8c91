//! An HTTP proxy in front of a test registry that misbehaves on purpose, by rules: for
//! each request (method and path) it passes it on, answers with a status of its own,
//! cuts the response after some body bytes, flips a body byte, or stalls. Each
//! connection carries one request (`Connection: close` is added on the way up), so
//! every request passes through its rules, and every request is recorded.
//!
//! ```ignore
//! // The first 3 blob downloads pass, every later one is cut after 1000 body bytes.
//! let proxy = FaultProxy::start(&reg.addr, vec![
//!     Rule::on(&["GET"], "/blobs/sha256:", Action::Cut(1000)).after(3),
//! ]);
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forwards it and its answer unchanged.
    Pass,
    /// Answers it without asking upstream: this status, these headers, this body.
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Forwards the answer's head and its first N body bytes, then closes.
    Cut(u64),
    /// Forwards the answer's head and half its body (by Content-Length), then closes.
    CutHalf,
    /// Forwards the answer with the body byte at this offset flipped (the last byte
    /// when the body is shorter).
    Corrupt(u64),
    /// Forwards the answer's head and its first N body bytes, then holds the
    /// connection open and sends nothing more (until the proxy is dropped).
    StallAfter(u64),
    /// Sends nothing at all and holds the connection open (until the proxy is
    /// dropped).
    Hang,
}

impl Action {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Action {
        Action::Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The short name recorded for a request this action decided.
    fn label(&self) -> String {
        match self {
            Action::Pass => "pass".into(),
            Action::Reply { status, .. } => status.to_string(),
            Action::Cut(_) | Action::CutHalf => "cut".into(),
            Action::Corrupt(_) => "corrupt".into(),
            Action::StallAfter(_) => "stall".into(),
            Action::Hang => "hang".into(),
        }
    }
}

/// Which requests get an action: those of one of `methods` (all when empty) whose
/// path holds `path_part`, from the (`after`+1)th such request on, for `times` of them
/// (all when None). Each rule counts the requests it matches; the first rule whose
/// window holds the request decides, and a request no rule decides passes.
#[derive(Debug, Clone)]
pub struct Rule {
    methods: Vec<String>,
    path_part: String,
    after: usize,
    times: Option<usize>,
    action: Action,
}

impl Rule {
    pub fn on(methods: &[&str], path_part: &str, action: Action) -> Rule {
        Rule {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path_part: path_part.to_string(),
            after: 0,
            times: None,
            action,
        }
    }

    /// The first `n` matching requests pass.
    pub fn after(mut self, n: usize) -> Rule {
        self.after = n;
        self
    }

    /// Only `n` matching requests (after those skipped) get the action.
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
            && path.contains(&self.path_part)
    }
}

/// Blob uploads (the start, the chunks and the final PUT of each).
pub const UPLOADS: &str = "/blobs/uploads/";
/// Blob downloads.
pub const BLOBS: &str = "/blobs/sha256:";
pub const MANIFESTS: &str = "/manifests/";

/// One request the proxy saw, and what it did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// It asked for a byte range.
    pub range: bool,
    /// The action's label: "pass", the status answered ("503"), "cut", "corrupt",
    /// "stall", "hang".
    pub action: String,
}

pub struct FaultProxy {
    /// host:port to give clients instead of the registry's.
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

struct State {
    upstream: String,
    rules: Mutex<Vec<(Rule, usize)>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream` (host:port).
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            rules: Mutex::new(rules.into_iter().map(|r| (r, 0)).collect()),
            seen: seen.clone(),
            stop: stop.clone(),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if state.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let state = state.clone();
                std::thread::spawn(move || serve(&state, conn));
            }
        });
        FaultProxy { addr, seen, stop }
    }

    /// Every request seen so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests of `method` (any when empty) whose path holds `path_part`.
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| (method.is_empty() || s.method == method) && s.path.contains(path_part))
            .count()
    }

    /// Requests that got `action` (a label as in [`Seen::action`]).
    pub fn count_action(&self, action: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.action == action)
            .count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Reads up to the blank line ending an HTTP head, byte by byte (so that nothing of
/// the body is consumed).
fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 65536 || s.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn hold(state: &State) {
    while !state.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve(state: &State, mut client: TcpStream) {
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.split("\r\n").next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let action = {
        let mut rules = state.rules.lock().unwrap();
        let mut decided = None;
        for (rule, count) in rules.iter_mut() {
            if !rule.matches(&method, &path) {
                continue;
            }
            *count += 1;
            let in_window =
                *count > rule.after && rule.times.is_none_or(|t| *count <= rule.after + t);
            if in_window && decided.is_none() {
                decided = Some(rule.action.clone());
            }
        }
        decided.unwrap_or(Action::Pass)
    };
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path,
        range: header(&text, "range").is_some(),
        action: action.label(),
    });
    match action {
        Action::Reply {
            status,
            headers,
            body,
        } => {
            drain_body(&mut client, &text);
            let mut out = format!("HTTP/1.1 {status} Fault\r\n");
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            let _ = client.write_all(out.as_bytes());
            let _ = client.write_all(&body);
            let _ = client.shutdown(Shutdown::Both);
        }
        Action::Hang => hold(state),
        action => forward(state, client, &text, action),
    }
}

/// Reads and drops a request body the client sends (by Content-Length; a chunked one
/// until the client pauses), so that it reads the answer rather than a reset.
fn drain_body(client: &mut TcpStream, head: &str) {
    let mut buf = [0u8; 65536];
    if let Some(n) = header(head, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        let _ = std::io::copy(&mut client.take(n), &mut std::io::sink());
    } else if header(head, "transfer-encoding").is_some() {
        let _ = client.set_read_timeout(Some(Duration::from_millis(300)));
        while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
    }
}

fn forward(state: &State, mut client: TcpStream, head: &str, action: Action) {
    let mut rewritten: String = head
        .trim_end_matches("\r\n")
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let Ok(mut up) = TcpStream::connect(&state.upstream) else {
        return;
    };
    if up.write_all(rewritten.as_bytes()).is_err() {
        return;
    }
    // The request's body (uploads), as the client sends it.
    if let (Ok(mut from), Ok(mut to)) = (client.try_clone(), up.try_clone()) {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        });
    }
    let Some(rhead) = read_head(&mut up) else {
        return;
    };
    let rtext = String::from_utf8_lossy(&rhead).into_owned();
    let length = header(&rtext, "content-length").and_then(|v| v.parse::<u64>().ok());
    if client.write_all(&rhead).is_err() {
        return;
    }
    let limit = match action {
        Action::Cut(n) | Action::StallAfter(n) => Some(n),
        Action::CutHalf => Some(length.unwrap_or(0) / 2),
        _ => None,
    };
    let flip = match action {
        Action::Corrupt(at) => Some(length.map_or(at, |l| at.min(l.saturating_sub(1)))),
        _ => None,
    };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let want = match limit {
            Some(l) if sent >= l => break,
            Some(l) => buf.len().min((l - sent) as usize),
            None => buf.len(),
        };
        let n = match up.read(&mut buf[..want]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip {
            if at >= sent && at < sent + n as u64 {
                buf[(at - sent) as usize] ^= 0xff;
            }
        }
        if client.write_all(&buf[..n]).is_err() {
            return;
        }
        sent += n as u64;
    }
    if matches!(action, Action::StallAfter(_)) {
        let _ = client.flush();
        hold(state);
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
}
