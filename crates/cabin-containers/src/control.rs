//! The control protocol between a detached container's supervisor and its clients (the
//! CLI, servers), all of it in this one module.
//!
//! A client connects to the supervisor's `control.sock` (0600, in the container's 0700
//! directory) and sends one [`Request`] as a JSON line. Simple requests get one
//! [`Reply`] line back. `Exec`, `Attach`, `CopyOut` and `CopyIn` turn the connection into
//! a stream of [`Frame`]s both ways: a kind byte ([`FrameKind`]), a big-endian u32
//! length, the payload (at most [`MAX_FRAME`] bytes). A supervisor that refuses a
//! streaming request (say, while the container restarts) answers with a `Reply` line
//! instead, which [`read_frame`] returns as [`Incoming::Refused`]: a JSON line starts
//! with `{`, which is no frame kind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Bigger frames are refused: output comes in chunks far below this.
pub const MAX_FRAME: u32 = 1 << 20;
/// A request or reply line longer than this is not one of ours.
pub const MAX_LINE: usize = 4096;

/// The control socket of the container whose directory is `container_dir`.
pub fn socket(container_dir: &Path) -> PathBuf {
    container_dir.join("control.sock")
}

/// What a client asks a supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Send this signal to the container's process.
    Signal(i32),
    /// SIGTERM now, SIGKILL after this many seconds, then the VM itself.
    Stop(u64),
    /// The container's resource use (answered with [`Reply::Stats`]).
    Stats,
    /// The container's processes (answered with [`Reply::Processes`]).
    Top,
    /// Run another process in the container; frames follow.
    Exec(ExecRequest),
    /// `cabin cp` out of the container: the archive comes back in frames.
    CopyOut(CopyOutRequest),
    /// `cabin cp` into the container: the archive goes in frames.
    CopyIn(CopyInRequest),
    /// The process's output from the start of its run, its stdin: frames.
    Attach(AttachRequest),
    /// The new size of the process's terminal (a container made with one).
    Resize { rows: u16, cols: u16 },
    /// Stop the whole VM where it is (containerd's and docker's pause): its QEMU
    /// process is stopped, so no vCPU, timer or device of it advances.
    Pause,
    /// Let a paused VM go on.
    Unpause,
    /// Change the running container's limits in its cgroup.
    Update(Limits),
}

/// New limits for a container (docker update, containerd's Update): one left None
/// stays as it is; Some(0) removes it. Its VM keeps its size: a container cannot be
/// given more memory or CPUs than its VM has.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub stdin: bool,
    /// A terminal for the process, of this many rows and columns; resized with
    /// [`Frame::Resize`].
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOutRequest {
    /// Absolute, in the container.
    pub path: String,
    pub follow_link: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyInRequest {
    /// Absolute, in the container.
    pub path: String,
    /// The archive's one top-level directory's contents go into `path`.
    pub contents_only: bool,
    /// The archive (anyone's) is extracted as it is into the directory `path`.
    pub extract: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// Send the client's stdin to the process.
    pub stdin: bool,
}

/// A container's resource use, from its cgroup in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub memory_bytes: u64,
    /// 0: no limit.
    pub memory_limit_bytes: u64,
    pub cpu_usage_micros: u64,
    pub pids: u64,
    /// When the guest sampled these (its boot clock).
    pub sampled_boottime_nanos: u64,
    /// What the container's VM costs the host: its QEMU's proportional set size (a
    /// snapshot template's shared pages counted in part); 0 when unknown.
    #[serde(default)]
    pub vm_host_memory_bytes: u64,
}

impl From<cabin_proto::v1::ContainerStats> for Stats {
    fn from(st: cabin_proto::v1::ContainerStats) -> Stats {
        Stats {
            memory_bytes: st.memory_bytes,
            memory_limit_bytes: st.memory_limit_bytes,
            cpu_usage_micros: st.cpu_usage_micros,
            pids: st.pids,
            sampled_boottime_nanos: st.sampled_boottime_nanos,
            vm_host_memory_bytes: 0,
        }
    }
}

