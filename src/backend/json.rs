//! Writing a batch for `nft -j -f -`, with the workarounds the `nftables` crate (0.6.3)
//! needs: it has no field for statements inside a dynamic-set add, no `verdict` map
//! type, and writes `accept`/`drop` map values as bare words (which nft takes for
//! strings). Map elements (tens of thousands) go straight to text.

use std::borrow::Cow;

use nftables::batch::Batch;
use nftables::expr::Expression;
use nftables::schema::{Element, Map, NfCmd, NfListObject, NfObject, Nftables};
use serde_json::Value;

use crate::compile::Plan;

/// The JSON for `nft -j -f -`, with the plan's dynamic-set statements attached to the
/// set statements that add to those sets (see [`Plan::dynset_stmts`]) and verdict maps
/// written as such (see [`Plan::verdict_maps`]).
///
/// Written command by command: map elements (tens of thousands) go straight to text;
/// only the few rules that need a dynamic-set statement attached pass through a JSON
/// tree.
pub fn payload(batch: Batch<'static>, plan: Option<&Plan>) -> String {
    payload_with(batch, &[], plan)
}

/// [`payload`] followed by an `add` of each of `adds` (plan objects, written from where
/// they are: a plan's maps hold tens of thousands of elements).
pub fn payload_with(
    batch: Batch<'static>,
    adds: &[&NfListObject<'static>],
    plan: Option<&Plan>,
) -> String {
    let nft: Nftables = batch.to_nftables();
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("{\"nftables\":[");
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(',');
        }
    };
    for obj in nft.objects.iter() {
        sep(&mut out);
        match obj {
            NfObject::CmdObject(NfCmd::Add(o)) => command_json(&mut out, "add", o, plan),
            NfObject::CmdObject(NfCmd::Delete(o)) => command_json(&mut out, "delete", o, plan),
            other => out.push_str(&serde_json::to_string(other).expect("nft command serializes")),
        }
    }
    for obj in adds {
        sep(&mut out);
        command_json(&mut out, "add", obj, plan);
    }
    out.push_str("]}");
    out
}

/// `{"WORD": OBJECT}`.
fn command_json(out: &mut String, word: &str, target: &NfListObject<'static>, plan: Option<&Plan>) {
    let generic = |out: &mut String| {
        out.push_str(&format!("{{\"{word}\":"));
        out.push_str(&serde_json::to_string(target).expect("nft object serializes"));
        out.push('}');
    };
    let Some(plan) = plan else {
        return generic(out);
    };
    let verdict_map = |name: &str| plan.verdict_maps.iter().any(|m| m == name);
    match target {
        NfListObject::Map(m) if verdict_map(&m.name) => {
            let mut v = serde_json::to_value(bare_map(m)).expect("map serializes");
            v["map"] = Value::String("verdict".into());
            // Every element counts what it matches (`status verbose`).
            if word == "add" {
                v["stmt"] = serde_json::json!([{ "counter": null }]);
            }
            let text = v.to_string();
            out.push_str(&format!("{{\"{word}\":{{\"map\":"));
            with_elements(out, &text, m.elem.as_deref().unwrap_or(&[]));
            out.push_str("}}");
        }
        NfListObject::Element(e) if verdict_map(&e.name) => {
            let bare = Element {
                family: e.family,
                table: Cow::Borrowed(&e.table),
                name: Cow::Borrowed(&e.name),
                elem: Cow::Borrowed(&[]),
            };
            let mut v = serde_json::to_value(&bare).expect("element serializes");
            if let Value::Object(o) = &mut v {
                o.remove("elem");
            }
            out.push_str(&format!("{{\"{word}\":{{\"element\":"));
            with_elements(out, &v.to_string(), &e.elem);
            out.push_str("}}");
        }
        NfListObject::Rule(_) if !plan.dynset_stmts.is_empty() => {
            let mut v = serde_json::to_value(target).expect("rule serializes");
            attach_dynset_stmts(&mut v, plan);
            out.push_str(&format!("{{\"{word}\":{v}}}"));
        }
        _ => generic(out),
    }
}

/// `object` (JSON text of an object) with an `elem` array of verdict-map elements
/// added: each `[key, verdict]`, `accept` and `drop` written as `{"accept": null}`
/// (the `nftables` crate writes them as bare words, which nft takes for strings).
fn with_elements(out: &mut String, object: &str, elems: &[Expression]) {
    let open = object.strip_suffix('}').unwrap_or(object);
    out.push_str(open);
    if !elems.is_empty() {
        if open.len() > 1 {
            out.push(',');
        }
        out.push_str("\"elem\":[");
        for (i, e) in elems.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            match e {
                Expression::List(kv) if kv.len() == 2 => {
                    out.push('[');
                    out.push_str(&serde_json::to_string(&kv[0]).expect("key serializes"));
                    out.push(',');
                    let v = serde_json::to_string(&kv[1]).expect("verdict serializes");
                    match v.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
                        Some(word) => out.push_str(&format!("{{\"{word}\":null}}")),
                        None => out.push_str(&v),
                    }
                    out.push(']');
                }
                other => out.push_str(&serde_json::to_string(other).expect("element serializes")),
            }
        }
        out.push(']');
    }
    out.push('}');
}

fn attach_dynset_stmts(v: &mut Value, plan: &Plan) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(set)) = map.get_mut("set") {
                let name = set.get("set").and_then(Value::as_str).map(String::from);
                if let Some(name) = name.and_then(|n| n.strip_prefix('@').map(String::from)) {
                    let stmts: Vec<Value> = plan
                        .dynset_stmts
                        .iter()
                        .filter(|(s, _)| *s == name)
                        .filter_map(|(_, st)| serde_json::to_value(st).ok())
                        .collect();
                    if !stmts.is_empty() {
                        set.insert("stmt".into(), Value::Array(stmts));
                    }
                }
            }
            for child in map.values_mut() {
                attach_dynset_stmts(child, plan);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| attach_dynset_stmts(i, plan)),
        _ => {}
    }
}

/// A map's description without its elements (borrowed).
fn bare_map<'p>(m: &'p Map<'static>) -> Map<'p> {
    Map {
        family: m.family,
        table: Cow::Borrowed(&m.table),
        name: Cow::Borrowed(&m.name),
        handle: m.handle,
        set_type: m.set_type.clone(),
        map: m.map.clone(),
        policy: m.policy,
        flags: m.flags.clone(),
        elem: None,
        timeout: m.timeout,
        gc_interval: m.gc_interval,
        size: m.size,
        comment: m.comment.as_deref().map(Cow::Borrowed),
    }
}
