//! Published ports (`-p`): docker's syntax, free host ports chosen for `-p PORT`, and
//! the host addresses held while a container lives, so that a port already taken is
//! refused with a clear message before any VM starts.

use std::io;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use cabin_vmm::{PortForward, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid port mapping {spec:?}: {why}; use [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp|/udp], e.g. 8080:80")]
    Invalid { spec: String, why: String },
    #[error("finding a free port on {ip} for {guest_port}: {source}")]
    NoFreePort {
        ip: Ipv4Addr,
        guest_port: u16,
        source: io::Error,
    },
    #[error("port {port}/{protocol} is published twice")]
    Twice { port: u16, protocol: &'static str },
    #[error("cannot publish {}: port {} of {} is already in use on the host; choose another host port (-p OTHER:{})", describe(.0), .0.host_port, .0.host_ip, .0.guest_port)]
    InUse(PortForward),
    #[error("cannot publish {}: {source}", describe(forward))]
    Bind {
        forward: PortForward,
        source: io::Error,
    },
}

/// Parses docker's `-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]` (and `CTRPORT` alone:
/// host port 0, any free one, see [`choose_free_ports`]).
pub fn parse_publish(spec: &str) -> Result<PortForward, PublishError> {
    let bad = |why: &str| PublishError::Invalid {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
        None => (spec, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, guest) = match parts.as_slice() {
        // As docker: the host port is any free one, chosen at start.
        [guest] => (None, "", *guest),
        [host, guest] => (None, *host, *guest),
        [ip, host, guest] => (Some(*ip), *host, *guest),
        _ => return Err(bad("too many ':'")),
    };
    let port = |s: &str, which: &str| -> Result<u16, PublishError> {
        if s.is_empty() && which == "host" {
            return Ok(0);
        }
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(bad(&format!(
                "{which} port {s:?} is not a number from 1 to 65535"
            ))),
        }
    };
    let host_ip = match ip {
        None | Some("") => Ipv4Addr::LOCALHOST,
        Some(ip) => ip
            .parse()
            .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?,
    };
    Ok(PortForward {
        protocol,
        host_ip,
        host_port: port(host, "host")?,
        guest_port: port(guest, "container")?,
    })
}

/// Gives every published port without a host port (`-p 80`) a free one of the host's.
pub fn choose_free_ports(forwards: &mut [PortForward]) -> Result<(), PublishError> {
    for f in forwards.iter_mut().filter(|f| f.host_port == 0) {
        let addr = (f.host_ip, 0);
        let port = match f.protocol {
            Protocol::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
            Protocol::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
        }
        .map_err(|source| PublishError::NoFreePort {
            ip: f.host_ip,
            guest_port: f.guest_port,
            source,
        })?
        .port();
        f.host_port = port;
    }
    Ok(())
}

/// Docker's way of writing a published port: `127.0.0.1:8080->80/tcp`.
pub fn describe(f: &PortForward) -> String {
    format!(
        "{}:{}->{}/{}",
        f.host_ip,
        f.host_port,
        f.guest_port,
        f.protocol.as_str()
    )
}

/// Holds each published port's host address while the container lives: nothing else
/// can take it, and a port that is already taken is refused with a clear message
/// before any VM starts.
pub struct PortReservations(#[allow(dead_code)] Vec<OwnedFd>);

/// Binds every published port (user-mode forwards bind their own sockets in QEMU, so
/// for those this is only the check; bridge mode keeps the reservations).
pub fn reserve_ports(forwards: &[PortForward]) -> Result<PortReservations, PublishError> {
    let mut held = Vec::new();
    for (i, f) in forwards.iter().enumerate() {
        if forwards[..i]
            .iter()
            .any(|g| g.host_port == f.host_port && g.protocol == f.protocol)
        {
            return Err(PublishError::Twice {
                port: f.host_port,
                protocol: f.protocol.as_str(),
            });
        }
        let addr = (f.host_ip, f.host_port);
        let fd: Result<OwnedFd, io::Error> = match f.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(OwnedFd::from),
            Protocol::Udp => UdpSocket::bind(addr).map(OwnedFd::from),
        };
        match fd {
            Ok(fd) => held.push(fd),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(PublishError::InUse(*f)),
            Err(source) => {
                return Err(PublishError::Bind {
                    forward: *f,
                    source,
                })
            }
        }
    }
    Ok(PortReservations(held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse_like_docker() {
        let f = parse_publish("8080:80").unwrap();
        assert_eq!(
            (f.host_ip, f.host_port, f.guest_port, f.protocol),
            (Ipv4Addr::LOCALHOST, 8080, 80, Protocol::Tcp)
        );
        let f = parse_publish("0.0.0.0:5353:53/udp").unwrap();
        assert_eq!(
            (f.host_ip, f.host_port, f.guest_port, f.protocol),
            (Ipv4Addr::UNSPECIFIED, 5353, 53, Protocol::Udp)
        );
        let any = parse_publish("9000").unwrap();
        assert_eq!((any.host_port, any.guest_port), (0, 9000));
        let mut forwards = [any];
        choose_free_ports(&mut forwards).unwrap();
        assert_ne!(forwards[0].host_port, 0);
        assert_eq!(
            describe(&parse_publish("8080:80").unwrap()),
            "127.0.0.1:8080->80/tcp"
        );
        for bad in [
            "",
            "x:80",
            "8080:0",
            "8080:80/sctp",
            "1:2:3:4",
            "::1:80:80",
            "70000:80",
        ] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(e.contains("invalid port mapping"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_port_in_use_is_refused_with_its_number() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = reserve_ports(&[parse_publish(&format!("{port}:80")).unwrap()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&format!("port {port} of 127.0.0.1 is already in use")),
            "{e}"
        );
        let twice = [
            parse_publish("1234:80").unwrap(),
            parse_publish("1234:81").unwrap(),
        ];
        assert!(reserve_ports(&twice)
            .err()
            .unwrap()
            .to_string()
            .contains("published twice"));
    }
}
