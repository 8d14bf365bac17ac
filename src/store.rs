//! The config directory: the policy as TOML, written atomically under an exclusive lock.
//!
//! Beside it, a cache of the same policy as JSON, stamped with a hash of the TOML text
//! it was made from: parsing TOML costs ~0.1 s at 10,000 rules, JSON a twentieth of
//! that. The TOML file stays the only source of truth: the cache is used only when the
//! stamp matches the file's current bytes, so a hand edit is always read.
//!
//! A change is written by splicing when the file is one rampart wrote: the rules before
//! and after the changed ones keep their bytes (TOML blocks and cache lines), and only
//! the changed rules are serialized (writing 10,000 rules as TOML costs ~9 ms).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::{Policy, Rule};

/// The policy file inside the config directory.
pub const POLICY_FILE: &str = "policy.toml";
/// The policy cache inside the config directory (see the module doc).
pub const CACHE_FILE: &str = ".policy.cache.json";
/// The lock file inside the config directory; held for the whole of a command.
pub const LOCK_FILE: &str = ".lock";
/// Default config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rampart";

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot use config directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid policy: {source}; fix or remove it")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open, locked config directory. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Open (creating if needed) and lock the config directory. `create` is false for
    /// commands that must not write anything (dry runs): then a missing directory is
    /// treated as an empty default policy and no lock file is made.
    pub fn open(dir: &Path, create: bool) -> Result<Option<Store>, StoreError> {
        if !dir.exists() {
            if !create {
                return Ok(None);
            }
            fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = if create {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        } else {
            File::open(&lock_path).or_else(|_| File::open(dir))
        }
        .map_err(|source| StoreError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| StoreError::Lock {
            path: lock_path,
            source,
        })?;
        Ok(Some(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    /// Path of the policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join(POLICY_FILE)
    }

    /// Path of the policy cache.
    pub fn cache_path(&self) -> PathBuf {
        self.dir.join(CACHE_FILE)
    }

    /// Load the policy; a missing file is the default policy.
    pub fn load(&self) -> Result<Policy, StoreError> {
        Ok(self.load_source()?.0)
    }

    /// Load the policy and keep the bytes it came from, for [`Serialized::edit`].
    pub fn load_source(&self) -> Result<(Policy, Source), StoreError> {
        load_with_cache(&self.policy_path(), &self.cache_path())
    }

    /// Load the policy, and write the cache if it did not match the file (after a hand
    /// edit). For commands that may write to the config directory.
    pub fn load_and_cache(&self) -> Result<Policy, StoreError> {
        let (policy, source) = self.load_source()?;
        if source.cache.is_none() && !source.toml.is_empty() {
            // A hand edit may leave the text as rampart lays it out; then later changes
            // can be spliced into it.
            let origin = if toml_text(&policy).as_bytes() == source.toml {
                Origin::Written
            } else {
                Origin::Read
            };
            self.write_cache(&cache_text(&source.toml, &policy, origin));
        }
        Ok(policy)
    }

    /// Write the policy atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, policy: &Policy) -> Result<(), StoreError> {
        self.write(&Serialized::of(policy))
    }

    /// Write an already serialized policy (see [`Serialized`]) atomically.
    pub fn write(&self, policy: &Serialized) -> Result<(), StoreError> {
        let path = self.policy_path();
        let tmp = self.dir.join(format!(".{POLICY_FILE}.tmp"));
        let werr = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        {
            let mut f = File::create(&tmp).map_err(werr)?;
            f.write_all(policy.toml.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        fs::rename(&tmp, &path).map_err(werr)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        self.write_cache(&policy.cache);
        Ok(())
    }

    /// Write the cache: best effort and not synced, as a missing or torn cache fails
    /// its stamp and only costs time.
    fn write_cache(&self, cache: &str) {
        let tmp = self.dir.join(format!("{CACHE_FILE}.tmp"));
        if fs::write(&tmp, cache).is_ok() {
            let _ = fs::rename(&tmp, self.cache_path());
        }
    }
}

/// A policy turned into the bytes the store writes (the TOML file and its cache), so
/// that the work can be done beside other work before the write.
pub struct Serialized {
    toml: String,
    cache: String,
}

impl Serialized {
    /// Serialize a policy.
    pub fn of(policy: &Policy) -> Serialized {
        let toml = toml_text(policy);
        let cache = cache_text(toml.as_bytes(), policy, Origin::Written);
        Serialized { toml, cache }
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
/// the cache file and where its lines after the stamp start.
#[derive(Default)]
pub struct Source {
    toml: Vec<u8>,
    cache: Option<(Origin, Vec<u8>, usize)>,
}

/// Who made the TOML text a cache describes: rampart (so it is laid out as
/// [`Serialized::of`] lays it out), or a hand edit read by `reload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Written,
    Read,
}

impl Origin {
    fn word(self) -> &'static str {
        match self {
            Origin::Written => "written",
            Origin::Read => "read",
        }
    }
}

fn toml_text(policy: &Policy) -> String {
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
    let mut cache = cache_head(toml.as_bytes(), new, Origin::Written).into_bytes();
    for line in rule_lines {
        cache.push(b'\n');
        cache.extend_from_slice(line);
    }
    let cache = String::from_utf8(cache).ok()?;
    Some(Serialized { toml, cache })
}

/// The cache file's text for a policy read from (or written as) this TOML text: the
/// stamp, the policy without its rules, then one line per rule.
fn cache_text(toml_text: &[u8], policy: &Policy, origin: Origin) -> String {
    let mut text = cache_head(toml_text, policy, origin);
    for rule in &policy.rules {
        text.push('\n');
        text.push_str(&json(rule));
    }
    text
}

/// The stamp and the policy without its rules.
fn cache_head(toml_text: &[u8], policy: &Policy, origin: Origin) -> String {
    let head = without_rules(policy);
    format!("{} {}\n{}", stamp(toml_text), origin.word(), json(&head))
}

/// A copy of the policy's settings, with no rules.
fn without_rules(policy: &Policy) -> Policy {
    Policy {
        enabled: policy.enabled,
        defaults: policy.defaults,
        logging: policy.logging,
        rules: Vec::new(),
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("policy serializes to JSON")
}

/// The policy in a cache's lines (after the stamp), or None if a line is not valid.
fn parse_cache(lines: &[u8]) -> Option<Policy> {
    let mut lines = lines.split(|b| *b == b'\n');
    let mut policy: Policy = serde_json::from_slice(lines.next()?).ok()?;
    policy.rules = lines
        .map(|line| serde_json::from_slice::<Rule>(line).ok())
        .collect::<Option<_>>()?;
    Some(policy)
}

const HEADER: &str =
    "# rampart policy. Edit with the rampart command; hand edits are read on the next command.\n";

/// The first line of a cache made from this TOML text: the program's version (the
/// JSON is its model), the cache's layout and a hash of the text.
fn stamp(toml_text: &[u8]) -> String {
    use std::hash::Hasher;
    // Fixed keys: the same for the same bytes within one build, which is all the
    // stamp needs (the version is part of it).
    let mut h = std::hash::DefaultHasher::new();
    h.write(toml_text);
    format!(
        "rampart {} policy cache 3 {:016x} {}",
        env!("CARGO_PKG_VERSION"),
        h.finish(),
        toml_text.len()
    )
}

/// Read a policy file, through the cache when its stamp matches; missing means the
/// default policy. Also gives the bytes it was read from.
fn load_with_cache(path: &Path, cache: &Path) -> Result<(Policy, Source), StoreError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok((Policy::default(), Source::default()))
        }
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if let Ok(cached) = fs::read(cache) {
        let stamp = stamp(&text);
        let hit = cached.strip_prefix(stamp.as_bytes()).and_then(|rest| {
            [Origin::Written, Origin::Read]
                .into_iter()
                .find_map(|origin| {
                    let line_end = format!(" {}\n", origin.word());
                    rest.strip_prefix(line_end.as_bytes())
                        .and_then(parse_cache)
                        .map(|policy| (origin, stamp.len() + line_end.len(), policy))
                })
        });
        if let Some((origin, skip, policy)) = hit {
            let source = Source {
                toml: text,
                cache: Some((origin, cached, skip)),
            };
            return Ok((policy, source));
        }
    }
    let parse_err = |source| StoreError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let policy = std::str::from_utf8(&text)
        .map_err(|e| StoreError::Read {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
        .and_then(|t| toml::from_str(t).map_err(parse_err))?;
    let source = Source {
        toml: text,
        cache: None,
    };
    Ok((policy, source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::{Action, LogLevel};

    /// A fresh store in a temporary directory of its own (the test removes it).
    fn temp_store(name: &str) -> (PathBuf, Store) {
        let dir = std::env::temp_dir().join(format!("rampart-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true).unwrap().unwrap();
        (dir, store)
    }

    #[test]
    fn round_trip() {
        let (dir, store) = temp_store("store");
        let mut p = store.load().unwrap();
        assert_eq!(p, Policy::default());
        let words: Vec<String> = "in on eth0 log proto tcp from 198.18.0.0/24 port 1000:2000 to any port 22,80 comment hi"
            .split_whitespace()
            .map(String::from)
            .collect();
        p.rules = parse_rule(Action::Deny, &words).unwrap().rules;
        p.enabled = true;
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), p);
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
        let cache = fs::read_to_string(store.cache_path()).unwrap();
        assert!(cache.starts_with(&stamp(&fs::read(store.policy_path()).unwrap())));
        assert_eq!(store.load().unwrap(), p);

        // A hand edit: the stale cache is ignored, then refreshed by load_and_cache.
        let text = fs::read_to_string(store.policy_path()).unwrap();
        fs::write(store.policy_path(), text.replace("\"22\"", "\"2222\"")).unwrap();
        let edited = store.load().unwrap();
        assert_ne!(edited, p);
        assert_eq!(
            edited.rules[0].to.ports.as_ref().unwrap().to_string(),
            "2222"
        );
        assert_eq!(store.load_and_cache().unwrap(), edited);
        let cache = fs::read_to_string(store.cache_path()).unwrap();
        assert!(cache.starts_with(&stamp(&fs::read(store.policy_path()).unwrap())));
        assert_eq!(store.load().unwrap(), edited);
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
                Some("a\n[[rule]]\nb"),
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
        store.save(&policy).unwrap();
        // A fixed pseudo-random walk of edits: insert, delete, replace, append, first,
        // last, the head; each written by splicing must equal a full write.
        let mut x: usize = 7;
        let mut spliced = 0;
        for step in 0..300 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) % (1 << 31);
            let (old, source) = store.load_source().unwrap();
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
            let full = Serialized::of(&new);
            let edit = Serialized::edit(&source, &old, &new);
            assert_eq!(edit.toml, full.toml, "step {step}");
            assert_eq!(edit.cache, full.cache, "step {step}");
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
            store.write(&edit).unwrap();
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
        let policy = Policy {
            rules,
            ..Policy::default()
        };
        store.save(&policy).unwrap();
        // Hand edit: a comment line and a reordered table; reload caches it as read.
        let text = fs::read_to_string(store.policy_path()).unwrap();
        let edited = text.replacen("[[rule]]", "# mine\n[[rule]]", 1);
        fs::write(store.policy_path(), edited).unwrap();
        assert_eq!(store.load_and_cache().unwrap(), policy);
        let (old, source) = store.load_source().unwrap();
        assert!(matches!(source.cache, Some((Origin::Read, ..))));
        let mut new = old.clone();
        new.rules.pop();
        assert!(splice(&source, &old, &new).is_none());
        let edit = Serialized::edit(&source, &old, &new);
        assert_eq!(edit.toml, Serialized::of(&new).toml);
        // Put back as rampart wrote it: reload finds the layout its own.
        fs::write(store.policy_path(), &text).unwrap();
        assert_eq!(store.load_and_cache().unwrap(), policy);
        let (old, source) = store.load_source().unwrap();
        assert!(matches!(source.cache, Some((Origin::Written, ..))));
        assert!(splice(&source, &old, &new).is_some());
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
