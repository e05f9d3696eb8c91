//! `cabin image ...`: the local image store.

use std::path::PathBuf;

use cabin_containers::{Host, Paths};
use cabin_image::archive;
use cabin_image::credentials::{options_for, Credential, Credentials};
use cabin_image::image::{self, ImportConfig};
use cabin_image::pull::{self, PullOptions};
use cabin_image::push;
use cabin_image::store::Store;
use clap::Subcommand;
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make an image from a root filesystem directory or tarball (.tar, .tar.gz).
    Import {
        /// Directory or tarball.
        source: PathBuf,
        /// NAME[:TAG] for the image.
        name: String,
        /// Default command (repeat for each argument; default /bin/sh, or none with an
        /// entrypoint).
        #[arg(long = "cmd", value_name = "ARG", allow_hyphen_values = true)]
        cmd: Vec<String>,
        /// The program every container runs (repeat for each argument).
        #[arg(long = "entrypoint", value_name = "ARG", allow_hyphen_values = true)]
        entrypoint: Vec<String>,
        /// A port the image listens on, PORT[/tcp|udp] (repeat for each).
        #[arg(long = "expose", value_name = "PORT")]
        expose: Vec<String>,
        /// Environment variable for every container of the image (KEY=VALUE).
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Default working directory.
        #[arg(short, long = "workdir")]
        workdir: Option<String>,
        /// Default user.
        #[arg(short, long)]
        user: Option<String>,
    },
    /// Pull an image from a registry (plain HTTP is used for localhost registries).
    Pull {
        /// [REGISTRY/]NAME[:TAG] or NAME@DIGEST.
        reference: String,
        /// Use plain HTTP with this registry.
        #[arg(long)]
        insecure: bool,
        /// Blobs downloaded at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Push an image to a registry.
    Push {
        /// The local image.
        source: String,
        /// [REGISTRY/]NAME[:TAG] to push to (default: the image's own name).
        destination: Option<String>,
        /// Use plain HTTP with this registry.
        #[arg(long)]
        insecure: bool,
        /// Blobs uploaded at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
    },
    /// Write images to a tar archive (OCI layout plus docker's manifest.json).
    Save {
        /// The archive to write.
        #[arg(short, long)]
        output: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Read images from a tar archive (cabin or docker save, OCI layout).
    Load {
        /// The archive to read.
        #[arg(short, long)]
        input: PathBuf,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only the ids.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: crate::report::TableFormat,
    },
    /// Show an image's manifest and configuration as JSON.
    Inspect {
        name: String,
        /// Output format (json, the only one).
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Remove images (their names; content no name uses is deleted).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Give an image another name.
    Tag { source: String, target: String },
    /// Delete content no image name uses.
    Prune,
}

fn store(paths: &Paths) -> Result<Store, String> {
    Store::open(paths.image_store()).map_err(|e| e.to_string())
}

/// Options for a pull or push of `reference`: saved credentials, progress bars.
fn transfer_options(
    paths: &Paths,
    reference: &str,
    insecure: bool,
    parallel: usize,
) -> Result<PullOptions, String> {
    let creds = Credentials::at(paths.credentials());
    let opts = PullOptions {
        insecure,
        parallel,
        progress: crate::progress::hook(),
        ..Default::default()
    };
    options_for(reference, &creds, opts).map_err(|e| format!("reading saved credentials: {e}"))
}

/// `cabin login`: checks the credentials with the registry, then saves them.
pub async fn login(
    host: &Host,
    registry: &str,
    username: &str,
    password: &str,
    insecure: bool,
) -> i32 {
    let opts = PullOptions {
        insecure,
        auth: Some((username.to_string(), password.to_string())),
        ..Default::default()
    };
    if let Err(e) = cabin_image::registry::check_login(registry, &opts).await {
        eprintln!("cabin: {e}");
        return 1;
    }
    let creds = Credentials::at(host.paths.credentials());
    let saved = creds.set(
        registry,
        Credential {
            username: username.to_string(),
            password: password.to_string(),
        },
    );
    match saved {
        Ok(()) => {
            println!("Login Succeeded");
            0
        }
        Err(e) => {
            eprintln!("cabin: saving the credentials: {e}");
            1
        }
    }
}

pub fn logout(host: &Host, registry: &str) -> i32 {
    match Credentials::at(host.paths.credentials()).remove(registry) {
        Ok(true) => {
            println!("Removing login credentials for {registry}");
            0
        }
        Ok(false) => {
            eprintln!("cabin: not logged in to {registry}");
            1
        }
        Err(e) => {
            eprintln!("cabin: {e}");
            1
        }
    }
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

pub async fn run(host: &Host, cmd: ImageCommand) -> i32 {
    match execute(&host.paths, cmd).await {
        Ok(()) => 0,
        Err(e) => crate::report::exit_code(crate::report::Family::Admin, e.into()),
    }
}

async fn execute(paths: &Paths, cmd: ImageCommand) -> Result<(), String> {
    let store = store(paths)?;
    match cmd {
        ImageCommand::Pull {
            reference,
            insecure,
            parallel,
        } => {
            let opts = transfer_options(paths, &reference, insecure, parallel)?;
            let img = pull::pull(&store, &reference, &opts)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("Pulled {} ({})", img.reference, img.manifest_digest);
            println!("{}", img.manifest_digest);
        }
        ImageCommand::Import {
            source,
            name,
            cmd,
            entrypoint,
            expose,
            env,
            workdir,
            user,
        } => {
            let cfg = ImportConfig {
                cmd,
                entrypoint,
                exposed_ports: expose,
                env,
                working_dir: workdir,
                user,
            };
            let img = image::import(&store, &source, &name, &cfg).map_err(|e| e.to_string())?;
            println!("{}", img.manifest_digest);
        }
        ImageCommand::Push {
            source,
            destination,
            insecure,
            parallel,
        } => {
            let dest = destination.unwrap_or_else(|| source.clone());
            let opts = transfer_options(paths, &dest, insecure, parallel)?;
            let report = push::push(&store, &source, &dest, &opts)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!(
                "Pushed {dest}: {} blobs uploaded, {} already there",
                report.uploaded, report.skipped
            );
            println!("{}", report.manifest_digest);
        }
        ImageCommand::Save { output, names } => {
            archive::save(&store, &names, &output).map_err(|e| e.to_string())?;
        }
        ImageCommand::Load { input } => {
            for (name, digest) in archive::load(&store, &input).map_err(|e| e.to_string())? {
                if name.is_empty() {
                    println!("Loaded image: {digest}");
                } else {
                    println!("Loaded image: {name} ({digest})");
                }
            }
        }
        ImageCommand::Ls { quiet, format } => {
            let rows: Vec<_> = image::list(&store)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|l| (l.name, l.manifest_digest, l.id, l.size, l.created))
                .collect();
            match (quiet, format) {
                (true, _) => {
                    for r in rows {
                        println!("{}", r.2);
                    }
                }
                (false, crate::report::TableFormat::Json) => {
                    let v: Vec<_> = rows
                        .iter()
                        .map(|(n, d, id, size, created)| {
                            json!({"name": n, "digest": d, "id": id, "size": size, "created": created})
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(v));
                }
                (false, crate::report::TableFormat::Table) => {
                    println!("{:<40} {:<14} {:>10}  CREATED", "NAME", "ID", "SIZE");
                    for (n, _, id, size, created) in rows {
                        println!("{n:<40} {id:<14} {:>10}  {created}", human(size));
                    }
                }
            }
        }
        ImageCommand::Inspect { name, format } => {
            if format != "json" {
                return Err(format!("unknown format {format:?}: inspect writes json"));
            }
            let img = image::resolve(&store, &name).map_err(|e| e.to_string())?;
            let v = json!({
                "name": img.reference,
                "id": img.id(),
                "digest": img.manifest_digest,
                "manifest": img.manifest,
                "config": img.config,
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }
        ImageCommand::Rm { names } => {
            let mut failed = None;
            for n in names {
                match image::remove(&store, &n) {
                    Ok(d) => println!("Untagged: {n} ({d})"),
                    Err(e) => {
                        eprintln!("cabin: {e}");
                        failed = Some("some images could not be removed".to_string());
                    }
                }
            }
            if let Some(f) = failed {
                return Err(f);
            }
        }
        ImageCommand::Tag { source, target } => {
            image::tag(&store, &source, &target).map_err(|e| e.to_string())?;
        }
        ImageCommand::Prune => {
            let freed = image::prune(&store).map_err(|e| e.to_string())?;
            println!("Reclaimed {}", human(freed));
        }
    }
    Ok(())
}
