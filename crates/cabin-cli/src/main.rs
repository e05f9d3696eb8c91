//! `cabin`: containers in lightweight VMs. A thin command-line layer over the cabin libraries.

mod check_cmd;
mod connect_args;
mod containers_cmd;
mod cp_cmd;
mod image_cmd;
mod machine_args;
mod network_cmd;
mod prepare;
mod process_args;
mod progress;
mod report;
mod run;
mod terminal;
mod vm_cmd;
mod vm_image_cmd;
mod volume_cmd;

use std::time::Instant;

use cabin_containers::Host;
use clap::{Parser, Subcommand};
use report::{finish, Failure, Family, TableFormat, TextFormat};

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
    /// Change containers' memory, CPU and process limits (at once if they run).
    Update(containers_cmd::UpdateArgs),
    /// Pause running containers: each one's whole VM stops where it is.
    Pause(containers_cmd::NamesArgs),
    /// Let paused containers go on.
    Unpause(containers_cmd::NamesArgs),
    /// Remove containers.
    Rm(containers_cmd::RmArgs),
    /// Rename a container.
    Rename(containers_cmd::RenameArgs),
    /// The processes of a running container.
    Top(containers_cmd::TopArgs),
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
        /// The accelerator of the VMs it runs: auto (KVM where it can run a guest, else
        /// TCG), kvm or tcg.
        #[arg(long, value_enum, default_value = "auto", env = "CABIN_ACCEL")]
        accel: machine_args::AccelFlag,
        /// Also serve the Docker Engine API on a unix socket at PATH (mode 0660), for
        /// the docker CLI (DOCKER_HOST=unix://PATH), docker-compose and Docker SDKs.
        #[arg(long, value_name = "PATH")]
        docker_socket: Option<std::path::PathBuf>,
        /// The address to listen on. Beyond 127.0.0.1 everything, the console's token
        /// included, travels in clear text, and Lume's API asks for the token too.
        #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
        listen: std::net::IpAddr,
        /// Read the console's session token from FILE instead of making a new one at
        /// each start (16 to 256 characters of A-Z a-z 0-9 - _).
        #[arg(long, value_name = "FILE")]
        token_file: Option<std::path::PathBuf>,
        /// With --listen beyond the loopback, serve Lume's API without the token (for
        /// Lume clients that cannot send one): anyone who reaches the port can then
        /// create, run and delete VMs. The console keeps its token.
        #[arg(long, requires = "listen")]
        unauthenticated_lume_api_on_the_network: bool,
        /// Keep N container VMs resumed and warmed up: cabin run, run -d, start and
        /// the Docker API on this data directory take one instead of starting a VM,
        /// for containers without devices of their own (shares, volumes, published
        /// ports, bridge networks). They have the default CPUs and memory until a
        /// container of another shape comes, then that one's. Each waiting VM costs
        /// its memory (about 70 MiB under TCG). 0: none.
        #[arg(long, default_value_t = 0, value_name = "N")]
        pool: usize,
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
    /// Manage user-defined networks.
    Network {
        #[command(subcommand)]
        command: network_cmd::NetworkCommand,
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
    /// Wait in cabin serve's pool with a warm VM of SHAPE (JSON), then supervise the
    /// container it is given (started by cabin serve --pool; stdin is its link).
    #[command(hide = true)]
    PoolMember {
        #[arg(long)]
        shape: String,
    },
}

#[derive(Debug, Subcommand)]
enum SystemCommand {
    /// Check the image store and the VMs: blobs against their digests, names against
    /// their manifests, half-made leftovers of killed commands. Exit 0 when consistent.
    Check {
        /// Remove what is corrupt, unreferenced or half made (never a VM or an image
        /// that is only incomplete: for those it says what to do).
        #[arg(long)]
        repair: bool,
    },
    /// Disk space used by images, image disks, partial downloads, running VMs.
    Df {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// What cabin found on this host: QEMU, the accelerator and why, the guest kernel.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: TextFormat,
        /// The accelerator to report on: auto (KVM where it can run a guest, else TCG),
        /// kvm or tcg.
        #[arg(
            long,
            value_enum,
            default_value = "auto",
            env = "CABIN_ACCEL",
            hide = true
        )]
        accel: machine_args::AccelFlag,
    },
    /// Build the boot snapshot containers of this shape resume from (cabin run starts
    /// this in the background when it finds none).
    Prepare(prepare::PrepareArgs),
    /// Hold the boot snapshots' memory for the VMs that share it (started by cabin run).
    #[command(hide = true)]
    HoldMemory,
}

