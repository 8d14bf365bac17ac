//! Mixed runs: first match over interleaved rules of both map shapes (`deny from NET`
//! between `allow PORT` and `allow from HOST to any port PORT`) in a constant number of
//! lookups, however the rules interleave.
//!
//! Each rule of the run gets a code (see [`codes`]): the earlier the rule, the larger
//! its code; 0 means "no rule yet". The rules are split by key shape into lookups
//! (stages), each a map from the key to the code of the stage's first rule that
//! matches it (its elements are the first-match cells of its rules). The packet mark
//! is the register that carries the best code so far from one lookup to the next:
//!
//! ```text
//! meta mark set ip saddr . meta l4proto . th dport map @…_h4        # hosts and ports
//! meta mark set meta l4proto . th dport map @…_pb                   # ports, from anywhere
//! meta mark set ip saddr . meta mark map @…_a4                      # source-only rules
//! meta mark vmap @…_v                                               # the winner's verdict
//! ```
//!
//! A stage whose rules may lose to an earlier stage's (an overlapping element of an
//! earlier rule, see [`needs_mark`]) has the mark in its key, each element matching only
//! the marks `0 ..= code - 1`: it replaces the mark only when its rule comes first.
//! Other tools' marks are untouched: only packets that arrive with mark 0 take this
//! path, and every verdict of it that lets the packet on (accept, reject, a limit,
//! falling through) sets the mark back to 0 first; a packet with a mark takes the run
//! compiled the ordinary way, in a chain of its own.

use std::collections::BTreeMap;

use nftables::expr::Verdict as NftVerdict;
use nftables::expr::{Expression, MetaKey, NamedExpression, Range};
use nftables::schema::{Map, NfListObject, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Statement};

use crate::model::{Action, Family, Proto, Rule};

use super::nft::*;
use super::optimiser::{interval, runs, MapKey, MapKind, Member, Run, MAP_PREFIX};
use super::{Builder, CHAIN_REJECT, FAMILY, TABLE};

/// A mixed run holds fewer rules than this (longer stretches are split).
pub const CODE_TOP: u32 = 1 << 16;

/// Fewest lookups the ordinary compilation of a stretch of map rules must cost before
/// it is considered for a mixed run; it becomes one only if that costs fewer (its
/// stages, the verdict map and the two rules that enter it or its ordinary copy).
pub const MIXED_MIN_LOOKUPS: usize = 12;

/// Sets the mark back to 0, then accepts.
pub const CHAIN_UNMARK_ACCEPT: &str = "unmark_accept";

/// Sets the mark back to 0, then refuses the polite way.
pub const CHAIN_UNMARK_REJECT: &str = "unmark_reject";

/// Prefix of the chain that sets the mark back to 0 before a limit's chain.
pub const UNMARK_PREFIX: &str = "unmark_";

/// Most first-match cells a mixed run may hold, per rule (else it is compiled the
/// ordinary way): port rules that overlap in many ways would need too many elements.
const CELLS_PER_RULE: usize = 16;

/// An address interval, inclusive.
type Span = (u128, u128);

/// A first-match cell: source interval, protocol-and-port interval, the winning place.
pub(super) type Cell = (Span, (u32, u32), usize);

/// One protocol-and-port segment's first-match pieces over sources, and its interval.
type Segment = (Vec<(Span, usize)>, u32, u32);

/// A port rule's key as a rectangle: source interval × (protocol, port) interval, the
/// protocol in the high bits (0 TCP, 1 UDP), so one rectangle is one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rect {
    pub src: Span,
    pub pp: (u32, u32),
    pub place: usize,
}

fn proto_index(p: Proto) -> u32 {
    match p {
        Proto::Udp => 1,
        _ => 0,
    }
}

