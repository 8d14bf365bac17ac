//! Policy → nft plan. A pure function: no I/O, so it is unit- and property-testable.
//!
//! The plan is one table, `inet rampart`, with base chains for input, output and forward
//! that carry UFW's before/after rules, and one chain per direction with the user rules.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use nftables::expr::Verdict as NftVerdict;
use nftables::expr::{
    BinaryOperation, Elem, Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField,
    Prefix, Range, SetItem, CT,
};
use nftables::schema::{
    Chain, Map, NfListObject, Rule as NftRule, Set, SetFlag, SetType, SetTypeValue, Table,
};
use nftables::stmt::{self, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::model::{
    Action, Direction, Family, Limit, LimitKey, LogLevel, Over, Policy, Ports, Proto, Rule,
    RuleLog, Then, Verdict,
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
/// ICMP and ICMPv6 packets UFW's before.rules accept (input).
pub const CHAIN_BEFORE_ICMP: &str = "before_icmp";
/// UDP services UFW's before.rules accept (DHCP, mDNS, UPnP discovery; input).
pub const CHAIN_BEFORE_UDP: &str = "before_udp";
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
    /// Stateful statements attached to the elements a rule adds to a dynamic set, by set
    /// name (`add @s { ip saddr ct count over 2 }`). The `nftables` crate's set statement
    /// has no field for them, so the backend and the renderer attach them from here.
    pub dynset_stmts: Vec<(String, Statement<'static>)>,
    /// Names of the maps whose values are verdicts. The `nftables` crate has no
    /// `verdict` map type (the objects carry a placeholder type) and writes `accept` and
    /// `drop` values as bare words; the backend fixes both when serializing.
    pub verdict_maps: Vec<String>,
}

impl Plan {
    /// Whether the two plans are the same but for map elements (which can then be
    /// changed in place). Compares without copying the elements.
    pub fn same_skeleton(&self, other: &Plan) -> bool {
        fn bare<'a>(m: &'a Map<'static>) -> impl PartialEq + 'a {
            (
                (&m.family, &m.table, &m.name, &m.handle, &m.set_type, &m.map),
                (
                    &m.policy,
                    &m.flags,
                    &m.timeout,
                    &m.gc_interval,
                    &m.size,
                    &m.comment,
                ),
            )
        }
        self.objects.len() == other.objects.len()
            && self
                .objects
                .iter()
                .zip(&other.objects)
                .all(|pair| match pair {
                    (NfListObject::Map(a), NfListObject::Map(b)) => bare(a) == bare(b),
                    (a, b) => a == b,
                })
    }

    /// A map's elements (empty if it has none).
    pub fn map_elements(&self, name: &str) -> &[Expression<'static>] {
        self.objects
            .iter()
            .find_map(|o| match o {
                NfListObject::Map(m) if m.name == name => m.elem.as_deref(),
                _ => None,
            })
            .unwrap_or(&[])
    }

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
    let mut b = Builder {
        logging: policy.logging,
        ..Builder::default()
    };
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

    for (direction, chain) in [
        (Direction::In, CHAIN_USER_INPUT),
        (Direction::Out, CHAIN_USER_OUTPUT),
    ] {
        let rules: Vec<&Rule> = policy
            .rules
            .iter()
            .filter(|r| r.direction == direction)
            .collect();
        for run in runs(&merge_families(&rules)) {
            match run {
                Run::Map(kind, members, last) => b.map_run(chain, kind, &members, last),
                Run::Single(rule) if rule.action == Action::Limit => b.limit_rule(rule, chain),
                Run::Single(rule) => {
                    for stmts in user_rule(rule, true) {
                        b.rule(chain, stmts);
                    }
                }
                Run::Pair(rule) => {
                    for stmts in user_rule(rule, false) {
                        b.rule(chain, stmts);
                    }
                }
            }
        }
    }
    Plan {
        objects: b.objects,
        dynset_stmts: b.dynset_stmts,
        verdict_maps: b.verdict_maps,
    }
}

/// Shortest run of rules put in verdict maps (shorter runs are plain rules, except the
/// last run of each family; see `runs`).
pub const MIN_MAP_RUN: usize = 8;
/// Prefix of the verdict maps user rules compile into (`rules_user_input_0`).
pub const MAP_PREFIX: &str = "rules_";

/// Fewest source networks of one prefix length in a run that get a hash map of their
/// own (keyed by the masked address) instead of places in the interval map.
pub const PREFIX_HASH_MIN: usize = 8;

/// The map a run's element goes to: `h` (exact keys with a host), `p` (any source,
/// one port), `i` (intervals), or `n<L>` (source networks of prefix length L, hashed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shape {
    Of(char),
    Net(u8),
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Of(c) => write!(f, "{c}"),
            Shape::Net(len) => write!(f, "n{len}"),
        }
    }
}

/// The two shapes of rule a verdict map can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    /// `ip saddr . meta l4proto . th dport`: source network, TCP/UDP, destination ports.
    SrcProtoPort,
    /// `ip saddr`: a source network, any protocol.
    Src,
}

/// A rule's key in a verdict map: source network, protocols and destination ports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MapKey {
    kind: MapKind,
    family: Family,
    src: IpNet,
    protos: Vec<Proto>,
    ports: Vec<crate::model::PortRange>,
}

