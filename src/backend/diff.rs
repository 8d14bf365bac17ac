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
    // Every map: verdict maps and the mark maps of mixed runs.
    let names = new.objects.iter().filter_map(|o| match o {
        NfListObject::Map(m) => Some(m.name.as_ref()),
        _ => None,
    });
    for name in names {
        let before = old.map_elements(name);
        let after = new.map_elements(name);
        if before == after {
            continue;
        }
        // Elements compared by their JSON text (expressions are not hashable), so the
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

/// [`element_diff`] as an nft batch.
pub fn element_batch(old: &Plan, new: &Plan) -> Option<Batch<'static>> {
    Some(batch_of(element_diff(old, new)?))
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
