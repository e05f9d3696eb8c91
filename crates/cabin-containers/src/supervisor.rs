//! The per-container supervisor: the one process that owns a detached container's VM.
//! It boots the VM, writes the container's output to its log, answers `stop` and `kill`
//! on a control socket, and records the exit status. Nothing else is long-lived: when
//! it dies (even by SIGKILL) its QEMU dies with it (parent-death signal), its lock is
//! released, and the next `cabin ps` records the container as exited, with the reason.
//!
//! Control socket (`control.sock`, 0600 in the container's 0700 directory): one JSON
//! line per connection, `{"signal": N}` or `{"stop": SECONDS}`, answered by `{"ok":
//! true}` or `{"error": "..."}`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cabin_proto::v1::{
    output_chunk, ContainerRef, ProcessRef, ResizeTtyRequest, SignalRequest, StartProcessRequest,
    TtySize,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;

use crate::log::LogWriter;
use crate::store::{now_unix, Status, Store};
use crate::vm::{exit_code, memory_limit_note, ProcessSettings};
use crate::{agent, ContainerConfig, ContainerVm, Paths};

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Signal(i32),
    /// SIGTERM now, SIGKILL after this many seconds.
    Stop(u64),
    /// The container's resource use (answered with `"stats": {...}`).
    Stats,
    /// Run another process in the container; the connection then carries frames
    /// (see [`frame`]).
    Exec(ExecRequest),
    /// `cabin cp` out of and into the container; frames too (see [`crate::copy`]).
    CopyOut(crate::copy::CopyOutRequest),
    CopyIn(crate::copy::CopyInRequest),
    /// `cabin start -a`: the process's output and stdin; frames (see [`crate::attach`]).
    Attach(crate::attach::AttachRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub stdin: bool,
    /// A terminal for the process, of this many rows and columns (cabin exec -t);
    /// resized with [`frame::RESIZE`].
    #[serde(default)]
    pub tty: Option<(u16, u16)>,
}

impl ExecRequest {
    /// Fills in what the exec leaves to the container, as docker does: the variables
    /// its process started with (and TERM with a terminal) under the exec's own, its
    /// working directory and user unless the exec names others.
    fn completed(mut self, started: &ProcessSettings) -> ExecRequest {
        let mut env = Vec::with_capacity(started.env.len() + self.env.len() + 1);
        if self.tty.is_some() {
            env.push("TERM=xterm".to_string());
        }
        env.extend(started.env.iter().cloned());
        env.append(&mut self.env);
        self.env = env;
        if self.cwd.is_empty() {
            self.cwd = started.cwd.clone();
        }
        if self.user.is_empty() {
            self.user = started.user.clone();
        }
        self
    }
}

/// Frames on an exec connection: a kind byte, a big-endian u32 length, the payload.
pub mod frame {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Client to supervisor: stdin bytes, and its end.
    pub const STDIN: u8 = 0;
    pub const STDIN_EOF: u8 = 5;
    /// Supervisor to client.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// The process's exit code (i32, big-endian).
    pub const EXIT: u8 = 3;
    /// The process did not start: its exit code (i32) then the message.
    pub const FAILED: u8 = 4;
    /// The process runs: the client may send stdin now.
    pub const STARTED: u8 = 6;
    /// Client to supervisor: the terminal's new size, rows then columns (u16 each).
    pub const RESIZE: u8 = 7;
    /// Supervisor to an attached client: where in the log this run's output starts and
    /// where the live output takes over (u64 each).
    pub const LOGGED: u8 = 8;
    /// Bigger frames are refused: output comes in chunks far below this.
    pub const MAX: u32 = 1 << 20;

    pub async fn write(
        w: &mut (impl AsyncWriteExt + Unpin),
        kind: u8,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut head = [0u8; 5];
        head[0] = kind;
        head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        w.write_all(&head).await?;
        w.write_all(payload).await?;
        w.flush().await
    }

    /// The next frame, or None at the end of the stream.
    pub async fn read(
        r: &mut (impl AsyncReadExt + Unpin),
    ) -> std::io::Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 5];
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX {
            return Err(std::io::Error::other("frame too large"));
        }
        let mut payload = vec![0u8; len as usize];
        r.read_exact(&mut payload).await?;
        Ok(Some((head[0], payload)))
    }
}

pub fn control_socket(container_dir: &Path) -> PathBuf {
    container_dir.join("control.sock")
}

