//! A DHCP server for one VM on its own tap device: it answers only that VM's card
//! (its MAC address) and offers only the address cabin chose for it. Guests installed
//! from an ISO configure their network with DHCP, as on any LAN; this is how cabin
//! hands them their address on its bridge and learns when they have taken it, with no
//! daemon and no shared lease file (every VM's runner answers on its own tap, so
//! runners never compete for port 67).
//!
//! The frames come from the guest, so they are hostile input: every length is checked
//! against the frame, options are walked with bounds, anything unexpected is dropped.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the server hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub client_mac: [u8; 6],
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: String,
    /// The server's own hardware address (the bridge's): the source of its replies.
    pub server_mac: [u8; 6],
}

const LEASE_SECONDS: u32 = 24 * 3600;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;

/// A DHCP message parsed from a frame.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    kind: u8,
    xid: [u8; 4],
    flags: [u8; 2],
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    chaddr: [u8; 6],
    requested: Option<Ipv4Addr>,
}

/// Parses an Ethernet frame holding a DHCP request (IPv4, UDP to port 67).
fn parse(frame: &[u8]) -> Option<Message> {
    parse_message(frame, 67, 1)
}

/// Parses an Ethernet frame holding a DHCP reply (IPv4, UDP to port 68).
fn parse_reply(frame: &[u8]) -> Option<Message> {
    parse_message(frame, 68, 2)
}

/// A BOOTP message of operation `op` sent to UDP port `port`.
fn parse_message(frame: &[u8], port: u16, op: u8) -> Option<Message> {
    // Ethernet II, no VLAN tag.
    if frame.len() < 14 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl + 8 || total > ip.len() {
        return None;
    }
    let udp = &ip[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != port {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen < 8 || ulen > udp.len() {
        return None;
    }
    let b = &udp[8..ulen];
    // op, htype (Ethernet), hlen, ..., the magic cookie at 236.
    if b.len() < 240 || b[0] != op || b[1] != 1 || b[2] != 6 || b[236..240] != MAGIC {
        return None;
    }
    let mut kind = None;
    let mut requested = None;
    let mut i = 240;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*b.get(i + 1)?);
                let value = b.get(i + 2..i + 2 + len)?;
                match (code, len) {
                    (53, 1) => kind = Some(value[0]),
                    (50, 4) => {
                        requested = Some(Ipv4Addr::new(value[0], value[1], value[2], value[3]))
                    }
                    _ => {}
                }
                i += 2 + len;
            }
        }
    }
    Some(Message {
        kind: kind?,
        xid: b[4..8].try_into().ok()?,
        flags: b[10..12].try_into().ok()?,
        ciaddr: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        yiaddr: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        chaddr: b[28..34].try_into().ok()?,
        requested,
    })
}

