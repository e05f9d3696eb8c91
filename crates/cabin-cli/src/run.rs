//! `cabin run`: boot the container's VM, attach the user's terminal or pipes to its
//! process, forward signals, and leave with the process's exit status.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cabin_containers::containers::CreateOptions;
use cabin_containers::health::{HealthCheck, HealthTest};
use cabin_containers::process::{Output, Stream};
use cabin_containers::spec::{RestartPolicy, Rlimit};
use cabin_containers::{ContainerSpec, ContainerVm, Containers, Host, RootSource};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};

use crate::connect_args::ConnectArgs;
use crate::machine_args::MachineArgs;
use crate::process_args::ProcessArgs;
use crate::report::{self, Failure};
use crate::terminal::{self, Signals};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the container when it exits (without -d, every container is removed).
    #[arg(long)]
    pub rm: bool,
    /// Run in the background: print the container's ID and leave it to a supervisor
    /// process (see cabin ps, logs, stop, rm).
    #[arg(short, long)]
    pub detach: bool,
    /// Name the container (with -d, or cabin create).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Start the process again when it ends: no, on-failure[:MAX] or always (with -d;
    /// cabin stop ends it for good).
    #[arg(long, value_name = "POLICY", default_value = "no")]
    pub restart: String,
    /// Set a label on the container (KEY=VALUE; shown by inspect).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Run a small init as the container's PID 1, with the command as its child: it
    /// passes signals on (SIGTERM works without a handler) and reaps orphaned processes.
    #[arg(long)]
    pub init: bool,
    /// Read environment variables from a file (KEY=VALUE or KEY per line; # comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Add a capability to docker's default set (NET_ADMIN, or ALL); a user other
    /// than root has none effective, as in docker.
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability from docker's default set (CHOWN, or ALL).
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Every capability and no masked paths, inside the container's VM.
    #[arg(long)]
    privileged: bool,
    /// no-new-privileges: its processes cannot gain privileges by exec.
    #[arg(long, value_name = "OPTION")]
    security_opt: Vec<String>,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// A command that tells whether the container is healthy (run with /bin/sh -c in it
    /// every --health-interval; exit 0 is healthy); replaces the image's HEALTHCHECK.
    #[arg(long, value_name = "COMMAND")]
    health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 500ms).
    #[arg(long, value_name = "DURATION")]
    health_interval: Option<String>,
    /// Longest a health check may take.
    #[arg(long, value_name = "DURATION")]
    health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy.
    #[arg(long, value_name = "N")]
    health_retries: Option<u32>,
    /// Time after the start when failures do not count yet.
    #[arg(long, value_name = "DURATION")]
    health_start_period: Option<String>,
    /// Turn off the image's HEALTHCHECK.
    #[arg(long, conflicts_with = "health_cmd")]
    no_healthcheck: bool,
    /// Largest number of processes in the container.
    #[arg(long, value_name = "N")]
    pids_limit: Option<u64>,
    /// Resource limit, as NAME=SOFT[:HARD] (e.g. nofile=1024:4096).
    #[arg(long, value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// The container's hostname (default: the first 12 characters of its id).
    #[arg(long)]
    hostname: Option<String>,
    /// Run in this root filesystem directory instead of an image (then every argument
    /// is the command).
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// Replace the image's entrypoint ("" clears it).
    #[arg(long, value_name = "CMD")]
    entrypoint: Option<String>,
    /// Seconds to wait for the guest to come up before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    boot_timeout: u64,
    /// Print where start-up and teardown time went.
    #[arg(long)]
    timings: bool,
    /// The command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

