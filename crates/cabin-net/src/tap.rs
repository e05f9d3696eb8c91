//! Tap devices: a VM's network card on the host side, for the bridge.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Opens a tap device (the kernel names it from `pattern`, e.g. "cabin%d"); it goes away
/// when its last descriptor closes, so a dead VM leaves no device behind.
pub fn open_tap(pattern: &str) -> io::Result<(OwnedFd, String)> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    // SAFETY: open(2) of a fixed path; the descriptor is ours.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("opening /dev/net/tun: {e}"),
        ));
    }
    // SAFETY: just opened.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(pattern.bytes()) {
        *d = s as libc::c_char;
    }
    // QEMU's tap backend expects virtio-net headers on the device when it can use them.
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    // SAFETY: TUNSETIFF reads and fills the ifreq.
    if unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            TUNSETIFF as _,
            &mut req,
        )
    } < 0
    {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("creating a tap device: {e}"),
        ));
    }
    let name: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let name = String::from_utf8_lossy(&name).into_owned();
    without_ipv6(&name);
    Ok((fd, name))
}

/// Turns IPv6 off on one of cabin's own interfaces while it is still down. cabin's
/// networks are IPv4: a tap is a bridge port and needs no address, and without this
/// each VM start and stop adds and removes a link-local address on the host, which
/// programs watching the host's addresses (browsers drop their connections with
/// ERR_NETWORK_CHANGED) take for a network change. Best effort: a host without IPv6
/// has no such setting.
pub fn without_ipv6(interface: &str) {
    if interface.is_empty() || interface.contains(['/', '.']) {
        return;
    }
    let setting = std::path::Path::new("/proc/sys/net/ipv6/conf")
        .join(interface)
        .join("disable_ipv6");
    let _ = std::fs::write(setting, "1");
}

/// A tap device attached to nothing, for building the boot snapshot of bridged VMs.
pub fn detached_tap() -> io::Result<OwnedFd> {
    open_tap("cabinsnap%d").map(|(fd, _)| fd)
}
