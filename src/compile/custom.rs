//! Custom rules: `before.nft` and `after.nft` in the config directory, in nft's own
//! language, run where UFW's before.rules and after.rules are (around the user rules).
//!
//! A snippet declares plain chains named `input`, `output` and `forward`, and any
//! sets and maps they use. nft reads it inside a table of its own in a throwaway
//! network namespace (the backend's `read_snippet`); what it lists back is checked
//! here and renamed into rampart's table: chain `input` of `before.nft` becomes
//! `custom_before_input`, set `blocked` becomes `custom_before_blocked`. The result is
//! added in the same transaction as everything else.

use nftables::schema::NfListObject;
use serde_json::Value;

use super::TABLE;

/// The table a snippet is read into (only ever in a throwaway network namespace).
pub const SNIPPET_TABLE: &str = "rampart_snippet";

/// What the names of custom chains, sets and maps start with.
pub const CUSTOM_PREFIX: &str = "custom_";

/// The chains a snippet may write: those of the base chains it runs in.
const HOOKS: [&str; 3] = ["input", "output", "forward"];

/// Which file, and so where its rules run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `before.nft`: after UFW's before rules, before the user rules.
    Before,
    /// `after.nft`: after the user rules and UFW's after rules, before logging and the
    /// default policy.
    After,
}

impl Part {
    /// Both, in the order they run.
    pub const ALL: [Part; 2] = [Part::Before, Part::After];

    fn word(self) -> &'static str {
        match self {
            Part::Before => "before",
            Part::After => "after",
        }
    }

    /// The file's name in the config directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Part::Before => "before.nft",
            Part::After => "after.nft",
        }
    }

    /// The name in rampart's table of the snippet's chain, set or map `name`.
    pub fn name(self, name: &str) -> String {
        format!("{CUSTOM_PREFIX}{}_{name}", self.word())
    }
}

/// The custom rules of the config directory, ready for rampart's table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Custom {
    /// Per file: its sets and maps, chains, then rules, renamed.
    parts: Vec<(Part, Vec<NfListObject<'static>>)>,
}

/// The kind and body of one listed object (`{"rule": {...}}`).
fn kind_of(item: &Value) -> Option<(&str, &Value)> {
    let map = item.as_object()?;
    let (k, v) = map.iter().next()?;
    (map.len() == 1).then_some((k.as_str(), v))
}

/// Replace set references (`"@name"`) to the snippet's own sets and maps; refuse
/// jumps (a snippet's rules stay in their chain).
fn rewrite(v: &mut Value, part: Part, named: &[String]) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix('@') {
                if named.iter().any(|n| n == name) {
                    *s = format!("@{}", part.name(name));
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                rewrite(i, part, named)?;
            }
        }
        Value::Object(map) => {
            if map.contains_key("jump") || map.contains_key("goto") {
                return Err("jump and goto are not supported: write the rules in the chain".into());
            }
            for (_, child) in map.iter_mut() {
                rewrite(child, part, named)?;
            }
        }
        _ => {}
    }
    Ok(())
}

impl Custom {
    /// Whether there are no custom rules.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Whether `part` writes base chain `hook` (`input`, `output`, `forward`).
    pub(super) fn writes(&self, part: Part, hook: &str) -> bool {
        let name = part.name(hook);
        self.parts.iter().any(|(p, objs)| {
            *p == part
                && objs
                    .iter()
                    .any(|o| matches!(o, NfListObject::Chain(c) if c.name == name))
        })
    }

