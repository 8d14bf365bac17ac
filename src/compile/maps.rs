//! Verdict maps: the maps of one run of user rules, split by family and key shape, and
//! the rules that look them up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use nftables::expr::Verdict as NftVerdict;
use nftables::expr::{BinaryOperation, Expression, MetaKey, NamedExpression};
use nftables::schema::{Map, NfListObject, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Statement};

use crate::model::{Action, Family, Rule};

use super::nft::*;
use super::optimiser::{Fam, MapKey, MapKind, Member, MAP_PREFIX, PREFIX_HASH_MIN};
use super::{Builder, CHAIN_REJECT, FAMILY, TABLE};

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

impl Builder {
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
    pub(super) fn map_run(
        &mut self,
        chain: &str,
        kind: MapKind,
        members: &[Member],
        last: [bool; 2],
    ) {
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
    pub(super) fn map_group(
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
        let mut shape_tags: BTreeMap<Shape, Vec<Option<String>>> = BTreeMap::new();
        let families = match fam {
            Fam::V4 => "4",
            Fam::V6 => "6",
            Fam::Both => "46",
        };
        for rule in members {
            let key = MapKey::of(rule).expect("map members have keys");
            // Which rule each element stands for (its counter is that rule's).
            let tag = self.tag(rule, families);
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
                super::nft::addr(key.src.addr())
            } else {
                super::nft::prefix_of(key.src.network(), u32::from(key.src.prefix_len()))
            };
            if kind == MapKind::Src {
                let len = key.src.prefix_len();
                let (shape, addr) = if host {
                    (Shape::Of('h'), addr)
                } else if hashed.contains(&len) {
                    (Shape::Net(len), super::nft::addr(key.src.network()))
                } else {
                    (Shape::Of('i'), addr)
                };
                shape_tags.entry(shape).or_default().push(tag.clone());
                shapes
                    .entry(shape)
                    .or_default()
                    .push(Expression::List(vec![addr, verdict]));
                continue;
            }
            for proto in &key.protos {
                for r in &key.ports {
                    let single = r.first == r.last;
                    let port = port_range(u32::from(r.first), u32::from(r.last));
                    let (shape, parts) = match (single, host, anywhere) {
                        (true, true, _) => ('h', vec![addr.clone(), word(proto.word()), port]),
                        (true, _, true) => ('p', vec![word(proto.word()), port]),
                        _ => ('i', vec![addr.clone(), word(proto.word()), port]),
                    };
                    let k = Expression::Named(NamedExpression::Concat(parts));
                    shape_tags
                        .entry(Shape::Of(shape))
                        .or_default()
                        .push(tag.clone());
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
            let tags = shape_tags.remove(&shape).unwrap_or_default();
            self.element_tags.reserve(elems.len());
            for (e, tag) in elems.iter().zip(tags) {
                if let (Expression::List(kv), Some(tag)) = (e, tag) {
                    self.element_tags
                        .insert((name.clone(), super::key_text(&kv[0])), tag);
                }
            }
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
}
