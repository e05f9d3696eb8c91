//! A small QMP (QEMU Machine Protocol) client: JSON lines over a unix socket. cabin needs
//! a handful of commands, so this stays hand-written rather than generated from QEMU's
//! whole schema.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// QEMU's answers are small; a longer line means something is wrong.
const MAX_LINE: usize = 1 << 20;

pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events received while waiting for command answers, oldest first.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Reads the greeting and leaves capabilities negotiation mode.
    pub async fn handshake(stream: UnixStream) -> io::Result<Qmp> {
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = qmp.read_message().await?;
        if greeting.get("QMP").is_none() {
            return Err(io::Error::other(format!(
                "unexpected QMP greeting: {greeting}"
            )));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    async fn read_message(&mut self) -> io::Result<Value> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "QMP connection closed",
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(io::Error::other("QMP message too long"));
        }
        serde_json::from_slice(&line).map_err(|e| io::Error::other(format!("bad QMP message: {e}")))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> io::Result<Value> {
        let line = command_line(command, arguments)?;
        self.writer.write_all(&line).await?;
        self.answer(command).await
    }

    /// Runs a command that takes a file descriptor along (`getfd`, `add-fd`): the
    /// descriptor travels with the command's bytes as SCM_RIGHTS.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: BorrowedFd<'_>,
    ) -> io::Result<Value> {
        let line = command_line(command, arguments)?;
        let sock = self.writer.as_ref();
        loop {
            sock.writable().await?;
            match sock.try_io(tokio::io::Interest::WRITABLE, || {
                cabin_base::fdpass::send_with_fd(sock.as_raw_fd(), &line, fd)
            }) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        self.answer(command).await
    }

    /// Waits for an event named `name` whose `data` satisfies `matches`, looking at the
    /// events already received first.
    pub async fn wait_event(
        &mut self,
        name: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> io::Result<Value> {
        let hit = |m: &Value| m["event"] == name && matches(&m["data"]);
        if let Some(i) = self.events.iter().position(hit) {
            return Ok(self.events.remove(i));
        }
        loop {
            let m = self.read_message().await?;
            if hit(&m) {
                return Ok(m);
            }
            if m.get("event").is_some() && self.events.len() < 256 {
                self.events.push(m);
            }
        }
    }

    async fn answer(&mut self, command: &str) -> io::Result<Value> {
        loop {
            let m = self.read_message().await?;
            if let Some(ret) = m.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = m.get("error") {
                return Err(io::Error::other(format!(
                    "QMP {command}: {}",
                    err.get("desc").and_then(Value::as_str).unwrap_or("error")
                )));
            }
            if m.get("event").is_some() && self.events.len() < 256 {
                self.events.push(m);
            }
        }
    }
}

fn command_line(command: &str, arguments: Option<Value>) -> io::Result<Vec<u8>> {
    let mut msg = json!({ "execute": command });
    if let Some(args) = arguments {
        msg["arguments"] = args;
    }
    let mut line = serde_json::to_vec(&msg)?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn negotiates_and_runs_commands_skipping_events() {
        let (client, server) = UnixStream::pair().unwrap();
        let peer = tokio::spawn(async move {
            let (r, mut w) = server.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            assert!(line.contains("qmp_capabilities"));
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            line.clear();
            r.read_line(&mut line).await.unwrap();
            assert!(line.contains("query-status"));
            w.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {\"status\": \"running\"}}\n")
                .await
                .unwrap();
            line.clear();
            r.read_line(&mut line).await.unwrap();
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n")
                .await
                .unwrap();
        });
        let mut qmp = Qmp::handshake(client).await.unwrap();
        let status = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(status["status"], "running");
        assert_eq!(qmp.events.len(), 1);
        let err = qmp.execute("bogus", None).await.unwrap_err();
        assert!(err.to_string().contains("nope"));
        peer.await.unwrap();
    }
}
