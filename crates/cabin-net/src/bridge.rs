//! `--network bridge`: every container VM gets a tap device on the host bridge `cabin0`
//! and an address of its own in [`SUBNET`]; nftables (one table, `ip cabin`) masquerades
//! outbound traffic and forwards published ports (DNAT). Root only. A user-defined
//! network (see [`crate::networks`]) is another such bridge, with its own subnet, table
//! and state: a [`Net`] says which.
//!
//! No daemon: each process that owns a VM (a `cabin run` or a supervisor) holds an
//! [`Endpoint`]. State lives in [`STATE_DIR`] (under /run, so it goes away with a
//! reboot, exactly like the bridge and the rules): one file per endpoint, flock'ed by
//! its owner for as long as it lives, and one lock for changes. Every change rewrites
//! the whole nftables table from the endpoints that are alive, in one transaction, so
//! the rules can never drift from the containers; the last endpoint to leave removes
//! the table and the bridge and restores the host's forwarding setting. Beside a
//! firewall that drops forwarded traffic (Docker's), [`crate::firewall`] lets the
//! bridge's traffic through. An owner that
//! was killed leaves a file nobody holds: the next change drops it (and its rules).
//!
//! Containers find each other by name through /etc/hosts: owners watch the endpoint
//! directory and send their guest the current list (see `ContainerVm`).

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cabin_base::lock::{self, lock_file, Mode, Wait};
use cabin_vmm::{PortForward, Protocol};
use serde::{Deserialize, Serialize};

use crate::firewall;
use crate::ports::{self, PortReservations};
use crate::tap;

pub const BRIDGE: &str = "cabin0";
pub const SUBNET: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 0);
pub const PREFIX: u8 = 24;
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
pub const STATE_DIR: &str = "/run/cabin/bridge";
const TABLE: &str = "cabin";
/// The host's IPv4 forwarding setting from before cabin's first bridge came.
const FORWARDING_SAVED: &str = "/run/cabin/ip_forward.before";
/// The host interface names of user-defined networks start with this.
pub const BRIDGE_PREFIX: &str = "cbr-";
/// Where the state of user-defined networks' bridges lives, one directory each.
pub const NETWORKS_STATE_DIR: &str = "/run/cabin/networks";

/// One bridge network on the host: its interface, its /24, its nftables table and
/// where its endpoints are recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub bridge: String,
    /// The subnet's first address (x.y.z.0); the gateway, the host, is x.y.z.1.
    pub subnet: Ipv4Addr,
    pub table: String,
    pub state: PathBuf,
}

impl Net {
    /// `cabin0`, the network of `--network bridge`.
    pub fn default_bridge() -> Net {
        Net {
            bridge: BRIDGE.into(),
            subnet: SUBNET,
            table: TABLE.into(),
            state: PathBuf::from(STATE_DIR),
        }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        let o = self.subnet.octets();
        Ipv4Addr::new(o[0], o[1], o[2], 1)
    }

    fn host(&self, n: u8) -> Ipv4Addr {
        let o = self.subnet.octets();
        Ipv4Addr::new(o[0], o[1], o[2], n)
    }

    fn cidr(&self) -> String {
        format!("{}/{PREFIX}", self.subnet)
    }
}

/// Name servers containers use when the host's own are on its loopback (a local
/// resolver the containers cannot reach), as docker does.
const FALLBACK_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EndpointRecord {
    pub container_id: String,
    /// The container's name and hostname: what peers can call it.
    pub names: Vec<String>,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub tap: String,
    /// Published ports as (protocol, host ip, host port, container port).
    pub ports: Vec<(String, Ipv4Addr, u16, u16)>,
}

