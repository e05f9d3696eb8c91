//! `cabin system prepare`: builds the boot snapshot that containers of one VM shape
//! resume from (also the helper the libraries start in the background, with the shape
//! as JSON).

use cabin_containers::snapshot::Built;
use cabin_containers::vm::{prepare_snapshot, VmShape};
use cabin_containers::{ContainerSpec, Host, RootSource};
use clap::Args;

use crate::machine_args::MachineArgs;
use crate::report::Failure;

#[derive(Debug, Args)]
pub struct PrepareArgs {
    #[command(flatten)]
    machine: MachineArgs,
    /// Print nothing (for the background build).
    #[arg(long, hide = true)]
    quiet: bool,
    /// The shape as JSON (how the libraries start this command in the background).
    #[arg(long, hide = true, value_name = "JSON")]
    shape: Option<String>,
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

/// The shape the options describe.
fn shape(args: &PrepareArgs) -> Result<VmShape, Failure> {
    if let Some(json) = &args.shape {
        return serde_json::from_str(json)
            .map_err(|e| Failure::new(format!("invalid --shape: {e}")));
    }
    let mut c = ContainerSpec::new(RootSource::Dir("/".into()), Vec::new());
    args.machine.apply(&mut c, !args.quiet)?;
    c.network = args.network.parse()?;
    let mut shape = VmShape::of(&c);
    shape.shares = args.shares;
    shape.volumes = args.volumes;
    Ok(shape)
}

pub async fn run(host: &Host, args: PrepareArgs) -> Result<i32, Failure> {
    let shape = shape(&args)?;
    let built = prepare_snapshot(host, &shape).await;
    if args.quiet {
        return Ok(if built.is_ok() { 0 } else { 1 });
    }
    match built? {
        Built::Built(p) => println!("boot snapshot saved: {}", describe(&p)),
        Built::AlreadyThere(p) => println!("boot snapshot already there: {}", describe(&p)),
        Built::InProgress => println!("another cabin is building this boot snapshot"),
    }
    Ok(0)
}

/// The template's state file, and how much its two files hold.
fn describe(state: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let allocated = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.blocks() * 512).unwrap_or(0) as f64 / 1e6
    };
    format!(
        "{} (state {:.1} MB, memory {:.1} MB)",
        state.display(),
        allocated(state),
        allocated(&state.with_extension("memory"))
    )
}
