//! `cabin-lumier`, the Lumier image's entry point: Lumier's contract ("Docker is just
//! for packaging, not for isolation") against `cabin serve` on the host. From a few
//! environment variables it finds or pulls the VM through Lume's API, sets its CPUs,
//! memory and display, runs it with the shared folder, waits for it to run with an
//! address, and shows its screen on port 8006 (noVNC), printing Lumier's URL. On
//! SIGTERM, SIGINT or SIGHUP it stops the VM, and deletes it when its storage is
//! ephemeral; a VM in persistent storage is started again, disk and all, next time.

mod config;
mod hook;
mod lume;
mod viewer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use config::{Config, EPHEMERAL};
use lume::{Lume, LumeError};
use viewer::{Screen, Viewer};

/// The viewer's port, as Lumier's.
const PORT: u16 = 8006;
/// How long the VM has to run with an address (Lumier waits a minute).
const READY_WAIT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
enum LumierError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Lume(#[from] LumeError),
    #[error("VM {0} does not exist and VERSION is not set: give the VM image to run, REGISTRY/ORGANIZATION/IMAGE:TAG")]
    NoVersion(String),
    #[error(
        "VM {name} did not run with an address within {secs} s (it shows: {seen}); it was stopped"
    )]
    NotReady {
        name: String,
        secs: u64,
        seen: String,
    },
    #[error("cannot serve the viewer on port {PORT}: {0}")]
    Listen(std::io::Error),
}

/// Completes at the first SIGTERM, SIGINT or SIGHUP.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}

/// A VM running with an address, as Lumier waits for it.
struct Running {
    ip: std::net::IpAddr,
    vnc_password: String,
    vnc_port: u16,
}

