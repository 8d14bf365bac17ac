//! `Policy::validate`: a policy read from a file must be one the grammar could have
//! made. The values are bounded by their parsers (see `values`); this checks how a
//! rule's parts go together, with the grammar's rules.

use ipnet::IpNet;
use thiserror::Error;

use super::{Action, Family, Policy, Proto, Rule, MAX_CONN};

/// Why a policy is not one the grammar could have made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{problem}")]
pub struct ValidationError {
    /// The rule at fault (0-based), or None for the policy's settings.
    pub rule: Option<usize>,
    /// What is wrong, and what to write instead.
    pub problem: String,
}

impl Policy {
    /// Check every rule, and that IPv4 rules come before IPv6 ones (rule numbers depend
    /// on it).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v6_seen = false;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |problem: String| ValidationError {
                rule: Some(i),
                problem,
            };
            rule.validate().map_err(at)?;
            match rule.family {
                Family::V6 => v6_seen = true,
                Family::V4 if v6_seen => {
                    return Err(at(
                        "an IPv4 rule follows IPv6 rules: put IPv4 rules first".into()
                    ))
                }
                Family::V4 => {}
            }
        }
        Ok(())
    }
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

fn family_word(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

impl Rule {
    /// Check how the rule's parts go together; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        for (side, end) in [("from", &self.from), ("to", &self.to)] {
            let Some(net) = end.addr else { continue };
            if family_of(&net) != self.family {
                return Err(format!(
                    "{side} address {net} is not of the rule's family = \"{}\"",
                    family_word(self.family)
                ));
            }
            if net.prefix_len() == 0 {
                return Err(format!(
                    "{side} address {net} is anywhere: leave {side}.addr out"
                ));
            }
            // As UFW: an IPv6 network keeps host bits as typed (the kernel gets its
            // network); an IPv4 one is always written without.
            if net.trunc() != net && matches!(net, ipnet::IpNet::V4(_)) {
                return Err(format!(
                    "{side} address {net} has host bits set: write {}",
                    net.trunc()
                ));
            }
        }
        let sports = self.from.ports.as_ref();
        let dports = self.to.ports.as_ref();
        let tcp_udp = matches!(self.proto, Proto::Tcp | Proto::Udp);
        if (sports.is_some() || dports.is_some()) && !self.proto.has_ports() {
            return Err(format!("proto {} takes no ports", self.proto.word()));
        }
        if sports.into_iter().chain(dports).any(|p| p.is_multi()) && !tcp_udp {
            return Err("a port list or range needs proto \"tcp\" or \"udp\"".into());
        }
        if matches!(self.proto, Proto::Ipv6 | Proto::Igmp) && self.family == Family::V6 {
            return Err(format!("proto {} is IPv4 only", self.proto.word()));
        }
        if self.except.is_some() && dports.is_none() {
            return Err("except needs destination ports to take the exceptions from".into());
        }
        if self.out_iface.is_some() && self.direction != super::Direction::Forward {
            return Err("out_iface is for route rules (direction = \"forward\")".into());
        }
        for end in [&self.from, &self.to] {
            if let Some(app) = &end.app {
                if !super::profiles::valid_name(app) {
                    return Err(format!(
                        "bad application name '{}': at most {} characters, not starting with a digit, no quotes, '/' or control characters",
                        super::inert(app),
                        super::profiles::MAX_PROFILE_NAME
                    ));
                }
                if end.ports.is_none() {
                    return Err(
                        "an app needs the ports it stands for (run 'rampart app update NAME')"
                            .into(),
                    );
                }
            }
        }
        if let Some(c) = &self.comment {
            super::check_comment(c).map_err(|e| e.to_string())?;
        }
        let Some(limit) = &self.limit else {
            return Ok(());
        };
        if self.action != Action::Limit {
            return Err(format!(
                "a {} rule takes no limit settings: use action = \"limit\" or remove [rule.limit]",
                self.action.word()
            ));
        }
        if let Some(rate) = limit.rate {
            rate.check().map_err(|e| e.to_string())?;
        }
        limit.per.check().map_err(|e| e.to_string())?;
        if let Some(n) = limit.capacity {
            if !(1..=super::MAX_CAPACITY).contains(&n) {
                return Err(format!(
                    "capacity {n} is out of bounds: use 1 to {}",
                    super::MAX_CAPACITY
                ));
            }
        }
        match limit.conn {
            None if limit.rate.is_none() => {
                Err("a limit needs a rate, a conn, or both (or no [rule.limit] for UFW's)".into())
            }
            Some(n) if !(1..=MAX_CONN).contains(&n) => {
                Err(format!("conn {n} is out of bounds: use 1 to {MAX_CONN}"))
            }
            Some(_) if dports.is_none() || !tcp_udp => {
                Err("conn needs destination ports and proto \"tcp\" or \"udp\"".into())
            }
            _ => Ok(()),
        }
    }
}
