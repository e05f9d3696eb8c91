//! The dashboard's buttons: start, stop and suspend a VM, start and stop a container,
//! through the same library calls as `cabin vm run --detach`, `cabin vm stop`,
//! `cabin vm suspend`, `cabin start` and `cabin stop`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::Json;
use cabin_machines::runner::{self, Launched, RunOptions};
use cabin_machines::store::VmError;
use serde_json::{json, Value};

use crate::state::{find_vm, Storage};
use crate::{Console, ConsoleError};

/// How long a start waits for the VM to run before it answers "starting".
const VM_START_WAIT: Duration = Duration::from_secs(30);
/// How long a VM's guest has to power off before its VM is killed.
const VM_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a VM's state may take to be saved (its memory is written out whole).
const VM_SUSPEND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a container's process has to stop before it is killed.
const CONTAINER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn vm(
    State(console): State<Arc<Console>>,
    Path((name, action)): Path<(String, String)>,
    Query(storage): Query<Storage>,
) -> Result<Json<Value>, ConsoleError> {
    let vm = find_vm(&console, &name, &storage)?;
    let c = console.clone();
    let done = tokio::task::spawn_blocking(move || -> Result<&'static str, ConsoleError> {
        match action.as_str() {
            "start" => {
                let opts = RunOptions {
                    vnc: true,
                    accel: c.accel,
                    ..Default::default()
                };
                Ok(match runner::launch(&c.host, &vm, &opts, VM_START_WAIT)? {
                    Launched::Running(_) => "running",
                    Launched::Starting => "starting",
                })
            }
            "stop" => {
                runner::stop(&vm, VM_STOP_TIMEOUT)?;
                Ok("stopped")
            }
            "suspend" => {
                cabin_machines::suspend::suspend(&vm, VM_SUSPEND_TIMEOUT)?;
                Ok("suspended")
            }
            other => Err(ConsoleError::Action(other.to_string())),
        }
    })
    .await
    .map_err(|e| VmError::Failed(e.to_string()))??;
    Ok(Json(json!({ "name": name, "state": done })))
}

pub(crate) async fn container(
    State(console): State<Arc<Console>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>, ConsoleError> {
    let state = match action.as_str() {
        "start" => match console.containers.start(&name).await? {
            cabin_containers::containers::Started::Running(_) => "running",
            cabin_containers::containers::Started::Exited(_) => "exited",
            cabin_containers::containers::Started::Removed(_) => "removed",
        },
        "stop" => {
            console
                .containers
                .stop(&name, CONTAINER_STOP_TIMEOUT)
                .await?;
            "exited"
        }
        other => return Err(ConsoleError::Action(other.to_string())),
    };
    Ok(Json(json!({ "name": name, "state": state })))
}
