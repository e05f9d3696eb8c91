//! `cabin volume create|ls|inspect|rm|prune`: named volumes (sparse ext4 disks that
//! outlive their containers).

use cabin_containers::volumes::{VolumeInfo, Volumes, DEFAULT_VOLUME_BYTES};
use cabin_containers::{Containers, Host};
use clap::Subcommand;

use crate::report::{Failure, Family, TableFormat};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (containers also create the ones they name on first use).
    Create {
        name: String,
        /// Size of its file system (sparse: it uses what is written), e.g. 10g.
        #[arg(long, value_name = "SIZE")]
        size: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// Volumes' details as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no container uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune,
}

fn json(v: &Volumes, info: &VolumeInfo) -> serde_json::Value {
    serde_json::json!({
        "Name": info.name,
        "Driver": "local",
        "Format": "ext4",
        "Disk": v.disk(&info.name),
        "SizeBytes": info.size_bytes,
        "CreatedUnix": info.created_unix,
        "InUse": v.in_use(&info.name),
    })
}

pub async fn run(host: &Host, cmd: VolumeCommand) -> Result<i32, Failure> {
    let containers = Containers::open(host)?;
    let volumes = containers.volumes();
    match cmd {
        VolumeCommand::Create { name, size } => {
            let size = match size {
                Some(s) => cabin_base::sizes::parse_size(&s, cabin_base::sizes::Dialect::Docker)?,
                None => DEFAULT_VOLUME_BYTES,
            };
            println!("{}", volumes.create(&name, size)?.name);
        }
        VolumeCommand::Ls { quiet, format } => {
            let list = volumes.list();
            match (quiet, format) {
                (true, _) => list.iter().for_each(|v| println!("{}", v.name)),
                (false, TableFormat::Json) => {
                    let all: Vec<_> = list.iter().map(|i| json(&volumes, i)).collect();
                    println!("{}", serde_json::Value::Array(all));
                }
                (false, TableFormat::Table) => {
                    println!("{:<30} {:>10} {:<8}", "NAME", "SIZE", "IN USE");
                    for v in &list {
                        println!(
                            "{:<30} {:>7.1} GB {:<8}",
                            v.name,
                            v.size_bytes as f64 / 1e9,
                            if volumes.in_use(&v.name) { "yes" } else { "no" }
                        );
                    }
                }
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in names {
                match volumes.inspect(&n) {
                    Ok(info) => out.push(json(&volumes, &info)),
                    Err(e) => code = crate::report::exit_code(Family::Admin, e.into()),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            return Ok(code);
        }
        VolumeCommand::Rm { names } => {
            let mut code = 0;
            for n in names {
                match containers.remove_volume(&n).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => code = crate::report::exit_code(Family::Admin, e.into()),
                }
            }
            return Ok(code);
        }
        VolumeCommand::Prune => {
            let removed = containers.prune_volumes().await?;
            for v in &removed {
                println!("{v}");
            }
            eprintln!("removed {} volume(s)", removed.len());
        }
    }
    Ok(0)
}
