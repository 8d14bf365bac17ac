//! What the user reads: `status`, `status verbose|numbered`, `show added`.
//! Everything here is derived from the policy model (and, for `show raw`, the kernel).

use std::fmt::Write;

use crate::model::{
    Direction, Endpoint, Family, LimitKey, Over, Policy, Proto, Rule, RuleLog, Then,
};

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
///
/// As UFW: rows are `%-26s %-12s%-26s` (To, Action, From) plus log, direction and
/// comment notes; plain and verbose views group incoming, then outgoing rules, each group
/// followed by a blank line; the numbered view keeps rule order and tags outgoing rules.
pub fn status(policy: &Policy, active: bool, view: StatusView) -> String {
    status_here(policy, active, view, true)
}

/// [`status`], saying whether this host forwards packets at all: as UFW, `status
/// verbose` shows the routed default as `disabled` while the kernel forwards nothing.
pub fn status_here(policy: &Policy, active: bool, view: StatusView, forwarding: bool) -> String {
    status_counted(policy, active, view, forwarding, None, None)
}

/// What the kernel counted for one user rule since the table was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
    /// Counted by a map element the rule's IPv4 and IPv6 copies share: the count is
    /// both families'.
    pub both_families: bool,
}

/// The count as `status verbose` writes it after a rule's row.
pub fn count_text(c: &Count) -> String {
    format!(
        "[{} packets, {} bytes{}]",
        c.packets,
        c.bytes,
        if c.both_families {
            ", IPv4 and IPv6"
        } else {
            ""
        }
    )
}

/// [`status_here`], with each rule's count (by rule index) after its row in the verbose
/// view.
pub fn status_counted(
    policy: &Policy,
    active: bool,
    view: StatusView,
    forwarding: bool,
    counts: Option<&[Option<Count>]>,
    rows: Option<Vec<String>>,
) -> String {
    let mut rows = rows.filter(|r| r.len() == policy.rules.len());
    let mut out = String::new();
    if !active {
        out.push_str("Status: inactive\n");
        return out;
    }
    out.push_str("Status: active\n");
    if view == StatusView::Verbose {
        let mut logging = match policy.logging {
            crate::model::LogLevel::Off => "off".to_string(),
            l => format!("on ({})", l.word()),
        };
        if let Some(n) = policy.log_group {
            let _ = write!(logging, ", to nflog group {n}");
        }
        let _ = writeln!(out, "Logging: {logging}");
        let d = policy.defaults;
        let _ = writeln!(
            out,
            "Default: {} (incoming), {} (outgoing), {} (routed)",
            d.incoming.word(),
            d.outgoing.word(),
            if forwarding {
                d.routed.word()
            } else {
                crate::model::Routed::Disabled.word()
            }
        );
        let _ = writeln!(out, "New profiles: {}", policy.new_profiles.word());
    }
    if policy.rules.is_empty() {
        return out;
    }
    out.push('\n');
    let numbered = view == StatusView::Numbered;
    let pad = if numbered { "     " } else { "" };
    let _ = writeln!(out, "{pad}{:<26} {:<12}From", "To", "Action");
    let _ = writeln!(out, "{pad}{:<26} {:<12}----", "--", "------");
    if numbered {
        for (i, rule) in policy.rules.iter().enumerate() {
            let _ = writeln!(out, "[{:>2}] {}", i + 1, status_line(rule, true, true));
        }
        out.push('\n');
        return out;
    }
    let verbose = view == StatusView::Verbose;
    for dir in [Direction::In, Direction::Out, Direction::Forward] {
        let rows: Vec<String> = policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.direction == dir)
            .map(|(i, r)| {
                let row = match rows.as_mut() {
                    Some(rows) => std::mem::take(&mut rows[i]),
                    None => status_line(r, verbose, false),
                };
                match counts.and_then(|c| c.get(i).copied().flatten()) {
                    Some(c) if verbose => format!("{row} {}", count_text(&c)),
                    _ => row,
                }
            })
            .collect();
        if !rows.is_empty() {
            for row in rows {
                let _ = writeln!(out, "{row}");
            }
            out.push('\n');
        }
    }
    out
}

/// Every rule's row of the status table (not numbered), as [`status_counted`] writes
/// them, to be written ahead (`verbose`: the verbose view's rows).
pub fn status_rows(policy: &Policy, verbose: bool) -> Vec<String> {
    policy
        .rules
        .iter()
        .map(|r| status_line(r, verbose, false))
        .collect()
}

