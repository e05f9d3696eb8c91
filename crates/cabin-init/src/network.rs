//! The guest's network: its one card's address and default route, set with the
//! classic interface ioctls (a handful of calls; no netlink library in PID 1), and the
//! files that tell a container who it is and where to resolve names.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use cabin_base::sync::Locked;

use cabin_proto::v1::{HostEntry, NetworkConfig};

fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor it returns is ours.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= r.ifr_name.len() {
        return Err(io::Error::other(format!(
            "interface name {name:?} is too long"
        )));
    }
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
) -> io::Result<()> {
    // SAFETY: an interface ioctl on our socket with an ifreq it may read and write.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) } < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the ioctls take it.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Brings an interface up.
fn up(sock: &OwnedFd, name: &str) -> io::Result<()> {
    let mut r = ifreq(name)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut r, "read the interface flags")?;
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled.
    unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(
        sock,
        libc::SIOCSIFFLAGS,
        &mut r,
        &format!("bring {name} up"),
    )
}

/// The loopback interface, up: every network namespace starts with it down.
pub fn loopback_up() -> io::Result<()> {
    up(&socket()?, "lo")
}

/// The VM's network card as found when init started (None: it has none).
static CARD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Looks the VM's card up once, at init's start: its devices are fixed for its life, and
/// a VM resumed from a boot snapshot has those of the VM the snapshot was taken of (so
/// it needs no cold trip through sysfs, about 10 ms under TCG).
pub fn scan() -> io::Result<()> {
    let _ = CARD.set(look_up_card()?);
    Ok(())
}

/// The VM's network card: the first interface that is not the loopback.
fn card() -> io::Result<String> {
    if let Some(Some(name)) = CARD.get() {
        return Ok(name.clone());
    }
    // Not found at start (init not started as the VM's init, a card that came late).
    look_up_card()?.ok_or_else(|| io::Error::other("the VM has no network card"))
}

fn look_up_card() -> io::Result<Option<String>> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    Ok(names.into_iter().next())
}

fn parse_mac(s: &str) -> io::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(io::Error::other(format!("invalid MAC address {s:?}")));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| io::Error::other(format!("invalid MAC address {s:?}")))?;
    }
    Ok(mac)
}

fn parse_cidr(s: &str) -> io::Result<(Ipv4Addr, u8)> {
    let bad = || io::Error::other(format!("invalid interface address {s:?}"));
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 {
        return Err(bad());
    }
    Ok((ip, prefix))
}

/// The address, prefix length and gateway the card was last given: a container asking
/// for the same again only gets its MAC address set.
static GIVEN: Mutex<Option<(Ipv4Addr, u8, Option<Ipv4Addr>)>> = Mutex::new(None);

/// Configures the card as the kernel command line's `cabin.net=ADDRESS/PREFIX,GATEWAY`
/// says (a VM on QEMU's user-mode network), if it says so. Done as init starts, before a
/// boot snapshot is taken, so that VMs resumed from it have the card up already.
pub fn configure_at_boot(cmdline: &str) -> io::Result<()> {
    let key = format!("{}=", cabin_proto::BOOT_NETWORK_ARG);
    let Some(value) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
    else {
        return Ok(());
    };
    let (address, gateway) = value
        .split_once(',')
        .ok_or_else(|| io::Error::other(format!("invalid {key}{value:?}")))?;
    // QEMU's user-mode network is IPv4 only (cabin starts it with ipv6=off). Without
    // IPv6 on the card, bringing it up starts no address autoconfiguration, whose timers
    // (duplicate address detection, router solicitation) would otherwise still be
    // pending in a boot snapshot and fire in every VM resumed from it.
    let name = card()?;
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1")?;
    configure(&NetworkConfig {
        mac: String::new(),
        address: address.into(),
        gateway: gateway.into(),
        dns: Vec::new(),
    })
}

/// Whether the card is up with the address `ip`.
fn is_up_with(sock: &OwnedFd, name: &str, ip: Ipv4Addr) -> io::Result<bool> {
    let mut r = ifreq(name)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut r, "read the interface flags")?;
    // SAFETY: the flags member is the one SIOCGIFFLAGS filled.
    if unsafe { r.ifr_ifru.ifru_flags } & libc::IFF_UP as libc::c_short == 0 {
        return Ok(false);
    }
    let mut r = ifreq(name)?;
    ioctl(sock, libc::SIOCGIFADDR, &mut r, "read the address")?;
    // SAFETY: SIOCGIFADDR filled the address member with an AF_INET sockaddr, which
    // has the size of sockaddr.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute(r.ifr_ifru.ifru_addr) };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == ip)
}

