//! Pods: several containers in one VM, as containerd's sandboxes group them (Kata's
//! model). The pod's first container, its sandbox, owns the VM; each later container,
//! a member, runs inside that VM in mount, PID and cgroup namespaces of its own and
//! joins the sandbox's network, UTS and IPC namespaces, so that the pod's containers
//! reach each other on localhost.
//!
//! How the parts meet:
//! - The sandbox's VM gets a shared host folder, the pod's share (`pod/` in the
//!   sandbox's container directory), mounted by cabin-init at [`GUEST_SHARE`]. A
//!   member's root file system is a directory inside it (containerd's shim mounts the
//!   member's snapshot there), so it reaches the running VM without a device: a microVM
//!   has no hot-plug bus.
//! - The sandbox's supervisor relays cabin-init's protocol on `agent.sock` in its
//!   container directory ([`serve_agent`]) and says, in `pod.json`, which guest
//!   container the members join ([`PodLink`]).
//! - A member has a supervisor of its own like any container (its log, its control
//!   socket, its record), whose "VM" is the sandbox's: it talks to cabin-init through
//!   the relay and ends when the sandbox's supervisor does (its lock is freed).

use std::io;
use std::path::{Component, Path, PathBuf};

use cabin_base::Paths;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use cabin_net::NetworkMode;

use crate::error::RunError;
use crate::root::RootSource;
use crate::spec::ContainerSpec;
use crate::volumes::MountSpec;

/// A container's part in a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodRole {
    /// Its VM is the pod's: it gets the pod's share, and its supervisor lets the
    /// members reach cabin-init.
    Sandbox,
    /// It runs in the VM of the sandbox container with this ID. Its root file system
    /// (`RootSource::Dir`) must be a directory inside the sandbox's pod share.
    Member { sandbox: String },
}

/// The 9p tag of the pod's share.
pub const SHARE_TAG: &str = "cabin-pod";
/// Where cabin-init mounts the pod's share.
pub const GUEST_SHARE: &str = "/run/cabin/pod";
/// In the sandbox's container directory: the share, the link and the relay.
const SHARE_DIR: &str = "pod";
const LINK_FILE: &str = "pod.json";
const AGENT_SOCKET: &str = "agent.sock";
const MAX_LINK_BYTES: u64 = 4096;

/// The host directory shared into the VM of sandbox `sandbox`.
pub fn share_dir(paths: &Paths, sandbox: &str) -> PathBuf {
    paths.containers().join(sandbox).join(SHARE_DIR)
}

/// The relay of the sandbox's cabin-init.
pub fn agent_socket(paths: &Paths, sandbox: &str) -> PathBuf {
    paths.containers().join(sandbox).join(AGENT_SOCKET)
}

fn link_file(paths: &Paths, sandbox: &str) -> PathBuf {
    paths.containers().join(sandbox).join(LINK_FILE)
}

/// What a member needs to know about its running sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodLink {
    /// The sandbox's container as cabin-init knows it.
    pub guest_container: String,
    /// The pod's QEMU on the host.
    pub vmm_pid: u32,
}

impl PodLink {
    /// Written by the sandbox's supervisor once its container runs.
    pub fn write(&self, paths: &Paths, sandbox: &str) -> io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        cabin_base::files::write_atomic(&link_file(paths, sandbox), &bytes, 0o600)
    }

    /// Removed when the sandbox's run ends.
    pub fn remove(paths: &Paths, sandbox: &str) {
        let _ = std::fs::remove_file(link_file(paths, sandbox));
        let _ = std::fs::remove_file(agent_socket(paths, sandbox));
    }

    /// The link of sandbox `sandbox`, which must be running. Its supervisor writes it
    /// just after it records the sandbox as running: a member started at once waits
    /// for it a moment.
    pub async fn wait_for(paths: &Paths, sandbox: &str) -> Result<PodLink, RunError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match PodLink::read(paths, sandbox) {
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                r => return r,
            }
        }
    }

    /// The link of sandbox `sandbox`, which must be running.
    pub fn read(paths: &Paths, sandbox: &str) -> Result<PodLink, RunError> {
        let not_running = || {
            RunError::Setup(format!(
                "the pod's sandbox container {sandbox} is not running: start it first"
            ))
        };
        let bytes = cabin_base::files::read_bounded(&link_file(paths, sandbox), MAX_LINK_BYTES)
            .map_err(|_| not_running())?;
        serde_json::from_slice(&bytes).map_err(|e| {
            RunError::Setup(format!(
                "the pod's sandbox container {sandbox} has an unreadable {LINK_FILE}: {e}"
            ))
        })
    }
}

