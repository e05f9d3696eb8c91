//! `cabin run`: boot the container's VM, attach the user's terminal or pipes to its
//! process, forward signals, and leave with the process's exit status.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cabin_containers::{agent, ContainerConfig, ContainerVm, Paths, RootSource, RunError};
use cabin_proto::v1::{output_chunk, ResizeTtyRequest, SignalRequest, TtySize};
use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::StreamExt;

use crate::connect_args::ConnectArgs;
use crate::machine_args::MachineArgs;
use crate::process_args::ProcessArgs;
use crate::terminal;

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
    init: bool,
    /// Read environment variables from a file (KEY=VALUE or KEY per line; # comments).
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Mount the container's root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    #[command(flatten)]
    pub machine: MachineArgs,
    #[command(flatten)]
    pub connect: ConnectArgs,
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

fn parse_ulimit(s: &str) -> Result<(String, u64, u64), String> {
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
    Ok((name.to_string(), soft, hard))
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

pub fn config(args: &RunArgs) -> Result<ContainerConfig, String> {
    let (root, command) = match &args.rootfs {
        Some(dir) => {
            if args.command.is_empty() {
                return Err("give the command to run after --rootfs DIR".into());
            }
            (RootSource::Dir(dir.clone()), args.command.clone())
        }
        None => match args.command.split_first() {
            Some((image, cmd)) => (RootSource::Image(image.clone()), cmd.to_vec()),
            None => return Err("give an image to run (or --rootfs DIR) and a command".into()),
        },
    };
    let mut c = ContainerConfig::new(root, command);
    c.entrypoint = args.entrypoint.as_ref().map(|e| vec![e.clone()]);
    // As docker: files first, then -e, so that -e wins.
    let mut env = Vec::new();
    for f in &args.env_file {
        env.extend(read_env_file(f)?);
    }
    env.extend(args.process.env.iter().cloned());
    c.env = crate::process_args::resolve_env(env);
    c.read_only = args.read_only;
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
    args.machine.apply(&mut c, true)?;
    c.boot_timeout = Duration::from_secs(args.boot_timeout.max(1));
    if c.tty {
        c.tty_size = terminal::size(0).or(terminal::size(1)).or(Some((24, 80)));
    }
    Ok(c)
}

pub(crate) const FORWARDED_SIGNALS: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// `cabin create`: the container is recorded with the options of `cabin run`.
pub async fn create(args: RunArgs) -> i32 {
    match config(&args) {
        Ok(cfg) => crate::containers_cmd::create(&Paths::from_env(), &args, &cfg),
        Err(e) => {
            eprintln!("cabin: {e}");
            125
        }
    }
}

/// Runs the container; returns the exit status for `cabin run`.
pub async fn run(args: RunArgs, started: Instant) -> i32 {
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cabin: {e}");
            return 125;
        }
    };
    let paths = Paths::from_env();
    if args.detach {
        return crate::containers_cmd::run_detached(&paths, &args, &cfg).await;
    }
    if args.name.is_some() || args.restart != "no" || !args.labels.is_empty() {
        eprintln!(
            "cabin: --name, --restart and --label need -d: containers run in the foreground are not kept"
        );
        return 125;
    }
    // Signals that arrive while the VM boots must not kill cabin before it can tear the
    // VM down, so the handlers are installed first.
    let mut signals = Vec::new();
    for &num in FORWARDED_SIGNALS {
        match signal(SignalKind::from_raw(num)) {
            Ok(s) => signals.push((num, s)),
            Err(e) => eprintln!("cabin: cannot forward signal {num}: {e}"),
        }
    }
    let mut vm = tokio::select! {
        r = ContainerVm::boot(&paths, &cfg, started) => match r {
            Ok(vm) => vm,
            Err(e) => return report(e),
        },
        n = first_signal(&mut signals) => {
            eprintln!("cabin: interrupted while starting the VM");
            return 128 + n;
        }
    };
    if let Some(notice) = &vm.boot_notice {
        eprintln!("cabin: {notice}");
    }
    let code = attach(&mut vm, &cfg, &mut signals).await;
    let missing_snapshot = vm.missing_snapshot;
    teardown_and_report(vm, args.timings).await;
    if missing_snapshot {
        crate::prepare::start_in_background(&args.machine, &cfg);
    }
    code
}