/// The reply to `req`, as an Ethernet frame; None for requests this server ignores.
fn reply(req: &Message, lease: &Lease) -> Option<(u8, Vec<u8>)> {
    if req.chaddr != lease.client_mac {
        return None;
    }
    let kind = match req.kind {
        DISCOVER => OFFER,
        REQUEST => {
            let asked = req
                .requested
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
            if asked.is_none_or(|a| a == lease.address) {
                ACK
            } else {
                NAK
            }
        }
        _ => return None,
    };
    let mut b = vec![0u8; 240];
    b[0] = 2; // BOOTREPLY
    b[1] = 1;
    b[2] = 6;
    b[4..8].copy_from_slice(&req.xid);
    b[10..12].copy_from_slice(&req.flags);
    if kind != NAK {
        b[16..20].copy_from_slice(&lease.address.octets());
    }
    b[20..24].copy_from_slice(&lease.gateway.octets()); // siaddr: this server
    b[28..34].copy_from_slice(&req.chaddr);
    b[236..240].copy_from_slice(&MAGIC);
    let mut opt = |code: u8, value: &[u8]| {
        b.push(code);
        b.push(value.len() as u8);
        b.extend_from_slice(value);
    };
    opt(53, &[kind]);
    opt(54, &lease.gateway.octets());
    if kind != NAK {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(lease.prefix))
            .unwrap_or(0);
        opt(51, &LEASE_SECONDS.to_be_bytes());
        opt(1, &mask.to_be_bytes());
        opt(3, &lease.gateway.octets());
        let dns: Vec<u8> = lease.dns.iter().take(4).flat_map(|d| d.octets()).collect();
        if !dns.is_empty() {
            opt(6, &dns);
        }
        let name = &lease.hostname.as_bytes()[..lease.hostname.len().min(63)];
        if !name.is_empty() {
            opt(12, name);
        }
    }
    b.push(255);
    // A client without an address yet may not take unicast: broadcast when it asks
    // (flags) or on NAK, else send to the address offered.
    let broadcast = req.flags[0] & 0x80 != 0 || kind == NAK;
    let (dst_mac, dst_ip) = if broadcast {
        ([0xff; 6], Ipv4Addr::BROADCAST)
    } else {
        (req.chaddr, lease.address)
    };
    Some((kind, frame(lease, dst_mac, dst_ip, &b)))
}

/// The address a DHCP server acknowledges to `client_mac` in `frame`, if it does.
fn acknowledged(frame: &[u8], client_mac: &[u8; 6]) -> Option<Ipv4Addr> {
    let m = parse_reply(frame)?;
    (m.kind == ACK && &m.chaddr == client_mac && !m.yiaddr.is_unspecified()).then_some(m.yiaddr)
}