/// A container's place on the bridge; leaving it (drop) takes its rules away.
pub struct Endpoint {
    pub record: EndpointRecord,
    /// Handed to QEMU.
    pub tap: std::sync::Arc<OwnedFd>,
    /// Held for the endpoint's life: tells the others it is alive.
    _held: fs::File,
    _ports: PortReservations,
    net: Net,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("--network bridge needs root (it creates a host bridge and firewall rules); run as root or use the default user-mode network")]
    NotRoot,
    /// The host is not set up for what was asked (and what to do about it).
    #[error("{0}")]
    Setup(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    #[error(transparent)]
    Publish(#[from] ports::PublishError),
    #[error(transparent)]
    Firewall(#[from] firewall::FirewallError),
}

fn setup_err(what: &str) -> impl Fn(io::Error) -> BridgeError + '_ {
    move |source| BridgeError::Io {
        what: what.to_string(),
        source,
    }
}

/// Takes `f`'s exclusive lock: true when taken (always, waiting, with `wait`).
fn flock(f: &fs::File, wait: Wait) -> io::Result<bool> {
    lock_file(f, Mode::Exclusive, wait)
}

/// Runs a host networking command (`ip`, `nft`), feeding `input` on stdin.
fn host_command(program: &str, args: &[&str], input: Option<&str>) -> Result<(), BridgeError> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| {
        let hint = match program {
            "nft" => " (install it: apt-get install nftables)",
            "ip" => " (install it: apt-get install iproute2)",
            _ => "",
        };
        BridgeError::Io {
            what: format!("running {program}{hint}"),
            source,
        }
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(setup_err("writing to nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(setup_err("waiting for a host command"))?;
    if !out.status.success() {
        return Err(BridgeError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

fn sysctl_path(name: &str) -> PathBuf {
    Path::new("/proc/sys").join(name.replace('.', "/"))
}

/// The table for the endpoints alive now.
fn ruleset(net: &Net, endpoints: &[EndpointRecord]) -> String {
    let subnet = net.cidr();
    let (table, bridge) = (&net.table, &net.bridge);
    let mut dnat = String::new();
    for e in endpoints {
        for (proto, host_ip, host_port, ctr_port) in &e.ports {
            let dst = if host_ip.is_unspecified() {
                "fib daddr type local".to_string()
            } else {
                format!("ip daddr {host_ip}")
            };
            dnat.push_str(&format!(
                "    {dst} {proto} dport {host_port} dnat to {}:{ctr_port}\n",
                e.ip
            ));
        }
    }
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {subnet} ip daddr != {subnet} masquerade\n\
         \x20   ip saddr 127.0.0.0/8 ip daddr {subnet} masquerade\n  }}\n\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{bridge}\" oifname != \"{bridge}\" oifname \"{BRIDGE_PREFIX}*\" drop\n\
         \x20   iifname \"{bridge}\" oifname != \"{bridge}\" oifname \"{BRIDGE}\" drop\n\
         \x20   iifname \"{bridge}\" accept\n\
         \x20   oifname \"{bridge}\" ct state established,related accept\n\
         \x20   oifname \"{bridge}\" ip daddr {subnet} ct status dnat accept\n  }}\n\
         }}\n"
    )
}

/// The host's name servers, as containers on the bridge can reach them.
fn host_dns() -> Vec<String> {
    let text = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .map(|s| s.trim().to_string())
        .filter(|s| s.parse::<Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .collect();
    if servers.is_empty() {
        FALLBACK_DNS.iter().map(|s| s.to_string()).collect()
    } else {
        servers
    }
}

struct State {
    dir: PathBuf,
    net: Net,
    _lock: fs::File,
}

impl State {
    fn lock(net: &Net) -> Result<State, BridgeError> {
        let dir = &net.state;
        fs::create_dir_all(dir.join("endpoints"))
            .map_err(setup_err("creating the bridge state"))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(setup_err("opening the bridge lock"))?;
        flock(&lock, Wait::Block).map_err(setup_err("locking the bridge state"))?;
        Ok(State {
            dir: dir.to_path_buf(),
            net: net.clone(),
            _lock: lock,
        })
    }

    /// Endpoints whose owners are alive; the files of dead owners are removed.
    fn live_endpoints(&self) -> Vec<EndpointRecord> {
        self.sweep().0
    }

    /// The live endpoints, and whether any dead one was removed.
    fn sweep(&self) -> (Vec<EndpointRecord>, bool) {
        let mut live = Vec::new();
        let mut removed = false;
        let Ok(entries) = fs::read_dir(self.dir.join("endpoints")) else {
            return (live, removed);
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            if flock(&f, Wait::NoWait).unwrap_or(false) {
                // Nobody holds it: its owner is gone.
                let _ = fs::remove_file(&path);
                removed = true;
                continue;
            }
            let record = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).ok());
            if let Some(r) = record {
                live.push(r);
            }
        }
        live.sort_by_key(|r| r.ip);
        (live, removed)
    }

    /// Brings the host in line with `endpoints`: bridge, forwarding and rules, or none
    /// of them when no endpoint is left.
    fn apply(&self, endpoints: &[EndpointRecord]) -> Result<(), BridgeError> {
        // One host setting for all of cabin's bridges: saved by the first to come, put
        // back by the last to go.
        let saved_forwarding = Path::new(FORWARDING_SAVED);
        let bridge = self.net.bridge.as_str();
        let _turn =
            lock::lock_path_waiting(&saved_forwarding.with_extension("lock"), Mode::Exclusive)
                .map_err(setup_err("locking the forwarding setting"))?;
        if endpoints.is_empty() {
            let _ = host_command("nft", &["delete", "table", "ip", &self.net.table], None);
            let _ = host_command("ip", &["link", "del", bridge], None);
            firewall::withdraw(bridge);
            let others = fs::read_dir("/sys/class/net")
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n == BRIDGE || n.starts_with(BRIDGE_PREFIX)
                });
            if others {
                return Ok(());
            }
            if let Ok(before) = fs::read_to_string(saved_forwarding) {
                let _ = fs::write(sysctl_path("net.ipv4.ip_forward"), before.trim());
                let _ = fs::remove_file(saved_forwarding);
            }
            return Ok(());
        }
        if !Path::new("/sys/class/net").join(bridge).exists() {
            host_command("ip", &["link", "add", bridge, "type", "bridge"], None)?;
            tap::without_ipv6(bridge);
            let gateway = format!("{}/{PREFIX}", self.net.gateway());
            host_command("ip", &["addr", "add", &gateway, "dev", bridge], None)?;
            host_command("ip", &["link", "set", bridge, "up"], None)?;
        }
        if !saved_forwarding.exists() {
            let before = fs::read_to_string(sysctl_path("net.ipv4.ip_forward"))
                .map_err(setup_err("reading net.ipv4.ip_forward"))?;
            fs::write(saved_forwarding, before).map_err(setup_err("saving ip_forward"))?;
        }
        fs::write(sysctl_path("net.ipv4.ip_forward"), "1")
            .map_err(setup_err("enabling IPv4 forwarding"))?;
        // Published ports on 127.0.0.1 reach the containers through DNAT, which routes
        // packets from the loopback address out of the bridge.
        fs::write(
            sysctl_path(&format!("net.ipv4.conf.{bridge}.route_localnet")),
            "1",
        )
        .map_err(setup_err("enabling route_localnet on the bridge"))?;
        host_command("nft", &["-f", "-"], Some(&ruleset(&self.net, endpoints)))?;
        firewall::allow(bridge)?;
        Ok(())
    }
}

