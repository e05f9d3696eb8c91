//! `cabin start -a [-i]`: starts a container and stays with it, as docker does: its
//! output from the start of the run, stdin with -i, signals passed on, its exit code.

use std::io::Write;
use std::time::Duration;

use cabin_containers::attach::{self, Detached};
use cabin_containers::log;
use cabin_containers::store::{Status, Store};
use cabin_containers::supervisor::{self, Control};
use tokio::signal::unix::{signal, SignalKind};

use crate::containers_cmd::{fail, launch, resolve, wait_exited, StartArgs};

fn print(stderr: bool, data: &[u8]) {
    let _ = if stderr {
        let mut e = std::io::stderr();
        e.write_all(data).and_then(|_| e.flush())
    } else {
        let mut o = std::io::stdout();
        o.write_all(data).and_then(|_| o.flush())
    };
}

/// What the log has from `offset` on (a run that ended before cabin could attach).
fn print_log_from(dir: &std::path::Path, offset: u64) {
    if let Ok((entries, _)) = log::read_from(dir, offset) {
        for e in entries {
            print(e.stream == "stderr", e.log.as_bytes());
        }
    }
}

pub async fn start_attached(store: &Store, args: &StartArgs) -> i32 {
    let [name] = args.containers.as_slice() else {
        return fail("cannot start and attach to several containers at once");
    };
    let record = match resolve(store, name) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if args.interactive && !record.stdin {
        return fail(format!(
            "container {} was created without -i: its standard input is closed",
            record.name
        ));
    }
    let dir = store.container_dir(&record.id);
    // Where this run's output will begin, should it end before cabin attaches.
    let log_start = log::end(&dir);
    if !matches!(record.status, Status::Running { .. }) {
        match launch(store, &record, Duration::from_secs(60)).await {
            Err(code) => return code,
            Ok(None) => return 0, // --rm, and already gone with its log
            Ok(Some(r)) => {
                if let Status::Exited { code, reason, .. } = r.status {
                    print_log_from(&dir, log_start);
                    if let Some(reason) = reason {
                        eprintln!("cabin: {reason}");
                    }
                    return code;
                }
            }
        }
    }
    // As docker's --sig-proxy: signals to cabin go to the container's process.
    let mut signals = Vec::new();
    for &num in crate::run::FORWARDED_SIGNALS {
        if let Ok(s) = signal(SignalKind::from_raw(num)) {
            signals.push((num, s));
        }
    }
    let proxy_dir = dir.clone();
    let proxy = tokio::spawn(async move {
        loop {
            let n = crate::run::first_signal(&mut signals).await;
            let _ = supervisor::send(&proxy_dir, &Control::Signal(n)).await;
        }
    });
    let stdin = args
        .interactive
        .then(|| Box::new(tokio::io::stdin()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let attached = attach::attach(&dir, stdin, &mut print).await;
    proxy.abort();
    match attached {
        Ok(Detached::Exited(code)) => code,
        Ok(Detached::Lost { attached }) => {
            // The run ended before the attachment was taken, or the supervisor went
            // away: the record and the log have the rest.
            let Some(r) = wait_exited(store, &record.id, None).await else {
                return 0;
            };
            if !attached {
                print_log_from(&dir, log_start);
            }
            match r.status {
                Status::Exited { code, reason, .. } => {
                    if let Some(reason) = reason {
                        eprintln!("cabin: {reason}");
                    }
                    code
                }
                _ => 0,
            }
        }
        Err(e) => fail(format!("container {}: {e}", record.name)),
    }
}
