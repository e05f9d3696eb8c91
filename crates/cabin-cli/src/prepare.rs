//! `cabin system prepare`: build the boot snapshot that containers resume from, and the
//! background start of the same after a run found none.

use cabin_runtime::container_vm::prepare_snapshot;
use cabin_runtime::snapshot::{self, Built};
use cabin_runtime::{ContainerConfig, Paths, RootSource};
use clap::Args;

use crate::machine_args::MachineArgs;

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Print nothing (for the background build `cabin run` starts).
    #[arg(long, hide = true)]
    quiet: bool,
}

pub async fn run(args: PrepareArgs) -> i32 {
    let mut cfg = ContainerConfig::new(RootSource::Dir("/".into()), Vec::new());
    if let Err(e) = args.machine.apply(&mut cfg, !args.quiet) {
        eprintln!("cabin: {e}");
        return 125;
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
    let _ = crate::detached::spawn(&args);
}
