//! A process in a container as the host drives it through cabin-init: its output as one
//! stream of chunks, its stdin, signals, its terminal's size, and how it ended, for the
//! foreground run, the supervisor and exec alike.

use std::time::Duration;

use cabin_proto::v1::{
    output_chunk, ExitStatus, ProcessRef, ResizeTtyRequest, SignalRequest, TtySize,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::agent::{self, Agent};

/// Which of a process's outputs a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A chunk of a process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: Stream,
    pub data: Vec<u8>,
}

/// How many output chunks wait for a slow reader before the guest is held back.
const OUTPUT_BACKLOG: usize = 64;

/// The process's output, chunk by chunk, until the guest closes it (the process and
/// everything holding its output are gone) or the receiver is dropped.
pub fn output(agent: &Agent, process: ProcessRef) -> mpsc::Receiver<Output> {
    let (tx, rx) = mpsc::channel(OUTPUT_BACKLOG);
    let mut a = agent.clone();
    tokio::spawn(async move {
        let Ok(s) = a.read_output(process).await else {
            return;
        };
        let mut stream = s.into_inner();
        while let Some(Ok(chunk)) = stream.next().await {
            let stream = if chunk.stream == output_chunk::Stream::Stderr as i32 {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            if tx
                .send(Output {
                    stream,
                    data: chunk.data,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// Linux's highest signal number (SIGRTMAX).
const MAX_SIGNAL: i32 = 64;

/// The shell's exit code for a finished process: 128+N when signal N killed it. The
/// guest reports both numbers; a signal Linux does not have is ignored, not added.
pub fn exit_code(status: &ExitStatus) -> i32 {
    if (1..=MAX_SIGNAL).contains(&status.signal) {
        128 + status.signal
    } else {
        status.code
    }
}

/// Sends signal `n` to the process; a guest that does not take it within `deadline` is
/// an error (it is hung), not a wait.
pub async fn signal(
    agent: &Agent,
    process: &ProcessRef,
    n: i32,
    deadline: Duration,
) -> Result<(), tonic::Status> {
    let mut a = agent.clone();
    let req = SignalRequest {
        process: Some(process.clone()),
        signal: n,
    };
    agent::call("Signal", deadline, a.signal(req))
        .await
        .map(drop)
}

/// Tells the process's terminal its new size.
pub async fn resize(
    agent: &Agent,
    process: &ProcessRef,
    rows: u16,
    cols: u16,
) -> Result<(), tonic::Status> {
    let mut a = agent.clone();
    let req = ResizeTtyRequest {
        process: Some(process.clone()),
        size: Some(TtySize {
            rows: rows as u32,
            cols: cols as u32,
        }),
    };
    agent::call("ResizeTty", cabin_proto::CALL_TIMEOUT, a.resize_tty(req))
        .await
        .map(drop)
}

/// A signal by its number (1 to 64) or name (`TERM`, `SIGTERM`, `term`), as `kill -s`
/// and docker's API take them.
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        "ABRT" => libc::SIGABRT,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "CHLD" => libc::SIGCHLD,
        _ => return None,
    })
}

/// Signals and terminal sizes for one process.
#[derive(Clone)]
pub struct Controls {
    agent: Agent,
    process: ProcessRef,
}

impl Controls {
    pub fn new(agent: Agent, process: ProcessRef) -> Controls {
        Controls { agent, process }
    }

    /// Sends signal `n` to the process.
    pub async fn signal(&self, n: i32) -> Result<(), tonic::Status> {
        signal(&self.agent, &self.process, n, cabin_proto::CALL_TIMEOUT).await
    }

    /// Tells the process's terminal its new size.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), tonic::Status> {
        resize(&self.agent, &self.process, rows, cols).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_reporting_an_impossible_signal_gets_its_exit_code_not_an_overflow() {
        // Found by fuzz/fuzz_targets/guest_agent.rs: 128 + i32::MAX overflowed.
        let status = |code, signal| ExitStatus {
            code,
            signal,
            oom_killed: false,
        };
        assert_eq!(exit_code(&status(-1, 9)), 137);
        assert_eq!(exit_code(&status(3, 0)), 3);
        assert_eq!(exit_code(&status(-1, i32::MAX)), -1);
        assert_eq!(exit_code(&status(5, -9)), 5);
    }

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("sigkill"), Some(libc::SIGKILL));
        assert_eq!(signal_number("WINCH"), Some(libc::SIGWINCH));
        assert_eq!(signal_number("15"), Some(15));
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_number("BOGUS"), None);
    }
}
