//! Containers that live on: `cabin run -d`, `ps`, `logs`, `stop`, `kill`, `rm`, `wait`,
//! `inspect`, and the hidden `cabin container supervise ID` that owns a detached VM.

use std::time::{Duration, Instant};

use cabin_containers::log;
use cabin_containers::store::{now_unix, Record, Status, Store, StoreError};
use cabin_containers::supervisor::{self, Control, RestartPolicy};
use cabin_containers::{ContainerConfig, Paths, RootSource};
use clap::{Args, Parser};

use crate::run::RunArgs;

/// The arguments of `cabin run` kept for the supervisor, which parses them again.
const RUN_ARGS_FILE: &str = "run-args.json";
const RUN_CWD_FILE: &str = "run-cwd";
/// The container's writable layer (qcow2 on its image's disk), kept across starts.
const LAYER_FILE: &str = "layer.qcow2";

pub(crate) fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("cabin: {e}");
    125
}

/// `cabin run -d`: records the container, starts its supervisor and prints the ID once
/// the container runs (or why it did not start).
pub async fn run_detached(paths: &Paths, args: &RunArgs, cfg: &ContainerConfig) -> i32 {
    let (store, record) = match create_record(paths, args, cfg) {
        Ok(x) => x,
        Err(code) => return code,
    };
    start_and_wait(&store, &record, cfg.boot_timeout).await
}

/// `cabin create`: records the container without starting it; prints its ID.
pub fn create(paths: &Paths, args: &RunArgs, cfg: &ContainerConfig) -> i32 {
    match create_record(paths, args, cfg) {
        Ok((_, record)) => {
            println!("{}", record.id);
            0
        }
        Err(code) => code,
    }
}

