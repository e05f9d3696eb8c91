//! User-defined networks (`cabin network create`, Docker's `/networks`, compose's
//! project networks): each is a bridge of its own on the host ([`BRIDGE_PREFIX`] and
//! part of its ID), with its own /24 in 10.89.0.0/16 and its own nftables table, so
//! containers on one network reach each other (by address, name and alias, through
//! /etc/hosts) and not those on another. Root only, like `--network bridge`, whose
//! machinery ([`crate::bridge`]) they share.
//!
//! Records: `<data>/networks/<name>.json`, one per network, written atomically. A
//! network's bridge and rules exist only while containers are attached to it.
//!
//! Subnets are host-wide while records are per data directory: a network claims its
//! subnet in [`CLAIMS_DIR`] (under /run, gone with a reboot, like the bridges) when it
//! is made and again whenever a container joins it; a claim whose record is gone (its
//! data directory removed) is stale and may be taken.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use cabin_base::files::{create_private_dir, read_bounded, write_atomic};
use cabin_base::lock::{self, Mode};
use cabin_base::Paths;
use serde::{Deserialize, Serialize};

use crate::bridge::{self, Net, BRIDGE_PREFIX, NETWORKS_STATE_DIR};

/// Subnet claims, one file per subnet.
pub const CLAIMS_DIR: &str = "/run/cabin/subnets";
/// Names that mean a network mode, not a network.
const RESERVED: [&str; 6] = ["bridge", "host", "none", "default", "user", "slirp"];
const RECORD_VERSION: u32 = 1;
const MAX_RECORD_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub version: u32,
    pub name: String,
    /// 32 hex digits.
    pub id: String,
    /// The subnet's first address; the /24 is the network's.
    pub subnet: Ipv4Addr,
    pub created_unix: u64,
    #[serde(default)]
    pub labels: Vec<(String, String)>,
}

impl NetworkRecord {
    /// The bridge network on the host that this record describes.
    pub fn net(&self) -> Net {
        Net {
            bridge: format!("{BRIDGE_PREFIX}{}", &self.id[..11]),
            subnet: self.subnet,
            table: format!("cabin_{}", &self.id[..12]),
            state: Path::new(NETWORKS_STATE_DIR).join(&self.id),
        }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.net().gateway()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("network {0} not found (use user, bridge, none, or a network made with `cabin network create`)")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network name {0:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("{0:?} is a network mode, not a network name: choose another name")]
    Reserved(String),
    #[error("{0:?} matches more than one network; give more of the ID or the name")]
    Ambiguous(String),
    #[error("network {name} has containers attached ({containers}): stop or remove them first")]
    InUse { name: String, containers: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error(transparent)]
    Bridge(#[from] bridge::BridgeError),
    #[error("no free subnet left in 10.89.0.0/16 for another network: remove unused networks (cabin network prune)")]
    NoSubnet,
    #[error("network {name}'s subnet {subnet}/24 is held by another network on this host (another data directory's): remove and create the network again")]
    SubnetTaken { name: String, subnet: Ipv4Addr },
    #[error("networks in {}: {source}", dir.display())]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Docker's rule for names, bounded.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name.len() <= 128
}

/// What a subnet claim says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    id: String,
    /// The record of the network that holds it.
    record: PathBuf,
}

/// The user-defined networks of a data directory.
#[derive(Debug, Clone)]
pub struct Networks {
    dir: PathBuf,
    claims: PathBuf,
}

impl Networks {
    pub fn open(paths: &Paths) -> Networks {
        Networks {
            dir: paths.networks(),
            claims: PathBuf::from(CLAIMS_DIR),
        }
    }