fn main() {
    let started = Instant::now();
    let cli = Cli::parse();
    // What cabin takes from its environment, read here once.
    let host = Host::from_env();
    // Whatever a killed cabin left behind (run directories, a QEMU that outlived it) is
    // cleaned up by the next cabin command, whichever it is.
    cabin_vmm::rundir::reap_stale(&host.paths.run_root());
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
    let code = runtime.block_on(dispatch(&host, cli.command, started));
    // Exit without waiting for a blocking stdin read to finish.
    std::process::exit(code);
}

/// Runs the command; its exit code.
async fn dispatch(host: &Host, command: Command, started: Instant) -> i32 {
    use Family::{Admin, Process};
    match command {
        Command::Run(args) => finish(Process, run::run(host, *args, started).await),
        Command::Create(args) => finish(Process, run::create(host, *args).await),
        Command::Start(a) => finish(Process, containers_cmd::start(host, a).await),
        Command::Restart(a) => finish(Process, containers_cmd::restart(host, a).await),
        Command::Exec(a) => finish(Process, containers_cmd::exec(host, a).await),
        Command::Stats(a) => finish(Process, containers_cmd::stats(host, a).await),
        Command::Ps(a) => finish(Admin, containers_cmd::ps(host, a).await),
        Command::Logs(a) => finish(Admin, containers_cmd::logs(host, a).await),
        Command::Stop(a) => finish(Admin, containers_cmd::stop(host, a).await),
        Command::Kill(a) => finish(Admin, containers_cmd::kill(host, a).await),
        Command::Update(a) => finish(Admin, containers_cmd::update(host, a).await),
        Command::Pause(a) => finish(Admin, containers_cmd::pause(host, a, true).await),
        Command::Unpause(a) => finish(Admin, containers_cmd::pause(host, a, false).await),
        Command::Rm(a) => finish(Admin, containers_cmd::rm(host, a).await),
        Command::Rename(a) => finish(Admin, containers_cmd::rename(host, a).await),
        Command::Top(a) => finish(Admin, containers_cmd::top(host, a).await),
        Command::Wait(a) => finish(Admin, containers_cmd::wait(host, a).await),
        Command::Inspect(a) => finish(Admin, containers_cmd::inspect(host, a).await),
        Command::Cp(a) => finish(Admin, cp_cmd::cp(host, a).await),
        Command::Container {
            command: ContainerCommand::Supervise { id },
        } => finish(Admin, containers_cmd::supervise(host, &id).await),
        Command::Container {
            command: ContainerCommand::Prune,
        } => finish(Admin, containers_cmd::prune(host).await),
        Command::Container {
            command: ContainerCommand::PoolMember { shape },
        } => finish(Admin, containers_cmd::pool_member(host, &shape).await),
        Command::Volume { command } => finish(Admin, volume_cmd::run(host, command).await),
        Command::Network { command } => finish(Admin, network_cmd::run(host, command).await),
        Command::Image { command } => image_cmd::run(host, command).await,
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
                        return finish(
                            Admin,
                            Err("cannot read the password from standard input".into()),
                        );
                    }
                    p.trim_end_matches(['\n', '\r']).to_string()
                }
                (None, false) => {
                    return finish(
                        Admin,
                        Err("give the password with --password-stdin (or --password)".into()),
                    )
                }
            };
            image_cmd::login(host, &registry, &username, &password, insecure).await
        }
        Command::Logout { registry } => image_cmd::logout(host, &registry),
        Command::Vm { command } => finish(Admin, vm_cmd::run(host, command).await),
        Command::Config { command } => finish(Admin, vm_cmd::config(host, command)),
        Command::Serve {
            port,
            accel,
            docker_socket,
            listen,
            token_file,
            unauthenticated_lume_api_on_the_network,
            pool,
        } => finish(
            Admin,
            serve(
                host,
                ServeArgs {
                    port,
                    accel,
                    docker_socket,
                    listen,
                    token_file,
                    unauthenticated_lume_api: unauthenticated_lume_api_on_the_network,
                    pool,
                },
            )
            .await,
        ),
        Command::System {
            command: SystemCommand::Info { format, accel },
        } => system_info(host, format, accel),
        Command::System {
            command: SystemCommand::Df { format },
        } => system_df(host, format),
        Command::System {
            command: SystemCommand::Check { repair },
        } => finish(Admin, check_cmd::run(host, repair)),
        Command::System {
            command: SystemCommand::Prepare(args),
        } => finish(Admin, prepare::run(host, args).await),
        Command::System {
            command: SystemCommand::HoldMemory,
        } => finish(
            Admin,
            cabin_containers::holder::hold(&host.paths)
                .map(|()| 0)
                .map_err(Failure::from),
        ),
    }
}