/// Gives the card its MAC address, its address and the default route. Only the MAC
/// address when the card has the address and gateway asked for already (given as init
/// started, or to the container before).
pub fn configure(cfg: &NetworkConfig) -> io::Result<()> {
    let sock = socket()?;
    let name = card()?;
    if !cfg.mac.is_empty() {
        let mac = parse_mac(&cfg.mac)?;
        let mut r = ifreq(&name)?;
        // SAFETY: writing the hardware-address member of the union, as SIOCSIFHWADDR reads.
        unsafe {
            r.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
            for (d, s) in r.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
                *d = s as libc::c_char;
            }
        }
        ioctl(&sock, libc::SIOCSIFHWADDR, &mut r, "set the MAC address")?;
    }
    let (ip, prefix) = parse_cidr(&cfg.address)?;
    let gateway = match cfg.gateway.as_str() {
        "" => None,
        g => Some(
            g.parse::<Ipv4Addr>()
                .map_err(|_| io::Error::other(format!("invalid gateway {g:?}")))?,
        ),
    };
    let wanted = Some((ip, prefix, gateway));
    if *GIVEN.locked() == wanted && is_up_with(&sock, &name, ip)? {
        return Ok(());
    }
    let mut r = ifreq(&name)?;
    r.ifr_ifru.ifru_addr = sockaddr_in(ip);
    ioctl(&sock, libc::SIOCSIFADDR, &mut r, "set the address")?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let mut r = ifreq(&name)?;
    r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut r, "set the netmask")?;
    up(&sock, &name)?;
    if let Some(gw) = gateway {
        // SAFETY: rtentry is plain old data; all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads the rtentry we pass.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &rt) } < 0 {
            let e = io::Error::last_os_error();
            // A VM resumed twice from one state cannot have the route already, but a
            // retried call may.
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("add the default route: {e}"),
                ));
            }
        }
    }
    *GIVEN.locked() = wanted;
    Ok(())
}

/// /etc/hosts for a container: the loopback names, its own name, its peers.
pub fn hosts_file(hostname: &str, own_ip: Option<&str>, peers: &[HostEntry]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match own_ip {
        Some(ip) => s.push_str(&format!("{ip}\t{hostname}\n")),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    for p in peers {
        let names: Vec<&str> = p
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| valid_host_name(n))
            .collect();
        if p.ip.parse::<Ipv4Addr>().is_ok() && !names.is_empty() {
            s.push_str(&format!("{}\t{}\n", p.ip, names.join(" ")));
        }
    }
    s
}

/// Names that cannot break the hosts file's format.
fn valid_host_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

pub fn resolv_conf(dns: &[String]) -> String {
    dns.iter()
        .filter(|d| d.parse::<std::net::IpAddr>().is_ok())
        .map(|d| format!("nameserver {d}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_mac("52:54:00:ca:b1:0f").unwrap(),
            [0x52, 0x54, 0, 0xca, 0xb1, 0x0f]
        );
        assert!(parse_mac("52:54:00").is_err());
        assert_eq!(
            parse_cidr("10.0.2.15/24").unwrap(),
            (Ipv4Addr::new(10, 0, 2, 15), 24)
        );
        assert!(parse_cidr("10.0.2.15").is_err());
        assert!(parse_cidr("10.0.2.15/33").is_err());
    }

    #[test]
    fn hosts_file_skips_names_that_would_break_it() {
        let peers = vec![
            HostEntry {
                ip: "10.89.0.3".into(),
                names: vec!["web".into(), "bad name\n1.2.3.4 evil".into()],
            },
            HostEntry {
                ip: "not-an-ip".into(),
                names: vec!["x".into()],
            },
        ];
        let h = hosts_file("db", Some("10.89.0.2"), &peers);
        assert!(h.contains("10.89.0.2\tdb\n"));
        assert!(h.contains("10.89.0.3\tweb\n"));
        assert!(!h.contains("evil"));
        assert!(!h.contains("not-an-ip"));
        assert_eq!(
            resolv_conf(&["10.0.2.3".into(), "x; rm".into()]),
            "nameserver 10.0.2.3\n"
        );
    }
}