/// A locally administered MAC address derived from the container's address.
fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", o[1], o[2], o[3])
}

/// A host bridge for Lume's `bridged` networking: `name`, or without one the first
/// Linux bridge of the host other than cabin's own.
pub fn host_bridge(name: Option<&str>) -> Result<String, BridgeError> {
    let is_bridge = |n: &str| Path::new("/sys/class/net").join(n).join("bridge").is_dir();
    match name {
        Some(n) if is_bridge(n) => Ok(n.to_string()),
        Some(n) => Err(BridgeError::Setup(format!(
            "{n} is not a bridge on this host: bridged networking attaches the VM to a Linux bridge that holds your uplink (e.g. br0: ip link add br0 type bridge; ip link set eth0 master br0)"
        ))),
        None => {
            let mut names: Vec<String> = fs::read_dir("/sys/class/net")
                .map_err(setup_err("listing the host's interfaces"))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != BRIDGE && !n.starts_with(BRIDGE_PREFIX) && is_bridge(n))
                .collect();
            names.sort();
            names.into_iter().next().ok_or_else(|| {
                BridgeError::Setup(
                    "bridged networking needs a Linux bridge on the host holding your uplink (e.g. br0), named with --network bridged:<bridge>; there is none".into(),
                )
            })
        }
    }
}

