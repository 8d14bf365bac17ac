//! An interpreter of compiled plans, for the subset of nft that `compile` emits in the
//! user chains. It exists to check the optimiser: for any policy and packet, the
//! interpreted plan must decide as [`Policy::decide`](crate::model::Policy::decide) does.
//!
//! What it does not understand (a statement, an expression, a form of match) is an
//! error, never skipped: a plan cannot agree with the model by being misread.

use std::net::IpAddr;

use ipnet::IpNet;
use nftables::expr::{
    BinaryOperation, Expression, MetaKey, NamedExpression, Payload, SetItem, Verdict,
};
use nftables::schema::NfListObject;
use nftables::stmt::{JumpTarget, Operator, Statement};

use crate::compile::{
    Plan, CHAIN_REJECT, CHAIN_USER_FORWARD, CHAIN_USER_INPUT, CHAIN_USER_OUTPUT, LIMIT_CHAIN_PREFIX,
};
use crate::model::{Decision, Direction, Family, Packet, Proto};

/// A field's value in a packet.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Addr(IpAddr),
    Num(u32),
    Str(String),
    /// An interface name (matched by name, or by `prefix*`).
    Iface(String),
}

/// Run the packet through the user chain of its direction. An error means the plan is
/// one the kernel would refuse or read ambiguously (a packet matching two elements of
/// one map: nft refuses overlapping interval elements), or one this interpreter does
/// not understand.
pub fn decide(plan: &Plan, p: &Packet) -> Result<Decision, String> {
    Ok(decide_marked(plan, p, 0)?.0)
}

/// [`decide`] for a packet that comes with a mark; also gives the mark the packet
/// leaves with.
pub fn decide_marked(plan: &Plan, p: &Packet, mark: u32) -> Result<(Decision, u32), String> {
    let chain = match p.direction {
        Direction::In => CHAIN_USER_INPUT,
        Direction::Out => CHAIN_USER_OUTPUT,
        Direction::Forward => CHAIN_USER_FORWARD,
    };
    let mut mark = mark;
    let d = run_chain(plan, chain, p, &mut mark)?.unwrap_or(Decision::NoMatch);
    Ok((d, mark))
}

/// `Some(decision)` if the chain ended evaluation, `None` if it fell through or returned.
fn run_chain(
    plan: &Plan,
    chain: &str,
    p: &Packet,
    mark: &mut u32,
) -> Result<Option<Decision>, String> {
    for obj in &plan.objects {
        let NfListObject::Rule(rule) = obj else {
            continue;
        };
        if rule.chain != chain {
            continue;
        }
        match run_rule(plan, &rule.expr, p, mark)? {
            Step::Next => {}
            Step::Return => return Ok(None),
            Step::Done(d) => return Ok(Some(d)),
        }
    }
    Ok(None)
}

enum Step {
    Next,
    Return,
    Done(Decision),
}

