//! One function per route, each a thin layer over `cabin_machines`, answering with
//! Lume's shapes and messages. They block (files, flocks, waiting for a VM), so the
//! server runs them on tokio's blocking threads.

use std::path::Path;
use std::time::Duration;

use axum::http::StatusCode;
use cabin_machines::details;
use cabin_machines::runner::{self, Launched};
use cabin_machines::store::{self, CreateOptions};

use crate::app::{App, Request};
use crate::routes::Route;
use crate::wire::{self, ApiError, Fields, Reply};

/// How long `run` waits for the VM to come up before answering 202 anyway (it goes on
/// watching; a later failure becomes the VM's `startError`).
pub const START_WAIT: Duration = Duration::from_secs(10);
/// How long `stop` gives a VM (ACPI power-off, then the runner pulls the plug after
/// `runner::POWEROFF_GRACE`) before killing its runner.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a suspend may take: the guest's memory is written out whole.
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(600);

fn lume_size(s: &str) -> Result<u64, ApiError> {
    cabin_base::sizes::parse_size(s, cabin_base::sizes::Dialect::Lume)
        .map_err(|e| ApiError::new(e.to_string()))
}

/// A `storage` value: absent, null and "" all mean "every location" (or the default
/// one, to create in).
fn storage(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

pub fn handle(app: &App, route: Route, req: &Request) -> Result<Reply, ApiError> {
    match route {
        Route::ListVms => list_vms(app, req),
        Route::GetVm => get_vm(app, req),
        Route::DeleteVm => delete_vm(app, req),
        Route::CreateVm => create_vm(app, req),
        Route::CloneVm => clone_vm(app, req),
        Route::SetVm => set_vm(app, req),
        Route::RunVm => run_vm(app, req),
        Route::StopVm => stop_vm(app, req),
        Route::SuspendVm => suspend_vm(app, req),
        Route::SetupVm => setup_vm(app, req),
        Route::Ipsw => Err(ApiError::new(
            "macOS restore images (IPSW) do not apply on Linux: cabin runs linux VMs",
        )),
        Route::Pull => crate::vm_images::pull(app, req, false),
        Route::PullStart => crate::vm_images::pull(app, req, true),
        Route::Push => crate::vm_images::push(app, req),
        Route::Prune => crate::vm_images::prune(app),
        Route::Images => crate::vm_images::images(app),
        Route::GetConfig => get_config(app),
        Route::SetConfig => set_config(app, req),
        Route::ListLocations => {
            let mut l = app.settings()?.vm_locations;
            l.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(Reply::ok(&l))
        }
        Route::AddLocation => {
            let a: wire::AddLocation = wire::body(req.body)?;
            app.change_settings(|s| Ok(s.add_location(&a.name, &a.path)?))?;
            app.log
                .info(&format!("Location added name={} path={}", a.name, a.path));
            Ok(Reply::ok(&Fields(&[
                ("message", "Location added successfully"),
                ("name", &a.name),
                ("path", &a.path),
            ])))
        }
        Route::RemoveLocation => {
            app.change_settings(|s| Ok(s.remove_location(req.name())?))?;
            app.log
                .info(&format!("Location removed name={}", req.name()));
            Ok(Reply::message(
                StatusCode::OK,
                "Location removed successfully",
            ))
        }
        Route::DefaultLocation => {
            app.change_settings(|s| Ok(s.set_default(req.name())?))?;
            app.log
                .info(&format!("Default location set name={}", req.name()));
            Ok(Reply::message(
                StatusCode::OK,
                "Default location set successfully",
            ))
        }
        Route::Logs => {
            let kind = req.query("type").unwrap_or_else(|| "all".into());
            let lines = req.query("lines").and_then(|n| n.parse().ok());
            let mut out = serde_json::Map::new();
            let kind = kind.to_ascii_lowercase();
            if kind == "info" || kind == "all" {
                out.insert("info".into(), app.log.tail(false, lines).into());
            }
            if kind == "error" || kind == "all" {
                out.insert("error".into(), app.log.tail(true, lines).into());
            }
            Ok(Reply::ok(&out))
        }
        Route::HostStatus => host_status(app),
        Route::Health => Ok(Reply::text(StatusCode::OK, "ok")),
    }
}

fn list_vms(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let s = app.settings()?;
    let storage = req.query("storage");
    let vms = store::list(&s, storage.as_deref().filter(|s| !s.is_empty()))?;
    let list: Vec<_> = vms
        .iter()
        .filter_map(|v| details::details(v).ok())
        .collect();
    Ok(Reply::ok(&list))
}

fn get_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    if let Some(r) = crate::vm_images::pull_status(app, req.name()) {
        return r;
    }
    let s = app.settings()?;
    let storage = req.query("storage");
    let vm = store::find(&s, req.name(), storage.as_deref())?;
    Ok(Reply::ok(&details::details(&vm)?))
}

