//! `cabin vm ...` (full VMs, like Lume's commands) and `cabin config storage ...`.

use std::path::PathBuf;
use std::time::Duration;

use cabin_containers::{AccelRequest, Paths};
use cabin_machines::details::{self, lume_pretty};
use cabin_machines::from_image;
use cabin_machines::runner::{self, RunOptions, Started};
use cabin_machines::settings::Settings;
use cabin_machines::store::{self, CreateOptions, Vm, VmError};
use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM: an empty sparse disk and a UEFI variable store (install an OS from
    /// an ISO with `vm run --mount`).
    Create(CreateArgs),
    /// Run a VM (in the foreground unless --detach) with a VNC display on 127.0.0.1.
    Run(RunArgs),
    /// Stop a running VM: ACPI power-off, then the plug.
    Stop(NameArgs),
    /// List VMs.
    #[command(alias = "list")]
    Ls {
        /// Output format: json or text.
        #[arg(short, long, default_value = "text")]
        format: String,
        #[arg(long)]
        storage: Option<String>,
    },
    /// A VM's details.
    Get {
        name: String,
        #[arg(short, long, default_value = "text")]
        format: String,
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
        #[arg(short, long, default_value = "text")]
        format: String,
    },
    /// Remove every cached VM image.
    Prune,
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
    /// enabled or disabled.
    #[arg(long, default_value = "enabled")]
    vnc: String,
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
    #[arg(long, default_value = "auto", env = "CABIN_ACCEL")]
    accel: String,
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

fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("cabin: {e}");
    1
}

fn lume_size(s: &str) -> Result<u64, cabin_base::sizes::SizeError> {
    cabin_base::sizes::parse_size(s, cabin_base::sizes::Dialect::Lume)
}

fn settings(paths: &Paths) -> Result<Settings, String> {
    Settings::load(paths)
}

