//! `rampart check`: what the reference reading of the rules finds wrong with a policy.
//!
//! - error: a rule that can never match (an earlier rule decides all it would), and
//!   UFW's surprise, a `limit` that decides traffic a later deny or reject was meant
//!   for (under the limit it accepts, over it refuses: the later rule never sees it);
//! - warning: a rule made redundant by a later one that decides the same way with
//!   nothing in between deciding otherwise; a rule for an interface this host does not
//!   have; an IPv4 rule that lets clients in whose IPv6 twin is missing; an incoming
//!   default of allow;
//! - info: what is open to any source (exposure).

use ipnet::IpNet;
use serde::Serialize;

use super::{Action, Direction, Family, Iface, Policy, Ports, Proto, Rule, Verdict};
use crate::observe::rule_command;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// What kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Shadowed,
    LimitSurprise,
    Redundant,
    NoSuchInterface,
    NoIpv6Twin,
    DefaultAllow,
    Exposed,
}

/// One finding: about rule `rule` (1-based), because of rule `other` if there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<usize>,
    pub message: String,
}

/// The verdict a terminal rule gives what it matches (a limit: it decides, as accept).
fn verdict(rule: &Rule) -> Option<Verdict> {
    if !rule.is_terminal() {
        return None;
    }
    Some(match rule.action {
        Action::Allow | Action::Limit => Verdict::Allow,
        Action::Deny => Verdict::Deny,
        Action::Reject => Verdict::Reject,
    })
}

fn nets_meet(a: &Option<IpNet>, b: &Option<IpNet>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.contains(b) || b.contains(a),
        _ => true,
    }
}

fn ports_meet(a: &Option<Ports>, b: &Option<Ports>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.0.iter()
                .any(|x| b.0.iter().any(|y| x.first <= y.last && y.first <= x.last))
        }
        _ => true,
    }
}

fn ifaces_meet(a: &Option<Iface>, b: &Option<Iface>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (a.prefix(), b.prefix()) {
            (None, None) => a == b,
            (Some(p), None) => b.as_str().starts_with(p),
            (None, Some(q)) => a.as_str().starts_with(q),
            (Some(p), Some(q)) => p.starts_with(q) || q.starts_with(p),
        },
        _ => true,
    }
}

/// Whether `a`'s `except` leaves out every destination port of `b`.
fn excepts_all(a: &Rule, b: &Rule) -> bool {
    match (&a.except, &b.to.ports) {
        (Some(ex), Some(ports)) => ports
            .0
            .iter()
            .all(|r| ex.0.iter().any(|x| x.first <= r.first && r.last <= x.last)),
        _ => false,
    }
}

/// Whether some connection matches both rules (an `except` counts only when it leaves
/// out all of the other rule's ports: this may say yes for a pair that meets nowhere).
pub fn meet(a: &Rule, b: &Rule) -> bool {
    if excepts_all(a, b) || excepts_all(b, a) {
        return false;
    }
    let (pa, pb) = (a.protocols(), b.protocols());
    let proto_ok = pa == [Proto::Any] || pb == [Proto::Any] || pa.iter().any(|p| pb.contains(p));
    a.direction == b.direction
        && a.family == b.family
        && ifaces_meet(&a.iface, &b.iface)
        && ifaces_meet(&a.out_iface, &b.out_iface)
        && proto_ok
        && nets_meet(&a.from.addr, &b.from.addr)
        && nets_meet(&a.to.addr, &b.to.addr)
        && ports_meet(&a.from.ports, &b.from.ports)
        && ports_meet(&a.to.ports, &b.to.ports)
}

/// "rule N (COMMAND)".
fn named(policy: &Policy, n: usize) -> String {
    format!("rule {n} ({})", rule_command(&policy.rules[n - 1]))
}

/// The destination ports and protocol of a rule, as `status` writes them.
fn service(rule: &Rule) -> String {
    let ports = rule
        .to
        .ports
        .as_ref()
        .map_or("all ports".to_string(), |p| p.to_string());
    match rule.proto {
        Proto::Any => ports,
        p => format!("{ports}/{}", p.word()),
    }
}

