//! QEMU confined when cabin runs as root: each VM's QEMU gets a user of its own from a
//! range cabin owns (as Firecracker's jailer gives each microVM its own uid), no
//! capabilities beyond what its devices need, no way to gain privileges, and still dies
//! with its parent.
//!
//! The switch happens in the child between fork and exec, not with QEMU's `-runas`: in
//! QEMU 7.2 `-runas` switches after the seccomp sandbox is installed (which forbids it
//! with `elevateprivileges=deny`), cannot keep the capabilities a 9p share needs, and
//! the uid change clears the parent-death signal. cabin opens every file QEMU needs and
//! hands it over as a descriptor (qemu.rs, full.rs), so the confined QEMU opens nothing
//! of cabin's by path.
//!
//! A uid is leased by locking `/run/cabin/vm-uids/<uid>` for as long as the VM's parent
//! lives; the lock goes with the parent, and QEMU with it (parent-death signal).

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cabin_base::lock::{lock_file, Mode, Wait};

/// The first uid (and gid) of cabin's range: 65535 ids in a band no distribution or
/// systemd hands out (systemd's container ranges end at 0x6FFFFFFF, its foreign range
/// starts at 0x7FFE0000).
pub const UID_BASE: u32 = 0x7CAB_0000;
/// How many VM users the range holds.
pub const UID_SLOTS: u32 = 0xFFFF;

// Clear of systemd's container ranges, its foreign range and negative ids, checked as
// the crate compiles.
const _: () = assert!(UID_BASE > 0x6FFF_FFFF && UID_BASE + UID_SLOTS < 0x7FFE_0000);

const LEASES: &str = "/run/cabin/vm-uids";

// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_NET_BIND_SERVICE: u32 = 10;

/// What 9p shares a VM has: they decide the capabilities its QEMU keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareAccess {
    None,
    /// Every share is read-only: QEMU needs to read any file the user shared.
    ReadOnly,
    /// A share the guest writes: QEMU stores the guest's owners and modes on the host
    /// files (passthrough), so it needs to chown and to write files of any owner.
    ReadWrite,
}

impl ShareAccess {
    pub fn of(shares: &[crate::ShareSpec]) -> ShareAccess {
        if shares.is_empty() {
            ShareAccess::None
        } else if shares.iter().all(|s| s.read_only) {
            ShareAccess::ReadOnly
        } else {
            ShareAccess::ReadWrite
        }
    }
}

/// What a VM's QEMU needs beyond the descriptors cabin gives it.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub shares: ShareAccess,
    /// QEMU itself listens on a published host port below the unprivileged limit.
    pub low_port: bool,
    /// QEMU opens /dev/kvm.
    pub kvm: bool,
}

impl Needs {
    /// The capability set for these needs (a bit per capability).
    pub fn capabilities(&self) -> u64 {
        let bit = |c: u32| 1u64 << c;
        let mut caps = match self.shares {
            ShareAccess::None => 0,
            ShareAccess::ReadOnly => bit(CAP_DAC_READ_SEARCH),
            ShareAccess::ReadWrite => {
                bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_FOWNER) | bit(CAP_FSETID)
            }
        };
        if self.low_port {
            caps |= bit(CAP_NET_BIND_SERVICE);
        }
        caps
    }
}

/// Whether a host port needs privileges to listen on (below
/// `net.ipv4.ip_unprivileged_port_start`, 1024 unless the host says otherwise).
pub fn privileged_port(port: u16) -> bool {
    let start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    u32::from(port) < start
}

/// The credentials a confined QEMU gets: plain data, copied into the child before the
/// fork (nothing is allocated or read between fork and exec).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Credentials {
    uid: u32,
    gid: u32,
    /// At most one supplementary group: the one that may use /dev/kvm.
    group: Option<u32>,
    caps: u64,
    last_cap: u32,
}

/// A VM user leased for one QEMU. Keep it until that QEMU has been reaped.
#[derive(Debug)]
pub struct Confinement {
    pub uid: u32,
    pub gid: u32,
    pub caps: u64,
    creds: Credentials,
    _lease: File,
}

impl Confinement {
    /// A user for the QEMU of a VM with `needs`, or None when cabin does not run as root
    /// (QEMU then runs as the user who runs cabin, as before). `seed` spreads VMs over the
    /// range (the run directory's name).
    pub fn for_vm(seed: &str, needs: Needs) -> io::Result<Option<Confinement>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let group = if needs.kvm { kvm_group()? } else { None };
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let (uid, lease) = lease(seed)?;
        let caps = needs.capabilities();
        Ok(Some(Confinement {
            uid,
            gid: uid,
            caps,
            creds: Credentials {
                uid,
                gid: uid,
                group,
                caps,
                last_cap,
            },
            _lease: lease,
        }))
    }

    pub(crate) fn credentials(&self) -> Credentials {
        self.creds
    }
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Locks the first free slot from the seed's hash on.
fn lease(seed: &str) -> io::Result<(u32, File)> {
    let dir = Path::new(LEASES);
    cabin_base::files::create_private_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    let taken = subordinate_ranges();
    let start = fnv(seed) % UID_SLOTS;
    for n in 0..UID_SLOTS {
        let uid = UID_BASE + (start + n) % UID_SLOTS;
        if taken.iter().any(|&(a, len)| uid >= a && uid - a < len) || known_id(uid) {
            continue;
        }
        // The lock files stay: removing one while another process waits on it would
        // let two VMs hold the same uid.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(uid.to_string()))?;
        if lock_file(&f, Mode::Exclusive, Wait::NoWait)? {
            return Ok((uid, f));
        }
    }
    Err(io::Error::other(format!(
        "all {UID_SLOTS} VM users from {UID_BASE} are in use: too many VMs run on this host"
    )))
}

