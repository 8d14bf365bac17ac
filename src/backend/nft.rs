//! The nft backend: `nft -j` through a pipe, every call bounded by a timeout, each
//! apply one transaction that is then verified.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nftables::batch::Batch;
use nftables::expr::{Elem, Expression, NamedExpression};
use nftables::schema::{
    Chain, Element, FlushObject, Map, NfCmd, NfListObject, Set, SetFlag, SetType, SetTypeValue,
    Table,
};
use serde_json::Value;
use wait_timeout::ChildExt;

use crate::compile::{
    Plan, FAMILY, LIMIT_CHAIN_PREFIX, LIMIT_OVER_PREFIX, STATE_SET_PREFIX, TABLE,
};

use super::netlink::{self, ElementChange, ElementData, ElementOp, KeyLayout};
use super::{
    batch_of, element_diff, payload_with, Backend, BackendError, KernelState, MapChange, Stamp,
    StateReading, Timer, STAMP_PRUNE_AT, STAMP_SET,
};

/// The `nft` program (found on `PATH`).
const NFT: &str = "nft";
/// How long one nft call may take unless `RAMPART_NFT_TIMEOUT` (seconds) says otherwise.
pub const DEFAULT_NFT_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable that sets the nft timeout in seconds.
pub const NFT_TIMEOUT_ENV: &str = "RAMPART_NFT_TIMEOUT";
/// Environment variable that, set to `1`, sends element-only changes, the stamp's
/// reading and the limits' state through nft too, as they went before rampart wrote
/// and read them over netlink (to compare the two, and to test the nft path).
pub const NFT_ELEMENTS_ENV: &str = "RAMPART_NFT_ELEMENTS";

/// Whether element changes, stamps and limits go through nft (see [`NFT_ELEMENTS_ENV`]).
fn nft_elements() -> bool {
    std::env::var_os(NFT_ELEMENTS_ENV).is_some_and(|v| v == "1")
}

/// The nft timeout in force.
pub fn nft_timeout() -> Duration {
    std::env::var(NFT_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_NFT_TIMEOUT)
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

/// A running nft, with its output being read.
struct Running {
    child: std::process::Child,
    out: std::thread::JoinHandle<Vec<u8>>,
    err: std::thread::JoinHandle<Vec<u8>>,
}

/// Start `nft ARGS`, feeding it `input`.
fn spawn(args: &[&str], input: Option<&[u8]>) -> Result<Running, BackendError> {
    spawn_program(NFT, args, input)
}

/// Start `PROGRAM ARGS`, feeding it `input` (stopped at the nft timeout too).
fn spawn_program(
    program: &str,
    args: &[&str],
    input: Option<&[u8]>,
) -> Result<Running, BackendError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BackendError::Exec)?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        // nft that stops reading has failed; its stderr says why.
        let _ = stdin.write_all(input);
    }
    Ok(Running { child, out, err })
}

impl Running {
    /// Wait for nft, killing it at the timeout.
    fn finish(mut self) -> Result<Output, BackendError> {
        let timeout = nft_timeout();
        let status = match self
            .child
            .wait_timeout(timeout)
            .map_err(BackendError::Exec)?
        {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(BackendError::Timeout(timeout.as_secs_f64()));
            }
        };
        Ok(Output {
            status,
            stdout: self.out.join().unwrap_or_default(),
            stderr: self.err.join().unwrap_or_default(),
        })
    }
}

/// nft's complaint as one line.
fn one_line(stderr: &[u8]) -> String {
    let err = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = err
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" | ")
}

/// The objects of a listing that belong to rampart's table, by kind (`chain`, `set`…).
fn ours<'v>(v: &'v Value, key: &'static str) -> impl Iterator<Item = &'v Value> {
    v.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |item| item.get(key))
        .filter(|obj| obj.get("table").and_then(Value::as_str) == Some(TABLE))
}

fn names(v: &Value, key: &'static str) -> Vec<String> {
    ours(v, key)
        .filter_map(|o| o.get("name").and_then(Value::as_str).map(String::from))
        .collect()
}

fn table() -> Table<'static> {
    Table {
        family: FAMILY,
        name: TABLE.into(),
        handle: None,
    }
}

