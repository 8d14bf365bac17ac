//! `import ufw`: an existing UFW set-up as a rampart policy.
//!
//! UFW keeps each user rule as a `### tuple ###` line in `user.rules` (IPv4) and
//! `user6.rules` (IPv6): `ACTION[_log|_log-all] PROTO DPORT DST SPORT SRC [DAPP SAPP]
//! DIRECTION[_IFACE | in_IF!out_IF] [comment=HEX]`, with `route:ACTION` for route rules.
//! Each becomes the rule words rampart's grammar reads, so an imported rule is checked
//! exactly as a typed one. The default policies come from `/etc/default/ufw`, the
//! logging level and the enabled state from `ufw.conf`. What cannot be translated
//! (lines added to before.rules and the like) is reported with its file and line.

use std::path::{Path, PathBuf};

use crate::grammar::{parse_route_rule, parse_rule};
use crate::model::{Action, Family, LogLevel, Policy, Routed, Rule, Verdict};

/// Where UFW keeps its files.
pub const UFW_DIR: &str = "/etc/ufw";

/// UFW's default policies.
pub const UFW_DEFAULTS: &str = "/etc/default/ufw";

/// The pristine copies of the files that UFW's package ships (before/after rules, and
/// the user rules as they are until UFW's first rule change).
pub const UFW_PRISTINE_DIR: &str = "/usr/share/ufw/iptables";

/// The before/after files a user may have customised.
const CUSTOM_FILES: [&str; 4] = [
    "before.rules",
    "after.rules",
    "before6.rules",
    "after6.rules",
];

/// A UFW set-up read as a policy.
#[derive(Debug)]
pub struct Imported {
    pub policy: Policy,
    /// What could not be translated, each with its file and line.
    pub notes: Vec<String>,
    /// Rules read per family: (IPv4, IPv6).
    pub counts: (usize, usize),
}

