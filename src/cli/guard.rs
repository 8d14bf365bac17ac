//! The lockout guard: inside an SSH session, a change that would refuse the next SSH
//! connection from the same client is refused (unless `--force`), with the rule to add
//! first. The session is found from `SSH_CONNECTION`, or from the established TCP
//! connection an `sshd` among the parent processes holds; either must be a connection
//! to an address of this host (of this network namespace).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::{Action, Direction, Family, Packet, Policy, Proto, Verdict};
use crate::observe::rule_command;

/// The SSH connection this command runs in: client and server ends, and the server
/// end's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    pub iface: String,
}

impl Session {
    /// The session of this process, if it runs in one to this host.
    pub fn find() -> Option<Session> {
        let (client, client_port, server, server_port) = from_env().or_else(from_parent_sshd)?;
        let iface = iface_of(server)?;
        Some(Session {
            client,
            client_port,
            server,
            server_port,
            iface,
        })
    }

    /// The first packet of the next SSH connection from the same client.
    fn packet(&self) -> Packet {
        Packet {
            family: if self.client.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            direction: Direction::In,
            iface: self.iface.clone(),
            out_iface: String::new(),
            proto: Proto::Tcp,
            src: self.client,
            dst: self.server,
            sport: self.client_port,
            dport: self.server_port,
        }
    }

    fn text(&self) -> String {
        format!(
            "{} to {} port {}/tcp",
            self.client, self.server, self.server_port
        )
    }
}

/// `SSH_CONNECTION`: "CLIENT CPORT SERVER SPORT".
fn from_env() -> Option<(IpAddr, u16, IpAddr, u16)> {
    let text = std::env::var("SSH_CONNECTION").ok()?;
    let w: Vec<&str> = text.split_whitespace().collect();
    match w[..] {
        [c, cp, s, sp] => Some((
            c.parse().ok()?,
            cp.parse().ok()?,
            s.parse().ok()?,
            sp.parse().ok()?,
        )),
        _ => None,
    }
}

/// The established TCP connection held by an `sshd` among the parent processes.
fn from_parent_sshd() -> Option<(IpAddr, u16, IpAddr, u16)> {
    let mut pid = std::process::id();
    for _ in 0..64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, tail) = stat.rsplit_once(") ")?;
        let comm = head.split_once(" (").map_or("", |(_, c)| c);
        if comm.starts_with("sshd") {
            if let Some(found) = established_socket_of(pid) {
                return Some(found);
            }
        }
        match tail.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            Some(ppid) if ppid > 1 => pid = ppid,
            _ => return None,
        }
    }
    None
}

/// The inodes of the sockets a process holds (from its `/proc/PID/fd` links).
pub fn socket_inodes(proc_dir: &std::path::Path) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
        return Vec::new();
    };
    fds.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

fn established_socket_of(pid: u32) -> Option<(IpAddr, u16, IpAddr, u16)> {
    let inodes = socket_inodes(std::path::Path::new(&format!("/proc/{pid}")));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for (local, remote, inode) in established(&text) {
            if inodes.contains(&inode) {
                return Some((remote.0, remote.1, local.0, local.1));
            }
        }
    }
    None
}

/// An address and port.
type End = (IpAddr, u16);

/// The established connections of a `/proc/net/tcp{,6}` table: (local, remote, inode).
pub fn established(text: &str) -> Vec<(End, End, u64)> {
    sockets(text, "01")
}

/// The sockets of a `/proc/net/{tcp,udp}{,6}` table in state `state` (hex: `01`
/// established, `0A` listening, `07` an unconnected UDP socket): (local, remote, inode).
pub fn sockets(text: &str, state: &str) -> Vec<(End, End, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != state {
                return None;
            }
            Some((endpoint(f[1])?, endpoint(f[2])?, f[9].parse().ok()?))
        })
        .collect()
}

/// "0100007F:0016" (IPv4) or 32 hex digits (IPv6), in the kernel's word order.
fn endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words[..] {
        [a] => IpAddr::V4(Ipv4Addr::from(a.to_be_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The interface that holds `addr` here (None: not an address of this host).
fn iface_of(addr: IpAddr) -> Option<String> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let here = sa
            .as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| sa.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())));
        if here == Some(addr) {
            return Some(a.interface_name);
        }
    }
    None
}

/// Connections from `client` to local port `port` that are established now.
fn open_from(client: IpAddr, port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap_or_default())
        .flat_map(|text| established(&text))
        .filter(|(local, remote, _)| local.1 == port && same_addr(remote.0, client))
        .count()
}

/// Equal, also as an IPv4-mapped IPv6 address.
fn same_addr(a: IpAddr, b: IpAddr) -> bool {
    let v4 = |x: IpAddr| match x {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(x, IpAddr::V4),
        x => x,
    };
    v4(a) == v4(b)
}

/// Why `policy` would refuse the next connection of `session`, if it would.
pub fn refusal(policy: &Policy, session: &Session) -> Option<String> {
    if !policy.enabled || session.iface == "lo" {
        return None;
    }
    let p = session.packet();
    let deciding = policy
        .rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.matches(&p) && r.is_terminal());
    match deciding {
        Some((i, rule)) => {
            let n = i + 1;
            match rule.action {
                Action::Allow => None,
                Action::Deny | Action::Reject => Some(format!(
                    "rule {n} ('{}') would refuse it",
                    rule_command(rule)
                )),
                Action::Limit => {
                    let conn = rule.limit.as_ref().and_then(|l| l.conn)?;
                    let open = open_from(session.client, session.server_port);
                    (open as u32 >= conn).then(|| {
                        format!(
                            "rule {n} ('{}') allows {conn} at a time and {open} are open",
                            rule_command(rule)
                        )
                    })
                }
            }
        }
        None => match policy.defaults.incoming {
            Verdict::Allow => None,
            v => Some(format!(
                "no rule allows it and the default for incoming is {}",
                v.word()
            )),
        },
    }
}

/// The one-line refusal of a change that would lock the session out.
pub fn message(session: &Session, why: &str) -> String {
    let family_rule = format!(
        "rampart prepend allow from {} to any port {} proto tcp",
        session.client, session.server_port
    );
    format!(
        "this change would lock out the SSH session it is typed in ({}): {why}; add a rule that admits it first ('{family_rule}'), or use --force",
        session.text()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_read() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 010012C6:0016 0B0012C6:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 1 10 -1\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1\n";
        let got = established(v4);
        assert_eq!(
            got,
            vec![(
                ("198.18.0.1".parse().unwrap(), 22),
                ("198.18.0.11".parse().unwrap(), 0xa1b2),
                4242
            )]
        );
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: B80D0120000000000000000001000000:0016 B80D012000000000000000000B000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 99 1\n";
        let got = established(v6);
        assert_eq!(got[0].0, ("2001:db8::1".parse().unwrap(), 22));
        assert_eq!(got[0].1, ("2001:db8::b".parse().unwrap(), 50000));
        assert_eq!(got[0].2, 99);
    }
}