fn parse_ulimit(s: &str) -> Result<Rlimit, String> {
    let bad = || format!("invalid --ulimit {s:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:4096");
    let (name, vals) = s.split_once('=').ok_or_else(bad)?;
    let num = |v: &str| -> Result<u64, String> {
        if v == "unlimited" || v == "-1" {
            Ok(u64::MAX)
        } else {
            v.parse().map_err(|_| bad())
        }
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard {
        return Err(format!(
            "invalid --ulimit {s:?}: the soft limit is above the hard one"
        ));
    }
    Ok(Rlimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

/// docker's --env-file format: one KEY=VALUE (or KEY, taken from the host) per line,
/// blank lines and lines starting with # ignored, no quoting.
fn read_env_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the env file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split('=').next().unwrap_or("");
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(format!(
                "{}:{}: invalid line {line:?}: use KEY=VALUE",
                path.display(),
                n + 1
            ));
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// A path given on the command line, made absolute against the current directory, so
/// that it means the same to a supervisor started elsewhere.
fn absolute(p: &std::path::Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::new(format!("{}: {e}", p.display())))
}

/// The container the options describe. `announce_tcg`: say so when cabin falls back to
/// TCG by itself.
pub fn spec(args: &RunArgs, announce_tcg: bool) -> Result<ContainerSpec, Failure> {
    let (root, command) = match &args.rootfs {
        Some(dir) => {
            if args.command.is_empty() {
                return Err("give the command to run after --rootfs DIR".into());
            }
            (RootSource::Dir(absolute(dir)?), args.command.clone())
        }
        None => match args.command.split_first() {
            Some((image, cmd)) => (RootSource::Image(image.clone()), cmd.to_vec()),
            None => return Err("give an image to run (or --rootfs DIR) and a command".into()),
        },
    };
    let mut c = ContainerSpec::new(root, command);
    c.entrypoint = args.entrypoint.as_ref().map(|e| vec![e.clone()]);
    // As docker: files first, then -e, so that -e wins.
    let mut env = Vec::new();
    for f in &args.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(args.process.env.iter().cloned());
    c.env = crate::process_args::resolve_env(env);
    c.read_only = args.read_only;
    c.apply_docker_security(
        args.privileged,
        &args.cap_add,
        &args.cap_drop,
        &args.security_opt,
    )
    .map_err(|e| Failure::new(e.to_string()))?;
    c.cwd = args.process.workdir.clone().unwrap_or_default();
    c.user = args.process.user.clone().unwrap_or_default();
    c.tty = args.process.tty;
    c.stdin = args.process.interactive;
    c.init = args.init;
    c.hostname = args.hostname.clone();
    c.name = args.name.clone();
    args.connect.apply(&mut c)?;
    c.pids_limit = args.pids_limit;
    c.rlimits = args
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<_, _>>()?;
    args.machine.apply(&mut c, announce_tcg)?;
    if let Some(k) = &c.kernel {
        c.kernel = Some(absolute(k)?);
    }
    c.boot_timeout = Duration::from_secs(args.boot_timeout.max(1));
    c.restart = args.restart.parse::<RestartPolicy>()?;
    c.healthcheck = healthcheck(args)?;
    if c.tty {
        c.tty_size = Some(terminal::size_or_default());
    }
    Ok(c)
}

/// `--name`, `--label`, `--rm` for a container that is kept.
fn create_options(args: &RunArgs) -> Result<CreateOptions, Failure> {
    Ok(CreateOptions {
        name: args.name.clone(),
        labels: parse_labels(&args.labels)?,
        auto_remove: args.rm,
    })
}

/// `--label KEY=VALUE` options (containers', networks').
pub fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, Failure> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Failure::new(format!("invalid label {l:?}: use KEY=VALUE"))),
        })
        .collect()
}

