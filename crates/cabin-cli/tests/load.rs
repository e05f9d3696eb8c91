//! Servers under load: `cabin serve` with the Docker API (unix socket) and Lume's API
//! (loopback TCP) answering 50 concurrent clients at once: reads of every kind, answers
//! that must be 404s, and a bounded number of container runs through the Docker API in
//! the middle of it. Every answer must be the expected one, and after thousands of
//! requests the server must hold no more descriptors, threads, processes or container
//! records than before. Prints p50/p99 latencies and the server's memory before and
//! after. It runs two rounds, and memory must level off in the second.
//! `CABIN_LOAD_SECONDS` (default 10) and `CABIN_LOAD_STARTS` (default 2) set each round's
//! length and number of container runs; `bench/load.sh` runs it longer.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

const CLIENTS: usize = 50;

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Docker,
    Lume,
}

/// One kind of request and the status it must get.
struct Probe {
    api: Api,
    method: Method,
    path: String,
    body: &'static str,
    want: StatusCode,
}

fn get(api: Api, path: &str, want: StatusCode) -> Probe {
    Probe {
        api,
        method: Method::GET,
        path: path.to_string(),
        body: "",
        want,
    }
}

/// A connection to one of the two servers.
type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

enum Conn {
    Docker(Sender),
    Lume(Sender),
}

struct Target {
    socket: PathBuf,
    port: u16,
}

async fn handshake<S>(stream: S) -> std::io::Result<Sender>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn connect(t: &Target, api: Api) -> std::io::Result<Conn> {
    Ok(match api {
        Api::Docker => {
            Conn::Docker(handshake(tokio::net::UnixStream::connect(&t.socket).await?).await?)
        }
        Api::Lume => Conn::Lume(
            handshake(tokio::net::TcpStream::connect(("127.0.0.1", t.port)).await?).await?,
        ),
    })
}

