//! Start-up tracing for developers: with `cabin.trace` on the kernel command line, init
//! writes a boot-clock time stamp per phase to the console (slow under TCG, so off by
//! default). `bench/trace.sh` collects them.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns tracing on if the kernel command line `cmdline` says so.
pub fn init(cmdline: &str) {
    let on = cmdline.split_whitespace().any(|w| w == "cabin.trace");
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn mark(label: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        let ms = crate::clock::boottime_nanos() as f64 / 1e6;
        eprintln!("cabin-init: trace {ms:.2} {label}");
    }
}

/// `mark` for a forked child before exec: no allocation, no locks, one write(2).
pub fn mark_in_child(label: &[u8]) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let mut buf = [0u8; 96];
    let prefix = b"cabin-init: trace ";
    let mut n = prefix.len();
    buf[..n].copy_from_slice(prefix);
    // hundredths of a millisecond, printed as milliseconds with two decimals
    let mut v = crate::clock::boottime_nanos() / 10_000;
    let mut digits = [0u8; 20];
    let mut d = 0;
    while d < 3 || v > 0 {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
    }
    for i in (0..d).rev() {
        buf[n] = digits[i];
        n += 1;
        if i == 2 {
            buf[n] = b'.';
            n += 1;
        }
    }
    buf[n] = b' ';
    n += 1;
    let take = label.len().min(buf.len() - n - 1);
    buf[n..n + take].copy_from_slice(&label[..take]);
    n += take;
    buf[n] = b'\n';
    n += 1;
    // SAFETY: open/write/close of a stack buffer; the child's fd 2 is already the
    // container's stderr, so the console is opened by name.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_WRONLY | libc::O_NOCTTY);
        if fd >= 0 {
            libc::write(fd, buf.as_ptr().cast(), n);
            libc::close(fd);
        }
    }
}