struct ServeArgs {
    port: u16,
    accel: machine_args::AccelFlag,
    docker_socket: Option<std::path::PathBuf>,
    listen: std::net::IpAddr,
    token_file: Option<std::path::PathBuf>,
    unauthenticated_lume_api: bool,
    pool: usize,
}

/// The console's session token: the file's (trimmed), or a new one.
fn console_token(file: Option<&std::path::Path>) -> Result<String, Failure> {
    let Some(file) = file else {
        return cabin_api::guard::new_token()
            .map_err(|e| Failure::new(format!("making the console's token: {e}")));
    };
    let text = cabin_base::files::read_bounded(file, 4096)
        .map_err(|e| Failure::new(format!("{}: {e}", file.display())))?;
    let token = String::from_utf8_lossy(&text).trim().to_string();
    if !cabin_api::guard::valid_token(&token) {
        return Err(Failure::new(format!(
            "{}: a token is 16 to 256 characters of A-Z a-z 0-9 - _",
            file.display()
        )));
    }
    Ok(token)
}

async fn serve(host: &Host, args: ServeArgs) -> Result<i32, Failure> {
    let ServeArgs {
        port,
        accel,
        docker_socket,
        listen,
        token_file,
        unauthenticated_lume_api,
        pool,
    } = args;
    let transfers = std::sync::Arc::new(cabin_machines::activity::Transfers::default());
    let console = cabin_console::Console::new(host.clone(), accel.into(), transfers.clone())?;
    let opts = cabin_api::Options {
        transfers,
        listen,
        lume_api_open_to_the_network: unauthenticated_lume_api,
        port,
        token: console_token(token_file.as_deref())?,
        console: Some(cabin_api::Console {
            router: cabin_console::router(console),
            is_console: cabin_console::is_console_path,
        }),
        host: host.clone(),
        accel: accel.into(),
    };
    let docker = match docker_socket {
        None => None,
        Some(socket) => {
            let socket = std::path::absolute(&socket)
                .map_err(|e| Failure::new(format!("{}: {e}", socket.display())))?;
            let listener = cabin_docker::bind(&socket).await.map_err(Failure::new)?;
            report::log_info(&format!(
                "Docker API started socket={} (DOCKER_HOST=unix://{})",
                socket.display(),
                socket.display()
            ));
            let opts = cabin_docker::Options {
                socket,
                host: host.clone(),
                accel: accel.into(),
            };
            Some(cabin_docker::serve(
                opts,
                listener,
                cabin_api::stop_signal(),
            ))
        }
    };
    // Containers lost with a killed service or a restarted host come back, as their
    // restart policies say, while the servers already answer.
    let containers = cabin_containers::Containers::open(host)?;
    tokio::spawn(async move {
        for (name, started) in containers.revive().await.unwrap_or_default() {
            match started {
                Ok(_) => report::log_info(&format!("restarted container={name} (restart policy)")),
                Err(e) => report::log_info(&format!("could not restart container={name}: {e}")),
            }
        }
    });
    let lume = async { cabin_api::serve(opts).await.map_err(Failure::new) };
    let docker = async {
        match docker {
            Some(docker) => docker.await.map_err(Failure::new),
            None => Ok(()),
        }
    };
    // The pool's VMs go when this process does (their link to it closes), however it
    // ends; it only returns early when it cannot start.
    let pool = async {
        if pool == 0 {
            return std::future::pending().await;
        }
        let shape = cabin_containers::pool::common_shape(accel.into());
        let report: cabin_containers::pool::Report = Box::new(|m: &str| report::log_info(m));
        match cabin_containers::pool::serve(host.clone(), pool, shape, report).await {
            Ok(()) => std::future::pending().await,
            Err(e) => Err(Failure::new(e.to_string())),
        }
    };
    tokio::select! {
        r = async { tokio::try_join!(lume, docker) } => { r?; }
        r = pool => r?,
    }
    Ok(0)
}