fn delete_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let s = app.settings()?;
    let storage = req.query("storage");
    let vm = store::find(&s, req.name(), storage.as_deref())?;
    store::delete(&vm)?;
    app.log.info(&format!("VM deleted name={}", vm.name));
    Ok(Reply::empty_json())
}

fn create_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let c: wire::CreateVm = wire::body(req.body)?;
    let os = if c.os.eq_ignore_ascii_case("linux") {
        "linux".to_string()
    } else {
        c.os.clone()
    };
    if os == "linux" && c.ipsw.is_some() {
        return Err(ApiError::new(
            "ipsw applies to macOS VMs only: a linux VM is created empty, to install from an ISO",
        ));
    }
    if c.unattended.is_some() {
        return Err(ApiError::new(
            "Unattended setup drives the macOS Setup Assistant; it does not apply to linux VMs",
        ));
    }
    let opts = CreateOptions {
        os,
        cpu: c.cpu,
        memory: lume_size(&c.memory)?,
        disk_size: lume_size(&c.disk_size)?,
        display: c.display.clone(),
        network: c.network.clone().unwrap_or_else(|| "nat".into()),
    };
    let s = app.settings()?;
    let vm = match &c.image {
        None => store::create(&s, &c.name, storage(&c.storage), &opts)?,
        Some(image) => cabin_machines::from_image::create(
            &s,
            &app.host,
            &c.name,
            storage(&c.storage),
            &opts,
            image,
            &|m: &str| app.log.error(m),
        )?,
    };
    app.log.info(&format!(
        "VM created name={} location={}",
        vm.name, vm.location_name
    ));
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &Fields(&[
            ("message", "VM creation started"),
            ("name", &c.name),
            ("status", "provisioning"),
        ]),
    ))
}

fn clone_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let c: wire::CloneVm = wire::body(req.body)?;
    let s = app.settings()?;
    let src = store::find(&s, &c.name, storage(&c.source_location))?;
    let vm = store::clone(&s, &src, &c.new_name, storage(&c.dest_location))?;
    app.log.info(&format!(
        "VM cloned source={} destination={}",
        src.name, vm.name
    ));
    Ok(Reply::ok(&Fields(&[
        ("message", "VM cloned successfully"),
        ("source", &c.name),
        ("destination", &c.new_name),
    ])))
}

fn set_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let c: wire::SetVm = wire::body(req.body)?;
    let s = app.settings()?;
    let vm = store::find(&s, req.name(), storage(&c.storage))?;
    let memory = c.memory.as_deref().map(lume_size).transpose()?;
    let disk = c.disk_size.as_deref().map(lume_size).transpose()?;
    if c.dry_run == Some(true) {
        store::check_set(&vm, c.cpu, memory, disk, c.display.as_deref())?;
    } else {
        store::set(&vm, c.cpu, memory, disk, c.display.as_deref())?;
        app.log
            .info(&format!("VM settings updated name={}", vm.name));
    }
    Ok(Reply::message(
        StatusCode::OK,
        "VM settings updated successfully",
    ))
}

fn run_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let r: wire::RunVm = wire::optional_body(req.body)?;
    let s = app.settings()?;
    let storage_param = req.query("storage");
    let vm = store::find(
        &s,
        req.name(),
        storage(&r.storage).or(storage_param.as_deref()),
    )?;
    let mut shares = Vec::new();
    for d in r.shared_directories.iter().flatten() {
        let path = runner::check_shared_dir(Path::new(&d.host_path))?;
        shares.push((path, d.read_only.unwrap_or(false)));
    }
    let vnc = match r.vnc.as_deref() {
        None | Some("enabled") => "enabled",
        Some("disabled") => "disabled",
        Some(other) => {
            return Err(ApiError::new(format!(
                "Invalid VNC policy: {other}: use enabled or disabled"
            )))
        }
    };
    if let Some(n) = r.network.as_deref() {
        store::parse_network(n)?;
        if n != "nat" {
            return Err(ApiError::new(format!(
                "Network mode {n} is not supported yet for VMs: use nat"
            )));
        }
    }
    if r.recovery_mode == Some(true) {
        return Err(ApiError::new("Recovery mode applies to macOS VMs only"));
    }
    if r.disk_path.is_some() || r.nvram_path.is_some() {
        return Err(ApiError::new(
            "diskPath and nvramPath are not supported: a VM runs from the disk.img and nvram.bin in its directory",
        ));
    }

    let opts = runner::RunOptions {
        shared_dirs: shares,
        vnc: vnc == "enabled",
        accel: app.accel,
        ..Default::default()
    };
    match runner::launch(&app.host, &vm, &opts, START_WAIT)? {
        Launched::Running(session) => {
            for n in &session.notices {
                app.log.info(n);
            }
            app.log.info(&format!(
                "VM started name={} vnc={}",
                vm.name,
                session.url.as_deref().unwrap_or("disabled")
            ))
        }
        Launched::Starting => app.log.info(&format!("VM starting name={}", vm.name)),
    }
    Ok(Reply::json(
        StatusCode::ACCEPTED,
        &Fields(&[
            ("message", "VM start initiated"),
            ("name", req.name()),
            ("status", "pending"),
        ]),
    ))
}

