//! Containers that live on: `start` (and `start -a`), `restart`, `ps`, `logs`, `stop`,
//! `kill`, `rm`, `rename`, `top`, `wait`, `inspect`, `exec`, `stats`, `container prune`, and the hidden
//! `container supervise ID`. Each parses, calls `cabin_containers::Containers` and
//! prints.

use std::time::Duration;

use cabin_containers::containers::{Exit, LogOptions};
use cabin_containers::control::ExecRequest;
use cabin_containers::exec::ExecEvent;
use cabin_containers::process::{Output, Stream};
use cabin_containers::store::{now_unix, Record, Status};
use cabin_containers::{Containers, Host};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::report::{Failure, Family, TableFormat};
use crate::terminal::{self, Signals};

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

/// Runs `f` on each named container; the failures are reported as they come and the
/// last one's code is the result (the others go on, as docker's do).
async fn each<F, Fut>(names: &[String], family: Family, mut f: F) -> i32
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<i32, Failure>>,
{
    let mut code = 0;
    for name in names {
        match f(name.clone()).await {
            Ok(0) => {}
            Ok(c) => code = c,
            Err(e) => code = crate::report::exit_code(family, e),
        }
    }
    code
}

/// `cabin start`: starts created or exited containers again (`-a`: and stays with one).
pub async fn start(host: &Host, args: StartArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    if args.attach || args.interactive {
        return start_attached(&containers, &args).await;
    }
    Ok(each(&args.containers, Family::Process, |name| {
        let c = containers.clone();
        async move {
            let id = c.get(&name).await?.id;
            crate::report::started(&id, c.start(&id).await?)
        }
    })
    .await)
}

/// `cabin start -a [-i]`: stays with the container as docker does: its output from the
/// start of this run, stdin with -i, signals passed on, its exit code.
async fn start_attached(containers: &Containers, args: &StartArgs) -> Result<i32, Failure> {
    let [name] = args.containers.as_slice() else {
        return Err("cannot start and attach to several containers at once".into());
    };
    let record = containers.get(name).await?;
    let tty = containers.spec(&record.id).await?.tty;
    let Exit { code, reason } =
        attach_and_proxy(containers, &record.id, args.interactive, tty).await?;
    if let Some(reason) = reason {
        eprintln!("cabin: {reason}");
    }
    Ok(code)
}

/// Starts container `id` if it is not running and stays with its run: its output
/// printed, this process's stdin passed on with `stdin`, and, as docker's --sig-proxy,
/// the signals cabin gets sent to the container's process. A container with a
/// terminal (`tty`) gets this one's keys as they are typed (raw mode) and its size
/// whenever it changes.
pub async fn attach_and_proxy(
    containers: &Containers,
    id: &str,
    stdin: bool,
    tty: bool,
) -> Result<Exit, Failure> {
    let _raw = if tty && terminal::is_tty(0) {
        terminal::RawMode::enter()
    } else {
        None
    };
    let resizer = tty.then(|| {
        let containers = containers.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal::size(0) {
                    let _ = containers.resize(&id, rows, cols).await;
                }
            }
        })
    });
    let mut signals = Signals::install();
    let proxy = {
        let containers = containers.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                let n = signals.next().await;
                let _ = containers.kill(&id, n).await;
            }
        })
    };
    let stdin =
        stdin.then(|| Box::new(tokio::io::stdin()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let attached = containers
        .attach(id, stdin, &mut terminal::print_output)
        .await;
    proxy.abort();
    if let Some(r) = resizer {
        r.abort();
    }
    Ok(attached?)
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: u64,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `cabin stop`: SIGTERM, SIGKILL after -t, then the VM; prints each name.
pub async fn stop(host: &Host, args: StopArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let timeout = Duration::from_secs(args.time);
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            c.stop(&name, timeout).await?;
            println!("{name}");
            Ok(0)
        }
    })
    .await)
}