/// A tap device (named from `pattern`) attached to the host bridge `bridge_if`; it
/// leaves the bridge when its last descriptor closes. Root only.
pub fn tap_on_host_bridge(
    pattern: &str,
    bridge_if: &str,
) -> Result<(OwnedFd, String), BridgeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BridgeError::Setup(
            "bridged networking needs root (it adds a tap device to a host bridge); use nat".into(),
        ));
    }
    let (fd, tap) = tap::open_tap(pattern).map_err(setup_err("creating a tap device"))?;
    host_command(
        "ip",
        &["link", "set", &tap, "master", bridge_if, "up"],
        None,
    )?;
    Ok((fd, tap))
}

/// Joins the default bridge: an address (`prefer`, if it is free: the one a resumed VM
/// still has; else the lowest free one), a tap device on the bridge, the published
/// ports.
pub fn attach(
    container_id: &str,
    names: Vec<String>,
    ports: &[PortForward],
    prefer: Option<Ipv4Addr>,
) -> Result<Endpoint, BridgeError> {
    attach_at(&Net::default_bridge(), container_id, names, ports, prefer)
}

/// Joins the bridge network `net`.
pub fn attach_to(
    net: &Net,
    container_id: &str,
    names: Vec<String>,
    ports: &[PortForward],
) -> Result<Endpoint, BridgeError> {
    attach_at(net, container_id, names, ports, None)
}

fn attach_at(
    net: &Net,
    container_id: &str,
    names: Vec<String>,
    ports: &[PortForward],
    prefer: Option<Ipv4Addr>,
) -> Result<Endpoint, BridgeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BridgeError::NotRoot);
    }
    let reservations = ports::reserve_ports(ports)?;
    let state = State::lock(net)?;
    let dir = &net.state;
    let mut live = state.live_endpoints();
    let ip = prefer
        .filter(|p| (2..255u8).any(|n| net.host(n) == *p))
        .into_iter()
        .chain((2..255u8).map(|n| net.host(n)))
        .find(|ip| live.iter().all(|e| e.ip != *ip))
        .ok_or_else(|| {
            BridgeError::Setup(format!(
                "no free address left on {} ({}): stop some of its containers",
                net.bridge,
                net.cidr()
            ))
        })?;
    let (tap_fd, tap) = tap::open_tap(&format!(
        "cb{}",
        &container_id[..container_id.len().min(12)]
    ))
    .map_err(setup_err("creating a tap device"))?;
    let record = EndpointRecord {
        container_id: container_id.to_string(),
        names,
        ip,
        mac: mac_for(ip),
        tap: tap.clone(),
        ports: ports
            .iter()
            .map(|p| {
                (
                    p.protocol.as_str().to_string(),
                    p.host_ip,
                    p.host_port,
                    p.guest_port,
                )
            })
            .collect(),
    };
    let path = dir.join("endpoints").join(format!("{ip}.json"));
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(setup_err("writing the endpoint"))?;
    let written = flock(&held, Wait::Block)
        .and_then(|_| serde_json::to_vec(&record).map_err(io::Error::other))
        .and_then(|b| (&held).write_all(&b));
    if let Err(source) = written {
        let _ = fs::remove_file(&path);
        return Err(BridgeError::Io {
            what: "writing the endpoint".into(),
            source,
        });
    }
    live.push(record.clone());
    let applied = state.apply(&live).and_then(|()| {
        host_command(
            "ip",
            &["link", "set", &tap, "master", &net.bridge, "up"],
            None,
        )
    });
    if let Err(e) = applied {
        drop(held);
        let _ = fs::remove_file(&path);
        let rest = state.live_endpoints();
        let _ = state.apply(&rest);
        return Err(e);
    }
    Ok(Endpoint {
        record,
        tap: std::sync::Arc::new(tap_fd),
        _held: held,
        _ports: reservations,
        net: net.clone(),
    })
}

impl Endpoint {
    /// What the guest's card gets.
    pub fn guest_config(&self) -> cabin_proto::v1::NetworkConfig {
        cabin_proto::v1::NetworkConfig {
            mac: self.record.mac.clone(),
            address: format!("{}/{PREFIX}", self.record.ip),
            gateway: self.net.gateway().to_string(),
            dns: host_dns(),
        }
    }