/// One row of the status table (without the number). `show_in` adds `IN` to incoming
/// actions (verbose and numbered views); `numbered` tags outgoing rules `(out)`.
pub fn status_line(rule: &Rule, show_in: bool, numbered: bool) -> String {
    let v6 = rule.family == Family::V6;
    let ports = rule.to.ports.is_some() || rule.from.ports.is_some();
    // As UFW: "(v6)" only when both ends are anywhere.
    let both_any = rule.from.addr.is_none() && rule.to.addr.is_none();
    // As UFW: "(v6)" on an end that is anywhere, but on one with ports only when the
    // other end is anywhere too; on a profile's end whatever the other end.
    let tag = |end: &Endpoint| {
        v6 && end.addr.is_none() && (end.ports.is_none() || both_any || end.app.is_some())
    };
    // The verbose view (not the numbered one) shows a profile's ports, then its name.
    let verbose = show_in && !numbered;
    let at = |end: &Endpoint| location(end, rule.proto, tag(end), ports, both_any, verbose);
    let (mut to, mut from) = (at(&rule.to), at(&rule.from));
    if let Some(iface) = &rule.iface {
        match rule.direction {
            Direction::In => to.push_str(&format!(" on {iface}")),
            Direction::Out => from.push_str(&format!(" on {iface}")),
            // A route rule: the packet comes in on `iface`, from the From side.
            Direction::Forward => from.push_str(&format!(" on {iface}")),
        }
    }
    if let Some(iface) = &rule.out_iface {
        to.push_str(&format!(" on {iface}"));
    }
    let mut action = rule.action.upper().to_string();
    match rule.direction {
        Direction::In if show_in => action.push_str(" IN"),
        Direction::Out => action.push_str(" OUT"),
        Direction::Forward => action.push_str(" FWD"),
        _ => {}
    }
    let mut notes = String::new();
    let extra = limit_words(rule);
    if !extra.is_empty() {
        notes.push_str(&format!(" ({})", extra.join(", ")));
    }
    // As UFW: the log option and `out` share one parenthesis (`(log-all, out)`).
    let mut tags: Vec<&str> = Vec::new();
    match rule.log {
        RuleLog::None => {}
        RuleLog::Log => tags.push("log"),
        RuleLog::LogAll => tags.push("log-all"),
    }
    // A route rule with only an outgoing interface is UFW's direction `out` too.
    let out = match rule.direction {
        Direction::Out => true,
        Direction::Forward => rule.iface.is_none() && rule.out_iface.is_some(),
        _ => false,
    };
    if numbered && out {
        tags.push("out");
    }
    if !tags.is_empty() {
        notes.push_str(&format!(" ({})", tags.join(", ")));
    }
    if let Some(c) = &rule.comment {
        notes.push_str(" # ");
        notes.push_str(c);
    }
    // As `format!("{to:<26} {action:<12}{from:<26}{notes}")`, without the formatting
    // machinery (status lists every rule).
    let pad = |line: &mut String, text: &str, width: usize| {
        line.push_str(text);
        line.extend(std::iter::repeat_n(
            ' ',
            width.saturating_sub(text.chars().count()),
        ));
    };
    let mut line = String::with_capacity(70 + notes.len());
    pad(&mut line, &to, 26);
    line.push(' ');
    pad(&mut line, &action, 12);
    pad(&mut line, &from, 26);
    line.push_str(&notes);
    line
}

/// One end of a rule as UFW shows it: `Anywhere`, `198.18.0.5`, `22/tcp`,
/// `198.18.0.1 22/tcp`, `198.18.0.7/esp` (the protocol goes on a bare address only when
/// the rule has no ports at all); ` (v6)` on IPv6 rules without an address. A profile's
/// end is its name, or (`verbose`) its ports and then its name: `80/tcp (WWW)`,
/// `80/tcp (WWW (v6))`.
fn location(
    end: &Endpoint,
    proto: Proto,
    v6: bool,
    rule_has_ports: bool,
    both_any: bool,
    verbose: bool,
) -> String {
    let proto_suffix = if proto == Proto::Any {
        String::new()
    } else {
        format!("/{}", proto.word())
    };
    if let (true, Some(app), Some(p)) = (verbose, &end.app, &end.ports) {
        let at = end
            .addr
            .map(|a| format!("{} ", addr_text(a)))
            .unwrap_or_default();
        let v6 = if v6 { " (v6)" } else { "" };
        return format!("{at}{p}{proto_suffix} ({app}{v6})");
    }
    let mut s = match (end.addr, &end.ports) {
        // A profile's ports: its name, as UFW shows it.
        (None, Some(_)) if end.app.is_some() => end.app.clone().unwrap_or_default(),
        (Some(a), Some(_)) if end.app.is_some() => {
            format!(
                "{} {}",
                addr_text(a),
                end.app.as_deref().unwrap_or_default()
            )
        }
        // As UFW: `Anywhere/udp` only when both ends are anywhere.
        (None, None) if !rule_has_ports && both_any => format!("Anywhere{proto_suffix}"),
        (None, None) => "Anywhere".to_string(),
        (None, Some(p)) => format!("{p}{proto_suffix}"),
        (Some(a), None) if rule_has_ports => addr_text(a),
        (Some(a), None) => format!("{}{proto_suffix}", addr_text(a)),
        (Some(a), Some(p)) => format!("{} {p}{proto_suffix}", addr_text(a)),
    };
    if v6 && end.addr.is_none() {
        s.push_str(" (v6)");
    }
    s
}

