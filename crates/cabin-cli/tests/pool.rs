//! The warm pool of `cabin serve --pool N`: containers (with pipes or a terminal, from
//! the CLI or the Docker API) run on VMs resumed and warmed up ahead, each with its own
//! disk and identity; the pool keeps its size, replaces a VM
//! that died, and its waiting VMs die with the server while the containers it handed
//! out live on.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// `cabin serve --pool SIZE` on `data`, its log lines collected as they come.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data: &Path, size: usize) -> Server {
        let mut cmd = cabin_in(data);
        cmd.env("CABIN_SNAPSHOTS", "on")
            .args(["serve", "--port", "0", "--pool", &size.to_string()])
            .arg("--docker-socket")
            .arg(data.join("docker.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_for_test_process(cmd).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Server { child, log }
    }

    fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn wait_for_log(&self, needle: &str, times: usize) {
        wait_for(
            &format!("{times} log lines with {needle:?}"),
            Duration::from_secs(180),
            || self.count(needle) >= times,
        );
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

fn pool_run(data: &Path, opts: &[&str], args: &[&str]) -> std::process::Output {
    run_in(data, &[("CABIN_SNAPSHOTS", "on")], opts, args)
}

/// The QEMU processes of VMs waiting in the pool: their run directory holds the
/// warm-up disk.
fn waiting_vms(data: &Path) -> Vec<PathBuf> {
    run_dirs(data)
        .into_iter()
        .filter(|d| d.join("warm-up.raw").exists())
        .collect()
}

#[test]
fn a_warm_pool_runs_containers_apart_keeps_its_size_and_its_vms_die_with_the_server() {
    let data = std::env::temp_dir().join(format!("cabin-test-pool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    remove_at_exit(data.clone());
    let mut server = Server::start(&data, 2);
    server.wait_for_log("pool: VM ready", 2);
    assert_eq!(waiting_vms(&data).len(), 2, "{}", server.text());

    // Two containers from the pool: each its own seed, MAC and boot ID; the exit code
    // and output as without a pool; the pool's VMs replaced.
    // Its network as without a pool: the default route through QEMU's gateway
    // (10.0.2.2, as /proc/net/route writes it), the host's name for it in /etc/hosts.
    let probe = "cat /proc/sys/kernel/random/uuid /proc/sys/kernel/random/boot_id \
                 /sys/class/net/eth0/address; hostname; \
                 grep -c '^eth0\t00000000\t0202000A' /proc/net/route; \
                 grep -c '^10.0.2.2.*host.docker.internal' /etc/hosts; exit 3";
    let a = pool_run(&data, &["--rm"], &["sh", "-c", probe]);
    let b = pool_run(&data, &["--rm"], &["sh", "-c", probe]);
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(3), "{}{}", stderr(o), server.text());
        let out = stdout(o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert_eq!(lines[4..], ["1", "1"], "{out}");
    }
    assert_eq!(server.count("took a warm VM"), 2, "{}", server.text());
    let (a, b) = (stdout(&a), stdout(&b));
    for (x, y) in a.lines().zip(b.lines()).take(4) {
        assert_ne!(x, y, "two pooled containers share an identity:\n{a}\n{b}");
    }
    // stdin reaches the process.
    server.wait_for_log("pool: VM ready", 3);
    let mut c = cabin_in(&data);
    c.args(["run", "--rm", "-i", "--rootfs"])
        .arg(busybox_rootfs())
        .args(["--", "sh", "-c", "read x; echo got $x"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "got hello\n");
    assert_eq!(server.count("took a warm VM"), 3, "{}", server.text());

    // The Docker API's containers take the pool's VMs too.
    server.wait_for_log("pool: VM ready", 4);
    import_busybox(&data, "local/bb");
    let o = std::process::Command::new(common::dockerd::DOCKER)
        .env(
            "DOCKER_HOST",
            format!("unix://{}", data.join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", data.join("docker-config"))
        .args([
            "run",
            "--rm",
            "local/bb",
            "sh",
            "-c",
            "echo from docker; exit 4",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stdout(&o), "from docker\n");
    assert_eq!(server.count("took a warm VM"), 4, "{}", server.text());

    // A terminal through the pool: keys as typed, the window's size and its changes,
    // the exit code.
    server.wait_for_log("pool: VM ready", 5);
    let t = common::terminal::Tmux::start(
        "pool",
        &format!(
            "env CABIN_DATA_DIR={} CABIN_ACCEL=tcg {} run -it --rm --rootfs {} -- sh; echo EXITED=$?; sleep 60",
            data.display(),
            env!("CARGO_BIN_EXE_cabin"),
            busybox_rootfs().display()
        ),
    );
    t.wait_for("the shell's prompt", |s| s.contains("/ #"));
    t.keys(&["stty size; tty", "Enter"]);
    t.wait_for("the size", |s| {
        s.contains("30 100") && s.contains("/dev/pts/0")
    });
    t.run(&["resize-window", "-t", &t.session, "-x", "90", "-y", "25"]);
    std::thread::sleep(Duration::from_millis(500));
    t.keys(&["stty size", "Enter"]);
    t.wait_for("the new size", |s| s.contains("25 90"));
    t.keys(&["exit 7", "Enter"]);
    t.wait_for("cabin to exit", |s| s.contains("EXITED=7"));
    assert_eq!(server.count("took a warm VM"), 5, "{}", server.text());
    drop(t);

    // Detached containers from the pool do not see each other's files.
    let keep = |name: &str, cmd: &str| {
        let o = pool_run(&data, &["-d", "--name", name], &["sh", "-c", cmd]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    server.wait_for_log("pool: VM ready", 7);
    keep("one", "echo secret > /mine; sleep 600");
    server.wait_for_log("pool: VM ready", 8);
    keep("two", "sleep 600");
    assert_eq!(server.count("took a warm VM"), 7, "{}", server.text());
    let exec = |name: &str, cmd: &str| {
        cabin_in(&data)
            .args(["exec", name, "sh", "-c", cmd])
            .output()
            .unwrap()
    };
    eventually("the first container wrote its file", || {
        stdout(&exec("one", "cat /mine")) == "secret\n"
    });
    assert_eq!(exec("two", "cat /mine").status.code(), Some(1));

    // The pool keeps its size: a waiting VM that dies is replaced.
    server.wait_for_log("pool: VM ready", 9);
    assert_eq!(waiting_vms(&data).len(), 2, "{}", server.text());
    let victim = std::fs::read_to_string(waiting_vms(&data)[0].join("vmm.pid")).unwrap();
    // SAFETY: killing a QEMU process this test's server started.
    unsafe { libc::kill(victim.trim().parse().unwrap(), libc::SIGKILL) };
    server.wait_for_log("a waiting VM died; replacing it (QEMU was killed by", 1);
    server.wait_for_log("pool: VM ready", 10);
    assert_eq!(waiting_vms(&data).len(), 2, "{}", server.text());

    // A container of another shape finds no VM of its own and runs as without a pool;
    // the pool follows it: the next one of that shape takes a pooled VM.
    let took = server.count("took a warm VM");
    let ready = server.count("pool: VM ready");
    let other = |what: &str| {
        let o = pool_run(&data, &["--rm", "--memory", "200m"], &["echo", what]);
        assert_eq!(stdout(&o), format!("{what}\n"), "{}", stderr(&o));
    };
    other("first of its shape");
    assert_eq!(server.count("took a warm VM"), took, "{}", server.text());
    server.wait_for_log("the pool's next VMs take that shape", 1);
    server.wait_for_log("pool: VM ready", ready + 1);
    other("second of its shape");
    assert_eq!(
        server.count("took a warm VM"),
        took + 1,
        "{}",
        server.text()
    );
    assert!(waiting_vms(&data).len() <= 2, "{}", server.text());

    // The server killed: its waiting VMs go, the containers it handed out stay.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    wait_for("the waiting VMs to go", Duration::from_secs(20), || {
        waiting_vms(&data).is_empty()
    });
    let ps = stdout(&cabin_in(&data).args(["ps"]).output().unwrap());
    assert!(ps.contains("one") && ps.contains("two"), "{ps}");
    assert_eq!(stdout(&exec("one", "cat /mine")), "secret\n");
    // Without a server, cabin run starts its own VM.
    let o = pool_run(&data, &["--rm"], &["echo", "no pool"]);
    assert_eq!(stdout(&o), "no pool\n", "{}", stderr(&o));
    let o = cabin_in(&data)
        .args(["rm", "-f", "one", "two"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("every VM to go", Duration::from_secs(20), || {
        qemu_processes_mentioning(&data).is_empty() && run_dirs(&data).is_empty()
    });
}