/// The health check the flags ask for (None: the image's).
fn healthcheck(args: &RunArgs) -> Result<Option<HealthCheck>, Failure> {
    if args.no_healthcheck {
        return Ok(Some(HealthCheck::new(HealthTest::Exec(
            vec!["NONE".into()],
        ))));
    }
    let timing = args.health_interval.is_some()
        || args.health_timeout.is_some()
        || args.health_retries.is_some()
        || args.health_start_period.is_some();
    let Some(cmd) = &args.health_cmd else {
        if timing {
            return Err("--health-interval, --health-timeout, --health-retries and --health-start-period need --health-cmd".into());
        }
        return Ok(None);
    };
    let mut c = HealthCheck::new(HealthTest::Shell(cmd.clone()));
    let duration = |v: &Option<String>| {
        v.as_deref()
            .map(cabin_base::time::parse_go_duration)
            .transpose()
    };
    if let Some(d) = duration(&args.health_interval)? {
        c.interval = d.max(Duration::from_millis(1));
    }
    if let Some(d) = duration(&args.health_timeout)? {
        c.timeout = d.max(Duration::from_millis(1));
    }
    if let Some(d) = duration(&args.health_start_period)? {
        c.start_period = d;
    }
    if let Some(n) = args.health_retries {
        c.retries = n.max(1);
    }
    Ok(Some(c))
}

/// `cabin create`: records the container with the options of `cabin run`; prints its ID.
pub async fn create(host: &Host, args: RunArgs) -> Result<i32, Failure> {
    let spec = spec(&args, true)?;
    let record = Containers::open(host)?
        .create(&spec, create_options(&args)?)
        .await?;
    println!("{}", record.id);
    Ok(0)
}

/// Runs the container; returns the exit status for `cabin run`.
pub async fn run(host: &Host, args: RunArgs, started: Instant) -> Result<i32, Failure> {
    let mut cfg = spec(&args, true)?;
    if args.detach {
        let containers = Containers::open(host)?;
        let record = containers.create(&cfg, create_options(&args)?).await?;
        return report::started(&record.id, containers.start(&record.id).await?);
    }
    if args.name.is_some()
        || args.restart != "no"
        || !args.labels.is_empty()
        || args.health_cmd.is_some()
    {
        return Err(
            "--name, --restart, --label and --health-cmd need -d: containers run in the foreground are not kept"
                .into(),
        );
    }
    // Decided once: the notice above came from this decision.
    cfg.accel = cabin_vmm::AccelRequest::Force(cabin_vmm::accel::choose(cfg.accel).accel);
    if let Some(code) = run_on_pool(host, &cfg, args.timings, started).await? {
        return Ok(code);
    }
    // Signals that arrive while the VM boots must not kill cabin before it can tear the
    // VM down, so the handlers are installed first.
    let mut signals = Signals::install();
    let notify = |m: &str| eprintln!("cabin: {m}");
    let mut vm = tokio::select! {
        r = ContainerVm::boot(host, &cfg, started, &notify) => r?,
        n = signals.next() => {
            eprintln!("cabin: interrupted while starting the VM");
            return Ok(128 + n);
        }
    };
    if let Some(notice) = &vm.boot_notice {
        eprintln!("cabin: {notice}");
    }
    let code = attach(&mut vm, &cfg, &mut signals).await;
    let missing_snapshot = vm.missing_snapshot;
    teardown_and_report(vm, args.timings).await;
    if missing_snapshot {
        cabin_containers::vm::prepare_in_background(host, &cfg);
    }
    code
}

/// The container on a warm VM of `cabin serve --pool` when a server keeps a pool for
/// this data directory and the container needs no devices of its own: created (removed
/// when it ends, as every foreground run), started by its pool member, which is its
/// supervisor, and attached to: its output, stdin with -i, its terminal with -t,
/// signals passed on, its exit code. None: no pool to use, run it here.
async fn run_on_pool(
    host: &Host,
    cfg: &ContainerSpec,
    timings: bool,
    started: Instant,
) -> Result<Option<i32>, Failure> {
    if cabin_containers::pool::poolable(cfg).is_none()
        || !cabin_containers::pool::available(&host.paths)
    {
        return Ok(None);
    }
    let mut t = cabin_containers::timings::Timings::start_at(started);
    let containers = Containers::open(host)?;
    let options = CreateOptions {
        name: None,
        labels: Vec::new(),
        auto_remove: true,
    };
    let record = containers.create(cfg, options).await?;
    t.mark("container recorded");
    let exit = crate::containers_cmd::attach_and_proxy(&containers, &record.id, cfg.stdin, cfg.tty)
        .await?;
    t.mark_with(
        "process exited",
        "on a warm VM of cabin serve's pool, or a supervisor's own when none was free".into(),
    );
    if let Some(reason) = exit.reason {
        eprintln!("cabin: {reason}");
    }
    if timings {
        eprint!("cabin timings:\n{t}");
    }
    Ok(Some(exit.code))
}

