//! A VM's network card in a network namespace someone else prepared: a Kubernetes
//! pod's, which containerd's CRI plugin made and CNI wired (a veth with the pod's
//! address, its routes). As Kata does it: a tap device is made inside that namespace
//! and traffic is passed between the namespace's interface and the tap by tc
//! (`mirred` redirects in both directions, on ingress), so the guest's card takes the
//! interface's place: its address, its MAC, its gateway. The namespace's own stack
//! no longer sees the pod's traffic; nothing on the host changes.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde::Deserialize;

/// Why a namespace's interface could not become a VM's card.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("the network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("the network namespace {0} has no interface with an IPv4 address (did CNI run?)")]
    NoInterface(PathBuf),
    #[error("in the network namespace {path}: {what}: {detail}")]
    Command {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

/// The namespace's interface, as the guest's card takes it over.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The tap inside the namespace (QEMU's side of the card).
    pub tap: Arc<OwnedFd>,
    /// The interface's address with its prefix ("10.88.0.5/16").
    pub address: String,
    /// Its default route's gateway, if it has one.
    pub gateway: Option<Ipv4Addr>,
    /// Its MAC, which its peers already know.
    pub mac: String,
}

#[derive(Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    addr_info: Vec<AddrInfo>,
}

#[derive(Deserialize)]
struct AddrInfo {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct Route {
    #[serde(default)]
    gateway: Option<String>,
}

/// Makes a tap in the namespace at `path` and wires it to the namespace's interface.
/// Runs on a thread of its own, which alone enters the namespace (and the commands it
/// starts with it), so the caller's threads stay where they are.
pub fn join(path: &Path) -> Result<Joined, NetnsError> {
    let path = path.to_path_buf();
    std::thread::scope(|s| s.spawn(|| join_here(&path)).join())
        .unwrap_or_else(|_| Err(NetnsError::NoInterface(PathBuf::from("(a panic)"))))
}

fn join_here(path: &Path) -> Result<Joined, NetnsError> {
    let ns = std::fs::File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: setns of this thread alone into the namespace open at `ns`.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Open {
            path: path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    let run = |what: &str, args: &[&str]| -> Result<Vec<u8>, NetnsError> {
        let failed = |detail: String| NetnsError::Command {
            path: path.to_path_buf(),
            what: what.to_string(),
            detail,
        };
        let program = args[0];
        let out = Command::new(program)
            .args(&args[1..])
            .output()
            .map_err(|e| failed(format!("running {program}: {e}")))?;
        if !out.status.success() {
            return Err(failed(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(out.stdout)
    };
    let parse = |what: &str, bytes: &[u8]| -> Result<serde_json::Value, NetnsError> {
        serde_json::from_slice(bytes).map_err(|e| NetnsError::Command {
            path: path.to_path_buf(),
            what: what.to_string(),
            detail: e.to_string(),
        })
    };
    let links: Vec<Link> = serde_json::from_value(parse(
        "reading its interfaces",
        &run("reading its interfaces", &["ip", "-j", "addr", "show"])?,
    )?)
    .map_err(|e| NetnsError::Command {
        path: path.to_path_buf(),
        what: "reading its interfaces".into(),
        detail: e.to_string(),
    })?;
    let (link, addr) = links
        .iter()
        .filter(|l| l.ifname != "lo")
        .find_map(|l| {
            l.addr_info
                .iter()
                .find(|a| a.family == "inet")
                .map(|a| (l, a))
        })
        .ok_or_else(|| NetnsError::NoInterface(path.to_path_buf()))?;
    let routes: Vec<Route> = serde_json::from_value(parse(
        "reading its routes",
        &run(
            "reading its routes",
            &["ip", "-j", "-4", "route", "show", "default"],
        )?,
    )?)
    .unwrap_or_default();
    let gateway = routes
        .iter()
        .find_map(|r| r.gateway.as_deref()?.parse().ok());
    let (tap, name) = crate::tap::open_tap("cabintap%d").map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let eth = link.ifname.as_str();
    run("bringing the tap up", &["ip", "link", "set", &name, "up"])?;
    for (from, to) in [(eth, name.as_str()), (name.as_str(), eth)] {
        run(
            "adding an ingress queue",
            &["tc", "qdisc", "add", "dev", from, "ingress"],
        )?;
        run(
            "redirecting traffic",
            &[
                "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ],
        )?;
    }
    Ok(Joined {
        tap: Arc::new(tap),
        address: format!("{}/{}", addr.local, addr.prefixlen),
        gateway,
        mac: link.address.clone(),
    })
}
