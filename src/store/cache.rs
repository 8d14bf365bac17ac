//! The policy cache: the policy as JSON, one rule per line, beside the TOML file.
//! Parsing 10,000 rules of TOML costs ~0.1 s, the JSON a twentieth of that.
//!
//! The cache can make commands fast; it can never change what the policy says. Its
//! first line holds a hash of the TOML bytes it was made from and a hash of its own
//! body: it is used only when both match, and its rules then pass the same checks as
//! the TOML's. Anything else (a hand edit of either file, a torn write) makes it a miss,
//! and the TOML is read.
//!
//! The body is the policy's canonical JSON; its hash is the policy's id, which the
//! kernel table is stamped with.
//!
//! The hash is XXH3-128: stable across builds and versions, and ~10 GB/s (a change at
//! 10,000 rules hashes ~5 MB). It guards against torn writes and edits, not against
//! someone who can write the config directory (who is root anyway).

use xxhash_rust::xxh3::xxh3_128;

use crate::model::{Policy, Rule};

/// Version of the cache's layout.
const LAYOUT: u32 = 4;

/// Who laid out the TOML text a cache describes: rampart (so it is laid out as
/// `Serialized::of` lays it out, and can be spliced), or a hand edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Written by rampart.
    Written,
    /// Edited by hand, then read.
    Read,
}

impl Origin {
    fn word(self) -> &'static str {
        match self {
            Origin::Written => "written",
            Origin::Read => "read",
        }
    }

    fn from_word(word: &str) -> Option<Origin> {
        match word {
            "written" => Some(Origin::Written),
            "read" => Some(Origin::Read),
            _ => None,
        }
    }
}

/// The hash of some bytes (XXH3-128), in hex.
pub fn hash_hex(bytes: &[u8]) -> String {
    format!("{:032x}", xxh3_128(bytes))
}

/// One value as compact JSON (the form of every cache line).
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("policy serializes to JSON")
}

/// A copy of the policy's settings, with no rules.
pub fn without_rules(policy: &Policy) -> Policy {
    Policy {
        enabled: policy.enabled,
        defaults: policy.defaults,
        logging: policy.logging,
        log_group: policy.log_group,
        new_profiles: policy.new_profiles,
        rules: Vec::new(),
    }
}

/// The canonical JSON of a policy: its settings, then one line per rule.
pub fn body(policy: &Policy) -> String {
    let mut text = json(&without_rules(policy));
    for rule in &policy.rules {
        text.push('\n');
        text.push_str(&json(rule));
    }
    text
}

/// The cache file for a body (whose hash is `id`) made from this TOML text.
pub fn file_text(toml: &[u8], body: &str, id: &str, origin: Origin) -> String {
    format!(
        "rampart {} policy cache {LAYOUT} {} {} {} {id}\n{body}",
        env!("CARGO_PKG_VERSION"),
        origin.word(),
        toml.len(),
        hash_hex(toml),
    )
}

/// A cache file whose body is intact (its hash matches), whatever TOML it was made from.
pub struct Cache {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Where the body starts.
    pub body_start: usize,
    /// Who laid out the TOML it was made from.
    pub origin: Origin,
    /// Length and hash of that TOML text.
    toml: (usize, String),
    /// The body's hash: the id of the policy it holds.
    pub id: String,
}

impl Cache {
    /// Check a cache file's header and body hash (None if either is wrong, or the cache
    /// is another version's).
    pub fn check(bytes: Vec<u8>) -> Option<Cache> {
        let nl = bytes.iter().position(|b| *b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..nl]).ok()?;
        let rest = head.strip_prefix(&format!(
            "rampart {} policy cache {LAYOUT} ",
            env!("CARGO_PKG_VERSION")
        ))?;
        let [origin, len, toml_hash, id] = rest.split(' ').collect::<Vec<_>>()[..] else {
            return None;
        };
        let origin = Origin::from_word(origin)?;
        let len: usize = len.parse().ok()?;
        let body_start = nl + 1;
        if hash_hex(&bytes[body_start..]) != id {
            return None;
        }
        Some(Cache {
            origin,
            toml: (len, toml_hash.to_string()),
            id: id.to_string(),
            body_start,
            bytes,
        })
    }

    /// Whether the cache was made from exactly these TOML bytes (hashed: `toml_hash`).
    pub fn made_from(&self, toml: &[u8], toml_hash: &str) -> bool {
        self.toml.0 == toml.len() && self.toml.1 == toml_hash
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_start..]
    }

    /// The policy the body holds, or None if a line is not a valid policy or rule (the
    /// checks of `Policy::validate` are the caller's).
    pub fn policy(&self) -> Option<Policy> {
        parse_body(self.body())
    }
}