async fn teardown_and_report(vm: ContainerVm, timings: bool) {
    let accel = vm.accel.accel;
    let mut t = vm.timings.clone();
    let before = Instant::now();
    vm.teardown().await;
    if timings {
        t.mark_with(
            "VM torn down",
            format!("teardown {:.1} ms", before.elapsed().as_secs_f64() * 1e3),
        );
        eprint!("cabin timings (accelerator {accel}):\n{t}");
    }
}

/// The user's terminal (or pipes) connected to the container's process until it ends.
async fn attach(
    vm: &mut ContainerVm,
    cfg: &ContainerSpec,
    signals: &mut Signals,
) -> Result<i32, Failure> {
    let _raw = if cfg.tty && terminal::is_tty(0) {
        terminal::RawMode::enter()
    } else {
        None
    };
    // Output: copied until the guest closes it.
    let mut output = vm.output();
    let printer = tokio::spawn(async move {
        while let Some(Output { stream, data }) = output.recv().await {
            terminal::print_output(stream == Stream::Stderr, &data);
        }
    });
    // Input: with -i, stdin to the process until end of file.
    if cfg.stdin {
        let (tx, done) = vm.stdin();
        let pump = terminal::forward_stdin(tx);
        tokio::spawn(async move {
            let _ = pump.await;
            let _ = done.await;
        });
    }
    // Signals to the process, window size changes to its terminal.
    let controls = vm.controls();
    let mut winch = signal(SignalKind::window_change()).ok();
    let mut pauses = vm.disk_pauses();
    let wait = vm.wait();
    tokio::pin!(wait);
    let status = loop {
        tokio::select! {
            s = &mut wait => break s,
            Some(pause) = pauses.recv() => eprintln!("cabin: {pause}"),
            n = signals.next() => {
                let _ = controls.signal(n).await;
            }
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => None } } => {
                if let Some((rows, cols)) = terminal::size(0) {
                    let _ = controls.resize(rows, cols).await;
                }
            }
        }
    };
    let status = status?;
    // The process is gone; whatever it wrote is already on its way. Bound the wait in
    // case something in the guest still holds its output open.
    let _ = tokio::time::timeout(Duration::from_secs(5), printer).await;
    drop(_raw);
    if status.oom_killed {
        eprintln!(
            "cabin: the container ran out of memory{} and its process was killed",
            cabin_containers::vm::memory_limit_note(cfg)
        );
    }
    Ok(cabin_containers::process::exit_code(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_parse_as_docker_reads_them() {
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), "# comment\n\nA=1\nB=two words\n  C\n").unwrap();
        assert_eq!(
            read_env_file(t.path()).unwrap(),
            ["A=1", "B=two words", "C"]
        );
        std::fs::write(t.path(), "GOOD=1\nBAD KEY=2\n").unwrap();
        let e = read_env_file(t.path()).unwrap_err();
        assert!(e.contains(":2: invalid line"), "{e}");
        assert!(read_env_file(std::path::Path::new("/nonexistent/env")).is_err());
    }

    #[test]
    fn ulimits_parse() {
        assert_eq!(
            parse_ulimit("nofile=1024:4096").unwrap(),
            Rlimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 4096
            }
        );
        assert_eq!(parse_ulimit("core=0").unwrap().hard, 0);
        assert_eq!(parse_ulimit("nproc=unlimited").unwrap().hard, u64::MAX);
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=10:5").is_err());
    }
}