    fn io(&self, source: io::Error) -> NetworkError {
        NetworkError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Every network, by name; unreadable records are left out.
    pub fn list(&self) -> Vec<NetworkRecord> {
        let mut out: Vec<NetworkRecord> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| read_bounded(&e.path(), MAX_RECORD_BYTES).ok())
            .filter_map(|b| serde_json::from_slice::<NetworkRecord>(&b).ok())
            .filter(|r| {
                r.version <= RECORD_VERSION
                    && r.id.len() == 32
                    && r.id.bytes().all(|b| b.is_ascii_hexdigit())
                    && valid_name(&r.name)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The network `what` names: a name, an ID or a unique ID prefix.
    pub fn get(&self, what: &str) -> Result<NetworkRecord, NetworkError> {
        let all = self.list();
        if let Some(r) = all.iter().find(|r| r.name == what || r.id == what) {
            return Ok(r.clone());
        }
        let found: Vec<&NetworkRecord> = if what.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|r| r.id.starts_with(what)).collect()
        };
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(NetworkError::NotFound(what.to_string())),
            _ => Err(NetworkError::Ambiguous(what.to_string())),
        }
    }

    /// Makes network `name` with a subnet of its own.
    pub fn create(
        &self,
        name: &str,
        labels: Vec<(String, String)>,
    ) -> Result<NetworkRecord, NetworkError> {
        if RESERVED.contains(&name) {
            return Err(NetworkError::Reserved(name.to_string()));
        }
        if !valid_name(name) {
            return Err(NetworkError::InvalidName(name.to_string()));
        }
        create_private_dir(&self.dir).map_err(|e| self.io(e))?;
        let _turn = lock::lock_path_waiting(&self.dir.join(".lock"), Mode::Exclusive)
            .map_err(|e| self.io(e))?;
        if self.path(name).exists() {
            return Err(NetworkError::Exists(name.to_string()));
        }
        let id = cabin_base::random::id().map_err(|e| self.io(e))?;
        let mine: Vec<Ipv4Addr> = self.list().iter().map(|r| r.subnet).collect();
        let record_path = self.path(name);
        let subnet = self.claim_free(&id, &record_path, &mine)?;
        let record = NetworkRecord {
            version: RECORD_VERSION,
            name: name.to_string(),
            id,
            subnet,
            created_unix: cabin_base::time::now_unix(),
            labels,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| self.io(e.into()))?;
        if let Err(e) = write_atomic(&record_path, &bytes, 0o600) {
            let _ = fs::remove_file(self.claim_path(subnet));
            return Err(self.io(e));
        }
        Ok(record)
    }

    /// Removes network `what`, which must have no containers attached.
    pub fn remove(&self, what: &str) -> Result<NetworkRecord, NetworkError> {
        let r = self.get(what)?;
        let attached = bridge::retire(&r.net())?;
        if !attached.is_empty() {
            let names: Vec<String> = attached
                .iter()
                .map(|e| {
                    e.names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| e.container_id.clone())
                })
                .collect();
            return Err(NetworkError::InUse {
                name: r.name,
                containers: names.join(", "),
            });
        }
        fs::remove_file(self.path(&r.name)).map_err(|e| self.io(e))?;
        let _turn = self.claims_lock()?;
        if self.read_claim(r.subnet).is_some_and(|c| c.id == r.id) {
            let _ = fs::remove_file(self.claim_path(r.subnet));
        }
        Ok(r)
    }

    /// Makes sure `r`'s subnet is still its own on this host (after a reboot the claims
    /// are gone); called before a container joins it.
    pub fn claim(&self, r: &NetworkRecord) -> Result<(), NetworkError> {
        let _turn = self.claims_lock()?;
        match self.read_claim(r.subnet) {
            Some(c) if c.id == r.id => Ok(()),
            Some(c) if c.record.exists() => Err(NetworkError::SubnetTaken {
                name: r.name.clone(),
                subnet: r.subnet,
            }),
            _ => self.write_claim(r.subnet, &r.id, &self.path(&r.name)),
        }
    }

    fn claims_lock(&self) -> Result<lock::Lock, NetworkError> {
        create_private_dir(&self.claims).map_err(|e| self.io(e))?;
        lock::lock_path_waiting(&self.claims.join(".lock"), Mode::Exclusive).map_err(|e| self.io(e))
    }

    fn claim_path(&self, subnet: Ipv4Addr) -> PathBuf {
        self.claims.join(subnet.to_string())
    }

