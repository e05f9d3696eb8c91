//! How much memory a new VM can still get: the host's available memory (plus free
//! swap), and the headroom of every memory cgroup cabin runs in (cgroup v2 or v1),
//! whichever is least. A VM that does not fit is refused before QEMU starts, rather
//! than started and then killed by the kernel's OOM killer; and when the OOM killer
//! did end a VM, [`oom_kills`] lets the message say so.

use std::fs;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

/// A memory cgroup's limit and what is left under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupRoom {
    /// The cgroup, as /proc/self/cgroup names it.
    pub path: String,
    pub limit: u64,
    /// The limit less what the cgroup uses (reclaimable file cache not counted).
    pub free: u64,
}

/// Memory a new VM can get, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// The host's available memory (MemAvailable), None when the kernel does not say.
    pub host: Option<u64>,
    pub swap_free: u64,
    /// The tightest memory cgroup above cabin, if any has a limit.
    pub cgroup: Option<CgroupRoom>,
}

/// Why a VM was refused: what it needs and what limits it.
#[derive(Debug, thiserror::Error)]
pub enum NotEnoughMemory {
    #[error("not enough memory on the host for this VM: it needs {needed_mib} MiB, the host has {available_mib} MiB available{swap}; stop other containers or VMs, or ask for less (--memory)", swap = if *.swap_mib > 0 { format!(" and {} MiB of free swap", .swap_mib) } else { String::new() })]
    Host {
        needed_mib: u64,
        available_mib: u64,
        swap_mib: u64,
    },
    #[error("not enough memory for this VM in the memory cgroup cabin runs in ({path}, limit {limit_mib} MiB): it needs {needed_mib} MiB and {free_mib} MiB are left; stop other containers or VMs, ask for less (--memory), or raise the cgroup's limit")]
    Cgroup {
        needed_mib: u64,
        path: String,
        limit_mib: u64,
        free_mib: u64,
    },
}

impl Headroom {
    /// Reads the host's and cabin's cgroups' figures now.
    pub fn now() -> Headroom {
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (host, swap_free) = parse_meminfo(&meminfo);
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Headroom {
            host,
            swap_free,
            cgroup: tightest_cgroup(&own, Path::new("/sys/fs/cgroup")),
        }
    }

    /// Memory available without swapping: the host's, or the cgroup's room when that
    /// is less.
    pub fn available(&self) -> Option<u64> {
        match (&self.cgroup, self.host) {
            (Some(c), Some(h)) => Some(c.free.min(h)),
            (Some(c), None) => Some(c.free),
            (None, h) => h,
        }
    }

    /// Whether a VM of `needed_mib` fits (QEMU touches guest memory lazily, so this is
    /// the most it can grow to, not what it takes at once).
    pub fn admit(&self, needed_mib: u64) -> Result<(), NotEnoughMemory> {
        let needed = needed_mib.saturating_mul(MIB);
        // The host first: a VM the host cannot hold is refused for that, whatever the
        // cgroup says.
        if let Some(host) = self.host {
            if needed > host + self.swap_free {
                return Err(NotEnoughMemory::Host {
                    needed_mib,
                    available_mib: host / MIB,
                    swap_mib: self.swap_free / MIB,
                });
            }
        }
        if let Some(c) = &self.cgroup {
            if needed > c.free {
                return Err(NotEnoughMemory::Cgroup {
                    needed_mib,
                    path: c.path.clone(),
                    limit_mib: c.limit / MIB,
                    free_mib: c.free / MIB,
                });
            }
        }
        Ok(())
    }
}

/// MemAvailable and SwapFree, bytes.
fn parse_meminfo(text: &str) -> (Option<u64>, u64) {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    (field("MemAvailable:"), field("SwapFree:").unwrap_or(0))
}

/// The memory cgroup with the least room among cabin's own and its ancestors, under
/// `root` (/sys/fs/cgroup): v2's unified tree, or v1's `memory` hierarchy.
fn tightest_cgroup(own: &str, root: &Path) -> Option<CgroupRoom> {
    let v2 = root.join("cgroup.controllers").is_file();
    let (base, rel, files) = if v2 {
        let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        (root.to_path_buf(), rel, V2)
    } else {
        let rel = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then_some(path)
        })?;
        (root.join("memory"), rel, V1)
    };
    let mut best: Option<CgroupRoom> = None;
    let mut rel = PathBuf::from(rel.trim());
    loop {
        let dir = base.join(rel.strip_prefix("/").unwrap_or(&rel));
        if let Some(room) = cgroup_room(&dir, files) {
            let room = CgroupRoom {
                path: rel.display().to_string(),
                ..room
            };
            if best.as_ref().is_none_or(|b| room.free < b.free) {
                best = Some(room);
            }
        }
        if !rel.pop() {
            break;
        }
    }
    best
}