/// `cabin restart`: stop and start.
pub async fn restart(host: &Host, args: StopArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let timeout = Duration::from_secs(args.time);
    Ok(each(&args.containers, Family::Process, |name| {
        let c = containers.clone();
        async move {
            let id = c.get(&name).await?.id;
            crate::report::started(&id, c.restart(&id, timeout).await?)
        }
    })
    .await)
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

/// `cabin rename CONTAINER NEW_NAME`.
pub async fn rename(host: &Host, args: RenameArgs) -> Result<i32, Failure> {
    Containers::open(host)?
        .rename(&args.container, &args.new_name)
        .await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct TopArgs {
    pub container: String,
}

/// `cabin top CONTAINER`: its processes, as `ps -ef` lists them.
pub async fn top(host: &Host, args: TopArgs) -> Result<i32, Failure> {
    use cabin_containers::control::Process;
    let processes = Containers::open(host)?.top(&args.container).await?;
    let mut rows = vec![Process::TITLES.map(String::from).to_vec()];
    rows.extend(processes.iter().map(Process::columns));
    let widths: Vec<usize> = (0..Process::TITLES.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let last = r.len() - 1;
        let mut line: Vec<String> = r[..last]
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        line.push(r[last].clone());
        println!("{}", line.join("  "));
    }
    Ok(0)
}

/// `cabin container prune`: removes every container that is not running.
pub async fn prune(host: &Host) -> Result<i32, Failure> {
    let removed = Containers::open(host)?.prune().await?;
    for id in &removed {
        println!("{}", &id[..12]);
    }
    eprintln!("removed {} containers", removed.len());
    Ok(0)
}

/// `cabin container pool-member --shape JSON` (hidden; started by `cabin serve --pool`).
pub async fn pool_member(host: &Host, shape: &str) -> Result<i32, Failure> {
    let shape: cabin_containers::vm::VmShape =
        serde_json::from_str(shape).map_err(|e| Failure::new(format!("--shape: {e}")))?;
    cabin_containers::pool::member(host, &shape)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    Ok(0)
}

/// `cabin container supervise ID` (hidden; started by `Containers::start`).
pub async fn supervise(host: &Host, id: &str) -> Result<i32, Failure> {
    cabin_containers::supervisor::supervise(host, id)
        .await
        .map_err(Failure::new)?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (by default only running ones).
    #[arg(short, long)]
    all: bool,
    /// Only IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: TableFormat,
}

/// `cabin ps`.
pub async fn ps(host: &Host, args: PsArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let (all, unreadable) = containers.list().await?;
    for e in unreadable {
        eprintln!("cabin: {e}");
    }
    let rows: Vec<Record> = all
        .into_iter()
        .filter(|r| args.all || matches!(r.status, Status::Running { .. }))
        .collect();
    if args.format == TableFormat::Json {
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
                cabin_containers::health::describe(
                    r.status.describe(now_unix()),
                    containers.health_status(r)
                ),
                ports,
                r.name
            );
        }
    }
    Ok(0)
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

/// `cabin logs`.
pub async fn logs(host: &Host, args: LogsArgs) -> Result<i32, Failure> {
    let since = match args.since.as_deref() {
        Some(s) => {
            let secs = cabin_base::time::parse_duration(s)?;
            Some(now_unix().saturating_sub(secs) * 1_000_000_000)
        }
        None => None,
    };
    let opts = LogOptions {
        follow: args.follow,
        tail: args.tail,
        since_unix_nanos: since,
    };
    let mut logs = Containers::open(host)?.logs(&args.container, opts).await?;
    while let Some(entries) = logs.next().await? {
        use std::io::Write;
        let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
        for e in entries {
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
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `cabin kill`.
pub async fn kill(host: &Host, args: KillArgs) -> Result<i32, Failure> {
    let Some(sig) = cabin_containers::process::signal_number(&args.signal) else {
        return Err(Failure::new(format!("unknown signal {:?}", args.signal)));
    };
    let containers = Containers::open(host)?;
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            c.kill(&name, sig).await?;
            println!("{name}");
            Ok(0)
        }
    })
    .await)
}

/// `cabin pause` and `cabin unpause`.
pub async fn pause(host: &Host, args: NamesArgs, pause: bool) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            if pause {
                c.pause(&name).await?;
            } else {
                c.unpause(&name).await?;
            }
            println!("{name}");
            Ok(0)
        }
    })
    .await)
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// New memory limit (e.g. 256m, 1g), within what the container's VM has while it
    /// runs; 0: none (its next start then sizes its VM as for a container without one).
    #[arg(short, long, value_name = "SIZE")]
    memory: Option<String>,
    /// New CPU quota (fractions allowed, e.g. 0.5; 0: none).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// New limit on the number of processes (0 or -1: none).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `cabin update`: new limits, at once in running containers and for their later
/// starts.
pub async fn update(host: &Host, args: UpdateArgs) -> Result<i32, Failure> {
    let memory_bytes = match &args.memory {
        Some(m) if m == "0" => Some(0),
        Some(m) => {
            let bytes = cabin_base::sizes::parse_size(m, cabin_base::sizes::Dialect::Docker)?;
            if bytes < 6 << 20 {
                return Err(Failure::new(format!(
                    "invalid --memory {m}: the minimum is 6m"
                )));
            }
            Some(bytes)
        }
        None => None,
    };
    if let Some(c) = args.cpus.filter(|c| !(*c >= 0.0 && *c <= 64.0)) {
        return Err(Failure::new(format!(
            "invalid --cpus {c}: use a number from 0 to 64"
        )));
    }
    let limits = cabin_containers::control::Limits {
        memory_bytes,
        cpus: args.cpus,
        pids_limit: args.pids_limit.map(|p| p.max(0) as u64),
    };
    if limits == Default::default() {
        return Err(Failure::new(
            "nothing to update: give --memory, --cpus or --pids-limit",
        ));
    }
    let containers = Containers::open(host)?;
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            c.update(&name, limits).await?;
            println!("{name}");
            Ok(0)
        }
    })
    .await)
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill a running container first.
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

