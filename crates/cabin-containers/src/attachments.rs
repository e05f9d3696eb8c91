//! What a container's VM is attached to besides its root disk: its network card and
//! the host side of it, shared host folders, volume disks; and what the guest is told
//! about them (the card's address, the container's mounts).
//!
//! [`Shape`] is the part that decides which boot snapshot fits (how many devices of
//! each kind) and is computed without side effects; [`Attachments::acquire`] does the
//! real work for a container that starts now and holds what must live as long as its
//! VM (the bridge endpoint, volume locks).

use std::path::PathBuf;
use std::sync::Arc;

use cabin_proto::v1::{ContainerMount, HostEntry, NetworkConfig};
use cabin_vmm::qemu::user_net;
use cabin_vmm::{DiskFormat, DiskSpec, NetBackend, ShareSpec};

use crate::error::{Notify, RunError};
use crate::volumes::{self, AttachedVolume, MountSpec, Volumes};
use crate::{ContainerSpec, Paths};
use cabin_net::bridge::{self, Endpoint};
use cabin_net::networks::Networks;
use cabin_net::{ports, NetworkMode};

/// The devices a container's VM gets besides its root disk.
pub struct Devices {
    pub nic: Option<NetBackend>,
    pub shares: Vec<ShareSpec>,
    pub disks: Vec<DiskSpec>,
}

fn volume_disk(i: usize, path: PathBuf) -> DiskSpec {
    DiskSpec {
        path,
        format: DiskFormat::Raw,
        read_only: false,
        serial: format!("vol{i}"),
        // A volume keeps its data: guest flushes reach the host's disk.
        volatile: false,
        backing: None,
    }
}

/// The devices of a VM for `cfg`, with placeholders for what only a start provides:
/// enough to find (or build) its boot snapshot.
pub fn shape(cfg: &ContainerSpec) -> Devices {
    let nic = match cfg.network {
        NetworkMode::User => Some(NetBackend::User {
            forwards: Vec::new(),
        }),
        // A pod's namespace: a tap as on a bridge (one boot snapshot fits both).
        NetworkMode::Bridge | NetworkMode::Pod => Some(NetBackend::Tap(None)),
        NetworkMode::None => None,
    };
    let mut shares = Vec::new();
    let mut disks = Vec::new();
    // A pod member's VM is its sandbox's: it gets no device.
    let member = matches!(cfg.pod, Some(crate::pod::PodRole::Member { .. }));
    for m in cfg.mounts.iter().filter(|_| !member) {
        match m {
            MountSpec::Bind { read_only, .. } => shares.push(ShareSpec {
                path: PathBuf::from("/placeholder"),
                tag: format!("share{}", shares.len()),
                read_only: *read_only,
            }),
            // Read-only volumes are read-only in the guest's mount; the device stays
            // the same, so that one boot snapshot fits either.
            MountSpec::Volume { .. } => disks.push(volume_disk(disks.len(), "/placeholder".into())),
            MountSpec::Tmpfs { .. } => {}
        }
    }
    // A pod's sandbox: the share its members' root file systems arrive on, last.
    if cfg.pod == Some(crate::pod::PodRole::Sandbox) {
        shares.push(ShareSpec {
            path: PathBuf::from("/placeholder"),
            tag: crate::pod::SHARE_TAG.into(),
            read_only: false,
        });
    }
    Devices { nic, shares, disks }
}

/// A started container's attachments.
pub struct Attachments {
    pub devices: Devices,
    /// For CreateContainer.
    pub network: Option<NetworkConfig>,
    pub mounts: Vec<ContainerMount>,
    pub hosts: Vec<HostEntry>,
    /// Published ports, with the host ports chosen for `-p PORT`.
    pub published: Vec<cabin_vmm::PortForward>,
    pub endpoint: Option<Endpoint>,
    volumes: Vec<AttachedVolume>,
}

impl Attachments {
    /// The devices of the VM's command line, taken out (what stays behind is held until
    /// the VM is gone).
    pub fn take_devices(&mut self) -> Devices {
        std::mem::replace(
            &mut self.devices,
            Devices {
                nic: None,
                shares: Vec::new(),
                disks: Vec::new(),
            },
        )
    }

