//! Plain user rules: one nft rule per model rule (a log rule first when it logs).

use nftables::expr::MetaKey;
use nftables::stmt::Statement;

use crate::model::{Action, Direction, Family, Proto, Rule};

use super::nft::*;
use super::Builder;

impl Builder {
    /// Statements for one user rule (a log rule first, when the rule logs). `family`:
    /// with the match on the rule's family that a rule with no address needs, unless it
    /// stands for both families' copies.
    /// A user rule's statements, its main rule tagged (see [`super::rule_tag`]).
    pub(super) fn push_user_rule(
        &mut self,
        chain: &str,
        rule: &Rule,
        family: bool,
        families: &str,
    ) {
        let mut stmts = self.user_rule(rule, family);
        let main = stmts.pop().expect("a user rule has its main rule");
        for s in stmts {
            self.rule(chain, s);
        }
        let tag = self.tag(rule, families);
        self.rule_tagged(chain, main, tag);
    }

    pub(super) fn user_rule(&self, rule: &Rule, family: bool) -> Vec<Vec<Statement<'static>>> {
        let matches = rule_matches(rule, family);
        let mut out: Vec<_> = self.rule_log(rule, &matches).into_iter().collect();
        let mut main = matches;
        main.push(counter());
        main.push(match rule.action {
            Action::Allow | Action::Limit => Statement::Accept(None),
            Action::Deny => Statement::Drop(None),
            Action::Reject => reject_for(rule.proto),
        });
        out.push(main);
        out
    }
}

/// An interface as nft matches it: UFW's `eth+` is nft's `eth*`.
fn iface_pattern(iface: &crate::model::Iface) -> String {
    match iface.prefix() {
        Some(p) => format!("{p}*"),
        None => iface.as_str().to_string(),
    }
}

/// The match statements of a user rule (`family`: see [`user_rule`]).
pub fn rule_matches(rule: &Rule, family: bool) -> Vec<Statement<'static>> {
    let mut m = Vec::new();
    if let Some(iface) = &rule.iface {
        let key = match rule.direction {
            Direction::In | Direction::Forward => MetaKey::Iifname,
            Direction::Out => MetaKey::Oifname,
        };
        m.push(m_eq(meta(key), s(&iface_pattern(iface))));
    }
    if let Some(iface) = &rule.out_iface {
        m.push(m_eq(meta(MetaKey::Oifname), s(&iface_pattern(iface))));
    }
    let ip = match rule.family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    if family && rule.from.addr.is_none() && rule.to.addr.is_none() {
        m.push(m_eq(
            meta(MetaKey::Nfproto),
            s(match rule.family {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            }),
        ));
    }
    if let Some(net) = rule.from.addr {
        m.push(m_eq(payload(ip, "saddr"), net_expr(net)));
    }
    // A route rule matches the destination the connection was opened to, before any
    // NAT (the same for traffic no one rewrote): so `route deny 8080/tcp` means the
    // port Docker published, not the container's port it is forwarded to.
    let route = rule.direction == Direction::Forward;
    let dport = || {
        if route {
            ct_original("proto-dst", None)
        } else {
            payload("th", "dport")
        }
    };
    if let Some(net) = rule.to.addr {
        let daddr = if route {
            ct_original("daddr", Some(ip))
        } else {
            payload(ip, "daddr")
        };
        m.push(m_eq(daddr, net_expr(net)));
    }
    let has_ports = rule.from.ports.is_some() || rule.to.ports.is_some();
    match (rule.proto, has_ports) {
        (Proto::Any, false) => {}
        (Proto::Any, true) => m.push(m_eq(meta(MetaKey::L4proto), set(vec![s("tcp"), s("udp")]))),
        (p, _) => m.push(m_eq(meta(MetaKey::L4proto), s(p.word()))),
    }
    if let Some(ports) = &rule.from.ports {
        m.push(m_eq(payload("th", "sport"), ports_expr(ports)));
    }
    if let Some(ports) = &rule.to.ports {
        m.push(m_eq(dport(), ports_expr(ports)));
    }
    if let Some(except) = &rule.except {
        m.push(m_ne(dport(), ports_expr(except)));
    }
    m
}