impl MapKey {
    /// The key of a rule that can join a map (no log, interface, destination address,
    /// source port or exception; a limit's element jumps to its chain), else None.
    fn of(rule: &Rule) -> Option<MapKey> {
        let plain = rule.log == RuleLog::None
            && rule.iface.is_none()
            && rule.to.addr.is_none()
            && rule.from.ports.is_none()
            && rule.except.is_none();
        if !plain {
            return None;
        }
        let any_net = match rule.family {
            Family::V4 => IpNet::V4(Default::default()),
            Family::V6 => IpNet::V6(Default::default()),
        };
        let (kind, protos) = match (rule.proto, &rule.to.ports) {
            (Proto::Any, None) if rule.from.addr.is_some() => (MapKind::Src, vec![]),
            (Proto::Any, Some(_)) => (MapKind::SrcProtoPort, vec![Proto::Tcp, Proto::Udp]),
            (p @ (Proto::Tcp | Proto::Udp), _) => (MapKind::SrcProtoPort, vec![p]),
            _ => return None,
        };
        let ports = match &rule.to.ports {
            Some(p) => merge_ranges(&p.0),
            None if kind == MapKind::SrcProtoPort => vec![crate::model::PortRange {
                first: 0,
                last: u16::MAX,
            }],
            None => vec![],
        };
        Some(MapKey {
            kind,
            family: rule.family,
            src: rule.from.addr.unwrap_or(any_net),
            protos,
            ports,
        })
    }
}

/// Sorted, coalesced port ranges.
fn merge_ranges(ranges: &[crate::model::PortRange]) -> Vec<crate::model::PortRange> {
    let mut v = ranges.to_vec();
    v.sort();
    let mut out: Vec<crate::model::PortRange> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// A stretch of one chain's rules: one plain rule, or a run of rules that become one
/// verdict-map lookup.
enum Run<'a> {
    Single(&'a Rule),
    /// The IPv4 copy of a pair joined by [`merge_families`], as one rule for both
    /// families.
    Pair(&'a Rule),
    /// The members, and whether this is the last run holding IPv4 / IPv6 rules (where
    /// appended rules land: it has a map for every shape, even empty).
    Map(MapKind, Vec<Member<'a>>, [bool; 2]),
}

/// Which packets a map (and its elements) serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fam {
    V4,
    V6,
    /// Both families: the two copies of a rule from anywhere to single ports.
    Both,
}

impl Fam {
    fn tag(self) -> char {
        match self {
            Fam::V4 => '4',
            Fam::V6 => '6',
            Fam::Both => 'b',
        }
    }
}

/// One rule of a chain, in the merged order of both families: an IPv4 rule, an IPv6
/// rule, or the IPv4 and IPv6 copies of one rule that names no address and only single
/// ports (`allow 22/tcp`), which one map element serves for both.
#[derive(Debug, Clone, Copy)]
struct Member<'a> {
    v4: Option<&'a Rule>,
    v6: Option<&'a Rule>,
}

impl<'a> Member<'a> {
    fn fam(&self) -> Fam {
        match (self.v4, self.v6) {
            (Some(_), Some(_)) => Fam::Both,
            (Some(_), None) => Fam::V4,
            _ => Fam::V6,
        }
    }

    /// The rule that stands for the member (the IPv4 copy of a pair).
    fn rule(&self) -> &'a Rule {
        self.v4.or(self.v6).expect("a member has a rule")
    }

    fn rules(&self) -> impl Iterator<Item = &'a Rule> {
        self.v4.into_iter().chain(self.v6)
    }
}

/// What makes two copies of a rule one element: action, direction, protocol and ports.
type TwinKey<'a> = (Action, Direction, Proto, &'a Ports);

/// The twin key of a rule whose IPv4 and IPv6 copies can share one element, else None:
/// a map member from anywhere to single ports (`meta l4proto . th dport`, no family).
fn twin_key(rule: &Rule) -> Option<TwinKey<'_>> {
    let ports = rule.to.ports.as_ref()?;
    // As the map key has them: adjacent ports coalesce into a range.
    let single_ports = ports.0.iter().all(|r| r.first == r.last) && {
        let mut p: Vec<u16> = ports.0.iter().map(|r| r.first).collect();
        p.sort_unstable();
        p.windows(2).all(|w| w[1] > w[0].saturating_add(1))
    };
    let shareable = matches!(rule.action, Action::Allow | Action::Deny | Action::Reject)
        && matches!(rule.proto, Proto::Tcp | Proto::Udp | Proto::Any)
        && rule.from.addr.is_none()
        && rule.from.ports.is_none()
        && rule.to.addr.is_none()
        && rule.iface.is_none()
        && rule.log == RuleLog::None
        && rule.except.is_none()
        && single_ports;
    shareable.then_some((rule.action, rule.direction, rule.proto, ports))
}

/// The chain's rules with each family's order kept, and the two copies of a shareable
/// rule joined where both families' orders allow: walking both lists, a pair is joined
/// when it is next in both; otherwise the IPv6 rules before the IPv4 rule's copy come
/// first (rules of different families never see the same packet, so any interleaving
/// keeps first-match order).
fn merge_families<'a>(rules: &[&'a Rule]) -> Vec<Member<'a>> {
    let v4: Vec<&Rule> = rules
        .iter()
        .copied()
        .filter(|r| r.family == Family::V4)
        .collect();
    let v6: Vec<&Rule> = rules
        .iter()
        .copied()
        .filter(|r| r.family == Family::V6)
        .collect();
    // Where each shareable IPv6 rule is, by twin key, in order.
    let mut at6: HashMap<TwinKey, std::collections::VecDeque<usize>> = HashMap::new();
    for (j, r) in v6.iter().enumerate() {
        if let Some(k) = twin_key(r) {
            at6.entry(k).or_default().push_back(j);
        }
    }
    let mut out = Vec::with_capacity(v4.len() + v6.len());
    let (mut i, mut j) = (0, 0);
    let single4 = |r| Member {
        v4: Some(r),
        v6: None,
    };
    let single6 = |r| Member {
        v4: None,
        v6: Some(r),
    };
    while i < v4.len() {
        let twin = twin_key(v4[i]).and_then(|k| {
            let q = at6.get_mut(&k)?;
            while q.front().is_some_and(|&t| t < j) {
                q.pop_front();
            }
            q.front().copied()
        });
        match twin {
            Some(t) => {
                while j < t {
                    out.push(single6(v6[j]));
                    j += 1;
                }
                out.push(Member {
                    v4: Some(v4[i]),
                    v6: Some(v6[t]),
                });
                j = t + 1;
            }
            None => out.push(single4(v4[i])),
        }
        i += 1;
    }
    out.extend(v6[j..].iter().map(|r| single6(r)));
    out
}

