//! `cabin network create|ls|inspect|rm|prune`: user-defined networks, each a bridge of
//! its own on which containers (`cabin run --network NAME`) find each other by name and
//! alias. Root only when containers join them, like `--network bridge`.

use cabin_containers::{Containers, Host};
use cabin_net::bridge;
use cabin_net::networks::{NetworkRecord, Networks};
use clap::Subcommand;

use crate::report::{Failure, Family, TableFormat};

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network (cabin picks its subnet, a /24 in 10.89.0.0/16).
    Create {
        name: String,
        /// KEY=VALUE
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: TableFormat,
    },
    /// Networks' details (with the containers attached now) as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no running container is attached to.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network no container is attached to or set to join.
    Prune,
}

fn json(r: &NetworkRecord) -> serde_json::Value {
    let net = r.net();
    let attached: Vec<_> = bridge::endpoints(&net)
        .into_iter()
        .map(|e| serde_json::json!({"ContainerId": e.container_id, "Names": e.names, "Address": e.ip}))
        .collect();
    serde_json::json!({
        "Name": r.name,
        "Id": r.id,
        "Subnet": format!("{}/24", r.subnet),
        "Gateway": r.gateway(),
        "Bridge": net.bridge,
        "CreatedUnix": r.created_unix,
        "Labels": r.labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "Containers": attached,
    })
}

pub async fn run(host: &Host, cmd: NetworkCommand) -> Result<i32, Failure> {
    let networks = Networks::open(&host.paths);
    match cmd {
        NetworkCommand::Create { name, labels } => {
            let labels = crate::run::parse_labels(&labels)?;
            println!("{}", networks.create(&name, labels)?.id);
        }
        NetworkCommand::Ls { quiet, format } => {
            let list = networks.list();
            match (quiet, format) {
                (true, _) => list.iter().for_each(|r| println!("{}", r.name)),
                (false, TableFormat::Json) => {
                    let all: Vec<_> = list.iter().map(json).collect();
                    println!("{}", serde_json::Value::Array(all));
                }
                (false, TableFormat::Table) => {
                    println!(
                        "{:<14} {:<30} {:<16} CONTAINERS",
                        "NETWORK ID", "NAME", "SUBNET"
                    );
                    for r in &list {
                        println!(
                            "{:<14} {:<30} {:<16} {}",
                            &r.id[..12],
                            r.name,
                            format!("{}/24", r.subnet),
                            bridge::endpoints(&r.net()).len()
                        );
                    }
                }
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in names {
                match networks.get(&n) {
                    Ok(r) => out.push(json(&r)),
                    Err(e) => code = crate::report::exit_code(Family::Admin, e.into()),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            return Ok(code);
        }
        NetworkCommand::Rm { names } => {
            let mut code = 0;
            for n in names {
                match networks.remove(&n) {
                    Ok(r) => println!("{}", r.name),
                    Err(e) => code = crate::report::exit_code(Family::Admin, e.into()),
                }
            }
            return Ok(code);
        }
        NetworkCommand::Prune => {
            let removed = Containers::open(host)?.prune_networks().await?;
            for n in &removed {
                println!("{n}");
            }
            eprintln!("removed {} network(s)", removed.len());
        }
    }
    Ok(0)
}
