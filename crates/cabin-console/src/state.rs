//! What the dashboard draws: the VMs of every storage location (Lume's details: state,
//! address, CPU, memory, disk used and total, why the last start failed) and the
//! containers (name, image, state, ports). The page asks again every few seconds.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use cabin_containers::store::{Record, Status};
use cabin_machines::activity::TransferStatus;
use cabin_machines::details::{self, VmDetails};
use cabin_machines::settings::Settings;
use cabin_machines::store::{self, Vm, VmError};
use serde::Serialize;

use crate::{Console, ConsoleError};

#[derive(Serialize)]
pub(crate) struct Dashboard {
    vms: Vec<VmRow>,
    containers: Vec<ContainerRow>,
    /// VM image pulls and pushes under way (or failed) in this server.
    transfers: Vec<TransferStatus>,
    /// Records that could not be read, each with why (the page lists them).
    problems: Vec<String>,
}

/// A VM as Lume details it, without its VNC URL: the password in it stays on the
/// host (the console logs in for the browser).
#[derive(Serialize)]
struct VmRow {
    #[serde(flatten)]
    details: VmDetails,
    /// It runs with a screen the console can show.
    screen: bool,
}

impl From<VmDetails> for VmRow {
    fn from(mut details: VmDetails) -> VmRow {
        let screen = details.vnc_url.take().is_some();
        VmRow { details, screen }
    }
}

#[derive(Serialize)]
struct ContainerRow {
    id: String,
    name: String,
    image: String,
    /// created, running or exited.
    state: &'static str,
    /// How it ended, for an exited one.
    exit_code: Option<i32>,
    ports: Vec<String>,
}

impl From<&Record> for ContainerRow {
    fn from(r: &Record) -> ContainerRow {
        let (state, exit_code) = match &r.status {
            Status::Created => ("created", None),
            Status::Running { .. } => ("running", None),
            Status::Exited { code, .. } => ("exited", Some(*code)),
        };
        ContainerRow {
            id: r.id.chars().take(12).collect(),
            name: r.name.clone(),
            image: r.root.clone(),
            state,
            exit_code,
            ports: r
                .network
                .as_ref()
                .filter(|_| state == "running")
                .map(|n| n.ports.clone())
                .unwrap_or_default(),
        }
    }
}

/// Which storage a request means (`?storage=`, as Lume's API takes it: a location's
/// name, a path, or `ephemeral`); absent, every configured location.
#[derive(serde::Deserialize, Default)]
pub(crate) struct Storage {
    storage: Option<String>,
}

/// Finds the VM `name` in `storage`, or in the configured locations (the default
/// first).
pub(crate) fn find_vm(
    console: &Console,
    name: &str,
    storage: &Storage,
) -> Result<Vm, ConsoleError> {
    let settings = Settings::load(&console.host.paths).map_err(VmError::from)?;
    Ok(store::find(&settings, name, storage.storage.as_deref())?)
}

/// The VM `name` in `storage` and the session of its run; not running is an error.
pub(crate) fn running_vm(
    console: &Console,
    name: &str,
    storage: &Storage,
) -> Result<(Vm, cabin_machines::store::Session), ConsoleError> {
    let vm = find_vm(console, name, storage)?;
    let session = vm
        .session()
        .ok_or_else(|| VmError::NotRunning(name.to_string()))?;
    Ok((vm, session))
}

pub(crate) async fn state(
    State(console): State<Arc<Console>>,
) -> Result<Json<Dashboard>, ConsoleError> {
    let host = console.host.clone();
    let vms = tokio::task::spawn_blocking(move || -> Result<_, VmError> {
        let settings = Settings::load(&host.paths)?;
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for vm in store::list(&settings, None)? {
            match details::details(&vm) {
                Ok(d) => out.push(VmRow::from(d)),
                Err(e) => problems.push(format!("VM {}: {e}", vm.name)),
            }
        }
        Ok((out, problems))
    })
    .await
    .map_err(|e| VmError::Failed(e.to_string()))??;
    let (records, unreadable) = console.containers.list().await?;
    let mut problems = vms.1;
    problems.extend(unreadable.iter().map(|e| e.to_string()));
    Ok(Json(Dashboard {
        vms: vms.0,
        containers: records.iter().map(ContainerRow::from).collect(),
        transfers: console.transfers.list(),
        problems,
    }))
}