/// The policy in a body, or None if a line is not valid.
fn parse_body(lines: &[u8]) -> Option<Policy> {
    let (head, rest) = match lines.iter().position(|b| *b == b'\n') {
        Some(at) => (&lines[..at], Some(&lines[at + 1..])),
        None => (lines, None),
    };
    let mut policy: Policy = serde_json::from_slice(head).ok()?;
    if !policy.rules.is_empty() {
        return None;
    }
    let Some(rest) = rest else {
        return Some(policy);
    };
    // Two halves side by side past a few thousand rules (a line is parsed in ~5 µs).
    let cut = (rest.len() > PARALLEL_BYTES)
        .then(|| rest[rest.len() / 2..].iter().position(|b| *b == b'\n'))
        .flatten()
        .map(|at| rest.len() / 2 + at);
    let parse = |part: &[u8]| -> Option<Vec<Rule>> {
        part.split(|b| *b == b'\n')
            .map(|line| serde_json::from_slice::<Rule>(line).ok())
            .collect()
    };
    policy.rules = match cut {
        Some(at) => std::thread::scope(|s| {
            let second = s.spawn(|| parse(&rest[at + 1..]));
            let mut rules = parse(&rest[..at])?;
            rules.extend(second.join().expect("parsing does not panic")?);
            Some(rules)
        })?,
        None => parse(rest)?,
    };
    Some(policy)
}

/// A body's size past which its rules are parsed in two halves at once (~2,000 rules).
const PARALLEL_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_checked_against_itself() {
        let policy = Policy::default();
        let body = body(&policy);
        let text = file_text(b"toml", &body, &hash_hex(body.as_bytes()), Origin::Written);
        let cache = Cache::check(text.clone().into_bytes()).unwrap();
        assert!(cache.made_from(b"toml", &hash_hex(b"toml")));
        assert!(!cache.made_from(b"tomm", &hash_hex(b"tomm")));
        assert_eq!(cache.policy().unwrap(), policy);
        assert_eq!(cache.id, hash_hex(body.as_bytes()));
        // Any change of the body, or a torn file, fails the check.
        let edited = text.replace("\"low\"", "\"off\"");
        assert_ne!(edited, text);
        assert!(Cache::check(edited.into_bytes()).is_none());
        assert!(Cache::check(text.as_bytes()[..text.len() - 1].to_vec()).is_none());
    }

    #[test]
    fn a_large_body_parses_in_halves_to_the_same_policy() {
        let mut policy = Policy::default();
        for n in 0..4000u32 {
            let words: Vec<String> = format!(
                "proto tcp from 198.18.{}.{} to any port {}",
                n / 250,
                n % 250,
                1 + n
            )
            .split_whitespace()
            .map(String::from)
            .collect();
            let rules = crate::grammar::parse_rule(crate::model::Action::Allow, &words)
                .unwrap()
                .rules;
            policy.rules.extend(rules);
        }
        let body = body(&policy);
        assert!(body.len() > PARALLEL_BYTES);
        assert_eq!(parse_body(body.as_bytes()).unwrap(), policy);
        // A bad line in either half is a miss.
        for at in [body.len() / 4, body.len() * 3 / 4] {
            let mut bad = body.clone().into_bytes();
            let line = at + bad[at..].iter().position(|b| *b == b'\n').unwrap() + 1;
            bad[line] = b'x';
            assert!(parse_body(&bad).is_none());
        }
        // No rules at all: the head alone.
        let empty = super::body(&Policy::default());
        assert_eq!(parse_body(empty.as_bytes()).unwrap(), Policy::default());
    }
}
