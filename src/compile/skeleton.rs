//! UFW's skeleton: the before and after rules of every base chain, and what falls
//! through to the default policy.

use nftables::expr::Verdict as NftVerdict;
use nftables::expr::{Expression, MetaKey, NamedExpression, SetItem};
use nftables::stmt::{self, Statement};

use crate::model::{Proto, Verdict};

use super::nft::*;
use super::{
    Builder, CHAIN_BEFORE_ICMP, CHAIN_BEFORE_UDP, CHAIN_FORWARD, CHAIN_INPUT, CHAIN_OUTPUT,
    CHAIN_REJECT,
};

/// DHCP server port (the source of a DHCP client's answers).
pub const DHCP_SERVER_PORT: u32 = 67;
/// DHCP client port.
pub const DHCP_CLIENT_PORT: u32 = 68;
/// DHCPv6 server port.
pub const DHCPV6_SERVER_PORT: u32 = 547;
/// DHCPv6 client port.
pub const DHCPV6_CLIENT_PORT: u32 = 546;
/// mDNS port, and its IPv4 and IPv6 multicast groups.
pub const MDNS_PORT: u32 = 5353;
/// mDNS IPv4 group.
pub const MDNS_V4: &str = "224.0.0.251";
/// mDNS IPv6 group.
pub const MDNS_V6: &str = "ff02::fb";
/// UPnP (SSDP) discovery port.
pub const UPNP_PORT: u32 = 1900;
/// UPnP IPv4 group.
pub const UPNP_V4: &str = "239.255.255.250";
/// UPnP IPv6 group.
pub const UPNP_V6: &str = "ff02::f";
/// IPv6 link-local sources (`fe80::/10`).
pub const LINK_LOCAL_V6: (&str, u32) = ("fe80::", 10);
/// Hop limit of neighbour discovery packets that come from on-link (RFC 4861).
pub const ND_HOP_LIMIT: u32 = 255;
/// NetBIOS name and datagram services (UDP), dropped quietly by UFW's after.rules.
pub const NETBIOS_UDP_PORTS: [u32; 2] = [137, 138];
/// NetBIOS session and SMB (TCP), dropped quietly by UFW's after.rules.
pub const NETBIOS_TCP_PORTS: [u32; 2] = [139, 445];

/// ICMPv6 neighbour discovery and router messages.
pub(super) const ICMPV6_ND: &[&str] = &[
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];

/// ICMPv6 multicast listener reports (sent by this host).
pub(super) const ICMPV6_MLD_REPORTS: &[&str] = &["mld-listener-report", "mld2-listener-report"];

impl Builder {
    /// `reject_packet`: TCP gets a reset, anything else ICMP(v6) port-unreachable.
    pub(super) fn add_reject_chain(&mut self) {
        self.chain(CHAIN_REJECT);
        // meta l4proto tcp reject with tcp reset
        self.rule(
            CHAIN_REJECT,
            vec![
                m_eq(meta(MetaKey::L4proto), s("tcp")),
                Statement::Reject(Some(stmt::Reject::new(
                    Some(stmt::RejectType::TCPReset),
                    None,
                ))),
            ],
        );
        // reject with icmpx port-unreachable
        self.rule(
            CHAIN_REJECT,
            vec![Statement::Reject(Some(stmt::Reject::new(
                Some(stmt::RejectType::ICMPX),
                Some(nftables::types::RejectCode::PortUnreach),
            )))],
        );
    }