/// Ranges handed to users for their own containers (/etc/subuid, /etc/subgid).
fn subordinate_ranges() -> Vec<(u32, u32)> {
    ["/etc/subuid", "/etc/subgid"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| {
                    let mut f = l.split(':').skip(1);
                    Some((
                        f.next()?.trim().parse().ok()?,
                        f.next()?.trim().parse().ok()?,
                    ))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether the host already names this id as a user or a group.
fn known_id(id: u32) -> bool {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd/group are plain structs filled by the calls; the buffer outlives
    // them and its length is passed.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwuid_r(id, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if r == 0 && !found.is_null() {
            return true;
        }
        let mut gr: libc::group = std::mem::zeroed();
        let mut found: *mut libc::group = std::ptr::null_mut();
        let r = libc::getgrgid_r(id, &mut gr, buf.as_mut_ptr(), buf.len(), &mut found);
        r == 0 && !found.is_null()
    }
}

/// The group that may open /dev/kvm (None when everyone may).
fn kvm_group() -> io::Result<Option<u32>> {
    let m = std::fs::metadata("/dev/kvm")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/kvm: {e}")))?;
    let mode = m.mode();
    if mode & 0o006 == 0o006 {
        return Ok(None);
    }
    if mode & 0o060 == 0o060 {
        return Ok(Some(m.gid()));
    }
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "/dev/kvm is mode {:o}, so only root can use it, and cabin runs each VM's QEMU as an unprivileged user of its own: give /dev/kvm to a group (Debian's udev rules make it root:kvm 0660: `chgrp kvm /dev/kvm; chmod 0660 /dev/kvm`), or run the VM under TCG (--accel tcg)",
            mode & 0o7777
        ),
    ))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

impl Credentials {
    /// Becomes the VM user: called in the child after fork, before exec, while it is
    /// still root. The parent-death signal is armed last, since every credential change
    /// clears it.
    ///
    /// # Safety
    /// Only between fork and exec: it changes the calling process's credentials and
    /// uses only async-signal-safe system calls.
    pub(crate) unsafe fn apply(&self) -> io::Result<()> {
        let check = |r: libc::c_long| {
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // The bounding set shrinks to what is kept, while CAP_SETPCAP is still there.
        for cap in 0..=self.last_cap {
            if self.caps & (1u64 << cap) == 0 {
                let r = libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        if self.caps != 0 {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into())?;
        }
        // Raw system calls: glibc's wrappers would try to change every thread's
        // credentials, and this child has one thread.
        let groups = [self.group.unwrap_or(0)];
        let count = usize::from(self.group.is_some());
        check(libc::syscall(libc::SYS_setgroups, count, groups.as_ptr()))?;
        check(libc::syscall(
            libc::SYS_setresgid,
            self.gid,
            self.gid,
            self.gid,
        ))?;
        check(libc::syscall(
            libc::SYS_setresuid,
            self.uid,
            self.uid,
            self.uid,
        ))?;
        let low = self.caps as u32;
        let high = (self.caps >> 32) as u32;
        let mut header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            CapData {
                effective: low,
                permitted: low,
                inheritable: low,
            },
            CapData {
                effective: high,
                permitted: high,
                inheritable: high,
            },
        ];
        check(libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ))?;
        // Ambient capabilities are what survives the exec of an unprivileged program.
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
            .into(),
        )?;
        for cap in 0..=self.last_cap.min(63) {
            if self.caps & (1u64 << cap) != 0 {
                check(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                    .into(),
                )?;
            }
        }
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_decide_the_capabilities_and_nothing_else_does() {
        let none = Needs {
            shares: ShareAccess::None,
            low_port: false,
            kvm: true,
        };
        assert_eq!(none.capabilities(), 0);
        let ro = Needs {
            shares: ShareAccess::ReadOnly,
            ..none
        };
        assert_eq!(ro.capabilities(), 0x4);
        let rw = Needs {
            shares: ShareAccess::ReadWrite,
            ..none
        };
        assert_eq!(rw.capabilities(), 0x1b);
        let port = Needs {
            low_port: true,
            ..none
        };
        assert_eq!(port.capabilities(), 0x400);
    }

    #[test]
    fn vms_spread_over_the_range_by_their_names() {
        assert_eq!(fnv("a"), fnv("a"));
        assert_ne!(fnv("a") % UID_SLOTS, fnv("b") % UID_SLOTS);
    }
}
