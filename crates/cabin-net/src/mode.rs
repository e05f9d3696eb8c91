//! A container's network mode (`--network`) and what its VM gets for each.
//!
//! - `user` (the default): QEMU's user-mode network stack. No privileges and no change
//!   to the host's configuration; outbound connections and DNS go through the host's
//!   own sockets; published ports are QEMU host forwards. Every VM has the same private
//!   address and is alone on its network.
//! - `bridge` (root only): a tap device per VM on the host bridge `cabin0`, an address
//!   per container, NAT for outbound traffic and published ports through nftables;
//!   containers reach each other by address and by name (see [`crate::bridge`]).
//! - `none`: no network card; the container has only a loopback interface.
//! - `pod` (containerd's shim only, root): the VM's card takes the place of the
//!   interface in a network namespace CNI prepared for a Kubernetes pod (see
//!   [`crate::netns`]): the pod's address, MAC and routes.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    #[default]
    User,
    Bridge,
    None,
    /// The card in the spec's network namespace (`ContainerSpec::netns`).
    Pod,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {0:?}: use user (the default: no privileges needed), bridge (root: an address per container) or none")]
pub struct NetworkModeError(pub String);

impl std::str::FromStr for NetworkMode {
    type Err = NetworkModeError;
    fn from_str(s: &str) -> Result<Self, NetworkModeError> {
        match s {
            "user" | "slirp" | "default" => Ok(NetworkMode::User),
            "bridge" => Ok(NetworkMode::Bridge),
            "none" => Ok(NetworkMode::None),
            _ => Err(NetworkModeError(s.to_string())),
        }
    }
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::User => "user",
            NetworkMode::Bridge => "bridge",
            NetworkMode::None => "none",
            NetworkMode::Pod => "pod",
        }
    }
}
