//! `apply FILE`: make the policy exactly a file's, for configuration management;
//! `apply --check FILE`: the difference only, as rule commands.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use similar::{capture_diff_slices, Algorithm, DiffOp};

use crate::apply::Mode;
use crate::model::{Family, Policy, Rule};
use crate::observe::rule_command;
use crate::store::{parse_policy_at, StoreError};

use super::{CliError, Ctx, Out};

/// What `apply` prints when the file's policy is the one in force.
pub const NO_CHANGE: &str = "Policy unchanged";

/// The file's policy, and whether it says `enabled` (without, the firewall is left
/// enabled or disabled as it is).
fn read(file: &str) -> Result<(Policy, bool), CliError> {
    let (path, bytes) = if file == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::Read {
                path: "standard input".into(),
                source,
            })?;
        (Path::new("standard input"), bytes)
    } else {
        let path = Path::new(file);
        let bytes = std::fs::read(path).map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        (path, bytes)
    };
    let policy = parse_policy_at(path, &bytes)?;
    // The file parsed as a policy, so it is TOML.
    let says_enabled = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .is_some_and(|t| t.contains_key("enabled"));
    Ok((policy, says_enabled))
}

/// The difference from `old` to `new` as the commands that would make it, in order:
/// enable/disable, defaults, logging, app default, then the rules (`delete RULE` for
/// what goes, `RULE` or `insert N RULE` for what comes; a rule of both families once).
pub fn difference(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if old.enabled != new.enabled {
        out.push(if new.enabled { "enable" } else { "disable" }.to_string());
    }
    let (a, b) = (old.defaults, new.defaults);
    if a.incoming != b.incoming {
        out.push(format!("default {} incoming", b.incoming.word()));
    }
    if a.outgoing != b.outgoing {
        out.push(format!("default {} outgoing", b.outgoing.word()));
    }
    if a.routed != b.routed {
        out.push(format!("default {} routed", b.routed.word()));
    }
    if old.logging != new.logging {
        out.push(format!("logging {}", new.logging.word()));
    }
    if old.log_group != new.log_group {
        out.push(match new.log_group {
            Some(n) => format!("logging to nflog {n}"),
            None => "logging to kernel".into(),
        });
    }
    if old.new_profiles != new.new_profiles {
        out.push(format!("app default {}", new.new_profiles.word()));
    }
    // Rules compare whole (their JSON), not by the command that shows them.
    // Each distinct rule becomes a number, so that the diff compares numbers.
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut key = |r: &Rule| {
        let json = serde_json::to_string(r).expect("a rule serializes");
        let next = ids.len();
        *ids.entry(json).or_insert(next)
    };
    let ka: Vec<usize> = old.rules.iter().map(&mut key).collect();
    let kb: Vec<usize> = new.rules.iter().map(&mut key).collect();
    // A rule typed once is stored once per family: said once (by its command).
    let mut seen = HashSet::new();
    let mut push = |cmd: String, line: String, out: &mut Vec<String>| {
        if seen.insert(cmd) {
            out.push(line);
        }
    };
    let ops = capture_diff_slices(Algorithm::Myers, &ka, &kb);
    // Which of the new rules come in (the rest were there).
    let mut coming = vec![false; new.rules.len()];
    // Each new rule's command, made once; and the families each command is stored in
    // (to see whether a deleted rule's twin stays).
    let new_cmds: Vec<String> = new.rules.iter().map(rule_command).collect();
    let mut families: HashMap<&str, Vec<Family>> = HashMap::new();
    for (cmd, r) in new_cmds.iter().zip(&new.rules) {
        let fams = families.entry(cmd).or_default();
        if !fams.contains(&r.family) {
            fams.push(r.family);
        }
    }
    for op in &ops {
        if let DiffOp::Insert {
            new_index, new_len, ..
        }
        | DiffOp::Replace {
            new_index, new_len, ..
        } = *op
        {
            coming[new_index..new_index + new_len].fill(true);
        }
    }
    // Per family, the last new rule that was there already: a rule after it in its
    // family comes in with every rule after it there.
    let mut last_kept: HashMap<Family, usize> = HashMap::new();
    for (j, r) in new.rules.iter().enumerate() {
        if !coming[j] {
            last_kept.insert(r.family, j);
        }
    }
    for op in ops {
        let (deleted, inserted) = match op {
            DiffOp::Equal { .. } => continue,
            DiffOp::Delete {
                old_index, old_len, ..
            } => (old_index..old_index + old_len, 0..0),
            DiffOp::Insert {
                new_index, new_len, ..
            } => (0..0, new_index..new_index + new_len),
            DiffOp::Replace {
                old_index,
                old_len,
                new_index,
                new_len,
            } => (
                old_index..old_index + old_len,
                new_index..new_index + new_len,
            ),
        };
        for i in deleted {
            let gone = &old.rules[i];
            let cmd = rule_command(gone);
            // One family's copy goes while the other stays: `delete RULE` would take
            // both, so the copy is named by its number.
            let twin_stays = families
                .get(cmd.as_str())
                .is_some_and(|f| f.iter().any(|&fam| fam != gone.family));
            let line = if twin_stays {
                let fam = match gone.family {
                    Family::V4 => "IPv4",
                    Family::V6 => "IPv6",
                };
                format!("delete {} (the {fam} copy of '{cmd}')", i + 1)
            } else {
                format!("delete {cmd}")
            };
            push(line.clone(), line, &mut out);
        }
        for i in inserted {
            let cmd = new_cmds[i].clone();
            // Added at the end of its family's rules when every rule after it there
            // comes in too; otherwise inserted at its number.
            let appended = last_kept.get(&new.rules[i].family).is_none_or(|&j| j < i);
            let line = if appended {
                cmd.clone()
            } else {
                format!("insert {} {cmd}", i + 1)
            };
            push(cmd, line, &mut out);
        }
    }
    out
}