/// Disjoint address intervals, for overlap queries in O(log n).
#[derive(Default)]
struct Intervals(BTreeMap<u128, u128>);

impl Intervals {
    fn hits(&self, (start, end): (u128, u128)) -> bool {
        self.0
            .range(..=end)
            .next_back()
            .is_some_and(|(_, last)| *last >= start)
    }

    fn insert(&mut self, (start, end): (u128, u128)) {
        self.0.insert(start, end);
    }
}

/// An IP network as an address interval.
fn interval(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

/// The keys of one run, indexed so that "does this key overlap any key of the run?"
/// costs a few tree lookups. Keys in a run never overlap each other, so within one
/// protocol and port bucket their address intervals are disjoint.
#[derive(Default)]
struct RunIndex {
    /// `Src` keys: address intervals.
    src: Intervals,
    /// `SrcProtoPort` keys with a single port: protocol → port → address intervals.
    single: HashMap<Proto, BTreeMap<u16, Intervals>>,
    /// `SrcProtoPort` keys with a port range: one bucket per distinct range.
    ranges: Vec<(Proto, crate::model::PortRange, Intervals)>,
}

impl RunIndex {
    fn overlaps(&self, key: &MapKey) -> bool {
        let addr = interval(&key.src);
        if key.kind == MapKind::Src {
            return self.src.hits(addr);
        }
        key.protos.iter().any(|proto| {
            key.ports.iter().any(|r| {
                let singles = self
                    .single
                    .get(proto)
                    .is_some_and(|m| m.range(r.first..=r.last).any(|(_, iv)| iv.hits(addr)));
                singles
                    || self.ranges.iter().any(|(p, pr, iv)| {
                        p == proto && pr.first <= r.last && r.first <= pr.last && iv.hits(addr)
                    })
            })
        })
    }

    fn insert(&mut self, key: &MapKey) {
        let addr = interval(&key.src);
        if key.kind == MapKind::Src {
            self.src.insert(addr);
            return;
        }
        for proto in &key.protos {
            for r in &key.ports {
                if r.first == r.last {
                    self.single
                        .entry(*proto)
                        .or_default()
                        .entry(r.first)
                        .or_default()
                        .insert(addr);
                } else if let Some((_, _, iv)) = self
                    .ranges
                    .iter_mut()
                    .find(|(p, pr, _)| p == proto && pr == r)
                {
                    iv.insert(addr);
                } else {
                    let mut iv = Intervals::default();
                    iv.insert(addr);
                    self.ranges.push((*proto, *r, iv));
                }
            }
        }
    }
}

/// Consecutive members: `Some(kind)` for a run of map keys, `None` for one plain rule.
type Group<'a> = (Option<MapKind>, Vec<Member<'a>>);

/// Split a chain's members (in merged order, see [`merge_families`]) into runs. A run
/// holds consecutive members of one map kind whose keys do not overlap within a family,
/// so a map lookup gives exactly the first-match verdict. Runs shorter than
/// [`MIN_MAP_RUN`] stay plain rules (cheaper than a few map lookups), except the last
/// run holding each family: rules are appended there, and a map makes that an element
/// change.
fn runs<'a>(members: &[Member<'a>]) -> Vec<Run<'a>> {
    // First the groups: Some(kind) for a run of map keys, None for a plain rule.
    let mut groups: Vec<Group<'a>> = Vec::new();
    let mut index = [RunIndex::default(), RunIndex::default()];
    let slot = |f: Family| match f {
        Family::V4 => 0,
        Family::V6 => 1,
    };
    for m in members {
        let keys: Option<Vec<MapKey>> = m.rules().map(MapKey::of).collect();
        match keys {
            Some(keys) => {
                let kind = Some(keys[0].kind);
                let joins = groups.last().is_some_and(|(k, _)| *k == kind)
                    && !keys.iter().any(|k| index[slot(k.family)].overlaps(k));
                if !joins {
                    index = [RunIndex::default(), RunIndex::default()];
                    groups.push((kind, Vec::new()));
                }
                for k in &keys {
                    index[slot(k.family)].insert(k);
                }
                groups
                    .last_mut()
                    .expect("a group was just pushed")
                    .1
                    .push(*m);
            }
            None => groups.push((None, vec![*m])),
        }
    }
    let last_holding = |f: fn(&Member) -> bool| {
        groups
            .iter()
            .rposition(|(k, ms)| k.is_some() && ms.iter().any(f))
    };
    let last = [
        last_holding(|m| m.v4.is_some()),
        last_holding(|m| m.v6.is_some()),
    ];
    let mut out = Vec::new();
    for (i, (kind, members)) in groups.into_iter().enumerate() {
        let is_last = [last[0] == Some(i), last[1] == Some(i)];
        match kind {
            Some(kind) if members.len() >= MIN_MAP_RUN || is_last.contains(&true) => {
                out.push(Run::Map(kind, members, is_last));
            }
            _ => out.extend(members.iter().flat_map(|m| match (m.v4, m.v6) {
                (Some(v4), Some(_)) => vec![Run::Pair(v4)],
                _ => m.rules().map(Run::Single).collect(),
            })),
        }
    }
    out
}