fn frame(lease: &Lease, dst_mac: [u8; 6], dst_ip: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&lease.server_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&lease.gateway.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&67u16.to_be_bytes());
    f.extend_from_slice(&68u16.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
    f.extend_from_slice(payload);
    f
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

/// What a [`Server`] does on its interface.
pub enum Role {
    /// Answer the VM's DHCP with this lease (cabin's bridge).
    Serve(Lease),
    /// Only watch the VM's DHCP with another server (a host bridge's LAN), to learn
    /// the address it is given.
    Watch { client_mac: [u8; 6] },
}

/// Answers (or watches) DHCP on the interface `ifname` until dropped. `on_ack` is
/// called each time the guest is acknowledged an address.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(
        ifname: &str,
        role: Role,
        on_ack: impl Fn(Ipv4Addr) + Send + 'static,
    ) -> io::Result<Server> {
        let sock = packet_socket(ifname)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !flag.load(Ordering::Relaxed) {
                    // SAFETY: reading into our buffer from our socket.
                    let n = unsafe {
                        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n <= 0 {
                        continue; // the receive timeout: look at the stop flag
                    }
                    let frame = &buf[..n as usize];
                    match &role {
                        Role::Serve(lease) => {
                            let Some(req) = parse(frame) else { continue };
                            if let Some((kind, out)) = reply(&req, lease) {
                                // SAFETY: sending our buffer on our bound socket.
                                unsafe {
                                    libc::send(sock.as_raw_fd(), out.as_ptr().cast(), out.len(), 0)
                                };
                                if kind == ACK {
                                    on_ack(lease.address);
                                }
                            }
                        }
                        Role::Watch { client_mac } => {
                            if let Some(ip) = acknowledged(frame, client_mac) {
                                on_ack(ip);
                            }
                        }
                    }
                }
            })?;
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An AF_PACKET socket on `ifname` seeing every frame, with a short receive timeout.
/// Every frame, not just IPv4: the tap is a bridge port, and the bridge takes a
/// port's frames before protocol-specific sockets would see them (ETH_P_ALL sockets
/// see them first).
fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the new descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed sockaddr_ll, then the fields bind uses.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: binding our socket to a valid sockaddr_ll.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let timeout = Duration::from_millis(200);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: timeout.as_micros() as libc::suseconds_t,
    };
    // SAFETY: setting a timeval option on our socket.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            client_mac: [0x52, 0x54, 0, 1, 2, 3],
            address: "10.89.0.9".parse().unwrap(),
            prefix: 24,
            gateway: "10.89.0.1".parse().unwrap(),
            dns: vec!["192.0.2.53".parse().unwrap()],
            hostname: "web".into(),
            server_mac: [0x02, 0, 0, 0, 0, 1],
        }
    }

    /// A client's frame: DHCP `kind` from `mac`, options appended raw.
    fn request(mac: [u8; 6], kind: u8, extra: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[4..8].copy_from_slice(&[1, 2, 3, 4]);
        b[10] = 0x80;
        b[28..34].copy_from_slice(&mac);
        b[236..240].copy_from_slice(&MAGIC);
        b.extend_from_slice(&[53, 1, kind]);
        b.extend_from_slice(extra);
        b.push(255);
        let l = Lease {
            server_mac: mac,
            gateway: Ipv4Addr::UNSPECIFIED,
            ..lease()
        };
        let mut f = frame(&l, [0xff; 6], Ipv4Addr::BROADCAST, &b);
        // Client to server: ports 68 -> 67.
        f[34..36].copy_from_slice(&68u16.to_be_bytes());
        f[36..38].copy_from_slice(&67u16.to_be_bytes());
        f
    }

    #[test]
    fn offers_and_acknowledges_only_its_address_to_only_its_vm() {
        let l = lease();
        let req = parse(&request(l.client_mac, DISCOVER, &[])).unwrap();
        assert_eq!(req.kind, DISCOVER);
        let (kind, out) = reply(&req, &l).unwrap();
        assert_eq!(kind, OFFER);
        // The reply parses back as a frame with the offered address (yiaddr).
        assert_eq!(&out[14 + 28 + 16..14 + 28 + 20], &[10, 89, 0, 9]);
        assert_eq!(checksum(&out[14..34]), 0, "a valid IP header checksum");

        let ok = parse(&request(l.client_mac, REQUEST, &[50, 4, 10, 89, 0, 9])).unwrap();
        assert_eq!(reply(&ok, &l).unwrap().0, ACK);
        let other = parse(&request(l.client_mac, REQUEST, &[50, 4, 10, 89, 0, 77])).unwrap();
        assert_eq!(reply(&other, &l).unwrap().0, NAK);
        let stranger = parse(&request([2, 2, 2, 2, 2, 2], DISCOVER, &[])).unwrap();
        assert!(reply(&stranger, &l).is_none(), "another VM's card");

        // A watcher learns the address another server acknowledges, and only for its VM.
        let (_, ack) = reply(&ok, &l).unwrap();
        assert_eq!(acknowledged(&ack, &l.client_mac), Some(l.address));
        assert_eq!(acknowledged(&ack, &[2, 2, 2, 2, 2, 2]), None);
        let (_, offer) = reply(&req, &l).unwrap();
        assert_eq!(
            acknowledged(&offer, &l.client_mac),
            None,
            "an offer is not a lease"
        );
    }

    #[test]
    fn hostile_frames_are_dropped() {
        let good = request(lease().client_mac, DISCOVER, &[]);
        assert!(parse(&good).is_some());
        for cut in [0, 13, 20, 41, 100, 270, good.len() - 1] {
            assert!(parse(&good[..cut]).is_none(), "cut at {cut}");
        }
        // An option whose length runs past the end of the message.
        let bad = request(lease().client_mac, DISCOVER, &[12, 200, b'x']);
        assert!(parse(&bad).is_none());
        // Lengths in the headers that lie.
        let mut lying = good.clone();
        lying[16..18].copy_from_slice(&9000u16.to_be_bytes());
        assert!(parse(&lying).is_none());
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("52:54:00:ab:cd:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("52:54:00"), None);
        assert_eq!(parse_mac("zz:54:00:ab:cd:ef"), None);
    }
}
