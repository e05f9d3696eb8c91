//! Saving a running VM's state into a file and loading it into a QEMU started with
//! `-incoming defer`, over QMP: the one sequence behind container boot snapshots and
//! full VMs' `vm suspend`. The file is always a descriptor cabin opened and hands over
//! (`getfd`), so a confined QEMU needs no access to where it lives.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::json;

use crate::qmp::Qmp;

/// Whether the guest's RAM travels in the stream, or stays in a memory file both
/// sides map (`x-ignore-shared`: the stream then holds device state only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ram {
    InStream,
    InSharedFile,
}

/// QEMU's default migration bandwidth (128 MiB/s) is meant for links between hosts; a
/// local file takes what the disk gives.
const UNLIMITED_BANDWIDTH: u64 = 1 << 40;

/// Stops the VM and writes its state into `file`. On success the VM stays stopped
/// (the caller ends it, or `cont`s it); on failure too, with QEMU's reason.
pub async fn save(qmp: &mut Qmp, file: &impl AsFd, ram: Ram) -> io::Result<()> {
    set_capabilities(qmp, ram, false).await?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({"max-bandwidth": UNLIMITED_BANDWIDTH})),
    )
    .await?;
    qmp.execute("stop", None).await?;
    qmp.execute_with_fd("getfd", Some(json!({"fdname": "state"})), file.as_fd())
        .await?;
    qmp.execute("migrate", Some(json!({"uri": "fd:state"})))
        .await?;
    loop {
        let info = qmp.execute("query-migrate", None).await?;
        match info["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed") | Some("cancelled") => {
                return Err(io::Error::other(format!(
                    "saving the VM's state failed: {}",
                    info["error-desc"].as_str().unwrap_or("QEMU gave no reason")
                )))
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Where an incoming state comes from: a descriptor QEMU inherited at this number, or
/// `file`, handed over now.
pub enum Source<'a, F: AsFd> {
    Inherited(i32),
    Handed(&'a F),
}

/// Whether QEMU announces the VM's network card once its state is in, as after a live
/// migration (gratuitous ARPs from QEMU and, through virtio-net, from the guest, five
/// rounds over the first second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// A VM that comes back with its own card and address (a suspended full VM).
    Yes,
    /// A VM resumed from a template, whose card gets its own MAC from the guest: an
    /// announcement would carry the template's, and the guest would run cold network
    /// code for nothing.
    No,
}

/// Loads a saved state into a QEMU started with `-incoming defer` and waits until it is
/// in. The VM runs by itself afterwards unless QEMU was started with `-S`.
pub async fn load<F: AsFd>(
    qmp: &mut Qmp,
    source: Source<'_, F>,
    ram: Ram,
    announce: Announce,
) -> io::Result<()> {
    set_capabilities(qmp, ram, true).await?;
    if announce == Announce::No {
        qmp.execute(
            "migrate-set-parameters",
            Some(json!({"announce-rounds": 0})),
        )
        .await?;
    }
    let uri = match source {
        Source::Inherited(fd) => format!("fd:{fd}"),
        Source::Handed(file) => {
            qmp.execute_with_fd("getfd", Some(json!({"fdname": "state"})), file.as_fd())
                .await?;
            "fd:state".to_string()
        }
    };
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .await?;
    let done = qmp
        .wait_event("MIGRATION", |d| {
            matches!(d["status"].as_str(), Some("completed" | "failed"))
        })
        .await?;
    if done["data"]["status"] == "completed" {
        return Ok(());
    }
    let why = qmp
        .execute("query-migrate", None)
        .await
        .ok()
        .and_then(|i| i["error-desc"].as_str().map(String::from))
        .unwrap_or_else(|| "QEMU gave no reason".into());
    Err(io::Error::other(format!(
        "loading the saved VM state failed: {why}"
    )))
}

/// What saving and loading need switched on: RAM in a shared file left out of the
/// stream (on both sides), and, when loading, the MIGRATION events that say the state
/// is in.
async fn set_capabilities(qmp: &mut Qmp, ram: Ram, loading: bool) -> io::Result<()> {
    let mut caps = Vec::new();
    if ram == Ram::InSharedFile {
        caps.push(json!({"capability": "x-ignore-shared", "state": true}));
    }
    if loading {
        caps.push(json!({"capability": "events", "state": true}));
    }
    if caps.is_empty() {
        return Ok(());
    }
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": caps })),
    )
    .await
    .map(drop)
}
