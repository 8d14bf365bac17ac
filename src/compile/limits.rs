//! Limits: `rate N/T` as N timed slots per key, `conn N` as `ct count`, each limit
//! behind a chain of its own (or one shared by a class of simple port limits).

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use nftables::expr::{BinaryOperation, Elem, Expression, MetaKey, NamedExpression};
use nftables::schema::{NfListObject, Set, SetFlag, SetType, SetTypeValue};
use nftables::stmt::{self, Match, Operator, Statement};

use crate::model::{Family, Limit, LimitKey, LogLevel, Over, Proto, Rule, RuleLog, Then};

use super::nft::*;
use super::rules::*;
use super::{Builder, FAMILY, LOG_PREFIX, TABLE};

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
pub(super) fn limit_number(id: &str) -> u32 {
    u32::from_str_radix(&id[..8], 16).unwrap_or(0)
}

/// A constant usable inside a concatenated key: `meta mark & 0x0 | N` (nft 1.0.6 takes
/// no bare constants there).
pub(super) fn constant(n: u32) -> Expression<'static> {
    Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(meta(MetaKey::Mark), num(0)))),
        num(n),
    ])))
}

/// The key a limit counts by, and the set type that holds it.
pub(super) fn limit_key(per: LimitKey, family: Family) -> (Expression<'static>, SetType) {
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
pub(super) struct PortClass {
    /// Chain name suffix (`p4_…`, `p6_…`, `pany_…`).
    id: String,
    /// The class's number in the slot keys, with the low 8 bits free for the slot.
    number: u32,
}

/// The class of a limit that is rate-only, on exactly one TCP or UDP port, from any
/// source to any address on any interface (the packet's protocol and port then name
/// the rule), else None.
pub(super) fn port_limit_class(rule: &Rule, spec: &Limit) -> Option<PortClass> {
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
pub(super) fn fnv1a(text: &str) -> u64 {
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
pub(super) fn under_limit(then: Then) -> Statement<'static> {
    match then {
        Then::Accept => accept(),
        Then::Continue => Statement::Return(None),
    }
}

impl Builder {
    /// Over a limit: log (rate-limited, unless logging is off) and refuse.
    pub(super) fn over_rules(&self, over: Over, proto: Proto) -> Vec<Vec<Statement<'static>>> {
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

    pub(super) fn has_set(&self, name: &str) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o, NfListObject::Set(x) if x.name == name))
    }

    /// The set of rate-limit slots shared by all rate limits of one key family.
    pub(super) fn slot_set(&mut self, name: &str, types: Vec<SetType>) {
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

    pub(super) fn has_chain(&self, name: &str) -> bool {
        self.objects
            .iter()
            .any(|o| matches!(o, NfListObject::Chain(c) if c.name == name))
    }

    /// The per-key connection-count set of a `conn` limit. nft (1.0.6 and later)
    /// marks it `dynamic` itself because a rule adds to it; its JSON parser does not
    /// take that flag.
    pub(super) fn conn_set(&mut self, name: &str, set_type: SetType) {
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
    pub(super) fn limit_rule(&mut self, rule: &Rule, chain: &str) {
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
    pub(super) fn limit_chain(&mut self, rule: &Rule) -> String {
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
    pub(super) fn port_limit_chain(
        &mut self,
        rule: &Rule,
        spec: &Limit,
        class: &PortClass,
    ) -> String {
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
}