/// First match in one dimension: the items (interval, place) in place order; the
/// disjoint pieces each place wins, sorted, with adjacent pieces of one place merged.
pub(super) fn claim_1d(items: impl IntoIterator<Item = (Span, usize)>) -> Vec<(Span, usize)> {
    // Claimed pieces: start → (end, place); disjoint.
    let mut claimed: BTreeMap<u128, (u128, usize)> = BTreeMap::new();
    for ((lo, hi), place) in items {
        let mut gaps = Vec::new();
        let mut cur = Some(lo);
        let first = claimed
            .range(..=lo)
            .next_back()
            .map(|(s, _)| *s)
            .unwrap_or(lo);
        for (&s, &(e, _)) in claimed.range(first..) {
            let Some(c) = cur else { break };
            if s > hi {
                break;
            }
            if e < c {
                continue;
            }
            if s > c {
                gaps.push((c, s - 1));
            }
            cur = e.checked_add(1).filter(|n| *n <= hi);
        }
        if let Some(c) = cur {
            gaps.push((c, hi));
        }
        for (s, e) in gaps {
            claimed.insert(s, (e, place));
        }
    }
    let mut out: Vec<(Span, usize)> = Vec::with_capacity(claimed.len());
    for (s, (e, place)) in claimed {
        match out.last_mut() {
            Some(((_, last_e), p)) if *p == place && last_e.checked_add(1) == Some(s) => {
                *last_e = e;
            }
            _ => out.push(((s, e), place)),
        }
    }
    out
}

/// First match in two dimensions: the rectangles in place order; disjoint cells, each
/// with the place that wins it. None when the cells would be too many (more than
/// `cap`), or the work to find them too large.
pub(super) fn claim_2d(rects: &[Rect], cap: usize) -> Option<Vec<Cell>> {
    let mut bounds: Vec<u64> = rects
        .iter()
        .flat_map(|r| [u64::from(r.pp.0), u64::from(r.pp.1) + 1])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let at = |b: u64| bounds.binary_search(&b).expect("a bound of a rectangle");
    let mut segments: Vec<Vec<usize>> = vec![Vec::new(); bounds.len().saturating_sub(1)];
    let mut work = 0usize;
    for (i, r) in rects.iter().enumerate() {
        let (a, b) = (at(u64::from(r.pp.0)), at(u64::from(r.pp.1) + 1));
        work += b - a;
        if work > 4_000_000 {
            return None;
        }
        for seg in &mut segments[a..b] {
            seg.push(i);
        }
    }
    let mut out: Vec<Cell> = Vec::new();
    // The previous segment's pieces and where its run of equal segments began.
    let mut prev: Option<Segment> = None;
    let flush = |prev: &mut Option<Segment>, out: &mut Vec<Cell>| {
        if let Some((pieces, lo, hi)) = prev.take() {
            out.extend(
                pieces
                    .into_iter()
                    .map(|(span, place)| (span, (lo, hi), place)),
            );
        }
    };
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() {
            flush(&mut prev, &mut out);
            continue;
        }
        let lo = bounds[i] as u32;
        let hi = (bounds[i + 1] - 1) as u32;
        let pieces = claim_1d(seg.iter().map(|&r| (rects[r].src, rects[r].place)));
        match &mut prev {
            Some((p, plo, phi)) if *p == pieces && *phi + 1 == lo && (*plo >> 16) == (lo >> 16) => {
                *phi = hi;
            }
            _ => {
                flush(&mut prev, &mut out);
                prev = Some((pieces, lo, hi));
            }
        }
        if out.len() > cap {
            return None;
        }
    }
    flush(&mut prev, &mut out);
    (out.len() <= cap).then_some(out)
}

/// Whether a member can be in a mixed run: every copy has a map key and ends the
/// evaluation of what it matches (a limit that lets later rules decide cannot: its
/// later rules would be the run's own).
pub(super) fn mixable(m: &Member) -> bool {
    m.rules()
        .all(|r| MapKey::of(r).is_some() && r.is_terminal())
}

/// What ordinary runs cost per packet, in lookups.
pub(super) fn cost(runs: &[Run]) -> usize {
    runs.iter()
        .map(|r| match r {
            Run::Map(..) => 2,
            _ => 1,
        })
        .sum()
}

