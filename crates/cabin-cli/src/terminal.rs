//! The user's terminal during `cabin run -t`: raw mode while attached, its size; and
//! cabin's standard input passed on to a process.

use std::os::fd::BorrowedFd;

use nix::sys::termios::{self, SetArg, Termios};

pub fn is_tty(fd: i32) -> bool {
    // SAFETY: isatty on any descriptor number is harmless.
    unsafe { libc::isatty(fd) == 1 }
}

pub fn size(fd: i32) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ into a winsize we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts stdin's terminal in raw mode (keys go to the container's terminal unprocessed,
/// Ctrl-C included) and restores it when dropped.
pub struct RawMode {
    saved: Termios,
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

impl RawMode {
    pub fn enter() -> Option<RawMode> {
        let saved = termios::tcgetattr(stdin_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Reads cabin's standard input in protocol-sized chunks and hands each to `send`
/// until end of file, a read error, or `send` answering false (the receiver is gone).
pub async fn pump_stdin<F, Fut>(mut send: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; cabin_proto::CHUNK_BYTES];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !send(buf[..n].to_vec()).await {
                    return;
                }
            }
        }
    }
}

/// The signals `cabin run` and `cabin start -a` pass on to the container's process.
pub const FORWARDED_SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// cabin's handlers for [`FORWARDED_SIGNALS`]: installed before a VM boots, so that a
/// signal during the boot cannot kill cabin before it tears the VM down.
pub struct Signals(Vec<(libc::c_int, tokio::signal::unix::Signal)>);

impl Signals {
    pub fn install() -> Signals {
        let mut all = Vec::new();
        for &num in FORWARDED_SIGNALS {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(num)) {
                Ok(s) => all.push((num, s)),
                Err(e) => eprintln!("cabin: cannot forward signal {num}: {e}"),
            }
        }
        Signals(all)
    }

    /// The next signal that arrives.
    pub async fn next(&mut self) -> libc::c_int {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for (n, s) in self.0.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*n);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// The terminal's size now: stdin's, else stdout's, else 24x80.
pub fn size_or_default() -> (u16, u16) {
    size(0).or(size(1)).unwrap_or((24, 80))
}

/// Sends cabin's standard input to `input` until end of file (then drops it: the
/// process's end of input).
pub fn forward_stdin(input: tokio::sync::mpsc::Sender<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        pump_stdin(|b| {
            let tx = input.clone();
            async move { tx.send(b).await.is_ok() }
        })
        .await;
    })
}

/// Writes a chunk of a process's output to cabin's stdout or stderr at once.
pub fn print_output(stderr: bool, data: &[u8]) {
    use std::io::Write;
    let _ = if stderr {
        let mut e = std::io::stderr();
        e.write_all(data).and_then(|_| e.flush())
    } else {
        let mut o = std::io::stdout();
        o.write_all(data).and_then(|_| o.flush())
    };
}
