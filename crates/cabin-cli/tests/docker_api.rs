//! The Docker Engine API (`cabin serve --docker-socket`), driven by the real docker CLI
//! (/usr/local/bin/docker on these machines) and by raw HTTP for what the CLI never
//! sends: containers in real VMs, images pulled from a real registry.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::dockerd::*;
use common::*;

/// A `cabin serve` with the Docker socket, on a data directory of its own that holds
/// the busybox image as `local/bb`; killed when dropped.
struct Server {
    dir: PathBuf,
    socket: PathBuf,
    process: Child,
}

impl Server {
    fn start(tag: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("cabin-docker-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        import_busybox(&data, "local/bb");
        let socket = dir.join("docker.sock");
        let process = serve(&data, &socket);
        Server {
            dir,
            socket,
            process,
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The docker CLI pointed at this server.
    fn docker(&self, args: &[&str]) -> Output {
        self.docker_cmd(args).output().unwrap()
    }

    fn docker_cmd(&self, args: &[&str]) -> Command {
        assert!(
            Path::new(DOCKER).exists(),
            "the docker CLI is expected at {DOCKER}"
        );
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.join("docker-config"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// The docker CLI, which must succeed; its stdout.
    fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// One raw HTTP/1.1 request; the whole answer (the server closes after it).
    fn http(&self, head: &str, body: &[u8]) -> String {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Containers first (their supervisors outlive the server), then the server.
        let ids = stdout(&self.docker(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cabin serve --port 0 --docker-socket SOCKET` on `data`, once the socket answers.
fn serve(data: &Path, socket: &Path) -> Child {
    let mut cmd = cabin_in(data);
    cmd.args(["serve", "--port", "0", "--docker-socket"])
        .arg(socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = spawn_for_test_process(cmd).unwrap();
    wait_for("the Docker socket", Duration::from_secs(20), || {
        UnixStream::connect(socket).is_ok()
    });
    child
}

#[test]
fn docker_run_streams_the_output_takes_stdin_and_exits_with_the_process_code() {
    let s = Server::start("run");
    let o = s.docker(&[
        "run",
        "--rm",
        "local/bb",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    // Capabilities as Docker gives them: its default set with --cap-add and
    // --cap-drop, none effective for another user (the bounding set stays), all of
    // them (in the container's VM) with --privileged; no-new-privileges.
    let caps = |options: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(options);
        args.extend_from_slice(&[
            "local/bb",
            "sh",
            "-c",
            "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' '",
        ]);
        s.docker_ok(&args)
    };
    let added = [
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "CHOWN",
        "--security-opt",
        "no-new-privileges",
    ];
    assert_eq!(
        caps(&added),
        "CapEff: 00000000a80435fa\nCapBnd: 00000000a80435fa\nNoNewPrivs: 1\n"
    );
    assert_eq!(
        caps(&[&added[..4], &["--user", "1000"]].concat()),
        "CapEff: 0000000000000000\nCapBnd: 00000000a80435fa\nNoNewPrivs: 0\n"
    );
    assert!(caps(&["--privileged"]).starts_with("CapEff: 000001ffffffffff\n"));
    assert_eq!(
        caps(&[]),
        "CapEff: 00000000a80425fb\nCapBnd: 00000000a80425fb\nNoNewPrivs: 0\n"
    );

    // Piped input arrives (with its end) before the container starts.
    let mut c = s.docker_cmd(&[
        "run",
        "-i",
        "--rm",
        "local/bb",
        "sh",
        "-c",
        "cat; echo done",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"typed\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "typed\ndone\n");

    // docker's exit codes for a command that cannot run: its wording decides them.
    let o = s.docker(&["run", "--rm", "local/bb", "nosuch"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("executable file not found"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["run", "--rm", "local/bb", "/etc/passwd"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));

    // --rm containers are gone, failed or not.
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
    // Environment, working directory, user and entrypoint, as docker sets them.
    let out = s.docker_ok(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000",
        "--entrypoint",
        "sh",
        "local/bb",
        "-c",
        "echo $A $(pwd) $(id -u)",
    ]);
    assert_eq!(out, "1 /tmp 1000\n");
}

#[test]
fn detached_containers_are_listed_inspected_logged_exec_d_stopped_and_removed() {
    let s = Server::start("detached");
    let id = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--label",
        "tier=front",
        "-p",
        "127.0.0.1::80",
        "local/bb",
        "sh",
        "-c",
        "echo started; exec sleep 1000",
    ]);
    let id = id.trim();
    assert_eq!(id.len(), 32, "{id}");
    let ps = s.docker_ok(&[
        "ps",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}} {{.Ports}}",
    ]);
    assert!(ps.starts_with(&format!("{} web Up ", &id[..12])), "{ps}");
    assert!(ps.contains("127.0.0.1:") && ps.contains("->80/tcp"), "{ps}");
    assert_eq!(
        s.docker_ok(&["ps", "-q", "--filter", "label=tier=front"])
            .trim(),
        &id[..12]
    );
    assert_eq!(
        s.docker_ok(&["ps", "-q", "--filter", "label=tier=back"]),
        ""
    );
    // One namespace: the cabin CLI sees the container the API made.
    let o = cabin_in(&s.data()).args(["ps"]).output().unwrap();
    assert!(stdout(&o).contains("web"), "{}", stdout(&o));

    let f = "{{.State.Status}} {{.State.Running}} {{.Name}} {{.Config.Image}} {{.HostConfig.RestartPolicy.Name}}";
    assert_eq!(
        s.docker_ok(&["inspect", "-f", f, "web"]).trim(),
        "running true /web local/bb no"
    );
    eventually("the container's first line", || {
        s.docker_ok(&["logs", "web"]) == "started\n"
    });
    let o = s.docker(&["exec", "web", "sh", "-c", "echo in; echo err >&2; exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        (stdout(&o).as_str(), stderr(&o).as_str()),
        ("in\n", "err\n")
    );
    let o = s.docker(&["exec", "web", "nosuch"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));

    // Paused, its whole VM stops (QEMU's process is stopped); unpaused, it goes on.
    let state = |s: &Server| {
        s.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.Paused}}",
            "web",
        ])
        .trim()
        .to_string()
    };
    let qemu = qemu_processes_mentioning(&s.data());
    assert_eq!(qemu.len(), 1, "{qemu:?}");
    let qemu_state = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", qemu[0])).unwrap();
        stat.rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    s.docker_ok(&["pause", "web"]);
    assert_eq!(state(&s), "paused true");
    assert_eq!(qemu_state(), "T");
    assert!(s
        .docker_ok(&["ps", "--format", "{{.Status}}"])
        .contains("(Paused)"));
    assert_eq!(
        s.docker_ok(&["ps", "-q", "--filter", "status=paused"])
            .trim(),
        &id[..12]
    );
    s.docker_ok(&["unpause", "web"]);
    assert_eq!(state(&s), "running false");
    assert_ne!(qemu_state(), "T");
    assert_eq!(
        s.docker_ok(&["exec", "web", "echo", "goes on"]),
        "goes on\n"
    );
    // docker update: new limits at once in the container's cgroup and in inspect;
    // more memory than its VM has is refused, and nothing changes.
    s.docker_ok(&["update", "--memory", "64m", "--pids-limit", "50", "web"]);
    assert_eq!(
        s.docker_ok(&[
            "exec",
            "web",
            "cat",
            "/sys/fs/cgroup/memory.max",
            "/sys/fs/cgroup/pids.max"
        ]),
        "67108864\n50\n"
    );
    let o = s.docker(&["update", "--memory", "8g", "web"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("its VM has room for"), "{}", stderr(&o));
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{.HostConfig.Memory}}", "web"])
            .trim(),
        "67108864"
    );
    // Killed while paused: the VM goes on first, and the signal arrives.
    s.docker_ok(&["pause", "web"]);

    // `wait` answers once it has stopped, with what kill made of it.
    let mut wait = s.docker_cmd(&["wait", "web"]);
    let waiting = wait.stdout(Stdio::piped()).spawn().unwrap();
    s.docker_ok(&["kill", "web"]);
    let o = waiting.wait_with_output().unwrap();
    assert_eq!(stdout(&o).trim(), "137");
    assert_eq!(
        s.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "web"
        ])
        .trim(),
        "exited 137"
    );
    // Stopping a stopped container is no error (304); kill is (409).
    s.docker_ok(&["stop", "web"]);
    let o = s.docker(&["kill", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
    // Started again, it runs its command again.
    s.docker_ok(&["start", "web"]);
    eventually("the second run's line", || {
        s.docker_ok(&["logs", "web"]) == "started\nstarted\n"
    });
    let o = s.docker(&["rm", "web"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("container is running"),
        "{}",
        stderr(&o)
    );
    s.docker_ok(&["rm", "-f", "web"]);
    let o = s.docker(&["rm", "web"]);
    assert!(
        stderr(&o).contains("No such container: web"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["inspect", "web"]);
    assert!(stderr(&o).contains("No such object: web"), "{}", stderr(&o));
}

#[test]
fn logs_follow_until_the_container_stops_with_timestamps_and_tail() {
    let s = Server::start("logs");
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "local/bb",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; done; echo oops >&2; sleep 3; echo last",
    ]);
    let o = s.docker(&["logs", "-f", "ticker"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "line1\nline2\nline3\nlast\n");
    assert_eq!(stderr(&o), "oops\n");
    assert_eq!(s.docker_ok(&["logs", "--tail", "1", "ticker"]), "last\n");
    let stamped = s.docker_ok(&["logs", "-t", "ticker"]);
    let first = stamped.lines().next().unwrap();
    // 2026-12-03T14:24:42.123456789Z line1
    assert!(
        first.len() > 31 && first.as_bytes()[10] == b'T' && first.ends_with("Z line1"),
        "{first}"
    );
}

#[test]
fn images_are_pulled_from_a_registry_listed_inspected_and_removed_as_docker_answers() {
    let s = Server::start("images");
    let reg_dir = s.dir.join("registry");
    let registry = start_registry(&reg_dir, |_| String::new());
    let remote = format!("{}/bb:1", registry.addr);
    let o = cabin_in(&s.data())
        .args(["image", "push", "local/bb", &remote])
        .output()
        .unwrap();
    assert!(o.status.success(), "push: {}", stderr(&o));
    let o = cabin_in(&s.data())
        .args(["image", "rm", "local/bb"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // `run` of an image that is not here: 404, the CLI pulls through the API, runs.
    let o = s.docker(&["run", "--rm", &remote, "echo", "pulled"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "pulled\n");
    assert!(
        stderr(&o).contains("Unable to find image"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Status: Downloaded newer image"),
        "{}",
        stderr(&o)
    );

    let images = s.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images.trim(), remote);
    let inspected = s.docker_ok(&["image", "inspect", "-f", "{{.Os}} {{.RepoTags}}", &remote]);
    assert_eq!(inspected.trim(), format!("linux [{remote}]"));

    // In use by a container: refused (409) unless forced.
    s.docker_ok(&["create", "--name", "user", &remote, "true"]);
    let o = s.docker(&["rmi", &remote]);
    assert!(stderr(&o).contains("must force"), "{}", stderr(&o));
    s.docker_ok(&["rm", "user"]);
    let out = s.docker_ok(&["rmi", &remote]);
    assert!(
        out.contains("Untagged") && out.contains("Deleted: sha256:"),
        "{out}"
    );
    assert_eq!(s.docker_ok(&["images", "-q"]), "");

    // A registry without the image: the pull's error, not a hang.
    let o = s.docker(&["pull", &format!("{}/nothing:1", registry.addr)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = s.docker(&["rmi", "nothing"]);
    assert!(
        stderr(&o).contains("No such image: nothing"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_socket_of_a_live_server_is_refused_and_a_stale_one_replaced() {
    let mut s = Server::start("socket");
    let mode = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    let o = cabin_in(&s.data())
        .args(["serve", "--port", "0", "--docker-socket"])
        .arg(&s.socket)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is the socket of a Docker API server that is running"),
        "{}",
        stderr(&o)
    );
    assert!(
        s.docker(&["version"]).status.success(),
        "the first server still serves"
    );

    // Killed outright, it leaves its socket behind: the next server takes its place.
    s.process.kill().unwrap();
    s.process.wait().unwrap();
    assert!(s.socket.exists());
    s.process = serve(&s.data(), &s.socket);
    let v = s.docker_ok(&["version", "-f", "{{.Server.APIVersion}} {{.Server.Os}}"]);
    assert_eq!(v.trim(), "1.44 linux");
}

#[test]
fn bad_requests_get_dockers_errors_and_the_server_keeps_serving() {
    let s = Server::start("bad");
    // HEAD /_ping: no body, the version header the CLI negotiates with.
    let r = s.http("HEAD /_ping", b"");
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.to_ascii_lowercase().contains("api-version: 1.44"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "{r:?}");
    assert!(s.http("GET /v1.12/_ping", b"").ends_with("OK"));

    let json_error = |r: &str, status: &str, needle: &str| {
        assert!(r.starts_with(&format!("HTTP/1.1 {status}")), "{r}");
        assert!(r.contains("content-type: application/json\r\n"), "{r}");
        assert!(r.contains(needle), "{needle:?} in {r}");
    };
    json_error(
        &s.http("POST /v1.44/containers/create", b"{not json"),
        "400",
        "invalid JSON in the request body",
    );
    json_error(
        &s.http(
            "POST /v1.44/containers/create",
            br#"{"Image":"local/bb","HostConfig":{"NetworkMode":"host"}}"#,
        ),
        "400",
        "own VM",
    );
    json_error(
        &s.http(
            "POST /v1.44/containers/create",
            br#"{"Image":"nothing:here"}"#,
        ),
        "404",
        "No such image: nothing:here",
    );
    json_error(
        &s.http("POST /v1.44/build", b""),
        "501",
        "cannot build images yet",
    );
    json_error(
        &s.http("GET /v1.44/containers/web/changes", b""),
        "501",
        "GET /v1.44/containers/web/changes",
    );
    json_error(
        &s.http("GET /v1.44/containers/nope/json", b""),
        "404",
        "No such container: nope",
    );
    json_error(
        &s.http("GET /v1.44/containers/json?filters=%7Bx", b""),
        "400",
        "invalid filters",
    );
    // An absurd body is refused, not read.
    let big = vec![b' '; 3 << 20];
    json_error(
        &s.http("POST /v1.44/containers/create", &big),
        "400",
        "reading the request body",
    );
    // An attach whose client leaves mid-run: the server and the container carry on.
    s.docker_ok(&[
        "create",
        "--name",
        "chatty",
        "local/bb",
        "sh",
        "-c",
        "while true; do echo x; sleep 0.2; done",
    ]);
    let mut attach = UnixStream::connect(&s.socket).unwrap();
    write!(
        attach,
        "POST /v1.44/containers/chatty/attach?stream=1&stdout=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    )
    .unwrap();
    s.docker_ok(&["start", "chatty"]);
    let mut buf = [0u8; 64];
    attach
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\u{1}\0\0\0\0\0\0\u{2}x\n") {
        let n = attach.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "the stream ended early: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    drop(attach);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{.State.Running}}", "chatty"])
            .trim(),
        "true"
    );
    assert!(s
        .docker_ok(&["ps", "--format", "{{.Names}}"])
        .contains("chatty"));
}

#[test]
fn terminals_take_keys_and_window_sizes_in_run_and_exec() {
    use common::terminal::Tmux;
    let s = Server::start("tty");
    let env = format!(
        "env DOCKER_HOST=unix://{} DOCKER_CONFIG={}",
        s.socket.display(),
        s.dir.join("docker-config").display()
    );
    // docker run -it: the terminal's size from the start, then each change of it.
    let t = Tmux::start(
        "docker-run-it",
        &format!("{env} {DOCKER} run -it --name term local/bb sh; echo EXIT=$?; sleep 1000"),
    );
    t.wait_for("the shell's prompt", |s| s.contains("/ #"));
    t.keys(&["stty size; echo $TERM", "Enter"]);
    t.wait_for("the first size", |s| s.contains("30 100\nxterm"));
    t.run(&["resize-window", "-t", &t.session, "-x", "132", "-y", "40"]);
    t.ask_until("stty size", "the new size", "40 132");

    // docker exec -it into it, from a terminal of another size.
    let e = Tmux::start(
        "docker-exec-it",
        &format!("{env} {DOCKER} exec -it term sh; echo EXIT=$?; sleep 1000"),
    );
    e.wait_for("the exec's prompt", |s| s.contains("/ #"));
    e.run(&["resize-window", "-t", &e.session, "-x", "90", "-y", "25"]);
    e.ask_until("stty size; tty", "the exec's size", "25 90\n/dev/pts/");
    e.keys(&["exit 5", "Enter"]);
    e.wait_for("the exec's exit code", |s| s.contains("EXIT=5"));

    t.keys(&["exit 3", "Enter"]);
    t.wait_for("the run's exit code", |s| s.contains("EXIT=3"));
    // What the terminal showed is the container's log, raw.
    let logs = s.docker_ok(&["logs", "term"]);
    assert!(logs.contains("40 132\r\n"), "{logs:?}");
}

const DOCKER_PY_SCRIPT: &str = r#"
import sys, time
import docker

client = docker.DockerClient(base_url="unix://" + sys.argv[1], version="auto")
assert client.ping()
assert client.version()["ApiVersion"] == "1.44"

# run in the foreground: its stdout, as bytes.
out = client.containers.run("local/bb", ["sh", "-c", "echo hello; echo err >&2"], remove=True)
assert out == b"hello\n", out
try:
    client.containers.run("local/bb", ["sh", "-c", "exit 7"], remove=True)
    raise SystemExit("a failing container must raise ContainerError")
except docker.errors.ContainerError as e:
    assert e.exit_status == 7, e

ct = client.containers.run(
    "local/bb", ["sh", "-c", "echo ready; exec sleep 1000"], detach=True,
    name="py", labels={"suite": "docker-py"}, environment={"X": "1"},
)
for _ in range(1200):
    if b"ready" in ct.logs():
        break
    time.sleep(0.1)
assert ct.logs() == b"ready\n", ct.logs()
ct.reload()
assert ct.status == "running" and ct.name == "py" and ct.labels == {"suite": "docker-py"}
code, output = ct.exec_run(["sh", "-c", "echo $X; exit 2"])
assert (code, output) == (2, b"1\n"), (code, output)
assert [c.name for c in client.containers.list(filters={"label": "suite=docker-py"})] == ["py"]
assert client.containers.list(filters={"label": "suite=other"}) == []
ct.kill()
assert ct.wait()["StatusCode"] == 137
ct.remove()
try:
    client.containers.get("py")
    raise SystemExit("a removed container must be NotFound")
except docker.errors.NotFound:
    pass
assert "local/bb:latest" in client.images.get("local/bb").tags
try:
    client.images.get("nothing:here")
    raise SystemExit("a missing image must be ImageNotFound")
except docker.errors.ImageNotFound:
    pass
print("ok")
"#;

#[test]
fn the_docker_python_sdk_runs_execs_lists_and_removes_containers() {
    let python = python_with("docker==7.1.0", "docker")
        .unwrap_or_else(|why| panic!("the docker SDK (PyPI) is needed: {why}"));
    let s = Server::start("docker-py");
    let script = s.dir.join("sdk.py");
    std::fs::write(&script, DOCKER_PY_SCRIPT).unwrap();
    let o = Command::new(python)
        .arg(&script)
        .arg(&s.socket)
        .output()
        .unwrap();
    assert!(
        o.status.success() && stdout(&o) == "ok\n",
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn docker_cp_copies_files_and_trees_both_ways() {
    let s = Server::start("cp");
    s.docker_ok(&["run", "-d", "--name", "box", "local/bb", "sleep", "1000"]);
    let out = s.dir.join("out");
    std::fs::create_dir(&out).unwrap();
    // Out: a file into a directory, a tree under a new name.
    s.docker_ok(&["cp", "box:/etc/passwd", out.to_str().unwrap()]);
    let passwd = std::fs::read_to_string(out.join("passwd")).unwrap();
    assert!(passwd.starts_with("root:"), "{passwd}");
    s.docker_ok(&["cp", "box:/etc", out.join("etc-copy").to_str().unwrap()]);
    assert!(out.join("etc-copy/passwd").is_file());
    // In: a file into a directory and under a new name, a tree.
    let input = s.dir.join("in.txt");
    std::fs::write(&input, "from the host\n").unwrap();
    s.docker_ok(&["cp", input.to_str().unwrap(), "box:/tmp/"]);
    s.docker_ok(&["cp", input.to_str().unwrap(), "box:/tmp/renamed.txt"]);
    let tree = s.dir.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("sub/f"), "deep\n").unwrap();
    s.docker_ok(&["cp", tree.to_str().unwrap(), "box:/srv"]);
    assert_eq!(
        s.docker_ok(&[
            "exec",
            "box",
            "cat",
            "/tmp/in.txt",
            "/tmp/renamed.txt",
            "/srv/sub/f"
        ]),
        "from the host\nfrom the host\ndeep\n"
    );
    // What is not there: Docker's 404 wording, and nothing made.
    let o = s.docker(&["cp", "box:/nonexistent", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Could not find the file /nonexistent in container box"),
        "{}",
        stderr(&o)
    );
    let o = s.docker(&["cp", input.to_str().unwrap(), "box:/no/such/dir/x"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

#[test]
fn volumes_stats_tags_and_prunes_answer_as_docker_does() {
    let s = Server::start("volumes");
    assert_eq!(s.docker_ok(&["volume", "create", "keep"]), "keep\n");
    s.docker_ok(&["volume", "create", "-o", "size=100m", "small"]);
    let f = "{{.Name}} {{.Driver}} {{.Options.size}}";
    assert_eq!(
        s.docker_ok(&["volume", "inspect", "-f", f, "small"]).trim(),
        "small local 104857600"
    );
    // A volume outlives its containers.
    s.docker_ok(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        "local/bb",
        "sh",
        "-c",
        "echo kept > /data/f",
    ]);
    assert_eq!(
        s.docker_ok(&[
            "run",
            "--rm",
            "-v",
            "keep:/data",
            "local/bb",
            "cat",
            "/data/f"
        ]),
        "kept\n"
    );
    // `-v /path`: an anonymous volume, removed with the container by `rm -v`.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "-v",
        "/anon",
        "local/bb",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let names = s.docker_ok(&["volume", "ls", "-q"]);
    let anon: Vec<&str> = names.lines().filter(|n| n.len() == 32).collect();
    assert_eq!(anon.len(), 1, "{names}");
    let o = s.docker(&["volume", "rm", anon[0]]);
    assert!(
        stderr(&o).contains("is used by container"),
        "{}",
        stderr(&o)
    );

    // Statistics: one busy vCPU is about 100%, the VM's memory is the limit.
    let stats = s.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
        "busy",
    ]);
    let fields: Vec<&str> = stats.split_whitespace().collect();
    assert_eq!(fields[0], "busy", "{stats}");
    let cpu: f64 = fields[1].trim_end_matches('%').parse().unwrap();
    assert!((50.0..=110.0).contains(&cpu), "a spinning shell: {stats}");
    assert!(
        fields[4].ends_with("MiB") && !fields[4].starts_with('0'),
        "{stats}"
    );

    s.docker_ok(&["rm", "-f", "-v", "busy"]);
    let names = s.docker_ok(&["volume", "ls", "-q"]);
    assert!(!names.contains(anon[0]), "{names}");
    let o = s.docker(&["volume", "rm", "nope"]);
    assert!(
        stderr(&o).contains("get nope: no such volume"),
        "{}",
        stderr(&o)
    );
    // Prune: anonymous volumes only, unless -a; named ones stay.
    s.docker_ok(&["volume", "prune", "-f"]);
    assert_eq!(s.docker_ok(&["volume", "ls", "-q"]), "keep\nsmall\n");
    s.docker_ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(s.docker_ok(&["volume", "ls", "-q"]), "");

    // Tags, and container prune.
    s.docker_ok(&["tag", "local/bb", "mine/bb:2"]);
    let tags = s.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut tags: Vec<&str> = tags.lines().collect();
    tags.sort(); // (one image, two names: the CLI's order between them is its own)
    assert_eq!(tags, ["local/bb:latest", "mine/bb:2"]);
    s.docker_ok(&["create", "--name", "idle", "local/bb", "true"]);
    let pruned = s.docker_ok(&["container", "prune", "-f"]);
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
}

const TESTCONTAINERS_SCRIPT: &str = r#"
import sys, urllib.request
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import wait_for_logs

serve = "mkdir -p /www && echo hello-from-cabin > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"
with DockerContainer("local/bb").with_command(["sh", "-c", serve]).with_exposed_ports(8080) as c:
    wait_for_logs(c, "serving", timeout=120)
    host = c.get_container_host_ip()
    port = c.get_exposed_port(8080)
    body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=30).read()
    assert body == b"hello-from-cabin\n", body
    print(host, port)
print("ok")
"#;

#[test]
fn testcontainers_starts_a_container_waits_for_its_log_and_reaches_its_port() {
    let python = python_with("testcontainers==4.15.0", "testcontainers")
        .unwrap_or_else(|why| panic!("testcontainers (PyPI) is needed: {why}"));
    let s = Server::start("testcontainers");
    let script = s.dir.join("tc.py");
    std::fs::write(&script, TESTCONTAINERS_SCRIPT).unwrap();
    let o = Command::new(python)
        .arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
        // Its reaper is an image from Docker Hub, out of reach here; the container is
        // removed by the `with` block all the same.
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        // These machines are containers themselves (/.dockerenv), which would make
        // testcontainers look for the container through a gateway as in
        // Docker-in-Docker; cabin publishes on this host, as on any other.
        .env("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        o.status.success() && out.ends_with("ok\n"),
        "{out}{}",
        stderr(&o)
    );
    assert!(out.starts_with("localhost "), "{out}");
    // Gone with its `with` block.
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
}

#[test]
fn events_tell_container_lifecycles_and_image_tags_with_filters_and_since() {
    let s = Server::start("events");
    let since = cabin_base_now().to_string();
    let o = s.docker(&[
        "run", "--rm", "--name", "ev", "local/bb", "sh", "-c", "exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    s.docker_ok(&[
        "create", "--name", "ev2", "--label", "k=v", "local/bb", "true",
    ]);
    s.docker_ok(&["rm", "ev2"]);
    s.docker_ok(&["tag", "local/bb", "ev/bb:1"]);
    s.docker_ok(&["rmi", "ev/bb:1"]);
    s.docker_ok(&["run", "-d", "--name", "ev3", "local/bb", "sleep", "1000"]);
    s.docker_ok(&["stop", "-t", "1", "ev3"]);
    s.docker_ok(&["start", "ev3"]);
    s.docker_ok(&["kill", "ev3"]);
    s.docker_ok(&["wait", "ev3"]);
    s.docker_ok(&["rm", "ev3"]);
    // A restart by the policy is a die and a start, however quick.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ev4",
        "--restart",
        "on-failure:1",
        "local/bb",
        "sh",
        "-c",
        "exit 3",
    ]);
    eventually("ev4 to have given up", || {
        s.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.RestartCount}}",
            "ev4",
        ]) == "exited 1\n"
    });
    let events = |filter: &str, format: &str| {
        let until = (cabin_base_now() + 1).to_string();
        s.docker_ok(&[
            "events", "--since", &since, "--until", &until, "--filter", filter, "--format", format,
        ])
    };
    let want = "create ev \nstart ev \ndie ev 4\ndestroy ev \n";
    let f = "{{.Action}} {{.Actor.Attributes.name}} {{index .Actor.Attributes \"exitCode\"}}";
    eventually("the container events", || events("container=ev", f) == want);
    assert_eq!(events("label=k=v", "{{.Action}}"), "create\ndestroy\n");
    assert_eq!(
        events(
            "container=ev4",
            "{{.Action}} {{index .Actor.Attributes \"exitCode\"}}"
        ),
        "create \nstart \ndie 3\nstart \ndie 3\n"
    );
    // stop is a kill (SIGTERM), the death, then the stop; kill is SIGKILL by default.
    assert_eq!(
        events(
            "container=ev3",
            "{{.Action}} {{index .Actor.Attributes \"signal\"}}"
        ),
        "create \nstart \nkill 15\ndie \nstop \nstart \nkill 9\ndie \ndestroy \n"
    );
    assert_eq!(
        events("type=image", "{{.Action}} {{.Actor.ID}}"),
        "tag ev/bb:1\nuntag ev/bb:1\n"
    );
    let o = s.docker(&["events", "--filter", "colour=red", "--until", &since]);
    assert!(stderr(&o).contains("invalid filter"), "{}", stderr(&o));
}

fn cabin_base_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn top_rename_and_restart_policies_that_outlive_a_killed_service() {
    let mut s = Server::start("top");
    let id = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "t1",
        "--restart",
        "always",
        "local/bb",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    let top = s.docker_ok(&["top", "t1"]);
    let mut lines = top.lines();
    let titles: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    assert!(
        lines.any(|l| l.starts_with("root") && l.ends_with("sleep 1000")),
        "{top}"
    );
    let o = s.docker(&["top", "t1", "-o", "pid"]);
    assert!(stderr(&o).contains("no ps options"), "{}", stderr(&o));

    s.docker_ok(&["rename", "t1", "t2"]);
    s.docker_ok(&["create", "--name", "t3", "local/bb", "true"]);
    let o = s.docker(&["rename", "t2", "t3"]);
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    let o = s.docker(&["rename", "t2", "bad/name"]);
    assert!(
        stderr(&o).contains("invalid container name"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        s.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]),
        "t3\nt2\n"
    );
    // `docker system df`: one image, used by both containers, one of them running.
    let df = s.docker_ok(&["system", "df"]);
    let row = |kind: &str| -> Vec<String> {
        let line = df.lines().find(|l| l.starts_with(kind)).unwrap_or("");
        line[kind.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("Images")[..2], ["1", "1"], "{df}");
    assert_eq!(row("Containers")[..2], ["2", "1"], "{df}");
    assert_eq!(row("Local Volumes")[..2], ["0", "0"], "{df}");
    assert_eq!(row("Build Cache")[..2], ["0", "0"], "{df}");
    // Builds are not there yet: a clear 501, never a hang, and never a broken pipe
    // while the CLI is still sending a context larger than the socket's buffers.
    let ctx = s.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM local/bb\n").unwrap();
    std::fs::write(ctx.join("weight"), vec![7u8; 16 << 20]).unwrap();
    let o = s
        .docker_cmd(&["build", "-q", ctx.to_str().unwrap()])
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot build images yet"),
        "{}",
        stderr(&o)
    );

    // The service and the container's supervisor are killed (a crash, a reboot): when
    // the service starts again, the `always` container comes back.
    let record = s.data().join("containers").join(id).join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let supervisor = state["supervisor_pid"].as_u64().unwrap() as i32;
    s.process.kill().unwrap();
    s.process.wait().unwrap();
    // SAFETY: kill(2) on a pid this test's own container supervisor holds.
    assert_eq!(unsafe { libc::kill(supervisor, libc::SIGKILL) }, 0);
    eventually("the supervisor to be gone", || {
        // Gone, or a zombie nobody reaped yet.
        std::fs::read_to_string(format!("/proc/{supervisor}/stat"))
            .map(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true)
    });
    s.process = serve(&s.data(), &s.socket);
    eventually("the container to run again", || {
        s.docker_ok(&["inspect", "-f", "{{.State.Status}}", "t2"]) == "running\n"
    });
    assert!(s.docker_ok(&["top", "t2"]).contains("sleep 1000"));
    // A container stopped by its user stays stopped.
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{.State.Status}}", "t3"]),
        "created\n"
    );
}

#[test]
fn user_networks_let_containers_find_each_other_by_name_and_alias() {
    let s = Server::start("net");
    let id = s.docker_ok(&["network", "create", "--label", "k=v", "n1"]);
    assert_eq!(id.trim().len(), 32);
    assert_eq!(
        s.docker_ok(&[
            "network",
            "ls",
            "--filter",
            "label=k=v",
            "--format",
            "{{.Name}}"
        ]),
        "n1\n"
    );
    let subnet = s.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
        "n1",
    ]);
    assert!(
        subnet.starts_with("10.89.") && subnet.trim().ends_with(".0/24"),
        "{subnet}"
    );
    for (args, says) in [
        (&["network", "create", "n1"][..], "already exists"),
        (&["network", "create", "host"][..], "network mode"),
        (
            &["network", "create", "-d", "overlay", "ov"][..],
            "driver bridge",
        ),
        (&["network", "rm", "bridge"][..], "pre-defined"),
        (
            &["run", "--rm", "--network", "nowhere", "local/bb", "true"][..],
            "network nowhere not found",
        ),
    ] {
        let o = s.docker(args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let a = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "--network-alias",
        "web",
        "local/bb",
        "sleep",
        "1000",
    ]);
    let a = a.trim();
    // Another container on n1 reaches `a` by name, alias and short ID; a container on
    // the default network cannot.
    let o = s.docker_ok(&[
        "run", "--rm", "--network", "n1", "local/bb", "sh", "-c",
        &format!("ping -c1 -W5 a >/dev/null && ping -c1 -W5 web >/dev/null && ping -c1 -W5 {} >/dev/null && echo reached", &a[..12]),
    ]);
    assert_eq!(o, "reached\n");
    let o = s.docker(&["run", "--rm", "local/bb", "ping", "-c1", "-W2", "web"]);
    assert!(!o.status.success());
    // Nor can a container of another network, even by address (while one on n1 can).
    let ip = s.docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        "a",
    ]);
    let ip = ip.trim();
    assert!(ip.starts_with("10.89."), "{ip}");
    s.docker_ok(&["network", "create", "n2"]);
    let o = s.docker(&[
        "run",
        "--rm",
        "--network",
        "n2",
        "local/bb",
        "ping",
        "-c1",
        "-W2",
        ip,
    ]);
    assert!(!o.status.success(), "n2 reached n1: {}", stdout(&o));
    s.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "local/bb",
        "ping",
        "-c1",
        "-W5",
        ip,
    ]);
    s.docker_ok(&["network", "rm", "n2"]);
    // The same network from cabin's own CLI: one namespace.
    let cabin = |args: &[&str]| cabin_in(&s.data()).args(args).output().unwrap();
    assert_eq!(stdout(&cabin(&["network", "ls", "-q"])), "n1\n");
    let o = cabin(&[
        "run",
        "--rm",
        "--network",
        "n1",
        "local/bb",
        "ping",
        "-c1",
        "-W5",
        "web",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cabin(&["network", "rm", "n1"]);
    assert!(
        stderr(&o).contains("has containers attached (a)"),
        "{}",
        stderr(&o)
    );
    // Seen from the network and from the container.
    let members = s.docker_ok(&[
        "network",
        "inspect",
        "-f",
        "{{range $id, $c := .Containers}}{{$id}} {{$c.Name}}{{end}}",
        "n1",
    ]);
    assert_eq!(members, format!("{a} a\n"));
    let aliases = s.docker_ok(&[
        "inspect", "-f", "{{.HostConfig.NetworkMode}} {{range .NetworkSettings.Networks}}{{.Aliases}} {{.Gateway}}{{end}}", "a",
    ]);
    assert!(
        aliases.starts_with(&format!("n1 [web {}] 10.89.", &a[..12])),
        "{aliases}"
    );
    let o = s.docker(&["network", "rm", "n1"]);
    assert!(
        stderr(&o).contains("has containers attached (a)"),
        "{}",
        stderr(&o)
    );
    // A container that is not running is moved between networks for its next start.
    s.docker_ok(&[
        "create", "--name", "b", "local/bb", "ping", "-c1", "-W5", "a",
    ]);
    s.docker_ok(&["network", "connect", "--alias", "bee", "n1", "b"]);
    let o = s.docker(&["start", "-a", "b"]);
    assert!(
        o.status.success() && stdout(&o).contains("1 packets received"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let o = s.docker(&["network", "connect", "n1", "a"]);
    assert!(stderr(&o).contains("is running"), "{}", stderr(&o));
    s.docker_ok(&["network", "disconnect", "n1", "b"]);
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", "b"]),
        "default\n"
    );
    s.docker_ok(&["rm", "-f", "a", "b"]);
    s.docker_ok(&["network", "create", "unused"]);
    assert_eq!(
        s.docker_ok(&["network", "prune", "-f"]),
        "Deleted Networks:\nn1\nunused\n\n"
    );
    assert_eq!(
        s.docker_ok(&["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nnone\n"
    );
}

#[test]
fn docker_compose_runs_a_project_whose_services_reach_each_other_by_name() {
    let s = Server::start("compose");
    let project = s.dir.join("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("docker-compose.yml"),
        r#"version: "2.4"
services:
  db:
    image: local/bb
    command: ["sh", "-c", "mkdir -p /www && echo hello-from-db > /www/index.html && echo db ready && httpd -f -p 8080 -h /www"]
    healthcheck:
      test: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/ >/dev/null"]
      interval: 1s
      retries: 30
  web:
    image: local/bb
    command: ["sh", "-c", "echo web up; sleep 1000"]
    depends_on:
      db:
        condition: service_healthy
    volumes:
      - data:/data
volumes:
  data: {}
"#,
    )
    .unwrap();
    let compose = |args: &[&str]| {
        let o = Command::new("docker-compose")
            .current_dir(&project)
            .env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
            .env("DOCKER_CONFIG", s.dir.join("docker-config"))
            .args(["--no-ansi", "-p", "proj"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("docker-compose (Debian's docker-compose package) runs");
        assert!(
            o.status.success(),
            "docker-compose {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    };
    // `up` creates web only once db's health check passes.
    compose(&["up", "-d"]);
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", "proj_db_1"]),
        "healthy\n"
    );
    let ps = compose(&["ps"]);
    for name in ["proj_db_1", "proj_web_1"] {
        assert!(
            ps.lines().filter(|l| l.starts_with(name)).count() == 1
                && ps.lines().any(|l| l.starts_with(name) && l.contains(" Up")),
            "{ps}"
        );
    }
    // web reaches db by its service name, on the project's network.
    eventually("db to answer web", || {
        let o = Command::new("docker-compose")
            .current_dir(&project)
            .env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
            .args([
                "--no-ansi",
                "-p",
                "proj",
                "exec",
                "-T",
                "web",
                "wget",
                "-qO-",
                "http://db:8080/",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        stdout(&o) == "hello-from-db\n"
    });
    assert!(compose(&["logs", "--no-color", "db"]).contains("db ready"));
    assert!(s
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("proj_default"));
    compose(&["down", "-v"]);
    assert_eq!(s.docker_ok(&["ps", "-aq"]), "");
    assert!(!s
        .docker_ok(&["network", "ls", "--format", "{{.Name}}"])
        .contains("proj_default"));
    assert_eq!(s.docker_ok(&["volume", "ls", "-q"]), "");
}

#[test]
fn health_checks_run_in_the_container_and_show_in_ps_inspect_and_events() {
    let s = Server::start("health");
    let since = cabin_base_now().to_string();
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "test -f /tmp/ok",
        "--health-interval",
        "500ms",
        "--health-retries",
        "2",
        "local/bb",
        "sh",
        "-c",
        "sleep 4; touch /tmp/ok; sleep 1000",
    ]);
    let status = || s.docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", "h"]);
    // Running means it has a health from the start (compose's service_healthy takes a
    // running container without one for a service without a check).
    let first = status();
    assert!(
        ["starting\n", "unhealthy\n", "healthy\n"].contains(&first.as_str()),
        "the health right after `docker run -d`: {first:?}"
    );
    eventually("h to be unhealthy", || status() == "unhealthy\n");
    assert!(s
        .docker_ok(&["ps", "--format", "{{.Status}}"])
        .contains("(unhealthy)"));
    eventually("h to be healthy", || status() == "healthy\n");
    assert_eq!(
        s.docker_ok(&["ps", "--filter", "health=healthy", "--format", "{{.Names}}"]),
        "h\n"
    );
    assert_eq!(
        s.docker_ok(&["ps", "--filter", "health=unhealthy", "-q"]),
        ""
    );
    let o = cabin_in(&s.data()).args(["ps"]).output().unwrap();
    assert!(stdout(&o).contains("(healthy)"), "{}", stdout(&o));
    let probes = s.docker_ok(&[
        "inspect",
        "-f",
        "{{range .State.Health.Log}}{{.ExitCode}}{{end}} {{json .Config.Healthcheck.Test}}",
        "h",
    ]);
    assert!(probes.contains("10"), "a failure, then a success: {probes}");
    assert!(
        probes.ends_with("[\"CMD-SHELL\",\"test -f /tmp/ok\"]\n"),
        "{probes}"
    );
    let until = (cabin_base_now() + 1).to_string();
    let events = s.docker_ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "container=h",
        "--filter",
        "type=container",
        "--format",
        "{{.Action}}",
    ]);
    let health: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("health_status"))
        .collect();
    assert_eq!(
        health,
        [
            "health_status: starting",
            "health_status: unhealthy",
            "health_status: healthy"
        ],
        "{events}"
    );
    // Without a check there is no Health; a bad check is refused at create.
    s.docker_ok(&["create", "--name", "plain", "local/bb", "true"]);
    assert_eq!(
        s.docker_ok(&["inspect", "-f", "{{json .State.Health}}", "plain"]),
        "null\n"
    );
    let o = s.docker(&[
        "create",
        "--health-cmd",
        "true",
        "--health-interval",
        "1ns",
        "local/bb",
    ]);
    assert!(stderr(&o).contains("at least 1ms"), "{}", stderr(&o));
}

#[test]
fn images_are_saved_loaded_and_pushed_after_a_login_with_their_history() {
    let s = Server::start("transfer");
    let regdir = s.dir.join("registry");
    let auth = htpasswd_auth(&regdir, "tester", "s3cret");
    let reg = start_registry(&regdir, |_| auth);
    let history = s.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "local/bb",
    ]);
    assert!(history.contains("cabin image import"), "{history}");

    // docker save, rmi, docker load: the same image back.
    let id = s.docker_ok(&["inspect", "-f", "{{.Id}}", "local/bb"]);
    let tar = s.dir.join("bb.tar");
    s.docker_ok(&["save", "-o", tar.to_str().unwrap(), "local/bb"]);
    s.docker_ok(&["rmi", "local/bb"]);
    assert_eq!(s.docker_ok(&["images", "-q"]), "");
    let loaded = s.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: local/bb:latest"), "{loaded}");
    assert_eq!(s.docker_ok(&["inspect", "-f", "{{.Id}}", "local/bb"]), id);
    // A damaged archive is refused and stores nothing.
    let bad = s.dir.join("bad.tar");
    std::fs::write(&bad, vec![7u8; 4096]).unwrap();
    let o = s.docker(&["load", "-i", bad.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert_eq!(s.docker_ok(&["images", "-q"]).lines().count(), 1);

    // Push: refused without a login, done with one (docker login checks it here).
    let target = format!("{}/pushed/bb:1", reg.addr);
    s.docker_ok(&["tag", "local/bb", &target]);
    let o = s.docker(&["push", &target]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let login = |password: &str| {
        let mut c = s.docker_cmd(&["login", &reg.addr, "-u", "tester", "--password-stdin"]);
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let o = login("wrong");
    assert!(!o.status.success(), "{}", stdout(&o));
    let o = login("s3cret");
    assert!(
        stdout(&o).contains("Login Succeeded"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let pushed = s.docker_ok(&["push", &target]);
    assert!(pushed.contains("1: digest: sha256:"), "{pushed}");
    // The registry has it: it comes back after the local copy is gone.
    s.docker_ok(&["rmi", &target]);
    s.docker_ok(&["pull", &target]);
    assert_eq!(s.docker_ok(&["inspect", "-f", "{{.Id}}", &target]), id);
}

/// In the differential script: the step prints a new ID.
const ID: &str = "<an ID>";

#[test]
fn the_same_docker_cli_script_gives_the_same_answers_from_dockerd_and_cabin() {
    let s = Server::start("diff");
    let d = Dockerd::start(&s.dir.join("dockerd"));
    // The same root filesystem as an image in both.
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(busybox_rootfs())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = d
        .cmd(&["import", "-", "local/bb"])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        tar.wait().unwrap().success() && o.status.success(),
        "{}",
        stderr(&o)
    );
    let host_file = s.dir.join("in.txt");
    std::fs::write(&host_file, "from the host\n").unwrap();
    let steps: Vec<(Vec<String>, Option<&str>)> = {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let n = ["--network", "none"];
        let run = |rest: &[&str]| {
            let mut a = v(&["run", "--rm"]);
            a.extend(v(&n));
            a.extend(v(rest));
            a
        };
        vec![
            (
                run(&["local/bb", "sh", "-c", "echo out; echo err >&2; exit 3"]),
                Some("err"),
            ),
            (
                run(&[
                    "-e",
                    "A=1",
                    "-w",
                    "/tmp",
                    "-u",
                    "1000:1000",
                    "local/bb",
                    "sh",
                    "-c",
                    "echo $A $(pwd) $(id -u):$(id -g)",
                ]),
                None,
            ),
            (run(&["local/bb", "no-such-command"]), None),
            (run(&["local/bb", "/etc"]), None),
            (run(&["--entrypoint", "echo", "local/bb", "a", "b"]), None),
            (
                run(&["--read-only", "local/bb", "touch", "/x"]),
                Some("Read-only file system"),
            ),
            (run(&["--hostname", "h1", "local/bb", "hostname"]), None),
            (
                v(&[
                    "create",
                    "--name",
                    "d1",
                    "--network",
                    "none",
                    "--label",
                    "k=v",
                    "local/bb",
                    "sh",
                    "-c",
                    "echo hi; exit 5",
                ]),
                Some(ID),
            ),
            (v(&["start", "-a", "d1"]), None),
            (v(&["wait", "d1"]), None),
            (
                v(&[
                    "inspect",
                    "-f",
                    "{{.State.Status}} {{.State.ExitCode}} {{.Config.Labels.k}} {{.Name}}",
                    "d1",
                ]),
                None,
            ),
            (v(&["logs", "d1"]), None),
            (
                v(&[
                    "ps",
                    "-a",
                    "--filter",
                    "label=k=v",
                    "--format",
                    "{{.Names}} {{.State}}",
                ]),
                None,
            ),
            (
                v(&[
                    "run",
                    "-d",
                    "--name",
                    "d2",
                    "--network",
                    "none",
                    "local/bb",
                    "sleep",
                    "1000",
                ]),
                Some(ID),
            ),
            (v(&["exec", "d2", "sh", "-c", "exit 7"]), None),
            (v(&["exec", "-e", "X=y", "d2", "sh", "-c", "echo $X"]), None),
            (
                v(&["cp", host_file.to_str().unwrap(), "d2:/tmp/in.txt"]),
                None,
            ),
            (v(&["exec", "d2", "cat", "/tmp/in.txt"]), None),
            (v(&["kill", "d2"]), None),
            (v(&["wait", "d2"]), None),
            (
                v(&[
                    "inspect",
                    "-f",
                    "{{.State.Running}} {{.State.ExitCode}}",
                    "d2",
                ]),
                None,
            ),
            (v(&["start", "d2"]), None),
            (v(&["stop", "-t", "1", "d2"]), None),
            (v(&["rm", "d1", "d2"]), None),
            (v(&["ps", "-a", "--format", "{{.Names}}"]), None),
            (v(&["rm", "nope"]), Some("No such container: nope")),
            (v(&["volume", "create", "v1"]), None),
            (
                run(&[
                    "-v",
                    "v1:/data",
                    "local/bb",
                    "sh",
                    "-c",
                    "echo kept > /data/f",
                ]),
                None,
            ),
            (run(&["-v", "v1:/data", "local/bb", "cat", "/data/f"]), None),
            (v(&["volume", "rm", "v1"]), None),
            (v(&["volume", "ls", "-q"]), None),
            (
                v(&["rename", "nope", "other"]),
                Some("No such container: nope"),
            ),
            (
                run(&["--init", "local/bb", "sh", "-c", "test $$ != 1 && echo not-pid-1"]),
                None,
            ),
            (
                run(&[
                    "--mount", "type=volume,source=v2,target=/m", "--mount",
                    "type=tmpfs,target=/t", "--tmpfs", "/scratch", "local/bb", "sh", "-c",
                    "echo a > /m/f && echo b > /t/f && echo c > /scratch/f && cat /m/f /t/f /scratch/f",
                ]),
                None,
            ),
            (v(&["volume", "rm", "v2"]), None),
            (
                run(&[
                    "-v", &format!("{}:/h:ro", s.dir.display()), "local/bb", "sh", "-c",
                    "cat /h/in.txt; echo no > /h/x",
                ]),
                Some("Read-only file system"),
            ),
        ]
    };
    for (args, says) in &steps {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let theirs = d.cmd(&args).output().unwrap();
        let ours = s.docker(&args);
        let what = format!(
            "docker {args:?}\n dockerd: {:?} {:?} {:?}\n cabin:   {:?} {:?} {:?}",
            theirs.status.code(),
            stdout(&theirs),
            stderr(&theirs),
            ours.status.code(),
            stdout(&ours),
            stderr(&ours)
        );
        assert_eq!(theirs.status.code(), ours.status.code(), "{what}");
        if *says == Some(ID) {
            // IDs differ by nature (and in length: cabin's have 32 hex digits).
            let id = |o: &Output| {
                let t = stdout(o);
                t.ends_with('\n')
                    && t.trim().len() >= 32
                    && t.trim().bytes().all(|b| b.is_ascii_hexdigit())
            };
            assert!(id(&theirs) && id(&ours), "{what}");
            continue;
        }
        assert_eq!(stdout(&theirs), stdout(&ours), "{what}");
        if let Some(needle) = says {
            assert!(
                stderr(&theirs).contains(needle) && stderr(&ours).contains(needle),
                "{what}"
            );
        }
    }
}

#[test]
fn clients_that_vanish_and_vms_that_die_leave_the_server_serving_and_nothing_behind() {
    use std::io::BufRead;
    let s = Server::start("vanish");
    let id = s.docker_ok(&["run", "-d", "--name", "c", "local/bb", "sleep", "1000"]);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.process.id()))
            .unwrap()
            .count()
    };
    assert_eq!(s.docker_ok(&["exec", "c", "echo", "warm"]), "warm\n");
    assert_eq!(s.docker_ok(&["logs", "c"]), "");
    let before = fds();
    // Clients killed in the middle of an exec with output, an exec reading its stdin, an
    // attach and a followed log.
    let started = |args: &[&str], input: Option<&str>, first_line: Option<&str>| {
        let mut child = s
            .docker_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if let Some(text) = input {
            writeln!(child.stdin.as_ref().unwrap(), "{text}").unwrap();
        }
        match first_line {
            Some(want) => {
                let mut line = String::new();
                std::io::BufReader::new(child.stdout.as_mut().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                assert_eq!(line.trim_end(), want, "{args:?}");
            }
            None => std::thread::sleep(Duration::from_millis(700)),
        }
        child
    };
    let clients = [
        started(
            &[
                "exec",
                "c",
                "sh",
                "-c",
                "while :; do echo x; sleep 0.1; done",
            ],
            None,
            Some("x"),
        ),
        started(&["exec", "-i", "c", "cat"], Some("hello"), Some("hello")),
        started(&["attach", "c"], None, None),
        started(&["logs", "-f", "c"], None, None),
    ];
    for mut c in clients {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    assert_eq!(s.docker_ok(&["exec", "c", "echo", "still"]), "still\n");
    eventually("the server to let go of the vanished clients", || {
        fds() <= before
    });

    // The VM dies under the running container: it is exited, and the rest goes on.
    let record = s
        .data()
        .join("containers")
        .join(id.trim())
        .join("state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let supervisor = state["supervisor_pid"].as_u64().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children")).unwrap();
    let qemu: i32 = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("qemu"))
        })
        .expect("the supervisor runs QEMU");
    // SAFETY: kill(2) on the QEMU of this test's own container.
    assert_eq!(unsafe { libc::kill(qemu, libc::SIGKILL) }, 0);
    eventually("c to have exited", || {
        s.docker_ok(&["inspect", "-f", "{{.State.Status}}", "c"]) == "exited\n"
    });
    let state = s.docker_ok(&["inspect", "-f", "{{.State.ExitCode}} {{.State.Error}}", "c"]);
    assert!(!state.starts_with("0 "), "{state}");
    assert_eq!(
        s.docker_ok(&["run", "--rm", "local/bb", "echo", "fine"]),
        "fine\n"
    );
    s.docker_ok(&["rm", "c"]);
    eventually("the server to hold no more than at the start", || {
        fds() <= before
    });
}
