//! A guest init for tests only (feature `hostile`, never installed): booted where
//! cabin-init would be, it misbehaves on purpose, so that tests can show what the host
//! does with a guest that lies, floods or hangs up. The container's root file system
//! names the misbehaviour in its file `/hostile` (one word):
//!
//! - `garbage`: bytes that mean nothing, on the agent channel, at full speed, forever;
//! - `oversized`: an HTTP/2 server preface, then a frame announcing 16 MiB and bytes
//!   after it, forever;
//! - `flood`: the console written at full speed, the agent channel never answered;
//! - `hangup`: half a frame on the agent channel, then the machine goes down.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::mount::{mount, MsFlags};

fn main() {
    for (what, dir, kind) in [
        ("devtmpfs", "/dev", "devtmpfs"),
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
    ] {
        let _ = fs::create_dir_all(dir);
        let _ = mount(Some(what), dir, Some(kind), MsFlags::empty(), None::<&str>);
    }
    let mode = read_mode().unwrap_or_else(|| "garbage".to_string());
    say(&format!("hostile init: {mode}"));
    let port = agent_port();
    match mode.as_str() {
        "oversized" => oversized(&port),
        "flood" => flood(),
        "hangup" => hangup(&port),
        _ => garbage(&port),
    }
}

fn say(line: &str) {
    if let Ok(mut c) = fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(c, "{line}");
    }
}

/// The word in `/hostile` on the first virtio disk that has one.
fn read_mode() -> Option<String> {
    let _ = fs::create_dir_all("/mnt");
    for entry in fs::read_dir("/sys/block").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("vd") {
            continue;
        }
        let dev = Path::new("/dev").join(&name);
        let ro = MsFlags::MS_RDONLY;
        if mount(Some(&dev), "/mnt", Some("ext4"), ro, None::<&str>).is_ok() {
            let mode = fs::read_to_string("/mnt/hostile").ok();
            let _ = nix::mount::umount("/mnt");
            if let Some(m) = mode {
                return Some(m.trim().to_string());
            }
        }
    }
    None
}

/// The agent's virtio-serial port, waited for.
fn agent_port() -> PathBuf {
    loop {
        if let Ok(entries) = fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let name = fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if name.trim_end() == cabin_proto::PORT_NAME {
                    return Path::new("/dev").join(e.file_name());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `data` to the port again and again, reopening it whenever the host is away.
fn write_forever(port: &Path, mut data: impl FnMut() -> Vec<u8>) -> ! {
    loop {
        let Ok(mut f) = fs::OpenOptions::new().write(true).open(port) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        while f.write_all(&data()).is_ok() {}
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn garbage(port: &Path) -> ! {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    write_forever(port, || {
        (0..65536)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

/// An HTTP/2 frame header: 24-bit length, type, flags, stream.
fn frame(len: u32, kind: u8, flags: u8, stream: u32) -> Vec<u8> {
    let mut h = len.to_be_bytes()[1..].to_vec();
    h.extend([kind, flags]);
    h.extend(stream.to_be_bytes());
    h
}

fn oversized(port: &Path) -> ! {
    let mut first = true;
    write_forever(port, move || {
        if std::mem::take(&mut first) {
            // The server's SETTINGS (empty), then DATA on stream 1 claiming 16 MiB - 1.
            let mut b = frame(0, 4, 0, 0);
            b.extend(frame(0x00ff_ffff, 0, 0, 1));
            b
        } else {
            vec![0x41; 65536]
        }
    })
}

fn flood() -> ! {
    let line = "flood ".repeat(20) + "\n";
    loop {
        if let Ok(mut c) = fs::OpenOptions::new().write(true).open("/dev/console") {
            while c.write_all(line.as_bytes()).is_ok() {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hangup(port: &Path) -> ! {
    if let Ok(mut f) = fs::OpenOptions::new().write(true).open(port) {
        // A HEADERS frame header announcing 100 bytes, and 10 of them.
        let mut b = frame(0, 4, 0, 0);
        b.extend(frame(100, 1, 4, 1));
        b.extend([0u8; 10]);
        let _ = f.write_all(&b);
    }
    std::thread::sleep(Duration::from_millis(500));
    // cabin runs QEMU with -no-reboot: a reboot ends the VM.
    nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT).ok();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}
