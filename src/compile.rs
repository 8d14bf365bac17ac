//! Policy → nft plan. A pure function: no I/O, so it is unit- and property-testable.
//!
//! The plan is one table, `inet rampart`, with base chains for input, output and forward
//! that carry UFW's before/after rules, and one chain per direction with the user rules.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::IpNet;
use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem, CT,
};
use nftables::schema::{Chain, NfListObject, Rule as NftRule, Table};
use nftables::stmt::{self, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::model::{
    Action, Direction, Family, LogLevel, Policy, Ports, Proto, Rule, RuleLog, Verdict,
};

/// rampart's one table (family inet, so one ruleset serves IPv4 and IPv6).
pub const TABLE: &str = "rampart";
/// Table family.
pub const FAMILY: NfFamily = NfFamily::INet;
/// Base chain hooked at input.
pub const CHAIN_INPUT: &str = "input";
/// Base chain hooked at output.
pub const CHAIN_OUTPUT: &str = "output";
/// Base chain hooked at forward.
pub const CHAIN_FORWARD: &str = "forward";
/// User rules for incoming traffic.
pub const CHAIN_USER_INPUT: &str = "user_input";
/// User rules for outgoing traffic.
pub const CHAIN_USER_OUTPUT: &str = "user_output";
/// Refuses a packet the polite way: TCP reset, else ICMP port-unreachable.
pub const CHAIN_REJECT: &str = "reject_packet";
/// Priority of the base chains: the standard filter priority, as UFW's iptables chains.
pub const PRIORITY_FILTER: i32 = 0;
/// Log rate for UFW's logging: 3 per minute, burst 10.
pub const LOG_RATE_PER_MINUTE: u32 = 3;
/// Burst of the log rate.
pub const LOG_BURST: u32 = 10;
/// Prefix of every kernel log line rampart makes.
pub const LOG_PREFIX: &str = "RAMPART";

/// The compiled ruleset: every object of rampart's table, in creation order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Table, chains, sets and rules, in the order they are to be added.
    pub objects: Vec<NfListObject<'static>>,
}

impl Plan {
    /// Names of the chains in the plan.
    pub fn chains(&self) -> Vec<&str> {
        self.objects
            .iter()
            .filter_map(|o| match o {
                NfListObject::Chain(c) => Some(c.name.as_ref()),
                _ => None,
            })
            .collect()
    }

    /// Number of rules per chain, in chain order.
    pub fn rule_counts(&self) -> Vec<(String, usize)> {
        self.chains()
            .into_iter()
            .map(|name| {
                let n = self
                    .objects
                    .iter()
                    .filter(|o| matches!(o, NfListObject::Rule(r) if r.chain == name))
                    .count();
                (name.to_string(), n)
            })
            .collect()
    }
}

/// Compile a policy into the plan of rampart's table.
pub fn compile(policy: &Policy) -> Plan {
    let mut b = Builder::default();
    b.objects.push(NfListObject::Table(Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }));
    let d = policy.defaults;
    b.base_chain(CHAIN_INPUT, NfHook::Input, d.incoming);
    b.base_chain(CHAIN_OUTPUT, NfHook::Output, d.outgoing);
    b.base_chain(CHAIN_FORWARD, NfHook::Forward, d.routed);
    b.chain(CHAIN_USER_INPUT);
    b.chain(CHAIN_USER_OUTPUT);
    b.chain(CHAIN_REJECT);

    // reject_packet: tcp → reset; anything else → ICMP(v6) port-unreachable.
    b.rule(
        CHAIN_REJECT,
        vec![
            m_eq(meta(MetaKey::L4proto), s("tcp")),
            Statement::Reject(Some(stmt::Reject::new(
                Some(stmt::RejectType::TCPReset),
                None,
            ))),
        ],
    );
    b.rule(
        CHAIN_REJECT,
        vec![Statement::Reject(Some(stmt::Reject::new(
            Some(stmt::RejectType::ICMPX),
            Some(nftables::types::RejectCode::PortUnreach),
        )))],
    );

    b.input_before();
    b.rule(CHAIN_INPUT, vec![jump(CHAIN_USER_INPUT)]);
    b.input_after(d.incoming);
    b.policy_tail(CHAIN_INPUT, d.incoming, policy.logging);

    b.output_before();
    b.rule(CHAIN_OUTPUT, vec![jump(CHAIN_USER_OUTPUT)]);
    b.policy_tail(CHAIN_OUTPUT, d.outgoing, policy.logging);

    b.forward_before();
    b.policy_tail(CHAIN_FORWARD, d.routed, policy.logging);

    for rule in &policy.rules {
        let chain = match rule.direction {
            Direction::In => CHAIN_USER_INPUT,
            Direction::Out => CHAIN_USER_OUTPUT,
        };
        for stmts in user_rule(rule) {
            b.rule(chain, stmts);
        }
    }
    Plan { objects: b.objects }
}