/// The VM a stop or suspend names: its storage from the body (`{"storage": ...}`, as
/// Lume: a body that is not JSON is ignored) or the query.
fn vm_to_stop(app: &App, req: &Request) -> Result<store::Vm, ApiError> {
    let b: wire::Storage = wire::optional_body(req.body).unwrap_or_default();
    let storage_param = req.query("storage");
    let s = app.settings()?;
    Ok(store::find(
        &s,
        req.name(),
        storage(&b.storage).or(storage_param.as_deref()),
    )?)
}

fn stop_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let vm = vm_to_stop(app, req)?;
    runner::stop(&vm, STOP_TIMEOUT)?;
    app.log.info(&format!("VM stopped name={}", vm.name));
    Ok(Reply::message(StatusCode::OK, "VM stopped successfully"))
}

/// cabin's own route (Lume has no suspend): saves a running VM's memory and devices
/// and stops it; `POST /lume/vms/NAME/run` resumes it. Storage as for stop.
fn suspend_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let vm = vm_to_stop(app, req)?;
    cabin_machines::suspend::suspend(&vm, SUSPEND_TIMEOUT)?;
    app.log.info(&format!("VM suspended name={}", vm.name));
    Ok(Reply::message(StatusCode::OK, "VM suspended successfully"))
}

fn setup_vm(app: &App, req: &Request) -> Result<Reply, ApiError> {
    if req.body.is_empty() {
        return Err(ApiError::new("Request body is required"));
    }
    let b: wire::SetupVm = wire::body(req.body)?;
    if b.config_path.is_none() && b.config_yaml.is_none() {
        return Err(ApiError::new("Either configPath or configYaml is required"));
    }
    let s = app.settings()?;
    let vm = store::find(&s, req.name(), storage(&b.storage))?;
    Err(ApiError::new(format!(
        "Unattended setup drives the macOS Setup Assistant; it does not apply to linux VMs: {}",
        vm.name
    )))
}

fn get_config(app: &App) -> Result<Reply, ApiError> {
    let s = app.settings()?;
    Ok(Reply::ok(&wire::LumeSettings {
        vm_locations: &s.vm_locations,
        default_location_name: &s.default_location_name,
        cache_directory: &s.cache_directory,
        caching_enabled: s.caching_enabled,
        registry: wire::RegistrySettings {
            kind: "ghcr",
            ghcr: wire::Ghcr {
                registry: "ghcr.io",
                organization: "trycua",
            },
        },
        telemetry_enabled: false,
    }))
}

fn set_config(app: &App, req: &Request) -> Result<Reply, ApiError> {
    let c: wire::SetConfig = wire::body(req.body)?;
    app.change_settings(|s| {
        if let Some(home) = &c.home_directory {
            s.set_home_directory(home)?;
        }
        if let Some(cache) = &c.cache_directory {
            if !s.expand(cache).is_absolute() {
                return Err(ApiError::new(format!(
                    "Invalid cache directory: {cache}: give an absolute path"
                )));
            }
            s.cache_directory = cache.clone();
        }
        if let Some(on) = c.caching_enabled {
            s.caching_enabled = on;
        }
        Ok(())
    })?;
    app.log.info("Configuration updated");
    Ok(Reply::message(
        StatusCode::OK,
        "Configuration updated successfully",
    ))
}

fn host_status(app: &App) -> Result<Reply, ApiError> {
    let s = app.settings()?;
    let running = store::list(&s, None)?
        .iter()
        .filter(|v| v.is_running())
        .count();
    // Not a limit cabin enforces (Lume's 2 is Apple's licence for macOS guests): one
    // running VM per host CPU, as a guide for schedulers that read it.
    let max = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Reply::ok(&wire::HostStatus {
        status: "healthy",
        vm_count: running,
        max_vms: max,
        available_slots: max.saturating_sub(running),
        version: env!("CARGO_PKG_VERSION"),
    }))
}
