//! Lumier's environment, read once at start, with Lumier's defaults and cabin's checks:
//! a bad value stops the container with what to set, before anything is made.

use std::net::{IpAddr, SocketAddr};

/// Why the container cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("VERSION {0:?} is not a VM image: give REGISTRY/ORGANIZATION/IMAGE:TAG, e.g. ghcr.io/me/debian:12")]
    Version(String),
    #[error("{name}={value:?} is not {what}")]
    Number {
        name: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("DISPLAY={0:?} is not WIDTHxHEIGHT, e.g. 1024x768")]
    Display(String),
    #[error("cannot find the address of {0}: give LUME_API_HOST an address, or map the name in /etc/hosts (docker run --add-host=host.docker.internal:host-gateway)")]
    Host(String),
}

/// A VM image in Lume's format, as `VERSION` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub registry: String,
    pub organization: String,
    /// `NAME:TAG`.
    pub image: String,
}

impl Image {
    /// Lumier's rule: the registry is the first path segment, the organization the
    /// second, the image the last; cabin also asks for a tag and no empty segment.
    pub fn parse(version: &str) -> Result<Image, ConfigError> {
        let bad = || ConfigError::Version(version.to_string());
        let parts: Vec<&str> = version.split('/').collect();
        if parts.len() < 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(bad());
        }
        let image = *parts.last().unwrap();
        match image.split_once(':') {
            Some((name, tag)) if !name.is_empty() && !tag.is_empty() => {}
            _ => return Err(bad()),
        }
        Ok(Image {
            registry: parts[0].to_string(),
            organization: parts[1].to_string(),
            image: image.to_string(),
        })
    }
}

#[derive(Clone)]
pub struct Config {
    pub vm_name: String,
    /// None: the VM must already be in its storage.
    pub version: Option<Image>,
    pub cpu: u32,
    pub memory_mb: u64,
    pub display: String,
    /// Lume's storage: a host path, or `ephemeral` (the VM is deleted when the
    /// container stops).
    pub storage: String,
    pub shared_path: Option<String>,
    pub api: SocketAddr,
    /// The `Host` header the API is asked with.
    pub api_host: String,
    /// cabin serve's console token: the screen then comes through its websocket.
    pub token: Option<String>,
    pub debug: bool,
}

/// What LUMIER_DEBUG prints: everything but the token.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("vm_name", &self.vm_name)
            .field("version", &self.version)
            .field("cpu", &self.cpu)
            .field("memory_mb", &self.memory_mb)
            .field("display", &self.display)
            .field("storage", &self.storage)
            .field("shared_path", &self.shared_path)
            .field("api", &self.api)
            .field("api_host", &self.api_host)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("debug", &self.debug)
            .finish()
    }
}

pub const EPHEMERAL: &str = "ephemeral";

impl Config {
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let number = |name: &'static str, default: u64, what: &'static str| match get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ConfigError::Number {
                    name,
                    value: v,
                    what,
                }),
        };
        let display = get("DISPLAY").unwrap_or_else(|| "1024x768".into());
        let ok_display = display
            .split_once('x')
            .is_some_and(|(w, h)| w.parse::<u32>().is_ok() && h.parse::<u32>().is_ok());
        if !ok_display {
            return Err(ConfigError::Display(display));
        }
        let api_name = get("LUME_API_HOST").unwrap_or_else(|| "host.docker.internal".into());
        let port = number("LUME_API_PORT", 7777, "a port number")?;
        let port = u16::try_from(port).map_err(|_| ConfigError::Number {
            name: "LUME_API_PORT",
            value: port.to_string(),
            what: "a port number",
        })?;
        let ip = resolve(&api_name).ok_or_else(|| ConfigError::Host(api_name.clone()))?;
        let vm_name = get("VM_NAME")
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "lumier".into());
        Ok(Config {
            vm_name,
            version: get("VERSION").map(|v| Image::parse(v.trim())).transpose()?,
            cpu: number("CPU_CORES", 4, "a number of CPUs")? as u32,
            memory_mb: number("RAM_SIZE", 8192, "a size in MB")?,
            display,
            storage: get("HOST_STORAGE_PATH").unwrap_or_else(|| EPHEMERAL.into()),
            shared_path: get("HOST_SHARED_PATH"),
            api: SocketAddr::new(ip, port),
            api_host: if api_name.contains(':') && api_name.parse::<IpAddr>().is_ok() {
                format!("[{api_name}]:{port}")
            } else {
                format!("{api_name}:{port}")
            },
            token: get("CABIN_TOKEN"),
            debug: get("LUMIER_DEBUG").is_some_and(|v| v != "0"),
        })
    }
}