/// Statements for one user rule (a log rule first, when the rule logs).
pub fn user_rule(rule: &Rule) -> Vec<Vec<Statement<'static>>> {
    let matches = rule_matches(rule);
    let mut out = Vec::new();
    if rule.log != RuleLog::None {
        let mut log = matches.clone();
        if rule.log == RuleLog::Log {
            log.push(m_in(ct("state"), s("new")));
        }
        log.push(log_limit());
        log.push(log_stmt(&format!(
            "[{LOG_PREFIX} {}] ",
            rule.action.upper()
        )));
        out.push(log);
    }
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

/// The match statements of a user rule.
pub fn rule_matches(rule: &Rule) -> Vec<Statement<'static>> {
    let mut m = Vec::new();
    if let Some(iface) = &rule.iface {
        let key = match rule.direction {
            Direction::In => MetaKey::Iifname,
            Direction::Out => MetaKey::Oifname,
        };
        m.push(m_eq(meta(key), s(iface)));
    }
    let ip = match rule.family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    if rule.from.addr.is_none() && rule.to.addr.is_none() {
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
    if let Some(net) = rule.to.addr {
        m.push(m_eq(payload(ip, "daddr"), net_expr(net)));
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
        m.push(m_eq(payload("th", "dport"), ports_expr(ports)));
    }
    m
}

fn reject_for(proto: Proto) -> Statement<'static> {
    match proto {
        Proto::Tcp => Statement::Reject(Some(stmt::Reject::new(
            Some(stmt::RejectType::TCPReset),
            None,
        ))),
        _ => Statement::Goto(stmt::JumpTarget {
            target: CHAIN_REJECT.into(),
        }),
    }
}

#[derive(Default)]
struct Builder {
    objects: Vec<NfListObject<'static>>,
}

