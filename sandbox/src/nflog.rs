//! A reader of an nflog group, so a test sees the log records a firewall makes in its
//! namespace (the kernel log takes none from a namespace other than the host's own,
//! unless a host-wide sysctl says so, which tests never change).
//!
//! It speaks nfnetlink_log directly: bind the group, copy 64 bytes of each packet,
//! and read each record's prefix and the packet's source address.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use crate::in_netns;

/// nfnetlink subsystem of nflog.
const NFNL_SUBSYS_ULOG: u16 = 4;
/// Message types of that subsystem.
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
/// Config attributes and the bind command.
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
/// Packet attributes.
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Netlink header flags and the error message type.
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
/// Bytes of each packet copied (enough for an IPv6 header).
const COPY_RANGE: u32 = 64;

/// One log record: its prefix and the logged packet's source address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub prefix: String,
    pub src: Option<IpAddr>,
}

/// A socket bound to one nflog group of one network namespace.
pub struct Nflog {
    fd: OwnedFd,
}

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// A config message for `group` carrying `attrs`.
fn config(group: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0u8 /* AF_UNSPEC */, 0 /* version */];
    body.extend_from_slice(&group.to_be_bytes());
    for (kind, payload) in attrs {
        attr(&mut body, *kind, payload);
    }
    let mut msg = Vec::new();
    msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&body);
    msg
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// The netlink messages of one datagram: (type, payload after the netlink header).
fn messages(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = (u32_at(b, 0) as usize).clamp(16, b.len());
        out.push((u16_at(b, 4), &b[16..len]));
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    out
}

/// A record from a packet message's attributes (after the 4-byte nfgenmsg).
fn record(body: &[u8]) -> Record {
    let mut rec = Record {
        prefix: String::new(),
        src: None,
    };
    let mut a = body.get(4..).unwrap_or(&[]);
    while a.len() >= 4 {
        let len = (u16_at(a, 0) as usize).clamp(4, a.len());
        let value = &a[4..len];
        match u16_at(a, 2) & 0x3fff {
            NFULA_PREFIX => {
                let end = value.iter().position(|&c| c == 0).unwrap_or(value.len());
                rec.prefix = String::from_utf8_lossy(&value[..end]).into_owned();
            }
            NFULA_PAYLOAD => rec.src = source(value),
            _ => {}
        }
        a = &a[len.next_multiple_of(4).min(a.len())..];
    }
    rec
}

/// The source address of an IP packet.
fn source(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(p.get(12..16)?).ok()?,
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(p.get(8..24)?).ok()?,
        ))),
        _ => None,
    }
}

impl Nflog {
    /// Bind nflog group `group` in namespace `ns` (records are passed on one by one).
    pub fn bind(ns: &str, group: u16) -> io::Result<Nflog> {
        let fd = in_netns(ns, || {
            socket(
                AddressFamily::Netlink,
                SockType::Raw,
                SockFlag::SOCK_CLOEXEC,
                SockProtocol::NetlinkNetFilter,
            )
        })?
        .map_err(io::Error::from)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let log = Nflog { fd };
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        for attrs in [
            vec![(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])],
            vec![(NFULA_CFG_MODE, mode)],
            vec![(NFULA_CFG_QTHRESH, 1u32.to_be_bytes().to_vec())],
        ] {
            send(
                log.fd.as_raw_fd(),
                &config(group, &attrs),
                MsgFlags::empty(),
            )?;
            log.ack()?;
        }
        Ok(log)
    }

    /// Wait for the kernel's answer to a config message.
    fn ack(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        self.timeout(Duration::from_secs(2))?;
        let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        for (kind, body) in messages(&buf[..n]) {
            if kind == NLMSG_ERROR && body.len() >= 4 {
                let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
            }
        }
        Ok(())
    }

    fn timeout(&self, d: Duration) -> io::Result<()> {
        let tv = TimeVal::new(d.as_secs() as _, d.subsec_micros() as _);
        setsockopt(&self.fd, sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)
    }

    /// The records that arrive until none has for `quiet` (at most 10 s in all).
    pub fn records(&self, quiet: Duration) -> Vec<Record> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + Duration::from_secs(10);
        let _ = self.timeout(quiet);
        while Instant::now() < end {
            let Ok(n) = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) else {
                break;
            };
            for (kind, body) in messages(&buf[..n]) {
                if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                    out.push(record(body));
                }
            }
        }
        out
    }
}
