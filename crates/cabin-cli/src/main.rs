//! `cabin`: containers in lightweight VMs. A thin command-line layer over the cabin libraries.

mod attach_cmd;
mod connect_args;
mod containers_cmd;
mod cp_cmd;
mod detached;
mod image_cmd;
mod machine_args;
mod prepare;
mod process_args;
mod progress;
mod run;

mod terminal;
mod vm_cmd;
mod vm_image_cmd;
mod volume_cmd;

use std::time::Instant;

use cabin_containers::Paths;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cabin",
    version,
    about = "Containers, each in its own lightweight VM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in a new container, in a VM of its own.
    Run(Box<run::RunArgs>),
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: image_cmd::ImageCommand,
    },
    /// Save credentials for a registry (checked with it first).
    Login {
        /// host[:port] of the registry.
        registry: String,
        #[arg(short, long)]
        username: String,
        /// The password (prefer --password-stdin: a command line is visible to others).
        #[arg(short, long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Use plain HTTP with this registry.
        #[arg(long)]
        insecure: bool,
    },
    /// Forget the credentials for a registry.
    Logout { registry: String },
    /// Create a container without starting it (the options of run); prints its ID.
    Create(Box<run::RunArgs>),
    /// Start created or exited containers (-a: and attach to one).
    Start(containers_cmd::StartArgs),
    /// Stop and start containers.
    Restart(containers_cmd::StopArgs),
    /// List containers (running ones; -a for all).
    #[command(alias = "ls")]
    Ps(containers_cmd::PsArgs),
    /// Print a container's output (stdout and stderr, as it was kept).
    Logs(containers_cmd::LogsArgs),
    /// Stop running containers: SIGTERM, then SIGKILL after a timeout.
    Stop(containers_cmd::StopArgs),
    /// Send a signal to running containers' processes.
    Kill(containers_cmd::KillArgs),
    /// Remove containers.
    Rm(containers_cmd::RmArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(containers_cmd::NamesArgs),
    /// Run a command in a running container.
    Exec(containers_cmd::ExecArgs),
    /// Copy files and directories between a running container and the host
    /// (CONTAINER:PATH on one side; - for a tar archive on standard input or output).
    Cp(cp_cmd::CpArgs),
    /// CPU, memory and processes of running containers.
    Stats(containers_cmd::StatsArgs),
    /// Containers' records as JSON.
    Inspect(containers_cmd::NamesArgs),
    /// Container maintenance (prune).
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Full VMs, managed like Lume's (create, run, stop, ls, get, set, clone, delete).
    Vm {
        #[command(subcommand)]
        command: vm_cmd::VmCommand,
    },
    /// Serve Lume's HTTP API for VMs on 127.0.0.1 (until SIGTERM or Ctrl-C).
    Serve {
        /// The port (0: any free one; the "Server started port=N" line says which).
        #[arg(long, default_value_t = cabin_api::DEFAULT_PORT)]
        port: u16,
    },
    /// Settings: storage locations for VMs.
    Config {
        #[command(subcommand)]
        command: vm_cmd::ConfigCommand,
    },
    /// Manage named volumes.
    Volume {
        #[command(subcommand)]
        command: volume_cmd::VolumeCommand,
    },
    /// Host-wide information and maintenance.
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ContainerCommand {
    /// Remove every container that is not running.
    Prune,
    /// Own the VM of detached container ID (started by cabin run -d).
    #[command(hide = true)]
    Supervise { id: String },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Disk space used by images, image disks, partial downloads, running VMs.
    Df {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// What cabin found on this host: QEMU, the accelerator and why, the guest kernel.
    Info {
        /// Output format: text or json.
        #[arg(long, default_value = "text")]
        format: String,
        /// The accelerator to report on: auto (KVM where it can run a guest, else TCG),
        /// kvm or tcg.
        #[arg(long, default_value = "auto", env = "CABIN_ACCEL", hide = true)]
        accel: String,
    },
    /// Build the boot snapshot containers of this shape resume from (cabin run starts
    /// this in the background when it finds none).
    Prepare(prepare::PrepareArgs),
}

fn main() {
    let started = Instant::now();
    let cli = Cli::parse();
    // Whatever a killed cabin left behind (run directories, a QEMU that outlived it) is
    // cleaned up by the next cabin command, whichever it is.
    cabin_vmm::rundir::reap_stale(&Paths::from_env().run_root());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cabin: cannot start: {e}");
            std::process::exit(125);
        }
    };
    // One thread runs everything (QEMU is spawned from it, and its parent-death signal
    // is tied to the spawning thread).
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(*args, started).await,
            Command::Image { command } => image_cmd::run(command).await,
            Command::Login {
                registry,
                username,
                password,
                password_stdin,
                insecure,
            } => {
                let password = match (password, password_stdin) {
                    (Some(p), _) => p,
                    (None, true) => {
                        let mut p = String::new();
                        if std::io::stdin().read_line(&mut p).is_err() {
                            eprintln!("cabin: cannot read the password from standard input");
                            std::process::exit(1);
                        }
                        p.trim_end_matches(['\n', '\r']).to_string()
                    }
                    (None, false) => {
                        eprintln!("cabin: give the password with --password-stdin (or --password)");
                        std::process::exit(1);
                    }
                };
                image_cmd::login(&registry, &username, &password, insecure).await
            }
            Command::Logout { registry } => image_cmd::logout(&registry),
            Command::Create(args) => run::create(*args).await,
            Command::Start(a) => containers_cmd::start(a).await,
            Command::Restart(a) => containers_cmd::restart(a).await,
            Command::Ps(a) => containers_cmd::ps(a),
            Command::Logs(a) => containers_cmd::logs(a).await,
            Command::Stop(a) => containers_cmd::stop(a).await,
            Command::Kill(a) => containers_cmd::kill(a).await,
            Command::Rm(a) => containers_cmd::rm(a).await,
            Command::Wait(a) => containers_cmd::wait(a).await,
            Command::Inspect(a) => containers_cmd::inspect(a),
            Command::Stats(a) => containers_cmd::stats(a).await,
            Command::Exec(a) => containers_cmd::exec(a).await,
            Command::Cp(a) => cp_cmd::cp(a).await,
            Command::Container {
                command: ContainerCommand::Supervise { id },
            } => containers_cmd::supervise(&id).await,
            Command::Container {
                command: ContainerCommand::Prune,
            } => containers_cmd::prune(),
            Command::Volume { command } => volume_cmd::run(command),
            Command::Vm { command } => vm_cmd::run(command).await,
            Command::Config { command } => vm_cmd::config(command),
            Command::Serve { port } => serve(port).await,
            Command::System {
                command: SystemCommand::Info { format, accel },
            } => system_info(&format, &accel),
            Command::System {
                command: SystemCommand::Df { format },
            } => system_df(&format),
            Command::System {
                command: SystemCommand::Prepare(args),
            } => prepare::run(args).await,
        }
    });
    // Exit without waiting for a blocking stdin read to finish.
    std::process::exit(code);
}

