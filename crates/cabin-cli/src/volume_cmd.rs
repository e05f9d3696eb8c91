//! `cabin volume create|ls|inspect|rm|prune`: named volumes (sparse ext4 disks that
//! outlive their containers).

use cabin_containers::store::Store;
use cabin_containers::volumes::{VolumeError, VolumeInfo, Volumes, DEFAULT_VOLUME_BYTES};
use cabin_containers::Paths;
use clap::Subcommand;

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
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
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

fn fail(e: impl std::fmt::Display) -> i32 {
    eprintln!("cabin: {e}");
    125
}

/// Containers (any state) that mount each volume: a volume they name cannot go.
fn users(paths: &Paths) -> Vec<(String, String)> {
    let Ok(store) = Store::open(paths) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for id in store.ids().unwrap_or_default() {
        if let Ok(r) = store.load(&id) {
            for v in r.volumes {
                out.push((v, r.name.clone()));
            }
        }
    }
    out
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

pub fn run(cmd: VolumeCommand) -> i32 {
    let paths = Paths::from_env();
    let volumes = Volumes::open(&paths);
    match cmd {
        VolumeCommand::Create { name, size } => {
            let size = match size
                .map(|s| cabin_base::sizes::parse_size(&s, cabin_base::sizes::Dialect::Docker))
                .transpose()
            {
                Ok(s) => s.unwrap_or(DEFAULT_VOLUME_BYTES),
                Err(e) => return fail(e),
            };
            if size < (8 << 20) {
                return fail("a volume must be at least 8 MiB");
            }
            match volumes.create(&name, size) {
                Ok(info) => {
                    println!("{}", info.name);
                    0
                }
                Err(e) => fail(e),
            }
        }
        VolumeCommand::Ls { quiet, format } => {
            let list = volumes.list();
            match (quiet, format.as_str()) {
                (true, _) => list.iter().for_each(|v| println!("{}", v.name)),
                (false, "json") => {
                    let all: Vec<_> = list.iter().map(|i| json(&volumes, i)).collect();
                    println!("{}", serde_json::Value::Array(all));
                }
                (false, "table") => {
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
                (false, other) => {
                    return fail(format!("unknown format {other:?}: use table or json"))
                }
            }
            0
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in names {
                match volumes.inspect(&n) {
                    Ok(info) => out.push(json(&volumes, &info)),
                    Err(e) => code = fail(e),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            code
        }
        VolumeCommand::Rm { names } => {
            let users = users(&paths);
            let mut code = 0;
            for n in names {
                let by: Vec<&str> = users
                    .iter()
                    .filter(|(v, _)| *v == n)
                    .map(|(_, c)| c.as_str())
                    .collect();
                if !by.is_empty() {
                    code = fail(format!(
                        "volume {n} is used by container(s) {}; remove them first (cabin rm)",
                        by.join(", ")
                    ));
                    continue;
                }
                match volumes.remove(&n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => code = fail(e),
                }
            }
            code
        }
        VolumeCommand::Prune => {
            let users = users(&paths);
            let mut freed = 0u64;
            for v in volumes.list() {
                if users.iter().any(|(u, _)| *u == v.name) {
                    continue;
                }
                match volumes.remove(&v.name) {
                    Ok(()) => {
                        println!("{}", v.name);
                        freed += 1;
                    }
                    Err(VolumeError::InUse(_)) => {}
                    Err(e) => eprintln!("cabin: {e}"),
                }
            }
            eprintln!("removed {freed} volume(s)");
            0
        }
    }
}
