//! The processes of a container (`docker top`, `cabin top`): its cgroup says which
//! they are, /proc what they are. Read in the guest, where the container's processes
//! are, and bounded: a process's command line is cut at [`MAX_COMMAND`] bytes, at most
//! [`MAX_PROCESSES`] are listed, and the list stops at [`MAX_LIST_BYTES`].

use std::path::Path;

use cabin_proto::v1::{ProcessInfo, ProcessList};

/// A command line longer than this is cut.
const MAX_COMMAND: usize = 4096;
/// A container with more processes is listed in part.
const MAX_PROCESSES: usize = 4096;
/// The list stops before its command lines pass this many bytes: the answer must fit
/// in one message of the agent's protocol (and the host's control frames), 1 MiB.
const MAX_LIST_BYTES: usize = 512 << 10;

/// The processes in `cgroup` now.
pub fn processes(cgroup: &Path) -> ProcessList {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)
        .unwrap_or(100) as u64;
    let pids: Vec<u32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .take(MAX_PROCESSES)
        .collect();
    let mut processes: Vec<ProcessInfo> = Vec::new();
    let mut bytes = 0;
    for pid in pids {
        let Some(p) = process(Path::new(&format!("/proc/{pid}")), pid, ticks) else {
            continue;
        };
        bytes += p.command.len() + p.tty.len() + 64;
        if bytes > MAX_LIST_BYTES {
            break;
        }
        processes.push(p);
    }
    processes.sort_by_key(|p| p.pid);
    ProcessList {
        processes,
        sampled_boottime_nanos: crate::clock::boottime_nanos(),
    }
}

/// One process from its /proc directory; None if it is gone.
fn process(dir: &Path, pid: u32, ticks: u64) -> Option<ProcessInfo> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (name, fields) = parse_stat(&stat)?;
    // Fields after the name, from field 3 (state): ppid is 4, tty_nr 7, utime 14,
    // stime 15, starttime 22 (man 5 proc).
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(0) };
    let uid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0);
    let mut cmdline = Vec::new();
    if let Ok(f) = std::fs::File::open(dir.join("cmdline")) {
        use std::io::Read;
        let _ = f.take(MAX_COMMAND as u64).read_to_end(&mut cmdline);
    }
    let command = if cmdline.is_empty() {
        format!("[{name}]")
    } else {
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        args.join(" ")
    };
    Some(ProcessInfo {
        pid,
        ppid: field(4) as u32,
        uid,
        tty: tty_name(field(7)),
        cpu_micros: (field(14) + field(15)) * 1_000_000 / ticks,
        start_boottime_nanos: field(22) * (1_000_000_000 / ticks),
        command,
    })
}

/// The name and the fields after it of a /proc/PID/stat line: the name is between the
/// first '(' and the last ')', and may hold spaces and parentheses itself.
fn parse_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    Some((name, stat[close + 1..].split_whitespace().collect()))
}

/// A terminal's name from its device number (pseudo-terminals only: the rest are "").
fn tty_name(tty_nr: u64) -> String {
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let (name, f) = parse_stat("42 (a (b) c) S 1 42 42 34816 42 4194560 1 2 3 4").unwrap();
        assert_eq!(name, "a (b) c");
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1");
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn terminals_are_named_as_ps_names_them() {
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(34817), "pts/1");
        assert_eq!(tty_name(0), "");
        assert_eq!(tty_name(1025), "");
    }

    #[test]
    fn this_process_reads_as_itself() {
        let me = std::process::id();
        let p = process(Path::new(&format!("/proc/{me}")), me, 100).unwrap();
        assert_eq!(p.pid, me);
        assert_eq!(p.ppid, std::os::unix::process::parent_id());
        assert!(!p.command.is_empty());
        assert!(process(Path::new("/proc/nonexistent"), 1, 100).is_none());
    }
}