/// An address, or a name from /etc/hosts (where Docker's `--add-host` and cabin put
/// host.docker.internal). The image has no resolver library: names of the wider
/// network are not looked up.
pub fn resolve(name: &str) -> Option<IpAddr> {
    if let Ok(ip) = name.parse() {
        return Some(ip);
    }
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    hosts_lookup(&hosts, name)
}

fn hosts_lookup(hosts: &str, name: &str) -> Option<IpAddr> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_registry_organization_and_image_with_a_tag() {
        assert_eq!(
            Image::parse("127.0.0.1:5000/me/debian:12").unwrap(),
            Image {
                registry: "127.0.0.1:5000".into(),
                organization: "me".into(),
                image: "debian:12".into()
            }
        );
        assert_eq!(
            Image::parse("ghcr.io/trycua/sub/macos:latest")
                .unwrap()
                .image,
            "macos:latest"
        );
        for bad in [
            "debian:12",
            "ghcr.io/debian:12",
            "ghcr.io/me/debian",
            "a//b:1",
            "r/o/i:",
            "r/o /i:1",
        ] {
            let e = Image::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains("REGISTRY/ORGANIZATION/IMAGE:TAG"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn lumiers_defaults_and_clear_errors() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::from(env(&[("LUME_API_HOST", "10.0.2.2"), ("VM_NAME", "dev")])).unwrap();
        assert_eq!(c.vm_name, "dev");
        assert_eq!(
            (c.cpu, c.memory_mb, c.display.as_str()),
            (4, 8192, "1024x768")
        );
        assert_eq!(c.storage, EPHEMERAL);
        assert_eq!(c.api.to_string(), "10.0.2.2:7777");
        assert_eq!(c.api_host, "10.0.2.2:7777");
        assert!(c.version.is_none());
        let with_token = Config::from(env(&[
            ("LUME_API_HOST", "10.0.2.2"),
            ("CABIN_TOKEN", "s3cr3t-token"),
        ]))
        .unwrap();
        assert!(
            !format!("{with_token:?}").contains("s3cr3t"),
            "the token is never printed"
        );
        let e =
            Config::from(env(&[("LUME_API_HOST", "10.0.2.2"), ("RAM_SIZE", "lots")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("RAM_SIZE=\"lots\" is not a size in MB"),
            "{e}"
        );
        let e =
            Config::from(env(&[("LUME_API_HOST", "10.0.2.2"), ("DISPLAY", "big")])).unwrap_err();
        assert!(e.to_string().contains("WIDTHxHEIGHT"), "{e}");
        let e = Config::from(env(&[("LUME_API_HOST", "no-such-name.invalid")])).unwrap_err();
        assert!(e.to_string().contains("--add-host"), "{e}");
    }

    #[test]
    fn names_come_from_the_hosts_file() {
        let hosts = "127.0.0.1\tlocalhost\n# comment host.docker.internal\n10.0.2.2\thost.docker.internal host.containers.internal\n";
        assert_eq!(
            hosts_lookup(hosts, "host.docker.internal"),
            Some("10.0.2.2".parse().unwrap())
        );
        assert_eq!(hosts_lookup(hosts, "other"), None);
    }
}
