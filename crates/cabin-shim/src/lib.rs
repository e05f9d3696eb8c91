//! `containerd-shim-cabin-v2`: containerd's runtime v2 shim for cabin, so that
//! containerd (`ctr run --runtime io.containerd.cabin.v2`, nerdctl, Kubernetes through
//! a RuntimeClass) runs its tasks in cabin's VMs. A thin front end: containerd's
//! protocol (the `start`/`delete` bootstrap, the ttrpc Task service, events, the log
//! fifo) comes from the `containerd-shim` crate, the containers are
//! `cabin_containers::Containers`' (each in its own VM, visible in `cabin ps -a`),
//! and this crate translates between the two (`bundle`, `stdio`, `task`).
//!
//! containerd starts the shim without `HOME`: cabin's directories come from the
//! environment containerd passes on (`CABIN_DATA_DIR`, ...) or else the user's home
//! in the password database, as `cabin` itself finds them; the kernel and init from
//! the installed layout beside the binary.

pub mod bundle;
pub mod stdio;
pub mod task;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use cabin_containers::{AccelRequest, Containers, Host};
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, DeleteResponse, Error, Flags, StartOpts};

pub use task::container_name;

/// The runtime's name in containerd (`io.containerd.cabin.v2` selects the binary
/// `containerd-shim-cabin-v2`).
pub const RUNTIME_ID: &str = "io.containerd.cabin.v2";
/// CRI's annotation naming a container's pod: one shim serves a whole pod.
pub const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Runs the shim as containerd asked (its argv: `start`, `delete` or serve).
pub fn main() {
    if std::env::args().any(|a| a == "-v" || a == "--version" || a == "-version") {
        println!(
            "containerd-shim-cabin-v2 {} ({RUNTIME_ID})",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("containerd-shim-cabin-v2: cannot start its runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(containerd_shim::asynchronous::run::<CabinShim>(
        RUNTIME_ID,
        Some(Config {
            // cabin's processes wait for their own children (QEMU, mkfs): a reaper
            // that takes every child's exit would steal those.
            no_reaper: true,
            no_sub_reaper: true,
            ..Default::default()
        }),
    ));
    // A stdio open still waiting for a client that never came must not hold the
    // shim's exit.
    runtime.shutdown_background();
}

/// The shim process: one per task, or per pod.
pub struct CabinShim {
    namespace: String,
    id: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

fn host() -> Host {
    Host::from_env()
}

/// `CABIN_ACCEL` as containerd's environment has it (auto when unset or unreadable).
fn accel() -> AccelRequest {
    std::env::var("CABIN_ACCEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

fn shim_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Other(format!("{what}: {e}"))
}

#[async_trait]
impl Shim for CabinShim {
    type T = task::TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        CabinShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// containerd's `start`: the address of the shim serving this task: a new one, or
    /// its pod's (the containers of one pod share one shim, and so one VM).
    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        let spec = bundle::read_config(&self.bundle).map_err(|e| shim_error("start", e))?;
        let grouping = spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SANDBOX_ANNOTATION).cloned())
            .unwrap_or_else(|| opts.id.clone());
        let address = spawn(opts, &grouping, Vec::new()).await?;
        // containerd finds a running shim again from this file after it restarts.
        containerd_shim::asynchronous::util::write_str_to_file(
            self.bundle.join("address"),
            &address,
        )
        .await?;
        Ok(address)
    }

    /// containerd's `delete`: the shim is gone (killed, crashed); what it left of the
    /// task (its container, VM and mounts) goes too.
    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        let containers = Containers::open(&host()).map_err(|e| shim_error("delete", e))?;
        let name = container_name(&self.namespace, &self.id);
        if let Ok(record) = containers.get(&name).await {
            if let Err(e) = containers.remove(&name, true).await {
                log::warn!("removing {name}: {e}");
            }
            let label = |key: &str| {
                record
                    .labels
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| PathBuf::from(v))
            };
            if let Some(disk) = label(task::DISK_LABEL) {
                task::release_disk(&containers, disk).await;
            }
            if let Some(root) = label(task::ROOT_LABEL) {
                task::unmount_task_root(&root, true);
            }
        }
        bundle::unmount_root(&self.bundle.join("rootfs"));
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: containerd_shim::util::timestamp().ok().into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    /// The Task service. Side-effect free: a shim started for a pod's second container
    /// makes one before it finds the pod's shim already serving and leaves.
    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let containers = match Containers::open(&host()) {
            Ok(c) => c,
            Err(e) => {
                log::error!("cabin's containers cannot be opened: {e}");
                std::process::exit(1);
            }
        };
        task::TaskService::new(
            containers,
            self.namespace.clone(),
            accel(),
            publisher,
            self.exit.clone(),
        )
    }
}