/// Lume's log line format: `[<ISO8601>] INFO: <msg> k=v`.
fn log_info(msg: &str) {
    println!("[{}] INFO: {msg}", cabin_base::time::now_rfc3339());
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

pub async fn run(cmd: VmCommand) -> i32 {
    let paths = Paths::from_env();
    let s = match settings(&paths) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    match cmd {
        VmCommand::Create(a) => {
            let sizes = lume_size(&a.memory).and_then(|m| Ok((m, lume_size(&a.disk_size)?)));
            let (memory, disk_size) = match sizes {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let opts = CreateOptions {
                os: a.os,
                cpu: a.cpu,
                memory,
                disk_size,
                display: a.display,
                network: a.network,
            };
            let made = match &a.image {
                None => store::create(&s, &a.name, a.storage.as_deref(), &opts),
                Some(image) => {
                    from_image::create(&s, &paths, &a.name, a.storage.as_deref(), &opts, image)
                }
            };
            match made {
                Ok(vm) => {
                    log_info(&format!(
                        "VM created name={} location={}",
                        vm.name, vm.location_name
                    ));
                    0
                }
                Err(e) => fail(e),
            }
        }
        VmCommand::Run(a) => run_vm(&paths, &s, a).await,
        VmCommand::Stop(a) => {
            let vm = match store::find(&s, &a.name, a.storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            match runner::stop(&vm, Duration::from_secs(15)) {
                Ok(()) => {
                    log_info(&format!("VM stopped name={}", vm.name));
                    0
                }
                Err(e) => fail(e),
            }
        }
        VmCommand::Ls { format, storage } => {
            let vms = match store::list(&s, storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let list: Vec<_> = vms
                .iter()
                .filter_map(|v| details::details(v).ok())
                .collect();
            match format.as_str() {
                "json" => println!("{}", lume_pretty(&list)),
                "text" => print!("{}", text_table(&list)),
                other => return fail(format!("unknown format {other:?}: use json or text")),
            }
            0
        }
        VmCommand::Get {
            name,
            format,
            storage,
        } => {
            let d = match store::find(&s, &name, storage.as_deref())
                .and_then(|v| details::details(&v))
            {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            match format.as_str() {
                "json" => println!("{}", lume_pretty(&[d])),
                "text" => print!("{}", text_table(&[d])),
                other => return fail(format!("unknown format {other:?}: use json or text")),
            }
            0
        }
        VmCommand::Set(a) => {
            let vm = match store::find(&s, &a.name, a.storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            let memory = match a.memory.as_deref().map(lume_size).transpose() {
                Ok(m) => m,
                Err(e) => return fail(e),
            };
            let disk = match a.disk_size.as_deref().map(lume_size).transpose() {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            match store::set(&vm, a.cpu, memory, disk, a.display.as_deref()) {
                Ok(_) => {
                    log_info(&format!("VM settings updated name={}", vm.name));
                    0
                }
                Err(e) => fail(e),
            }
        }
        VmCommand::Delete {
            name,
            force,
            storage,
        } => {
            let vm = match store::find(&s, &name, storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            if vm.is_running() {
                if !force {
                    return fail(format!(
                        "{}; stop it first or use --force",
                        VmError::Running(vm.name.clone())
                    ));
                }
                if let Err(e) = runner::stop(&vm, Duration::from_secs(15)) {
                    return fail(e);
                }
            }
            match store::delete(&vm) {
                Ok(()) => {
                    log_info(&format!("VM deleted name={}", vm.name));
                    0
                }
                Err(e) => fail(e),
            }
        }
        VmCommand::Clone {
            name,
            new_name,
            source_storage,
            dest_storage,
        } => {
            let src = match store::find(&s, &name, source_storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            match store::clone(&s, &src, &new_name, dest_storage.as_deref()) {
                Ok(vm) => {
                    log_info(&format!(
                        "VM cloned source={} destination={}",
                        src.name, vm.name
                    ));
                    0
                }
                Err(e) => fail(e),
            }
        }
        VmCommand::Push(a) => crate::vm_image_cmd::push(&paths, &s, a).await,
        VmCommand::Pull(a) => crate::vm_image_cmd::pull(&paths, &s, a).await,
        VmCommand::Images { format } => crate::vm_image_cmd::images(&s, &format),
        VmCommand::Prune => crate::vm_image_cmd::prune(&s),
        VmCommand::Logs(a) => {
            let vm = match store::find(&s, &a.name, a.storage.as_deref()) {
                Ok(v) => v,
                Err(e) => return fail(e),
            };
            match std::fs::read(vm.dir.join(runner::CONSOLE_LOG)) {
                Ok(b) => {
                    use std::io::Write;
                    let _ = std::io::stdout().write_all(&b);
                    0
                }
                Err(_) => fail(format!("{} has no console output yet", vm.name)),
            }
        }
        VmCommand::Ssh(a) => ssh(&paths, &s, a),
    }
}

/// `vm ssh`: runs the system's ssh client in this process's place, so that terminals,
/// signals and exit codes behave as ssh's own.
fn ssh(paths: &Paths, s: &Settings, a: SshArgs) -> i32 {
    use std::os::unix::process::CommandExt;
    let vm = match store::find(s, &a.name, a.storage.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let Some(session) = vm.session() else {
        return fail(VmError::NotRunning(vm.name.clone()));
    };
    let Some((host, port)) = session.ssh_address() else {
        return fail(format!(
            "{} has no address cabin knows of (only VMs made with --image get one); reach it through its VNC display",
            vm.name
        ));
    };
    let from_image = matches!(from_image::DirectBoot::read(&vm.dir), Ok(Some(_)));
    let user = a
        .user
        .unwrap_or_else(|| if from_image { "root" } else { "lume" }.into());
    let mut cmd = std::process::Command::new("ssh");
    let key = from_image::ssh_key(paths);
    if key.is_file() {
        cmd.arg("-i").arg(&key);
    }
    // Every VM's host key is new to this host, and clones share theirs: checking them
    // against known_hosts would only get in the way.
    cmd.args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-p",
        &port.to_string(),
    ]);
    if a.timeout > 0 {
        cmd.args(["-o", &format!("ConnectTimeout={}", a.timeout)]);
    }
    cmd.arg(format!("{user}@{host}"));
    if !a.command.is_empty() {
        cmd.arg("--").args(&a.command);
    }
    let e = cmd.exec();
    fail(if e.kind() == std::io::ErrorKind::NotFound {
        "ssh is missing: install it with apt-get install openssh-client".to_string()
    } else {
        format!("running ssh: {e}")
    })
}

async fn run_vm(paths: &Paths, s: &Settings, a: RunArgs) -> i32 {
    let vm = match store::find(s, &a.name, a.storage.as_deref()) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let shared: Vec<(PathBuf, bool)> = match a.shared_dirs.iter().map(|d| shared_dir(d)).collect() {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let vnc = match a.vnc.as_str() {
        "enabled" => true,
        "disabled" => false,
        other => return fail(format!("invalid --vnc {other:?}: enabled or disabled")),
    };
    let accel: AccelRequest = match a.accel.parse() {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    if vm.is_running() {
        return fail(VmError::Running(vm.name.clone()));
    }
    let _ = a.no_display;
    if a.detach {
        return detach(&vm, &a);
    }
    let opts = RunOptions {
        shared_dirs: shared,
        iso: a.mount,
        disks: a.disks,
        vnc,
        vnc_port: Some(a.vnc_port),
        vnc_password: a.vnc_password,
        accel,
    };
    let r = runner::run(paths, &vm, &opts, |session| {
        if let Some(url) = &session.url {
            log_info(&format!("VNC server started local={url}"));
        }
        log_info(&format!("VM started name={}", vm.name));
    })
    .await;
    match r {
        Ok(()) => {
            log_info(&format!("VM stopped name={}", vm.name));
            0
        }
        Err(e) => fail(e),
    }
}

/// `vm run --detach`: the same command without --detach as the VM's background runner
/// (`runner::spawn_runner`); returns once the VM runs, or with the reason it did not.
fn detach(vm: &Vm, a: &RunArgs) -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|x| x != "--detach")
        .collect();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return fail(e),
    };
    let mut child = match runner::spawn_runner(vm, &exe, &args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match runner::wait_started(vm, &mut child, Duration::from_secs(60)) {
        Started::Running(session) => {
            if let Some(url) = &session.url {
                log_info(&format!("VNC server started local={url}"));
            }
            log_info(&format!("VM started in the background name={}", a.name));
            0
        }
        Started::Failed(why) => fail(format!("the VM did not start: {why}")),
        Started::Starting => fail("the VM did not start within 60 s; see its run.log"),
    }
}

pub fn config(cmd: ConfigCommand) -> i32 {
    let paths = Paths::from_env();
    let mut s = match settings(&paths) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
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
            return 0;
        }
        StorageCommand::Add { name, path } => s.add_location(&name, &path),
        StorageCommand::Remove { name } => s.remove_location(&name),
        StorageCommand::Default { name } => s.set_default(&name),
    };
    match changed.and_then(|()| s.save(&paths)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