/// The stretches (start, end, their ordinary runs) of a chain's members that are
/// candidates for mixed runs: maximal stretches of mixable members whose ordinary
/// compilation would cost at least [`MIXED_MIN_LOOKUPS`] lookups.
pub(super) fn stretches<'a>(members: &[Member<'a>]) -> Vec<(usize, usize, Vec<Run<'a>>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < members.len() {
        if !mixable(&members[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < members.len() && mixable(&members[i]) && i - start + 1 < CODE_TOP as usize {
            i += 1;
        }
        let ordinary = runs(&members[start..i]);
        if cost(&ordinary) >= MIXED_MIN_LOOKUPS {
            out.push((start, i, ordinary));
        }
    }
    out
}

/// An address interval as nft writes it: a host, a prefix, or a range.
fn span_expr(span: Span, family: Family) -> Expression<'static> {
    let ip = |n: u128| -> std::net::IpAddr {
        match family {
            Family::V4 => std::net::Ipv4Addr::from(n as u32).into(),
            Family::V6 => std::net::Ipv6Addr::from(n).into(),
        }
    };
    let bits = match family {
        Family::V4 => 32,
        Family::V6 => 128,
    };
    let size = span.1 - span.0;
    // A prefix: the size is 2^k - 1 and the start is aligned to it.
    if size == 0 {
        return addr(ip(span.0));
    }
    if (size & size.wrapping_add(1)) == 0 && span.0 & size == 0 {
        let host_bits = 128 - size.leading_zeros();
        return prefix_of(ip(span.0), bits - host_bits);
    }
    Expression::Range(Box::new(Range {
        range: [addr(ip(span.0)), addr(ip(span.1))],
    }))
}

/// The port range of a protocol-and-port interval.
fn port_expr(lo: u32, hi: u32) -> Expression<'static> {
    port_range(lo & 0xffff, hi & 0xffff)
}

fn mark() -> Expression<'static> {
    meta(MetaKey::Mark)
}

/// `meta mark set KEY map @NAME`
fn mark_set_map(key: Expression<'static>, name: &str) -> Statement<'static> {
    Statement::Mangle(stmt::Mangle {
        key: mark(),
        value: Expression::Named(NamedExpression::Map(Box::new(nftables::expr::Map {
            key,
            data: s(&format!("@{name}")),
        }))),
    })
}

/// `meta mark set 0`
fn unmark() -> Statement<'static> {
    Statement::Mangle(stmt::Mangle {
        key: mark(),
        value: num(0),
    })
}

fn goto(chain: &str) -> NftVerdict<'static> {
    NftVerdict::Goto(stmt::JumpTarget {
        target: chain.to_string().into(),
    })
}

/// The codes of a run's rules, by place: decreasing, and with as few bits set as can
/// be (the range `0 ..= code - 1` an element matches is as many prefixes as the code
/// has bits set, and the kernel's concatenated-range sets store each prefix).
pub(super) fn codes(n: usize) -> Vec<u32> {
    fn choose(n: u64, k: u64) -> u64 {
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }
    let mut bits: u32 = 1;
    while (1..=bits).map(|k| choose(32, u64::from(k))).sum::<u64>() < n as u64 {
        bits += 1;
    }
    let mut all: Vec<u32> = Vec::new();
    fn walk(from: u32, left: u32, value: u32, out: &mut Vec<u32>) {
        if value != 0 {
            out.push(value);
        }
        if left == 0 {
            return;
        }
        for b in from..32 {
            walk(b + 1, left - 1, value | (1 << b), out);
        }
    }
    walk(0, bits, 0, &mut all);
    all.sort_unstable_by(|a, b| b.cmp(a));
    all.truncate(n);
    all
}

/// What one lookup of a mixed run holds.
enum StageKind {
    /// Host source, one protocol and port: a hash map (`ip saddr . meta l4proto . th dport`).
    Exact(Vec<(u128, u32, usize)>),
    /// Source interval × protocol and port interval.
    Cells(Vec<Cell>),
    /// Any source: protocol and port interval (`meta l4proto . th dport`).
    Ports(Vec<((u32, u32), usize)>),
    /// Source-only rules: a source interval (`ip saddr`).
    Src(Vec<(Span, usize)>),
}

/// One lookup: its name's suffix, the family whose addresses its key holds (None: a
/// key without addresses, for both families unless `only` says one), and its elements.
struct Stage {
    suffix: String,
    family: Option<Family>,
    only: Option<Family>,
    kind: StageKind,
}

