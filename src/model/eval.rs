//! The reference reading of the rules: which packets a rule matches, what the rules
//! decide (first match wins), and which rule covers another. The optimiser is checked
//! against it.

use ipnet::IpNet;

use super::{Action, Direction, Family, Policy, Ports, Proto, Rule};

impl Rule {
    /// The protocols the rule matches: `Any` with ports is TCP and UDP.
    pub(crate) fn protocols(&self) -> Vec<Proto> {
        match self.proto {
            Proto::Any if self.from.ports.is_some() || self.to.ports.is_some() => {
                vec![Proto::Tcp, Proto::Udp]
            }
            p => vec![p],
        }
    }

    /// Whether this rule is terminal and matches everything `other` matches.
    pub fn covers(&self, other: &Rule) -> bool {
        let mine = self.protocols();
        let proto_ok = mine == [Proto::Any] || other.protocols().iter().all(|p| mine.contains(p));
        let addr_ok = |a: &Option<IpNet>, b: &Option<IpNet>| match (a, b) {
            (None, _) => true,
            (Some(a), Some(b)) => a.contains(b),
            (Some(_), None) => false,
        };
        let ports_ok = |a: &Option<Ports>, ex: Option<&Ports>, b: &Option<Ports>| match (a, b) {
            (None, _) if ex.is_none() => true,
            (_, None) => false,
            (a, Some(b)) => b.0.iter().all(|r| {
                let inside = a
                    .as_ref()
                    .is_none_or(|a| a.0.iter().any(|x| x.first <= r.first && r.last <= x.last));
                let hole =
                    ex.is_some_and(|e| e.0.iter().any(|x| x.first <= r.last && r.first <= x.last));
                inside && !hole
            }),
        };
        self.is_terminal()
            && self.direction == other.direction
            && self.family == other.family
            && (self.iface.is_none() || self.iface == other.iface)
            && (self.out_iface.is_none() || self.out_iface == other.out_iface)
            && proto_ok
            && addr_ok(&self.from.addr, &other.from.addr)
            && addr_ok(&self.to.addr, &other.to.addr)
            && ports_ok(&self.from.ports, None, &other.from.ports)
            && ports_ok(&self.to.ports, self.except.as_ref(), &other.to.ports)
    }
}

impl Policy {
    /// The number of the first earlier rule that decides every connection rule `n`
    /// (1-based) could match, so that rule `n` can never match.
    pub fn shadowed_by(&self, n: usize) -> Option<usize> {
        let rule = self.rules.get(n.checked_sub(1)?)?;
        self.rules[..n - 1]
            .iter()
            .position(|e| e.covers(rule))
            .map(|i| i + 1)
    }
}

/// The first packet of a new connection, as the user rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// IP family.
    pub family: Family,
    /// To this host (`In`) or from it (`Out`).
    pub direction: Direction,
    /// Input interface (for `In` and `Forward`) or output interface (for `Out`).
    pub iface: String,
    /// Output interface of a forwarded packet (empty otherwise).
    pub out_iface: String,
    /// Protocol (never `Any`).
    pub proto: Proto,
    /// Source address.
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
}

/// What the user rules decide for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted.
    Accept,
    /// Dropped.
    Drop,
    /// Refused.
    Reject,
    /// No rule decided: the default policy will.
    NoMatch,
}

impl Rule {
    /// Whether the rule matches the packet (the reference reading of a rule).
    pub fn matches(&self, p: &Packet) -> bool {
        let has_ports = self.from.ports.is_some() || self.to.ports.is_some();
        let proto_ok = match self.proto {
            Proto::Any if has_ports => matches!(p.proto, Proto::Tcp | Proto::Udp),
            Proto::Any => true,
            other => other == p.proto,
        };
        let net_ok = |n: &Option<IpNet>, a: &std::net::IpAddr| n.is_none_or(|n| n.contains(a));
        let ports_ok =
            |ports: &Option<Ports>, port: u16| ports.as_ref().is_none_or(|x| x.contains(port));
        self.direction == p.direction
            && self.family == p.family
            && self.iface.as_ref().is_none_or(|i| i.matches(&p.iface))
            && self
                .out_iface
                .as_ref()
                .is_none_or(|i| i.matches(&p.out_iface))
            && proto_ok
            && net_ok(&self.from.addr, &p.src)
            && net_ok(&self.to.addr, &p.dst)
            && ports_ok(&self.from.ports, p.sport)
            && ports_ok(&self.to.ports, p.dport)
            && !self.except.as_ref().is_some_and(|e| e.contains(p.dport))
    }
}

impl Policy {
    /// The reference first-match evaluation of the user rules. A `limit` rule is read
    /// as if its limit were not reached (accept, or go on with `then continue`).
    pub fn decide(&self, p: &Packet) -> Decision {
        for rule in self.rules.iter().filter(|r| r.matches(p)) {
            return match rule.action {
                Action::Allow => Decision::Accept,
                Action::Deny => Decision::Drop,
                Action::Reject => Decision::Reject,
                Action::Limit if rule.is_terminal() => Decision::Accept,
                Action::Limit => continue,
            };
        }
        Decision::NoMatch
    }
}