/// Sends one request on `conn` (connecting first when there is none or it closed);
/// its status and body.
async fn send(
    t: &Target,
    conn: &mut Option<Conn>,
    api: Api,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(StatusCode, Bytes), String> {
    let usable = match conn {
        Some(Conn::Docker(s)) if api == Api::Docker => !s.is_closed(),
        Some(Conn::Lume(s)) if api == Api::Lume => !s.is_closed(),
        _ => false,
    };
    if !usable {
        *conn = Some(connect(t, api).await.map_err(|e| format!("connect: {e}"))?);
    }
    let sender = match conn.as_mut().expect("connected") {
        Conn::Docker(s) | Conn::Lume(s) => s,
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{path}: body: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

#[derive(Default)]
struct Results {
    /// Each answered read: its probe's index and how long it took.
    reads: Vec<(usize, Duration)>,
    runs: Vec<Duration>,
    failures: Vec<String>,
}

/// A container run through the Docker API: create, start, wait, remove.
async fn container_run(t: &Target, conn: &mut Option<Conn>) -> Result<(), String> {
    let (st, body) = send(
        t,
        conn,
        Api::Docker,
        Method::POST,
        "/v1.47/containers/create",
        r#"{"Image":"local/bb","Cmd":["sh","-c","exit 0"]}"#,
    )
    .await?;
    if st != StatusCode::CREATED {
        return Err(format!("create: {st} {body:?}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let id = v["Id"].as_str().ok_or("create: no Id")?.to_string();
    let steps = [
        (
            Method::POST,
            format!("/v1.47/containers/{id}/start"),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::POST,
            format!("/v1.47/containers/{id}/wait"),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("/v1.47/containers/{id}"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (m, path, want) in steps {
        let (st, body) = send(t, conn, Api::Docker, m, &path, "").await?;
        if st != want {
            return Err(format!("{path}: {st} {body:?}"));
        }
        let code =
            || serde_json::from_slice::<serde_json::Value>(&body).ok()?["StatusCode"].as_i64();
        if path.ends_with("/wait") && code() != Some(0) {
            return Err(format!("wait: {body:?}"));
        }
    }
    Ok(())
}

/// One client: reads from `probes` in turn (starting at `first`), keeping its
/// connection or opening one per request; client 0 also runs `starts` containers.
async fn client(
    n: usize,
    t: Arc<Target>,
    probes: Arc<Vec<Probe>>,
    stop: Arc<AtomicBool>,
    starts: u64,
    out: Arc<Mutex<Results>>,
) {
    let keep_alive = n.is_multiple_of(2);
    let mut conn = None;
    let mut k = n;
    let mut runs_left = if n == 0 { starts } else { 0 };
    while !stop.load(Ordering::Relaxed) {
        if runs_left > 0 {
            runs_left -= 1;
            let t0 = Instant::now();
            let r = container_run(&t, &mut conn).await;
            let mut o = out.lock().unwrap();
            match r {
                Ok(()) => o.runs.push(t0.elapsed()),
                Err(e) => o.failures.push(format!("container run: {e}")),
            }
            continue;
        }
        let i = k % probes.len();
        let p = &probes[i];
        k += 1;
        if !keep_alive {
            conn = None;
        }
        let t0 = Instant::now();
        let r = send(&t, &mut conn, p.api, p.method.clone(), &p.path, p.body).await;
        let took = t0.elapsed();
        let mut o = out.lock().unwrap();
        match r {
            Ok((st, _)) if st == p.want => o.reads.push((i, took)),
            Ok((st, body)) => o.failures.push(format!(
                "{} {}: {st} (wanted {}): {}",
                p.method,
                p.path,
                p.want,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            Err(e) => o.failures.push(e),
        }
    }
}

/// What the server holds: memory, descriptors, threads.
#[derive(Debug, Clone, Copy)]
struct Held {
    rss_kib: u64,
    fds: usize,
    threads: usize,
}

fn held(pid: u32) -> Held {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    Held {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
        threads: field("Threads:") as usize,
    }
}

/// Processes started for `data` (their environment names it), the server's excepted.
fn processes_of(data: &Path, server: u32) -> usize {
    let needle = format!("CABIN_DATA_DIR={}", data.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != server)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .count()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `CLIENTS` clients at once on `target` for `seconds`.
fn hammer(
    rt: &tokio::runtime::Runtime,
    target: &Arc<Target>,
    probes: &Arc<Vec<Probe>>,
    seconds: u64,
    starts: u64,
    results: &Arc<Mutex<Results>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    rt.block_on(async {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|n| {
                tokio::spawn(client(
                    n,
                    target.clone(),
                    probes.clone(),
                    stop.clone(),
                    starts,
                    results.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Per probe: answers, p50, p99.
fn per_probe(probes: &[Probe], r: &Results) -> Vec<(usize, Duration, Duration)> {
    (0..probes.len())
        .map(|i| {
            let mut d: Vec<Duration> = r
                .reads
                .iter()
                .filter(|(j, _)| *j == i)
                .map(|(_, d)| *d)
                .collect();
            d.sort();
            (d.len(), percentile(&d, 0.5), percentile(&d, 0.99))
        })
        .collect()
}

#[test]
fn fifty_clients_get_every_answer_and_the_server_keeps_nothing_after_thousands_of_requests() {
    let seconds = env_number("CABIN_LOAD_SECONDS", 10);
    let starts = env_number("CABIN_LOAD_STARTS", 2);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    import_busybox(&data, "local/bb");
    let o = cabin_in(&data)
        .args(["create", "--name", "known", "local/bb", "true"])
        .output()
        .unwrap();
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = cabin_in(&data)
        .args(["vm", "create", "known", "--disk-size", "10GB"])
        .output()
        .unwrap();
    assert!(o.status.success(), "vm create: {}", stderr(&o));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let socket = dir.path().join("docker.sock");
    let mut cmd = cabin_in(&data);
    cmd.args(["serve", "--port", &port.to_string(), "--docker-socket"])
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut server = spawn_for_test_process(cmd).unwrap();
    wait_for("both APIs", Duration::from_secs(20), || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let pid = server.id();

    use Api::{Docker, Lume};
    let ok = StatusCode::OK;
    let missing = StatusCode::NOT_FOUND;
    // Lume answers a VM it does not have with 400, and so does cabin (its clients
    // expect Lume's codes).
    let no_vm = StatusCode::BAD_REQUEST;
    let probes = Arc::new(vec![
        get(Docker, "/_ping", ok),
        get(Docker, "/v1.47/version", ok),
        get(Docker, "/v1.47/info", ok),
        get(Docker, "/v1.47/containers/json?all=1", ok),
        get(Docker, "/v1.47/containers/known/json", ok),
        get(Docker, "/v1.47/containers/nosuch/json", missing),
        get(Docker, "/v1.47/images/json", ok),
        get(Docker, "/v1.47/images/local/bb/json", ok),
        get(Docker, "/v1.47/volumes", ok),
        get(Docker, "/v1.47/networks", ok),
        get(Lume, "/lume/vms", ok),
        get(Lume, "/lume/vms/known", ok),
        get(Lume, "/lume/vms/nosuch", no_vm),
        get(Lume, "/lume/config", ok),
        get(Lume, "/lume/host/status", ok),
        get(Lume, "/health", ok),
    ]);
    let target = Arc::new(Target {
        socket: socket.clone(),
        port,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Warm-up: one of each request and one container run, so that what the server
    // makes once (its caches, its log's lines) is there before it is measured.
    let warm = rt.block_on(async {
        let mut conn = None;
        for p in probes.iter() {
            send(&target, &mut conn, p.api, p.method.clone(), &p.path, p.body).await?;
        }
        container_run(&target, &mut conn).await
    });
    assert!(warm.is_ok(), "warm-up: {warm:?}");
    std::thread::sleep(Duration::from_secs(1));
    let before = held(pid);
    let processes_before = processes_of(&data, pid);

    // Two rounds: the second shows whether memory keeps growing or has levelled off.
    let results = Arc::new(Mutex::new(Results::default()));
    let mut held_after = Vec::new();
    let started = Instant::now();
    for _round in 0..2 {
        hammer(&rt, &target, &probes, seconds, starts, &results);
        // Closed connections are the server's to notice, and the blocking threads it
        // started end after 10 idle seconds (tokio's keep-alive): wait that out.
        std::thread::sleep(Duration::from_secs(12));
        held_after.push(held(pid));
    }
    let elapsed = Duration::from_secs(2 * seconds);
    drop(rt);
    let (first, after) = (held_after[0], held_after[1]);
    let processes_after = processes_of(&data, pid);
    let records: Vec<_> = std::fs::read_dir(data.join("containers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();

    let mut r = results.lock().unwrap();
    r.runs.sort();
    let mut all: Vec<Duration> = r.reads.iter().map(|(_, d)| *d).collect();
    all.sort();
    let requests = r.reads.len() + r.runs.len() * 4;
    eprintln!(
        "{CLIENTS} clients, 2 rounds of {seconds} s: {requests} requests ({:.0}/s), {} failed ({:.0} s in all)",
        requests as f64 / elapsed.as_secs_f64(),
        r.failures.len(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "reads: p50 {}, p99 {}, max {}",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(percentile(&all, 1.0))
    );
    // The baseline, when given: the same clients and Docker reads against another
    // engine's socket (bench/load.sh starts Debian's dockerd).
    let baseline = std::env::var_os("CABIN_LOAD_BASELINE_SOCKET").map(|sock| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let target = Arc::new(Target {
            socket: PathBuf::from(sock),
            port: 0,
        });
        let shared: Arc<Vec<Probe>> = Arc::new(
            probes
                .iter()
                .filter(|p| {
                    p.api == Docker && !p.path.contains("known") && !p.path.contains("local/bb")
                })
                // Debian's dockerd speaks API 1.41: unversioned paths.
                .map(|p| get(p.api, &p.path.replace("/v1.47", ""), p.want))
                .collect(),
        );
        let results = Arc::new(Mutex::new(Results::default()));
        hammer(&rt, &target, &shared, seconds, 0, &results);
        let r = results.lock().unwrap();
        assert!(
            r.failures.is_empty(),
            "baseline: {:?}",
            &r.failures[..r.failures.len().min(5)]
        );
        let figures = per_probe(&shared, &r);
        shared
            .iter()
            .zip(figures)
            .map(|(p, f)| (p.path.clone(), f))
            .collect::<Vec<_>>()
    });
    eprintln!(
        "  {:<6} {:<36} {:>8} {:>10} {:>10}   {}",
        "api",
        "request",
        "answered",
        "p50",
        "p99",
        if baseline.is_some() {
            "baseline: answered, p50, p99"
        } else {
            ""
        }
    );
    for (p, (n, p50, p99)) in probes.iter().zip(per_probe(&probes, &r)) {
        let base = baseline
            .as_ref()
            .and_then(|b| {
                b.iter()
                    .find(|(path, _)| *path == p.path.replace("/v1.47", ""))
            })
            .map(|(_, (n, p50, p99))| format!("{n:>8} {:>10} {:>10}", ms(*p50), ms(*p99)))
            .unwrap_or_default();
        eprintln!(
            "  {:<6} {:<36} {n:>8} {:>10} {:>10}   {base}",
            format!("{:?}", p.api),
            p.path,
            ms(p50),
            ms(p99)
        );
    }
    eprintln!(
        "container runs (create, start, wait, remove): {} done, p50 {}, max {}",
        r.runs.len(),
        ms(percentile(&r.runs, 0.5)),
        ms(percentile(&r.runs, 1.0))
    );
    eprintln!(
        "server: RSS {} -> {} -> {} KiB, descriptors {} -> {} -> {}, threads {} -> {} -> {}, processes of its data {processes_before} -> {processes_after}, container records {}",
        before.rss_kib,
        first.rss_kib,
        after.rss_kib,
        before.fds,
        first.fds,
        after.fds,
        before.threads,
        first.threads,
        after.threads,
        records.len()
    );

    let _ = server.kill();
    let _ = server.wait();
    assert!(
        r.failures.is_empty(),
        "{} requests failed; the first: {:#?}",
        r.failures.len(),
        &r.failures[..r.failures.len().min(5)]
    );
    assert!(requests >= 2000, "only {requests} requests were answered");
    assert_eq!(r.runs.len() as u64, 2 * starts, "container runs done");
    // Memory levels off: the second round may not add much to what the first left
    // (the allocator keeps what the first round's peak needed).
    assert!(
        after.rss_kib <= first.rss_kib + first.rss_kib / 10 + 8192,
        "memory kept growing: {} KiB before, {} after one round, {} after two",
        before.rss_kib,
        first.rss_kib,
        after.rss_kib
    );
    assert!(
        after.fds <= before.fds + 2,
        "descriptors grew from {} to {}",
        before.fds,
        after.fds
    );
    assert!(
        after.threads <= before.threads + 2,
        "threads grew from {} to {}",
        before.threads,
        after.threads
    );
    assert_eq!(processes_after, processes_before, "processes left running");
    assert_eq!(
        records.len(),
        1,
        "only the `known` container's record stays: {records:?}"
    );
}
