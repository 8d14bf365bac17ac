//! The policy file's layout: the TOML text rampart writes, and splicing.
//!
//! A change is written by splicing when the file is one rampart wrote: the rules before
//! and after the changed ones keep their bytes (TOML blocks and cache lines), and only
//! the changed rules are serialized (writing 10,000 rules as TOML costs ~9 ms). The
//! result is byte for byte what a full write gives.

use crate::model::Policy;

use super::cache::{self, json, without_rules, Origin};

/// A policy turned into the bytes the store writes (the TOML file and its cache), so
/// that the work can be done beside other work before the write.
pub struct Serialized {
    /// The TOML file.
    pub toml: String,
    /// The cache file.
    pub cache: String,
    /// The policy's id (the hash of its canonical JSON, the cache's body).
    pub id: String,
}

impl Serialized {
    /// Serialize a policy.
    pub fn of(policy: &Policy) -> Serialized {
        let toml = toml_text(policy);
        Serialized::with_body(toml, &cache::body(policy), Origin::Written)
    }

    /// The TOML text with the cache of a body.
    pub fn with_body(toml: String, body: &str, origin: Origin) -> Serialized {
        let id = cache::hash_hex(body.as_bytes());
        Serialized {
            cache: cache::file_text(toml.as_bytes(), body, &id, origin),
            id,
            toml,
        }
    }

    /// Serialize `new`, an edit of `old` that was loaded from `source`: the rules the
    /// two share at the start and at the end keep the bytes they had; only the rules
    /// between are serialized. The result is byte for byte what [`Serialized::of`]
    /// gives; when the source is not one rampart wrote, it is [`Serialized::of`].
    pub fn edit(source: &Source, old: &Policy, new: &Policy) -> Serialized {
        splice(source, old, new).unwrap_or_else(|| Serialized::of(new))
    }
}

/// The bytes a policy was loaded from: the TOML text and, when the cache matched it,
/// the cache file (and where its body starts) and who laid out the text.
#[derive(Default)]
pub struct Source {
    /// The TOML text.
    pub toml: Vec<u8>,
    /// The matching cache: who laid out the text, the file, where its body starts.
    pub cache: Option<(Origin, Vec<u8>, usize)>,
}

/// The TOML text rampart writes for a policy.
pub fn toml_text(policy: &Policy) -> String {
    format!(
        "{HEADER}{}",
        toml::to_string(policy).expect("policy serializes to TOML")
    )
}

/// Where a rule's table starts in the TOML text (after the newline of a blank line).
const RULE_START: &str = "\n[[rule]]\n";

/// A TOML text as rampart writes it, cut into what comes before the rules (ending with
/// the blank line) and each rule's block (without the blank line after it): the text
/// is the head and the blocks joined by newlines. None unless there are `rules` blocks.
fn rule_blocks(text: &str, rules: usize) -> Option<(&str, Vec<&str>)> {
    let starts: Vec<usize> = text.match_indices(RULE_START).map(|(i, _)| i).collect();
    if starts.len() != rules || rules == 0 {
        return None;
    }
    let blocks = starts
        .iter()
        .enumerate()
        .map(|(k, &i)| &text[i + 1..starts.get(k + 1).copied().unwrap_or(text.len())])
        .collect();
    Some((&text[..starts[0] + 1], blocks))
}

