//! `cabin system prepare`: build the boot snapshot that containers resume from, and the
//! background start of the same after a run found none.

use cabin_containers::snapshot::{self, Built};
use cabin_containers::vm::prepare_snapshot;
use cabin_containers::volumes::MountSpec;
use cabin_containers::{ContainerConfig, Paths, RootSource};
use clap::Args;

use crate::machine_args::MachineArgs;

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Print nothing (for the background build `cabin run` starts).
    #[arg(long, hide = true)]
    quiet: bool,
    /// The network of the containers to prepare for: user, bridge or none.
    #[arg(long, value_name = "MODE", default_value = "user")]
    network: String,
    /// How many shared host folders they have (each is a device of the VM).
    #[arg(long, value_name = "N", default_value_t = 0)]
    shares: usize,
    /// How many volumes they have.
    #[arg(long, value_name = "N", default_value_t = 0)]
    volumes: usize,
}

pub async fn run(args: PrepareArgs) -> i32 {
    let mut cfg = ContainerConfig::new(RootSource::Dir("/".into()), Vec::new());
    if let Err(e) = args.machine.apply(&mut cfg, !args.quiet) {
        eprintln!("cabin: {e}");
        return 125;
    }
    cfg.network = match args.network.parse() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cabin: {e}");
            return 125;
        }
    };
    // Only the number of each kind of device shapes the VM.
    for i in 0..args.shares {
        cfg.mounts.push(MountSpec::Bind {
            source: "/".into(),
            target: format!("/share{i}"),
            read_only: false,
        });
    }
    for i in 0..args.volumes {
        cfg.mounts.push(MountSpec::Volume {
            name: format!("v{i}"),
            target: format!("/volume{i}"),
            read_only: false,
        });
    }
    let paths = Paths::from_env();
    match prepare_snapshot(&paths, &cfg).await {
        Ok(built) => {
            if !args.quiet {
                match built {
                    Built::Built(p) => println!("boot snapshot saved: {}", describe(&p)),
                    Built::AlreadyThere(p) => {
                        println!("boot snapshot already there: {}", describe(&p))
                    }
                    Built::InProgress => println!("another cabin is building this boot snapshot"),
                }
            }
            0
        }
        Err(e) => {
            if !args.quiet {
                eprintln!("cabin: {e}");
            }
            1
        }
    }
}

fn describe(p: &std::path::Path) -> String {
    let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    format!("{} ({:.1} MB)", p.display(), size as f64 / 1e6)
}

/// Starts `cabin system prepare` for this VM shape as a detached process, so that the
/// next run resumes instead of booting. Best effort: a failure only costs speed.
pub fn start_in_background(machine: &MachineArgs, cfg: &ContainerConfig) {
    if !snapshot::enabled() {
        return;
    }
    let mut args = vec!["system".to_string(), "prepare".into(), "--quiet".into()];
    args.extend(machine.to_args(cfg));
    let count = |f: fn(&MountSpec) -> bool| cfg.mounts.iter().filter(|m| f(m)).count();
    args.extend([
        "--network".to_string(),
        cfg.network.as_str().to_string(),
        "--shares".into(),
        count(|m| matches!(m, MountSpec::Bind { .. })).to_string(),
        "--volumes".into(),
        count(|m| matches!(m, MountSpec::Volume { .. })).to_string(),
    ]);
    let _ = crate::detached::spawn(&args);
}