async fn serve(port: u16) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cabin: cannot find the cabin binary: {e}");
            return 1;
        }
    };
    let opts = cabin_api::Options {
        port,
        paths: Paths::from_env(),
        exe,
    };
    match cabin_api::serve(opts).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cabin: {e}");
            1
        }
    }
}

fn system_df(format: &str) -> i32 {
    let usage = cabin_containers::system::disk_usage(&Paths::from_env());
    match format {
        "json" => {
            let v: Vec<_> = usage
                .iter()
                .map(|u| serde_json::json!({"type": u.what, "count": u.count, "bytes": u.bytes}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        "table" => {
            println!("{:<26} {:>6} {:>12}", "TYPE", "COUNT", "SIZE");
            for u in usage {
                println!(
                    "{:<26} {:>6} {:>9.1} MB",
                    u.what,
                    u.count,
                    u.bytes as f64 / 1e6
                );
            }
        }
        other => {
            eprintln!("cabin: unknown format {other:?}: use table or json");
            return 125;
        }
    }
    0
}

fn system_info(format: &str, accel: &str) -> i32 {
    let paths = Paths::from_env();
    let accel = match accel.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cabin: {e}");
            return 125;
        }
    };
    let info = cabin_containers::system::info(&paths, accel);
    match format {
        "json" => {
            let map: serde_json::Map<String, serde_json::Value> = info
                .0
                .into_iter()
                .map(|(k, v)| (k.replace(' ', "_"), serde_json::Value::String(v)))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
        "text" => {
            for (k, v) in info.0 {
                println!("{:<20} {v}", format!("{k}:"));
            }
        }
        other => {
            eprintln!("cabin: unknown format {other:?}: use text or json");
            return 125;
        }
    }
    0
}