impl Stage {
    /// The families whose packets it can match.
    fn serves(&self, f: Family) -> bool {
        match (self.family, self.only) {
            (Some(x), _) | (None, Some(x)) => x == f,
            (None, None) => true,
        }
    }

    fn is_empty(&self) -> bool {
        match &self.kind {
            StageKind::Exact(v) => v.is_empty(),
            StageKind::Cells(v) => v.is_empty(),
            StageKind::Ports(v) => v.is_empty(),
            StageKind::Src(v) => v.is_empty(),
        }
    }
}

/// First match over protocol-and-port intervals, one protocol at a time (so no piece
/// spans two protocols).
fn claim_ports(items: &[((u32, u32), usize)]) -> Vec<((u32, u32), usize)> {
    let mut out = Vec::new();
    for proto in [0u32, 1] {
        let of_proto = items
            .iter()
            .filter(|((lo, _), _)| lo >> 16 == proto)
            .map(|((lo, hi), p)| ((u128::from(*lo), u128::from(*hi)), *p));
        out.extend(
            claim_1d(of_proto)
                .into_iter()
                .map(|((lo, hi), p)| ((lo as u32, hi as u32), p)),
        );
    }
    out
}

/// A mixed run's lookups, in the order they run. None when the cells would be too many.
fn stages(members: &[Member]) -> Option<Vec<Stage>> {
    let cap = CELLS_PER_RULE * members.len() + 4096;
    let mut out = Vec::new();
    let mut both_ports = Vec::new();
    let mut tail = Vec::new();
    for family in [Family::V4, Family::V6] {
        let tag = match family {
            Family::V4 => '4',
            Family::V6 => '6',
        };
        let mut exact: Vec<(u128, u32, usize)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut rects = Vec::new();
        let mut ports = Vec::new();
        let mut src = Vec::new();
        for (place, m) in members.iter().enumerate() {
            let both = m.rules().count() == 2;
            for rule in m.rules().filter(|r| r.family == family) {
                let key = MapKey::of(rule).expect("mixed members have keys");
                let span = interval(&key.src);
                if key.kind == MapKind::Src {
                    src.push((span, place));
                    continue;
                }
                let anywhere = key.src.prefix_len() == 0;
                if both && family == Family::V6 {
                    // The pair's IPv4 copy stands for both.
                    continue;
                }
                let host = span.0 == span.1;
                for proto in &key.protos {
                    for r in &key.ports {
                        let p = proto_index(*proto) << 16;
                        let pp = (p | u32::from(r.first), p | u32::from(r.last));
                        if host && pp.0 == pp.1 {
                            // An exact key: the first rule with it wins.
                            if seen.insert((span.0, pp.0)) {
                                exact.push((span.0, pp.0, place));
                            }
                        } else if anywhere && both {
                            both_ports.push((pp, place));
                        } else if anywhere {
                            ports.push((pp, place));
                        } else {
                            rects.push(Rect {
                                src: span,
                                pp,
                                place,
                            });
                        }
                    }
                }
            }
        }
        out.push(Stage {
            suffix: format!("h{tag}"),
            family: Some(family),
            only: None,
            kind: StageKind::Exact(exact),
        });
        out.push(Stage {
            suffix: format!("i{tag}"),
            family: Some(family),
            only: None,
            kind: StageKind::Cells(claim_2d(&rects, cap)?),
        });
        tail.push(Stage {
            suffix: format!("p{tag}"),
            family: None,
            only: Some(family),
            kind: StageKind::Ports(claim_ports(&ports)),
        });
        tail.push(Stage {
            suffix: format!("a{tag}"),
            family: Some(family),
            only: None,
            kind: StageKind::Src(claim_1d(src)),
        });
    }
    out.push(Stage {
        suffix: "pb".into(),
        family: None,
        only: None,
        kind: StageKind::Ports(claim_ports(&both_ports)),
    });
    out.extend(tail);
    out.retain(|s| !s.is_empty());
    Some(out)
}