/// An address as typed: a host without `/32` or `/128`.
pub fn addr_text(net: ipnet::IpNet) -> String {
    let mut text = crate::compile::addr_text(net.addr());
    if net.prefix_len() != net.max_prefix_len() {
        text.push('/');
        text.push_str(&net.prefix_len().to_string());
    }
    text
}

/// The command that would re-create a rule (without the program name), in UFW's
/// canonical order: `[in|out] [on IF] [log] (PORTS[/PROTO] | [from A [port P]]
/// [to A [port P]] [proto P]) [comment 'C']`.
pub fn rule_command(rule: &Rule) -> String {
    let mut w: Vec<String> = Vec::new();
    if rule.direction == Direction::Forward {
        w.push("route".into());
    }
    w.push(rule.action.word().into());
    match (rule.direction, &rule.iface) {
        (Direction::Out, _) => w.push("out".into()),
        (Direction::In | Direction::Forward, Some(_)) => w.push("in".into()),
        _ => {}
    }
    if let Some(i) = &rule.iface {
        w.push("on".into());
        w.push(i.to_string());
    }
    if let Some(i) = &rule.out_iface {
        w.push("out".into());
        w.push("on".into());
        w.push(i.to_string());
    }
    match rule.log {
        RuleLog::None => {}
        RuleLog::Log => w.push("log".into()),
        RuleLog::LogAll => w.push("log-all".into()),
    }
    let (from, to) = (&rule.from, &rule.to);
    let bare_from = from.addr.is_none() && from.ports.is_none();
    if bare_from && to.addr.is_none() && rule.iface.is_none() && rule.out_iface.is_none() {
        if let (Some(app), Some(_)) = (&to.app, &to.ports) {
            // A profile as the simple form.
            w.push(app_word(app));
            push_comment(&mut w, rule);
            return w.join(" ");
        }
        if let Some(p) = &to.ports {
            // Simple form.
            if rule.proto == Proto::Any {
                w.push(p.to_string());
            } else {
                w.push(format!("{p}/{}", rule.proto.word()));
            }
            push_comment(&mut w, rule);
            return w.join(" ");
        }
    }
    let bare_to = to.addr.is_none() && to.ports.is_none();
    for (key, end, bare) in [("from", from, bare_from), ("to", to, bare_to)] {
        if bare {
            continue;
        }
        w.push(key.into());
        w.push(end.addr.map(addr_text).unwrap_or_else(|| "any".into()));
        if let Some(app) = &end.app {
            w.push("app".into());
            w.push(app_word(app));
        } else if let Some(p) = &end.ports {
            w.push("port".into());
            w.push(p.to_string());
        }
    }
    // As UFW: `allow out on lo proto igmp`, but `allow to any proto udp` without an
    // interface.
    if bare_from && bare_to && rule.iface.is_none() && rule.out_iface.is_none() {
        w.push("to".into());
        w.push("any".into());
    }
    let app = from.app.is_some() || to.app.is_some();
    if rule.proto != Proto::Any && !app {
        w.push("proto".into());
        w.push(rule.proto.word().into());
    }
    push_comment(&mut w, rule);
    w.join(" ")
}

/// A profile name as one word of a command (quoted when it holds a space).
fn app_word(name: &str) -> String {
    if name.contains(' ') {
        format!("'{name}'")
    } else {
        name.to_string()
    }
}