/// Where a member's host directory or file `dir` (its root, a bound folder or file) is
/// in the guest: the same place inside the pod's share. Anything outside the share (or
/// reaching out of it with `..`) is refused.
pub fn guest_path(paths: &Paths, sandbox: &str, dir: &Path) -> Result<String, RunError> {
    let share = share_dir(paths, sandbox);
    let outside = || {
        RunError::Setup(format!(
            "a pod member's root file system and bound folders and files must be inside its pod's share {}, not {}",
            share.display(),
            dir.display()
        ))
    };
    let rel = dir.strip_prefix(&share).map_err(|_| outside())?;
    if rel.as_os_str().is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    let rel = rel.to_str().ok_or_else(outside)?;
    Ok(format!("{GUEST_SHARE}/{rel}"))
}

/// What a member may be made of: its sandbox's VM has its devices and network already,
/// fixed when it started (a microVM has no hot-plug bus).
pub fn check_member(cfg: &ContainerSpec) -> Result<(), RunError> {
    let refuse = |what: &str| Err(RunError::Setup(format!("a pod member {what}")));
    if let Some(PodRole::Member { sandbox }) = &cfg.pod {
        if !crate::store::valid_id(sandbox) {
            return refuse(&format!(
                "names no container of the store as its sandbox ({sandbox:?})"
            ));
        }
    }
    if !matches!(cfg.root, RootSource::Dir(_)) {
        return refuse("runs on a directory of its pod's share, not an image");
    }
    if cfg.network != NetworkMode::None || !cfg.publish.is_empty() {
        return refuse(
            "shares its sandbox's network: its own must be none, and the sandbox publishes the pod's ports",
        );
    }
    if cfg
        .mounts
        .iter()
        .any(|m| matches!(m, MountSpec::Volume { .. }))
    {
        return refuse(
            "cannot have volumes of its own (its VM's devices are the sandbox's): host folders on the pod's share and tmpfs mounts only",
        );
    }
    Ok(())
}

/// Relays cabin-init's protocol from `listener` (the sandbox's `agent.sock`) to the
/// VM's agent connection `channel`: each request of a member's supervisor, streams
/// included, goes over the one HTTP/2 connection the sandbox's supervisor holds to the
/// guest. Runs until aborted, which ends every connection it serves too.
pub async fn serve_agent(listener: tokio::net::UnixListener, channel: Channel) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let conn = match listener.accept().await {
            Ok((conn, _)) => conn,
            Err(_) => {
                // Out of descriptors, say: not a loop that spins.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let channel = channel.clone();
        connections.spawn(async move {
            let relay =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut channel = channel.clone();
                    async move {
                        use tower::Service;
                        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                        channel.call(req.map(tonic::body::Body::new)).await
                    }
                });
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .max_frame_size(Some(1 << 20))
                .serve_connection(hyper_util::rt::TokioIo::new(conn), relay)
                .await;
        });
    }
}

/// A channel that turns to `true` once the supervisor of sandbox `sandbox` is gone (its
/// lock is free): the member's "VM" has ended. Watched from a thread of its own, which
/// a blocking lock needs; it lives as long as the process.
pub fn watch_sandbox(paths: &Paths, sandbox: &str) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let lock = paths.containers().join(sandbox).join("supervisor.lock");
    std::thread::spawn(move || {
        // A shared lock is granted only once the supervisor's exclusive one is gone;
        // dropped at once, so that a later start of the sandbox is not held up.
        let _ = cabin_base::lock::lock_path_waiting(&lock, cabin_base::lock::Mode::Shared);
        let _ = tx.send(true);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_root_must_lie_inside_its_pods_share() {
        let paths = Paths::at("/data");
        let share = share_dir(&paths, "sbx");
        assert_eq!(
            guest_path(&paths, "sbx", &share.join("task-1/rootfs")).unwrap(),
            "/run/cabin/pod/task-1/rootfs"
        );
        for bad in [
            PathBuf::from("/etc"),
            share.clone(),
            share.join("../../other/pod/x"),
            share.join("a/./b/../c"),
            paths.containers().join("sbx2/pod/x"),
        ] {
            let e = guest_path(&paths, "sbx", &bad).unwrap_err().to_string();
            assert!(e.contains("inside its pod's share"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_pod_role_keeps_its_wire_shape() {
        assert_eq!(
            serde_json::to_string(&PodRole::Sandbox).unwrap(),
            r#""sandbox""#
        );
        assert_eq!(
            serde_json::to_string(&PodRole::Member {
                sandbox: "abc".into()
            })
            .unwrap(),
            r#"{"member":{"sandbox":"abc"}}"#
        );
    }
}