/// Sends one control request to a container's supervisor; returns its answer.
pub async fn send(container_dir: &Path, req: &Control) -> std::io::Result<serde_json::Value> {
    let mut s = UnixStream::connect(control_socket(container_dir)).await?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(s.take(4096)).read_line(&mut answer).await?;
    let v: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::other(format!("bad answer from the supervisor: {e}")))?;
    match v.get("error").and_then(|e| e.as_str()) {
        Some(e) => Err(std::io::Error::other(e.to_string())),
        None => Ok(v),
    }
}

/// How long a guest gets to act on SIGKILL before its VM is killed instead.
const KILL_GRACE: Duration = Duration::from_secs(5);
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(3);

/// When a container's process ends, whether the supervisor starts it again (docker's
/// `--restart`). A container stopped with `cabin stop` is never restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    No,
    /// After a non-zero exit, at most this many times (None: without limit).
    OnFailure(Option<u32>),
    Always,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid restart policy {s:?}: use no, on-failure[:N] or always");
        match s.split_once(':') {
            None => match s {
                "no" => Ok(RestartPolicy::No),
                "on-failure" => Ok(RestartPolicy::OnFailure(None)),
                "always" | "unless-stopped" => Ok(RestartPolicy::Always),
                _ => Err(bad()),
            },
            Some(("on-failure", n)) => n
                .parse()
                .map(|n| RestartPolicy::OnFailure(Some(n)))
                .map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }
}

impl RestartPolicy {
    pub fn wants_restart(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure(max) => code != 0 && max.is_none_or(|m| restarts < m),
        }
    }
}

/// How one run of the container ended.
struct Ended {
    code: i32,
    reason: Option<String>,
    /// Ended by `cabin stop`: no restart.
    stopped: bool,
    /// The VM never started (a boot or set-up error): restarting would fail the same way.
    failed_start: bool,
}

/// Runs container `id` to its end, restarting it as `policy` says. Returns an error only
/// when it could not take charge of the container at all (another supervisor has it,
/// the store is broken).
pub async fn supervise(
    paths: &Paths,
    id: &str,
    cfg: &ContainerConfig,
    policy: RestartPolicy,
) -> Result<(), String> {
    let store = Store::open(paths).map_err(|e| e.to_string())?;
    // The previous supervisor of a container started again right after it ended may
    // still be on its way out (its record says exited before its process is gone):
    // give it a moment rather than failing the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let lock = loop {
        if let Some(l) = store.lock_supervisor(id).map_err(|e| e.to_string())? {
            break l;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("container {id} already has a supervisor"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut record = store.load(id).map_err(|e| e.to_string())?;
    let dir = store.container_dir(id);
    let mut log = LogWriter::open(&dir).map_err(|e| format!("opening the log: {e}"))?;
    let sock = control_socket(&dir);
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).map_err(|e| format!("control socket: {e}"))?;
    let _ = std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o600));

    let mut backoff = Duration::from_millis(100);
    let mut attached = crate::attach::Attached::default();
    let ended = loop {
        let ended = run_once(
            paths,
            cfg,
            &store,
            &mut record,
            &mut log,
            &listener,
            &mut attached,
        )
        .await?;
        let again = !ended.stopped
            && !ended.failed_start
            && policy.wants_restart(ended.code, record.restart_count);
        if !again {
            break ended;
        }
        // Docker's back-off: 100 ms, doubling, capped; a stop during it ends the loop.
        record.restart_count += 1;
        let _ = store.save(&record);
        let _ = log.note(&format!(
            "exited with code {}; restarting ({} so far)",
            ended.code, record.restart_count
        ));
        if wait_or_stop(&listener, backoff).await {
            break ended;
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };
    let _ = log.flush();
    let _ = std::fs::remove_file(&sock);
    record.status = Status::Exited {
        code: ended.code,
        reason: ended.reason,
        finished_unix: now_unix(),
    };
    record.network = None;
    let _ = store.save(&record);
    if record.auto_remove {
        let _ = store.remove(&record.id);
    }
    // The container is settled: the clients attached to it may go on to the next
    // command (a `cabin start`, which needs this lock).
    drop(lock);
    attached.finish(ended.code).await;
    Ok(())
}

/// Sleeps `d` while answering control requests; true if a stop came in.
async fn wait_or_stop(listener: &UnixListener, d: Duration) -> bool {
    let until = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return false,
            Ok((conn, _)) = listener.accept() => {
                let req = read_request(conn).await;
                match req {
                    (Some(Control::Stop(_)), conn) => {
                        reply(conn, Ok(())).await;
                        return true;
                    }
                    (_, conn) => reply(conn, Err("the container is restarting".into())).await,
                }
            }
        }
    }
}