/// The limit settings and port exceptions of a rule, for `status` notes: empty for a
/// plain UFW `limit`, else e.g. `20/30s per source`, `conn 1 per any`, `over drop`.
fn limit_words(rule: &Rule) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(l) = &rule.limit {
        let per = l.per;
        let mut first = Vec::new();
        if let Some(c) = l.conn {
            first.push(format!("conn {c}"));
        }
        if let Some(r) = l.rate {
            first.push(r.to_string());
        }
        out.push(format!("{} per {per}", first.join(" ")));
        if l.over == Over::Drop {
            out.push("over drop".into());
        }
        if l.then == Then::Continue {
            out.push("then continue".into());
        }
        if let Some(n) = l.capacity {
            out.push(format!("capacity {n}"));
        }
    }
    if let Some(e) = &rule.except {
        out.push(format!("except {e}"));
    }
    out
}

/// The limit options of a rule as typed (`rate 20/30s per /24 over drop`).
fn limit_options(rule: &Rule) -> Vec<String> {
    let mut w = Vec::new();
    if let Some(e) = &rule.except {
        w.push("except".into());
        w.push(e.to_string());
    }
    if let Some(l) = &rule.limit {
        if let Some(c) = l.conn {
            w.push("conn".into());
            w.push(c.to_string());
        }
        if let Some(r) = l.rate {
            w.push("rate".into());
            w.push(r.to_string());
        }
        if l.per != LimitKey::default() {
            w.push("per".into());
            w.push(l.per.to_string());
        }
        if l.over == Over::Drop {
            w.push("over".into());
            w.push("drop".into());
        }
        if l.then == Then::Continue {
            w.push("then".into());
            w.push("continue".into());
        }
        if let Some(n) = l.capacity {
            w.push("capacity".into());
            w.push(n.to_string());
        }
    }
    w
}

fn push_comment(w: &mut Vec<String>, rule: &Rule) {
    w.extend(limit_options(rule));
    if let Some(c) = &rule.comment {
        w.push("comment".into());
        w.push(format!("'{c}'"));
    }
}

