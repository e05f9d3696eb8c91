//! Living beside a firewall that drops forwarded traffic, as Docker's does: dockerd sets
//! the iptables `FORWARD` policy to DROP, and with `br_netfilter` even traffic between
//! two ports of one bridge is forwarded traffic. A packet must be accepted by every
//! base chain of its hook, so cabin's own nftables table cannot let it through alone.
//!
//! When the iptables filter table would drop traffic (its FORWARD policy is not ACCEPT,
//! or it drops or rejects in FORWARD), cabin adds a chain of its own, `CABIN-FORWARD`,
//! jumped to first from FORWARD, that accepts what cabin's bridges send and what comes
//! back to them (replies and published ports), for each of its bridges in use. Docker's
//! rules are left as they are: nothing here matches its interfaces. The rules go with
//! the bridge; the chain and its jump with the last one. Checked at every change on a
//! bridge, so a firewall that appears later (Docker started after cabin) is met at the
//! next container or VM start.

use std::io;
use std::process::{Command, Stdio};

/// cabin's chain in iptables' filter table.
pub const CHAIN: &str = "CABIN-FORWARD";

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("running iptables: {0}")]
    Spawn(io::Error),
    #[error("iptables {command}: {stderr} (cabin lets its bridges' traffic through a firewall that drops forwarded traffic, such as Docker's; without that, containers and VMs on the bridge cannot reach each other or the outside)")]
    Failed { command: String, stderr: String },
}

/// `iptables -w ARGS`: its standard output, or None when iptables is not installed
/// (then there is no such firewall to meet).
fn iptables(args: &[&str]) -> Result<Option<String>, FirewallError> {
    let out = match Command::new("iptables")
        .arg("-w")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FirewallError::Spawn(e)),
    };
    if !out.status.success() {
        return Err(FirewallError::Failed {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Whether a rule (or jump) is there: `iptables -C` answers by its exit status.
fn present(args: &[&str]) -> bool {
    let mut check = vec!["-C"];
    check.extend_from_slice(args);
    iptables(&check).is_ok_and(|o| o.is_some())
}

/// Whether the FORWARD chain, as `iptables -S FORWARD` lists it, would drop traffic
/// that nothing in it accepts.
fn drops(forward: &str) -> bool {
    forward.lines().any(|l| {
        let l = l.trim();
        (l.starts_with("-P FORWARD ") && l != "-P FORWARD ACCEPT")
            || l.ends_with("-j DROP")
            || l.contains("-j REJECT")
    })
}

/// The rules of `bridge` in cabin's chain: what it sends, and what comes back to it as
/// replies or through a published port (DNAT).
fn rules(bridge: &str) -> [Vec<&str>; 3] {
    let to_bridge = |states| {
        vec![
            CHAIN,
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            states,
            "-j",
            "ACCEPT",
        ]
    };
    [
        vec![CHAIN, "-i", bridge, "-j", "ACCEPT"],
        to_bridge("RELATED,ESTABLISHED"),
        to_bridge("DNAT"),
    ]
}

/// Lets `bridge`'s traffic through iptables' FORWARD chain when that chain would
/// otherwise drop it (or cabin's chain is there already).
pub fn allow(bridge: &str) -> Result<(), FirewallError> {
    let Some(forward) = iptables(&["-S", "FORWARD"])? else {
        return Ok(());
    };
    let ours = forward.contains(&format!("-j {CHAIN}"));
    if !ours && !drops(&forward) {
        return Ok(());
    }
    if iptables(&["-S", CHAIN]).is_err() {
        iptables(&["-N", CHAIN])?;
    }
    if !present(&["FORWARD", "-j", CHAIN]) {
        iptables(&["-I", "FORWARD", "1", "-j", CHAIN])?;
    }
    for rule in rules(bridge) {
        if !present(&rule) {
            let mut add = vec!["-A"];
            add.extend_from_slice(&rule);
            iptables(&add)?;
        }
    }
    Ok(())
}

/// Removes `bridge`'s rules, and the chain with its jump when no bridge has any left.
/// Best effort: the bridge is gone, and its rules match nothing any more.
pub fn withdraw(bridge: &str) {
    let Ok(Some(listed)) = iptables(&["-S", CHAIN]) else {
        return;
    };
    if listed.contains(&format!("-i {bridge} ")) || listed.contains(&format!("-o {bridge} ")) {
        for rule in rules(bridge) {
            let mut delete = vec!["-D"];
            delete.extend_from_slice(&rule);
            let _ = iptables(&delete);
        }
    }
    let left = iptables(&["-S", CHAIN])
        .ok()
        .flatten()
        .is_some_and(|l| l.lines().any(|r| r.starts_with("-A ")));
    if !left {
        while present(&["FORWARD", "-j", CHAIN]) {
            if iptables(&["-D", "FORWARD", "-j", CHAIN]).is_err() {
                break;
            }
        }
        let _ = iptables(&["-X", CHAIN]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_policy_or_drop_rule_in_forward_means_the_bridge_needs_rules() {
        assert!(!drops("-P FORWARD ACCEPT\n"));
        assert!(drops(
            "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n"
        ));
        assert!(drops(
            "-P FORWARD ACCEPT\n-A FORWARD -j REJECT --reject-with icmp-host-prohibited\n"
        ));
        assert!(drops("-P FORWARD ACCEPT\n-A FORWARD -i eth1 -j DROP\n"));
        assert!(!drops("-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n"));
    }

    #[test]
    fn a_bridge_gets_its_traffic_out_and_replies_and_published_ports_back() {
        let r = rules("cabin0");
        assert_eq!(r[0].join(" "), "CABIN-FORWARD -i cabin0 -j ACCEPT");
        assert!(r[1]
            .join(" ")
            .contains("-o cabin0 -m conntrack --ctstate RELATED,ESTABLISHED"));
        assert!(r[2].join(" ").contains("--ctstate DNAT -j ACCEPT"));
    }
}
