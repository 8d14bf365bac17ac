//! The element diff: the small transaction that changes only map elements.

use std::collections::HashSet;

use nftables::batch::Batch;
use nftables::expr::Expression;
use nftables::schema::{Element, NfListObject};

use crate::compile::{Plan, FAMILY, TABLE};

/// Elements of one map that go (`add` false) or come (`add` true).
#[derive(Debug, Clone, PartialEq)]
pub struct MapChange {
    pub map: String,
    pub add: bool,
    pub elems: Vec<Expression<'static>>,
}

/// The element changes that turn `old` into `new` when they differ only in map
/// elements, in the order they are to be applied (a map's old elements go before its
/// new ones come: a changed value for the same key). None when the plans differ in
/// anything else (then the table is rebuilt).
pub fn element_diff(old: &Plan, new: &Plan) -> Option<Vec<MapChange>> {
    if !old.same_skeleton(new) || old.dynset_stmts != new.dynset_stmts {
        return None;
    }
    let mut out = Vec::new();
    // Every map: verdict maps and the mark maps of mixed runs. The plans have the
    // same skeleton, so the same maps in the same order.
    for ((name, before), (_, after)) in maps_of(old).into_iter().zip(maps_of(new)) {
        // What both lists start and end with is in both (a map's elements are
        // unique): an appended or deleted rule leaves a few elements between, an
        // unchanged map none.
        let start = before.iter().zip(after).take_while(|(a, b)| a == b).count();
        let end = before[start..]
            .iter()
            .rev()
            .zip(after[start..].iter().rev())
            .take_while(|(a, b)| a == b)
            .count();
        let before = &before[start..before.len() - end];
        let after = &after[start..after.len() - end];
        // The rest compared by their JSON text (expressions are not hashable), so the
        // diff stays linear at tens of thousands of elements.
        let text = |e: &Expression<'static>| serde_json::to_string(e).unwrap_or_default();
        let before_text: Vec<String> = before.iter().map(text).collect();
        let after_text: Vec<String> = after.iter().map(text).collect();
        let before_keys: HashSet<&str> = before_text.iter().map(String::as_str).collect();
        let after_keys: HashSet<&str> = after_text.iter().map(String::as_str).collect();
        let only = |elems: &[Expression<'static>], texts: &[String], other: &HashSet<&str>| {
            elems
                .iter()
                .zip(texts)
                .filter(|(_, t)| !other.contains(t.as_str()))
                .map(|(e, _)| e.clone())
                .collect::<Vec<_>>()
        };
        for (add, elems) in [
            (false, only(before, &before_text, &after_keys)),
            (true, only(after, &after_text, &before_keys)),
        ] {
            if !elems.is_empty() {
                out.push(MapChange {
                    map: name.to_string(),
                    add,
                    elems,
                });
            }
        }
    }
    Some(out)
}

/// A plan's maps, in order: each one's name and elements.
fn maps_of(plan: &Plan) -> Vec<(&str, &[Expression<'static>])> {
    plan.objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Map(m) => Some((m.name.as_ref(), m.elem.as_deref().unwrap_or(&[]))),
            _ => None,
        })
        .collect()
}

/// The nft batch of element changes.
pub fn batch_of(changes: Vec<MapChange>) -> Batch<'static> {
    let mut batch = Batch::new();
    for c in changes {
        let element = NfListObject::Element(Element {
            family: FAMILY,
            table: TABLE.into(),
            name: c.map.into(),
            elem: c.elems.into(),
        });
        if c.add {
            batch.add(element);
        } else {
            batch.delete(element);
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::grammar::parse_rule;
    use crate::model::{Action, Policy};

    fn policy(rules: &[(Action, String)]) -> Policy {
        let mut p = Policy {
            enabled: true,
            ..Policy::default()
        };
        for (action, text) in rules {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(*action, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        p
    }

    /// Every element of `new`'s maps, and of `old`'s, as (map, text).
    fn elements(plan: &Plan) -> HashSet<(String, String)> {
        plan.objects
            .iter()
            .filter_map(|o| match o {
                NfListObject::Map(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| {
                m.elem
                    .as_deref()
                    .unwrap_or(&[])
                    .iter()
                    .map(|e| (m.name.to_string(), serde_json::to_string(e).unwrap()))
            })
            .collect()
    }

    #[test]
    fn the_diff_turns_old_elements_into_new_ones() {
        let hosts: Vec<(Action, String)> = (1..=40)
            .map(|i| {
                let action = if i % 7 == 0 {
                    Action::Deny
                } else {
                    Action::Allow
                };
                (
                    action,
                    format!("proto tcp from 198.18.0.{i} to any port {}", 1000 + i),
                )
            })
            .collect();
        let mut edits: Vec<Vec<(Action, String)>> = Vec::new();
        let mut appended = hosts.clone();
        appended.push((
            Action::Allow,
            "proto tcp from 198.18.1.1 to any port 7".into(),
        ));
        edits.push(appended);
        let mut deleted = hosts.clone();
        deleted.remove(20);
        edits.push(deleted);
        let mut changed = hosts.clone();
        changed[3].0 = Action::Deny;
        changed[30].0 = Action::Deny;
        edits.push(changed);
        let mut both_ends = hosts.clone();
        both_ends.remove(0);
        both_ends.push((
            Action::Allow,
            "proto tcp from 198.18.1.2 to any port 8".into(),
        ));
        edits.push(both_ends);
        let old = compile(&policy(&hosts));
        for edit in edits {
            let new = compile(&policy(&edit));
            let changes = element_diff(&old, &new).expect("an element-only change");
            let mut got = elements(&old);
            for c in &changes {
                for e in &c.elems {
                    let item = (c.map.clone(), serde_json::to_string(e).unwrap());
                    if c.add {
                        assert!(got.insert(item), "added twice");
                    } else {
                        assert!(got.remove(&item), "deleted but not there");
                    }
                }
            }
            assert_eq!(got, elements(&new));
            let moved: usize = changes.iter().map(|c| c.elems.len()).sum();
            assert!(moved <= 4, "only the elements that changed: {moved}");
        }
    }
}
