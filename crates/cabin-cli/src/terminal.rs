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