fn run_rule(plan: &Plan, stmts: &[Statement], p: &Packet, mark: &mut u32) -> Result<Step, String> {
    for st in stmts {
        match st {
            Statement::Match(m) => {
                let Some(v) = value(&m.left, p, *mark)? else {
                    return Ok(Step::Next);
                };
                let hit = matches(&m.right, &v)?;
                let ok = match m.op {
                    Operator::NEQ => !hit,
                    _ => hit,
                };
                if !ok {
                    return Ok(Step::Next);
                }
            }
            Statement::VerdictMap(vm) => {
                let Some(verdict) = lookup(plan, &vm.key, &vm.data, p, *mark)? else {
                    return Ok(Step::Next);
                };
                let st = verdict_stmt(verdict)?;
                match run_rule(plan, std::slice::from_ref(&st), p, mark)? {
                    Step::Next => {}
                    other => return Ok(other),
                }
            }
            Statement::Accept(_) => return Ok(Step::Done(Decision::Accept)),
            Statement::Drop(_) => return Ok(Step::Done(Decision::Drop)),
            Statement::Reject(_) => return Ok(Step::Done(Decision::Reject)),
            Statement::Return(_) => return Ok(Step::Return),
            Statement::Jump(t) | Statement::Goto(t) => {
                let goto = matches!(st, Statement::Goto(_));
                if t.target == CHAIN_REJECT {
                    return Ok(Step::Done(Decision::Reject));
                }
                // A limit's chain, read as under the limit (the case the model reads):
                // its under-limit verdict is the first accept or return it ends a rule
                // with; accept ends evaluation, return comes back here.
                if t.target.starts_with(LIMIT_CHAIN_PREFIX) {
                    match under_limit(plan, &t.target) {
                        Some(Decision::Accept) => return Ok(Step::Done(Decision::Accept)),
                        _ if goto => return Ok(Step::Return),
                        _ => continue,
                    }
                }
                match run_chain(plan, &t.target, p, mark)? {
                    Some(d) => return Ok(Step::Done(d)),
                    None if goto => return Ok(Step::Return),
                    None => {}
                }
            }
            // `meta mark set N`, `meta mark set KEY map @NAME` (a miss ends the rule).
            Statement::Mangle(m) => {
                let Expression::Named(NamedExpression::Meta(key)) = &m.key else {
                    return Err(format!("unknown mangle {m:?}"));
                };
                if key.key != MetaKey::Mark {
                    return Err(format!("unknown mangle {m:?}"));
                }
                match &m.value {
                    Expression::Number(n) => *mark = *n,
                    Expression::Named(NamedExpression::Map(map)) => {
                        match lookup(plan, &map.key, &map.data, p, *mark)? {
                            None => return Ok(Step::Next),
                            Some(Expression::Number(v)) => *mark = *v,
                            Some(v) => return Err(format!("unknown mark value {v:?}")),
                        }
                    }
                    v => return Err(format!("unknown mark value {v:?}")),
                }
            }
            // No verdict: counting, logging (and its rate limit).
            Statement::Counter(_) | Statement::Log(_) | Statement::Limit(_) => {}
            other => return Err(format!("unknown statement {other:?}")),
        }
    }
    Ok(Step::Next)
}

/// The value of the one element of a named map (`@name`, elements `[key, value]`) that
/// holds the packet's key; None when none does. Two elements holding it is an error:
/// nft refuses overlapping elements.
fn lookup<'p>(
    plan: &'p Plan,
    key: &Expression,
    data: &Expression,
    p: &Packet,
    mark: u32,
) -> Result<Option<&'p Expression<'static>>, String> {
    let keys = key_values(key, p, mark)?;
    let Expression::String(name) = data else {
        return Err(format!("unknown map lookup {data:?}"));
    };
    let mut found = Vec::new();
    for e in plan.map_elements(name.trim_start_matches('@')) {
        let Expression::List(kv) = e else {
            return Err(format!("unknown map element {e:?}"));
        };
        let [k, value] = kv.as_slice() else {
            return Err(format!("unknown map element {e:?}"));
        };
        if key_matches(k, &keys)? {
            found.push(value);
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [v] => Ok(Some(*v)),
        _ => Err(format!("{} map elements match {keys:?}", found.len())),
    }
}

/// What a limit's chain does under its limit: `Some(Accept)`, or None for return.
fn under_limit(plan: &Plan, chain: &str) -> Option<Decision> {
    plan.objects.iter().find_map(|o| match o {
        NfListObject::Rule(r) if r.chain == chain => match r.expr.last() {
            Some(Statement::Accept(_)) => Some(Some(Decision::Accept)),
            Some(Statement::Return(_)) => Some(None),
            _ => None,
        },
        _ => None,
    })?
}

/// A map's verdict value as the statement it stands for.
fn verdict_stmt(v: &Expression) -> Result<Statement<'static>, String> {
    let Expression::Verdict(v) = v else {
        return Err(format!("unknown map value {v:?}"));
    };
    Ok(match v {
        Verdict::Accept => Statement::Accept(None),
        Verdict::Drop => Statement::Drop(None),
        Verdict::Return => Statement::Return(None),
        Verdict::Goto(t) => Statement::Goto(JumpTarget {
            target: t.target.to_string().into(),
        }),
        Verdict::Jump(t) => Statement::Jump(JumpTarget {
            target: t.target.to_string().into(),
        }),
        Verdict::Continue => return Err("unknown map value continue".into()),
    })
}

