//! The only code that talks to the kernel: applies a plan through nft's JSON API in one
//! transaction, and reads rampart's own table back. No other table is ever touched.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use nftables::batch::Batch;
use std::borrow::Cow;

use nftables::expr::Expression;
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, NfObject, Nftables, Set, Table,
};
use serde_json::Value;
use thiserror::Error;

use crate::compile::{Plan, FAMILY, STATE_SET_PREFIX, TABLE};

/// The `nft` program.
const NFT: &str = "nft";

/// Backend failures.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot run nft (is the nftables package installed?): {0}")]
    Exec(String),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("the kernel's table does not match the plan after applying it: {0}")]
    Verify(String),
    #[error("cannot read rampart's table from nft: {0}")]
    Read(String),
}

/// What a backend must do. Behind a trait so a netlink backend can come later.
pub trait Backend {
    /// Replace rampart's table by the plan, atomically, keeping the named state sets
    /// (and their elements) that the plan declares again unchanged.
    fn apply(&self, plan: &Plan) -> Result<(), BackendError>;
    /// Bring the kernel from `previous` (what was last applied) to `plan`: only the map
    /// elements that changed when that is all that changed, else a full [`apply`].
    ///
    /// [`apply`]: Backend::apply
    fn update(&self, previous: &Plan, plan: &Plan) -> Result<(), BackendError>;
    /// Remove rampart's table, if present.
    fn remove(&self) -> Result<(), BackendError>;
    /// Whether rampart's table is loaded.
    fn is_loaded(&self) -> Result<bool, BackendError>;
    /// rampart's table as nft text (empty if not loaded).
    fn list_text(&self) -> Result<String, BackendError>;
}

/// Phase timings on stderr when `RAMPART_TIMING` is set (for benchmarks).
pub struct Timer(Option<Instant>);

impl Timer {
    /// Start timing if `RAMPART_TIMING` is set.
    pub fn start() -> Timer {
        Timer(std::env::var_os("RAMPART_TIMING").map(|_| Instant::now()))
    }

    /// Print the time since start, labelled.
    pub fn lap(&self, what: &str) {
        if let Some(t) = self.0 {
            eprintln!("timing: {what}: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
        }
    }
}

/// The nft JSON backend (`nft -j -f -`).
#[derive(Debug, Default, Clone, Copy)]
pub struct NftBackend;

/// What exists of rampart's table in the kernel.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelTable {
    /// Chain names.
    pub chains: Vec<String>,
    /// Set names.
    pub sets: Vec<String>,
    /// Map names.
    pub maps: Vec<String>,
}

