//! The only code that talks to the kernel: applies a plan through nft's JSON API in one
//! transaction, and reads rampart's own table back. No other table is ever touched.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use nftables::batch::Batch;
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, Nftables, Set, Table,
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
    /// Run `nft -j ARGS` and parse its JSON.
    fn list(&self, args: &[&str]) -> Result<Value, BackendError> {
        let out = Command::new(NFT)
            .arg("-j")
            .args(args)
            .output()
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
        for (args, key) in [
            (&["list", "chains", "inet"][..], "chain"),
            (&["-t", "list", "sets", "inet"][..], "set"),
            (&["-t", "list", "maps", "inet"][..], "map"),
        ] {
            let v = self.list(args)?;
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
        Ok((!t.chains.is_empty()).then_some(t))
    }

    /// Run `nft -j -f -` with the batch as one transaction; nft's complaint, if any,
    /// becomes one line.
    fn run(&self, batch: Batch, plan: Option<&Plan>) -> Result<(), BackendError> {
        let payload = payload(batch, plan);
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
/// set statements that add to those sets (see [`Plan::dynset_stmts`]).
pub fn payload(batch: Batch, plan: Option<&Plan>) -> String {
    let nft: Nftables = batch.to_nftables();
    let mut v = serde_json::to_value(&nft).expect("nft batch serializes");
    if let Some(plan) = plan {
        if !plan.dynset_stmts.is_empty() {
            attach_dynset_stmts(&mut v, plan);
        }
        if !plan.verdict_maps.is_empty() {
            fix_verdict_maps(&mut v, plan);
        }
    }
    v.to_string()
}

/// In every map or element object naming one of the plan's verdict maps: the map type
/// becomes `"verdict"`, and bare `"accept"`/`"drop"` values become `{"accept": null}`.
fn fix_verdict_maps(v: &mut Value, plan: &Plan) {
    match v {
        Value::Object(map) => {
            for key in ["map", "element"] {
                let Some(Value::Object(obj)) = map.get_mut(key) else {
                    continue;
                };
                let named = obj
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| plan.verdict_maps.iter().any(|m| m == n));
                if !named {
                    continue;
                }
                if key == "map" {
                    obj.insert("map".into(), Value::String("verdict".into()));
                }
                if let Some(Value::Array(elems)) = obj.get_mut("elem") {
                    for pair in elems.iter_mut() {
                        if let Some(Value::Array(kv)) = Some(pair) {
                            if let Some(Value::String(word)) = kv.get(1).cloned() {
                                kv[1] = serde_json::json!({ word: null });
                            }
                        }
                    }
                }
            }
            for child in map.values_mut() {
                fix_verdict_maps(child, plan);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| fix_verdict_maps(i, plan)),
        _ => {}
    }
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
pub fn transaction(current: Option<&KernelTable>, plan: &Plan) -> Batch<'static> {
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
    for obj in &plan.objects {
        let skip = matches!(obj, NfListObject::Set(s)
            if current.is_some_and(|c| c.sets.iter().any(|n| n == &s.name)) && kept_state(&s.name));
        if !skip {
            batch.add(obj.clone());
        }
    }
    batch
}

impl Backend for NftBackend {
    fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let t = Timer::start();
        let current = self.read()?;
        t.lap("read table");
        self.run(transaction(current.as_ref(), plan), Some(plan))?;
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
            if self.run(batch, Some(plan)).is_ok() {
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
        self.run(batch, None)
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
    use crate::model::Policy;

    #[test]
    fn fresh_apply_only_adds() {
        let plan = compile(&Policy::default());
        let batch = transaction(None, &plan);
        let json = serde_json::to_value(batch.to_nftables()).unwrap();
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
        let json = serde_json::to_value(transaction(Some(&cur), &plan).to_nftables()).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        assert!(cmds[1].get("flush").is_some());
        assert_eq!(cmds[2]["delete"]["chain"]["name"], "input");
        assert_eq!(cmds[3]["delete"]["chain"]["name"], "old");
        // the state set is not in the plan, so it goes too
        assert_eq!(cmds[4]["delete"]["set"]["name"], "state_x");
    }
}