    /// The other containers on the bridge, for /etc/hosts.
    pub fn peers(&self) -> Vec<cabin_proto::v1::HostEntry> {
        peers_in(&self.net.state, &self.record.container_id)
    }

    /// The network it is on.
    pub fn net(&self) -> &Net {
        &self.net
    }
}

/// Follows who else is on the bridge, from any task.
pub struct PeerWatch {
    dir: PathBuf,
    me: String,
}

impl PeerWatch {
    pub fn new(ep: &Endpoint) -> PeerWatch {
        PeerWatch {
            dir: ep.net.state.clone(),
            me: ep.record.container_id.clone(),
        }
    }

    pub fn peers(&self) -> Vec<cabin_proto::v1::HostEntry> {
        peers_in(&self.dir, &self.me)
    }

    /// Changes whenever a container joins or leaves the bridge.
    pub fn generation(&self) -> Option<std::time::SystemTime> {
        fs::metadata(self.dir.join("endpoints"))
            .and_then(|m| m.modified())
            .ok()
    }
}

fn peers_in(dir: &Path, me: &str) -> Vec<cabin_proto::v1::HostEntry> {
    let mut peers = Vec::new();
    let Ok(entries) = fs::read_dir(dir.join("endpoints")) else {
        return peers;
    };
    for e in entries.flatten() {
        let Ok(bytes) = fs::read(e.path()) else {
            continue;
        };
        if bytes.len() > 64 * 1024 {
            continue;
        }
        if let Ok(r) = serde_json::from_slice::<EndpointRecord>(&bytes) {
            if r.container_id != me {
                peers.push(cabin_proto::v1::HostEntry {
                    ip: r.ip.to_string(),
                    names: r.names,
                });
            }
        }
    }
    peers.sort_by(|a, b| a.ip.cmp(&b.ip));
    peers
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let Ok(state) = State::lock(&self.net) else {
            return;
        };
        let _ = fs::remove_file(
            self.net
                .state
                .join("endpoints")
                .join(format!("{}.json", self.record.ip)),
        );
        let rest: Vec<EndpointRecord> = state
            .live_endpoints()
            .into_iter()
            .filter(|r| r.container_id != self.record.container_id)
            .collect();
        // Best effort: rules left behind by a failure here are rewritten by the next
        // change to the bridge (every start and leave reconciles the live endpoints).
        let _ = state.apply(&rest);
    }
}

/// After a crash (every bridged container's owner killed, or a host that lost power
/// with /run on disk), the bridge and its rules outlive their containers: any
/// container start calls this, which drops the endpoints of owners that died and
/// brings the host in line, removing the bridge when nobody is left. Cheap when there
/// is no bridge; changes nothing while every endpoint is alive.
pub fn reconcile() -> Result<(), BridgeError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    reconcile_net(&Net::default_bridge())?;
    for net in live_nets() {
        reconcile_net(&net)?;
    }
    Ok(())
}

fn reconcile_net(net: &Net) -> Result<(), BridgeError> {
    if !Path::new("/sys/class/net").join(&net.bridge).exists() {
        return Ok(());
    }
    let state = State::lock(net)?;
    let (live, removed) = state.sweep();
    if removed || live.is_empty() {
        state.apply(&live)?;
    }
    Ok(())
}

/// The bridge networks of every user-defined network with state on this host (for
/// tidying up after crashes).
fn live_nets() -> Vec<Net> {
    let mut out = Vec::new();
    for e in fs::read_dir(NETWORKS_STATE_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let id = e.file_name().to_string_lossy().into_owned();
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        // The subnet is the one its endpoints are in; with none, the bridge's own.
        let bridge = format!("{BRIDGE_PREFIX}{}", &id[..11]);
        let subnet = endpoints_subnet(&e.path()).unwrap_or(Ipv4Addr::UNSPECIFIED);
        out.push(Net {
            bridge,
            subnet,
            table: format!("cabin_{}", &id[..12]),
            state: e.path(),
        });
    }
    out
}

/// The /24 of the endpoints recorded in `state` (a network's state directory).
fn endpoints_subnet(state: &Path) -> Option<Ipv4Addr> {
    fs::read_dir(state.join("endpoints"))
        .ok()?
        .flatten()
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<EndpointRecord>(&b).ok())
        .map(|r| {
            let o = r.ip.octets();
            Ipv4Addr::new(o[0], o[1], o[2], 0)
        })
        .next()
}