/// Gets the VM running as the environment asks.
async fn start(config: &Config, api: &Lume, viewer: &Viewer) -> Result<Running, LumierError> {
    let name = &config.vm_name;
    viewer.stage(&format!(
        "Looking for VM {name} in storage {} through the Lume API at {}",
        config.storage, config.api
    ));
    match api.get(name).await? {
        None => {
            let image = config
                .version
                .as_ref()
                .ok_or_else(|| LumierError::NoVersion(name.clone()))?;
            viewer.stage(&format!(
                "Pulling {}/{}/{} as VM {name}",
                image.registry, image.organization, image.image
            ));
            api.pull(image, name).await?;
        }
        Some(vm) if vm["status"] == "running" => {
            viewer.stage(&format!(
                "VM {name} is running: stopping it to apply the settings"
            ));
            api.stop(name).await?;
        }
        Some(_) => viewer.stage(&format!(
            "Found VM {name}: starting it again, with its disk"
        )),
    }
    api.set(name, config.cpu, config.memory_mb, &config.display)
        .await?;
    viewer.stage(&format!(
        "Starting VM {name} ({} CPUs, {} MB, {}{})",
        config.cpu,
        config.memory_mb,
        config.display,
        config
            .shared_path
            .as_deref()
            .map(|p| format!(", sharing {p}"))
            .unwrap_or_default()
    ));
    api.run(name, config.shared_path.as_deref()).await?;
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let vm = api.get(name).await?.unwrap_or_default();
        let url = vm["vncUrl"].as_str().unwrap_or_default();
        let ip = vm["ipAddress"].as_str().unwrap_or_default();
        if vm["status"] == "running" {
            if let (Ok(address), Some((vnc_password, vnc_port))) = (ip.parse(), parse_vnc_url(url))
            {
                viewer.stage(&format!("VM {name} is running at {ip}"));
                return Ok(Running {
                    ip: address,
                    vnc_password,
                    vnc_port,
                });
            }
        }
        if Instant::now() > deadline {
            let _ = api.stop(name).await;
            return Err(LumierError::NotReady {
                name: name.clone(),
                secs: READY_WAIT.as_secs(),
                seen: format!(
                    "status {}, address {}, VNC {}",
                    vm["status"],
                    if ip.is_empty() { "none" } else { ip },
                    if url.is_empty() { "none" } else { "on" }
                ),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Runs the shared folder's on-logon hook in the guest, if there is one, and says how
/// it went; nothing here stops the container.
async fn on_logon(config: Config, vm: Running) {
    let name = &config.vm_name;
    match hook::presence(
        config.shared_path.as_deref(),
        std::path::Path::new("/shared"),
    ) {
        hook::Presence::NoShare => return,
        hook::Presence::NotMounted => {
            println!(
                "HOST_SHARED_PATH is set but /shared is not mounted in this container: \
                 the on-logon hook is not looked for (add -v HOST_SHARED_PATH:/shared)"
            );
            return;
        }
        hook::Presence::Absent => {
            println!("No {} in the shared folder: no hook to run", hook::HOOK);
            return;
        }
        hook::Presence::Present => {}
    }
    println!(
        "Waiting for VM {name} to accept SSH as {} at {}, to run the on-logon hook",
        hook::USER,
        vm.ip
    );
    let mut out = std::io::stdout();
    match hook::run(vm.ip, &vm.vnc_password, config.debug, &mut out).await {
        Ok(()) => println!("On-logon hook finished"),
        Err(e) => println!("On-logon hook: {e}"),
    }
}

/// `vnc://:PASSWORD@HOST:PORT`: the password and the port.
fn parse_vnc_url(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("vnc://:")?;
    let (password, address) = rest.rsplit_once('@')?;
    let port = address.rsplit_once(':')?.1.parse().ok()?;
    Some((password.to_string(), port))
}

/// Stops the VM, and deletes it when it was ephemeral.
async fn finish(config: &Config, api: &Lume) {
    let name = &config.vm_name;
    println!("Stopping VM {name}");
    match api.stop(name).await {
        Ok(()) => println!("VM {name} stopped"),
        Err(e) => eprintln!("lumier: stopping VM {name}: {e}"),
    }
    if config.storage == EPHEMERAL {
        match api.delete(name).await {
            Ok(()) => println!("VM {name} deleted (ephemeral storage)"),
            Err(e) => eprintln!("lumier: deleting VM {name}: {e}"),
        }
    }
}

async fn run() -> Result<(), LumierError> {
    let config = Config::from_env()?;
    if config.debug {
        eprintln!("lumier: {config:?}");
    }
    let api = Lume::new(&config);
    let viewer = Arc::new(Viewer::default());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", PORT))
        .await
        .map_err(LumierError::Listen)?;
    let app = viewer::router(viewer.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let stop = stop_signal();
    tokio::pin!(stop);
    let started = tokio::select! {
        r = start(&config, &api, &viewer) => r,
        _ = &mut stop => {
            finish(&config, &api).await;
            return Ok(());
        }
    };
    let running = match started {
        Ok(v) => v,
        Err(e) => {
            viewer.failed(&e.to_string());
            if config.storage == EPHEMERAL
                && !matches!(e, LumierError::Lume(LumeError::Unreachable { .. }))
            {
                finish(&config, &api).await;
            }
            return Err(e);
        }
    };
    let password = running.vnc_password.clone();
    viewer.ready(Screen {
        vm: config.vm_name.clone(),
        password: password.clone(),
        vnc_port: running.vnc_port,
        api: config.api,
        api_host: config.api_host.clone(),
        token: config.token.clone(),
        storage: config.storage.clone(),
    });
    println!("http://localhost:{PORT}/vnc.html?password={password}&autoconnect=true");
    // The hook runs beside the viewer: the screen is there while the guest boots.
    let hook = tokio::spawn(on_logon(config.clone(), running));
    stop.await;
    hook.abort();
    finish(&config, &api).await;
    Ok(())
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lumier: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("lumier: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnc_urls_give_their_password_and_port() {
        assert_eq!(
            parse_vnc_url("vnc://:Ab3dE6gH@127.0.0.1:5901"),
            Some(("Ab3dE6gH".into(), 5901))
        );
        assert_eq!(parse_vnc_url(""), None);
        assert_eq!(parse_vnc_url("vnc://127.0.0.1:5901"), None);
    }
}