/// `KEY=VALUE` (quotes removed) from a shell-style settings file.
fn setting(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

fn verdict(word: &str) -> Option<Verdict> {
    match word.to_ascii_uppercase().as_str() {
        "ACCEPT" => Some(Verdict::Allow),
        "DROP" => Some(Verdict::Deny),
        "REJECT" => Some(Verdict::Reject),
        _ => None,
    }
}

/// A comment as UFW stores it: the UTF-8 bytes in hexadecimal.
fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// An address field: UFW writes "anywhere" as the family's whole range.
fn addr_word(a: &str) -> &str {
    match a {
        "0.0.0.0/0" | "::/0" | "any" => "any",
        other => other,
    }
}

/// The rule words (and action, and whether it is a route rule) of one tuple, and the
/// app names it carries (destination, source).
type Parsed = (Action, bool, Vec<String>, Option<String>, Option<String>);

fn tuple_words(tuple: &str) -> Result<Parsed, String> {
    let (body, comment) = match tuple.split_once(" comment=") {
        Some((b, c)) => (
            b,
            Some(unhex(c.trim()).ok_or_else(|| format!("bad comment '{}'", c.trim()))?),
        ),
        None => (tuple, None),
    };
    let f: Vec<&str> = body.split_whitespace().collect();
    // 6 or 8 fields: the format before directions (UFW reads them as `in`); 8 or 9:
    // with the app names.
    if !(6..=9).contains(&f.len()) {
        return Err(format!("{} fields, not 6 to 9", f.len()));
    }
    let (mut action, route) = match f[0].split_once(':') {
        Some(("route", a)) => (a, true),
        Some(_) => return Err(format!("unknown action '{}'", f[0])),
        None => (f[0], false),
    };
    let mut log = None;
    for (suffix, word) in [("_log-all", "log-all"), ("_log", "log")] {
        if let Some(a) = action.strip_suffix(suffix) {
            action = a;
            log = Some(word);
            break;
        }
    }
    let action = match action {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "reject" => Action::Reject,
        "limit" => Action::Limit,
        other => return Err(format!("unknown action '{other}'")),
    };
    let (proto, dport, dst, sport, src) = (f[1], f[2], f[3], f[4], f[5]);
    let app = |s: &str| (s != "-").then(|| s.replace("%20", " "));
    let (dapp, sapp) = if f.len() >= 8 {
        (app(f[6]), app(f[7]))
    } else {
        (None, None)
    };
    let dir = if f.len() % 2 == 1 {
        f[f.len() - 1]
    } else {
        "in"
    };
    let mut w: Vec<String> = Vec::new();
    let (iface_in, iface_out) = match dir.split_once('!') {
        Some((i, o)) => (
            i.strip_prefix("in_").map(String::from),
            o.strip_prefix("out_").map(String::from),
        ),
        None => match dir.split_once('_') {
            Some(("in", i)) => (Some(i.to_string()), None),
            Some(("out", o)) => (None, Some(o.to_string())),
            None if dir == "in" || dir == "out" => (None, None),
            _ => return Err(format!("bad direction '{dir}'")),
        },
    };
    if route {
        if let Some(i) = iface_in {
            w.extend(["in".into(), "on".into(), i]);
        }
        if let Some(o) = iface_out {
            w.extend(["out".into(), "on".into(), o]);
        }
    } else if dir.starts_with("out") {
        w.push("out".into());
        if let Some(o) = iface_out {
            w.extend(["on".into(), o]);
        }
    } else if let Some(i) = iface_in {
        w.extend(["in".into(), "on".into(), i]);
    }
    if let Some(l) = log {
        w.push(l.into());
    }
    if proto != "any" {
        w.extend(["proto".into(), proto.into()]);
    }
    w.extend(["from".into(), addr_word(src).into()]);
    if sport != "any" {
        w.extend(["port".into(), sport.into()]);
    }
    w.extend(["to".into(), addr_word(dst).into()]);
    if dport != "any" {
        w.extend(["port".into(), dport.into()]);
    }
    if let Some(c) = comment {
        w.extend(["comment".into(), c]);
    }
    Ok((action, route, w, dapp, sapp))
}

/// The rule of `family` one tuple stands for.
fn tuple_rule(tuple: &str, family: Family) -> Result<Rule, String> {
    let (action, route, words, dapp, sapp) = tuple_words(tuple)?;
    let parsed = if route {
        parse_route_rule(action, &words)
    } else {
        parse_rule(action, &words)
    }
    .map_err(|e| {
        format!(
            "{e} (as 'rampart {}{} {}')",
            if route { "route " } else { "" },
            action.word(),
            words.join(" ")
        )
    })?;
    let mut rule = parsed
        .rules
        .into_iter()
        .find(|r| r.family == family)
        .ok_or("its addresses are not of the file's IP version")?;
    // The ports are the profile's as UFW had them; the name says where they came from.
    rule.to.app = dapp;
    rule.from.app = sapp;
    Ok(rule)
}

/// The `-A` lines of a `user.rules` file that UFW did not write for one of its rules
/// (numbered from 0): UFW writes each rule as a `### tuple ###` line followed by its
/// `-A` lines, a blank line between rules, in the `### RULES ###` section, and its
/// logging and rate-limiting lines in their own sections. An `-A` line elsewhere in
/// the rules section, or outside every section, was added by hand. (A line added right
/// below a rule's own lines cannot be told from them.)
fn hand_added(text: &str) -> Vec<(usize, &str)> {
    #[derive(PartialEq)]
    enum Section {
        None,
        Rules,
        Generated,
    }
    let (mut section, mut in_rule, mut out) = (Section::None, false, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        match l {
            "### RULES ###" => section = Section::Rules,
            "### LOGGING ###" | "### RATE LIMITING ###" => section = Section::Generated,
            "### END RULES ###" | "### END LOGGING ###" | "### END RATE LIMITING ###" => {
                section = Section::None
            }
            _ if l.starts_with("### tuple ###") => in_rule = true,
            "" => in_rule = false,
            _ if l.starts_with("-A ")
                && (section == Section::None || (section == Section::Rules && !in_rule)) =>
            {
                out.push((i, l))
            }
            _ => {}
        }
    }
    out
}

/// Read a UFW set-up: `dir` (UFW's config directory) and `defaults` (its
/// `/etc/default/ufw`). Missing rule files are no rules; a missing defaults file is
/// UFW's defaults.
pub fn from_ufw(dir: &Path, defaults: &Path, pristine: &Path) -> Result<Imported, String> {
    let read = |p: &Path| -> Result<Option<String>, String> {
        match std::fs::read(p) {
            Ok(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| format!("{} is not UTF-8 text", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", p.display())),
        }
    };
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a directory (UFW's is {UFW_DIR})",
            dir.display()
        ));
    }
    let mut policy = Policy::default();
    let mut notes = Vec::new();
    let mut counts = (0, 0);
    for (file, family) in [("user.rules", Family::V4), ("user6.rules", Family::V6)] {
        let path = dir.join(file);
        let Some(text) = read(&path)? else { continue };
        // The copy UFW's package ships (the file until UFW's first rule change) has
        // lines of its own outside the sections UFW writes later: they are UFW's.
        let shipped = read(&pristine.join(file))?.unwrap_or_default();
        let shipped: std::collections::HashSet<&str> = shipped.lines().map(str::trim).collect();
        for (i, line) in hand_added(&text) {
            if shipped.contains(line.trim()) {
                continue;
            }
            notes.push(format!(
                "{} line {}: not translated: {line} (not a rule UFW's commands wrote: they are its '### tuple ###' lines; rampart's before.nft / after.nft take such rules)",
                path.display(),
                i + 1
            ));
        }
        for (i, line) in text.lines().enumerate() {
            let Some(tuple) = line.strip_prefix("### tuple ###") else {
                continue;
            };
            let rule = tuple_rule(tuple.trim(), family)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            policy.rules.push(rule);
            match family {
                Family::V4 => counts.0 += 1,
                Family::V6 => counts.1 += 1,
            }
        }
    }
    if let Some(text) = read(defaults)? {
        let policy_of = |key: &str| -> Result<Option<Verdict>, String> {
            match setting(&text, key) {
                None => Ok(None),
                Some(v) => verdict(&v).map(Some).ok_or_else(|| {
                    format!(
                        "{}: {key}={v} is not ACCEPT, DROP or REJECT",
                        defaults.display()
                    )
                }),
            }
        };
        if let Some(v) = policy_of("DEFAULT_INPUT_POLICY")? {
            policy.defaults.incoming = v;
        }
        if let Some(v) = policy_of("DEFAULT_OUTPUT_POLICY")? {
            policy.defaults.outgoing = v;
        }
        let routes = policy
            .rules
            .iter()
            .any(|r| r.direction == crate::model::Direction::Forward);
        policy.defaults.routed = match policy_of("DEFAULT_FORWARD_POLICY")? {
            Some(Verdict::Allow) => Routed::Allow,
            Some(Verdict::Reject) => Routed::Reject,
            // UFW drops what it forwards and no route rule allows. Without route rules,
            // rampart's "disabled" leaves forwarded traffic (Docker's, VMs') alone.
            Some(Verdict::Deny) if routes => Routed::Deny,
            Some(Verdict::Deny) => {
                notes.push(format!(
                    "{}: DEFAULT_FORWARD_POLICY=DROP became routed 'disabled' (rampart filters no forwarded traffic); 'rampart default deny routed' drops it as UFW did",
                    defaults.display()
                ));
                Routed::Disabled
            }
            None => Routed::Disabled,
        };
        // What `app update --add-new` adds (`ufw app default`).
        if let Some(v) = setting(&text, "DEFAULT_APPLICATION_POLICY") {
            policy.new_profiles = match v.as_str() {
                "SKIP" => crate::model::NewProfiles::Skip,
                "ACCEPT" => crate::model::NewProfiles::Allow,
                "DROP" => crate::model::NewProfiles::Deny,
                "REJECT" => crate::model::NewProfiles::Reject,
                other => {
                    return Err(format!(
                    "{}: DEFAULT_APPLICATION_POLICY={other} is not SKIP, ACCEPT, DROP or REJECT",
                    defaults.display()
                ))
                }
            };
        }
        // The kernel settings UFW applies at every start (`sysctl -p IPT_SYSCTL`): after
        // UFW is gone, the next boot no longer sets them.
        if let Some(file) = setting(&text, "IPT_SYSCTL").filter(|f| !f.is_empty()) {
            // A path under UFW's directory is read from the one imported.
            let path = match Path::new(&file).strip_prefix(UFW_DIR) {
                Ok(rest) => dir.join(rest),
                Err(_) => PathBuf::from(&file),
            };
            for (i, l) in read(&path)?.unwrap_or_default().lines().enumerate() {
                let l = l.trim();
                if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                    continue;
                }
                notes.push(format!(
                    "{} line {}: not translated: {l} (a kernel setting UFW applies when it starts; rampart sets none: put it in /etc/sysctl.d/ to keep it)",
                    path.display(),
                    i + 1
                ));
            }
        }
        if let Some(modules) = setting(&text, "IPT_MODULES").filter(|m| !m.trim().is_empty()) {
            notes.push(format!(
                "{}: IPT_MODULES=\"{modules}\": UFW loads these kernel modules when it starts; rampart loads none (list them in /etc/modules-load.d/ to keep them)",
                defaults.display()
            ));
        }
        if setting(&text, "IPV6").is_some_and(|v| v.eq_ignore_ascii_case("no")) {
            notes.push(format!(
                "{}: IPV6=no: UFW dropped all IPv6 but loopback; rampart filters IPv6 as IPv4, with the rules of user6.rules and the same default policies",
                defaults.display()
            ));
        }
    }
    if let Some(text) = read(&dir.join("ufw.conf"))? {
        policy.enabled = setting(&text, "ENABLED").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        if let Some(level) = setting(&text, "LOGLEVEL") {
            policy.logging = match level.as_str() {
                "off" => LogLevel::Off,
                "low" => LogLevel::Low,
                "medium" => LogLevel::Medium,
                "high" => LogLevel::High,
                "full" => LogLevel::Full,
                other => {
                    return Err(format!(
                        "{}: LOGLEVEL={other} is not off, low, medium, high or full",
                        dir.join("ufw.conf").display()
                    ))
                }
            };
        }
    }
    // The scripts UFW runs when it starts and stops, where made executable and changed
    // from the copies its package ships (which do nothing).
    for name in ["before.init", "after.init"] {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let runs = std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
        if !runs {
            continue;
        }
        let shipped = match pristine.parent() {
            Some(share) => read(&share.join(name))?,
            None => None,
        };
        let same = shipped.is_some() && read(&path).ok().flatten() == shipped;
        if !same {
            notes.push(format!(
                "{}: not translated: a script UFW runs when it starts and stops; rampart runs none (run it from a systemd unit ordered with rampart.service)",
                path.display()
            ));
        }
    }
    for name in CUSTOM_FILES {
        let path = dir.join(name);
        let Some(text) = read(&path)? else { continue };
        let Some(orig) = read(&pristine.join(name))? else {
            notes.push(format!(
                "{}: not compared (no {} to compare with): rampart does not translate it",
                path.display(),
                pristine.join(name).display()
            ));
            continue;
        };
        let known: std::collections::HashSet<&str> = orig.lines().map(str::trim).collect();
        let have: std::collections::HashSet<&str> = text.lines().map(str::trim).collect();
        // Lines of UFW's copy taken out (deleted or commented out): rampart's built-in
        // rules still do what they did.
        for line in orig.lines().map(str::trim) {
            if line.starts_with("-A ") && !have.contains(line) {
                notes.push(format!(
                    "{}: UFW's line '{line}' was taken out; rampart's built-in rules still do what it did (a rule of your own, or before.nft, can undo it)",
                    path.display()
                ));
            }
        }
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') || known.contains(l) {
                continue;
            }
            notes.push(format!(
                "{} line {}: not translated: {l} (rampart's before.nft / after.nft take such rules)",
                path.display(),
                i + 1
            ));
        }
    }
    policy
        .validate()
        .map_err(|e| format!("the imported policy is not valid: {}", e.problem))?;
    Ok(Imported {
        policy,
        notes,
        counts,
    })
}