impl Builder {
    fn chain(&mut self, name: &str) {
        self.objects.push(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            ..Chain::default()
        }));
    }

    fn base_chain(&mut self, name: &str, hook: NfHook, verdict: Verdict) {
        self.objects.push(NfListObject::Chain(Chain {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            _type: Some(NfChainType::Filter),
            hook: Some(hook),
            prio: Some(PRIORITY_FILTER),
            policy: Some(match verdict {
                Verdict::Allow => NfChainPolicy::Accept,
                Verdict::Deny | Verdict::Reject => NfChainPolicy::Drop,
            }),
            ..Chain::default()
        }));
    }

    fn rule(&mut self, chain: &str, expr: Vec<Statement<'static>>) {
        self.objects.push(NfListObject::Rule(NftRule {
            family: FAMILY,
            table: TABLE.into(),
            chain: chain.to_string().into(),
            expr: expr.into(),
            ..NftRule::default()
        }));
    }

    /// UFW's before.rules / before6.rules for input.
    fn input_before(&mut self) {
        let c = CHAIN_INPUT;
        // iif "lo" accept
        self.rule(c, vec![m_eq(meta(MetaKey::Iif), s("lo")), accept()]);
        // ct state established,related accept
        self.rule(
            c,
            vec![
                m_in(ct("state"), list(&["established", "related"])),
                accept(),
            ],
        );
        // ct state invalid drop
        self.rule(c, vec![m_in(ct("state"), s("invalid")), drop()]);
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
                m_eq(
                    payload("icmpv6", "type"),
                    set_of(&[
                        "nd-router-solicit",
                        "nd-router-advert",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                    ]),
                ),
                m_eq(payload("ip6", "hoplimit"), num(255)),
                accept(),
            ],
        );
        // Multicast listener messages from link-local sources.
        self.rule(
            c,
            vec![
                m_eq(payload("ip6", "saddr"), prefix("fe80::", 10)),
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
        // DHCP client: udp 67 → 68; DHCPv6 client: fe80::/10 547 → 546.
        self.rule(
            c,
            vec![
                m_eq(meta(MetaKey::Nfproto), s("ipv4")),
                m_eq(payload("udp", "sport"), num(67)),
                m_eq(payload("udp", "dport"), num(68)),
                accept(),
            ],
        );
        self.rule(
            c,
            vec![
                m_eq(payload("ip6", "saddr"), prefix("fe80::", 10)),
                m_eq(payload("udp", "sport"), num(547)),
                m_eq(payload("udp", "dport"), num(546)),
                accept(),
            ],
        );
        // mDNS and UPnP discovery.
        for (ip, addr, port) in [
            ("ip", "224.0.0.251", 5353),
            ("ip", "239.255.255.250", 1900),
            ("ip6", "ff02::fb", 5353),
            ("ip6", "ff02::f", 1900),
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
    fn input_after(&mut self, default: Verdict) {
        let c = CHAIN_INPUT;
        let v = || verdict_stmt(default, Proto::Any);
        self.rule(
            c,
            vec![
                m_eq(
                    payload("udp", "dport"),
                    set(vec![num(137), num(138), num(67), num(68)]),
                ),
                v(),
            ],
        );
        self.rule(
            c,
            vec![
                m_eq(payload("tcp", "dport"), set(vec![num(139), num(445)])),
                v(),
            ],
        );
        self.rule(c, vec![m_eq(meta(MetaKey::Pkttype), s("broadcast")), v()]);
    }

    fn output_before(&mut self) {
        let c = CHAIN_OUTPUT;
        self.rule(c, vec![m_eq(meta(MetaKey::Oif), s("lo")), accept()]);
        self.rule(
            c,
            vec![
                m_in(ct("state"), list(&["established", "related"])),
                accept(),
            ],
        );
        // Neighbour discovery must work even under "default deny outgoing".
        self.rule(
            c,
            vec![
                m_eq(
                    payload("icmpv6", "type"),
                    set_of(&[
                        "nd-router-solicit",
                        "nd-router-advert",
                        "nd-neighbor-solicit",
                        "nd-neighbor-advert",
                        "mld-listener-report",
                        "mld2-listener-report",
                    ]),
                ),
                accept(),
            ],
        );
    }

    fn forward_before(&mut self) {
        let c = CHAIN_FORWARD;
        self.rule(
            c,
            vec![
                m_in(ct("state"), list(&["established", "related"])),
                accept(),
            ],
        );
    }

    /// Logging of what falls through to the policy, then the policy itself when it is
    /// "reject" (a chain policy can only accept or drop).
    fn policy_tail(&mut self, chain: &str, default: Verdict, level: LogLevel) {
        let blocked = default != Verdict::Allow;
        let log = match level {
            LogLevel::Off => false,
            LogLevel::Low => blocked,
            _ => true,
        };
        if log {
            let word = if blocked { "BLOCK" } else { "AUDIT" };
            let mut r = Vec::new();
            if level != LogLevel::Full {
                r.push(log_limit());
            }
            r.push(log_stmt(&format!("[{LOG_PREFIX} {word}] ")));
            self.rule(chain, r);
        }
        if default == Verdict::Reject {
            self.rule(chain, vec![verdict_stmt(Verdict::Reject, Proto::Any)]);
        }
    }
}

fn verdict_stmt(v: Verdict, proto: Proto) -> Statement<'static> {
    match v {
        Verdict::Allow => accept(),
        Verdict::Deny => drop(),
        Verdict::Reject => reject_for(proto),
    }
}

// ---- small typed builders; comments show the nft text each yields ----

/// `accept`
fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// `drop`
fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

/// `jump CHAIN`
fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(stmt::JumpTarget {
        target: chain.to_string().into(),
    })
}