fn system_df(host: &Host, format: TableFormat) -> i32 {
    let usage = cabin_containers::system::disk_usage(&host.paths);
    match format {
        TableFormat::Json => {
            let v: Vec<_> = usage
                .iter()
                .map(|u| serde_json::json!({"type": u.what, "count": u.count, "bytes": u.bytes}))
                .collect();
            println!("{}", serde_json::Value::Array(v));
        }
        TableFormat::Table => {
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
    }
    0
}

fn system_info(host: &Host, format: TextFormat, accel: machine_args::AccelFlag) -> i32 {
    let info = cabin_containers::system::info(host, accel.into());
    match format {
        TextFormat::Json => {
            let map: serde_json::Map<String, serde_json::Value> = info
                .0
                .into_iter()
                .map(|(k, v)| (k.replace(' ', "_"), serde_json::Value::String(v)))
                .collect();
            println!("{}", serde_json::Value::Object(map));
        }
        TextFormat::Text => {
            for (k, v) in info.0 {
                println!("{:<20} {v}", format!("{k}:"));
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The helper commands the libraries start must parse as this binary's commands.
    #[test]
    fn the_libraries_helper_commands_are_commands_of_cabin() {
        let parse = |args: Vec<String>| {
            Cli::try_parse_from(std::iter::once("cabin".to_string()).chain(args)).map(|c| c.command)
        };
        let id = "0123456789abcdef0123456789abcdef";
        assert!(matches!(
            parse(cabin_containers::containers::supervise_args(id).to_vec()),
            Ok(Command::Container {
                command: ContainerCommand::Supervise { id: got }
            }) if got == id
        ));
        let shape = cabin_containers::vm::VmShape::of(&cabin_containers::ContainerSpec::new(
            cabin_containers::RootSource::Dir("/".into()),
            vec![],
        ));
        assert!(matches!(
            parse(cabin_containers::vm::prepare_args(&shape)),
            Ok(Command::System {
                command: SystemCommand::Prepare(_)
            })
        ));
        assert!(matches!(
            parse(cabin_containers::pool::member_args(&shape)),
            Ok(Command::Container {
                command: ContainerCommand::PoolMember { .. }
            })
        ));
        assert!(matches!(
            parse(
                cabin_containers::holder::hold_args()
                    .map(String::from)
                    .to_vec()
            ),
            Ok(Command::System {
                command: SystemCommand::HoldMemory
            })
        ));
        let dir = std::path::Path::new("/srv/vms/web");
        let runner: Vec<String> = cabin_machines::runner::runner_args(dir)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(matches!(
            parse(runner),
            Ok(Command::Vm {
                command: vm_cmd::VmCommand::Runner { dir: got }
            }) if got == dir
        ));
    }
}
