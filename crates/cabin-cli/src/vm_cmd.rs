//! `cabin vm ...` (full VMs, like Lume's commands) and `cabin config storage ...`.

use std::path::PathBuf;
use std::time::Duration;

use cabin_containers::Host;
use cabin_machines::details::{self, lume_pretty};
use cabin_machines::from_image;
use cabin_machines::runner::{self, RunOptions, Started};
use cabin_machines::settings::Settings;
use cabin_machines::store::Session;
use cabin_machines::store::{self, CreateOptions, VmError};
use clap::{Args, Subcommand, ValueEnum};

use crate::machine_args::AccelFlag;
use crate::report::{log_info, Failure, TextFormat};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM: an empty sparse disk and a UEFI variable store (install an OS from
    /// an ISO with `vm run --mount`).
    Create(CreateArgs),
    /// Run a VM (in the foreground unless --detach) with a VNC display on 127.0.0.1.
    Run(RunArgs),
    /// Stop a running VM: ACPI power-off, then the plug.
    Stop(NameArgs),
    /// Suspend a running VM: save its memory and device state into its directory and
    /// stop it; `vm run` resumes it where it was (its clock set anew in VMs made with
    /// --image). `vm stop` of a suspended VM discards the saved state. The state holds
    /// the guest's memory, secrets included: it stays in the VM's directory, readable
    /// by its owner only.
    Suspend(NameArgs),
    /// List VMs.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        format: TextFormat,
        #[arg(long)]
        storage: Option<String>,
    },
    /// A VM's details.
    Get {
        name: String,
        #[arg(short, long, value_enum, default_value = "text")]
        format: TextFormat,
        #[arg(long)]
        storage: Option<String>,
    },
    /// Change a stopped VM: CPUs, memory, display, a bigger disk.
    Set(SetArgs),
    /// Delete a VM (a running one only with --force, which stops it first).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        storage: Option<String>,
    },
    /// Clone a stopped VM (copy-on-write where the file system can).
    Clone {
        name: String,
        new_name: String,
        #[arg(long)]
        source_storage: Option<String>,
        #[arg(long)]
        dest_storage: Option<String>,
    },
    /// The VM's serial console output (of its current or last run).
    Logs(NameArgs),
    /// Log in to a running VM with SSH, or run CMD there (VMs made with --image accept
    /// cabin's own key for root).
    Ssh(SshArgs),
    /// Push a stopped VM to an OCI registry in Lume's format.
    Push(crate::vm_image_cmd::PushArgs),
    /// Pull a VM image (Lume's format) from an OCI registry into a new VM.
    Pull(crate::vm_image_cmd::PullArgs),
    /// VM images in the local cache.
    Images {
        #[arg(short, long, value_enum, default_value = "text")]
        format: TextFormat,
    },
    /// Remove every cached VM image.
    Prune,
    /// Run the VM in DIR with the options a background start left there (started by
    /// `vm run --detach` and `cabin serve`).
    #[command(hide = true)]
    Runner { dir: PathBuf },
}

/// `--vnc`: Lume's VNC policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VncMode {
    Enabled,
    Disabled,
}