impl NftBackend {
    /// Start `nft -j ARGS`; [`NftBackend::parse`] takes its output.
    fn spawn(&self, args: &[&str]) -> Result<std::process::Child, BackendError> {
        Command::new(NFT)
            .arg("-j")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BackendError::Exec(e.to_string()))
    }

    /// Wait for an nft listing and parse its JSON.
    fn parse(&self, child: std::process::Child) -> Result<Value, BackendError> {
        let out = child
            .wait_with_output()
            .map_err(|e| BackendError::Exec(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(BackendError::Read(err.trim().replace('\n', " | ")));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| BackendError::Read(e.to_string()))
    }

    /// The names of rampart's chains, sets and maps (None if the table is absent).
    /// Listed per kind, tersely: listing the whole table costs time in proportion to
    /// its rules, these do not.
    pub fn read(&self) -> Result<Option<KernelTable>, BackendError> {
        let mut t = KernelTable::default();
        // The three listings run side by side.
        let children = [
            (&["list", "chains", "inet"][..], "chain"),
            (&["-t", "list", "sets", "inet"][..], "set"),
            (&["-t", "list", "maps", "inet"][..], "map"),
        ]
        .map(|(args, key)| (self.spawn(args), key));
        for (child, key) in children {
            let v = self.parse(child?)?;
            for item in v
                .get("nftables")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(obj) = item.get(key) else { continue };
                if obj.get("table").and_then(Value::as_str) != Some(TABLE) {
                    continue;
                }
                let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
                match key {
                    "chain" => t.chains.push(name.to_string()),
                    "set" => t.sets.push(name.to_string()),
                    _ => t.maps.push(name.to_string()),
                }
            }
        }
        let empty = t.chains.is_empty() && t.sets.is_empty() && t.maps.is_empty();
        Ok((!empty).then_some(t))
    }

    /// Run `nft -j -f -` with the batch as one transaction; nft's complaint, if any,
    /// becomes one line.
    fn run(
        &self,
        batch: Batch<'static>,
        adds: &[&NfListObject<'static>],
        plan: Option<&Plan>,
    ) -> Result<(), BackendError> {
        let t = Timer::start();
        let payload = payload_with(batch, adds, plan);
        t.lap("payload");
        let mut child = Command::new(NFT)
            .args(["-j", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| BackendError::Exec(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(payload.as_bytes())
                .map_err(|e| BackendError::Exec(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| BackendError::Exec(e.to_string()))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let msg: Vec<&str> = err
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(BackendError::Refused(msg.join(" | ")))
    }
}

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

/// The small transaction that turns `old` into `new` when they differ only in map
/// elements: delete the elements that went, add the ones that came. None when the
/// plans differ in anything else (then the table is rebuilt).
pub fn element_batch(old: &Plan, new: &Plan) -> Option<Batch<'static>> {
    if !old.same_skeleton(new) || old.dynset_stmts != new.dynset_stmts {
        return None;
    }
    let mut batch = Batch::new();
    for name in &new.verdict_maps {
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
                name: name.clone().into(),
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

fn table() -> Table<'static> {
    Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }
}

/// Build the transaction that turns `current` (what the kernel has) into `plan`.
///
/// The table is flushed and its chains and sets deleted and re-added, all in one batch,
/// except the sets the plan declares again: those are left in place with their
/// elements, which is how limit state survives a reload.
pub fn transaction<'p>(
    current: Option<&KernelTable>,
    plan: &'p Plan,
) -> (Batch<'static>, Vec<&'p NfListObject<'static>>) {
    let mut batch = Batch::new();
    let planned_sets: Vec<&str> = plan
        .objects
        .iter()
        .filter_map(|o| match o {
            NfListObject::Set(s) => Some(s.name.as_ref()),
            _ => None,
        })
        .collect();
    let kept_state =
        |name: &str| name.starts_with(STATE_SET_PREFIX) && planned_sets.contains(&name);
    if let Some(cur) = current {
        batch.add(NfListObject::Table(table()));
        batch.add_cmd(NfCmd::Flush(FlushObject::Table(table())));
        // Maps first: their elements may jump to chains (goto reject_packet).
        for map in &cur.maps {
            batch.delete(NfListObject::Map(Box::new(Map {
                family: FAMILY,
                table: TABLE.into(),
                name: map.clone().into(),
                ..Map::default()
            })));
        }
        for chain in &cur.chains {
            batch.delete(NfListObject::Chain(Chain {
                family: FAMILY,
                table: TABLE.into(),
                name: chain.clone().into(),
                ..Chain::default()
            }));
        }
        for set in cur.sets.iter().filter(|s| !kept_state(s)) {
            batch.delete(NfListObject::Set(Box::new(Set {
                family: FAMILY,
                table: TABLE.into(),
                name: set.clone().into(),
                ..Set::default()
            })));
        }
    }
    let adds = plan
        .objects
        .iter()
        .filter(|obj| {
            !matches!(obj, NfListObject::Set(s)
            if current.is_some_and(|c| c.sets.iter().any(|n| n == &s.name)) && kept_state(&s.name))
        })
        .collect();
    (batch, adds)
}

impl Backend for NftBackend {
    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let t = Timer::start();
        let current = self.read()?;
        t.lap("read table");
        let (batch, adds) = transaction(current.as_ref(), plan);
        self.run(batch, &adds, Some(plan))?;
        t.lap("nft transaction");
        // Verify: the kernel now holds exactly the planned chains, sets and maps. (The
        // transaction is atomic, so their rules are there; listing rules back costs
        // time in proportion to the whole table.)
        let now = self
            .read()?
            .ok_or_else(|| BackendError::Verify("table is missing".into()))?;
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        let names = |pick: fn(&NfListObject) -> Option<String>| {
            sorted(plan.objects.iter().filter_map(pick).collect())
        };
        let want = (
            names(|o| match o {
                NfListObject::Chain(c) => Some(c.name.to_string()),
                _ => None,
            }),
            names(|o| match o {
                NfListObject::Set(s) => Some(s.name.to_string()),
                _ => None,
            }),
            names(|o| match o {
                NfListObject::Map(m) => Some(m.name.to_string()),
                _ => None,
            }),
        );
        let have = (sorted(now.chains), sorted(now.sets), sorted(now.maps));
        if have != want {
            return Err(BackendError::Verify(format!(
                "expected chains, sets, maps {want:?}, found {have:?}"
            )));
        }
        t.lap("verify");
        Ok(())
    }

    fn update(&self, previous: &Plan, plan: &Plan) -> Result<(), BackendError> {
        let t = Timer::start();
        let batch = element_batch(previous, plan);
        t.lap("element diff");
        if let Some(batch) = batch {
            let nft_batch = batch.clone().to_nftables();
            if nft_batch.objects.is_empty() {
                return Ok(());
            }
            // If the kernel does not hold `previous` (someone changed the table), the
            // element transaction fails as a whole and the table is rebuilt instead.
            if self.run(batch, &[], Some(plan)).is_ok() {
                t.lap("element transaction");
                return Ok(());
            }
        }
        self.apply(plan)
    }

    fn remove(&self) -> Result<(), BackendError> {
        if self.read()?.is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(table()));
        self.run(batch, &[], None)
    }

    fn is_loaded(&self) -> Result<bool, BackendError> {
        Ok(self.read()?.is_some())
    }

    fn list_text(&self) -> Result<String, BackendError> {
        let out = Command::new(NFT)
            .args(["list", "table", "inet", TABLE])
            .output()
            .map_err(|e| BackendError::Exec(e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::grammar::parse_rule;
    use crate::model::{Action, Policy};

    fn json(current: Option<&KernelTable>, plan: &Plan) -> Value {
        let (batch, adds) = transaction(current, plan);
        serde_json::from_str(&payload_with(batch, &adds, Some(plan))).unwrap()
    }

    #[test]
    fn fresh_apply_only_adds() {
        let plan = compile(&Policy::default());
        let json = json(None, &plan);
        let cmds = json["nftables"].as_array().unwrap();
        assert!(cmds.iter().all(|c| c.get("add").is_some()));
        assert_eq!(cmds.len(), plan.objects.len());
    }

    #[test]
    fn reapply_flushes_and_deletes_first() {
        let plan = compile(&Policy::default());
        let cur = KernelTable {
            chains: vec!["input".into(), "old".into()],
            sets: vec!["state_x".into()],
            maps: vec![],
        };
        let json = json(Some(&cur), &plan);
        let cmds = json["nftables"].as_array().unwrap();
        assert!(cmds[1].get("flush").is_some());
        assert_eq!(cmds[2]["delete"]["chain"]["name"], "input");
        assert_eq!(cmds[3]["delete"]["chain"]["name"], "old");
        // the state set is not in the plan, so it goes too
        assert_eq!(cmds[4]["delete"]["set"]["name"], "state_x");
    }

    #[test]
    fn verdict_maps_are_written_as_such() {
        let mut p = Policy::default();
        for (action, text) in [
            (Action::Allow, "22/tcp"),
            (Action::Deny, "from 198.18.0.0/24"),
        ] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(action, &words).unwrap().rules);
        }
        let plan = compile(&p);
        let json = json(None, &plan);
        let maps: Vec<&Value> = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("map"))
            .collect();
        assert!(!maps.is_empty());
        assert!(maps.iter().all(|m| m["map"] == "verdict"));
        let elems: Vec<&Value> = maps
            .iter()
            .filter_map(|m| m.get("elem"))
            .flat_map(|e| e.as_array().unwrap())
            .collect();
        assert!(
            elems.contains(&&serde_json::json!([{"concat": ["tcp", 22]}, {"accept": null}])),
            "{elems:?}"
        );
        assert!(elems.contains(&&serde_json::json!([
            {"prefix": {"addr": "198.18.0.0", "len": 24}},
            {"drop": null}
        ])));
    }
}