/// Check `policy`; `ifaces` are the host's interface names.
pub fn check(policy: &Policy, ifaces: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let rules = &policy.rules;
    let mut dead = vec![false; rules.len()];
    for (i, rule) in rules.iter().enumerate() {
        let n = i + 1;
        if let Some(m) = policy.shadowed_by(n) {
            dead[i] = true;
            let earlier = &rules[m - 1];
            let (kind, why) = if earlier.action == Action::Limit && rule.action != Action::Limit {
                (
                    Kind::LimitSurprise,
                    "decides all of it (accepts what is under the limit, refuses what is over); add 'then continue' to the limit to let later rules decide",
                )
            } else {
                (
                    Kind::Shadowed,
                    "decides every connection this rule would match",
                )
            };
            out.push(Finding {
                level: Level::Error,
                kind,
                rule: Some(n),
                other: Some(m),
                message: format!(
                    "{} can never match: {} above it {why}",
                    named(policy, n),
                    named(policy, m)
                ),
            });
            continue;
        }
        // UFW's surprise, in part: an earlier terminal limit takes some of this
        // refusing rule's traffic.
        if matches!(rule.action, Action::Deny | Action::Reject) {
            if let Some(m) = rules[..i]
                .iter()
                .position(|e| e.action == Action::Limit && e.is_terminal() && meet(e, rule))
            {
                out.push(Finding {
                    level: Level::Error,
                    kind: Kind::LimitSurprise,
                    rule: Some(n),
                    other: Some(m + 1),
                    message: format!(
                        "{} never sees the connections {} also matches: the limit accepts them while under it (UFW's meaning); move this rule above it, or add 'then continue' to the limit",
                        named(policy, n),
                        named(policy, m + 1)
                    ),
                });
            }
        }
    }
    // Redundant: a later rule decides the same way and covers it, and nothing in between
    // decides otherwise for any of its connections.
    for (i, rule) in rules.iter().enumerate() {
        let Some(v) = verdict(rule) else { continue };
        if dead[i] {
            continue;
        }
        for (j, later) in rules.iter().enumerate().skip(i + 1) {
            if dead[j] {
                continue;
            }
            let alike =
                later.action == rule.action && later.log == rule.log && later.limit == rule.limit;
            if verdict(later) == Some(v) && alike && later.covers(rule) {
                out.push(Finding {
                    level: Level::Warning,
                    kind: Kind::Redundant,
                    rule: Some(i + 1),
                    other: Some(j + 1),
                    message: format!(
                        "{} is redundant: {} below it decides the same for all it matches, and no rule between decides otherwise",
                        named(policy, i + 1),
                        named(policy, j + 1)
                    ),
                });
                break;
            }
            // A rule between that decides otherwise (or limits otherwise) for some of
            // its connections: removing this one would change them.
            if !alike && meet(later, rule) {
                break;
            }
        }
    }
    // Interfaces the host does not have.
    for (i, rule) in rules.iter().enumerate() {
        for iface in [&rule.iface, &rule.out_iface].into_iter().flatten() {
            if !ifaces.iter().any(|name| iface.matches(name)) {
                out.push(Finding {
                    level: Level::Warning,
                    kind: Kind::NoSuchInterface,
                    rule: Some(i + 1),
                    other: None,
                    message: format!(
                        "{} is for interface '{iface}', which this host does not have (now)",
                        named(policy, i + 1)
                    ),
                });
            }
        }
    }
    // IPv4 rules that let clients in, with no IPv6 rule for the same service.
    for (i, rule) in rules.iter().enumerate() {
        let admits = matches!(rule.action, Action::Allow | Action::Limit);
        let addressed = rule.from.addr.is_some() || rule.to.addr.is_some();
        if dead[i] || rule.family != Family::V4 || !admits || !addressed || rule.to.ports.is_none()
        {
            continue;
        }
        let twin = rules.iter().any(|r| {
            r.family == Family::V6
                && matches!(r.action, Action::Allow | Action::Limit)
                && r.direction == rule.direction
                && r.proto == rule.proto
                && r.to.ports == rule.to.ports
        });
        if !twin {
            out.push(Finding {
                level: Level::Warning,
                kind: Kind::NoIpv6Twin,
                rule: Some(i + 1),
                other: None,
                message: format!(
                    "{} is for IPv4 only, and no IPv6 rule lets clients in to {}: add one if IPv6 clients should get in",
                    named(policy, i + 1),
                    service(rule)
                ),
            });
        }
    }
    if policy.defaults.incoming == Verdict::Allow {
        out.push(Finding {
            level: Level::Warning,
            kind: Kind::DefaultAllow,
            rule: None,
            other: None,
            message: "the default for incoming is allow: every port no rule refuses is open to any source".into(),
        });
    }
    // Exposure: incoming services any source reaches.
    for (i, rule) in rules.iter().enumerate() {
        let any_source = rule.from.addr.is_none() && rule.iface.is_none();
        if dead[i]
            || rule.direction != Direction::In
            || !matches!(rule.action, Action::Allow | Action::Limit)
            || !rule.is_terminal()
            || !any_source
        {
            continue;
        }
        // One line for a rule typed once (its IPv6 copy says the same).
        let twin_before = rules[..i]
            .iter()
            .any(|r| r.family != rule.family && rule_command(r) == rule_command(rule));
        if twin_before {
            continue;
        }
        let families = if rules[i + 1..]
            .iter()
            .any(|r| r.family != rule.family && rule_command(r) == rule_command(rule))
        {
            "IPv4 and IPv6"
        } else if rule.family == Family::V4 {
            "IPv4"
        } else {
            "IPv6"
        };
        let how = if rule.action == Action::Limit {
            ", limited"
        } else {
            ""
        };
        out.push(Finding {
            level: Level::Info,
            kind: Kind::Exposed,
            rule: Some(i + 1),
            other: None,
            message: format!(
                "open to any source ({families}{how}): {} by {}",
                service(rule),
                named(policy, i + 1)
            ),
        });
    }
    out.sort_by_key(|f| (std::cmp::Reverse(f.level), f.rule));
    out
}