/// Takes network `net` off the host (its rules, its bridge, its state) unless
/// containers are attached to it: those are returned, and nothing is done. The state
/// lock is held throughout, so that no container joins in between.
pub fn retire(net: &Net) -> Result<Vec<EndpointRecord>, BridgeError> {
    if !net.state.exists() {
        return Ok(Vec::new());
    }
    let state = State::lock(net)?;
    let live = state.live_endpoints();
    if !live.is_empty() {
        return Ok(live);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        state.apply(&[])?;
    }
    let _ = fs::remove_dir_all(&net.state);
    Ok(Vec::new())
}

/// The endpoints alive on `net` now (the containers attached to it).
pub fn endpoints(net: &Net) -> Vec<EndpointRecord> {
    if !net.state.join("endpoints").is_dir() {
        return Vec::new();
    }
    match State::lock(net) {
        Ok(state) => state.live_endpoints(),
        Err(_) => Vec::new(),
    }
}

/// The published port descriptions of a record, docker style.
pub fn describe_ports(r: &EndpointRecord) -> Vec<String> {
    r.ports
        .iter()
        .map(|(proto, ip, hp, cp)| {
            ports::describe(&PortForward {
                protocol: if proto == "udp" {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
                host_ip: *ip,
                host_port: *hp,
                guest_port: *cp,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_forwards_published_ports_and_masquerades_the_subnet() {
        let e = EndpointRecord {
            container_id: "a".repeat(32),
            names: vec!["web".into()],
            ip: Ipv4Addr::new(10, 89, 0, 2),
            mac: mac_for(Ipv4Addr::new(10, 89, 0, 2)),
            tap: "cbaaaa".into(),
            ports: vec![
                ("tcp".into(), Ipv4Addr::LOCALHOST, 8080, 80),
                ("udp".into(), Ipv4Addr::UNSPECIFIED, 5353, 53),
            ],
        };
        let r = ruleset(&Net::default_bridge(), std::slice::from_ref(&e));
        assert!(r.starts_with("table ip cabin\ndelete table ip cabin\n"));
        assert!(r.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat to 10.89.0.2:80"));
        assert!(r.contains("fib daddr type local udp dport 5353 dnat to 10.89.0.2:53"));
        assert!(r.contains("ip saddr 10.89.0.0/24 ip daddr != 10.89.0.0/24 masquerade"));
        // Networks do not reach each other: nothing goes from one of cabin's bridges to
        // another, before anything is accepted.
        let isolated = r.find("iifname \"cabin0\" oifname != \"cabin0\" oifname \"cbr-*\" drop");
        assert!(
            isolated.is_some_and(|i| i < r.find("iifname \"cabin0\" accept").unwrap()),
            "{r}"
        );
        assert_eq!(e.mac, "52:54:00:59:00:02");
        assert_eq!(describe_ports(&e)[0], "127.0.0.1:8080->80/tcp");
    }

    #[test]
    fn dead_owners_endpoints_are_dropped_and_peers_listed() {
        let t = tempfile::tempdir().unwrap();
        let net = Net {
            state: t.path().to_path_buf(),
            ..Net::default_bridge()
        };
        let state = State::lock(&net).unwrap();
        let rec = |n: u8| EndpointRecord {
            container_id: format!("{n:032}"),
            names: vec![format!("c{n}")],
            ip: Ipv4Addr::new(10, 89, 0, n),
            mac: String::new(),
            tap: String::new(),
            ports: vec![],
        };
        let write = |r: &EndpointRecord| {
            let p = t.path().join("endpoints").join(format!("{}.json", r.ip));
            fs::write(&p, serde_json::to_vec(r).unwrap()).unwrap();
            p
        };
        let alive = write(&rec(2));
        let held = fs::File::open(&alive).unwrap();
        assert!(flock(&held, Wait::NoWait).unwrap());
        let dead = write(&rec(3));
        let live = state.live_endpoints();
        assert_eq!(live, vec![rec(2)]);
        assert!(!dead.exists(), "the file of a dead owner is removed");
        let peers = peers_in(t.path(), &rec(9).container_id);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].names, ["c2"]);
    }
}
