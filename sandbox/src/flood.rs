//! Spoofed TCP SYNs from a raw socket inside a client namespace: tens of thousands of
//! sources that exist nowhere, bounded in count and time. Sources come from
//! 198.19.0.0/16 (the i-th is 198.19.(i / 256).(i % 256)) and 2001:db8:ffff::/48 (the
//! i-th is 2001:db8:ffff:i::1, one /64 each), never the sandbox's own networks.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{
    sendto, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
    SockaddrIn6,
};

use crate::{in_netns, Sandbox};

/// The most sources one family can give.
pub const MAX_SOURCES: u32 = 65_536;

/// The i-th spoofed source of a family.
pub fn spoofed_source(v6: bool, i: u32) -> IpAddr {
    let i = i % MAX_SOURCES;
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, i as u16, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8))
    }
}

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// SYNs sent.
    pub sent: u32,
    /// How long sending took.
    pub took: Duration,
}

impl Flood {
    /// Time per SYN (sending includes the receiving side's processing: veth hands the
    /// packet to the server's stack on the sender's CPU).
    pub fn per_syn(&self) -> Duration {
        self.took / self.sent.max(1)
    }
}

impl Sandbox {
    /// Let the server take packets from spoofed sources behind client `c`: its answers
    /// to 198.19.0.0/16 and 2001:db8:ffff::/48 are routed to that client (which drops
    /// them), and reverse-path filtering is off in the server's namespace.
    pub fn route_spoofed(&self, c: usize) -> io::Result<()> {
        let client = &self.clients[c];
        let ns = self.srv.ns.clone();
        let steps: Vec<Vec<String>> = vec![
            vec![
                "sysctl".into(),
                "-qw".into(),
                "net.ipv4.conf.all.rp_filter=0".into(),
            ],
            vec![
                "sysctl".into(),
                "-qw".into(),
                "net.ipv4.conf.default.rp_filter=0".into(),
            ],
            ["ip", "route", "replace", "198.19.0.0/16", "via"]
                .iter()
                .map(|s| s.to_string())
                .chain([client.v4.to_string()])
                .collect(),
            ["ip", "-6", "route", "replace", "2001:db8:ffff::/48", "via"]
                .iter()
                .map(|s| s.to_string())
                .chain([client.v6.to_string()])
                .collect(),
        ];
        for step in steps {
            let words: Vec<&str> = step.iter().map(String::as_str).collect();
            let out = self.exec(&ns, &words);
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "{step:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        Ok(())
    }

    /// Send from client `c` one TCP SYN to the server's `port` from each spoofed source
    /// `first .. first + count` (see [`spoofed_source`]); stops after `within`.
    pub fn spoof_syns(
        &self,
        c: usize,
        v6: bool,
        port: u16,
        first: u32,
        count: u32,
        within: Duration,
    ) -> io::Result<Flood> {
        let dst = self.srv.addr(v6);
        self.syns_from(c, dst, port, count, within, move |i| {
            spoofed_source(v6, first + i)
        })
    }

    /// Send from client `c` `count` TCP SYNs to the server's `port`, all from the
    /// client's own address (source ports vary); stops after `within`.
    pub fn own_syns(
        &self,
        c: usize,
        v6: bool,
        port: u16,
        count: u32,
        within: Duration,
    ) -> io::Result<Flood> {
        let (src, dst) = (self.clients[c].addr(v6), self.srv.addr(v6));
        self.syns_from(c, dst, port, count, within, move |_| src)
    }

    /// Send from client `c` `count` TCP SYNs to `dst:port`, the i-th from `source(i)`
    /// (source ports vary); stops after `within`.
    pub fn syns_from(
        &self,
        c: usize,
        dst: IpAddr,
        port: u16,
        count: u32,
        within: Duration,
        source: impl Fn(u32) -> IpAddr + Send,
    ) -> io::Result<Flood> {
        in_netns(&self.clients[c].ns, move || -> io::Result<Flood> {
            let family = match dst {
                IpAddr::V4(_) => AddressFamily::Inet,
                IpAddr::V6(_) => AddressFamily::Inet6,
            };
            // IPPROTO_RAW: the packet carries its own IP header (any source).
            let fd = socket(family, SockType::Raw, SockFlag::empty(), SockProtocol::Raw)
                .map_err(io::Error::from)?;
            let start = Instant::now();
            let mut sent = 0;
            let mut packet = Vec::with_capacity(60);
            while sent < count && start.elapsed() < within {
                let src = source(sent);
                let sport = 10_000 + (sent % 50_000) as u16;
                packet.clear();
                syn_packet(&mut packet, src, dst, sport, port, sent);
                let res = match dst {
                    IpAddr::V4(d) => sendto(
                        fd.as_raw_fd(),
                        &packet,
                        &SockaddrIn::from(std::net::SocketAddrV4::new(d, 0)),
                        MsgFlags::empty(),
                    ),
                    IpAddr::V6(d) => sendto(
                        fd.as_raw_fd(),
                        &packet,
                        &SockaddrIn6::from(std::net::SocketAddrV6::new(d, 0, 0, 0)),
                        MsgFlags::empty(),
                    ),
                };
                match res {
                    Ok(_) => sent += 1,
                    // A full queue: wait a little and send again.
                    Err(nix::Error::ENOBUFS) | Err(nix::Error::EAGAIN) => {
                        std::thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            Ok(Flood {
                sent,
                took: start.elapsed(),
            })
        })?
    }
}

/// An IP header and a 20-byte TCP SYN from `src:sport` to `dst:dport`, checksummed.
fn syn_packet(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.wrapping_mul(2_654_435_761).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 6, 0, 20]);
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64; // TTL
            ip[9] = 6; // TCP
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, 6]);
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6; // next header: TCP
            ip[7] = 64; // hop limit
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&ip);
        }
        _ => panic!("source and destination of one family"),
    }
    pseudo.extend_from_slice(&tcp);
    let sum = checksum(&pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    out.extend_from_slice(&tcp);
}

/// The Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Sandbox {
    /// Elements now in each of rampart's sets whose name ends with `suffix`
    /// (`_c`: conn counts, `_k`: keys of a rate window, `_b`: token buckets).
    pub fn state_elements(&self, suffix: &str) -> Vec<usize> {
        let out = self.exec(
            &self.srv.ns,
            &["nft", "-j", "list", "table", "inet", "rampart"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("set"))
            .filter(|s| s["name"].as_str().is_some_and(|n| n.ends_with(suffix)))
            .map(|s| s["elem"].as_array().map_or(0, Vec::len))
            .collect()
    }
}
