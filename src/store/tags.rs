//! The counter tags: which user rule each counted kernel object of a plan stands for,
//! kept beside the policy so that `status verbose` need not compile the plan again to
//! add the kernel's counters up per rule (at 10,000 rules the compile is most of it).
//!
//! A plan is a function of the policy and of the program that compiles it, so the tags
//! are keyed by both: they are used only for the policy (by its id) and the program
//! they were made by (its version, and its executable's size and modification time:
//! a new build or an upgrade is a miss). The first line also holds a hash of the body (a torn
//! write or a hand edit makes them a miss, and the plan is compiled).
//!
//! One line per counted object, fields split by tabs:
//! `r CHAIN N TAG` (the Nth rule of a chain) and `e MAP KEY TAG` (a map element, its
//! key's bytes in hex, as the kernel holds them).

/// Version of the file's layout.
const LAYOUT: u32 = 1;

/// A map's name, and the key bytes and tag of each of its elements that stand for a
/// user rule.
pub type MapTags = (String, Vec<(Vec<u8>, String)>);

/// What the counters of a plan are added up by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterTags {
    /// (chain, rule number in it, tag) of each rule that stands for a user rule.
    pub rules: Vec<(String, usize, String)>,
    /// Map → (key bytes, tag) of each element that stands for a user rule.
    pub elements: Vec<MapTags>,
}

/// The key of the plan of a policy: its id and the program that compiles it (None
/// when the program's executable cannot be looked at: then no tags are kept).
pub fn key(policy_id: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
    Some(format!(
        "{} {}.{}.{} {policy_id}",
        env!("CARGO_PKG_VERSION"),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

fn header(key: &str, body: &str) -> String {
    format!(
        "rampart counter tags {LAYOUT} {key} {}",
        super::cache::hash_hex(body.as_bytes())
    )
}

/// A field that can go in a line (no separator in it).
fn plain(s: &str) -> bool {
    !s.is_empty() && !s.contains(['\t', '\n'])
}

/// The file's text, or None when a name or tag could not be written in it.
pub fn file_text(key: &str, tags: &CounterTags) -> Option<String> {
    use std::fmt::Write;
    let mut body = String::new();
    for (chain, n, tag) in &tags.rules {
        if !plain(chain) || !plain(tag) {
            return None;
        }
        let _ = writeln!(body, "r\t{chain}\t{n}\t{tag}");
    }
    for (map, keys) in &tags.elements {
        if !plain(map) {
            return None;
        }
        for (bytes, tag) in keys {
            if !plain(tag) {
                return None;
            }
            body.push_str("e\t");
            body.push_str(map);
            body.push('\t');
            crate::model::push_hex(&mut body, bytes);
            body.push('\t');
            body.push_str(tag);
            body.push('\n');
        }
    }
    Some(format!("{}\n{body}", header(key, &body)))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The tags in a file's bytes, if it is intact and made for `key`.
pub fn parse(bytes: &[u8], key: &str) -> Option<CounterTags> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (first, body) = text.split_once('\n')?;
    if first != header(key, body) {
        return None;
    }
    let mut tags = CounterTags::default();
    for line in body.lines() {
        let mut f = line.split('\t');
        let (kind, name, what, tag) = (f.next()?, f.next()?, f.next()?, f.next()?);
        if f.next().is_some() {
            return None;
        }
        match kind {
            "r" => tags
                .rules
                .push((name.to_string(), what.parse().ok()?, tag.to_string())),
            "e" => {
                let entry = (unhex(what)?, tag.to_string());
                match tags.elements.last_mut() {
                    Some((map, keys)) if map == name => keys.push(entry),
                    _ => tags.elements.push((name.to_string(), vec![entry])),
                }
            }
            _ => return None,
        }
    }
    Some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CounterTags {
        CounterTags {
            rules: vec![
                ("user_input".into(), 0, "a1b2".into()),
                ("user_input".into(), 3, "c3".into()),
            ],
            elements: vec![
                (
                    "rules_user_input_2_4h".into(),
                    vec![
                        (vec![0xc6, 0x13, 0, 7], "a1b2".into()),
                        (vec![], "d4".into()),
                    ],
                ),
                ("m2".into(), vec![(vec![0xff; 20], "e5".into())]),
            ],
        }
    }

    #[test]
    fn tags_read_back_as_written_for_their_key_only() {
        let k = key("0123456789abcdef0123456789abcdef").unwrap();
        let text = file_text(&k, &sample()).unwrap();
        assert_eq!(parse(text.as_bytes(), &k), Some(sample()));
        // Another policy or version: a miss.
        assert_eq!(parse(text.as_bytes(), &key("ffff").unwrap()), None);
        assert_eq!(parse(text.as_bytes(), "0.0.0 x"), None);
        // A torn or edited body: a miss.
        assert_eq!(parse(&text.as_bytes()[..text.len() - 3], &k), None);
        let edited = text.replace("\t3\t", "\t4\t");
        assert_ne!(edited, text);
        assert_eq!(parse(edited.as_bytes(), &k), None);
        // No plan's tags at all still reads back.
        let empty = file_text(&k, &CounterTags::default()).unwrap();
        assert_eq!(parse(empty.as_bytes(), &k), Some(CounterTags::default()));
    }

    #[test]
    fn a_name_with_a_separator_is_not_written() {
        let mut t = sample();
        t.rules[0].2 = "a\tb".into();
        assert_eq!(file_text("k", &t), None);
    }
}