/// Statements for one user rule (a log rule first, when the rule logs). `family`: with
/// the match on the rule's family that a rule with no address needs, unless it stands
/// for both families' copies.
pub fn user_rule(rule: &Rule, family: bool) -> Vec<Vec<Statement<'static>>> {
    let matches = rule_matches(rule, family);
    let mut out = user_rule_log(rule, &matches);
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

/// The log rule of a user rule marked `log` / `log-all` (none otherwise).
fn user_rule_log(rule: &Rule, matches: &[Statement<'static>]) -> Vec<Vec<Statement<'static>>> {
    if rule.log == RuleLog::None {
        return Vec::new();
    }
    let mut log = matches.to_vec();
    if rule.log == RuleLog::Log {
        log.push(m_in(ct("state"), s("new")));
    }
    log.push(log_limit());
    log.push(log_stmt(&format!(
        "[{LOG_PREFIX} {}] ",
        rule.action.upper()
    )));
    vec![log]
}

/// The match statements of a user rule (`family`: see [`user_rule`]).
pub fn rule_matches(rule: &Rule, family: bool) -> Vec<Statement<'static>> {
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
    if let Some(except) = &rule.except {
        m.push(Statement::Match(Match {
            left: payload("th", "dport"),
            right: ports_expr(except),
            op: Operator::NEQ,
        }));
    }
    m
}

/// Sets whose names start with this hold limit state; the backend keeps them, with
/// their elements, across re-applies that declare them again.
pub const STATE_SET_PREFIX: &str = "state_";
/// Prefix of the per-limit chains (`limit_<id>`, `limit_<id>_over`).
pub const LIMIT_CHAIN_PREFIX: &str = "limit_";
/// Size of each dynamic set that holds limit state (keys tracked at once).
pub const LIMIT_SET_SIZE: u32 = 65_535;

/// A stable id for a limit's state: the same limit on the same match gets the same
/// sets across reloads and unrelated edits; the IPv4 and IPv6 copies of a `per any`
/// limit share one id (one count for both families).
pub fn limit_id(rule: &Rule) -> String {
    let spec = rule.limit.clone().unwrap_or_else(Limit::ufw_default);
    let family = match spec.per {
        LimitKey::Any => "any",
        LimitKey::Source { .. } => match rule.family {
            Family::V4 => "4",
            Family::V6 => "6",
        },
    };
    let ident = Rule {
        family: Family::V4,
        log: RuleLog::None,
        comment: None,
        limit: Some(spec),
        ..rule.clone()
    };
    let text = format!(
        "{}|{family}",
        serde_json::to_string(&ident).unwrap_or_default()
    );
    format!("{:016x}{family}", fnv1a(&text))
}

/// Elements the shared rate-limit slot set of one family can hold (each key that is
/// being limited takes up to N of them, for T seconds).
pub const SLOT_SET_SIZE: u32 = 262_144;

/// A 32-bit number naming a limit inside the shared slot sets (from its stable id).
fn limit_number(id: &str) -> u32 {
    u32::from_str_radix(&id[..8], 16).unwrap_or(0)
}

/// A constant usable inside a concatenated key: `meta mark & 0x0 | N` (nft 1.0.6 takes
/// no bare constants there).
fn constant(n: u32) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), num(0)))),
        num(n),
    ])))
}

/// The key a limit counts by, and the set type that holds it.
fn limit_key(per: LimitKey, family: Family) -> (Expression<'static>, SetType) {
    match (per, family) {
        // `meta mark & 0` is 0 for every packet: one key for everyone.
        (LimitKey::Any, _) => (
            Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                meta(MetaKey::Mark),
                num(0),
            ))),
            SetType::Mark,
        ),
        (LimitKey::Source { v4, .. }, Family::V4) => {
            let addr = payload("ip", "saddr");
            let key = if v4 >= 32 {
                addr
            } else {
                let mask = Ipv4Addr::from(u32::MAX << (32 - u32::from(v4)));
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    addr,
                    s(&mask.to_string()),
                )))
            };
            (key, SetType::Ipv4Addr)
        }
        (LimitKey::Source { v6, .. }, Family::V6) => {
            let addr = payload("ip6", "saddr");
            let key = if v6 >= 128 {
                addr
            } else {
                let mask = Ipv6Addr::from(u128::MAX << (128 - u32::from(v6)));
                Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                    addr,
                    s(&mask.to_string()),
                )))
            };
            (key, SetType::Ipv6Addr)
        }
    }
}

/// A class of rate-only limits on one port from anywhere; see
/// `Builder::port_limit_chain`.
struct PortClass {
    /// Chain name suffix (`p4_…`, `p6_…`, `pany_…`).
    id: String,
    /// The class's number in the slot keys, with the low 8 bits free for the slot.
    number: u32,
}

/// The class of a limit that is rate-only, on exactly one TCP or UDP port, from any
/// source to any address on any interface (the packet's protocol and port then name
/// the rule), else None.
fn port_limit_class(rule: &Rule, spec: &Limit) -> Option<PortClass> {
    let single_port =
        matches!(&rule.to.ports, Some(p) if p.0.len() == 1 && p.0[0].first == p.0[0].last);
    let simple = matches!(rule.proto, Proto::Tcp | Proto::Udp)
        && single_port
        && rule.from.addr.is_none()
        && rule.from.ports.is_none()
        && rule.to.addr.is_none()
        && rule.iface.is_none()
        && rule.except.is_none()
        && spec.conn.is_none();
    let rate = spec.rate.filter(|_| simple)?;
    let family = match (spec.per, rule.family) {
        (LimitKey::Any, _) => "any",
        (_, Family::V4) => "4",
        (_, Family::V6) => "6",
    };
    let text = format!(
        "port|{family}|{:?}|{}|{rate}|{:?}|{:?}|{:?}",
        rule.direction,
        rule.proto.word(),
        spec.per,
        spec.over,
        spec.then
    );
    let h = fnv1a(&text);
    Some(PortClass {
        id: format!("p{family}_{:08x}", h as u32),
        number: (h as u32) & 0xffff_ff00,
    })
}

