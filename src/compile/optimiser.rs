//! The optimiser: runs of user rules become verdict-map lookups, with first-match order
//! kept exactly (a run splits where a key overlaps an earlier one in it).

use std::collections::{BTreeMap, HashMap};

use ipnet::IpNet;

use crate::model::{Action, Direction, Family, Ports, Proto, Rule, RuleLog};

use super::Builder;

/// Shortest run of rules put in verdict maps (shorter runs are plain rules, except the
/// last run of each family; see `runs`).
pub const MIN_MAP_RUN: usize = 8;

/// Prefix of the verdict maps user rules compile into (`rules_user_input_0`).
pub const MAP_PREFIX: &str = "rules_";

/// Fewest source networks of one prefix length in a run that get a hash map of their
/// own (keyed by the masked address) instead of places in the interval map.
pub const PREFIX_HASH_MIN: usize = 8;

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
pub(super) struct MapKey {
    pub(super) kind: MapKind,
    pub(super) family: Family,
    pub(super) src: IpNet,
    pub(super) protos: Vec<Proto>,
    pub(super) ports: Vec<crate::model::PortRange>,
}

impl MapKey {
    /// The key of a rule that can join a map (no log, interface, destination address,
    /// source port or exception; a limit's element jumps to its chain), else None.
    pub(super) fn of(rule: &Rule) -> Option<MapKey> {
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
pub(super) fn merge_ranges(ranges: &[crate::model::PortRange]) -> Vec<crate::model::PortRange> {
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
pub(super) enum Run<'a> {
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
pub(super) enum Fam {
    V4,
    V6,
    /// Both families: the two copies of a rule from anywhere to single ports.
    Both,
}

impl Fam {
    pub(super) fn tag(self) -> char {
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
pub(super) struct Member<'a> {
    v4: Option<&'a Rule>,
    v6: Option<&'a Rule>,
}

impl<'a> Member<'a> {
    pub(super) fn fam(&self) -> Fam {
        match (self.v4, self.v6) {
            (Some(_), Some(_)) => Fam::Both,
            (Some(_), None) => Fam::V4,
            _ => Fam::V6,
        }
    }

    /// The rule that stands for the member (the IPv4 copy of a pair).
    pub(super) fn rule(&self) -> &'a Rule {
        self.v4.or(self.v6).expect("a member has a rule")
    }

    pub(super) fn rules(&self) -> impl Iterator<Item = &'a Rule> {
        self.v4.into_iter().chain(self.v6)
    }
}

/// What makes two copies of a rule one element: action, direction, protocol and ports.
pub(super) type TwinKey<'a> = (Action, Direction, Proto, &'a Ports);

/// The twin key of a rule whose IPv4 and IPv6 copies can share one element, else None:
/// a map member from anywhere to single ports (`meta l4proto . th dport`, no family).
pub(super) fn twin_key(rule: &Rule) -> Option<TwinKey<'_>> {
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
pub(super) fn merge_families<'a>(rules: &[&'a Rule]) -> Vec<Member<'a>> {
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
pub(super) struct Intervals(BTreeMap<u128, u128>);

impl Intervals {
    pub(super) fn hits(&self, (start, end): (u128, u128)) -> bool {
        self.0
            .range(..=end)
            .next_back()
            .is_some_and(|(_, last)| *last >= start)
    }

    pub(super) fn insert(&mut self, (start, end): (u128, u128)) {
        self.0.insert(start, end);
    }
}

/// An IP network as an address interval.
pub(super) fn interval(net: &IpNet) -> (u128, u128) {
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
pub(super) struct RunIndex {
    /// `Src` keys: address intervals.
    src: Intervals,
    /// `SrcProtoPort` keys with a single port: protocol → port → address intervals.
    single: HashMap<Proto, BTreeMap<u16, Intervals>>,
    /// `SrcProtoPort` keys with a port range: one bucket per distinct range.
    ranges: Vec<(Proto, crate::model::PortRange, Intervals)>,
}

impl RunIndex {
    pub(super) fn overlaps(&self, key: &MapKey) -> bool {
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

    pub(super) fn insert(&mut self, key: &MapKey) {
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
pub(super) type Group<'a> = (Option<MapKind>, Vec<Member<'a>>);

/// Split a chain's members (in merged order, see [`merge_families`]) into runs. A run
/// holds consecutive members of one map kind whose keys do not overlap within a family,
/// so a map lookup gives exactly the first-match verdict. Runs shorter than
/// [`MIN_MAP_RUN`] stay plain rules (cheaper than a few map lookups), except the last
/// run holding each family: rules are appended there, and a map makes that an element
/// change.
pub(super) fn runs<'a>(members: &[Member<'a>]) -> Vec<Run<'a>> {
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

impl Builder {
    /// A user chain's rules, in order: runs of map keys as verdict maps, the rest as
    /// plain rules (limits jump to their chains); long stretches that interleave the two
    /// map shapes as mixed runs (see `mixed`).
    pub(super) fn user_rules(&mut self, chain: &str, rules: &[&Rule]) {
        let members = merge_families(rules);
        let ordinary = runs(&members);
        // A chain whose ordinary runs are few has no stretch worth a mixed run.
        if super::mixed::cost(&ordinary) < super::mixed::MIXED_MIN_LOOKUPS {
            self.emit_runs(chain, ordinary);
            return;
        }
        let mut start = 0;
        for (s, e, stretch) in super::mixed::stretches(&members) {
            self.emit_runs(chain, runs(&members[start..s]));
            self.mixed_run(chain, &members[s..e], stretch);
            start = e;
        }
        self.emit_runs(chain, runs(&members[start..]));
    }

    /// The rules and maps of runs, in order.
    pub(super) fn emit_runs(&mut self, chain: &str, runs: Vec<Run>) {
        for run in runs {
            match run {
                Run::Map(kind, members, last) => self.map_run(chain, kind, &members, last),
                Run::Single(rule) if rule.action == Action::Limit => self.limit_rule(rule, chain),
                Run::Single(rule) => {
                    self.push_user_rule(chain, rule, true, super::family_tag(rule));
                }
                Run::Pair(rule) => self.push_user_rule(chain, rule, false, "46"),
            }
        }
    }
}
