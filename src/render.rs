//! The one place a plan becomes nft text: for `--dry-run` and for reading in tests.
//! The text is valid input for `nft -f`.

use std::fmt::Write;

use nftables::expr::{Expression, MetaKey, NamedExpression, Payload, SetItem};
use nftables::schema::{NfListObject, SetTypeValue};
use nftables::stmt::{Operator, Statement};

use crate::compile::{Plan, FAMILY, TABLE};

/// Render a plan as an `nft -f` script that creates the table.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let family = family_word();
    let _ = writeln!(out, "table {family} {TABLE} {{");
    let mut first = true;
    // Sets and maps first: nft reads the text in order, and rules name them.
    let declared = plan
        .objects
        .iter()
        .filter(|o| matches!(o, NfListObject::Set(_) | NfListObject::Map(_)))
        .chain(
            plan.objects
                .iter()
                .filter(|o| matches!(o, NfListObject::Chain(_))),
        );
    for obj in declared {
        match obj {
            NfListObject::Set(set) => {
                if !first {
                    out.push('\n');
                }
                first = false;
                let _ = writeln!(out, "\tset {} {{", set.name);
                let _ = writeln!(out, "\t\ttype {}", set_type(&set.set_type));
                if let Some(flags) = &set.flags {
                    let mut f: Vec<String> = flags
                        .iter()
                        .map(|f| {
                            serde_json::to_value(f)
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default()
                        })
                        .collect();
                    f.sort();
                    let _ = writeln!(out, "\t\tflags {}", f.join(","));
                }
                if let Some(t) = set.timeout {
                    let _ = writeln!(out, "\t\ttimeout {t}s");
                }
                if let Some(size) = set.size {
                    let _ = writeln!(out, "\t\tsize {size}");
                }
                if let Some(policy) = &set.policy {
                    let _ = writeln!(out, "\t\tpolicy {}", word(policy));
                }
                if let Some(elem) = &set.elem {
                    let items: Vec<String> = elem.iter().map(expr).collect();
                    let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
                }
                out.push_str("\t}\n");
            }
            NfListObject::Map(map) => {
                if !first {
                    out.push('\n');
                }
                first = false;
                let verdicts = plan.verdict_maps.iter().any(|n| *n == map.name);
                let value_type = if verdicts {
                    "verdict".to_string()
                } else {
                    set_type(&map.map)
                };
                let _ = writeln!(out, "\tmap {} {{", map.name);
                let _ = writeln!(out, "\t\ttype {} : {value_type}", set_type(&map.set_type));
                if map.flags.is_some() {
                    out.push_str("\t\tflags interval\n");
                }
                // Verdict maps count per element (the backend declares them so).
                if verdicts {
                    out.push_str("\t\tcounter\n");
                }
                if let Some(elem) = &map.elem {
                    let items: Vec<String> = elem
                        .iter()
                        .map(|e| match e {
                            Expression::List(kv) if kv.len() == 2 => {
                                format!("{} : {}", expr(&kv[0]), expr(&kv[1]))
                            }
                            other => expr(other),
                        })
                        .collect();
                    let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
                }
                out.push_str("\t}\n");
            }
            NfListObject::Chain(chain) => {
                if !first {
                    out.push('\n');
                }
                first = false;
                let _ = writeln!(out, "\tchain {} {{", chain.name);
                if let (Some(hook), Some(prio)) = (chain.hook, chain.prio) {
                    let policy = chain
                        .policy
                        .map(|p| format!(" policy {};", word(&p)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "\t\ttype filter hook {} priority {prio};{policy}",
                        word(&hook)
                    );
                }
                for r in &plan.objects {
                    if let NfListObject::Rule(rule) = r {
                        if rule.chain == chain.name {
                            let _ = writeln!(out, "\t\t{}", statements(plan, &rule.expr));
                        }
                    }
                }
                out.push_str("\t}\n");
            }
            _ => {}
        }
    }
    out.push_str("}\n");
    out
}

fn family_word() -> String {
    word(&FAMILY)
}

