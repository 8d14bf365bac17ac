//! What the user reads: `status`, `status verbose|numbered`, `show added`.
//! Everything here is derived from the policy model (and, for `show raw`, the kernel).

use std::fmt::Write;

use crate::model::{Direction, Endpoint, Family, Policy, Proto, Rule, RuleLog};

/// Which `status` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusView {
    /// Plain.
    Plain,
    /// With logging and default policies, and `IN`/`OUT` on every action.
    Verbose,
    /// With `[ N]` numbers.
    Numbered,
}

/// `status` output. `active` is whether rampart's table is loaded.
pub fn status(policy: &Policy, active: bool, view: StatusView) -> String {
    let mut out = String::new();
    if !active {
        out.push_str("Status: inactive\n");
        return out;
    }
    out.push_str("Status: active\n");
    if view == StatusView::Verbose {
        let logging = match policy.logging {
            crate::model::LogLevel::Off => "off".to_string(),
            l => format!("on ({})", l.word()),
        };
        let _ = writeln!(out, "Logging: {logging}");
        let d = policy.defaults;
        let _ = writeln!(
            out,
            "Default: {} (incoming), {} (outgoing), {} (routed)",
            d.incoming.word(),
            d.outgoing.word(),
            routed_word(policy)
        );
        out.push_str("New profiles: skip\n");
    }
    if policy.rules.is_empty() {
        return out;
    }
    out.push('\n');
    let numbered = view == StatusView::Numbered;
    let pad = if numbered { "     " } else { "" };
    let _ = writeln!(out, "{pad}{:<26} {:<12}From", "To", "Action");
    let _ = writeln!(out, "{pad}{:<26} {:<12}----", "--", "------");
    for (i, rule) in policy.rules.iter().enumerate() {
        if numbered {
            let _ = write!(out, "[{:>2}] ", i + 1);
        }
        out.push_str(&status_line(rule, view != StatusView::Plain));
        out.push('\n');
    }
    if view == StatusView::Verbose {
        out.push('\n');
    }
    out
}

fn routed_word(policy: &Policy) -> &'static str {
    // rampart does not turn forwarding on; "routed" deny is UFW's "disabled".
    match policy.defaults.routed {
        crate::model::Verdict::Deny => "disabled",
        v => v.word(),
    }
}

/// One row of the status table (without the number).
pub fn status_line(rule: &Rule, show_in: bool) -> String {
    let v6 = rule.family == Family::V6;
    let mut to = location(&rule.to, rule.proto, v6, rule.simple);
    let mut from = location(&rule.from, rule.proto, v6, true);
    if rule.simple {
        from = anywhere(v6);
    }
    if let Some(iface) = &rule.iface {
        match rule.direction {
            Direction::In => to.push_str(&format!(" on {iface}")),
            Direction::Out => from.push_str(&format!(" on {iface}")),
        }
    }
    let mut action = rule.action.upper().to_string();
    match rule.direction {
        Direction::In if show_in => action.push_str(" IN"),
        Direction::Out => action.push_str(" OUT"),
        _ => {}
    }
    match rule.log {
        RuleLog::None => {}
        RuleLog::Log => action.push_str(" (log)"),
        RuleLog::LogAll => action.push_str(" (log-all)"),
    }
    // For outgoing rules UFW swaps nothing: "To" is still the destination.
    let comment = rule
        .comment
        .as_ref()
        .map(|c| format!(" # {c}"))
        .unwrap_or_default();
    let line = format!("{to:<26} {action:<12}{from}{comment}");
    line.trim_end().to_string()
}

fn anywhere(v6: bool) -> String {
    if v6 {
        "Anywhere (v6)".into()
    } else {
        "Anywhere".into()
    }
}

/// One end of a rule as UFW shows it: `Anywhere`, `198.18.0.5`, `22/tcp`,
/// `198.18.0.1 22/tcp`, with ` (v6)` on IPv6 rules.
fn location(end: &Endpoint, proto: Proto, v6: bool, _from: bool) -> String {
    let mut s = match end.addr {
        None => String::new(),
        Some(net) if net.prefix_len() == net.max_prefix_len() => net.addr().to_string(),
        Some(net) => net.to_string(),
    };
    match &end.ports {
        Some(ports) => {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&ports.to_string());
            if proto != Proto::Any {
                s.push('/');
                s.push_str(proto.word());
            }
        }
        None => {
            if s.is_empty() {
                s.push_str("Anywhere");
            }
            if proto != Proto::Any && end.addr.is_none() {
                s.push('/');
                s.push_str(proto.word());
            }
        }
    }
    if v6 {
        s.push_str(" (v6)");
    }
    s
}

/// The command that would re-create a rule, as `show added` prints it.
pub fn rule_command(rule: &Rule) -> String {
    let mut w: Vec<String> = vec![rule.action.word().into()];
    let dir = match rule.direction {
        Direction::In => "in",
        Direction::Out => "out",
    };
    if rule.direction == Direction::Out || rule.iface.is_some() {
        w.push(dir.into());
    }
    if let Some(i) = &rule.iface {
        w.push("on".into());
        w.push(i.clone());
    }
    match rule.log {
        RuleLog::None => {}
        RuleLog::Log => w.push("log".into()),
        RuleLog::LogAll => w.push("log-all".into()),
    }
    if rule.simple {
        let ports = rule
            .to
            .ports
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default();
        if rule.proto == Proto::Any {
            w.push(ports);
        } else {
            w.push(format!("{ports}/{}", rule.proto.word()));
        }
    } else {
        if rule.proto != Proto::Any {
            w.push("proto".into());
            w.push(rule.proto.word().into());
        }
        for (key, end) in [("from", &rule.from), ("to", &rule.to)] {
            let addr = end.addr.map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            });
            if addr.is_none() && end.ports.is_none() && key == "from" {
                continue;
            }
            w.push(key.into());
            w.push(addr.unwrap_or_else(|| "any".into()));
            if let Some(p) = &end.ports {
                w.push("port".into());
                w.push(p.to_string());
            }
        }
    }
    if let Some(c) = &rule.comment {
        w.push("comment".into());
        w.push(format!("'{c}'"));
    }
    w.join(" ")
}

/// `show added`: the commands of the user's rules, one per typed rule (an IPv4/IPv6 pair
/// typed as one command is shown once).
pub fn show_added(policy: &Policy) -> String {
    let mut out = String::from("Added user rules (see 'rampart status' for running firewall):\n");
    let mut seen: Vec<String> = Vec::new();
    for rule in &policy.rules {
        let cmd = rule_command(rule);
        if !seen.contains(&cmd) {
            let _ = writeln!(out, "rampart {cmd}");
            seen.push(cmd);
        }
    }
    if policy.rules.is_empty() {
        out.push_str("(None)\n");
    }
    out
}
