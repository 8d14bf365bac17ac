//! Limits: `rate N/T` as N timed slots per key (a token bucket above
//! [`EXACT_RATE_MAX`]), `conn N` as `ct count`, each limit behind a chain of its own
//! with sets of its own, sized by its capacity.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use nftables::expr::{BinaryOperation, Elem, Expression, MetaKey, NamedExpression};
use nftables::schema::{NfListObject, Set, SetFlag, SetPolicy, SetType, SetTypeValue};
use nftables::stmt::{self, Statement};

use crate::model::{Family, Limit, LimitKey, Over, Proto, Rule, RuleLog, Then};

use super::nft::*;
use super::rules::*;
use super::{Builder, FAMILY, TABLE};

/// Sets whose names start with this hold limit state; the backend keeps them, with
/// their elements, across re-applies that declare them again.
pub const STATE_SET_PREFIX: &str = "state_";

/// Prefix of the per-limit chains (`limit_<id>`) and of the chains they refuse through.
pub const LIMIT_CHAIN_PREFIX: &str = "limit_";

/// Prefix of the chains limits refuse through (`limit_over_drop`, …), shared by limits.
pub const LIMIT_OVER_PREFIX: &str = "limit_over_";

/// The layout of a limit's chain, part of its id: a limit chain's name stands for its
/// rules (a reload keeps a chain of the same name), so a new layout takes new names.
const LIMIT_LAYOUT: &str = "3";

/// Rate limits up to this many connections per window are exact sliding windows (N
/// slots per key, so a refused packet is N set lookups); above it, a token bucket per
/// key (one lookup), which keeps a refused packet's cost flat at any N.
pub const EXACT_RATE_MAX: u32 = 20;

/// Spare elements in the small sets whose keys are fixed (a `per any` window, the
/// overflow budget): expired elements still count until the kernel's collector runs.
const SMALL_SET_SPARE: u32 = 64;

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
        "{LIMIT_LAYOUT}|{}|{family}",
        serde_json::to_string(&ident).unwrap_or_default()
    );
    format!("{:016x}{family}", fnv1a(&text))
}

/// Where a limit keeps its state, for `rampart limits`: the names of its chain and
/// sets, as [`Builder::limit_chain`] makes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitState {
    /// The limit's id (shared by the IPv4 and IPv6 copies of a `per any` limit).
    pub id: String,
    /// Its chain, whose rules that go over count what it refused.
    pub chain: String,
    /// The limit as it applies (UFW's when the rule has none).
    pub spec: Limit,
    /// The keys being tracked by a rate limit (an exact window's `_k`, a bucket's `_b`).
    pub tracked: Option<String>,
    /// An exact window's slots (`KEY . k`, or `k` for `per any`), each held T seconds.
    pub slots: Option<String>,
    /// A `conn` limit's keys (`per any` has none: one count).
    pub conns: Option<String>,
}

/// The name of a limit's state set: `state_<id>_<suffix>`.
fn state_name(id: &str, suffix: &str) -> String {
    format!("{STATE_SET_PREFIX}{id}_{suffix}")
}

/// Where the limit of `rule` keeps its state.
pub fn limit_state(rule: &Rule) -> LimitState {
    let spec = rule.limit.clone().unwrap_or_else(Limit::ufw_default);
    let id = limit_id(rule);
    let keyed = spec.per != LimitKey::Any;
    let set = |suffix: &str| state_name(&id, suffix);
    let exact = spec.rate.is_some_and(|r| r.count <= EXACT_RATE_MAX);
    LimitState {
        chain: format!("{LIMIT_CHAIN_PREFIX}{id}"),
        tracked: (keyed && spec.rate.is_some()).then(|| set(if exact { "k" } else { "b" })),
        slots: exact.then(|| set("s")),
        conns: (keyed && spec.conn.is_some()).then(|| set("c")),
        spec,
        id,
    }
}