/// `show added`: the commands of the user's rules, one per typed rule (an IPv4/IPv6 pair
/// typed as one command is shown once).
pub fn show_added(policy: &Policy) -> String {
    let mut out = String::from("Added user rules (see 'rampart status' for running firewall):\n");
    let mut seen = std::collections::HashSet::new();
    for rule in &policy.rules {
        let cmd = rule_command(rule);
        if seen.insert(cmd.clone()) {
            let _ = writeln!(out, "rampart {cmd}");
        }
    }
    if policy.rules.is_empty() {
        out.push_str("(None)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::{Action, Position};

    fn policy(cmds: &[(Action, &str)]) -> Policy {
        let mut p = Policy::default();
        for (action, text) in cmds {
            let words: Vec<String> = shell_words(text);
            let rules = parse_rule(*action, &words).unwrap().rules;
            p.add_all(rules, Position::Append).unwrap();
        }
        p
    }

    /// Split on spaces, keeping '...' together (enough for these tests).
    fn shell_words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('\'') {
                let end = r.find('\'').unwrap();
                out.push(r[..end].to_string());
                rest = &r[end + 1..];
            } else if !rest.is_empty() {
                let end = rest.find(' ').unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
        out
    }

    const RULES: &[(Action, &str)] = &[
        (Action::Allow, "80,443/tcp comment 'web'"),
        (Action::Allow, "log 8080/tcp"),
        (Action::Allow, "log-all from 198.18.0.0/24 to any port 3000:3010 proto tcp"),
        (Action::Deny, "out 25/tcp"),
        (Action::Reject, "out on eth0 to 198.18.5.5 port 53 proto udp"),
        (Action::Allow, "in on eth1 from 2001:db8::/32 port 1000 to 2001:db8::1 port 2000 proto udp comment 'v6 only'"),
        (Action::Allow, "from 198.18.0.5"),
        (Action::Allow, "to 198.18.0.6"),
        (Action::Deny, "proto esp from 198.18.0.7"),
        (Action::Allow, "proto gre from 198.18.0.8 to 198.18.0.9"),
        (Action::Allow, "in on eth0"),
        (Action::Allow, "from 198.18.0.10 port 53"),
        (Action::Allow, "53"),
        (Action::Allow, "from 198.18.0.11 to 198.18.0.12 port 1,2,3,4:9 proto tcp"),
    ];

    /// Rows copied verbatim from UFW 0.36.2's `status verbose` for the same rules.
    #[test]
    fn status_verbose_matches_ufw() {
        let text = status(&policy(RULES), true, StatusView::Verbose);
        let want = "\
Status: active
Logging: on (low)
Default: deny (incoming), allow (outgoing), disabled (routed)
New profiles: skip

To                         Action      From
--                         ------      ----
80,443/tcp                 ALLOW IN    Anywhere                   # web
8080/tcp                   ALLOW IN    Anywhere                   (log)
3000:3010/tcp              ALLOW IN    198.18.0.0/24              (log-all)
Anywhere                   ALLOW IN    198.18.0.5                
198.18.0.6                 ALLOW IN    Anywhere                  
Anywhere                   DENY IN     198.18.0.7/esp            
198.18.0.9/gre             ALLOW IN    198.18.0.8/gre            
Anywhere on eth0           ALLOW IN    Anywhere                  
Anywhere                   ALLOW IN    198.18.0.10 53            
53                         ALLOW IN    Anywhere                  
198.18.0.12 1,2,3,4:9/tcp  ALLOW IN    198.18.0.11               
80,443/tcp (v6)            ALLOW IN    Anywhere (v6)              # web
8080/tcp (v6)              ALLOW IN    Anywhere (v6)              (log)
2001:db8::1 2000/udp on eth1 ALLOW IN    2001:db8::/32 1000/udp     # v6 only
Anywhere (v6) on eth0      ALLOW IN    Anywhere (v6)             
53 (v6)                    ALLOW IN    Anywhere (v6)             

25/tcp                     DENY OUT    Anywhere                  
198.18.5.5 53/udp          REJECT OUT  Anywhere on eth0          
25/tcp (v6)                DENY OUT    Anywhere (v6)             

";
        assert_eq!(text, want);
    }

    #[test]
    fn status_numbered_tags_out_rules() {
        let text = status(&policy(RULES), true, StatusView::Numbered);
        assert!(
            text.contains(
                "\n[ 4] 25/tcp                     DENY OUT    Anywhere                   (out)\n"
            ),
            "{text}"
        );
        assert!(text.contains("\n     To                         Action      From\n"));
        let plain = status(&policy(RULES), true, StatusView::Plain);
        assert!(
            plain.contains("\n53                         ALLOW       Anywhere                  \n")
        );
    }

    /// Canonical commands as UFW's `show added` prints them.
    #[test]
    fn show_added_is_canonical() {
        let cases = [
            (
                Action::Deny,
                "proto esp from 198.18.0.7",
                "deny from 198.18.0.7 proto esp",
            ),
            (
                Action::Deny,
                "out on eth0 from any to 198.18.0.1",
                "deny out on eth0 to 198.18.0.1",
            ),
            (Action::Allow, "in on eth0", "allow in on eth0"),
            (Action::Allow, "to any port 22 proto tcp", "allow 22/tcp"),
            (Action::Allow, "log 8080/tcp", "allow log 8080/tcp"),
            (
                Action::Allow,
                "80,443/tcp comment 'web'",
                "allow 80,443/tcp comment 'web'",
            ),
            (
                Action::Allow,
                "from 198.18.0.10 port 53",
                "allow from 198.18.0.10 port 53",
            ),
            (
                Action::Allow,
                "log-all from 198.18.0.0/24 to any port 3000:3010 proto tcp",
                "allow log-all from 198.18.0.0/24 to any port 3000:3010 proto tcp",
            ),
        ];
        for (action, typed, shown) in cases {
            let p = policy(&[(action, typed)]);
            assert_eq!(rule_command(&p.rules[0]), shown, "{typed}");
        }
    }

    #[test]
    fn insert_follows_ufw() {
        let mut p = policy(&[(Action::Allow, "22/tcp"), (Action::Allow, "80/tcp")]);
        let r = |t: &str| parse_rule(Action::Allow, &shell_words(t)).unwrap().rules;
        // Position 3 is 22/tcp (v6): v6 goes before it, v4 before its v4 counterpart.
        p.add_all(r("443/tcp"), Position::Insert(3)).unwrap();
        let order: Vec<String> = p
            .rules
            .iter()
            .map(|r| status_line(r, false, false))
            .collect();
        assert!(order[0].starts_with("443/tcp "), "{order:?}");
        assert!(order[3].starts_with("443/tcp (v6)"), "{order:?}");
        assert!(p
            .add_all(r("from 2001:db8::8"), Position::Insert(1))
            .is_err());
        assert!(p
            .add_all(r("from 198.18.0.1"), Position::Insert(4))
            .is_err());
        assert!(p.add_all(r("1/tcp"), Position::Insert(7)).is_err());
    }
}
