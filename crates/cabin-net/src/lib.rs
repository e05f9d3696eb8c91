//! cabin's networking, shared by containers and full VMs.
//!
//! - [`mode`]: a container's network mode (user-mode, the host bridge, none).
//! - [`ports`]: published ports, their syntax and their reservation on the host.
//! - [`tap`]: tap devices.
//! - [`bridge`]: the host bridge `cabin0`, its addresses, NAT and published ports
//!   (nftables), and peers' names.
//! - [`networks`]: user-defined networks, each a bridge of its own.
//! - [`netns`]: a VM's card in a network namespace CNI prepared (a Kubernetes pod's).
//! - [`firewall`]: the bridges' traffic through an iptables firewall that drops
//!   forwarded traffic (Docker's).
//! - [`dhcp`]: a DHCP server that answers one VM on its tap, or watches a LAN's
//!   server answer it.

pub mod bridge;
pub mod dhcp;
pub mod firewall;
pub mod mode;
pub mod netns;
pub mod networks;
pub mod ports;
pub mod tap;

pub use mode::NetworkMode;