async fn read_request(mut conn: UnixStream) -> (Option<Control>, UnixStream) {
    // Byte by byte, never past the newline: what follows the request (a copy's
    // archive frames) belongs to whoever handles it, and a buffered reader would keep
    // it for itself.
    let mut line = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while line.len() < 4096 {
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
    let req = complete
        .then(|| serde_json::from_slice::<Control>(&line).ok())
        .flatten();
    (req, conn)
}

async fn reply(conn: UnixStream, answer: Result<(), String>) {
    reply_with(conn, answer.map(|()| serde_json::json!({"ok": true}))).await
}

async fn reply_with(mut conn: UnixStream, answer: Result<serde_json::Value, String>) {
    let reply = match answer {
        Ok(v) => v,
        Err(e) => serde_json::json!({"error": e}),
    };
    let _ = conn.write_all(format!("{reply}\n").as_bytes()).await;
}

async fn stats(
    agent: &crate::agent::Agent,
    container_id: &str,
) -> Result<serde_json::Value, String> {
    let mut a = agent.clone();
    let r = ContainerRef {
        container_id: container_id.to_string(),
    };
    let st = agent::call("Stats", cabin_proto::CALL_TIMEOUT, a.stats(r))
        .await
        .map_err(|e| e.message().to_string())?;
    Ok(serde_json::json!({"ok": true, "stats": {
        "memory_bytes": st.memory_bytes,
        "memory_limit_bytes": st.memory_limit_bytes,
        "cpu_usage_micros": st.cpu_usage_micros,
        "pids": st.pids,
        "sampled_boottime_nanos": st.sampled_boottime_nanos,
    }}))
}

/// Runs one `cabin exec` process and relays its stdio and exit code over `conn`.
async fn exec_relay(
    mut agent: crate::agent::Agent,
    process: ProcessRef,
    req: ExecRequest,
    conn: UnixStream,
) {
    let (mut rd, mut wr) = conn.into_split();
    let start = StartProcessRequest {
        container_id: process.container_id.clone(),
        process_id: process.process_id.clone(),
        args: req.args,
        env: req.env,
        cwd: req.cwd,
        user: req.user,
        tty: req.tty.is_some(),
        tty_size: req.tty.map(|(rows, cols)| TtySize {
            rows: rows as u32,
            cols: cols as u32,
        }),
        rlimits: Vec::new(),
        stdin: req.stdin,
        init: false,
    };
    if let Err(e) = agent::call(
        "StartProcess",
        cabin_proto::CALL_TIMEOUT,
        agent.start_process(start),
    )
    .await
    {
        let code: i32 = match e.code() {
            tonic::Code::NotFound => 127,
            tonic::Code::PermissionDenied => 126,
            _ => 125,
        };
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(e.message().as_bytes());
        let _ = frame::write(&mut wr, frame::FAILED, &payload).await;
        return;
    }
    if frame::write(&mut wr, frame::STARTED, &[]).await.is_err() {
        return;
    }
    // What the client sends from now on: stdin (with -i) and window sizes (with -t).
    let stdin = req
        .stdin
        .then(|| agent::stdin_writer(&agent, process.clone()));
    let (mut a, p) = (agent.clone(), process.clone());
    tokio::spawn(async move {
        let (mut tx, done) = match stdin {
            Some((tx, done)) => (Some(tx), Some(done)),
            None => (None, None),
        };
        while let Ok(Some((kind, data))) = frame::read(&mut rd).await {
            match kind {
                frame::STDIN => {
                    if let Some(t) = &tx {
                        if t.send(data).await.is_err() {
                            tx = None;
                        }
                    }
                }
                frame::STDIN_EOF => tx = None,
                frame::RESIZE if data.len() == 4 => {
                    let size = TtySize {
                        rows: u16::from_be_bytes([data[0], data[1]]) as u32,
                        cols: u16::from_be_bytes([data[2], data[3]]) as u32,
                    };
                    let req = ResizeTtyRequest {
                        process: Some(p.clone()),
                        size: Some(size),
                    };
                    let _ = agent::call("ResizeTty", cabin_proto::CALL_TIMEOUT, a.resize_tty(req))
                        .await;
                }
                _ => {}
            }
        }
        drop(tx);
        if let Some(done) = done {
            let _ = done.await;
        }
    });
    let mut a = agent.clone();
    let output = match a.read_output(process.clone()).await {
        Ok(s) => Some(s.into_inner()),
        Err(_) => None,
    };
    if let Some(mut stream) = output {
        while let Some(Ok(chunk)) = stream.next().await {
            let kind = if chunk.stream == output_chunk::Stream::Stderr as i32 {
                frame::STDERR
            } else {
                frame::STDOUT
            };
            if frame::write(&mut wr, kind, &chunk.data).await.is_err() {
                break;
            }
        }
    }
    let code = match agent.wait(process).await {
        Ok(s) => exit_code(&s.into_inner()),
        Err(_) => 125,
    };
    let _ = frame::write(&mut wr, frame::EXIT, &code.to_be_bytes()).await;
}

/// Boots the container's VM, runs its process to the end, tears the VM down.
async fn run_once(
    paths: &Paths,
    cfg: &ContainerConfig,
    store: &Store,
    record: &mut crate::store::Record,
    log: &mut LogWriter,
    listener: &UnixListener,
    attached: &mut crate::attach::Attached,
) -> Result<Ended, String> {
    let mut vm = match ContainerVm::boot(paths, cfg, Instant::now()).await {
        Ok(vm) => vm,
        Err(e) => {
            let _ = log.note(&e.to_string());
            return Ok(Ended {
                code: e.exit_code(),
                reason: Some(e.to_string()),
                stopped: false,
                failed_start: true,
            });
        }
    };
    record.status = Status::Running {
        supervisor_pid: std::process::id(),
        started_unix: now_unix(),
    };
    let (ip_address, ports) = vm.network_info();
    record.network = Some(crate::store::NetworkInfo {
        mode: cfg.network.as_str().to_string(),
        ip_address,
        ports,
    });
    if let Err(e) = store.save(record) {
        vm.teardown().await;
        return Err(e.to_string());
    }
    let agent = vm.agent();
    let proc_ref = vm.process_ref();
    let started = vm.process.clone();
    attached.run_started(log.size());
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<(bool, Vec<u8>)>(64);
    let mut a = agent.clone();
    let r = proc_ref.clone();
    let pump = tokio::spawn(async move {
        if let Ok(s) = a.read_output(r).await {
            let mut stream = s.into_inner();
            while let Some(Ok(chunk)) = stream.next().await {
                let stderr = chunk.stream == output_chunk::Stream::Stderr as i32;
                if out_tx.send((stderr, chunk.data)).await.is_err() {
                    break;
                }
            }
        }
    });

    let signal = |n: i32| {
        let mut a = agent.clone();
        let req = SignalRequest {
            process: Some(proc_ref.clone()),
            signal: n,
        };
        async move {
            // Short: a guest that does not take a signal at once is hung, and the
            // supervisor's loop (logs, other requests, the stop escalation) must go on.
            agent::call("Signal", SIGNAL_TIMEOUT, a.signal(req))
                .await
                .map(|_| ())
                .map_err(|e| e.message().to_string())
        }
    };
    // Escalation of a stop: SIGKILL at the first deadline, the VM itself at the second.
    let mut kill_at: Option<Instant> = None;
    let mut stopped = false;
    let mut execs = 0u64;
    let mut vm_kill_at: Option<Instant> = None;
    let outcome = {
        let wait = vm.wait();
        tokio::pin!(wait);
        loop {
            let next_deadline = kill_at.or(vm_kill_at);
            tokio::select! {
                s = &mut wait => break Some(s),
                Some((stderr, data)) = out_rx.recv() => {
                    let _ = log.write(stderr, &data);
                    attached.output(stderr, &data);
                }
                Ok((conn, _)) = listener.accept() => {
                    let (req, conn) = read_request(conn).await;
                    if let Some(Control::Stats) = req {
                        reply_with(conn, stats(&agent, &proc_ref.container_id).await).await;
                        continue;
                    }
                    if let Some(Control::Exec(x)) = req {
                        execs += 1;
                        let x = x.completed(&started);
                        let process = ProcessRef {
                            container_id: proc_ref.container_id.clone(),
                            process_id: format!("exec-{execs}"),
                        };
                        tokio::spawn(exec_relay(agent.clone(), process, x, conn));
                        continue;
                    }
                    let id = proc_ref.container_id.clone();
                    match req {
                        Some(Control::CopyOut(c)) => {
                            tokio::spawn(crate::copy::relay_out(agent.clone(), id, c, conn));
                            continue;
                        }
                        Some(Control::CopyIn(c)) => {
                            tokio::spawn(crate::copy::relay_in(agent.clone(), id, c, conn));
                            continue;
                        }
                        Some(Control::Attach(a)) => {
                            let stdin = cfg.stdin.then_some((&agent, &proc_ref));
                            attached.add(conn, a, log, stdin);
                            continue;
                        }
                        _ => {}
                    }
                    let answer = match req {
                        Some(Control::Signal(n)) => signal(n).await,
                        Some(Control::Stop(secs)) => {
                            stopped = true;
                            // A guest that does not take SIGTERM gets the rest of the
                            // escalation all the same: the stop itself succeeds.
                            let _ = signal(libc::SIGTERM).await;
                            kill_at = Some(Instant::now() + Duration::from_secs(secs));
                            Ok(())
                        }
                        Some(Control::Stats)
                        | Some(Control::Exec(_))
                        | Some(Control::CopyOut(_))
                        | Some(Control::CopyIn(_))
                        | Some(Control::Attach(_))
                        | None => {
                            Err("unreadable request".to_string())
                        }
                    };
                    reply(conn, answer).await;
                }
                _ = async {
                    match next_deadline {
                        Some(t) => tokio::time::sleep_until(t.into()).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if kill_at.take().is_some() {
                        let _ = signal(libc::SIGKILL).await;
                        vm_kill_at = Some(Instant::now() + KILL_GRACE);
                    } else {
                        // The guest does not act on SIGKILL: it is hung.
                        break None;
                    }
                }
            }
        }
    };
    let (code, reason) = match outcome {
        Some(Ok(status)) => {
            // Whatever the process wrote last is on its way; bounded wait.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some((stderr, data)) = out_rx.recv().await {
                    let _ = log.write(stderr, &data);
                    attached.output(stderr, &data);
                }
            })
            .await;
            let code = exit_code(&status);
            let reason = status.oom_killed.then(|| {
                format!(
                    "out of memory{}: the kernel killed its process",
                    memory_limit_note(cfg)
                )
            });
            (code, reason)
        }
        Some(Err(e)) => (e.exit_code().max(1), Some(e.to_string())),
        None => (
            137,
            Some("it did not stop after SIGKILL; its VM was killed".to_string()),
        ),
    };
    pump.abort();
    let _ = log.flush();
    vm.teardown().await;
    Ok(Ended {
        code,
        reason,
        stopped,
        failed_start: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exec_starts_from_what_the_container_started_with() {
        let started = ProcessSettings {
            env: vec!["HOSTNAME=h".into(), "A=image".into()],
            cwd: "/app".into(),
            user: "app".into(),
        };
        let req = |env: &[&str], cwd: &str, user: &str, tty| ExecRequest {
            args: vec!["sh".into()],
            env: env.iter().map(|e| e.to_string()).collect(),
            cwd: cwd.into(),
            user: user.into(),
            stdin: false,
            tty,
        };
        let x = req(&["A=exec"], "", "", None).completed(&started);
        assert_eq!(x.env, ["HOSTNAME=h", "A=image", "A=exec"]);
        assert_eq!((x.cwd.as_str(), x.user.as_str()), ("/app", "app"));
        let x = req(&[], "/tmp", "0", Some((24, 80))).completed(&started);
        assert_eq!(x.env, ["TERM=xterm", "HOSTNAME=h", "A=image"]);
        assert_eq!((x.cwd.as_str(), x.user.as_str()), ("/tmp", "0"));
    }

    #[test]
    fn restart_policies_parse_and_decide() {
        let p = |s: &str| s.parse::<RestartPolicy>();
        assert_eq!(p("no"), Ok(RestartPolicy::No));
        assert_eq!(p("always"), Ok(RestartPolicy::Always));
        assert_eq!(p("on-failure"), Ok(RestartPolicy::OnFailure(None)));
        assert_eq!(p("on-failure:3"), Ok(RestartPolicy::OnFailure(Some(3))));
        assert!(p("on-failure:x").is_err() && p("sometimes").is_err() && p("no:1").is_err());
        assert!(!RestartPolicy::No.wants_restart(1, 0));
        assert!(RestartPolicy::Always.wants_restart(0, 100));
        let twice = RestartPolicy::OnFailure(Some(2));
        assert!(!twice.wants_restart(0, 0));
        assert!(twice.wants_restart(1, 1));
        assert!(!twice.wants_restart(1, 2));
    }
}