fn create_record(
    paths: &Paths,
    args: &RunArgs,
    cfg: &ContainerConfig,
) -> Result<(Store, Record), i32> {
    if cfg.tty {
        return Err(fail(
            "-t cannot be combined with -d or create yet: cabin cannot attach to a container's terminal",
        ));
    }
    if let Err(e) = args.restart.parse::<RestartPolicy>() {
        return Err(fail(e));
    }
    let mut labels = Vec::new();
    for l in &args.labels {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => labels.push((k.to_string(), v.to_string())),
            _ => return Err(fail(format!("invalid label {l:?}: use KEY=VALUE"))),
        }
    }
    let store = Store::open(paths).map_err(fail)?;
    let root = match &cfg.root {
        RootSource::Dir(d) => d.display().to_string(),
        RootSource::Image(i) => i.clone(),
    };
    let record = Record {
        id: String::new(),
        name: String::new(),
        root,
        command: cfg.args.clone(),
        created_unix: now_unix(),
        status: Status::Created,
        auto_remove: args.rm,
        labels,
        restart_count: 0,
        network: None,
        volumes: cfg
            .mounts
            .iter()
            .filter_map(|m| match m {
                cabin_containers::volumes::MountSpec::Volume { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect(),
        init: cfg.init,
        stdin: cfg.stdin,
    };
    let record = store.create(record, args.name.as_deref()).map_err(fail)?;
    let dir = store.container_dir(&record.id);
    // The arguments as given, `run` or `create` first: the supervisor parses them as
    // `cabin run` would.
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(first) = argv.first_mut() {
        *first = "run".into();
    }
    // Relative paths in them (-v ./data:/data, --env-file) mean the same later.
    let cwd = std::env::current_dir().unwrap_or_default();
    let saved = serde_json::to_vec(&argv)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(dir.join(RUN_ARGS_FILE), b))
        .and_then(|()| {
            use std::os::unix::ffi::OsStrExt;
            std::fs::write(dir.join(RUN_CWD_FILE), cwd.as_os_str().as_bytes())
        });
    if let Err(e) = saved {
        let _ = store.remove(&record.id);
        return Err(fail(format!("saving the container's arguments: {e}")));
    }
    Ok((store, record))
}

/// Starts the supervisor of a created or exited container and waits until the
/// container runs (or has already run). Returns its record then, None if it is
/// already gone (--rm), or the exit code for a failure it reported.
pub(crate) async fn launch(
    store: &Store,
    record: &Record,
    boot_timeout: Duration,
) -> Result<Option<Record>, i32> {
    let mut fresh = record.clone();
    fresh.status = Status::Created;
    store.save(&fresh).map_err(fail)?;
    if let Err(e) = crate::detached::spawn(&["container", "supervise", &record.id]) {
        return Err(fail(format!("starting the container's supervisor: {e}")));
    }
    let deadline = Instant::now() + boot_timeout + Duration::from_secs(30);
    loop {
        match store.reconcile(&record.id) {
            Ok(r) if matches!(r.status, Status::Created) => {}
            Ok(r) => return Ok(Some(r)),
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(fail(e)),
        }
        if Instant::now() > deadline {
            return Err(fail(format!(
                "container {} did not start in time; see cabin logs {}",
                record.name, record.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a container and prints its ID (as docker does), or why it did not start.
async fn start_and_wait(store: &Store, record: &Record, boot_timeout: Duration) -> i32 {
    match launch(store, record, boot_timeout).await {
        Err(code) => code,
        // --rm and already gone.
        Ok(None) => {
            println!("{}", record.id);
            0
        }
        Ok(Some(r)) => match r.status {
            Status::Exited { code, reason, .. } => {
                if let Some(reason) = reason {
                    eprintln!("cabin: {reason}");
                }
                // Started and already finished: docker prints the ID then too.
                println!("{}", r.id);
                if code >= 125 {
                    code
                } else {
                    0
                }
            }
            _ => {
                println!("{}", r.id);
                0
            }
        },
    }
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach to the container's output (from the start of this run) and exit with its
    /// exit code; signals to cabin are passed on to the container.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach the container's stdin too (it must have been created with -i); implies -a.
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `cabin start`: starts created or exited containers again.
pub async fn start(args: StartArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    if args.attach || args.interactive {
        return crate::attach_cmd::start_attached(&store, &args).await;
    }
    let (records, mut code) = resolve_all(&store, &args.containers);
    for r in records {
        if matches!(r.status, Status::Running { .. }) {
            println!("{}", r.id);
            continue;
        }
        let c = start_and_wait(&store, &r, Duration::from_secs(60)).await;
        if c != 0 {
            code = c;
        }
    }
    code
}

/// `cabin restart`: stop (SIGTERM, SIGKILL after -t) and start.
pub async fn restart(args: StopArgs) -> i32 {
    let code = stop_all(&args, false).await;
    if code != 0 {
        return code;
    }
    start(StartArgs {
        attach: false,
        interactive: false,
        containers: args.containers,
    })
    .await
}

/// `cabin container prune`: removes every container that is not running.
pub fn prune() -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let ids = match store.ids() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let mut removed = 0;
    for id in ids {
        let gone = match store.reconcile(&id) {
            Ok(r) => !matches!(r.status, Status::Running { .. }),
            Err(StoreError::Unreadable { .. }) => true,
            Err(_) => false,
        };
        if gone && store.remove(&id).is_ok() {
            println!("{}", &id[..12]);
            removed += 1;
        }
    }
    eprintln!("removed {removed} containers");
    0
}

/// `cabin container supervise ID` (hidden; started by `cabin run -d`).
pub async fn supervise(id: &str) -> i32 {
    let paths = Paths::from_env();
    let store = match Store::open(&paths) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let dir = store.container_dir(id);
    let argv: Vec<String> = match std::fs::read(dir.join(RUN_ARGS_FILE))
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(a) => a,
        Err(e) => return fail(format!("container {id}: its arguments are unreadable: {e}")),
    };
    if let Ok(cwd) = std::fs::read(dir.join(RUN_CWD_FILE)) {
        use std::os::unix::ffi::OsStrExt;
        let _ = std::env::set_current_dir(std::ffi::OsStr::from_bytes(&cwd));
    }
    #[derive(Parser)]
    #[command(name = "cabin")]
    enum Again {
        Run(Box<RunArgs>),
    }
    let args = match Again::try_parse_from(std::iter::once("cabin".to_string()).chain(argv)) {
        Ok(Again::Run(a)) => a,
        Err(e) => return fail(e),
    };
    let mut cfg = match crate::run::config(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // As docker: a container is called by the start of its ID inside, and its file
    // system changes last until it is removed.
    cfg.hostname
        .get_or_insert_with(|| id[..12.min(id.len())].to_string());
    cfg.layer = Some(dir.join(LAYER_FILE));
    // As after a foreground run: the next container of this shape should resume.
    if cabin_containers::snapshot::enabled() && !cabin_containers::vm::has_snapshot(&paths, &cfg) {
        crate::prepare::start_in_background(&args.machine, &cfg);
    }
    let policy = match args.restart.parse::<RestartPolicy>() {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    match supervisor::supervise(&paths, id, &cfg, policy).await {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (by default only running ones).
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    format: String,
}

fn status_text(s: &Status) -> String {
    let ago = |t: u64| {
        let d = now_unix().saturating_sub(t);
        match d {
            0..=59 => format!("{d} seconds"),
            60..=3599 => format!("{} minutes", d / 60),
            3600..=86399 => format!("{} hours", d / 3600),
            _ => format!("{} days", d / 86400),
        }
    };
    match s {
        Status::Created => "Created".into(),
        Status::Running { started_unix, .. } => format!("Up {}", ago(*started_unix)),
        Status::Exited {
            code,
            finished_unix,
            ..
        } => format!("Exited ({code}) {} ago", ago(*finished_unix)),
    }
}

pub fn ps(args: PsArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let ids = match store.ids() {
        Ok(i) => i,
        Err(e) => return fail(e),
    };
    let mut rows = Vec::new();
    for id in ids {
        match store.reconcile(&id) {
            Ok(r) => {
                if args.all || matches!(r.status, Status::Running { .. }) {
                    rows.push(r);
                }
            }
            Err(e) => eprintln!("cabin: {e}"),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.created_unix));
    if args.format == "json" {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else if args.quiet {
        for r in &rows {
            println!("{}", &r.id[..12]);
        }
    } else {
        println!(
            "{:<14}{:<24}{:<28}{:<28}{:<30}NAMES",
            "CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "PORTS"
        );
        for r in &rows {
            let mut command = format!("\"{}\"", r.command.join(" "));
            if command.chars().count() > 26 {
                command = format!("{}…\"", command.chars().take(23).collect::<String>());
            }
            let mut root = r.root.clone();
            let n = root.chars().count();
            if n > 22 {
                root = format!("…{}", root.chars().skip(n - 21).collect::<String>());
            }
            let ports = r
                .network
                .as_ref()
                .map(|n| n.ports.join(", "))
                .unwrap_or_default();
            println!(
                "{:<14}{:<24}{:<28}{:<28}{:<30}{}",
                &r.id[..12],
                root,
                command,
                status_text(&r.status),
                ports,
                r.name
            );
        }
    }
    0
}

/// The container store of this data directory; a failure is reported.
pub(crate) fn open_store() -> Option<Store> {
    Store::open(&Paths::from_env())
        .map_err(|e| eprintln!("cabin: {e}"))
        .ok()
}

/// The named containers that exist; the others are reported, and the exit code says so.
fn resolve_all(store: &Store, names: &[String]) -> (Vec<Record>, i32) {
    let mut found = Vec::new();
    let mut code = 0;
    for name in names {
        match resolve(store, name) {
            Ok(r) => found.push(r),
            Err(c) => code = c,
        }
    }
    (found, code)
}

pub(crate) fn resolve(store: &Store, what: &str) -> Result<Record, i32> {
    store
        .resolve(what)
        .and_then(|id| store.reconcile(&id))
        .map_err(|e| {
            eprintln!("cabin: {e}");
            1
        })
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(short = 'n', long = "tail", value_name = "N")]
    tail: Option<usize>,
    /// Prefix each line with its time stamp (RFC 3339, UTC).
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since this many seconds ago (e.g. 30, 10m, 2h).
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    container: String,
}

fn parse_duration(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("invalid duration {s:?}: use s, m, h or d")),
    })
}

pub async fn logs(args: LogsArgs) -> i32 {
    let since = match args.since.as_deref().map(parse_duration).transpose() {
        Ok(s) => s.map(|secs| now_unix().saturating_sub(secs) * 1_000_000_000),
        Err(e) => return fail(e),
    };
    let Some(store) = open_store() else {
        return 125;
    };
    let record = match resolve(&store, &args.container) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let dir = store.container_dir(&record.id);
    let print = |entries: &[log::Entry]| {
        use std::io::Write;
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for e in entries {
            if since.is_some_and(|s| e.time < s) {
                continue;
            }
            let w: &mut dyn Write = if e.stream == "stderr" {
                &mut err
            } else {
                &mut out
            };
            if args.timestamps {
                let _ = write!(w, "{} ", cabin_base::time::rfc3339(e.time, true));
            }
            let _ = w.write_all(e.log.as_bytes());
        }
        let _ = out.flush();
    };
    let (mut entries, mut offset) = match log::read_all(&dir) {
        Ok(x) => x,
        Err(e) => return fail(format!("reading the log of {}: {e}", record.name)),
    };
    if let Some(n) = args.tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    print(&entries);
    if !args.follow {
        return 0;
    }
    loop {
        let running = match store.reconcile(&record.id) {
            Ok(r) => !matches!(r.status, Status::Exited { .. }),
            Err(_) => false,
        };
        match log::read_from(&dir, offset) {
            Ok((new, next)) => {
                print(&new);
                offset = next;
            }
            Err(e) => return fail(e),
        }
        if !running {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the container has exited; returns its record.
pub(crate) async fn wait_exited(
    store: &Store,
    id: &str,
    limit: Option<Duration>,
) -> Option<Record> {
    let deadline = limit.map(|l| Instant::now() + l);
    loop {
        match store.reconcile(id) {
            Ok(r) if matches!(r.status, Status::Exited { .. }) => return Some(r),
            Ok(_) => {}
            Err(_) => return None, // removed (--rm)
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    time: u64,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// Sends `req` to the container's supervisor; a container that is not running is an
/// error that says so.
async fn control(store: &Store, r: &Record, req: &Control) -> Result<(), String> {
    if !matches!(r.status, Status::Running { .. }) {
        return Err(format!("container {} is not running", r.name));
    }
    supervisor::send(&store.container_dir(&r.id), req)
        .await
        .map(|_| ())
        .map_err(|e| format!("container {}: {e}", r.name))
}

pub async fn stop(args: StopArgs) -> i32 {
    stop_all(&args, true).await
}

async fn stop_all(args: &StopArgs, print: bool) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let (records, mut code) = resolve_all(&store, &args.containers);
    for r in records {
        if matches!(r.status, Status::Running { .. }) {
            if let Err(e) = control(&store, &r, &Control::Stop(args.time)).await {
                eprintln!("cabin: {e}");
                code = 1;
                continue;
            }
            // SIGKILL after `time`, the VM itself a few seconds later: bounded.
            wait_exited(&store, &r.id, Some(Duration::from_secs(args.time + 30))).await;
        }
        if print {
            println!("{}", r.name);
        }
    }
    code
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

fn parse_signal(s: &str) -> Option<i32> {
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
        _ => return None,
    })
}

pub async fn kill(args: KillArgs) -> i32 {
    let Some(sig) = parse_signal(&args.signal) else {
        return fail(format!("unknown signal {:?}", args.signal));
    };
    let Some(store) = open_store() else {
        return 125;
    };
    let (records, mut code) = resolve_all(&store, &args.containers);
    for r in records {
        match control(&store, &r, &Control::Signal(sig)).await {
            Ok(()) => println!("{}", r.name),
            Err(e) => {
                eprintln!("cabin: {e}");
                code = 1;
            }
        }
    }
    code
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn rm(args: RmArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let mut code = 0;
    for name in &args.containers {
        let id = match store.resolve(name) {
            Ok(id) => id,
            Err(e) => {
                eprintln!("cabin: {e}");
                code = 1;
                continue;
            }
        };
        match store.reconcile(&id) {
            Ok(r) if matches!(r.status, Status::Running { .. }) => {
                if !args.force {
                    eprintln!(
                        "cabin: container {} is running: stop it first (cabin stop {}) or use rm -f",
                        r.name, r.name
                    );
                    code = 1;
                    continue;
                }
                let _ = control(&store, &r, &Control::Stop(0)).await;
                if wait_exited(&store, &id, Some(Duration::from_secs(30)))
                    .await
                    .is_none()
                    && store.load(&id).is_ok()
                {
                    eprintln!("cabin: container {} did not stop; not removed", r.name);
                    code = 1;
                    continue;
                }
            }
            // Unreadable records can still be removed (that is what rm -f is for).
            Err(StoreError::Unreadable { .. }) if !args.force => {
                eprintln!("cabin: container {name}: its record is unreadable; use rm -f");
                code = 1;
                continue;
            }
            _ => {}
        }
        match store.remove(&id) {
            Ok(()) | Err(StoreError::NotFound(_)) => println!("{name}"),
            Err(e) => {
                eprintln!("cabin: {e}");
                code = 1;
            }
        }
    }
    code
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `cabin wait`: prints each container's exit code once it has exited.
pub async fn wait(args: NamesArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let (records, mut code) = resolve_all(&store, &args.containers);
    for r in records {
        match wait_exited(&store, &r.id, None).await {
            Some(Record {
                status: Status::Exited { code, .. },
                ..
            }) => println!("{code}"),
            _ => {
                eprintln!("cabin: container {} was removed while waiting", r.name);
                code = 1;
            }
        }
    }
    code
}

/// `cabin inspect`: the records as a JSON array.
pub fn inspect(args: NamesArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let (out, code) = resolve_all(&store, &args.containers);
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    code
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    process: crate::process_args::ProcessArgs,
    container: String,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<String>,
}

/// `cabin exec`: runs another process in a running container, through its supervisor
/// (the one holder of the VM's agent connection); exits with the process's status.
pub async fn exec(args: ExecArgs) -> i32 {
    use supervisor::frame;
    use tokio::signal::unix::{signal, SignalKind};
    let p = &args.process;
    let Some(store) = open_store() else {
        return 125;
    };
    let r = match resolve(&store, &args.container) {
        Ok(r) => r,
        Err(_) => return 125,
    };
    if !matches!(r.status, Status::Running { .. }) {
        return fail(format!("container {} is not running", r.name));
    }
    let tty = p.tty.then(|| {
        crate::terminal::size(0)
            .or(crate::terminal::size(1))
            .unwrap_or((24, 80))
    });
    let req = Control::Exec(supervisor::ExecRequest {
        args: args.command.clone(),
        env: crate::process_args::resolve_env(p.env.iter().cloned()),
        cwd: p.workdir.clone().unwrap_or_default(),
        user: p.user.clone().unwrap_or_default(),
        stdin: p.interactive,
        tty,
    });
    let sock = supervisor::control_socket(&store.container_dir(&r.id));
    let conn = match tokio::net::UnixStream::connect(&sock).await {
        Ok(c) => c,
        Err(e) => return fail(format!("container {}: {e}", r.name)),
    };
    let (mut rd, mut wr) = conn.into_split();
    let mut line = serde_json::to_vec(&req).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut wr, &line).await {
        return fail(format!("container {}: {e}", r.name));
    }
    // One task writes every frame to the supervisor (stdin, window sizes), so that the
    // loop below only ever reads.
    let (to_supervisor, mut frames) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(8);
    tokio::spawn(async move {
        while let Some((kind, payload)) = frames.recv().await {
            if frame::write(&mut wr, kind, &payload).await.is_err() {
                return;
            }
        }
    });
    let _raw = if tty.is_some() && crate::terminal::is_tty(0) {
        crate::terminal::RawMode::enter()
    } else {
        None
    };
    let mut stdin_pump = p.interactive.then(|| to_supervisor.clone());
    if tty.is_some() {
        let resizes = to_supervisor.clone();
        if let Ok(mut winch) = signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((rows, cols)) = crate::terminal::size(0) {
                        let mut size = rows.to_be_bytes().to_vec();
                        size.extend_from_slice(&cols.to_be_bytes());
                        if resizes.send((frame::RESIZE, size)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    }
    drop(to_supervisor);
    loop {
        let (kind, payload) = match frame::read(&mut rd).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return fail(format!(
                    "container {}: the exec ended without a status",
                    r.name
                ))
            }
            Err(e) => return fail(format!("container {}: {e}", r.name)),
        };
        match kind {
            frame::STARTED => {
                let Some(tx) = stdin_pump.take() else {
                    continue;
                };
                tokio::spawn(async move {
                    crate::terminal::pump_stdin(|b| {
                        let tx = tx.clone();
                        async move { tx.send((frame::STDIN, b)).await.is_ok() }
                    })
                    .await;
                    // (Fails harmlessly when the relay has gone.)
                    let _ = tx.send((frame::STDIN_EOF, Vec::new())).await;
                });
            }
            frame::STDOUT | frame::STDERR => {
                use std::io::Write;
                let out: &mut dyn Write = if kind == frame::STDOUT {
                    &mut std::io::stdout()
                } else {
                    &mut std::io::stderr()
                };
                let _ = out.write_all(&payload).and_then(|_| out.flush());
            }
            frame::EXIT if payload.len() == 4 => {
                return i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
            }
            frame::FAILED if payload.len() >= 4 => {
                let code = i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                drop(_raw);
                eprintln!("cabin: {}", String::from_utf8_lossy(&payload[4..]));
                return code;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    no_stream: bool,
    /// Containers (default: all running ones).
    containers: Vec<String>,
}

struct Sample {
    memory: u64,
    limit: u64,
    cpu_micros: u64,
    pids: u64,
    at_nanos: u64,
}

async fn sample(store: &Store, r: &Record) -> Option<Sample> {
    let v = supervisor::send(&store.container_dir(&r.id), &Control::Stats)
        .await
        .ok()?;
    let s = &v["stats"];
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    Some(Sample {
        memory: n("memory_bytes"),
        limit: n("memory_limit_bytes"),
        cpu_micros: n("cpu_usage_micros"),
        pids: n("pids"),
        at_nanos: n("sampled_boottime_nanos"),
    })
}

fn mib(b: u64) -> String {
    format!("{:.1}MiB", b as f64 / (1 << 20) as f64)
}

/// `cabin stats`: CPU, memory and processes of running containers, from their cgroups
/// in the guest; CPU % over one second, 100% being one vCPU.
pub async fn stats(args: StatsArgs) -> i32 {
    let Some(store) = open_store() else {
        return 125;
    };
    let records: Vec<Record> = if args.containers.is_empty() {
        store
            .ids()
            .unwrap_or_default()
            .iter()
            .filter_map(|id| store.reconcile(id).ok())
            .filter(|r| matches!(r.status, Status::Running { .. }))
            .collect()
    } else {
        let mut v = Vec::new();
        for name in &args.containers {
            match resolve(&store, name) {
                Ok(r) if matches!(r.status, Status::Running { .. }) => v.push(r),
                Ok(r) => return fail(format!("container {} is not running", r.name)),
                Err(c) => return c,
            }
        }
        v
    };
    let tty = crate::terminal::is_tty(1);
    let mut before = Vec::new();
    for r in &records {
        before.push(sample(&store, r).await);
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if tty && !args.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:<14}{:<24}{:>8}  {:<24}{:>6}",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"
        );
        for (r, prev) in records.iter().zip(before.iter_mut()) {
            let now = sample(&store, r).await;
            match (&now, prev.as_ref()) {
                (Some(n), Some(p)) => {
                    let dt = n.at_nanos.saturating_sub(p.at_nanos).max(1) as f64;
                    let cpu = n.cpu_micros.saturating_sub(p.cpu_micros) as f64 * 1000.0 / dt;
                    let limit = if n.limit == 0 {
                        "-".into()
                    } else {
                        mib(n.limit)
                    };
                    println!(
                        "{:<14}{:<24}{:>7.2}%  {:<24}{:>6}",
                        &r.id[..12],
                        r.name,
                        cpu * 100.0,
                        format!("{} / {}", mib(n.memory), limit),
                        n.pids
                    );
                }
                _ => println!(
                    "{:<14}{:<24}{:>8}  {:<24}{:>6}",
                    &r.id[..12],
                    r.name,
                    "--",
                    "(not running)",
                    "--"
                ),
            }
            *prev = now;
        }
        if args.no_stream {
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_signals_and_times_parse() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("10m").unwrap(), 600);
        assert!(parse_duration("10x").is_err());
        assert_eq!(parse_signal("TERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("sigkill"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("15"), Some(15));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("BOGUS"), None);
    }
}