    /// The objects of every part, in the order they are to be added.
    pub(super) fn objects(&self) -> impl Iterator<Item = &NfListObject<'static>> {
        self.parts.iter().flat_map(|(_, objs)| objs)
    }

    /// Add the snippet of `part` from nft's JSON listing of its table. `Err`: what is
    /// wrong, for the user (the caller names the file).
    pub fn add(&mut self, part: Part, listing: &Value) -> Result<(), String> {
        let items = listing
            .get("nftables")
            .and_then(Value::as_array)
            .ok_or("nft listed no table")?;
        let named: Vec<String> = items
            .iter()
            .filter_map(kind_of)
            .filter(|(k, _)| matches!(*k, "set" | "map"))
            .filter_map(|(_, v)| v.get("name")?.as_str().map(String::from))
            .collect();
        let (mut declared, mut chains, mut rules) = (Vec::new(), Vec::new(), Vec::new());
        let mut per_chain = std::collections::HashMap::<String, usize>::new();
        for item in items {
            let Some((kind, body)) = kind_of(item) else {
                continue;
            };
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let name = name.as_str();
            let mut body = body.clone();
            let where_ = match kind {
                "metainfo" | "table" => continue,
                "chain" => {
                    if !HOOKS.contains(&name) {
                        return Err(format!(
                            "chain '{name}': a snippet writes only chains input, output and forward"
                        ));
                    }
                    if body.get("hook").is_some() || body.get("type").is_some() {
                        return Err(format!(
                            "chain '{name}' has a type or hook: declare it plain ('chain {name} {{ ... }}'), rampart hooks it"
                        ));
                    }
                    body["name"] = part.name(name).into();
                    format!("chain '{name}'")
                }
                "set" | "map" => {
                    body["name"] = part.name(name).into();
                    let at = format!("{kind} '{name}'");
                    // A verdict map's elements may not jump either.
                    if let Some(elem) = body.get_mut("elem") {
                        rewrite(elem, part, &named).map_err(|e| format!("{at}: {e}"))?;
                    }
                    at
                }
                "rule" => {
                    let chain = body
                        .get("chain")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let n = per_chain.entry(chain.clone()).or_default();
                    *n += 1;
                    let at = format!("rule {n} of chain '{chain}'");
                    if let Some(expr) = body.get_mut("expr") {
                        rewrite(expr, part, &named).map_err(|e| format!("{at}: {e}"))?;
                    }
                    body["chain"] = part.name(&chain).into();
                    at
                }
                other => {
                    return Err(format!(
                        "'{other}' objects are not supported in a snippet: use chains, rules, sets and maps"
                    ))
                }
            };
            let fields = body.as_object_mut().expect("listed objects are objects");
            fields.remove("handle");
            fields.insert("table".into(), TABLE.into());
            let item = serde_json::json!({ kind: body });
            let obj: NfListObject<'static> = serde_json::from_value(item.clone())
                .map_err(|e| format!("{where_}: rampart cannot carry it ({e})"))?;
            // What the typed object writes back must be what nft listed: nothing of a
            // rule may be lost on the way.
            if serde_json::to_value(&obj).ok().as_ref() != Some(&item) {
                return Err(format!(
                    "{where_}: rampart cannot carry it exactly (a statement it does not know)"
                ));
            }
            match kind {
                "set" | "map" => declared.push(obj),
                "chain" => chains.push(obj),
                _ => rules.push(obj),
            }
        }
        declared.extend(chains);
        declared.extend(rules);
        if !declared.is_empty() {
            self.parts.push((part, declared));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listing(objects: Vec<Value>) -> Value {
        let mut all =
            vec![json!({"table": {"family": "inet", "name": SNIPPET_TABLE, "handle": 1}})];
        all.extend(objects);
        json!({ "nftables": all })
    }

    fn chain(name: &str) -> Value {
        json!({"chain": {"family": "inet", "table": SNIPPET_TABLE, "name": name, "handle": 2}})
    }

    fn rule(chain: &str, expr: Value) -> Value {
        json!({"rule": {"family": "inet", "table": SNIPPET_TABLE, "chain": chain, "handle": 3, "expr": expr}})
    }

    #[test]
    fn names_move_into_rampart_s_table_and_references_follow() {
        let set = json!({"set": {"family": "inet", "table": SNIPPET_TABLE, "name": "blocked",
            "type": "ipv4_addr", "handle": 4}});
        let drop_blocked = json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": "@blocked"}},
            {"drop": null}
        ]);
        let mut c = Custom::default();
        c.add(
            Part::Before,
            &listing(vec![set, chain("input"), rule("input", drop_blocked)]),
        )
        .unwrap();
        assert!(c.writes(Part::Before, "input"));
        assert!(!c.writes(Part::After, "input") && !c.writes(Part::Before, "output"));
        let text = serde_json::to_string(&c.objects().collect::<Vec<_>>()).unwrap();
        assert!(text.contains(r#""name":"custom_before_blocked""#), "{text}");
        assert!(
            text.contains(r#""right":"@custom_before_blocked""#),
            "{text}"
        );
        assert!(text.contains(r#""chain":"custom_before_input""#), "{text}");
        assert!(
            !text.contains(SNIPPET_TABLE) && !text.contains("handle"),
            "{text}"
        );
    }

    #[test]
    fn what_cannot_be_carried_exactly_is_refused() {
        let refused = |objects: Vec<Value>| {
            Custom::default()
                .add(Part::After, &listing(objects))
                .unwrap_err()
        };
        assert!(refused(vec![chain("mine")]).starts_with("chain 'mine': "));
        let jump = json!([{"jump": {"target": "input"}}]);
        assert!(refused(vec![chain("input"), rule("input", jump)])
            .contains("jump and goto are not supported"));
        // A statement the JSON types do not know, and a field they would drop.
        let unknown = json!([{"frobnicate": {"level": 3}}]);
        let e = refused(vec![chain("input"), rule("input", unknown)]);
        assert!(
            e.starts_with("rule 1 of chain 'input': rampart cannot carry it"),
            "{e}"
        );
        let extra = json!([{"counter": {"packets": 0, "bytes": 0, "frobs": 1}}]);
        let e = refused(vec![chain("input"), rule("input", extra)]);
        assert!(
            e.starts_with("rule 1 of chain 'input': rampart cannot carry it"),
            "{e}"
        );
        let ct = json!({"ct helper": {"family": "inet", "table": SNIPPET_TABLE, "name": "h"}});
        assert!(refused(vec![ct]).contains("objects are not supported"));
    }
}