#[derive(Debug, Args)]
pub struct SshArgs {
    name: String,
    /// The command to run (default: an interactive shell).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
    /// The user to log in as (default: root for VMs made with --image, else lume).
    #[arg(short, long)]
    user: Option<String>,
    /// Seconds to wait for the connection (0: ssh's own default).
    #[arg(short, long, default_value_t = 60)]
    timeout: u64,
    #[arg(long)]
    storage: Option<String>,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    name: String,
    #[arg(long)]
    storage: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: String,
    #[arg(long, default_value = "linux")]
    os: String,
    #[arg(long, default_value_t = 4)]
    cpu: u32,
    /// Memory (Lume's sizes: 8GB, 8192MB, a bare number is GB).
    #[arg(long, default_value = "8GB")]
    memory: String,
    #[arg(long, default_value = "50GB")]
    disk_size: String,
    #[arg(long, default_value = "1024x768")]
    display: String,
    /// A storage location name, a directory path, or `ephemeral`.
    #[arg(long)]
    storage: Option<String>,
    /// nat, bridged or bridged:<interface>.
    #[arg(long, default_value = "nat")]
    network: String,
    /// Make a ready-to-boot VM from an image in cabin's store (e.g. a Debian root file
    /// system with systemd): its disk holds the image, it boots cabin's VM kernel into
    /// the image's own init.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    name: String,
    /// Share a host directory with the guest: PATH, PATH:ro or PATH:rw (9p; the tag is
    /// the folder's name).
    #[arg(long = "shared-dir", value_name = "PATH[:ro|:rw]")]
    shared_dirs: Vec<String>,
    /// Attach a read-only installer image (an ISO) and boot from it.
    #[arg(long, value_name = "ISO")]
    mount: Option<PathBuf>,
    /// Attach another read-write disk image.
    #[arg(long = "disk", value_name = "IMG")]
    disks: Vec<PathBuf>,
    /// No local display window (there is none on Linux anyway); VNC stays on.
    #[arg(short = 'd', long)]
    no_display: bool,
    /// Lume's VNC policy.
    #[arg(long, value_enum, default_value = "enabled")]
    vnc: VncMode,
    /// The VNC port on 127.0.0.1 (5900 and up; 0: the first free one).
    #[arg(long, default_value_t = 0)]
    vnc_port: u16,
    /// The VNC password (default: four random words).
    #[arg(long)]
    vnc_password: Option<String>,
    #[arg(long)]
    storage: Option<String>,
    /// Run in the background; returns once the VM runs.
    #[arg(long)]
    detach: bool,
    /// auto (KVM where it can run a guest, else TCG), kvm or tcg.
    #[arg(long, value_enum, default_value = "auto", env = "CABIN_ACCEL")]
    accel: AccelFlag,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    name: String,
    #[arg(long)]
    cpu: Option<u32>,
    #[arg(long)]
    memory: Option<String>,
    /// Grow the disk (it never shrinks).
    #[arg(long)]
    disk_size: Option<String>,
    #[arg(long)]
    display: Option<String>,
    #[arg(long)]
    storage: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Storage locations for VMs.
    Storage {
        #[command(subcommand)]
        command: StorageCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    Add {
        name: String,
        path: String,
    },
    Remove {
        name: String,
    },
    #[command(alias = "ls")]
    List,
    Default {
        name: String,
    },
}

fn lume_size(s: &str) -> Result<u64, cabin_base::sizes::SizeError> {
    cabin_base::sizes::parse_size(s, cabin_base::sizes::Dialect::Lume)
}

fn text_table(list: &[details::VmDetails]) -> String {
    let mut s = format!(
        "{:<20} {:<6} {:<4} {:<8} {:<18} {:<10} {:<9} {:<8} {:<10} {:<12} {:<16} {:<4} {}\n",
        "name",
        "os",
        "cpu",
        "memory",
        "disk",
        "display",
        "status",
        "network",
        "storage",
        "shared_dirs",
        "ip",
        "ssh",
        "vnc"
    );
    for d in list {
        s.push_str(&format!(
            "{:<20} {:<6} {:<4} {:<8} {:<18} {:<10} {:<9} {:<8} {:<10} {:<12} {:<16} {:<4} {}\n",
            d.name,
            d.os,
            d.cpu_count,
            format!("{:.2}G", d.memory_size as f64 / (1u64 << 30) as f64),
            format!(
                "{:.1}GB/{:.1}GB",
                d.disk_size.allocated as f64 / (1u64 << 30) as f64,
                d.disk_size.total as f64 / (1u64 << 30) as f64
            ),
            d.display,
            d.status,
            d.network_mode,
            d.location_name,
            "-",
            d.ip_address.as_deref().unwrap_or("-"),
            if d.ssh_available == Some(true) {
                "yes"
            } else {
                "-"
            },
            d.vnc_url.as_deref().unwrap_or("-"),
        ));
    }
    s
}

fn shared_dir(spec: &str) -> Result<(PathBuf, bool), String> {
    match spec.rsplit_once(':') {
        Some((p, "ro")) => Ok((PathBuf::from(p), true)),
        Some((p, "rw")) => Ok((PathBuf::from(p), false)),
        Some((_, other)) if !other.contains('/') => Err(format!(
            "invalid --shared-dir {spec:?}: the suffix {other:?} must be ro or rw"
        )),
        _ => Ok((PathBuf::from(spec), false)),
    }
}

fn print_details(list: &[details::VmDetails], format: TextFormat) {
    match format {
        TextFormat::Json => println!("{}", lume_pretty(&list)),
        TextFormat::Text => print!("{}", text_table(list)),
    }
}

pub async fn run(host: &Host, cmd: VmCommand) -> Result<i32, Failure> {
    let s = Settings::load(&host.paths)?;
    match cmd {
        VmCommand::Create(a) => {
            let opts = CreateOptions {
                os: a.os,
                cpu: a.cpu,
                memory: lume_size(&a.memory)?,
                disk_size: lume_size(&a.disk_size)?,
                display: a.display,
                network: a.network,
            };
            let vm = match &a.image {
                None => store::create(&s, &a.name, a.storage.as_deref(), &opts)?,
                Some(image) => {
                    let notify = |m: &str| eprintln!("cabin: {m}");
                    from_image::create(
                        &s,
                        host,
                        &a.name,
                        a.storage.as_deref(),
                        &opts,
                        image,
                        &notify,
                    )?
                }
            };
            log_info(&format!(
                "VM created name={} location={}",
                vm.name, vm.location_name
            ));
        }
        VmCommand::Run(a) => return run_vm(host, &s, a).await,
        VmCommand::Runner { dir } => {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            runner::run_recorded(host, &dir, |session| {
                announce_started(session);
                log_info(&format!("VM started name={name}"));
            })
            .await?;
            log_info(&format!("VM stopped name={name}"));
        }
        VmCommand::Stop(a) => {
            let vm = store::find(&s, &a.name, a.storage.as_deref())?;
            match runner::stop(&vm, Duration::from_secs(15))? {
                runner::Stopped::PoweredOff => log_info(&format!("VM stopped name={}", vm.name)),
                runner::Stopped::StateDiscarded => log_info(&format!(
                    "VM stopped name={}: its saved state was discarded, it boots at its next run",
                    vm.name
                )),
            }
        }
        VmCommand::Suspend(a) => {
            let vm = store::find(&s, &a.name, a.storage.as_deref())?;
            let started = std::time::Instant::now();
            cabin_machines::suspend::suspend(&vm, SUSPEND_TIMEOUT)?;
            log_info(&format!(
                "VM suspended name={} in {:.1} s; `cabin vm run {}` resumes it",
                vm.name,
                started.elapsed().as_secs_f64(),
                vm.name
            ));
        }
        VmCommand::Ls { format, storage } => {
            let list: Vec<_> = store::list(&s, storage.as_deref())?
                .iter()
                .filter_map(|v| details::details(v).ok())
                .collect();
            print_details(&list, format);
        }
        VmCommand::Get {
            name,
            format,
            storage,
        } => {
            let d = details::details(&store::find(&s, &name, storage.as_deref())?)?;
            print_details(&[d], format);
        }
        VmCommand::Set(a) => {
            let vm = store::find(&s, &a.name, a.storage.as_deref())?;
            let memory = a.memory.as_deref().map(lume_size).transpose()?;
            let disk = a.disk_size.as_deref().map(lume_size).transpose()?;
            store::set(&vm, a.cpu, memory, disk, a.display.as_deref())?;
            log_info(&format!("VM settings updated name={}", vm.name));
        }
        VmCommand::Delete {
            name,
            force,
            storage,
        } => {
            let vm = store::find(&s, &name, storage.as_deref())?;
            if vm.is_running() {
                if !force {
                    return Err(Failure::new(format!(
                        "{}; stop it first or use --force",
                        VmError::Running(vm.name.clone())
                    )));
                }
                runner::stop(&vm, Duration::from_secs(15))?;
            }
            store::delete(&vm)?;
            log_info(&format!("VM deleted name={}", vm.name));
        }
        VmCommand::Clone {
            name,
            new_name,
            source_storage,
            dest_storage,
        } => {
            let src = store::find(&s, &name, source_storage.as_deref())?;
            let vm = store::clone(&s, &src, &new_name, dest_storage.as_deref())?;
            log_info(&format!(
                "VM cloned source={} destination={}",
                src.name, vm.name
            ));
        }
        VmCommand::Push(a) => return crate::vm_image_cmd::push(host, &s, a).await,
        VmCommand::Pull(a) => return crate::vm_image_cmd::pull(host, &s, a).await,
        VmCommand::Images { format } => return crate::vm_image_cmd::images(&s, format),
        VmCommand::Prune => return crate::vm_image_cmd::prune(&s),
        VmCommand::Logs(a) => {
            let vm = store::find(&s, &a.name, a.storage.as_deref())?;
            let Ok(b) = std::fs::read(vm.dir.join(runner::CONSOLE_LOG)) else {
                return Err(Failure::new(format!(
                    "{} has no console output yet",
                    vm.name
                )));
            };
            use std::io::Write;
            let _ = std::io::stdout().write_all(&b);
        }
        VmCommand::Ssh(a) => return ssh(host, &s, a),
    }
    Ok(0)
}

/// Lume's log line for a VM's VNC display.
fn announce_started(session: &Session) {
    if let Some(url) = &session.url {
        log_info(&format!("VNC server started local={url}"));
    }
}

/// How long `vm suspend` waits for the VM's state to be saved (its memory is written
/// out whole).
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(600);

/// `vm ssh`: runs the system's ssh client in this process's place, so that terminals,
/// signals and exit codes behave as ssh's own.
fn ssh(host: &Host, s: &Settings, a: SshArgs) -> Result<i32, Failure> {
    use std::os::unix::process::CommandExt;
    let vm = store::find(s, &a.name, a.storage.as_deref())?;
    let Some(session) = vm.session() else {
        return Err(VmError::NotRunning(vm.name.clone()).into());
    };
    let from_image = matches!(from_image::DirectBoot::read(&vm.dir), Ok(Some(_)));
    let user = a
        .user
        .unwrap_or_else(|| if from_image { "root" } else { "lume" }.into());
    let Some(mut cmd) = session.ssh_command(&host.paths.ssh_key(), &user) else {
        return Err(Failure::new(format!(
            "{} has no address cabin knows of (only VMs made with --image get one); reach it through its VNC display",
            vm.name
        )));
    };
    if a.timeout > 0 {
        cmd.args(["-o", &format!("ConnectTimeout={}", a.timeout)]);
    }
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    let e = cmd.exec();
    Err(Failure::new(if e.kind() == std::io::ErrorKind::NotFound {
        "ssh is missing: install it with apt-get install openssh-client".to_string()
    } else {
        format!("running ssh: {e}")
    }))
}

async fn run_vm(host: &Host, s: &Settings, a: RunArgs) -> Result<i32, Failure> {
    let vm = store::find(s, &a.name, a.storage.as_deref())?;
    let shared_dirs = a
        .shared_dirs
        .iter()
        .map(|d| shared_dir(d))
        .collect::<Result<Vec<_>, _>>()?;
    if vm.is_running() {
        return Err(VmError::Running(vm.name.clone()).into());
    }
    let _ = a.no_display;
    let opts = RunOptions {
        shared_dirs,
        iso: a.mount.as_deref().map(std::path::absolute).transpose()?,
        disks: a
            .disks
            .iter()
            .map(std::path::absolute)
            .collect::<Result<_, _>>()?,
        vnc: a.vnc == VncMode::Enabled,
        vnc_port: Some(a.vnc_port),
        vnc_password: a.vnc_password,
        accel: a.accel.into(),
    };
    if a.detach {
        // The same run in a process of its own; back once the VM runs.
        let mut child = runner::start_detached(host, &vm, &opts)?;
        return match runner::wait_started(&vm, &mut child, Duration::from_secs(60)) {
            Started::Running(session) => {
                for n in &session.notices {
                    eprintln!("{n}");
                }
                announce_started(&session);
                log_info(&format!("VM started in the background name={}", a.name));
                Ok(0)
            }
            Started::Failed(why) => Err(Failure::new(format!("the VM did not start: {why}"))),
            Started::Starting => Err("the VM did not start within 60 s; see its run.log".into()),
        };
    }
    runner::run(host, &vm, &opts, |session| {
        announce_started(session);
        log_info(&format!("VM started name={}", vm.name));
    })
    .await?;
    log_info(&format!("VM stopped name={}", vm.name));
    Ok(0)
}

pub fn config(host: &Host, cmd: ConfigCommand) -> Result<i32, Failure> {
    let mut s = Settings::load(&host.paths)?;
    let ConfigCommand::Storage { command } = cmd;
    let changed = match command {
        StorageCommand::List => {
            for l in &s.vm_locations {
                let mark = if l.name == s.default_location_name {
                    " (default)"
                } else {
                    ""
                };
                println!("{}\t{}{mark}", l.name, l.path);
            }
            return Ok(0);
        }
        StorageCommand::Add { name, path } => s.add_location(&name, &path),
        StorageCommand::Remove { name } => s.remove_location(&name),
        StorageCommand::Default { name } => s.set_default(&name),
    };
    changed?;
    s.save(&host.paths)?;
    Ok(0)
}