/// A cgroup version's file names: limit, usage, and the reclaimable cache in memory.stat.
struct Files {
    limit: &'static str,
    usage: &'static str,
    inactive_file: &'static str,
}

const V2: &Files = &Files {
    limit: "memory.max",
    usage: "memory.current",
    inactive_file: "inactive_file",
};
const V1: &Files = &Files {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    inactive_file: "total_inactive_file",
};

fn cgroup_room(dir: &Path, files: &Files) -> Option<CgroupRoom> {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    // "max" (v2) or a page-rounded i64::MAX (v1) mean no limit.
    let limit: u64 = read(files.limit)?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = read(files.usage)?.trim().parse().ok()?;
    let inactive: u64 = read("memory.stat")
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == files.inactive_file).then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0);
    Some(CgroupRoom {
        path: String::new(),
        limit,
        free: limit.saturating_sub(usage.saturating_sub(inactive)),
    })
}

/// How many processes the kernel's OOM killer has ended on this host so far: read
/// before a VM starts and after it died of SIGKILL, a rise says who killed it.
pub fn oom_kills() -> Option<u64> {
    fs::read_to_string("/proc/vmstat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))?
        .trim()
        .parse()
        .ok()
}

/// The host memory process `pid` accounts for: its proportional set size (PSS: each
/// page it maps divided by the number of processes mapping it), in bytes. What a VM's
/// QEMU costs the host, with the pages it shares with other VMs (a snapshot template's
/// memory, QEMU's own code) counted in part.
pub fn proportional_set_size(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kib| kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_memory_is_read_from_its_smaps() {
        let me = proportional_set_size(std::process::id()).expect("this process's PSS");
        assert!(me > 100 << 10, "{me}");
        assert_eq!(proportional_set_size(u32::MAX), None);
    }

    #[test]
    fn a_vm_larger_than_the_host_can_hold_is_refused_with_the_figures() {
        let (host, swap) = parse_meminfo("MemTotal: 4000000 kB\nMemAvailable:  1048576 kB\n");
        let h = Headroom {
            host,
            swap_free: swap,
            cgroup: None,
        };
        assert!(h.admit(512).is_ok());
        let e = h.admit(2048).unwrap_err().to_string();
        assert!(
            e.contains("it needs 2048 MiB, the host has 1024 MiB available;"),
            "{e}"
        );
        let with_swap = Headroom {
            swap_free: 2 << 30,
            ..h.clone()
        };
        assert!(with_swap.admit(2048).is_ok());
        let unknown = Headroom {
            host: None,
            swap_free: 0,
            cgroup: None,
        };
        assert!(unknown.admit(1 << 40).is_ok(), "no figures, no refusal");
    }

    #[test]
    fn the_tightest_cgroup_on_the_way_up_decides_for_v1_and_v2() {
        let t = tempfile::tempdir().unwrap();
        let write = |p: &str, text: &str| {
            let p = t.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        // v1: the parent has the tighter room; cache does not count as used.
        write("memory/a/memory.limit_in_bytes", "1073741824\n");
        write("memory/a/memory.usage_in_bytes", "943718400\n");
        write(
            "memory/a/memory.stat",
            "cache 1\ntotal_inactive_file 104857600\n",
        );
        write("memory/a/b/memory.limit_in_bytes", "9223372036854771712\n");
        write("memory/a/b/memory.usage_in_bytes", "10\n");
        let c = tightest_cgroup("4:memory:/a/b\n0::/\n", t.path()).unwrap();
        assert_eq!(c.path, "/a");
        assert_eq!(c.limit, 1 << 30);
        assert_eq!(c.free, (1 << 30) - (943718400 - 104857600));
        let h = Headroom {
            host: Some(1 << 40),
            swap_free: 0,
            cgroup: Some(c),
        };
        let e = h.admit(512).unwrap_err().to_string();
        assert!(e.contains("(/a, limit 1024 MiB)"), "{e}");
        assert!(e.contains("it needs 512 MiB and 224 MiB are left"), "{e}");

        let v2 = tempfile::tempdir().unwrap();
        let write = |p: &str, text: &str| {
            let p = v2.path().join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        };
        write("cgroup.controllers", "memory\n");
        write("svc/memory.max", "max\n");
        write("svc/memory.current", "5\n");
        write("svc/vm/memory.max", "268435456\n");
        write("svc/vm/memory.current", "134217728\n");
        let c = tightest_cgroup("0::/svc/vm\n", v2.path()).unwrap();
        assert_eq!((c.path.as_str(), c.free), ("/svc/vm", 128 << 20));
        assert!(tightest_cgroup("0::/svc\n", v2.path()).is_none());
    }
}