    fn read_claim(&self, subnet: Ipv4Addr) -> Option<Claim> {
        let b = read_bounded(&self.claim_path(subnet), MAX_RECORD_BYTES).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn write_claim(&self, subnet: Ipv4Addr, id: &str, record: &Path) -> Result<(), NetworkError> {
        let c = Claim {
            id: id.to_string(),
            record: record.to_path_buf(),
        };
        let bytes = serde_json::to_vec(&c).map_err(|e| self.io(e.into()))?;
        write_atomic(&self.claim_path(subnet), &bytes, 0o600).map_err(|e| self.io(e))
    }

    /// Claims the first subnet that no live claim, no record of this data directory
    /// (`mine`) and no address of the host's uses.
    fn claim_free(
        &self,
        id: &str,
        record: &Path,
        mine: &[Ipv4Addr],
    ) -> Result<Ipv4Addr, NetworkError> {
        let _turn = self.claims_lock()?;
        let host = host_addresses();
        for n in 1..=254u8 {
            let subnet = Ipv4Addr::new(10, 89, n, 0);
            let taken = mine.contains(&subnet)
                || host.iter().any(|a| a.octets()[..3] == subnet.octets()[..3])
                || self.read_claim(subnet).is_some_and(|c| c.record.exists());
            if !taken {
                self.write_claim(subnet, id, record)?;
                return Ok(subnet);
            }
        }
        Err(NetworkError::NoSubnet)
    }
}

/// The IPv4 addresses of the host's interfaces (a subnet someone already routes is
/// not free).
fn host_addresses() -> Vec<Ipv4Addr> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn networks(t: &tempfile::TempDir) -> Networks {
        Networks {
            dir: t.path().join("networks"),
            claims: t.path().join("claims"),
        }
    }

    #[test]
    fn networks_get_unique_names_and_subnets_and_go_away() {
        let t = tempfile::tempdir().unwrap();
        let n = networks(&t);
        let a = n.create("front", vec![("k".into(), "v".into())]).unwrap();
        let b = n.create("back", vec![]).unwrap();
        assert_ne!(a.subnet, b.subnet);
        assert_eq!(a.subnet.octets()[..2], [10, 89]);
        assert!(matches!(
            n.create("front", vec![]),
            Err(NetworkError::Exists(_))
        ));
        assert!(matches!(
            n.create("bridge", vec![]),
            Err(NetworkError::Reserved(_))
        ));
        assert!(matches!(
            n.create("a/b", vec![]),
            Err(NetworkError::InvalidName(_))
        ));
        assert_eq!(n.get("front").unwrap(), a);
        assert_eq!(n.get(&a.id[..6]).unwrap(), a);
        assert!(matches!(n.get("nope"), Err(NetworkError::NotFound(_))));
        assert_eq!(n.list(), [b.clone(), a.clone()]);
        let net = a.net();
        assert!(net.bridge.starts_with(BRIDGE_PREFIX) && net.bridge.len() <= 15);
        assert_eq!(a.gateway(), Ipv4Addr::new(10, 89, a.subnet.octets()[2], 1));
        n.remove("front").unwrap();
        assert!(n.get("front").is_err());
        // Its subnet is free again.
        let c = n.create("again", vec![]).unwrap();
        assert_eq!(c.subnet, a.subnet);
    }

    #[test]
    fn a_subnet_held_by_another_data_directory_is_not_taken_but_a_stale_claim_is() {
        let t = tempfile::tempdir().unwrap();
        let one = networks(&t);
        let other = Networks {
            dir: t.path().join("other"),
            claims: t.path().join("claims"),
        };
        let a = one.create("a", vec![]).unwrap();
        let b = other.create("b", vec![]).unwrap();
        assert_ne!(
            a.subnet, b.subnet,
            "claims are shared between data directories"
        );
        // After a "reboot" (claims gone), the other takes a's subnet first: a's next
        // container is refused with what to do.
        fs::remove_dir_all(t.path().join("claims")).unwrap();
        let stolen = NetworkRecord {
            subnet: a.subnet,
            ..b.clone()
        };
        other.claim(&stolen).unwrap();
        assert!(matches!(
            one.claim(&a),
            Err(NetworkError::SubnetTaken { .. })
        ));
        // A claim whose record is gone is stale.
        fs::remove_dir_all(t.path().join("other")).unwrap();
        one.claim(&a).unwrap();
    }
}