/// `set stamp { type ipv6_addr; elements = { KEY comment "rampart VERSION policy ID" } }`
/// (the element inside the set: a separate element command makes nft fetch every
/// set's elements first, ~20 ms at 10k rules).
fn stamp_set(stamp: &Stamp) -> Set<'static> {
    Set {
        family: FAMILY,
        table: TABLE.into(),
        name: STAMP_SET.into(),
        set_type: SetTypeValue::Single(SetType::Ipv6Addr),
        elem: Some(vec![stamp_elem(stamp)].into()),
        ..Set::default()
    }
}

/// `KEY comment "rampart VERSION policy ID"`
fn stamp_elem(stamp: &Stamp) -> Expression<'static> {
    Expression::Named(NamedExpression::Elem(Elem {
        val: Box::new(Expression::String(stamp.key().into())),
        timeout: None,
        expires: None,
        comment: Some(stamp.text().into()),
        counter: None,
    }))
}

/// `element inet rampart stamp { KEY comment "rampart VERSION policy ID" }`
fn stamp_element(stamp: &Stamp) -> Element<'static> {
    Element {
        family: FAMILY,
        table: TABLE.into(),
        name: STAMP_SET.into(),
        elem: vec![stamp_elem(stamp)].into(),
    }
}

/// The stamp set's elements of these keys (to delete them).
fn stamp_keys(keys: &[String]) -> Element<'static> {
    Element {
        family: FAMILY,
        table: TABLE.into(),
        name: STAMP_SET.into(),
        elem: keys
            .iter()
            .map(|k| Expression::String(k.clone().into()))
            .collect::<Vec<_>>()
            .into(),
    }
}

/// The stamps in a listing of the stamp set: the current one (the highest sequence
/// number) and the keys of the others. No current stamp if an element does not read as
/// a stamp (the set was changed outside rampart).
fn stamps_in(listing: Result<Output, BackendError>) -> KernelState {
    let Some(v) = listing.ok().and_then(|out| NftBackend::listing(out).ok()) else {
        return unknown_stamp();
    };
    let Some(set) =
        ours(&v, "set").find(|s| s.get("name").and_then(Value::as_str) == Some(STAMP_SET))
    else {
        return unknown_stamp();
    };
    let elems = set
        .get("elem")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    stamps_of(elems.iter().map(|elem| {
        let inner = elem.get("elem");
        let key = inner.and_then(|e| e.get("val")).and_then(Value::as_str);
        let text = inner.and_then(|e| e.get("comment")).and_then(Value::as_str);
        (key.map(String::from), text.map(String::from))
    }))
}

/// A loaded table whose stamp does not read.
fn unknown_stamp() -> KernelState {
    KernelState::Loaded {
        stamp: None,
        superseded: Vec::new(),
    }
}

/// The stamps of the stamp set's elements (key, comment): see [`stamps_in`].
fn stamps_of(elems: impl Iterator<Item = (Option<String>, Option<String>)>) -> KernelState {
    let mut stamps = Vec::new();
    for (key, text) in elems {
        match key
            .zip(text)
            .and_then(|(k, t)| Stamp::parse(&k, &t).map(|s| (k, s)))
        {
            Some(found) => stamps.push(found),
            None => return unknown_stamp(),
        }
    }
    stamps.sort_by_key(|(_, s)| s.seq);
    let current = stamps.pop().map(|(_, s)| s);
    KernelState::Loaded {
        stamp: current,
        superseded: stamps.into_iter().map(|(k, _)| k).collect(),
    }
}

/// The kernel's state read over netlink: the stamp set's elements, else (no stamp set)
/// whether the table has chains. None where netlink cannot read it.
fn netlink_state() -> Option<KernelState> {
    match netlink::set_elements(TABLE, STAMP_SET).ok()? {
        Some(elems) => Some(stamps_of(elems.into_iter().map(|(key, text)| {
            let key = <[u8; 16]>::try_from(key.as_slice())
                .ok()
                .map(|b| std::net::Ipv6Addr::from(b).to_string());
            (key, text)
        }))),
        None => {
            let (chains, _, _) = netlink::names(TABLE).ok()?;
            Some(if chains.is_empty() {
                KernelState::Absent
            } else {
                unknown_stamp()
            })
        }
    }
}