    pub fn acquire(
        paths: &Paths,
        cfg: &ContainerSpec,
        id: &str,
        notify: Notify<'_>,
    ) -> Result<Attachments, RunError> {
        let mut devices = shape(cfg);
        let mut mounts = Vec::new();
        let mut held = Vec::new();
        let (mut share_i, mut disk_i) = (0, 0);
        let store = Volumes::open(paths);
        let member_of = match &cfg.pod {
            Some(crate::pod::PodRole::Member { sandbox }) => Some(sandbox.as_str()),
            _ => None,
        };
        for m in &cfg.mounts {
            match m {
                // A pod member's folders and files are on its pod's share already.
                MountSpec::Bind {
                    source,
                    target,
                    read_only,
                } if member_of.is_some() => {
                    let sandbox = member_of.unwrap_or_default();
                    mounts.push(ContainerMount {
                        source: format!(
                            "guest:{}",
                            crate::pod::guest_path(paths, sandbox, source)?
                        ),
                        target: target.clone(),
                        read_only: *read_only,
                        options: String::new(),
                    });
                }
                MountSpec::Bind {
                    source,
                    target,
                    read_only,
                } => {
                    let dir = volumes::check_host_dir(source)?;
                    let share = &mut devices.shares[share_i];
                    share.path = dir;
                    mounts.push(ContainerMount {
                        source: format!("9p:{}", share.tag),
                        target: target.clone(),
                        read_only: *read_only,
                        options: String::new(),
                    });
                    share_i += 1;
                }
                MountSpec::Volume {
                    name,
                    target,
                    read_only,
                } => {
                    let v = store.attach(name)?;
                    let disk = &mut devices.disks[disk_i];
                    disk.path = v.disk.clone();
                    held.push(v);
                    mounts.push(ContainerMount {
                        source: format!("blk:{}", disk.serial),
                        target: target.clone(),
                        read_only: *read_only,
                        options: String::new(),
                    });
                    disk_i += 1;
                }
                MountSpec::Tmpfs { target, options } => mounts.push(ContainerMount {
                    source: "tmpfs".into(),
                    target: target.clone(),
                    read_only: false,
                    options: options.clone(),
                }),
            }
        }
        if cfg.pod == Some(crate::pod::PodRole::Sandbox) {
            let sandbox = cfg.container_id.as_deref().ok_or_else(|| {
                RunError::Setup("a pod's sandbox must be a container of the store".into())
            })?;
            let dir = crate::pod::share_dir(paths, sandbox);
            std::fs::create_dir_all(&dir).map_err(|e| {
                RunError::Setup(format!("creating the pod's share {}: {e}", dir.display()))
            })?;
            if let Some(share) = devices.shares.last_mut() {
                share.path = dir;
            }
        }
        if cfg.network != NetworkMode::Bridge {
            // Bridged containers reconcile as they join; the others tidy up after a
            // crash that left the bridge behind.
            if let Err(e) = bridge::reconcile() {
                notify(&format!("tidying up the host bridge: {e}"));
            }
        }
        let mut publish = cfg.publish.clone();
        ports::choose_free_ports(&mut publish)?;
        let published = publish.clone();

        let (network, hosts, endpoint) = match cfg.network {
            NetworkMode::User => {
                // QEMU binds the ports itself: this only checks that it will be able to.
                drop(ports::reserve_ports(&publish)?);
                devices.nic = Some(NetBackend::User { forwards: publish });
                // A MAC of its own, as every VM has: one resumed from a snapshot would
                // otherwise keep the template's, the same for all of them.
                let b = cabin_base::random::bytes::<3>()
                    .map_err(|e| RunError::Setup(format!("choosing a MAC address: {e}")))?;
                let (net, hosts) =
                    user_mode(format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2]));
                (Some(net), hosts, None)
            }
            NetworkMode::Bridge => {
                // What peers may call it: its name and its hostname (by default the
                // start of its ID, as in docker).
                let mut names = Vec::new();
                names.extend(cfg.name.clone());
                names.push(cfg.hostname_for(id));
                let net = match &cfg.user_network {
                    None => bridge::Net::default_bridge(),
                    Some(u) => {
                        let networks = Networks::open(paths);
                        let record = networks.get(&u.name)?;
                        networks.claim(&record)?;
                        // Docker's: its aliases too (its hostname is, by default,
                        // the start of its ID).
                        names.extend(u.aliases.iter().cloned());
                        record.net()
                    }
                };
                let mut seen = std::collections::HashSet::new();
                names.retain(|n| seen.insert(n.clone()));
                let ep = bridge::attach_to(
                    &net,
                    cfg.container_id.as_deref().unwrap_or(id),
                    names,
                    &publish,
                )?;
                devices.nic = Some(NetBackend::Tap(Some(Arc::clone(&ep.tap))));
                let hosts = with_host_gateway(ep.peers(), &ep.net().gateway().to_string());
                (Some(ep.guest_config()), hosts, Some(ep))
            }
            NetworkMode::Pod => {
                let netns = cfg.netns.as_deref().ok_or_else(|| {
                    RunError::Setup("a pod network needs its network namespace".into())
                })?;
                if !cfg.publish.is_empty() {
                    return Err(RunError::Setup(
                        "a pod's ports are its address's: nothing to publish".into(),
                    ));
                }
                let joined =
                    cabin_net::netns::join(netns).map_err(|e| RunError::Setup(e.to_string()))?;
                devices.nic = Some(NetBackend::Tap(Some(Arc::clone(&joined.tap))));
                let net = NetworkConfig {
                    mac: joined.mac.clone(),
                    address: joined.address.clone(),
                    gateway: joined.gateway.map(|g| g.to_string()).unwrap_or_default(),
                    // The pod's containers have CRI's /etc/resolv.conf.
                    dns: Vec::new(),
                };
                (Some(net), Vec::new(), None)
            }
            NetworkMode::None => {
                if !cfg.publish.is_empty() {
                    return Err(RunError::Setup(
                        "--network none cannot publish ports (-p)".into(),
                    ));
                }
                (None, Vec::new(), None)
            }
        };
        Ok(Attachments {
            devices,
            network,
            mounts,
            hosts,
            published,
            endpoint,
            volumes: held,
        })
    }

    pub fn has_volumes(&self) -> bool {
        !self.volumes.is_empty()
    }

    /// The container's address on its network, if it has one of its own.
    pub fn ip(&self) -> Option<String> {
        self.endpoint.as_ref().map(|e| e.record.ip.to_string())
    }
}