/// `counter`
fn counter() -> Statement<'static> {
    Statement::Counter(stmt::Counter::Anonymous(None))
}

/// `limit rate 3/minute burst 10 packets`
fn log_limit() -> Statement<'static> {
    Statement::Limit(stmt::Limit {
        rate: LOG_RATE_PER_MINUTE,
        rate_unit: None,
        per: Some("minute".into()),
        burst: Some(LOG_BURST),
        burst_unit: None,
        inv: None,
    })
}

/// `log prefix "PREFIX"`
fn log_stmt(prefix: &str) -> Statement<'static> {
    Statement::Log(Some(stmt::Log {
        prefix: Some(prefix.to_string().into()),
        group: None,
        snaplen: None,
        queue_threshold: None,
        level: None,
        flags: None,
    }))
}

/// `LEFT == RIGHT`
fn m_eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// `LEFT RIGHT` for flag tests (`ct state established,related`).
fn m_in(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::IN,
    })
}

/// `meta KEY`
fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// `ct KEY`
fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

/// `PROTO FIELD`, e.g. `ip saddr`
fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

fn s(text: &str) -> Expression<'static> {
    Expression::String(text.to_string().into())
}

fn num(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

fn list(words: &[&str]) -> Expression<'static> {
    Expression::List(words.iter().map(|w| s(w)).collect())
}

/// `{ a, b, c }`
fn set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

fn set_of(words: &[&str]) -> Expression<'static> {
    set(words.iter().map(|w| s(w)).collect())
}

/// `ADDR/LEN`
fn prefix(addr: &str, len: u32) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len,
    }))
}

/// A host address, or a network as a prefix.
fn net_expr(net: IpNet) -> Expression<'static> {
    if net.prefix_len() == net.max_prefix_len() {
        s(&net.addr().to_string())
    } else {
        prefix(&net.network().to_string(), u32::from(net.prefix_len()))
    }
}

/// `22`, `1000-2000` or `{ 22, 80, 1000-2000 }`
fn ports_expr(ports: &Ports) -> Expression<'static> {
    let one = |r: &crate::model::PortRange| {
        if r.first == r.last {
            num(u32::from(r.first))
        } else {
            Expression::Range(Box::new(Range {
                range: [num(u32::from(r.first)), num(u32::from(r.last))],
            }))
        }
    };
    match ports.0.as_slice() {
        [r] => one(r),
        many => {
            // A set must not hold the same element twice.
            let mut seen = HashSet::new();
            set(many.iter().filter(|r| seen.insert(**r)).map(one).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;

    #[test]
    fn default_policy_has_base_chains_and_no_user_rules() {
        let plan = compile(&Policy::default());
        assert_eq!(
            plan.chains(),
            vec![
                CHAIN_INPUT,
                CHAIN_OUTPUT,
                CHAIN_FORWARD,
                CHAIN_USER_INPUT,
                CHAIN_USER_OUTPUT,
                CHAIN_REJECT
            ]
        );
        let counts = plan.rule_counts();
        assert_eq!(counts[3], (CHAIN_USER_INPUT.to_string(), 0));
    }

    #[test]
    fn each_user_rule_is_one_nft_rule() {
        let mut p = Policy::default();
        for text in ["22/tcp", "proto udp from 198.18.0.5 to any port 5353"] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules
                .extend(parse_rule(Action::Allow, &words).unwrap().rules);
        }
        let plan = compile(&p);
        let counts: std::collections::HashMap<_, _> = plan.rule_counts().into_iter().collect();
        assert_eq!(counts[CHAIN_USER_INPUT], 3);
    }
}