pub(crate) async fn first_signal(
    signals: &mut [(libc::c_int, tokio::signal::unix::Signal)],
) -> i32 {
    let futs = signals.iter_mut().map(|(n, s)| {
        let n = *n;
        Box::pin(async move {
            s.recv().await;
            n
        })
    });
    futures_select_all(futs).await
}

async fn futures_select_all<F: std::future::Future<Output = i32> + Unpin>(
    futs: impl Iterator<Item = F>,
) -> i32 {
    let mut futs: Vec<F> = futs.collect();
    if futs.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(n) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(n);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn report(e: RunError) -> i32 {
    eprintln!("cabin: {e}");
    e.exit_code()
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

async fn attach(
    vm: &mut ContainerVm,
    cfg: &ContainerConfig,
    signals: &mut [(libc::c_int, tokio::signal::unix::Signal)],
) -> i32 {
    let agent = vm.agent();
    let proc_ref = vm.process_ref();
    let _raw = if cfg.tty && terminal::is_tty(0) {
        terminal::RawMode::enter()
    } else {
        None
    };

    // Output: copy until the guest closes the stream.
    let mut a = agent.clone();
    let r = proc_ref.clone();
    let output = tokio::spawn(async move {
        let mut stream = match a.read_output(r).await {
            Ok(s) => s.into_inner(),
            Err(e) => return Err(e.message().to_string()),
        };
        let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let w: &mut dyn Write = if chunk.stream == output_chunk::Stream::Stderr as i32 {
                &mut err
            } else {
                &mut out
            };
            if w.write_all(&chunk.data).and_then(|_| w.flush()).is_err() {
                break;
            }
        }
        Ok(())
    });

    // Input: with -i, stdin to the process until end of file.
    if cfg.stdin {
        let (tx, done) = agent::stdin_writer(&agent, proc_ref.clone());
        tokio::spawn(async move {
            terminal::pump_stdin(|b| {
                let tx = tx.clone();
                async move { tx.send(b).await.is_ok() }
            })
            .await;
            drop(tx);
            let _ = done.await;
        });
    }

    // Signals to the process, window size changes to its terminal.
    let mut winch = signal(SignalKind::window_change()).ok();
    let wait = vm.wait();
    tokio::pin!(wait);
    let status = loop {
        tokio::select! {
            s = &mut wait => break s,
            n = first_signal(signals) => {
                let mut a = agent.clone();
                let req = SignalRequest { process: Some(proc_ref.clone()), signal: n };
                let _ = agent::call("Signal", cabin_proto::CALL_TIMEOUT, a.signal(req)).await;
            }
            Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => None } } => {
                if let Some((rows, cols)) = terminal::size(0) {
                    let mut a = agent.clone();
                    let req = ResizeTtyRequest {
                        process: Some(proc_ref.clone()),
                        size: Some(TtySize { rows: rows as u32, cols: cols as u32 }),
                    };
                    let _ = agent::call("ResizeTty", cabin_proto::CALL_TIMEOUT, a.resize_tty(req)).await;
                }
            }
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            drop(_raw);
            return report(e);
        }
    };
    // The process is gone; whatever it wrote is already on its way. Bound the wait in
    // case something in the guest still holds its output open.
    let _ = tokio::time::timeout(Duration::from_secs(5), output).await;
    drop(_raw);
    if status.oom_killed {
        eprintln!(
            "cabin: the container ran out of memory{} and its process was killed",
            cabin_containers::vm::memory_limit_note(cfg)
        );
    }
    cabin_containers::vm::exit_code(&status)
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
            ("nofile".into(), 1024, 4096)
        );
        assert_eq!(parse_ulimit("core=0").unwrap(), ("core".into(), 0, 0));
        assert_eq!(parse_ulimit("nproc=unlimited").unwrap().2, u64::MAX);
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=10:5").is_err());
    }
}