impl Ctx<'_> {
    /// `import ufw [DIR] [--defaults FILE]`: UFW's set-up as the policy, in one change.
    pub(super) fn import(&self, from: &str, dir: &Path, defaults: &Path) -> Result<Out, CliError> {
        if from != "ufw" {
            return Err(super::usage(format!(
                "Cannot import from '{from}': use 'import ufw [DIR]'"
            )));
        }
        let pristine = Path::new(crate::import::UFW_PRISTINE_DIR);
        let imported =
            crate::import::from_ufw(dir, defaults, pristine).map_err(CliError::Import)?;
        let mut out: Out = imported
            .notes
            .iter()
            .map(|n| format!("Not translated: {n}"))
            .collect();
        let (v4, v6) = imported.counts;
        let summary = format!(
            "Imported {v4} IPv4 and {v6} IPv6 rules, the default policies, logging and the enabled state from {}",
            dir.display()
        );
        if self.dry_run {
            out.insert(0, crate::store::toml_text(&imported.policy));
            out.push(summary);
            return Ok(out);
        }
        let enabled = imported.policy.enabled;
        let mut lines = self.change(Mode::Auto, |p, _| {
            *p = imported.policy;
            Ok(Vec::new())
        })?;
        out.append(&mut lines);
        out.push(summary);
        if enabled {
            out.push(
                "Firewall is active; if UFW is too, 'ufw disable' leaves rampart alone".into(),
            );
        }
        Ok(out)
    }

    /// `apply [--check] FILE`.
    pub(super) fn apply(&self, file: &str, check: bool) -> Result<Out, CliError> {
        let (mut wanted, says_enabled) = read(file)?;
        if check {
            let fw = self.open_read()?;
            if !says_enabled {
                wanted.enabled = fw.policy().enabled;
            }
            let mut diff = difference(fw.policy(), &wanted);
            if diff.is_empty() && wanted.enabled && !fw.in_sync() {
                diff.push("reload (the kernel does not hold the policy file's rules)".into());
            }
            return if diff.is_empty() {
                Ok(vec![NO_CHANGE.into()])
            } else {
                Err(CliError::Differs(diff))
            };
        }
        self.change(Mode::Auto, |p, _| {
            if !says_enabled {
                wanted.enabled = p.enabled;
            }
            let diff = difference(p, &wanted);
            *p = wanted;
            Ok(if diff.is_empty() {
                vec![NO_CHANGE.into()]
            } else {
                diff
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::{Action, Verdict};

    fn policy(rules: &[(Action, &str)]) -> Policy {
        let mut p = Policy::default();
        for (action, text) in rules {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(*action, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        p
    }

    #[test]
    fn the_difference_is_the_commands_that_make_it() {
        let old = policy(&[
            (Action::Allow, "22/tcp"),
            (Action::Deny, "from 198.18.0.9"),
            (Action::Allow, "80/tcp"),
        ]);
        let mut new = policy(&[
            (Action::Allow, "22/tcp"),
            (Action::Limit, "2222/tcp"),
            (Action::Allow, "80/tcp"),
            (Action::Allow, "443/tcp"),
        ]);
        new.defaults.outgoing = Verdict::Deny;
        assert_eq!(
            difference(&old, &new),
            [
                "default deny outgoing",
                "delete deny from 198.18.0.9",
                "insert 2 limit 2222/tcp",
                "allow 443/tcp",
            ]
        );
        assert!(difference(&new, &new).is_empty());
        // Only the IPv6 copy of 443/tcp goes: named by its number, not as a rule.
        let mut v4_only = new.clone();
        let last = v4_only.rules.len() - 1;
        v4_only.rules.remove(last);
        assert_eq!(
            difference(&new, &v4_only),
            ["delete 8 (the IPv6 copy of 'allow 443/tcp')"]
        );
    }

    #[test]
    fn appends_and_twins_are_told_per_family() {
        // IPv4 rules, then IPv6 ones (policy() sorts them so).
        let old = policy(&[
            (Action::Allow, "22/tcp"),
            (Action::Allow, "25/tcp"),
            (Action::Allow, "from 198.18.0.1"),
        ]);
        let mut new = policy(&[
            (Action::Allow, "22/tcp"),
            (Action::Allow, "from 198.18.0.2"),
            (Action::Allow, "from 198.18.0.1"),
            (Action::Allow, "from 198.18.0.3"),
        ]);
        // 25/tcp's IPv6 copy stays, as the last IPv6 rule.
        let v6_25 = old
            .rules
            .iter()
            .find(|r| r.family == Family::V6 && rule_command(r) == "allow 25/tcp");
        new.rules.push(v6_25.unwrap().clone());
        assert_eq!(
            difference(&old, &new),
            [
                "delete 2 (the IPv4 copy of 'allow 25/tcp')",
                "insert 2 allow from 198.18.0.2",
                // The last IPv4 rule: added at the end of its family's rules.
                "allow from 198.18.0.3",
            ]
        );
    }
}