/// The serde name of a simple enum value (`"input"`, `"drop"`, `"inet"`).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn set_type(t: &SetTypeValue) -> String {
    match t {
        SetTypeValue::Single(t) => word(t),
        SetTypeValue::Concatenated(ts) => ts.iter().map(word).collect::<Vec<_>>().join(" . "),
    }
}

/// One rule's statements as nft text.
pub fn statements(plan: &Plan, stmts: &[Statement]) -> String {
    stmts
        .iter()
        .map(|st| match st {
            // A dynamic-set add with the plan's stateful statements for that set.
            Statement::Set(set) => {
                let name = set.set.trim_start_matches('@');
                let extra: Vec<String> = plan
                    .dynset_stmts
                    .iter()
                    .filter(|(s, _)| s == name)
                    .map(|(_, st)| statement(st))
                    .collect();
                let extra = extra.iter().map(|e| format!(" {e}")).collect::<String>();
                format!("{} @{name} {{ {}{extra} }}", word(&set.op), expr(&set.elem))
            }
            other => statement(other),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn statement(st: &Statement) -> String {
    match st {
        Statement::Accept(_) => "accept".into(),
        Statement::Drop(_) => "drop".into(),
        Statement::Continue(_) => "continue".into(),
        Statement::Return(_) => "return".into(),
        Statement::Jump(t) => format!("jump {}", t.target),
        Statement::Goto(t) => format!("goto {}", t.target),
        Statement::Counter(_) => "counter".into(),
        Statement::Match(m) => {
            let quote = matches!(
                &m.left,
                Expression::Named(NamedExpression::Meta(meta))
                    if matches!(meta.key, MetaKey::Iifname | MetaKey::Oifname | MetaKey::Iif | MetaKey::Oif)
            );
            let right = if quote {
                match &m.right {
                    Expression::String(s) => quoted(s),
                    other => expr(other),
                }
            } else {
                expr(&m.right)
            };
            match m.op {
                Operator::EQ | Operator::IN => format!("{} {right}", expr(&m.left)),
                Operator::NEQ => format!("{} != {right}", expr(&m.left)),
                Operator::LT => format!("{} < {right}", expr(&m.left)),
                Operator::GT => format!("{} > {right}", expr(&m.left)),
                Operator::LEQ => format!("{} <= {right}", expr(&m.left)),
                Operator::GEQ => format!("{} >= {right}", expr(&m.left)),
                _ => format!("{} {} {right}", expr(&m.left), word(&m.op)),
            }
        }
        Statement::Limit(l) => {
            let over = if l.inv == Some(true) { "over " } else { "" };
            let per = l.per.as_deref().unwrap_or("second");
            let burst = l
                .burst
                .map(|b| format!(" burst {b} packets"))
                .unwrap_or_default();
            format!("limit rate {over}{}/{per}{burst}", l.rate)
        }
        Statement::Log(Some(log)) => {
            let mut text = String::from("log");
            if let Some(p) = &log.prefix {
                text.push_str(&format!(" prefix {}", quoted(p)));
            }
            if let Some(g) = log.group {
                text.push_str(&format!(" group {g}"));
            }
            text
        }
        Statement::Log(None) => "log".into(),
        Statement::Reject(Some(r)) => match (&r._type, &r.expr) {
            (Some(nftables::stmt::RejectType::TCPReset), _) => "reject with tcp reset".into(),
            (Some(t), Some(code)) => format!("reject with {} {}", word(t), word(code)),
            (Some(t), None) => format!("reject with {}", word(t)),
            _ => "reject".into(),
        },
        Statement::Reject(None) => "reject".into(),
        Statement::CTCount(c) => {
            let over = if c.inv == Some(true) { "over " } else { "" };
            format!("ct count {over}{}", expr(&c.val))
        }
        Statement::Set(s) => format!("{} @{} {{ {} }}", word(&s.op), s.set, expr(&s.elem)),
        Statement::VerdictMap(v) => format!("{} vmap {}", expr(&v.key), expr(&v.data)),
        Statement::Mangle(m) => format!("{} set {}", expr(&m.key), expr(&m.value)),
        other => unrenderable(other),
    }
}

/// A string in double quotes, with the characters that would end it escaped.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What the text of a statement or expression this renderer does not know starts
/// with: its nft JSON, in a comment. Custom rules (`before.nft`) may hold such; what
/// `compile` emits never does (a property test checks).
pub const UNRENDERED: &str = "/* nft JSON: ";

/// The JSON form of what the renderer does not know.
fn unrenderable(what: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(what).unwrap_or_default();
    format!("{UNRENDERED}{} */", json.replace("*/", "* /"))
}

fn expr(e: &Expression) -> String {
    match e {
        Expression::String(s) => {
            if let Some(name) = s.strip_prefix('@') {
                format!("@{name}")
            } else {
                s.to_string()
            }
        }
        Expression::Number(n) => n.to_string(),
        Expression::Boolean(b) => b.to_string(),
        Expression::List(items) => items.iter().map(expr).collect::<Vec<_>>().join(","),
        Expression::Range(r) => format!("{}-{}", expr(&r.range[0]), expr(&r.range[1])),
        Expression::Verdict(v) => match v {
            nftables::expr::Verdict::Goto(t) => format!("goto {}", t.target),
            nftables::expr::Verdict::Jump(t) => format!("jump {}", t.target),
            other => word(other),
        },
        Expression::BinaryOperation(b) => match b.as_ref() {
            nftables::expr::BinaryOperation::AND(l, r) => format!("{} & {}", expr(l), expr(r)),
            nftables::expr::BinaryOperation::OR(parts) => {
                parts.iter().map(expr).collect::<Vec<_>>().join(" | ")
            }
            other => unrenderable(other),
        },
        Expression::Named(n) => match n {
            NamedExpression::Concat(items) => {
                items.iter().map(expr).collect::<Vec<_>>().join(" . ")
            }
            NamedExpression::Map(m) => format!("{} map {}", expr(&m.key), expr(&m.data)),
            NamedExpression::Set(items) => {
                let inner: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        SetItem::Element(e) => expr(e),
                        SetItem::Mapping(k, v) => format!("{} : {}", expr(k), expr(v)),
                        SetItem::MappingStatement(k, s) => {
                            format!("{} : {}", expr(k), statement(s))
                        }
                    })
                    .collect();
                format!("{{ {} }}", inner.join(", "))
            }
            NamedExpression::Prefix(p) => format!("{}/{}", expr(&p.addr), p.len),
            NamedExpression::Payload(Payload::PayloadField(f)) => {
                format!("{} {}", f.protocol, f.field)
            }
            NamedExpression::Meta(m) => format!("meta {}", word(&m.key)),
            NamedExpression::CT(c) => {
                let dir = match c.dir {
                    Some(nftables::expr::CTDir::Original) => "original ",
                    Some(nftables::expr::CTDir::Reply) => "reply ",
                    None => "",
                };
                let fam = match c.family {
                    Some(nftables::expr::CTFamily::IP) => "ip ",
                    Some(nftables::expr::CTFamily::IP6) => "ip6 ",
                    None => "",
                };
                format!("ct {dir}{fam}{}", c.key)
            }
            NamedExpression::Elem(el) => {
                let mut s = expr(&el.val);
                if let Some(t) = el.timeout {
                    let _ = write!(s, " timeout {t}s");
                }
                if let Some(c) = &el.comment {
                    let _ = write!(s, " comment {}", quoted(c));
                }
                s
            }
            other => unrenderable(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::model::Policy;

    #[test]
    fn renders_default_policy() {
        let text = plan_text(&compile(&Policy::default()));
        assert!(text.starts_with("table inet rampart {\n"));
        assert!(text.contains("type filter hook input priority 0; policy drop;"));
        assert!(text.contains("iif \"lo\" accept"));
        assert!(text.contains("ct state established,related accept"));
        assert!(text.contains("jump user_input"));
    }
}