/// Write an element diff (and the stamp's change) over netlink, as one transaction.
/// Refused before anything is sent for a map with flags other than `interval`.
fn netlink_elements(
    plan: &Plan,
    changes: &[MapChange],
    prune: Option<&[Expression<'static>]>,
    stamp: &Expression<'static>,
) -> Result<(), netlink::WriteError> {
    let stamp_type = SetTypeValue::Single(SetType::Ipv6Addr);
    let mut out = Vec::new();
    for c in changes {
        let map = plan
            .objects
            .iter()
            .find_map(|o| match o {
                NfListObject::Map(m) if m.name == c.map => Some(m),
                _ => None,
            })
            .ok_or_else(|| netlink::WriteError::Unsupported(format!("no map {}", c.map)))?;
        let interval = match &map.flags {
            None => false,
            Some(f) if f.is_empty() => false,
            Some(f) if f.len() == 1 && f.contains(&SetFlag::Interval) => true,
            Some(_) => {
                return Err(netlink::WriteError::Unsupported(format!(
                    "{}: its flags",
                    c.map
                )))
            }
        };
        let layout = match (interval, &map.set_type) {
            (false, _) => KeyLayout::Exact,
            (true, SetTypeValue::Concatenated(_)) => KeyLayout::Ranges,
            (true, SetTypeValue::Single(_)) => KeyLayout::Intervals,
        };
        let data = if plan.verdict_maps.contains(&c.map) {
            ElementData::Verdict
        } else if map.map == SetTypeValue::Single(SetType::Mark) {
            ElementData::Mark
        } else {
            return Err(netlink::WriteError::Unsupported(format!(
                "{}: its values",
                c.map
            )));
        };
        out.push(ElementChange {
            op: if c.add {
                ElementOp::Add
            } else {
                ElementOp::Delete
            },
            set: &c.map,
            key: &map.set_type,
            layout,
            data,
            elems: &c.elems,
        });
    }
    if let Some(keys) = prune {
        out.push(ElementChange {
            op: ElementOp::Delete,
            set: STAMP_SET,
            key: &stamp_type,
            layout: KeyLayout::Exact,
            data: ElementData::None,
            elems: keys,
        });
    }
    out.push(ElementChange {
        op: ElementOp::Create,
        set: STAMP_SET,
        key: &stamp_type,
        layout: KeyLayout::Exact,
        data: ElementData::None,
        elems: std::slice::from_ref(stamp),
    });
    netlink::write_elements(TABLE, &out)
}

/// The sequence number after the current stamp's.
fn next_seq(state: &KernelState) -> u64 {
    match state {
        KernelState::Loaded { stamp: Some(s), .. } => s.seq + 1,
        _ => 1,
    }
}

impl NftBackend {
    /// Parse a listing's JSON; nft's error becomes one line.
    fn listing(out: Output) -> Result<Value, BackendError> {
        if !out.status.success() {
            return Err(BackendError::Read(one_line(&out.stderr)));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| BackendError::Read(e.to_string()))
    }

    /// The names of rampart's chains, sets and maps (None if the table is absent).
    /// Read over netlink (a dump of the table's chains and one of its sets), else
    /// listed by nft per kind, tersely, side by side: listing the whole table costs
    /// time in proportion to its rules, these do not.
    pub fn read(&self) -> Result<Option<KernelTable>, BackendError> {
        // Straight from the kernel over netlink; through nft where that fails.
        if let Ok((chains, sets, maps)) = super::netlink::names(TABLE) {
            let empty = chains.is_empty() && sets.is_empty() && maps.is_empty();
            return Ok((!empty).then_some(KernelTable { chains, sets, maps }));
        }
        let running = [
            spawn(&["-j", "list", "chains", "inet"], None),
            spawn(&["-j", "-t", "list", "sets", "inet"], None),
            spawn(&["-j", "-t", "list", "maps", "inet"], None),
        ];
        let [chains, sets, maps] = running.map(|r| r.and_then(Running::finish));
        let chains = NftBackend::listing(chains?)?;
        let sets = NftBackend::listing(sets?)?;
        let maps = NftBackend::listing(maps?)?;
        let t = KernelTable {
            chains: names(&chains, "chain"),
            sets: names(&sets, "set"),
            maps: names(&maps, "map"),
        };
        let empty = t.chains.is_empty() && t.sets.is_empty() && t.maps.is_empty();
        Ok((!empty).then_some(t))
    }

    /// Run `nft -j -f -` with the batch (and the plan objects `adds`) as one
    /// transaction; nft's complaint, if any, becomes one line.
    fn run(
        &self,
        batch: Batch<'static>,
        adds: &[&NfListObject<'static>],
        plan: Option<&Plan>,
    ) -> Result<(), BackendError> {
        let t = Timer::start();
        let payload = payload_with(batch, adds, plan);
        t.lap("payload");
        let out = spawn(&["-j", "-f", "-"], Some(payload.as_bytes()))?.finish()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(BackendError::Refused(one_line(&out.stderr)))
        }
    }

    /// Check that the kernel holds the plan's chains, sets and maps (and the stamp
    /// set).
    fn verify(&self, plan: &Plan) -> Result<(), BackendError> {
        // The transaction is atomic, so the rules and elements (the stamp's too) are
        // there; listing them back costs time in proportion to the whole table.
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
        let mut sets = names(|o| match o {
            NfListObject::Set(s) => Some(s.name.to_string()),
            _ => None,
        });
        sets.push(STAMP_SET.to_string());
        let want = (
            names(|o| match o {
                NfListObject::Chain(c) => Some(c.name.to_string()),
                _ => None,
            }),
            sorted(sets),
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
        Ok(())
    }
}

/// Build the transaction that turns `current` (what the kernel has) into `plan`.
///
/// The table's chains are flushed and its chains and sets deleted and re-added, all in
/// one batch, except what the plan declares again of a limit: its state sets are left
/// in place with their elements (which is how limit state survives a reload) and its
/// chain with its rules (a limit's chain is named after everything it holds, so the
/// same name means the same rules; re-sending hundreds of them is most of a reload's
/// time). The chains limits refuse through are flushed and filled again, not deleted
/// (kept chains go to them). The new table is stamped.
pub fn transaction<'p>(
    current: Option<&KernelTable>,
    plan: &'p Plan,
    stamp: &Stamp,
) -> (Batch<'static>, Vec<&'p NfListObject<'static>>) {
    let mut batch = Batch::new();
    batch.add(NfListObject::Table(table()));
    use std::collections::HashSet;
    let (mut planned_sets, mut planned_chains) = (HashSet::new(), HashSet::new());
    for o in &plan.objects {
        match o {
            NfListObject::Set(s) => planned_sets.insert(s.name.as_ref()),
            NfListObject::Chain(c) => planned_chains.insert(c.name.as_ref()),
            _ => false,
        };
    }
    let names = |list: fn(&KernelTable) -> &Vec<String>| -> HashSet<&str> {
        current
            .map(|c| list(c).iter().map(String::as_str).collect())
            .unwrap_or_default()
    };
    let (current_sets, current_chains) = (names(|c| &c.sets), names(|c| &c.chains));
    // What the plan declares again and the kernel has: left in place.
    let kept_state = |name: &str| {
        name.starts_with(STATE_SET_PREFIX)
            && planned_sets.contains(name)
            && current_sets.contains(name)
    };
    let kept_chain = |name: &str| {
        is_limit_chain(name) && planned_chains.contains(name) && current_chains.contains(name)
    };
    let refill_chain = |name: &str| is_over_chain(name) && planned_chains.contains(name);
    if let Some(cur) = current {
        for chain in cur.chains.iter().filter(|c| !kept_chain(c)) {
            batch.add_cmd(NfCmd::Flush(FlushObject::Chain(Chain {
                family: FAMILY,
                table: TABLE.into(),
                name: chain.clone().into(),
                ..Chain::default()
            })));
        }
        // Maps first: their elements may jump to chains (goto reject_packet).
        for map in &cur.maps {
            batch.delete(NfListObject::Map(Box::new(Map {
                family: FAMILY,
                table: TABLE.into(),
                name: map.clone().into(),
                ..Map::default()
            })));
        }
        for chain in cur
            .chains
            .iter()
            .filter(|c| !kept_chain(c) && !refill_chain(c))
        {
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
    batch.add(NfListObject::Set(Box::new(stamp_set(stamp))));
    let adds = plan
        .objects
        .iter()
        .filter(|obj| match obj {
            NfListObject::Set(s) => !kept_state(&s.name),
            NfListObject::Chain(c) => !kept_chain(&c.name),
            NfListObject::Rule(r) => !kept_chain(&r.chain),
            _ => true,
        })
        .collect();
    (batch, adds)
}

/// A limit's own chain (`limit_<id>`), which a reload may keep.
fn is_limit_chain(name: &str) -> bool {
    name.starts_with(LIMIT_CHAIN_PREFIX) && !is_over_chain(name)
}

/// A chain limits refuse through (`limit_over_…`).
fn is_over_chain(name: &str) -> bool {
    name.starts_with(LIMIT_OVER_PREFIX)
}

impl Backend for NftBackend {
    fn start_state(&self) -> StateReading {
        // The stamp set is there in every table rampart loads: one listing says both
        // that the table is loaded and what it holds. Read over netlink; through nft
        // where that fails.
        if let Some(state) = (!nft_elements()).then(netlink_state).flatten() {
            return Box::new(move || Ok(state));
        }
        let stamp = spawn(&["-j", "list", "set", "inet", TABLE, STAMP_SET], None);
        Box::new(move || {
            let stamp = stamp?.finish()?;
            if stamp.status.success() {
                return Ok(stamps_in(Ok(stamp)));
            }
            let chains = spawn(&["-j", "list", "chains", "inet"], None)?.finish()?;
            if names(&NftBackend::listing(chains)?, "chain").is_empty() {
                return Ok(KernelState::Absent);
            }
            Ok(KernelState::Loaded {
                stamp: None,
                superseded: Vec::new(),
            })
        })
    }

    fn apply(&self, current: &KernelState, plan: &Plan, policy: &str) -> Result<(), BackendError> {
        let t = Timer::start();
        let table = self.read()?;
        t.lap("read table");
        let stamp = Stamp::new(policy, next_seq(current));
        let (batch, adds) = transaction(table.as_ref(), plan, &stamp);
        self.run(batch, &adds, Some(plan))?;
        t.lap("nft transaction");
        self.verify(plan)?;
        t.lap("verify");
        Ok(())
    }

    fn update(
        &self,
        current: &KernelState,
        previous: &Plan,
        plan: &Plan,
        policy: &str,
    ) -> Result<(), BackendError> {
        let t = Timer::start();
        let diff = match current {
            KernelState::Loaded {
                stamp: Some(old),
                superseded,
            } => element_diff(previous, plan).map(|d| (old, superseded, d)),
            _ => None,
        };
        t.lap("element diff");
        if let Some((old, superseded, changes)) = diff {
            // The next stamp is created in the same transaction: if that number is
            // taken (the table changed since it was read), nothing is applied.
            let stamp = Stamp::new(policy, old.seq + 1);
            let prune = (superseded.len() + 1 >= STAMP_PRUNE_AT).then(|| {
                let mut keys = superseded.clone();
                keys.push(old.key());
                stamp_keys(&keys)
            });
            // Straight over netlink where the writer encodes every changed map;
            // through nft otherwise, or if the kernel refused it (then nothing changed).
            let prune_keys = prune.as_ref().map(|p| p.elem.as_ref());
            if !nft_elements() {
                match netlink_elements(plan, &changes, prune_keys, &stamp_elem(&stamp)) {
                    Ok(()) => {
                        t.lap("element transaction (netlink)");
                        return Ok(());
                    }
                    Err(e) => t.lap(&e.to_string()),
                }
            }
            let mut batch = batch_of(changes);
            if let Some(keys) = prune {
                batch.delete(NfListObject::Element(keys));
            }
            batch.add_cmd(NfCmd::Create(NfListObject::Element(stamp_element(&stamp))));
            if self.run(batch, &[], Some(plan)).is_ok() {
                t.lap("element transaction");
                return Ok(());
            }
        }
        self.apply(current, plan, policy)
    }

    fn remove(&self) -> Result<(), BackendError> {
        if self.read()?.is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(table()));
        self.run(batch, &[], None)?;
        match self.read()? {
            None => Ok(()),
            Some(_) => Err(BackendError::Verify("the table is still there".into())),
        }
    }

    fn list_json(&self) -> Result<Value, BackendError> {
        let out = spawn(&["-j", "list", "table", "inet", TABLE], None)?.finish()?;
        if !out.status.success() && self.state()? == KernelState::Absent {
            return Ok(Value::Null);
        }
        NftBackend::listing(out)
    }

    fn counters(&self, plan: &Plan) -> Result<super::Counters, BackendError> {
        // Straight from the kernel; nft's listing where that fails.
        match super::netlink::counters(TABLE, plan) {
            Ok(c) => Ok(c),
            Err(_) => Ok(super::Counters::from_listing(&self.list_json()?)),
        }
    }

    fn raw_counters(&self) -> Option<super::RawCounters> {
        super::netlink::raw_counters(TABLE).ok()
    }

    fn limit_reading(&self, sets: &[String], chains: &[String]) -> Option<super::LimitReading> {
        // Over netlink; nft's listing of the whole table where that fails (or where
        // reads are sent through nft).
        (!nft_elements())
            .then(|| super::netlink::limit_reading(TABLE, sets, chains).ok())
            .flatten()
    }

    fn delete_elements(&self, elems: &[(String, Value)]) -> Result<(), BackendError> {
        let cmds: Vec<Value> = elems
            .iter()
            .map(|(set, elem)| {
                serde_json::json!({"delete": {"element": {
                    "family": "inet", "table": TABLE, "name": set, "elem": [elem]
                }}})
            })
            .collect();
        let payload = serde_json::json!({ "nftables": cmds }).to_string();
        let out = spawn(&["-j", "-f", "-"], Some(payload.as_bytes()))?.finish()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(BackendError::Refused(one_line(&out.stderr)))
        }
    }

    fn read_snippet(&self, path: &std::path::Path) -> Result<Value, BackendError> {
        use crate::compile::SNIPPET_TABLE;
        // The wrapper includes the file by its path, so nft's errors name it and its
        // lines; nft runs in a network namespace of its own (unshare), so the snippet
        // is parsed and checked by the kernel without reaching any ruleset in use.
        // nft's include takes the path in double quotes, with no escape for them.
        let quoted = path
            .to_str()
            .filter(|p| !p.contains(['"', '\n']))
            .ok_or_else(|| {
                BackendError::Read(format!(
                    "{}: nft cannot include a path with a double quote or a newline in it",
                    path.display()
                ))
            })?;
        let wrapper = format!("table inet {SNIPPET_TABLE} {{\ninclude \"{quoted}\"\n}}\n");
        let script = format!("{NFT} -f - && exec {NFT} -j list table inet {SNIPPET_TABLE}");
        let out = spawn_program(
            "unshare",
            &["--net", "--", "sh", "-c", &script],
            Some(wrapper.as_bytes()),
        )?
        .finish()?;
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let first = text
                .lines()
                .find(|l| l.contains("Error:"))
                .or_else(|| text.lines().next())
                .unwrap_or("nft failed");
            return Err(BackendError::Refused(first.trim().to_string()));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| BackendError::Read(e.to_string()))
    }

    fn others_forwarding(&self) -> Result<Vec<String>, BackendError> {
        let out = spawn(&["-j", "list", "chains"], None)?.finish()?;
        let v = NftBackend::listing(out)?;
        let mut tables: Vec<String> = v
            .get("nftables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|item| item.get("chain"))
            .filter(|c| c.get("hook").and_then(Value::as_str) == Some("forward"))
            .filter_map(|c| {
                let family = c.get("family")?.as_str()?;
                let table = c.get("table")?.as_str()?;
                let ours = family == "inet" && table == TABLE;
                (!ours).then(|| format!("{family} {table}"))
            })
            .collect();
        tables.dedup();
        Ok(tables)
    }

    fn list_text(&self) -> Result<String, BackendError> {
        let out = spawn(&["list", "table", "inet", TABLE], None)?.finish()?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        // Not an error when there is no table to list; anything else is.
        if self.state()? == KernelState::Absent {
            return Ok(String::new());
        }
        Err(BackendError::Read(one_line(&out.stderr)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::payload_with;
    use crate::compile::compile;
    use crate::grammar::parse_rule;
    use crate::model::{Action, Policy};

    fn json(current: Option<&KernelTable>, plan: &Plan) -> Value {
        let (batch, adds) = transaction(current, plan, &Stamp::new(&"0".repeat(64), 1));
        serde_json::from_str(&payload_with(batch, &adds, Some(plan))).unwrap()
    }

    #[test]
    fn the_stamp_set_is_no_name_compile_uses() {
        let mut p = Policy::default();
        for (action, text) in [
            (Action::Limit, "22/tcp"),
            (Action::Limit, "3128/tcp conn 2"),
            (Action::Limit, "80/tcp rate 20/30s per any"),
            (Action::Allow, "53"),
        ] {
            let words: Vec<String> = text.split_whitespace().map(String::from).collect();
            p.rules.extend(parse_rule(action, &words).unwrap().rules);
        }
        p.rules.sort_by_key(|r| r.family);
        let plan = compile(&p);
        assert!(plan.objects.iter().all(|o| match o {
            NfListObject::Set(s) => s.name != STAMP_SET,
            NfListObject::Map(m) => m.name != STAMP_SET,
            _ => true,
        }));
    }

    #[test]
    fn fresh_apply_only_adds() {
        let plan = compile(&Policy::default());
        let json = json(None, &plan);
        let cmds = json["nftables"].as_array().unwrap();
        assert!(cmds.iter().all(|c| c.get("add").is_some()));
        // The table, the stamp set with its element, then the plan.
        assert_eq!(cmds.len(), plan.objects.len() + 2);
        assert_eq!(cmds[1]["add"]["set"]["name"], STAMP_SET);
        assert_eq!(
            cmds[1]["add"]["set"]["elem"][0]["elem"]["comment"],
            Stamp::new(&"0".repeat(64), 1).text()
        );
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
        assert_eq!(cmds[1]["flush"]["chain"]["name"], "input");
        assert_eq!(cmds[2]["flush"]["chain"]["name"], "old");
        assert_eq!(cmds[3]["delete"]["chain"]["name"], "input");
        assert_eq!(cmds[4]["delete"]["chain"]["name"], "old");
        // the state set is not in the plan, so it goes too
        assert_eq!(cmds[5]["delete"]["set"]["name"], "state_x");
        assert_eq!(cmds[6]["add"]["set"]["name"], STAMP_SET);
    }

    #[test]
    fn reapply_keeps_the_chains_of_unchanged_limits() {
        let mut p = Policy::default();
        let words: Vec<String> = ["22/tcp"].map(String::from).to_vec();
        p.rules
            .extend(parse_rule(Action::Limit, &words).unwrap().rules);
        let plan = compile(&p);
        let chains = plan.chains();
        let limit = chains
            .iter()
            .find(|c| is_limit_chain(c))
            .expect("a limit chain")
            .to_string();
        let over = chains
            .iter()
            .find(|c| is_over_chain(c))
            .unwrap()
            .to_string();
        let cur = KernelTable {
            chains: vec!["input".into(), limit.clone(), over.clone()],
            sets: vec![],
            maps: vec![],
        };
        let text = serde_json::to_string(&json(Some(&cur), &plan)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let cmds = v["nftables"].as_array().unwrap();
        let about = |verb: &str, name: &str| {
            cmds.iter()
                .filter(|c| c[verb]["chain"]["name"] == name || c[verb]["rule"]["chain"] == name)
                .count()
        };
        // The limit's chain: neither flushed, deleted nor sent again.
        assert_eq!(about("flush", &limit), 0);
        assert_eq!(about("delete", &limit), 0);
        assert_eq!(about("add", &limit), 0);
        // The chain it refuses through: flushed and filled again, not deleted.
        assert_eq!(about("flush", &over), 1);
        assert_eq!(about("delete", &over), 0);
        assert!(about("add", &over) >= 2);
        // A fresh apply sends both.
        let fresh = serde_json::to_string(&json(None, &plan)).unwrap();
        assert!(fresh.contains(&limit));
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
        // Each map counts per element.
        assert!(maps
            .iter()
            .all(|m| m["stmt"] == serde_json::json!([{"counter": null}])));
        // The plan knows which rule each element stands for, by its key as listed.
        let has = |val: Value, tag: String, verdict: Value| {
            let text = val.to_string();
            let tagged = plan
                .element_tags
                .iter()
                .any(|((_, key), t)| *key == text && *t == tag);
            tagged && elems.iter().any(|e| e[0] == val && e[1] == verdict)
        };
        let ssh = crate::compile::rule_tag(&p.rules[0], "46");
        let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(
            has(
                v(r#"{"concat": ["tcp", 22]}"#),
                ssh,
                v(r#"{"accept": null}"#)
            ),
            "{elems:?}"
        );
        let net = crate::compile::rule_tag(&p.rules[2], "4");
        assert!(has(
            v(r#"{"prefix": {"addr": "198.18.0.0", "len": 24}}"#),
            net,
            v(r#"{"drop": null}"#)
        ));
    }
}