/// A lookup's elements as boxes: source interval × protocol-and-port interval, place.
fn boxes(stage: &Stage) -> Vec<Cell> {
    const ALL_PP: (u32, u32) = (0, u32::MAX);
    const ALL_SRC: Span = (0, u128::MAX);
    match &stage.kind {
        StageKind::Exact(v) => v
            .iter()
            .map(|(a, pp, p)| ((*a, *a), (*pp, *pp), *p))
            .collect(),
        StageKind::Cells(v) => v.clone(),
        StageKind::Ports(v) => v.iter().map(|(pp, p)| (ALL_SRC, *pp, *p)).collect(),
        StageKind::Src(v) => v.iter().map(|(s, p)| (*s, ALL_PP, *p)).collect(),
    }
}

/// Whether lookup `i` must compare the mark: some element of an earlier lookup (of a
/// family it serves) overlaps one of its elements and belongs to an earlier rule, so
/// the earlier match must win. Otherwise every match of lookup `i` is the first rule
/// so far, and it sets the mark unconditionally. When the check would take too long,
/// the answer is yes (always correct, only slower to load).
fn needs_mark(stages: &[Stage], i: usize) -> bool {
    let fams = |s: &Stage| [Family::V4, Family::V6].map(|f| s.serves(f));
    let mine = fams(&stages[i]);
    let mut earlier: Vec<Cell> = stages[..i]
        .iter()
        .filter(|s| fams(s).iter().zip(&mine).any(|(a, b)| *a && *b))
        .flat_map(boxes)
        .collect();
    if earlier.is_empty() {
        return false;
    }
    earlier.sort_unstable_by_key(|(_, pp, _)| pp.0);
    // The largest interval end among the boxes sorted before each index.
    let mut reach = Vec::with_capacity(earlier.len());
    let mut top = 0u32;
    for (_, pp, _) in &earlier {
        top = top.max(pp.1);
        reach.push(top);
    }
    let mut work = 0usize;
    for (src, pp, place) in boxes(&stages[i]) {
        let end = earlier.partition_point(|(_, e, _)| e.0 <= pp.1);
        for j in (0..end).rev() {
            if reach[j] < pp.0 {
                break;
            }
            work += 1;
            if work > 5_000_000 {
                return true;
            }
            let (esrc, epp, eplace) = earlier[j];
            if epp.1 >= pp.0 && esrc.0 <= src.1 && src.0 <= esrc.1 && eplace < place {
                return true;
            }
        }
    }
    false
}