/// One process of a container (`top`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Its terminal ("pts/0"), empty without one.
    pub tty: String,
    /// CPU time used, microseconds.
    pub cpu_micros: u64,
    /// When it started, Unix seconds (from the guest's clocks).
    pub started_unix: u64,
    pub command: String,
}

impl Process {
    /// The processes a guest listed, with their start times turned from the guest's
    /// boot clock into the host's wall clock (`now_nanos`). Times the guest got wrong
    /// (a start after its own sampling) saturate instead of wrapping.
    pub fn from_guest(list: cabin_proto::v1::ProcessList, now_nanos: u64) -> Vec<Process> {
        let sampled = list.sampled_boottime_nanos;
        list.processes
            .into_iter()
            .map(|p| Process {
                pid: p.pid,
                ppid: p.ppid,
                uid: p.uid,
                tty: p.tty,
                cpu_micros: p.cpu_micros,
                started_unix: now_nanos
                    .saturating_sub(sampled.saturating_sub(p.start_boottime_nanos))
                    / 1_000_000_000,
                command: p.command,
            })
            .collect()
    }
}

impl Process {
    /// The column titles of [`Process::columns`], as `ps -ef` (and `docker top`) has them.
    pub const TITLES: [&'static str; 8] =
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"];

    /// The process as a row of `ps -ef` (times in UTC).
    pub fn columns(&self) -> Vec<String> {
        let cpu = self.cpu_micros / 1_000_000;
        let day = self.started_unix % 86_400;
        vec![
            match self.uid {
                0 => "root".to_string(),
                n => n.to_string(),
            },
            self.pid.to_string(),
            self.ppid.to_string(),
            "0".into(),
            format!("{:02}:{:02}", day / 3600, day % 3600 / 60),
            if self.tty.is_empty() {
                "?".into()
            } else {
                self.tty.clone()
            },
            format!("{:02}:{:02}:{:02}", cpu / 3600, cpu % 3600 / 60, cpu % 60),
            self.command.clone(),
        ]
    }
}

impl Stats {
    /// CPU use between `earlier` and this sample, 1.0 being one vCPU busy all along.
    pub fn cpu_since(&self, earlier: &Stats) -> f64 {
        let dt = self
            .sampled_boottime_nanos
            .saturating_sub(earlier.sampled_boottime_nanos)
            .max(1) as f64;
        self.cpu_usage_micros
            .saturating_sub(earlier.cpu_usage_micros) as f64
            * 1000.0
            / dt
    }
}

/// The supervisor's answer to a simple request. On the wire: `{"ok": true}`,
/// `{"ok": true, "stats": {...}}` or `{"error": "..."}`; a stats answer missing a field
/// is an error, never zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reply {
    Failed { error: String },
    Stats { ok: bool, stats: Stats },
    Processes { ok: bool, processes: Vec<Process> },
    Done { ok: bool },
}

impl Reply {
    pub fn done() -> Reply {
        Reply::Done { ok: true }
    }

    pub fn failed(message: impl Into<String>) -> Reply {
        Reply::Failed {
            error: message.into(),
        }
    }
}

/// The kind byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client to supervisor: stdin bytes, and their end.
    Stdin = 0,
    StdinEof = 5,
    /// Supervisor to client: the process's output.
    Stdout = 1,
    Stderr = 2,
    /// The process's exit code (i32).
    Exit = 3,
    /// The process did not start: its exit code (i32), then the message.
    Failed = 4,
    /// The process runs: the client may send stdin now.
    Started = 6,
    /// Client to supervisor: the terminal's new size, rows then columns (u16 each).
    Resize = 7,
    /// Client to supervisor: a signal for the exec'd process (i32).
    Signal = 10,
    /// Supervisor to an attached client: where in the log this run's output starts and
    /// where the live output takes over (u64 each).
    Logged = 8,
    /// A piece of a `cabin cp` archive, either way.
    Archive = 16,
    /// Client to supervisor: the whole archive has been sent.
    ArchiveEnd = 17,
    /// Supervisor to client: the copy is complete.
    Done = 18,
    /// Supervisor to client: the copy failed (a message).
    Error = 19,
}

