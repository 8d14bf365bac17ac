//! Small typed builders of nft statements and expressions; the comment on each shows
//! the nft text it yields.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use nftables::expr::{
    Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix, Range, SetItem, CT,
};
use nftables::stmt::{self, Match, Operator, Statement};

use crate::model::{Ports, Proto, Verdict};

use super::{CHAIN_REJECT, LOG_BURST, LOG_RATE_PER_MINUTE};

pub(super) fn reject_for(proto: Proto) -> Statement<'static> {
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

pub(super) fn verdict_stmt(v: Verdict, proto: Proto) -> Statement<'static> {
    match v {
        Verdict::Allow => accept(),
        Verdict::Deny => drop(),
        Verdict::Reject => reject_for(proto),
    }
}

/// `ct state established,related`
pub(super) fn established() -> Statement<'static> {
    m_in(ct("state"), list(&["established", "related"]))
}

/// `accept`
pub(super) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

/// `drop`
pub(super) fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

/// `jump CHAIN`
pub(super) fn jump(chain: &str) -> Statement<'static> {
    Statement::Jump(stmt::JumpTarget {
        target: chain.to_string().into(),
    })
}

/// `counter`
pub(super) fn counter() -> Statement<'static> {
    Statement::Counter(stmt::Counter::Anonymous(None))
}

/// `limit rate 3/minute burst 10 packets`
pub(super) fn log_limit() -> Statement<'static> {
    log_limit_burst(LOG_BURST)
}

/// `limit rate 3/minute burst N packets`
pub(super) fn log_limit_burst(burst: u32) -> Statement<'static> {
    Statement::Limit(stmt::Limit {
        rate: LOG_RATE_PER_MINUTE,
        rate_unit: None,
        per: Some("minute".into()),
        burst: Some(burst),
        burst_unit: None,
        inv: None,
    })
}

/// `LEFT == RIGHT`
pub(super) fn m_eq(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

/// `LEFT != RIGHT`
pub(super) fn m_ne(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

/// `LEFT RIGHT` for flag tests (`ct state established,related`).
pub(super) fn m_in(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::IN,
    })
}

/// `meta KEY`
pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

/// `ct KEY`
pub(super) fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed(key),
        family: None,
        dir: None,
    }))
}

/// `ct original KEY` (with `ip`/`ip6` for an address): the connection's destination
/// before any NAT, e.g. the port Docker published rather than the container's.
pub(super) fn ct_original(key: &'static str, family: Option<&'static str>) -> Expression<'static> {
    // nft's JSON names the family in the key (`"key": "ip daddr"`); its `family`
    // field is not read back.
    let key = match family {
        Some(f) => Cow::Owned(format!("{f} {key}")),
        None => Cow::Borrowed(key),
    };
    Expression::Named(NamedExpression::CT(CT {
        key,
        family: None,
        dir: Some(nftables::expr::CTDir::Original),
    }))
}

/// `PROTO FIELD`, e.g. `ip saddr`
pub(super) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed(field),
        },
    )))
}

pub(super) fn s(text: &str) -> Expression<'static> {
    Expression::String(text.to_string().into())
}

/// A fixed word (no allocation: a plan holds tens of thousands of them).
pub(super) fn word(text: &'static str) -> Expression<'static> {
    Expression::String(Cow::Borrowed(text))
}

pub(super) fn num(n: u32) -> Expression<'static> {
    Expression::Number(n)
}

pub(super) fn list(words: &[&str]) -> Expression<'static> {
    Expression::List(words.iter().map(|w| s(w)).collect())
}

/// `add @SET { KEY }`
pub(super) fn dynset_add(set: &str, key: Expression<'static>) -> Statement<'static> {
    Statement::Set(stmt::Set {
        op: stmt::SetOp::Add,
        elem: key,
        set: format!("@{set}").into(),
    })
}

/// `{ a, b, c }`
pub(super) fn set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items.into_iter().map(SetItem::Element).collect(),
    ))
}

pub(super) fn set_of(words: &[&str]) -> Expression<'static> {
    set(words.iter().map(|w| s(w)).collect())
}

/// `ADDR/LEN`
pub(super) fn prefix(addr: &str, len: u32) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s(addr)),
        len,
    }))
}

/// A host address, or a network as a prefix.
pub(super) fn net_expr(net: IpNet) -> Expression<'static> {
    if net.prefix_len() == net.max_prefix_len() {
        addr(net.addr())
    } else {
        prefix_of(net.network(), u32::from(net.prefix_len()))
    }
}

/// An address, as text.
pub(super) fn addr(a: IpAddr) -> Expression<'static> {
    Expression::String(addr_text(a).into())
}

/// `ADDR/LEN`
pub(super) fn prefix_of(a: IpAddr, len: u32) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(addr(a)),
        len,
    }))
}

/// An address as `Display` writes it; IPv4 without the formatting machinery, which
/// costs a tenth of a compile at 10k rules (an address or two per rule).
pub fn addr_text(a: IpAddr) -> String {
    let IpAddr::V4(v4) = a else {
        return a.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// `22` or `1000-2000`
pub(super) fn port_range(first: u32, last: u32) -> Expression<'static> {
    if first == last {
        num(first)
    } else {
        Expression::Range(Box::new(Range {
            range: [num(first), num(last)],
        }))
    }
}

/// `22`, `1000-2000` or `{ 22, 80, 1000-2000 }`
pub(super) fn ports_expr(ports: &Ports) -> Expression<'static> {
    let one = |r: &crate::model::PortRange| port_range(u32::from(r.first), u32::from(r.last));
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
    use super::addr_text;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    proptest! {
        #[test]
        fn addr_text_is_display(v4: u32, v6: u128) {
            for a in [IpAddr::V4(Ipv4Addr::from(v4)), IpAddr::V6(Ipv6Addr::from(v6))] {
                prop_assert_eq!(addr_text(a), a.to_string());
            }
        }
    }

    #[test]
    fn addr_text_of_every_octet() {
        for o in 0..=255u8 {
            let a = IpAddr::V4(Ipv4Addr::new(o, 0, 10, o));
            assert_eq!(addr_text(a), a.to_string());
        }
    }
}
