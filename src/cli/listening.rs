//! `show listening`: the sockets listening here and, for each, the rules that decide
//! a new connection to it (UFW's report, computed with the reference reading).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::model::{Direction, Family, Policy, Proto, Verdict};
use crate::observe::rule_command;

use super::guard::{socket_inodes, sockets};

/// socket inode → the name of a process that holds it.
fn owners() -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
        for inode in socket_inodes(&p.path()) {
            out.entry(inode)
                .or_insert_with(|| crate::model::inert(comm.trim()));
        }
    }
    out
}

/// The lines of `show listening` for `policy`.
pub fn report(policy: &Policy) -> Vec<String> {
    let owners = owners();
    let mut out = Vec::new();
    for (proto, tables, state) in [
        (Proto::Tcp, ["/proc/net/tcp", "/proc/net/tcp6"], "0A"),
        (Proto::Udp, ["/proc/net/udp", "/proc/net/udp6"], "07"),
    ] {
        // port → (address, owner), one line per port and address.
        let mut seen: BTreeMap<(u16, String), String> = BTreeMap::new();
        for table in tables {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            for (local, _, inode) in sockets(&text, state) {
                let addr = if local.0.is_unspecified() {
                    "*".to_string()
                } else {
                    local.0.to_string()
                };
                let owner = owners.get(&inode).cloned().unwrap_or_default();
                seen.entry((local.1, addr)).or_insert(owner);
            }
        }
        out.push(format!("{}:", proto.word()));
        for ((port, addr), owner) in &seen {
            let owner = if owner.is_empty() {
                String::new()
            } else {
                format!(" ({owner})")
            };
            out.push(format!("  {port} {addr}{owner}"));
            let local: Option<IpAddr> = addr.parse().ok();
            out.extend(deciding(policy, proto, *port, local));
        }
    }
    out
}

/// The rules that match a new connection to `port` (from any source; to `local`, or any
/// address when the socket takes every one), numbered; or what the default decides.
fn deciding(policy: &Policy, proto: Proto, port: u16, local: Option<IpAddr>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let proto_ok = match rule.proto {
            Proto::Any => true,
            p => p == proto,
        };
        let family_ok = local.is_none_or(|a| match rule.family {
            Family::V4 => a.is_ipv4(),
            Family::V6 => a.is_ipv6(),
        });
        let to_ok = rule
            .to
            .addr
            .is_none_or(|n| local.is_none_or(|a| n.contains(&a)));
        let port_ok = rule.to.ports.as_ref().is_none_or(|p| p.contains(port))
            && !rule.except.as_ref().is_some_and(|e| e.contains(port));
        if rule.direction == Direction::In
            && proto_ok
            && family_ok
            && to_ok
            && port_ok
            && rule.from.ports.is_none()
        {
            out.push(format!("   [{:2}] {}", i + 1, rule_command(rule)));
            // A rule for every source decides for everyone: the rest never see it.
            if rule.from.addr.is_none() && rule.iface.is_none() && rule.is_terminal() {
                return out;
            }
        }
    }
    let verdict = match policy.defaults.incoming {
        Verdict::Allow => "allow",
        Verdict::Deny => "deny",
        Verdict::Reject => "reject",
    };
    out.push(format!("   (otherwise the default: {verdict})"));
    out
}
