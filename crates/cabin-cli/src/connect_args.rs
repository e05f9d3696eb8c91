//! Options that connect a container to the outside: its network, published ports and
//! mounts (shared by `cabin run` and `cabin create`).

use cabin_containers::spec::UserNetwork;
use cabin_containers::volumes;
use cabin_containers::ContainerSpec;
use cabin_net::{ports, NetworkMode};
use clap::Args;

use crate::report::Failure;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Network: user (default; no privileges, QEMU's user-mode stack), bridge (root:
    /// an address per container on the host bridge cabin0, reachable by name), none,
    /// or the name of a network made with `cabin network create` (root).
    #[arg(long, value_name = "MODE|NAME", default_value = "user")]
    pub network: String,
    /// Another name the container's peers on its user-defined network may call it.
    #[arg(long = "network-alias", value_name = "ALIAS")]
    pub network_aliases: Vec<String>,
    /// Publish a container port on the host: [HOSTIP:][HOSTPORT:]CTRPORT[/tcp|/udp]
    /// (HOSTIP defaults to 127.0.0.1; without HOSTPORT, any free port, shown by inspect).
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Mount a host directory (shared live) or a named volume:
    /// HOSTDIR:CTRPATH[:ro] or VOLUME:CTRPATH[:ro].
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Long-form mount: type=bind|volume|tmpfs,source=...,target=...[,readonly].
    #[arg(long = "mount", value_name = "SPEC")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: PATH[:size=64m,mode=1777].
    #[arg(long = "tmpfs", value_name = "PATH[:OPTS]")]
    pub tmpfs: Vec<String>,
}

impl ConnectArgs {
    pub fn apply(&self, c: &mut ContainerSpec) -> Result<(), Failure> {
        match self.network.parse::<NetworkMode>() {
            Ok(mode) => {
                if !self.network_aliases.is_empty() {
                    return Err(Failure::new(
                        "--network-alias needs a user-defined network (cabin network create)",
                    ));
                }
                c.network = mode;
            }
            // A network's name (whether it exists is checked when the container is
            // made or started).
            Err(_) if cabin_containers::store::valid_name(&self.network) => {
                c.network = NetworkMode::Bridge;
                c.user_network = Some(UserNetwork {
                    name: self.network.clone(),
                    aliases: self.network_aliases.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        c.publish = self
            .publish
            .iter()
            .map(|p| ports::parse_publish(p))
            .collect::<Result<_, _>>()?;
        if c.network == NetworkMode::None && !c.publish.is_empty() {
            return Err(Failure::new("--network none cannot publish ports (-p)"));
        }
        for v in &self.volumes {
            c.mounts.push(volumes::parse_volume_flag(v)?);
        }
        for m in &self.mounts {
            c.mounts.push(volumes::parse_mount_flag(m)?);
        }
        for t in &self.tmpfs {
            c.mounts.push(volumes::parse_tmpfs_flag(t)?);
        }
        for (i, m) in c.mounts.iter().enumerate() {
            if c.mounts[..i].iter().any(|o| o.target() == m.target()) {
                return Err(Failure::new(format!("{} is mounted twice", m.target())));
            }
        }
        Ok(())
    }
}