/// A constant usable inside a concatenated key: `meta mark & 0x0 | N` (nft 1.0.6 takes
/// no bare constants there).
pub(super) fn constant(n: u32) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![zero(), num(n)])))
}

/// The key a limit counts by, and the set type that holds it.
pub(super) fn limit_key(per: LimitKey, family: Family) -> (Expression<'static>, SetType) {
    match (per, family) {
        // `meta mark & 0` is 0 for every packet: one key for everyone.
        (LimitKey::Any, _) => (zero(), SetType::Mark),
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

/// FNV-1a, 64 bit: stable across builds, unlike std's hasher.
pub(super) fn fnv1a(text: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv1a::default();
    h.write(text.as_bytes());
    h.finish()
}

/// The FNV-1a hash as a [`std::hash::Hasher`]: the same for the same input in every
/// run (the standard hasher is seeded at random).
pub(super) struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The N slot rules of a rate limit: a key is accepted (`under`) iff one of its N
/// slots is free, and it then holds that slot for T seconds, so at most N are accepted
/// in any window of T. `elem(k)` is the parts of slot k's element.
pub(super) fn slot_rules(
    set: &str,
    rate: crate::model::Rate,
    under: &Statement<'static>,
    elem: impl Fn(u32) -> Vec<Expression<'static>>,
) -> Vec<Vec<Statement<'static>>> {
    (0..rate.count)
        .map(|k| {
            let e = Expression::Named(NamedExpression::Concat(elem(k)));
            vec![
                m_ne(e.clone(), s(&format!("@{set}"))),
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
pub(super) fn under_limit(then: Then) -> Statement<'static> {
    match then {
        Then::Accept => accept(),
        Then::Continue => Statement::Return(None),
    }
}

impl Builder {
    /// Over a limit: log (rate-limited, unless logging is off) and refuse.
    pub(super) fn over_rules(&self, over: Over, proto: Proto) -> Vec<Vec<Statement<'static>>> {
        let mut rules: Vec<_> = self.limit_log().into_iter().collect();
        rules.push(vec![match over {
            Over::Reject => reject_for(proto),
            Over::Drop => drop(),
        }]);
        rules
    }

    /// A set of limit state with room for `size` elements (`timeout`: elements expire).
    pub(super) fn state_set(
        &mut self,
        name: &str,
        set_type: SetTypeValue<'static>,
        size: u32,
        timeout: bool,
    ) {
        self.objects.push(NfListObject::Set(Box::new(Set {
            family: FAMILY,
            table: TABLE.into(),
            name: name.to_string().into(),
            set_type,
            flags: timeout.then(|| HashSet::from([SetFlag::Timeout])),
            size: Some(size),
            // A resizable hash that grows with its elements: with the default
            // (performance) policy the kernel preallocates every bucket of a sized
            // IPv4 set (1,200 sets of 16,384 took 1.3 s to load instead of 0.02 s).
            policy: Some(SetPolicy::Memory),
            ..Set::default()
        })));
    }

    pub(super) fn has_chain(&self, name: &str) -> bool {
        self.chain_names.contains(name)
    }

    /// A `limit` rule: the match jumps to the limit's chain, which refuses what is over
    /// and, under the limit, accepts (or, with `then continue`, returns so that the
    /// following rules decide).
    pub(super) fn limit_rule(&mut self, rule: &Rule, chain: &str) {
        let lchain = self.limit_chain(rule);
        let matches = rule_matches(rule, true);
        let out: Vec<_> = self.rule_log(rule, &matches).into_iter().collect();
        let mut jump_rule = matches;
        jump_rule.push(counter());
        jump_rule.push(jump(&lchain));
        for r in out {
            self.rule(chain, r);
        }
        let tag = self.tag(rule, super::family_tag(rule));
        self.rule_tagged(chain, jump_rule, tag);
    }

    /// The chain (and state) of a limit, created once; returns its name. Every limit
    /// has sets of its own (a flood against one never fills another's), each with room
    /// for the limit's capacity, and a key that finds no room is counted in the
    /// limit's overflow budget, shared by every such key: a full set never lets a
    /// packet through uncounted. What is over goes to a chain shared by the limits
    /// that refuse the same way (it holds no state).
    ///
    /// ```text
    /// chain limit_ID {
    ///     add @state_ID_c { KEY ct count over C } goto OVER              # conn C
    ///     KEY != @state_ID_c add @state_ID_co { 0 ct count over C } goto OVER
    ///                                                # rate N/T, N <= 20: a window
    ///     update @state_ID_k { KEY timeout Ts }      # the keys being tracked
    ///     KEY != @state_ID_k limit rate over N/T burst N packets goto OVER
    ///     KEY != @state_ID_k accept                  # no room: the overflow bucket
    ///     KEY . 0 != @state_ID_s add @state_ID_s { KEY . 0 timeout Ts } accept
    ///     …                                          # N slots
    ///     goto OVER
    /// }
    /// chain limit_ID {                               # rate N/T, N > 20: a bucket
    ///     update @state_ID_b { KEY timeout Ts limit rate over N/T burst N packets } goto OVER
    ///     KEY != @state_ID_b limit rate over N/T burst N packets goto OVER
    ///     accept
    /// }
    /// ```
    /// A key is accepted by the window iff one of its N slots is free, and it then
    /// holds that slot for T seconds: so at most N connections per key are accepted in
    /// any window of T. A bucket holds N and refills N per T; the overflow budget is
    /// one such bucket for every key that found no room.
    pub(super) fn limit_chain(&mut self, rule: &Rule) -> String {
        let spec = rule.limit.clone().unwrap_or_else(Limit::ufw_default);
        let id = limit_id(rule);
        let lchain = format!("{LIMIT_CHAIN_PREFIX}{id}");
        if self.has_chain(&lchain) {
            return lchain;
        }
        let over_chain = self.over_chain(spec.over, rule.proto);
        let capacity = spec.capacity();
        let (key, key_type) = limit_key(spec.per, rule.family);
        let keyed = spec.per != LimitKey::Any;
        let under = under_limit(spec.then);
        let to_over = || {
            Statement::Goto(stmt::JumpTarget {
                target: over_chain.clone().into(),
            })
        };
        let absent = |set: &str| m_ne(key.clone(), s(&format!("@{set}")));
        let mut rules: Vec<Vec<Statement<'static>>> = Vec::new();
        if let Some(n) = spec.conn {
            let count = Statement::CTCount(stmt::CTCount {
                val: num(n),
                inv: Some(true),
            });
            if keyed {
                let set = state_name(&id, "c");
                self.state_set(&set, SetTypeValue::Single(key_type), capacity, false);
                self.dynset_stmts.push((set.clone(), count.clone()));
                rules.push(vec![dynset_add(&set, key.clone()), to_over()]);
                // No room for the key: one count shared by every such key.
                let oset = state_name(&id, "co");
                self.state_set(
                    &oset,
                    SetTypeValue::Single(SetType::Mark),
                    SMALL_SET_SPARE,
                    false,
                );
                self.dynset_stmts.push((oset.clone(), count));
                rules.push(vec![absent(&set), dynset_add(&oset, zero()), to_over()]);
            } else {
                rules.push(vec![count, to_over()]);
            }
        }
        if let Some(rate) = spec.rate {
            if keyed {
                // The set that says which keys are tracked: the window's keys, or
                // the buckets themselves.
                let exact = rate.count <= EXACT_RATE_MAX;
                let tracked = state_name(&id, if exact { "k" } else { "b" });
                self.state_set(&tracked, SetTypeValue::Single(key_type), capacity, true);
                let track = dynset_timed(stmt::SetOp::Update, &tracked, key.clone(), rate.seconds);
                if exact {
                    rules.push(vec![track]);
                } else {
                    self.dynset_stmts.push((tracked.clone(), bucket(rate)));
                    rules.push(vec![track, to_over()]);
                }
                rules.push(vec![absent(&tracked), bucket(rate), to_over()]);
                rules.push(vec![absent(&tracked), under.clone()]);
                if exact {
                    let slots = state_name(&id, "s");
                    // Room for every tracked key's N slots: a key that is tracked
                    // always finds room for its slots.
                    self.state_set(
                        &slots,
                        SetTypeValue::Concatenated(vec![key_type, SetType::Mark].into()),
                        capacity
                            .saturating_mul(rate.count)
                            .saturating_add(SMALL_SET_SPARE),
                        true,
                    );
                    rules.extend(slot_rules(&slots, rate, &under, |k| {
                        vec![key.clone(), constant(k)]
                    }));
                    rules.push(vec![to_over()]);
                } else {
                    rules.push(vec![under.clone()]);
                }
            } else if rate.count <= EXACT_RATE_MAX {
                let slots = state_name(&id, "s");
                self.state_set(
                    &slots,
                    SetTypeValue::Single(SetType::Mark),
                    rate.count.saturating_mul(2).saturating_add(SMALL_SET_SPARE),
                    true,
                );
                rules.extend(slot_rules(&slots, rate, &under, |k| vec![constant(k)]));
                rules.push(vec![to_over()]);
            } else {
                rules.push(vec![bucket(rate), to_over()]);
                rules.push(vec![under.clone()]);
            }
        } else {
            // conn only: under the limit.
            rules.push(vec![under]);
        }
        // What goes over is counted (`rampart limits`: refused since apply).
        for r in &mut rules {
            if matches!(r.last(), Some(Statement::Goto(_))) {
                r.insert(r.len() - 1, counter());
            }
        }
        self.chain(&lchain);
        for r in rules {
            self.rule(&lchain, r);
        }
        lchain
    }

    /// The chain that refuses what is over a limit (log, then reject or drop), shared
    /// by every limit that refuses the same way; returns its name.
    fn over_chain(&mut self, over: Over, proto: Proto) -> String {
        let how = match (over, proto) {
            (Over::Drop, _) => "drop",
            (Over::Reject, Proto::Tcp) => "reject_tcp",
            (Over::Reject, _) => "reject",
        };
        let name = format!("{LIMIT_OVER_PREFIX}{how}");
        if !self.has_chain(&name) {
            self.chain(&name);
            for r in self.over_rules(over, proto) {
                self.rule(&name, r);
            }
        }
        name
    }
}

/// The fixed key `meta mark & 0` (0 for every packet).
fn zero() -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), num(0))))
}

/// `update|add @SET { KEY timeout Ts }`
fn dynset_timed(
    op: stmt::SetOp,
    set: &str,
    key: Expression<'static>,
    seconds: u32,
) -> Statement<'static> {
    Statement::Set(stmt::Set {
        op,
        elem: Expression::Named(NamedExpression::Elem(Elem {
            val: Box::new(key),
            timeout: Some(seconds),
            expires: None,
            comment: None,
            counter: None,
        })),
        set: format!("@{set}").into(),
    })
}

/// A token bucket for `rate N/T`, matching what is over it: it holds N and refills N
/// per T (nft's units are fixed, so N per T is written per week: exact to within 1 in
/// 604800 / T * N).
pub(super) fn bucket(rate: crate::model::Rate) -> Statement<'static> {
    const WEEK: u64 = 604_800;
    let per_week = (u64::from(rate.count) * WEEK).div_ceil(u64::from(rate.seconds));
    Statement::Limit(stmt::Limit {
        rate: u32::try_from(per_week).unwrap_or(u32::MAX),
        rate_unit: None,
        per: Some("week".into()),
        burst: Some(rate.count),
        burst_unit: None,
        inv: Some(true),
    })
}
