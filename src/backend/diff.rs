//! The element diff: the small transaction that changes only map elements.

use std::collections::HashSet;

use nftables::batch::Batch;
use nftables::schema::{Element, NfListObject};

use crate::compile::{Plan, FAMILY, TABLE};

/// The small transaction that turns `old` into `new` when they differ only in map
/// elements: delete the elements that went, add the ones that came. None when the
/// plans differ in anything else (then the table is rebuilt).
pub fn element_batch(old: &Plan, new: &Plan) -> Option<Batch<'static>> {
    if !old.same_skeleton(new) || old.dynset_stmts != new.dynset_stmts {
        return None;
    }
    let mut batch = Batch::new();
    // Every map: verdict maps and the mark maps of mixed runs.
    let names: Vec<&str> = new
        .objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Map(m) => Some(m.name.as_ref()),
            _ => None,
        })
        .collect();
    for name in names {
        let before = old.map_elements(name);
        let after = new.map_elements(name);
        if before == after {
            continue;
        }
        // Elements compared by their JSON text (expressions are not hashable), so the
        // diff stays linear at tens of thousands of elements.
        let text =
            |e: &nftables::expr::Expression<'static>| serde_json::to_string(e).unwrap_or_default();
        let before_text: Vec<String> = before.iter().map(text).collect();
        let after_text: Vec<String> = after.iter().map(text).collect();
        let before_keys: HashSet<&str> = before_text.iter().map(String::as_str).collect();
        let after_keys: HashSet<&str> = after_text.iter().map(String::as_str).collect();
        let gone: Vec<_> = before
            .iter()
            .zip(&before_text)
            .filter(|(_, t)| !after_keys.contains(t.as_str()))
            .map(|(e, _)| e.clone())
            .collect();
        let came: Vec<_> = after
            .iter()
            .zip(&after_text)
            .filter(|(_, t)| !before_keys.contains(t.as_str()))
            .map(|(e, _)| e.clone())
            .collect();
        // A changed verdict for the same key: the old element must go first.
        let element = |elem: Vec<nftables::expr::Expression<'static>>| {
            NfListObject::Element(Element {
                family: FAMILY,
                table: TABLE.into(),
                name: name.to_string().into(),
                elem: elem.into(),
            })
        };
        if !gone.is_empty() {
            batch.delete(element(gone));
        }
        if !came.is_empty() {
            batch.add(element(came));
        }
    }
    Some(batch)
}