/// The default source directory and defaults file, for `import ufw` without them.
pub fn default_paths() -> (PathBuf, PathBuf) {
    (PathBuf::from(UFW_DIR), PathBuf::from(UFW_DEFAULTS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::rule_command;

    fn cmd(tuple: &str, family: Family) -> String {
        rule_command(&tuple_rule(tuple, family).unwrap())
    }

    #[test]
    fn tuples_become_the_rules_ufw_shows() {
        let v4 = Family::V4;
        assert_eq!(
            cmd("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", v4),
            "allow 22/tcp"
        );
        assert_eq!(
            cmd(
                "deny any any 0.0.0.0/0 any 198.18.0.9 in comment=626164",
                v4
            ),
            "deny from 198.18.0.9 comment 'bad'"
        );
        assert_eq!(
            cmd("limit_log tcp 2222 0.0.0.0/0 any 0.0.0.0/0 in_eth0", v4),
            "limit in on eth0 log to any port 2222 proto tcp"
        );
        assert_eq!(
            cmd("reject udp 53 198.18.5.5 any 0.0.0.0/0 out_eth1", v4),
            "reject out on eth1 to 198.18.5.5 port 53 proto udp"
        );
        assert_eq!(
            cmd(
                "route:allow tcp 80 198.18.2.0/24 any 0.0.0.0/0 in_eth0!out_eth1",
                v4
            ),
            "route allow in on eth0 out on eth1 to 198.18.2.0/24 port 80 proto tcp"
        );
        assert_eq!(
            cmd(
                "allow tcp 80,443 ::/0 any 2001:db8::/32 WWW%20Full - in",
                Family::V6
            ),
            "allow from 2001:db8::/32 to any app 'WWW Full'"
        );
        // The format before directions: 6 fields, or 8 with the app names; UFW reads
        // them as incoming rules.
        assert_eq!(
            cmd("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0", v4),
            "allow 22/tcp"
        );
        assert_eq!(
            cmd(
                "allow tcp 80,443 0.0.0.0/0 any 198.18.0.0/15 WWW%20Full -",
                v4
            ),
            "allow from 198.18.0.0/15 to any app 'WWW Full'"
        );
        // Interface names take UFW's characters.
        assert_eq!(
            cmd("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in_v,=%@1", v4),
            "allow in on v,=%@1 to any port 22 proto tcp"
        );
        assert!(tuple_rule("allow tcp 22 0.0.0.0/0 any", v4).is_err());
        assert!(tuple_rule("allow tcp 22 0.0.0.0/0 any in", v4).is_err());
        assert!(tuple_rule("allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 - - in x", v4).is_err());
        assert!(tuple_rule("frob tcp 22 0.0.0.0/0 any 0.0.0.0/0 in", v4).is_err());
    }
}

#[cfg(test)]
mod customised {
    use super::*;

    /// A directory of this test process's own (`tag` tells the tests apart).
    fn scratch(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rampart-import-{tag}-{}", std::process::id()))
    }

    /// The notes that contain `what`.
    fn notes_with(i: &Imported, what: &str) -> Vec<String> {
        i.notes
            .iter()
            .filter(|n| n.contains(what))
            .cloned()
            .collect()
    }

    #[test]
    fn lines_added_to_user_rules_by_hand_are_found() {
        let text = "*filter\n:ufw-user-input - [0:0]\n### RULES ###\n\n\
            ### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n\
            -A ufw-user-input -p tcp --dport 22 -j ACCEPT\n\n\
            -A ufw-user-input -p tcp --dport 7 -j ACCEPT\n\n\
            ### END RULES ###\n\n### LOGGING ###\n\
            -A ufw-after-logging-input -j LOG --log-prefix \"[UFW BLOCK] \"\n\
            ### END LOGGING ###\n\n### RATE LIMITING ###\n\
            -A ufw-user-limit -j REJECT\n### END RATE LIMITING ###\n\
            -A ufw-user-input -p udp --dport 9 -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            hand_added(text),
            [
                (7, "-A ufw-user-input -p tcp --dport 7 -j ACCEPT"),
                (18, "-A ufw-user-input -p udp --dport 9 -j ACCEPT")
            ]
        );
    }

    #[test]
    fn lines_taken_out_of_before_rules_are_reported_too() {
        let base = scratch("t");
        let (etc, pristine) = (base.join("etc"), base.join("pristine"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&pristine).unwrap();
        let ping = "-A ufw-before-input -p icmp --icmp-type echo-request -j ACCEPT";
        let orig = format!("*filter\n{ping}\nCOMMIT\n");
        std::fs::write(pristine.join("before.rules"), &orig).unwrap();
        let edited =
            format!("*filter\n# {ping}\n-A ufw-before-input -p tcp --dport 7 -j ACCEPT\nCOMMIT\n");
        std::fs::write(etc.join("before.rules"), edited).unwrap();
        let got = from_ufw(&etc, &base.join("none"), &pristine).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        assert!(
            got.notes
                .iter()
                .any(|n| n.contains(&format!("UFW's line '{ping}' was taken out"))),
            "{:?}",
            got.notes
        );
        assert!(
            got.notes.iter().any(|n| n.contains(
                "line 3: not translated: -A ufw-before-input -p tcp --dport 7 -j ACCEPT"
            )),
            "{:?}",
            got.notes
        );
    }

    /// UFW's kernel settings (its sysctl.conf, applied at every start) are reported,
    /// each with its line, read from the imported directory; comments are not.
    #[test]
    fn the_kernel_settings_ufw_applies_are_reported() {
        let base = scratch("s");
        let etc = base.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("sysctl.conf"),
            "# routing\nnet/ipv4/ip_forward=1\n\n;x=1\nnet/ipv4/conf/all/accept_redirects=0\n",
        )
        .unwrap();
        let defaults = base.join("default-ufw");
        std::fs::write(
            &defaults,
            "IPT_SYSCTL=/etc/ufw/sysctl.conf\nDEFAULT_APPLICATION_POLICY=\"REJECT\"\n",
        )
        .unwrap();
        let got = from_ufw(&etc, &defaults, &base.join("none")).unwrap();
        assert_eq!(got.policy.new_profiles, crate::model::NewProfiles::Reject);
        std::fs::write(&defaults, "IPT_SYSCTL=\n").unwrap();
        let none = from_ufw(&etc, &defaults, &base.join("none")).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        let file = etc.join("sysctl.conf");
        let settings = notes_with(&got, "a kernel setting UFW applies");
        assert_eq!(settings.len(), 2, "{:?}", got.notes);
        assert!(settings[0].starts_with(&format!(
            "{} line 2: not translated: net/ipv4/ip_forward=1 (",
            file.display()
        )));
        assert!(
            settings[1].contains("line 5: not translated: net/ipv4/conf/all/accept_redirects=0")
        );
        assert!(
            !none.notes.iter().any(|n| n.contains("kernel setting")),
            "{:?}",
            none.notes
        );
    }

    /// A user.rules as UFW's package ships it (never rewritten by a rule change) has
    /// limit lines outside every section: they are UFW's, not added by hand; a line
    /// added to it is still found.
    #[test]
    fn the_shipped_user_rules_are_not_hand_added() {
        let base = scratch("u");
        let (etc, pristine) = (base.join("etc"), base.join("pristine"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&pristine).unwrap();
        let shipped = "*filter\n:ufw-user-input - [0:0]\n:ufw-user-limit - [0:0]\n\
            :ufw-user-limit-accept - [0:0]\n### RULES ###\n\
            -A ufw-user-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \"\n\
            -A ufw-user-limit -j REJECT\n-A ufw-user-limit-accept -j ACCEPT\nCOMMIT\n";
        std::fs::write(pristine.join("user.rules"), shipped).unwrap();
        std::fs::write(etc.join("user.rules"), shipped).unwrap();
        let got = from_ufw(&etc, &base.join("none"), &pristine).unwrap();
        let hand = "-A ufw-user-input -p tcp --dport 7 -j ACCEPT";
        std::fs::write(
            etc.join("user.rules"),
            shipped.replace("COMMIT", &format!("{hand}\nCOMMIT")),
        )
        .unwrap();
        let added = from_ufw(&etc, &base.join("none"), &pristine).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        let by_hand = |i: &Imported| notes_with(i, "not a rule UFW's commands wrote");
        assert_eq!(by_hand(&got), Vec::<String>::new());
        let found = by_hand(&added);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains(&format!("line 9: not translated: {hand}")),
            "{found:?}"
        );
    }

    /// The start and stop scripts are reported where UFW runs them (executable) and they
    /// are not the package's; the modules UFW loads are reported too.
    #[test]
    fn init_scripts_and_modules_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let base = scratch("i");
        let (etc, share) = (base.join("etc"), base.join("share"));
        let pristine = share.join("iptables");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&pristine).unwrap();
        let shipped = "#!/bin/sh\ncase \"$1\" in start) ;; esac\n";
        for f in ["before.init", "after.init"] {
            std::fs::write(share.join(f), shipped).unwrap();
        }
        // before.init changed and executable; after.init the package's, executable.
        std::fs::write(
            etc.join("before.init"),
            format!("{shipped}ipset create x hash:ip\n"),
        )
        .unwrap();
        std::fs::write(etc.join("after.init"), shipped).unwrap();
        for f in ["before.init", "after.init"] {
            let p = etc.join(f);
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o750)).unwrap();
        }
        let defaults = base.join("default-ufw");
        std::fs::write(&defaults, "IPT_MODULES=\"nf_conntrack_ftp nf_nat_ftp\"\n").unwrap();
        let got = from_ufw(&etc, &defaults, &pristine).unwrap();
        // Not executable: UFW does not run it.
        let p = etc.join("before.init");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let idle = from_ufw(&etc, &defaults, &pristine).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        let scripts = |i: &Imported| notes_with(i, "a script UFW runs");
        let found = scripts(&got);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with(&format!("{}: not translated", p.display())));
        assert!(scripts(&idle).is_empty(), "{:?}", idle.notes);
        assert!(got
            .notes
            .iter()
            .any(|n| n.contains("IPT_MODULES=\"nf_conntrack_ftp nf_nat_ftp\": UFW loads")));
    }
}