impl FrameKind {
    const ALL: [FrameKind; 14] = [
        FrameKind::Stdin,
        FrameKind::StdinEof,
        FrameKind::Stdout,
        FrameKind::Stderr,
        FrameKind::Exit,
        FrameKind::Failed,
        FrameKind::Started,
        FrameKind::Resize,
        FrameKind::Signal,
        FrameKind::Logged,
        FrameKind::Archive,
        FrameKind::ArchiveEnd,
        FrameKind::Done,
        FrameKind::Error,
    ];
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;
    fn try_from(b: u8) -> Result<FrameKind, FrameError> {
        FrameKind::ALL
            .into_iter()
            .find(|k| *k as u8 == b)
            .ok_or(FrameError::UnknownKind(b))
    }
}

/// One frame, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    StdinEof,
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(i32),
    Failed { code: i32, message: String },
    Started,
    Resize { rows: u16, cols: u16 },
    Signal(i32),
    Logged { run_start: u64, live_from: u64 },
    Archive(Vec<u8>),
    ArchiveEnd,
    Done,
    Error(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("an unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("a frame of {0} bytes, more than the protocol allows")]
    TooLarge(u32),
    #[error("a {kind:?} frame of {len} bytes is malformed")]
    Malformed { kind: FrameKind, len: usize },
    #[error("the connection ended inside a frame")]
    Truncated,
    #[error("an unreadable answer from the supervisor: {0}")]
    BadReply(String),
    #[error(transparent)]
    Io(std::io::Error),
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Stdin(_) => FrameKind::Stdin,
            Frame::StdinEof => FrameKind::StdinEof,
            Frame::Stdout(_) => FrameKind::Stdout,
            Frame::Stderr(_) => FrameKind::Stderr,
            Frame::Exit(_) => FrameKind::Exit,
            Frame::Failed { .. } => FrameKind::Failed,
            Frame::Started => FrameKind::Started,
            Frame::Resize { .. } => FrameKind::Resize,
            Frame::Signal(_) => FrameKind::Signal,
            Frame::Logged { .. } => FrameKind::Logged,
            Frame::Archive(_) => FrameKind::Archive,
            Frame::ArchiveEnd => FrameKind::ArchiveEnd,
            Frame::Done => FrameKind::Done,
            Frame::Error(_) => FrameKind::Error,
        }
    }

    /// The payload's bytes.
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) | Frame::Archive(d) => d.clone(),
            Frame::StdinEof | Frame::Started | Frame::ArchiveEnd | Frame::Done => Vec::new(),
            Frame::Exit(code) | Frame::Signal(code) => code.to_be_bytes().to_vec(),
            Frame::Failed { code, message } => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(message.as_bytes());
                p
            }
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                p
            }
            Frame::Logged {
                run_start,
                live_from,
            } => {
                let mut p = run_start.to_be_bytes().to_vec();
                p.extend_from_slice(&live_from.to_be_bytes());
                p
            }
            Frame::Error(m) => m.as_bytes().to_vec(),
        }
    }

    /// Decodes a payload of `kind`.
    pub fn decode(kind: FrameKind, payload: Vec<u8>) -> Result<Frame, FrameError> {
        let malformed = |p: &[u8]| FrameError::Malformed { kind, len: p.len() };
        let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        Ok(match kind {
            FrameKind::Stdin => Frame::Stdin(payload),
            FrameKind::Stdout => Frame::Stdout(payload),
            FrameKind::Stderr => Frame::Stderr(payload),
            FrameKind::Archive => Frame::Archive(payload),
            FrameKind::StdinEof => Frame::StdinEof,
            FrameKind::Started => Frame::Started,
            FrameKind::ArchiveEnd => Frame::ArchiveEnd,
            FrameKind::Done => Frame::Done,
            FrameKind::Error => Frame::Error(text(&payload)),
            FrameKind::Exit | FrameKind::Signal => {
                let b: [u8; 4] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| malformed(&payload))?;
                let n = i32::from_be_bytes(b);
                if kind == FrameKind::Exit {
                    Frame::Exit(n)
                } else {
                    Frame::Signal(n)
                }
            }
            FrameKind::Failed => {
                let Some((code, message)) = payload.split_first_chunk::<4>() else {
                    return Err(malformed(&payload));
                };
                Frame::Failed {
                    code: i32::from_be_bytes(*code),
                    message: text(message),
                }
            }
            FrameKind::Resize => {
                let b: [u8; 4] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| malformed(&payload))?;
                Frame::Resize {
                    rows: u16::from_be_bytes([b[0], b[1]]),
                    cols: u16::from_be_bytes([b[2], b[3]]),
                }
            }
            FrameKind::Logged => {
                let b: [u8; 16] = payload
                    .as_slice()
                    .try_into()
                    .map_err(|_| malformed(&payload))?;
                let (a, z) = b.split_at(8);
                Frame::Logged {
                    run_start: u64::from_be_bytes(a.try_into().expect("8 bytes")),
                    live_from: u64::from_be_bytes(z.try_into().expect("8 bytes")),
                }
            }
        })
    }
}

