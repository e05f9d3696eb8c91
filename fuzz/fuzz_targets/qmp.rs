//! QEMU's side of QMP, as cabin's client reads it: the greeting, the answer to
//! `qmp_capabilities`, a command's answer among events, then an awaited event. The
//! input is what "QEMU" writes on the socket before closing it; every outcome must be
//! an answer or an error, never a hang or a panic.
#![no_main]

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream as StdStream;

use cabin_vmm::qmp::Qmp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (ours, mut qemu) = StdStream::pair().expect("socket pair");
    // QEMU's side writes everything and closes its sending half; what the client sends
    // stays unread in the socket buffer (both fit: inputs are at most 64 KiB here).
    let data = &data[..data.len().min(64 << 10)];
    qemu.write_all(data).expect("fits in the socket buffer");
    qemu.shutdown(Shutdown::Write).expect("shutdown");
    rt.block_on(async {
        ours.set_nonblocking(true).expect("non-blocking");
        let stream = tokio::net::UnixStream::from_std(ours).expect("tokio stream");
        let Ok(mut qmp) = Qmp::handshake(stream).await else {
            return;
        };
        if qmp.execute("query-status", None).await.is_err() {
            return;
        }
        let _ = qmp.wait_event("SHUTDOWN", |d| d["guest"] == true).await;
    });
    drop(qemu);
});