/// The names a container calls the host by, as Docker's `host-gateway` gives them.
pub const HOST_NAMES: [&str; 2] = ["host.docker.internal", "host.containers.internal"];

/// A container's /etc/hosts entries: its peers, and the host at `gateway` (the user-mode
/// network's host address, which reaches the host's loopback, or the bridge's address
/// on the host).
/// The network of a VM on QEMU's user-mode network (the same for every such VM but
/// its MAC address; an empty `mac` keeps the card's), and its hosts entries.
pub fn user_mode(mac: String) -> (NetworkConfig, Vec<HostEntry>) {
    let net = NetworkConfig {
        mac,
        address: format!("{}/{}", user_net::GUEST, user_net::PREFIX),
        gateway: user_net::GATEWAY.to_string(),
        dns: vec![user_net::DNS.to_string()],
    };
    (
        net,
        with_host_gateway(Vec::new(), &user_net::GATEWAY.to_string()),
    )
}

pub fn with_host_gateway(mut peers: Vec<HostEntry>, gateway: &str) -> Vec<HostEntry> {
    peers.retain(|p| !p.names.iter().any(|n| HOST_NAMES.contains(&n.as_str())));
    peers.push(HostEntry {
        ip: gateway.to_string(),
        names: HOST_NAMES.iter().map(|n| n.to_string()).collect(),
    });
    peers
}