    /// UFW's before.rules / before6.rules for input.
    pub(super) fn input_before(&mut self) {
        let c = CHAIN_INPUT;
        // iif "lo" accept
        self.rule(c, vec![m_eq(meta(MetaKey::Iif), s("lo")), accept()]);
        // ct state established,related accept
        self.rule(c, vec![established(), accept()]);
        // ct state invalid drop
        self.audit_invalid();
        self.rule(c, vec![m_in(ct("state"), s("invalid")), drop()]);
        // The rest of before.rules is about ICMP and a few UDP services: one lookup by
        // protocol sends those packets to their rules, so a TCP connection's first
        // packet passes them all in one step.
        self.chain(CHAIN_BEFORE_ICMP);
        self.chain(CHAIN_BEFORE_UDP);
        let dispatch = |proto: &'static str, chain: &'static str| {
            SetItem::Mapping(
                word(proto),
                Expression::Verdict(NftVerdict::Jump(stmt::JumpTarget {
                    target: chain.into(),
                })),
            )
        };
        self.rule(
            c,
            vec![Statement::VerdictMap(stmt::VerdictMap {
                key: meta(MetaKey::L4proto),
                data: Expression::Named(NamedExpression::Set(vec![
                    dispatch("icmp", CHAIN_BEFORE_ICMP),
                    dispatch("ipv6-icmp", CHAIN_BEFORE_ICMP),
                    dispatch("udp", CHAIN_BEFORE_UDP),
                ])),
            })],
        );
        let c = CHAIN_BEFORE_ICMP;
        // icmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request } accept
        self.rule(
            c,
            vec![
                m_eq(
                    payload("icmp", "type"),
                    set_of(&[
                        "destination-unreachable",
                        "time-exceeded",
                        "parameter-problem",
                        "echo-request",
                    ]),
                ),
                accept(),
            ],
        );
        // IPv6: errors and echo.
        self.rule(
            c,
            vec![
                m_eq(
                    payload("icmpv6", "type"),
                    set_of(&[
                        "destination-unreachable",
                        "packet-too-big",
                        "time-exceeded",
                        "parameter-problem",
                        "echo-request",
                        "echo-reply",
                    ]),
                ),
                accept(),
            ],
        );
        // Neighbour discovery and router advertisements, only from on-link (hop limit 255).
        self.rule(
            c,
            vec![
                m_eq(payload("icmpv6", "type"), set_of(ICMPV6_ND)),
                m_eq(payload("ip6", "hoplimit"), num(ND_HOP_LIMIT)),
                accept(),
            ],
        );
        // Multicast listener messages from link-local sources.
        self.rule(
            c,
            vec![
                m_eq(
                    payload("ip6", "saddr"),
                    prefix(LINK_LOCAL_V6.0, LINK_LOCAL_V6.1),
                ),
                m_eq(
                    payload("icmpv6", "type"),
                    set_of(&[
                        "mld-listener-query",
                        "mld-listener-report",
                        "mld-listener-done",
                        "mld2-listener-report",
                    ]),
                ),
                accept(),
            ],
        );
        let c = CHAIN_BEFORE_UDP;
        // DHCP client: udp 67 → 68; DHCPv6 client: fe80::/10 547 → 546.
        self.rule(
            c,
            vec![
                m_eq(meta(MetaKey::Nfproto), s("ipv4")),
                m_eq(payload("udp", "sport"), num(DHCP_SERVER_PORT)),
                m_eq(payload("udp", "dport"), num(DHCP_CLIENT_PORT)),
                accept(),
            ],
        );
        self.rule(
            c,
            vec![
                m_eq(
                    payload("ip6", "saddr"),
                    prefix(LINK_LOCAL_V6.0, LINK_LOCAL_V6.1),
                ),
                m_eq(payload("udp", "sport"), num(DHCPV6_SERVER_PORT)),
                m_eq(payload("udp", "dport"), num(DHCPV6_CLIENT_PORT)),
                accept(),
            ],
        );
        // mDNS and UPnP discovery.
        for (ip, addr, port) in [
            ("ip", MDNS_V4, MDNS_PORT),
            ("ip", UPNP_V4, UPNP_PORT),
            ("ip6", MDNS_V6, MDNS_PORT),
            ("ip6", UPNP_V6, UPNP_PORT),
        ] {
            self.rule(
                c,
                vec![
                    m_eq(payload(ip, "daddr"), s(addr)),
                    m_eq(payload("udp", "dport"), num(port)),
                    accept(),
                ],
            );
        }
    }

    /// UFW's after.rules: quiet handling of broadcast noise, with the default verdict
    /// and without logging.
    pub(super) fn input_after(&mut self, default: Verdict) {
        let c = CHAIN_INPUT;
        let v = || verdict_stmt(default, Proto::Any);
        self.rule(
            c,
            vec![
                m_eq(
                    payload("udp", "dport"),
                    set(NETBIOS_UDP_PORTS
                        .into_iter()
                        .chain([DHCP_SERVER_PORT, DHCP_CLIENT_PORT])
                        .map(num)
                        .collect()),
                ),
                v(),
            ],
        );
        self.rule(
            c,
            vec![
                m_eq(
                    payload("tcp", "dport"),
                    set(NETBIOS_TCP_PORTS.into_iter().map(num).collect()),
                ),
                v(),
            ],
        );
        self.rule(c, vec![m_eq(meta(MetaKey::Pkttype), s("broadcast")), v()]);
    }

    pub(super) fn output_before(&mut self) {
        let c = CHAIN_OUTPUT;
        self.rule(c, vec![m_eq(meta(MetaKey::Oif), s("lo")), accept()]);
        self.rule(c, vec![established(), accept()]);
        // Neighbour discovery must work even under "default deny outgoing".
        self.rule(
            c,
            vec![
                m_eq(
                    payload("icmpv6", "type"),
                    set_of(&[ICMPV6_ND, ICMPV6_MLD_REPORTS].concat()),
                ),
                accept(),
            ],
        );
    }

    pub(super) fn forward_before(&mut self) {
        let c = CHAIN_FORWARD;
        self.rule(c, vec![established(), accept()]);
    }

    /// Logging of what falls through to the policy, then the policy itself when it is
    /// "reject" (a chain policy can only accept or drop).
    pub(super) fn policy_tail(&mut self, chain: &str, default: Verdict) {
        self.policy_log(chain, default);
        if default == Verdict::Reject {
            self.rule(chain, vec![verdict_stmt(Verdict::Reject, Proto::Any)]);
        }
    }
}