fn splice(source: &Source, old: &Policy, new: &Policy) -> Option<Serialized> {
    let Some((Origin::Written, cache, start)) = &source.cache else {
        return None;
    };
    let cache = &cache[*start..];
    let old_text = std::str::from_utf8(&source.toml).ok()?;
    let (_, old_blocks) = rule_blocks(old_text, old.rules.len())?;
    let mut lines = cache.split(|b| *b == b'\n');
    lines.next()?; // the policy without its rules
    let old_lines: Vec<&[u8]> = lines.collect();
    if old_lines.len() != old.rules.len() || new.rules.is_empty() {
        return None;
    }
    let (o, n) = (&old.rules, &new.rules);
    let prefix = o.iter().zip(n).take_while(|(a, b)| a == b).count();
    let room = o.len().min(n.len()) - prefix;
    let suffix = o
        .iter()
        .rev()
        .zip(n.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let middle = &n[prefix..n.len() - suffix];
    // The head (and the middle rules) come from the serializer itself: a policy of the
    // new head, its first rule and the middle rules.
    let mut part = without_rules(new);
    let lead = prefix > 0 || middle.is_empty();
    if lead {
        part.rules.push(n[0].clone());
    }
    part.rules.extend_from_slice(middle);
    let part_text = toml_text(&part);
    let (head, part_blocks) = rule_blocks(&part_text, part.rules.len())?;
    let fresh = &part_blocks[usize::from(lead)..];
    let blocks = old_blocks[..prefix]
        .iter()
        .chain(fresh)
        .chain(&old_blocks[o.len() - suffix..]);
    let mut toml = String::with_capacity(source.toml.len() + part_text.len());
    toml.push_str(head);
    for (k, block) in blocks.enumerate() {
        if k > 0 {
            toml.push('\n');
        }
        toml.push_str(block);
    }
    let fresh_lines: Vec<String> = middle.iter().map(json).collect();
    let rule_lines = old_lines[..prefix]
        .iter()
        .copied()
        .chain(fresh_lines.iter().map(String::as_bytes))
        .chain(old_lines[o.len() - suffix..].iter().copied());
    let mut body = json(&without_rules(new)).into_bytes();
    for line in rule_lines {
        body.push(b'\n');
        body.extend_from_slice(line);
    }
    let body = String::from_utf8(body).ok()?;
    Some(Serialized::with_body(toml, &body, Origin::Written))
}

const HEADER: &str =
    "# rampart policy. Edit with the rampart command; hand edits are read on the next command.\n";

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::{Action, LogLevel};
    use crate::store::{LockMode, Store};

    /// A fresh store in a temporary directory of its own (the test removes it).
    fn temp_store(name: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("rampart-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, LockMode::Exclusive).unwrap();
        (dir, store)
    }

    /// Write a serialized policy as a change does.
    fn write(store: &Store, s: &Serialized) {
        store.write_pending(s).unwrap();
        store.commit_pending().unwrap();
    }

    #[test]
    fn round_trip() {
        let (dir, store) = temp_store("store");
        let mut p = store.load().unwrap().policy;
        assert_eq!(p, Policy::default());
        let words: Vec<String> = "in on eth0 log proto tcp from 198.18.0.0/24 port 1000:2000 to any port 22,80 comment hi"
            .split_whitespace()
            .map(String::from)
            .collect();
        p.rules = parse_rule(Action::Deny, &words).unwrap().rules;
        p.enabled = true;
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap().policy, p);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_follows_hand_edits() {
        let (dir, store) = temp_store("cache");
        let p = Policy {
            rules: parse_rule(Action::Allow, &["22/tcp".to_string()])
                .unwrap()
                .rules,
            ..Policy::default()
        };
        store.save(&p).unwrap();
        let loaded = store.load().unwrap();
        assert!(loaded.source.cache.is_some(), "the cache matches");
        assert_eq!(loaded.policy, p);
        assert_eq!(loaded.id, crate::store::policy_id(&p));

        // A hand edit: the cache no longer matches (but stays intact: what the kernel
        // may hold), until refresh_cache writes one for the edited file.
        let text = fs::read_to_string(store.policy_path()).unwrap();
        fs::write(store.policy_path(), text.replace("\"22\"", "\"2222\"")).unwrap();
        let edited = store.load().unwrap();
        assert!(edited.source.cache.is_none());
        assert_eq!(edited.stale.as_ref().unwrap().id(), loaded.id);
        assert_eq!(edited.stale.as_ref().unwrap().policy().unwrap(), p);
        assert_eq!(
            edited.policy.rules[0]
                .to
                .ports
                .as_ref()
                .unwrap()
                .to_string(),
            "2222"
        );
        store.refresh_cache(&edited);
        let again = store.load().unwrap();
        assert!(again.source.cache.is_some());
        assert_eq!(again.policy, edited.policy);
        assert_eq!(again.id, edited.id);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Rules of many shapes, from commands (one command can give an IPv4 and an IPv6 rule).
    fn sample_rules() -> Vec<crate::model::Rule> {
        let commands = [
            (Action::Allow, "22/tcp", None),
            (Action::Deny, "from 198.18.7.0/24", None),
            (
                Action::Allow,
                "from 198.18.0.9 to any port 443 proto tcp",
                None,
            ),
            (
                Action::Reject,
                "in on eth0 log proto tcp from 198.18.0.0/24 port 1000:2000 to any port 22,80",
                Some("hi"),
            ),
            (Action::Limit, "80/tcp", None),
            (
                Action::Allow,
                "from 2001:db8::/48 to any port 53 proto udp",
                None,
            ),
            (
                Action::Deny,
                "out to 198.19.0.0/16",
                Some("with \"quotes\" and \\ back"),
            ),
            (Action::Allow, "53", None),
            (
                Action::Allow,
                "from any to any port 30000:30005 proto udp",
                Some("a [[rule]] b"),
            ),
        ];
        commands
            .iter()
            .flat_map(|(action, text, comment)| {
                let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
                if let Some(c) = comment {
                    words.extend(["comment".to_string(), c.to_string()]);
                }
                parse_rule(*action, &words).unwrap().rules
            })
            .collect()
    }

    #[test]
    fn splicing_writes_what_a_full_write_does() {
        let (dir, store) = temp_store("splice");
        let rules = sample_rules();
        let mut policy = Policy {
            enabled: true,
            ..Policy::default()
        };
        for k in 0..40 {
            policy.rules.push(rules[k % rules.len()].clone());
        }
        // IPv4 rules first, as a valid policy has them.
        policy.rules.sort_by_key(|r| r.family);
        store.save(&policy).unwrap();
        // A fixed pseudo-random walk of edits: insert, delete, replace, append, first,
        // last, the head; each written by splicing must equal a full write.
        let mut x: usize = 7;
        let mut spliced = 0;
        for step in 0..300 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (1 << 31);
            let loaded = store.load().unwrap();
            let (old, source) = (loaded.policy, loaded.source);
            assert_eq!(old, policy, "step {step}");
            let mut new = old.clone();
            let len = new.rules.len();
            let at = x % (len + 1);
            let rule = rules[(x / 7) % rules.len()].clone();
            match (x / 3) % 7 {
                0 | 1 => new.rules.insert(at, rule),
                2 if len > 1 => drop(new.rules.remove(at.min(len - 1))),
                3 if len > 0 => new.rules[at.min(len - 1)] = rule,
                4 if len > 1 => drop(new.rules.remove(0)),
                5 if len > 1 => drop(new.rules.pop()),
                6 => new.logging = [LogLevel::Off, LogLevel::Low, LogLevel::High][x % 3],
                _ => new.rules.push(rule),
            }
            new.rules.sort_by_key(|r| r.family);
            let full = Serialized::of(&new);
            let edit = Serialized::edit(&source, &old, &new);
            assert_eq!(edit.toml, full.toml, "step {step}");
            assert_eq!(edit.cache, full.cache, "step {step}");
            assert_eq!(edit.id, crate::store::policy_id(&new), "step {step}");
            // Every edit splices, unless a comment holds the block marker (then the
            // text cannot be cut by it) or a side has no rules.
            let marked = |p: &Policy| {
                p.rules.is_empty()
                    || p.rules
                        .iter()
                        .any(|r| r.comment.as_deref().is_some_and(|c| c.contains('\n')))
            };
            let did = splice(&source, &old, &new).is_some();
            assert_eq!(did, !marked(&old) && !marked(&new), "step {step}");
            spliced += usize::from(did);
            write(&store, &edit);
            policy = new;
        }
        assert!(spliced > 50, "only {spliced} of 300 edits were spliced");
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hand_edited_text_is_written_whole() {
        let (dir, store) = temp_store("hand");
        let mut rules = sample_rules();
        rules.retain(|r| !r.comment.as_deref().is_some_and(|c| c.contains('\n')));
        rules.sort_by_key(|r| r.family);
        let policy = Policy {
            rules,
            ..Policy::default()
        };
        store.save(&policy).unwrap();
        // Hand edit: a comment line and a reordered table; reload caches it as read.
        let text = fs::read_to_string(store.policy_path()).unwrap();
        let edited = text.replacen("[[rule]]", "# mine\n[[rule]]", 1);
        fs::write(store.policy_path(), edited).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.policy, policy);
        store.refresh_cache(&loaded);
        let loaded = store.load().unwrap();
        let (old, source) = (loaded.policy, loaded.source);
        assert!(matches!(source.cache, Some((Origin::Read, ..))));
        let mut new = old.clone();
        new.rules.pop();
        assert!(splice(&source, &old, &new).is_none());
        let edit = Serialized::edit(&source, &old, &new);
        assert_eq!(edit.toml, Serialized::of(&new).toml);
        // Put back as rampart wrote it: reload finds the layout its own.
        fs::write(store.policy_path(), &text).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.policy, policy);
        store.refresh_cache(&loaded);
        let loaded = store.load().unwrap();
        let (old, source) = (loaded.policy, loaded.source);
        assert!(matches!(source.cache, Some((Origin::Written, ..))));
        assert!(splice(&source, &old, &new).is_some());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