/// Whether a map element's key holds the packet's key values (a key with a part the
/// packet lacks never matches: `keys` then holds None there).
fn key_matches(k: &Expression, keys: &[Option<Val>]) -> Result<bool, String> {
    let parts = match k {
        Expression::Named(NamedExpression::Concat(parts)) => parts.as_slice(),
        e => std::slice::from_ref(e),
    };
    if parts.len() != keys.len() {
        return Err(format!("map key {k:?} does not fit its lookup"));
    }
    for (e, v) in parts.iter().zip(keys) {
        let hit = match v {
            Some(v) => matches(e, v)?,
            None => false,
        };
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A lookup key's values: one per part of a concatenation.
fn key_values(key: &Expression, p: &Packet, mark: u32) -> Result<Vec<Option<Val>>, String> {
    match key {
        Expression::Named(NamedExpression::Concat(parts)) => {
            parts.iter().map(|e| value(e, p, mark)).collect()
        }
        e => Ok(vec![value(e, p, mark)?]),
    }
}

/// The packet's value of an expression; None when the packet has no such field (an
/// IPv4 address of an IPv6 packet, a port of an ICMP packet), which matches nothing.
fn value(e: &Expression, p: &Packet, mark: u32) -> Result<Option<Val>, String> {
    let ports = matches!(p.proto, Proto::Tcp | Proto::Udp);
    let unknown = || Err(format!("unknown expression {e:?}"));
    Ok(match e {
        Expression::Named(NamedExpression::Payload(Payload::PayloadField(f))) => {
            match (f.protocol.as_ref(), f.field.as_ref()) {
                ("ip", "saddr" | "daddr") if p.family != Family::V4 => None,
                ("ip6", "saddr" | "daddr") if p.family != Family::V6 => None,
                ("ip" | "ip6", "saddr") => Some(Val::Addr(p.src)),
                ("ip" | "ip6", "daddr") => Some(Val::Addr(p.dst)),
                ("th", "sport") if ports => Some(Val::Num(u32::from(p.sport))),
                ("th", "dport") if ports => Some(Val::Num(u32::from(p.dport))),
                ("th", "sport" | "dport") => None,
                ("tcp", "dport") if p.proto == Proto::Tcp => Some(Val::Num(u32::from(p.dport))),
                ("udp", "dport") if p.proto == Proto::Udp => Some(Val::Num(u32::from(p.dport))),
                ("tcp" | "udp", "dport") => None,
                _ => return unknown(),
            }
        }
        Expression::Named(NamedExpression::Meta(m)) => match m.key {
            MetaKey::Nfproto => Some(Val::Str(
                match p.family {
                    Family::V4 => "ipv4",
                    Family::V6 => "ipv6",
                }
                .into(),
            )),
            MetaKey::L4proto => Some(Val::Str(p.proto.word().into())),
            MetaKey::Iifname if p.direction != Direction::Out => Some(Val::Iface(p.iface.clone())),
            MetaKey::Oifname if p.direction == Direction::Forward => {
                Some(Val::Iface(p.out_iface.clone()))
            }
            MetaKey::Oifname if p.direction == Direction::Out => Some(Val::Iface(p.iface.clone())),
            MetaKey::Iifname | MetaKey::Oifname => None,
            MetaKey::Mark => Some(Val::Num(mark)),
            _ => return unknown(),
        },
        // A masked address: `ip saddr & 255.255.255.0`.
        Expression::BinaryOperation(b) => match b.as_ref() {
            BinaryOperation::AND(left, Expression::String(mask)) => {
                let Some(a) = value(left, p, mark)? else {
                    return Ok(None);
                };
                let mask: IpAddr = mask.parse().map_err(|_| format!("unknown mask in {e:?}"))?;
                match (a, mask) {
                    (Val::Addr(IpAddr::V4(a)), IpAddr::V4(m)) => {
                        Some(Val::Addr(IpAddr::V4((u32::from(a) & u32::from(m)).into())))
                    }
                    (Val::Addr(IpAddr::V6(a)), IpAddr::V6(m)) => Some(Val::Addr(IpAddr::V6(
                        (u128::from(a) & u128::from(m)).into(),
                    ))),
                    _ => return unknown(),
                }
            }
            _ => return unknown(),
        },
        // Only new connections reach the user rules.
        Expression::Named(NamedExpression::CT(c)) if c.key == "state" => {
            Some(Val::Str("new".into()))
        }
        _ => return unknown(),
    })
}

/// Whether the right-hand side of a match holds the value.
fn matches(right: &Expression, v: &Val) -> Result<bool, String> {
    Ok(match (right, v) {
        (Expression::String(s), Val::Addr(a)) => s.parse::<IpAddr>().is_ok_and(|x| x == *a),
        (Expression::String(s), Val::Str(x)) => s == x,
        // An interface name: `eth*` is every name starting with `eth`.
        (Expression::String(s), Val::Iface(x)) => match s.strip_suffix('*') {
            Some(stem) => x.starts_with(stem),
            None => s == x,
        },
        (Expression::String(s), Val::Num(n)) => s.parse::<u32>().is_ok_and(|x| x == *n),
        (Expression::Number(x), Val::Num(n)) => x == n,
        (Expression::Range(r), Val::Num(n)) => match (&r.range[0], &r.range[1]) {
            (Expression::Number(a), Expression::Number(b)) => a <= n && n <= b,
            _ => return Err(format!("unknown range {r:?}")),
        },
        // An address range: `198.18.0.7-198.18.0.9`.
        (Expression::Range(r), Val::Addr(a)) => match (&r.range[0], &r.range[1]) {
            (Expression::String(lo), Expression::String(hi)) => {
                let num = |x: IpAddr| match x {
                    IpAddr::V4(v) => (4, u128::from(u32::from(v))),
                    IpAddr::V6(v) => (6, u128::from(v)),
                };
                let (lo, hi): (IpAddr, IpAddr) = (
                    lo.parse().map_err(|_| format!("unknown range {r:?}"))?,
                    hi.parse().map_err(|_| format!("unknown range {r:?}"))?,
                );
                let ((fl, l), (fh, h), (fa, x)) = (num(lo), num(hi), num(*a));
                fl == fa && fh == fa && l <= x && x <= h
            }
            _ => return Err(format!("unknown range {r:?}")),
        },
        (Expression::List(items), v) => {
            for i in items {
                if matches(i, v)? {
                    return Ok(true);
                }
            }
            false
        }
        (Expression::Named(NamedExpression::Prefix(pf)), Val::Addr(a)) => match pf.addr.as_ref() {
            Expression::String(s) => format!("{s}/{}", pf.len)
                .parse::<IpNet>()
                .map_err(|_| format!("unknown prefix {pf:?}"))?
                .contains(a),
            _ => return Err(format!("unknown prefix {pf:?}")),
        },
        (Expression::Named(NamedExpression::Set(items)), v) => {
            for i in items {
                let SetItem::Element(e) = i else {
                    return Err(format!("unknown set item {i:?}"));
                };
                if matches(e, v)? {
                    return Ok(true);
                }
            }
            false
        }
        (right, v) => return Err(format!("unknown match of {v:?} against {right:?}")),
    })
}