impl Builder {
    /// A mixed run (see the module's text) of members whose ordinary runs are
    /// `ordinary`, or, when its cells would be too many or it would cost more lookups,
    /// those runs.
    pub(super) fn mixed_run(&mut self, chain: &str, members: &[Member], ordinary: Vec<Run>) {
        let stages = match stages(members) {
            Some(s) if s.len() + 3 < cost(&ordinary) => s,
            _ => {
                self.emit_runs(chain, ordinary);
                return;
            }
        };
        let k = {
            let n = self.mixed_runs.entry(chain.to_string()).or_insert(0);
            *n += 1;
            *n - 1
        };
        let mixed = format!("{chain}_mixed_{k}");
        let marked = format!("{chain}_marked_{k}");
        let codes = codes(members.len());
        let code = |place: usize| codes[place];
        // The verdict of each member, by code.
        let mut verdicts: Vec<Expression<'static>> = Vec::with_capacity(members.len());
        let vname = format!("{MAP_PREFIX}{chain}_m{k}_v");
        for (place, m) in members.iter().enumerate() {
            let rule: &Rule = m.rule();
            let families = match (m.rules().count(), rule.family) {
                (2, _) => "46",
                (_, Family::V4) => "4",
                (_, Family::V6) => "6",
            };
            let verdict = match rule.action {
                Action::Allow => {
                    self.unmark_chain(CHAIN_UNMARK_ACCEPT, accept());
                    goto(CHAIN_UNMARK_ACCEPT)
                }
                Action::Deny => NftVerdict::Drop,
                Action::Reject => {
                    self.unmark_chain(
                        CHAIN_UNMARK_REJECT,
                        Statement::Goto(stmt::JumpTarget {
                            target: CHAIN_REJECT.into(),
                        }),
                    );
                    goto(CHAIN_UNMARK_REJECT)
                }
                Action::Limit => {
                    let lchain = self.limit_chain(rule);
                    let name = format!("{UNMARK_PREFIX}{lchain}");
                    self.unmark_chain(
                        &name,
                        Statement::Goto(stmt::JumpTarget {
                            target: lchain.into(),
                        }),
                    );
                    goto(&name)
                }
            };
            let key = num(code(place));
            if let Some(tag) = self.tag(rule, families) {
                self.element_tags
                    .insert((vname.clone(), super::key_text(&key)), tag);
            }
            verdicts.push(Expression::List(vec![key, Expression::Verdict(verdict)]));
        }
        self.chain(&mixed);
        // A lookup needs the mark in its key only where an earlier lookup's rule may
        // have matched first (see `needs_mark`).
        for (i, stage) in stages.iter().enumerate() {
            let first = !needs_mark(&stages, i);
            let family = stage.family.or(stage.only).unwrap_or(Family::V4);
            let (ip, addr_type) = match family {
                Family::V4 => ("ip", SetType::Ipv4Addr),
                Family::V6 => ("ip6", SetType::Ipv6Addr),
            };
            let below = |place: usize| -> Vec<Expression<'static>> {
                if first {
                    vec![]
                } else {
                    vec![Expression::Range(Box::new(Range {
                        range: [num(0), num(code(place) - 1)],
                    }))]
                }
            };
            let proto_word = |pp: u32| if pp >> 16 == 1 { "udp" } else { "tcp" };
            // `ip saddr . meta l4proto . th dport`, and its types.
            let host_port_types = || vec![addr_type, SetType::InetProto, SetType::InetService];
            let host_port_key = || {
                vec![
                    payload(ip, "saddr"),
                    meta(MetaKey::L4proto),
                    payload("th", "dport"),
                ]
            };
            let (types, key, elems, interval): (
                Vec<SetType>,
                Vec<Expression<'static>>,
                Vec<_>,
                bool,
            ) = match &stage.kind {
                StageKind::Exact(v) => (
                    host_port_types(),
                    host_port_key(),
                    v.iter()
                        .map(|(a, pp, place)| {
                            let parts = vec![
                                span_expr((*a, *a), family),
                                word(proto_word(*pp)),
                                num(pp & 0xffff),
                            ];
                            (parts, *place)
                        })
                        .collect(),
                    !first,
                ),
                StageKind::Cells(v) => (
                    host_port_types(),
                    host_port_key(),
                    v.iter()
                        .map(|(span, (lo, hi), place)| {
                            let parts = vec![
                                span_expr(*span, family),
                                word(proto_word(*lo)),
                                port_expr(*lo, *hi),
                            ];
                            (parts, *place)
                        })
                        .collect(),
                    true,
                ),
                StageKind::Ports(v) => (
                    vec![SetType::InetProto, SetType::InetService],
                    vec![meta(MetaKey::L4proto), payload("th", "dport")],
                    v.iter()
                        .map(|((lo, hi), place)| {
                            (vec![word(proto_word(*lo)), port_expr(*lo, *hi)], *place)
                        })
                        .collect(),
                    !first || v.iter().any(|((lo, hi), _)| lo != hi),
                ),
                StageKind::Src(v) => (
                    vec![addr_type],
                    vec![payload(ip, "saddr")],
                    v.iter()
                        .map(|(span, place)| (vec![span_expr(*span, family)], *place))
                        .collect(),
                    !first || v.iter().any(|(span, _)| span.0 != span.1),
                ),
            };
            let mut types = types;
            let mut key = key;
            if !first {
                types.push(SetType::Mark);
                key.push(mark());
            }
            let elems: Vec<Expression<'static>> = elems
                .into_iter()
                .map(|(mut parts, place): (Vec<Expression<'static>>, usize)| {
                    parts.extend(below(place));
                    let k = if parts.len() == 1 {
                        parts.pop().expect("one part")
                    } else {
                        Expression::Named(NamedExpression::Concat(parts))
                    };
                    Expression::List(vec![k, num(code(place))])
                })
                .collect();
            let set_type = if types.len() == 1 {
                SetTypeValue::Single(types.pop().expect("one type"))
            } else {
                SetTypeValue::Concatenated(types.into())
            };
            let key = if key.len() == 1 {
                key.pop().expect("one key")
            } else {
                Expression::Named(NamedExpression::Concat(key))
            };
            let name = format!("{MAP_PREFIX}{chain}_m{k}_{}", stage.suffix);
            self.data_map(&name, set_type, elems, interval);
            let mut rule = Vec::new();
            if let (None, Some(only)) = (stage.family, stage.only) {
                rule.push(m_eq(
                    meta(MetaKey::Nfproto),
                    s(match only {
                        Family::V4 => "ipv4",
                        Family::V6 => "ipv6",
                    }),
                ));
            }
            rule.push(mark_set_map(key, &name));
            self.rule(&mixed, rule);
        }
        self.objects.push(NfListObject::Map(Box::new(Map {
            family: FAMILY,
            table: TABLE.into(),
            name: vname.clone().into(),
            set_type: SetTypeValue::Single(SetType::Mark),
            // Placeholder: written as "verdict" by the backend (see Plan::verdict_maps).
            map: SetTypeValue::Single(SetType::Mark),
            elem: Some(verdicts.into()),
            ..Map::default()
        })));
        self.verdict_maps.push(vname.clone());
        self.rule(
            &mixed,
            vec![Statement::VerdictMap(stmt::VerdictMap {
                key: mark(),
                data: s(&format!("@{vname}")),
            })],
        );
        // Packets that came with a mark: the ordinary compilation.
        self.chain(&marked);
        self.emit_runs(&marked, ordinary);
        self.rule(chain, vec![m_eq(mark(), num(0)), jump(&mixed)]);
        self.rule(chain, vec![m_ne(mark(), num(0)), jump(&marked)]);
    }

    /// A chain that sets the mark back to 0, then does `then` (made once).
    fn unmark_chain(&mut self, name: &str, then: Statement<'static>) {
        if self.chain_names.contains(name) {
            return;
        }
        self.chain(name);
        self.rule(name, vec![unmark(), then]);
    }

    /// A map from keys to marks.
    fn data_map(
        &mut self,
        name: &str,
        set_type: SetTypeValue<'static>,
        elems: Vec<Expression<'static>>,
        interval: bool,
    ) {
        self.objects.push(NfListObject::Map(Box::new(Map {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            set_type,
            map: SetTypeValue::Single(SetType::Mark),
            flags: interval.then(|| std::collections::HashSet::from([SetFlag::Interval])),
            elem: Some(elems.into()),
            ..Map::default()
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_in_one_dimension() {
        let got = claim_1d([((10, 20), 0), ((0, 30), 1), ((15, 40), 2), ((21, 25), 3)]);
        assert_eq!(
            got,
            vec![((0, 9), 1), ((10, 20), 0), ((21, 30), 1), ((31, 40), 2)]
        );
        let full = claim_1d([((0, u128::MAX), 0), ((5, 6), 1)]);
        assert_eq!(full, vec![((0, u128::MAX), 0)]);
    }

    #[test]
    fn first_match_in_two_dimensions() {
        let rects = [
            Rect {
                src: (5, 5),
                pp: (22, 22),
                place: 0,
            },
            Rect {
                src: (0, 100),
                pp: (20, 30),
                place: 1,
            },
        ];
        let mut got = claim_2d(&rects, 100).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                ((0, 4), (22, 22), 1),
                ((0, 100), (20, 21), 1),
                ((0, 100), (23, 30), 1),
                ((5, 5), (22, 22), 0),
                ((6, 100), (22, 22), 1),
            ]
        );
    }

    #[test]
    fn spans_are_written_as_prefixes_where_they_are_ones() {
        let t = |a: u128, b: u128| crate::compile::key_text(&span_expr((a, b), Family::V4));
        assert_eq!(
            t(0, u128::from(u32::MAX)),
            r#"{"prefix":{"addr":"0.0.0.0","len":0}}"#
        );
        assert_eq!(t(8, 15), r#"{"prefix":{"addr":"0.0.0.8","len":29}}"#);
        assert_eq!(t(7, 7), r#""0.0.0.7""#);
        assert_eq!(t(7, 8), r#"{"range":["0.0.0.7","0.0.0.8"]}"#);
    }
}