/// FNV-1a, 64 bit: stable across builds, unlike std's hasher.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The N slot rules of a rate limit: a key is accepted (`under`) iff one of its N
/// slots is free, and it then holds that slot for T seconds, so at most N are accepted
/// in any window of T. `elem(k)` is the parts of slot k's element.
fn slot_rules(
    set: &str,
    rate: crate::model::Rate,
    under: &Statement<'static>,
    elem: impl Fn(u32) -> Vec<Expression<'static>>,
) -> Vec<Vec<Statement<'static>>> {
    (0..rate.count)
        .map(|k| {
            let e = Expression::Named(NamedExpression::Concat(elem(k)));
            vec![
                Statement::Match(Match {
                    left: e.clone(),
                    right: s(&format!("@{set}")),
                    op: Operator::NEQ,
                }),
                dynset_add(
                    set,
                    Expression::Named(NamedExpression::Elem(Elem {
                        val: Box::new(e),
                        timeout: Some(rate.seconds),
                        expires: None,
                        comment: None,
                        counter: None,
                    })),
                ),
                under.clone(),
            ]
        })
        .collect()
}

/// Under a limit: accept, or (`then continue`) return to the rules after.
fn under_limit(then: Then) -> Statement<'static> {
    match then {
        Then::Accept => accept(),
        Then::Continue => Statement::Return(None),
    }
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
    dynset_stmts: Vec<(String, Statement<'static>)>,
    verdict_maps: Vec<String>,
    /// Map runs so far, per chain (for map names).
    map_runs: HashMap<String, usize>,
    logging: LogLevel,
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

    /// The verdict maps for a run of rules, and the rules that look them up. The run's
    /// elements are split by family (`4`, `6`, or `b` for a pair of copies one element
    /// serves) and shape, each its own map, looked up one after the other (the run's
    /// keys never overlap within a family, so their order does not matter):
    /// - `h`: host address, one port: `ip saddr . meta l4proto . th dport vmap @…_4h`,
    ///   a hash (for `Src` runs: `ip saddr vmap @…_4h`);
    /// - `p`: any source, one port: `meta l4proto . th dport vmap @…_bp`, a hash (with
    ///   `meta nfproto` in front for a single family's rules);
    /// - `n<L>`: source networks of length L (`Src` runs): `ip saddr & MASK vmap`;
    /// - `i`: the rest (networks, port ranges): an interval map.
    ///
    /// Maps are named per chain, run, family and shape (`rules_user_input_0_4h`), so
    /// adding or removing a rule inside a run usually changes only elements, which are
    /// applied in place.
    fn map_run(&mut self, chain: &str, kind: MapKind, members: &[Member], last: [bool; 2]) {
        let run = {
            let n = self.map_runs.entry(chain.to_string()).or_insert(0);
            *n += 1;
            *n - 1
        };
        for fam in [Fam::V4, Fam::V6, Fam::Both] {
            let rules: Vec<&Rule> = members
                .iter()
                .filter(|m| m.fam() == fam)
                .map(|m| m.rule())
                .collect();
            // In the last run holding a family, every shape's map exists, even empty, so
            // that the first rule of a new shape appended to the chain is an element
            // change too.
            let all_shapes: &[char] = match (fam, kind) {
                (Fam::V4, _) if last[0] => &['h', 'i'],
                (Fam::V6, _) if last[1] => &['h', 'i'],
                (Fam::Both, MapKind::SrcProtoPort) if last[0] || last[1] => &['p'],
                _ => &[],
            };
            if !rules.is_empty() || !all_shapes.is_empty() {
                self.map_group(chain, run, kind, fam, &rules, all_shapes);
            }
        }
    }

    /// The maps of one family's members of a run (see [`Builder::map_run`]).
    fn map_group(
        &mut self,
        chain: &str,
        run: usize,
        kind: MapKind,
        fam: Fam,
        members: &[&Rule],
        all_shapes: &[char],
    ) {
        // A pair's elements are built from its IPv4 copy; its lookup names no family.
        let family = match fam {
            Fam::V6 => Family::V6,
            _ => Family::V4,
        };
        let (ip, addr_type) = match family {
            Family::V4 => ("ip", SetType::Ipv4Addr),
            Family::V6 => ("ip6", SetType::Ipv6Addr),
        };
        let mut shapes: BTreeMap<Shape, Vec<Expression<'static>>> = all_shapes
            .iter()
            .map(|c| (Shape::Of(*c), Vec::new()))
            .collect();
        // Source networks of a length many rules share go into a hash map keyed by the
        // masked address (`ip saddr & MASK vmap @…_nL`) rather than the interval map:
        // hash maps load faster, and nft reads every interval map's elements back
        // before any element change, so a large one slows down every added rule.
        let hashed: HashSet<u8> = if kind == MapKind::Src {
            let mut count: HashMap<u8, usize> = HashMap::new();
            for rule in members {
                if let Some(net) = rule.from.addr {
                    if net.prefix_len() < net.max_prefix_len() {
                        *count.entry(net.prefix_len()).or_default() += 1;
                    }
                }
            }
            count
                .into_iter()
                .filter(|(_, n)| *n >= PREFIX_HASH_MIN)
                .map(|(len, _)| len)
                .collect()
        } else {
            HashSet::new()
        };
        for rule in members {
            let key = MapKey::of(rule).expect("map members have keys");
            let verdict = Expression::Verdict(match rule.action {
                Action::Allow => NftVerdict::Accept,
                Action::Deny => NftVerdict::Drop,
                Action::Reject => NftVerdict::Goto(stmt::JumpTarget {
                    target: CHAIN_REJECT.into(),
                }),
                Action::Limit => NftVerdict::Jump(stmt::JumpTarget {
                    target: self.limit_chain(rule).into(),
                }),
            });
            let host = key.src.prefix_len() == key.src.max_prefix_len();
            let anywhere = key.src.prefix_len() == 0;
            let addr = if host {
                s(&key.src.addr().to_string())
            } else {
                prefix(
                    &key.src.network().to_string(),
                    u32::from(key.src.prefix_len()),
                )
            };
            if kind == MapKind::Src {
                let len = key.src.prefix_len();
                let (shape, addr) = if host {
                    (Shape::Of('h'), addr)
                } else if hashed.contains(&len) {
                    (Shape::Net(len), s(&key.src.network().to_string()))
                } else {
                    (Shape::Of('i'), addr)
                };
                shapes
                    .entry(shape)
                    .or_default()
                    .push(Expression::List(vec![addr, verdict]));
                continue;
            }
            for proto in &key.protos {
                for r in &key.ports {
                    let single = r.first == r.last;
                    let port = if single {
                        num(u32::from(r.first))
                    } else {
                        Expression::Range(Box::new(Range {
                            range: [num(u32::from(r.first)), num(u32::from(r.last))],
                        }))
                    };
                    let (shape, parts) = match (single, host, anywhere) {
                        (true, true, _) => ('h', vec![addr.clone(), word(proto.word()), port]),
                        (true, _, true) => ('p', vec![word(proto.word()), port]),
                        _ => ('i', vec![addr.clone(), word(proto.word()), port]),
                    };
                    let k = Expression::Named(NamedExpression::Concat(parts));
                    shapes
                        .entry(Shape::Of(shape))
                        .or_default()
                        .push(Expression::List(vec![k, verdict.clone()]));
                }
            }
        }
        for (shape, elems) in shapes {
            // An empty map costs a lookup per packet; only the last run keeps them (a
            // new shape added elsewhere rebuilds the table instead).
            if elems.is_empty() && !matches!(shape, Shape::Of(c) if all_shapes.contains(&c)) {
                continue;
            }
            let name = format!("{MAP_PREFIX}{chain}_{run}_{}{shape}", fam.tag());
            let (set_type, lookup) = match (kind, shape) {
                (MapKind::Src, Shape::Net(len)) => {
                    let mask = match family {
                        Family::V4 => Ipv4Addr::from(u32::MAX << (32 - u32::from(len))).to_string(),
                        Family::V6 => {
                            Ipv6Addr::from(u128::MAX << (128 - u32::from(len))).to_string()
                        }
                    };
                    (
                        SetTypeValue::Single(addr_type),
                        Expression::BinaryOperation(Box::new(BinaryOperation::AND(
                            payload(ip, "saddr"),
                            s(&mask),
                        ))),
                    )
                }
                (MapKind::Src, _) => (SetTypeValue::Single(addr_type), payload(ip, "saddr")),
                (_, Shape::Of('p')) => (
                    SetTypeValue::Concatenated(
                        vec![SetType::InetProto, SetType::InetService].into(),
                    ),
                    Expression::Named(NamedExpression::Concat(vec![
                        meta(MetaKey::L4proto),
                        payload("th", "dport"),
                    ])),
                ),
                _ => (
                    SetTypeValue::Concatenated(
                        vec![addr_type, SetType::InetProto, SetType::InetService].into(),
                    ),
                    Expression::Named(NamedExpression::Concat(vec![
                        payload(ip, "saddr"),
                        meta(MetaKey::L4proto),
                        payload("th", "dport"),
                    ])),
                ),
            };
            // An any-source map of one family must still only see that family.
            let mut rule = Vec::new();
            if shape == Shape::Of('p') && fam != Fam::Both {
                rule.push(m_eq(
                    meta(MetaKey::Nfproto),
                    s(match family {
                        Family::V4 => "ipv4",
                        Family::V6 => "ipv6",
                    }),
                ));
            }
            self.objects.push(NfListObject::Map(Box::new(Map {
                family: FAMILY,
                table: TABLE.into(),
                name: name.clone().into(),
                set_type,
                // Placeholder: written as "verdict" by the backend (see Plan::verdict_maps).
                map: SetTypeValue::Single(SetType::Mark),
                flags: (shape == Shape::Of('i')).then(|| HashSet::from([SetFlag::Interval])),
                elem: (!elems.is_empty()).then(|| elems.into()),
                ..Map::default()
            })));
            self.verdict_maps.push(name.clone());
            rule.push(Statement::VerdictMap(stmt::VerdictMap {
                key: lookup,
                data: s(&format!("@{name}")),
            }));
            self.rule(chain, rule);
        }
    }

    /// Over a limit: log (rate-limited, unless logging is off) and refuse.
    fn over_rules(&self, over: Over, proto: Proto) -> Vec<Vec<Statement<'static>>> {
        let mut rules = Vec::new();
        if self.logging != LogLevel::Off {
            rules.push(vec![
                log_limit(),
                log_stmt(&format!("[{LOG_PREFIX} LIMIT BLOCK] ")),
            ]);
        }
        rules.push(vec![match over {
            Over::Reject => reject_for(proto),
            Over::Drop => drop(),
        }]);
        rules
    }

    fn has_set(&self, name: &str) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o, NfListObject::Set(x) if x.name == name))
    }

    /// The set of rate-limit slots shared by all rate limits of one key family.
    fn slot_set(&mut self, name: &str, types: Vec<SetType>) {
        self.objects.push(NfListObject::Set(Box::new(Set {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            set_type: SetTypeValue::Concatenated(types.into()),
            flags: Some(HashSet::from([SetFlag::Timeout])),
            size: Some(SLOT_SET_SIZE),
            ..Set::default()
        })));
    }

    fn has_chain(&self, name: &str) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o, NfListObject::Chain(c) if c.name == name))
    }

    /// The per-key connection-count set of a `conn` limit. nft (1.0.6 and later)
    /// marks it `dynamic` itself because a rule adds to it; its JSON parser does not
    /// take that flag.
    fn conn_set(&mut self, name: &str, set_type: SetType) {
        self.objects.push(NfListObject::Set(Box::new(Set {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            set_type: SetTypeValue::Single(set_type),
            size: Some(LIMIT_SET_SIZE),
            ..Set::default()
        })));
    }

    /// A `limit` rule: the match jumps to the limit's chain, which refuses what is over
    /// and, under the limit, accepts (or, with `then continue`, returns so that the
    /// following rules decide).
    ///
    /// ```text
    /// chain limit_ID {
    ///     add @state_ID_c { KEY ct count over C } goto limit_ID_over      # conn C
    ///     KEY . L . 0 != @state_slots4 add @state_slots4 { KEY . L . 0 timeout Ts } accept
    ///     …                                                      # rate N/T: N slots
    ///     KEY . L . N-1 != @state_slots4 add @state_slots4 { … timeout Ts } accept
    ///     goto limit_ID_over            # (inline log + reject/drop when no conn check)
    /// }
    /// ```
    /// L is the limit's number. A key is accepted iff one of its N slots is free, and it
    /// then holds that slot for T seconds: so at most N connections per key are
    /// accepted in any window of T.
    fn limit_rule(&mut self, rule: &Rule, chain: &str) {
        let lchain = self.limit_chain(rule);
        let matches = rule_matches(rule, true);
        let mut out = user_rule_log(rule, &matches);
        let mut jump_rule = matches;
        jump_rule.push(counter());
        jump_rule.push(jump(&lchain));
        out.push(jump_rule);
        for r in out {
            self.rule(chain, r);
        }
    }

    /// The chain (and state) of a limit, created once; returns its name. The chain
    /// refuses what is over the limit and, under it, accepts (or with `then
    /// continue` returns), so one `jump` to it is the whole limit rule.
    fn limit_chain(&mut self, rule: &Rule) -> String {
        let spec = rule.limit.clone().unwrap_or_else(Limit::ufw_default);
        if let Some(class) = port_limit_class(rule, &spec) {
            return self.port_limit_chain(rule, &spec, &class);
        }
        let id = limit_id(rule);
        let lchain = format!("{LIMIT_CHAIN_PREFIX}{id}");
        if !self.has_chain(&lchain) {
            let over_chain = format!("{lchain}_over");
            let (key, set_type) = limit_key(spec.per, rule.family);
            let mut over_rules = self.over_rules(spec.over, rule.proto);
            // A conn check must skip the rate slots, so it needs the over rules in a
            // chain of their own; a rate-only limit falls through to them inline.
            if spec.conn.is_some() {
                self.chain(&over_chain);
                for r in over_rules.drain(..) {
                    self.rule(&over_chain, r);
                }
            }
            let under = || under_limit(spec.then);
            let to_over = || {
                Statement::Goto(stmt::JumpTarget {
                    target: over_chain.clone().into(),
                })
            };
            let mut rules: Vec<Vec<Statement<'static>>> = Vec::new();
            if let Some(n) = spec.conn {
                let count = Statement::CTCount(stmt::CTCount {
                    val: num(n),
                    inv: Some(true),
                });
                match spec.per {
                    LimitKey::Any => rules.push(vec![count, to_over()]),
                    LimitKey::Source { .. } => {
                        let set = format!("{STATE_SET_PREFIX}{id}_c");
                        self.conn_set(&set, set_type);
                        self.dynset_stmts.push((set.clone(), count));
                        rules.push(vec![dynset_add(&set, key.clone()), to_over()]);
                    }
                }
            }
            if let Some(rate) = spec.rate {
                // All rate limits of a key family share one slot set; an element is
                // (key . limit . slot) and times out T after it was added.
                let (set, slot_type) = match (spec.per, rule.family) {
                    (LimitKey::Any, _) => (format!("{STATE_SET_PREFIX}slots_any"), None),
                    (_, Family::V4) => (format!("{STATE_SET_PREFIX}slots4"), Some(set_type)),
                    (_, Family::V6) => (format!("{STATE_SET_PREFIX}slots6"), Some(set_type)),
                };
                if !self.has_set(&set) {
                    let mut types: Vec<SetType> = slot_type.into_iter().collect();
                    types.extend([SetType::Mark, SetType::Mark]);
                    self.slot_set(&set, types);
                }
                let limit_no = limit_number(&id);
                let prefix: Vec<Expression<'static>> = if spec.per == LimitKey::Any {
                    Vec::new()
                } else {
                    vec![key.clone()]
                };
                rules.extend(slot_rules(&set, rate, &under(), |k| {
                    let mut parts = prefix.clone();
                    parts.push(constant(limit_no));
                    parts.push(constant(k));
                    parts
                }));
                if spec.conn.is_some() {
                    rules.push(vec![to_over()]);
                } else {
                    rules.extend(over_rules);
                }
            } else {
                // conn only: under the limit.
                rules.push(vec![under()]);
            }
            self.chain(&lchain);
            for r in rules {
                self.rule(&lchain, r);
            }
        }
        lchain
    }

    /// The chain of a rate-only limit on one TCP or UDP port from anywhere (`limit
    /// 22/tcp`, `limit 80/tcp rate 20/30s`): one chain per class of such limits (same
    /// rate, key, over, then, protocol and direction), shared by all of them. The
    /// packet's own protocol and port are part of the slot key, so each rule still has
    /// its own budget, and a policy with hundreds of them loads a handful of rules
    /// instead of a chain each. The key does not depend on where the rule sits, so its
    /// state survives edits around it.
    fn port_limit_chain(&mut self, rule: &Rule, spec: &Limit, class: &PortClass) -> String {
        let lchain = format!("{LIMIT_CHAIN_PREFIX}{}", class.id);
        if self.has_chain(&lchain) {
            return lchain;
        }
        let rate = spec.rate.expect("port limit classes have a rate");
        let (key, addr_type) = limit_key(spec.per, rule.family);
        let (set, mut types) = match (spec.per, rule.family) {
            (LimitKey::Any, _) => (format!("{STATE_SET_PREFIX}pslots_any"), vec![]),
            (_, Family::V4) => (format!("{STATE_SET_PREFIX}pslots4"), vec![addr_type]),
            (_, Family::V6) => (format!("{STATE_SET_PREFIX}pslots6"), vec![addr_type]),
        };
        if !self.has_set(&set) {
            types.extend([SetType::InetProto, SetType::InetService, SetType::Mark]);
            self.slot_set(&set, types);
        }
        let mut rules = slot_rules(&set, rate, &under_limit(spec.then), |k| {
            let mut parts = Vec::new();
            if spec.per != LimitKey::Any {
                parts.push(key.clone());
            }
            parts.push(meta(MetaKey::L4proto));
            parts.push(payload("th", "dport"));
            parts.push(constant(class.number | k));
            parts
        });
        rules.extend(self.over_rules(spec.over, rule.proto));
        self.chain(&lchain);
        for r in rules {
            self.rule(&lchain, r);
        }
        lchain
    }

    /// UFW's before.rules / before6.rules for input.
    fn input_before(&mut self) {
        let c = CHAIN_INPUT;
        // iif "lo" accept
        self.rule(c, vec![m_eq(meta(MetaKey::Iif), s("lo")), accept()]);
        // ct state established,related accept
        self.rule(c, vec![established(), accept()]);
        // ct state invalid drop
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
        let c = CHAIN_BEFORE_UDP;
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

    fn forward_before(&mut self) {
        let c = CHAIN_FORWARD;
        self.rule(c, vec![established(), accept()]);
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

/// ICMPv6 neighbour discovery and router messages.
const ICMPV6_ND: &[&str] = &[
    "nd-router-solicit",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
];
/// ICMPv6 multicast listener reports (sent by this host).
const ICMPV6_MLD_REPORTS: &[&str] = &["mld-listener-report", "mld2-listener-report"];

// ---- small typed builders; comments show the nft text each yields ----

/// `ct state established,related`
fn established() -> Statement<'static> {
    m_in(ct("state"), list(&["established", "related"]))
}

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

/// A fixed word (no allocation: a plan holds tens of thousands of them).
fn word(text: &'static str) -> Expression<'static> {
    Expression::String(Cow::Borrowed(text))
}

fn num(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

fn list(words: &[&str]) -> Expression<'static> {
    Expression::List(words.iter().map(|w| s(w)).collect())
}

/// `add @SET { KEY }`
fn dynset_add(set: &str, key: Expression<'static>) -> Statement<'static> {
    Statement::Set(stmt::Set {
        op: stmt::SetOp::Add,
        elem: key,
        set: format!("@{set}").into(),
    })
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
                CHAIN_REJECT,
                CHAIN_BEFORE_ICMP,
                CHAIN_BEFORE_UDP,
            ]
        );
        let counts: std::collections::HashMap<_, _> = plan.rule_counts().into_iter().collect();
        assert_eq!(counts[CHAIN_USER_INPUT], 0);
    }

    #[test]
    fn rules_compile_to_map_elements_by_shape() {
        let mut p = Policy::default();
        for text in ["22/tcp", "proto udp from 198.18.0.5 to any port 5353"] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules
                .extend(parse_rule(Action::Allow, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        // One run holding both families: per family a host map and an interval map (the
        // last run has them even empty), and one map for `22/tcp`, whose IPv4 and IPv6
        // copies are one element.
        let counts: std::collections::HashMap<_, _> = plan.rule_counts().into_iter().collect();
        assert_eq!(counts[CHAIN_USER_INPUT], 5);
        let n = |name: &str| plan.map_elements(name).len();
        assert_eq!(n("rules_user_input_0_4h"), 1, "198.18.0.5 . udp . 5353");
        assert_eq!(n("rules_user_input_0_bp"), 1, "tcp . 22 (both families)");
        assert_eq!(n("rules_user_input_0_4i"), 0);
        assert_eq!(n("rules_user_input_0_6h"), 0);
        assert_eq!(plan.verdict_maps.len(), 5);
    }

    #[test]
    fn port_limits_of_one_class_share_a_chain() {
        let mut p = Policy::default();
        for text in ["22/tcp", "80/tcp", "443/tcp", "8000:8010/tcp", "53/udp"] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules
                .extend(parse_rule(Action::Limit, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        let limits: Vec<&str> = plan
            .chains()
            .into_iter()
            .filter(|c| c.starts_with(LIMIT_CHAIN_PREFIX))
            .collect();
        // tcp v4, tcp v6, udp v4, udp v6, and the port range's own chain per family.
        assert_eq!(limits.len(), 6, "{limits:?}");
        assert_eq!(
            limits.iter().filter(|c| c.starts_with("limit_p4_")).count(),
            2
        );
    }
}