/// Writes one frame.
pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), frame: &Frame) -> std::io::Result<()> {
    let payload = frame.payload();
    let mut head = [0u8; 5];
    head[0] = frame.kind() as u8;
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(&payload).await?;
    w.flush().await
}

/// What arrives on a streaming connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Frame(Frame),
    /// The supervisor answered with an error line instead of frames.
    Refused(String),
    /// The connection ended (between frames).
    End,
}

/// Reads the next frame (see [`Incoming`]).
pub async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Result<Incoming, FrameError> {
    let mut kind = [0u8; 1];
    match r.read_exact(&mut kind).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(Incoming::End),
        Err(e) => return Err(FrameError::Io(e)),
    }
    if kind[0] == b'{' {
        let mut line = vec![b'{'];
        let mut rest = Vec::new();
        BufReader::new(r.take(MAX_LINE as u64))
            .read_until(b'\n', &mut rest)
            .await
            .map_err(FrameError::Io)?;
        line.extend(rest);
        return match serde_json::from_slice::<Reply>(&line) {
            Ok(Reply::Failed { error }) => Ok(Incoming::Refused(error)),
            Ok(other) => Err(FrameError::BadReply(format!(
                "{other:?} where frames were due"
            ))),
            Err(e) => Err(FrameError::BadReply(e.to_string())),
        };
    }
    let kind = FrameKind::try_from(kind[0])?;
    let mut len = [0u8; 4];
    read_exactly(r, &mut len).await?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut payload = vec![0u8; len as usize];
    read_exactly(r, &mut payload).await?;
    Frame::decode(kind, payload).map(Incoming::Frame)
}

async fn read_exactly(
    r: &mut (impl AsyncReadExt + Unpin),
    buf: &mut [u8],
) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Io(e)),
    }
}

/// Writes `req` as a request line.
pub async fn write_request(
    w: &mut (impl AsyncWrite + Unpin),
    req: &Request,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Reads the request line a client sent, byte by byte and never past its newline: what
/// follows (a copy's archive frames) belongs to whoever handles the request. None for a
/// line that is missing, too long, late (5 s) or not a request.
pub async fn read_request(conn: &mut UnixStream) -> Option<Request> {
    let mut line = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while line.len() < MAX_LINE {
            match conn.read(&mut byte).await {
                Ok(1) if byte[0] == b'\n' => return true,
                Ok(1) => line.push(byte[0]),
                _ => return false,
            }
        }
        false
    };
    let complete = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or(false);
    complete
        .then(|| serde_json::from_slice::<Request>(&line).ok())
        .flatten()
}