/// `cabin rm`.
pub async fn rm(host: &Host, args: RmArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            c.remove(&name, args.force).await?;
            println!("{name}");
            Ok(0)
        }
    })
    .await)
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `cabin wait`: prints each container's exit code once it has exited.
pub async fn wait(host: &Host, args: NamesArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    Ok(each(&args.containers, Family::Admin, |name| {
        let c = containers.clone();
        async move {
            if let Status::Exited { code, .. } = c.wait(&name).await?.status {
                println!("{code}");
            }
            Ok(0)
        }
    })
    .await)
}

/// `cabin inspect`: the records as a JSON array.
pub async fn inspect(host: &Host, args: NamesArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let mut out = Vec::new();
    let mut code = 0;
    for name in &args.containers {
        match containers.get(name).await {
            Ok(record) => {
                // A running container's memory, as the guest (its cgroup) and as the
                // host (its VM's QEMU, PSS: pages shared with other VMs counted in part)
                // see it.
                let mut shown = serde_json::to_value(&record).unwrap_or_default();
                if matches!(record.status, Status::Running { .. }) {
                    if let Ok(s) = containers.stats(&record.id).await {
                        shown["memory"] = serde_json::json!({
                            "container_bytes": s.memory_bytes,
                            "vm_host_bytes": s.vm_host_memory_bytes,
                        });
                    }
                }
                out.push(shown)
            }
            Err(e) => code = crate::report::exit_code(Family::Admin, e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(code)
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

/// `cabin exec`: runs another process in a running container; exits with its status.
pub async fn exec(host: &Host, args: ExecArgs) -> Result<i32, Failure> {
    let p = &args.process;
    let tty = p.tty.then(terminal::size_or_default);
    let req = ExecRequest {
        args: args.command.clone(),
        env: crate::process_args::resolve_env(p.env.iter().cloned()),
        cwd: p.workdir.clone().unwrap_or_default(),
        user: p.user.clone().unwrap_or_default(),
        stdin: p.interactive,
        tty,
    };
    let mut session = Containers::open(host)?.exec(&args.container, req).await?;
    let raw = if tty.is_some() && terminal::is_tty(0) {
        terminal::RawMode::enter()
    } else {
        None
    };
    if let Some(input) = session.stdin() {
        terminal::forward_stdin(input);
    }
    if tty.is_some() {
        let resizer = session.resizer();
        if let Ok(mut winch) = signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some((rows, cols)) = terminal::size(0) {
                        if !resizer.resize(rows, cols).await {
                            return;
                        }
                    }
                }
            });
        }
    }
    loop {
        match session.next().await {
            Ok(ExecEvent::Output(Output { stream, data })) => {
                terminal::print_output(stream == Stream::Stderr, &data)
            }
            Ok(ExecEvent::Exited(code)) => return Ok(code),
            Err(e) => {
                drop(raw);
                return Err(Failure::new(format!("container {}: {e}", args.container)));
            }
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

fn mib(b: u64) -> String {
    format!("{:.1}MiB", b as f64 / (1 << 20) as f64)
}

/// `cabin stats`: CPU, memory and processes of running containers, from their cgroups
/// in the guest; CPU % over one second, 100% being one vCPU.
pub async fn stats(host: &Host, args: StatsArgs) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let records: Vec<Record> = if args.containers.is_empty() {
        containers
            .list()
            .await?
            .0
            .into_iter()
            .filter(|r| matches!(r.status, Status::Running { .. }))
            .collect()
    } else {
        let mut v = Vec::new();
        for name in &args.containers {
            let r = containers.get(name).await?;
            if !matches!(r.status, Status::Running { .. }) {
                return Err(Failure::new(format!("container {} is not running", r.name)));
            }
            v.push(r);
        }
        v
    };
    let tty = terminal::is_tty(1);
    let mut before = Vec::new();
    for r in &records {
        before.push(containers.stats(&r.id).await.ok());
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if tty && !args.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        println!(
            "{:<14}{:<24}{:>8}  {:<24}{:>6}  {:>11}",
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS", "VM HOST MEM"
        );
        for (r, prev) in records.iter().zip(before.iter_mut()) {
            let now = containers.stats(&r.id).await.ok();
            match (&now, prev.as_ref()) {
                (Some(n), Some(p)) => {
                    let limit = if n.memory_limit_bytes == 0 {
                        "-".into()
                    } else {
                        mib(n.memory_limit_bytes)
                    };
                    let host = if n.vm_host_memory_bytes == 0 {
                        "-".into()
                    } else {
                        mib(n.vm_host_memory_bytes)
                    };
                    println!(
                        "{:<14}{:<24}{:>7.2}%  {:<24}{:>6}  {:>11}",
                        &r.id[..12],
                        r.name,
                        n.cpu_since(p) * 100.0,
                        format!("{} / {}", mib(n.memory_bytes), limit),
                        n.pids,
                        host
                    );
                }
                _ => println!(
                    "{:<14}{:<24}{:>8}  {:<24}{:>6}  {:>11}",
                    &r.id[..12],
                    r.name,
                    "--",
                    "(not running)",
                    "--",
                    "--"
                ),
            }
            *prev = now;
        }
        if args.no_stream {
            return Ok(0);
        }
    }
}