/// Writes `reply` as a line.
pub async fn write_reply(w: &mut (impl AsyncWrite + Unpin), reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Connects to the supervisor of the container in `container_dir` and sends `req`; the
/// connection is then the request's (frames, or one reply).
pub async fn connect(container_dir: &Path, req: &Request) -> std::io::Result<UnixStream> {
    let mut conn = UnixStream::connect(socket(container_dir)).await?;
    write_request(&mut conn, req).await?;
    Ok(conn)
}

/// Sends a simple request and reads the reply; an error reply is an error.
pub async fn call(container_dir: &Path, req: &Request) -> Result<Reply, CallError> {
    let conn = connect(container_dir, req).await.map_err(CallError::Io)?;
    let mut line = Vec::new();
    BufReader::new(conn.take(MAX_LINE as u64))
        .read_until(b'\n', &mut line)
        .await
        .map_err(CallError::Io)?;
    match serde_json::from_slice::<Reply>(&line) {
        Ok(Reply::Failed { error }) => Err(CallError::Refused(error)),
        Ok(r) => Ok(r),
        Err(e) => Err(CallError::BadReply(e.to_string())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Refused(String),
    #[error("bad answer from the supervisor: {0}")]
    BadReply(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Stdin(b"in".to_vec()),
            Frame::StdinEof,
            Frame::Stdout(b"out".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-3),
            Frame::Failed {
                code: 127,
                message: "not found".into(),
            },
            Frame::Started,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Signal(15),
            Frame::Logged {
                run_start: 7,
                live_from: u64::MAX,
            },
            Frame::Archive(vec![0; 1000]),
            Frame::ArchiveEnd,
            Frame::Done,
            Frame::Error("no such file".into()),
        ]
    }

    #[test]
    fn every_kind_byte_names_one_kind() {
        for k in FrameKind::ALL {
            assert_eq!(FrameKind::try_from(k as u8).unwrap(), k);
        }
        let known = (0..=255u8)
            .filter(|b| FrameKind::try_from(*b).is_ok())
            .count();
        assert_eq!(known, FrameKind::ALL.len());
    }

    #[tokio::test]
    async fn every_frame_round_trips() {
        let mut wire = Vec::new();
        for f in all_frames() {
            write_frame(&mut wire, &f).await.unwrap();
        }
        let mut r = wire.as_slice();
        for f in all_frames() {
            assert_eq!(read_frame(&mut r).await.unwrap(), Incoming::Frame(f));
        }
        assert_eq!(read_frame(&mut r).await.unwrap(), Incoming::End);
    }

    #[tokio::test]
    async fn truncated_oversized_unknown_and_malformed_frames_are_errors() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &Frame::Stdout(b"hello".to_vec()))
            .await
            .unwrap();
        for cut in [1, 3, 5, 7] {
            let mut r = &wire[..cut];
            assert!(
                matches!(read_frame(&mut r).await, Err(FrameError::Truncated)),
                "cut at {cut}"
            );
        }
        let mut big = vec![FrameKind::Stdout as u8];
        big.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        assert!(matches!(
            read_frame(&mut big.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
        let unknown = [9u8, 0, 0, 0, 0];
        assert!(matches!(
            read_frame(&mut &unknown[..]).await,
            Err(FrameError::UnknownKind(9))
        ));
        for (kind, len) in [
            (FrameKind::Exit, 3),
            (FrameKind::Signal, 5),
            (FrameKind::Resize, 5),
            (FrameKind::Logged, 8),
            (FrameKind::Failed, 2),
        ] {
            let mut w = vec![kind as u8];
            w.extend_from_slice(&(len as u32).to_be_bytes());
            w.extend(vec![0u8; len]);
            assert!(
                matches!(
                    read_frame(&mut w.as_slice()).await,
                    Err(FrameError::Malformed { .. })
                ),
                "{kind:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_refusal_line_where_frames_were_due_says_why() {
        let mut wire = Vec::new();
        write_reply(&mut wire, &Reply::failed("the container is restarting"))
            .await
            .unwrap();
        assert_eq!(
            read_frame(&mut wire.as_slice()).await.unwrap(),
            Incoming::Refused("the container is restarting".into())
        );
        let mut ok = Vec::new();
        write_reply(&mut ok, &Reply::done()).await.unwrap();
        assert!(matches!(
            read_frame(&mut ok.as_slice()).await,
            Err(FrameError::BadReply(_))
        ));
    }

    #[test]
    fn a_process_reads_as_a_row_of_ps_ef() {
        let p = Process {
            pid: 7,
            ppid: 1,
            uid: 0,
            tty: String::new(),
            cpu_micros: 3_723_000_000,
            started_unix: 86_400 * 3 + 13 * 3600 + 5 * 60 + 9,
            command: "sleep 100".into(),
        };
        assert_eq!(
            p.columns(),
            ["root", "7", "1", "0", "13:05", "?", "01:02:03", "sleep 100"]
        );
        let q = Process {
            uid: 1000,
            tty: "pts/0".into(),
            ..p
        };
        assert_eq!(q.columns()[0], "1000");
        assert_eq!(q.columns()[5], "pts/0");
    }

    #[test]
    fn requests_and_replies_keep_their_wire_shape() {
        let j = |r: &Request| serde_json::to_string(r).unwrap();
        assert_eq!(j(&Request::Signal(15)), r#"{"signal":15}"#);
        assert_eq!(j(&Request::Stop(10)), r#"{"stop":10}"#);
        assert_eq!(j(&Request::Stats), r#""stats""#);
        assert_eq!(j(&Request::Top), r#""top""#);
        assert_eq!(
            j(&Request::Update(Limits {
                memory_bytes: Some(64 << 20),
                ..Default::default()
            })),
            r#"{"update":{"memory_bytes":67108864}}"#
        );
        assert_eq!(
            j(&Request::Resize {
                rows: 30,
                cols: 100
            }),
            r#"{"resize":{"rows":30,"cols":100}}"#
        );
        assert_eq!(
            j(&Request::Attach(AttachRequest { stdin: true })),
            r#"{"attach":{"stdin":true}}"#
        );
        let r = |s: &str| serde_json::from_str::<Reply>(s);
        assert_eq!(r(r#"{"ok":true}"#).unwrap(), Reply::done());
        assert_eq!(r(r#"{"error":"boom"}"#).unwrap(), Reply::failed("boom"));
        let stats = r#"{"ok":true,"stats":{"memory_bytes":1,"memory_limit_bytes":2,"cpu_usage_micros":3,"pids":4,"sampled_boottime_nanos":5}}"#;
        assert!(matches!(r(stats).unwrap(), Reply::Stats { stats, .. } if stats.pids == 4));
        // A stats answer that lost a field is no stats answer (never zeros).
        let drifted = r#"{"ok":true,"stats":{"memory_bytes":1}}"#;
        assert!(!matches!(r(drifted), Ok(Reply::Stats { .. })));
        let top = r#"{"ok":true,"processes":[{"pid":1,"ppid":0,"uid":0,"tty":"","cpu_micros":5,"started_unix":7,"command":"sh"}]}"#;
        assert!(
            matches!(r(top).unwrap(), Reply::Processes { processes, .. } if processes[0].command == "sh")
        );
        assert_eq!(
            serde_json::to_string(&Reply::done()).unwrap(),
            r#"{"ok":true}"#
        );
    }

    #[test]
    fn cpu_use_is_measured_between_two_samples() {
        let s = |cpu, at| Stats {
            memory_bytes: 0,
            memory_limit_bytes: 0,
            cpu_usage_micros: cpu,
            pids: 1,
            sampled_boottime_nanos: at,
            vm_host_memory_bytes: 0,
        };
        let busy = s(1_500_000, 2_000_000_000).cpu_since(&s(500_000, 1_000_000_000));
        assert!((busy - 1.0).abs() < 1e-9, "{busy}");
        assert_eq!(s(0, 5).cpu_since(&s(10, 5)), 0.0);
    }
}
