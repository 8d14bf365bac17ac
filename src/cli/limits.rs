//! `rampart limits [--json] [--reset KEY]`: what each limit is doing now, read from the
//! kernel: the connections it refused since the table was applied, and per key the
//! slots of its rate window in use (and when the next comes back) or the connections
//! it has open; `--reset KEY` forgets a source's state (an unban).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use crate::compile::{limit_state, LimitState};
use crate::model::{Action, Family, LimitKey, Policy, Proto, Rule};
use crate::observe::rule_command;

use super::{usage, CliError, Ctx, Out};

/// The schema name of `limits --json`.
pub const LIMITS_SCHEMA: &str = "rampart.limits/1";

/// A state set's element: its key (`Null` for `per any`), its slot in a rate window,
/// and the seconds until it expires.
type Element = (Value, Option<u64>, Option<u64>);

/// What the kernel's listing says of the state sets and limit chains.
#[derive(Default)]
pub(super) struct Listing {
    /// Set name → its elements.
    elems: HashMap<String, Vec<Element>>,
    /// Chain name → packets counted by its rules that go over.
    pub(super) refused: HashMap<String, u64>,
}

pub(super) fn read_listing(v: &Value) -> Listing {
    let mut out = Listing::default();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(set) = item.get("set") {
            let name = set["name"].as_str().unwrap_or("").to_string();
            let elems = set["elem"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let (val, expires) = match e.get("elem") {
                        Some(el) => (el["val"].clone(), el["expires"].as_u64()),
                        None => (e.clone(), None),
                    };
                    match val.get("concat").and_then(Value::as_array) {
                        Some(parts) if parts.len() == 2 => {
                            (parts[0].clone(), parts[1].as_u64(), expires)
                        }
                        _ if val.is_u64() => (Value::Null, val.as_u64(), expires),
                        _ => (val, None, expires),
                    }
                })
                .collect();
            out.elems.insert(name, elems);
        }
        if let Some(rule) = item.get("rule") {
            let expr = rule["expr"].as_array().cloned().unwrap_or_default();
            if expr.iter().any(|s| s.get("goto").is_some()) {
                let packets: u64 = expr
                    .iter()
                    .filter_map(|s| s.get("counter")?.get("packets")?.as_u64())
                    .sum();
                let chain = rule["chain"].as_str().unwrap_or("").to_string();
                *out.refused.entry(chain).or_default() += packets;
            }
        }
    }
    out
}

/// The limits of a policy, once each (the IPv4 and IPv6 copies of a `per any` limit
/// are one): (rule numbers, the first rule, where its state is).
pub(super) fn limits(policy: &Policy) -> Vec<(Vec<usize>, &Rule, LimitState)> {
    let mut out: Vec<(Vec<usize>, &Rule, LimitState)> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.action != Action::Limit {
            continue;
        }
        let state = limit_state(rule);
        match out.iter_mut().find(|(_, _, s)| s.id == state.id) {
            Some((numbers, _, _)) => numbers.push(i + 1),
            None => out.push((vec![i + 1], rule, state)),
        }
    }
    out
}

/// The key of `addr` for a limit counted per `per`: the address masked to its prefix.
fn key_of(addr: IpAddr, per: LimitKey) -> Option<IpAddr> {
    let LimitKey::Source { v4, v6 } = per else {
        return None;
    };
    let len = if addr.is_ipv4() { v4 } else { v6 };
    IpNet::new(addr, len).ok().map(|n| n.trunc().addr())
}

/// Connections open now that `rule` matches, by key, from the text of the conntrack
/// table (the entries `ct count` counts: not closed or in TIME_WAIT).
fn open_connections(conntrack: &str, rule: &Rule, per: LimitKey) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in conntrack.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let (Some(fam), Some(proto)) = (w.first(), w.get(2)) else {
            continue;
        };
        let family = match *fam {
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            _ => continue,
        };
        if per != LimitKey::Any && family != rule.family {
            continue;
        }
        let proto_ok = match rule.proto {
            Proto::Any => matches!(*proto, "tcp" | "udp"),
            p => p.word() == *proto,
        };
        // `ct count` lets go of a connection once it is closed or in TIME_WAIT.
        if !proto_ok || ["TIME_WAIT", "CLOSE"].iter().any(|s| w.contains(s)) {
            continue;
        }
        let field = |k: &str| {
            w.iter()
                .find_map(|t| t.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
        };
        let (Some(src), Some(dst), Some(dport)) = (field("src"), field("dst"), field("dport"))
        else {
            continue;
        };
        let (Ok(src), Ok(dst), Ok(dport)) = (
            src.parse::<IpAddr>(),
            dst.parse::<IpAddr>(),
            dport.parse::<u16>(),
        ) else {
            continue;
        };
        if !rule.to.addr.is_none_or(|n| n.contains(&dst)) {
            continue;
        }
        if !rule.to.ports.as_ref().is_none_or(|p| p.contains(dport)) {
            continue;
        }
        if !rule.from.addr.is_none_or(|n| n.contains(&src)) {
            continue;
        }
        let key = key_of(src, per).map_or(Value::Null, |k| Value::String(k.to_string()));
        *out.entry(shown_key(&key, per)).or_default() += 1;
    }
    out
}

/// A key as shown: an address, or the network it stands for (`198.18.0.0/24`,
/// `2001:db8:1::/64`) when the limit counts per network.
fn shown_key(v: &Value, per: LimitKey) -> String {
    let text = key_text(v);
    let (LimitKey::Source { v4, v6 }, Ok(addr)) = (per, text.parse::<IpAddr>()) else {
        return text;
    };
    match addr {
        IpAddr::V4(_) if v4 < 32 => format!("{text}/{v4}"),
        IpAddr::V6(_) if v6 < 128 => format!("{text}/{v6}"),
        _ => text,
    }
}

/// A state set's element as nft's JSON names it: the key, `KEY . SLOT`, or the slot.
fn element_json(key: &Value, slot: Option<u64>) -> Value {
    match (slot, key) {
        (Some(s), Value::Null) => json!(s),
        (Some(s), k) => json!({"concat": [k, s]}),
        (None, k) => k.clone(),
    }
}

fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "any".into(),
        other => other.to_string(),
    }
}

/// A state set's elements as the kernel holds them (key bytes, milliseconds left), as
/// nft's listing gives them: the key an address string (`null` for `per any`), the slot
/// a number (host byte order, as marks are), whole seconds left as nft shows them.
fn elements_of(
    raw: &[crate::backend::TimedElement],
    slots: bool,
    per: LimitKey,
    family: Family,
) -> Vec<Element> {
    let addr_len = match family {
        Family::V4 => 4,
        Family::V6 => 16,
    };
    let addr = |b: &[u8]| -> Value {
        let ip = <[u8; 4]>::try_from(b)
            .map(IpAddr::from)
            .or_else(|_| <[u8; 16]>::try_from(b).map(IpAddr::from));
        ip.map_or(Value::Null, |ip| Value::String(ip.to_string()))
    };
    let mark = |b: &[u8]| {
        <[u8; 4]>::try_from(b)
            .ok()
            .map(|m| u64::from(u32::from_ne_bytes(m)))
    };
    raw.iter()
        .map(|(key, expiration)| {
            let expires = expiration.filter(|ms| *ms != 0).map(|ms| ms / 1000);
            match (slots, per) {
                (true, LimitKey::Any) => (Value::Null, mark(key), expires),
                (true, _) if key.len() == addr_len + 4 => {
                    (addr(&key[..addr_len]), mark(&key[addr_len..]), expires)
                }
                _ => (addr(key), None, expires),
            }
        })
        .collect()
}

impl Ctx<'_> {
    /// What the kernel holds of the policy's limits: read for them alone where the
    /// backend can (one dump of the rules and one of each state set), else from nft's
    /// listing of the whole table.
    fn limit_listing(&self, policy: &Policy) -> Result<Listing, CliError> {
        let all = limits(policy);
        let chains: Vec<String> = all.iter().map(|(_, _, s)| s.chain.clone()).collect();
        let sets: Vec<String> = all
            .iter()
            .flat_map(|(_, _, s)| [&s.tracked, &s.slots, &s.conns])
            .flatten()
            .cloned()
            .collect();
        let Some(reading) = self.backend.limit_reading(&sets, &chains) else {
            return Ok(read_listing(&self.backend.list_json()?));
        };
        let mut listing = Listing {
            refused: reading.refused,
            ..Listing::default()
        };
        for (_, rule, state) in &all {
            for (set, slots) in [
                (&state.tracked, false),
                (&state.slots, true),
                (&state.conns, false),
            ] {
                let Some(set) = set else { continue };
                if let Some(raw) = reading.elems.get(set) {
                    let elems = elements_of(raw, slots, state.spec.per, rule.family);
                    listing.elems.insert(set.clone(), elems);
                }
            }
        }
        Ok(listing)
    }

    /// `limits [--json] [--reset KEY]`.
    pub(super) fn limits(&self, json_out: bool, reset: Option<&str>) -> Result<Out, CliError> {
        let fw = match reset {
            Some(_) => self.open_write()?,
            None => self.open_read()?,
        };
        if !fw.kernel().is_loaded() {
            return Ok(vec!["Status: inactive (no limit is in force)".into()]);
        }
        let policy = fw.policy();
        let listing = self.limit_listing(policy)?;
        if let Some(key) = reset {
            return self.reset_key(policy, &listing, key);
        }
        let mut docs = Vec::new();
        let mut text = Vec::new();
        let mut conntrack: Option<String> = None;
        for (numbers, rule, state) in limits(policy) {
            let refused = listing.refused.get(&state.chain).copied().unwrap_or(0);
            let nums = numbers
                .iter()
                .map(|n| format!("{n:>2}"))
                .collect::<Vec<_>>()
                .join(",");
            let cmd = rule_command(rule);
            text.push(format!("[{nums}] {cmd}: refused {refused} since applied"));
            let mut keys = Vec::new();
            if let (Some(rate), Some(slots)) = (state.spec.rate, &state.slots) {
                let mut per_key: HashMap<String, (u64, u64)> = HashMap::new();
                for (k, _, expires) in listing.elems.get(slots).into_iter().flatten() {
                    let e = per_key
                        .entry(shown_key(k, state.spec.per))
                        .or_insert((0, u64::MAX));
                    e.0 += 1;
                    e.1 = e.1.min(expires.unwrap_or(0));
                }
                let mut rows: Vec<_> = per_key.into_iter().collect();
                rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
                for (k, (used, next)) in rows {
                    let over = used >= u64::from(rate.count);
                    let state_words = if over {
                        format!(", over: a slot back in {next} s")
                    } else {
                        String::new()
                    };
                    text.push(format!(
                        "     {k:<39} {used} of {} in {} s{state_words}",
                        rate.count, rate.seconds
                    ));
                    keys.push(json!({"key": k, "used": used, "of": rate.count,
                        "seconds": rate.seconds, "over": over, "next_slot_in": next}));
                }
            } else if let Some(tracked) = &state.tracked {
                for (k, _, expires) in listing.elems.get(tracked).into_iter().flatten() {
                    let k = shown_key(k, state.spec.per);
                    text.push(format!("     {k:<39} tracked (a token bucket)"));
                    keys.push(json!({"key": k, "tracked": true, "expires_in": expires}));
                }
            }
            let mut open = Vec::new();
            if let Some(limit) = state.spec.conn {
                // The conntrack table, read once for every conn limit.
                let table = conntrack
                    .get_or_insert_with(|| {
                        std::fs::read_to_string("/proc/net/nf_conntrack").unwrap_or_default()
                    })
                    .as_str();
                let mut rows: Vec<_> = open_connections(table, rule, state.spec.per)
                    .into_iter()
                    .collect();
                rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                for (k, n) in rows {
                    text.push(format!("     {k:<39} {n} open (at most {limit})"));
                    open.push(json!({"key": k, "connections": n, "limit": limit}));
                }
            }
            docs.push(json!({"rules": numbers, "command": cmd, "refused": refused,
                "keys": keys, "open": open}));
        }
        if json_out {
            return Ok(vec![
                json!({"schema": LIMITS_SCHEMA, "limits": docs}).to_string()
            ]);
        }
        if text.is_empty() {
            text.push("No limit rules".into());
        }
        Ok(text)
    }

    /// Forget what every limit holds of KEY (an address, or `any`).
    fn reset_key(&self, policy: &Policy, listing: &Listing, key: &str) -> Result<Out, CliError> {
        let addr = if key == "any" {
            None
        } else {
            Some(key.parse::<IpAddr>().map_err(|_| {
                usage(format!(
                    "Invalid key '{key}': use an address (e.g. 198.18.0.11) or 'any'"
                ))
            })?)
        };
        let mut doomed: Vec<(String, Value)> = Vec::new();
        let mut which = Vec::new();
        for (numbers, rule, state) in limits(policy) {
            let wanted: Option<String> = match (addr, state.spec.per) {
                (None, LimitKey::Any) => None,
                (Some(a), per @ LimitKey::Source { .. }) => {
                    let fam = if a.is_ipv4() { Family::V4 } else { Family::V6 };
                    if fam != rule.family {
                        continue;
                    }
                    key_of(a, per).map(|k| k.to_string())
                }
                _ => continue,
            };
            let before = doomed.len();
            for set in [&state.tracked, &state.slots, &state.conns]
                .into_iter()
                .flatten()
            {
                for (k, slot, _) in listing.elems.get(set).into_iter().flatten() {
                    let hit = match &wanted {
                        None => true,
                        Some(w) => key_text(k) == *w,
                    };
                    if !hit {
                        continue;
                    }
                    doomed.push((set.clone(), element_json(k, *slot)));
                }
            }
            if doomed.len() > before {
                which.push(numbers[0]);
            }
        }
        if doomed.is_empty() {
            return Ok(vec![format!("{key} is not held by any limit")]);
        }
        // A slot may expire between the listing and the delete, which then fails as a
        // whole: read again and retry, a few times.
        let mut tries = 0;
        while let Err(e) = self.backend.delete_elements(&doomed) {
            tries += 1;
            if tries == 3 {
                return Err(e.into());
            }
            let now = self.limit_listing(policy)?;
            doomed.retain(|(set, elem)| {
                now.elems
                    .get(set)
                    .into_iter()
                    .flatten()
                    .any(|(k, slot, _)| element_json(k, *slot) == *elem)
            });
            if doomed.is_empty() {
                break;
            }
        }
        let rules: Vec<String> = which.iter().map(|n| n.to_string()).collect();
        Ok(vec![format!(
            "Reset {key} in {} limit{} (rule {})",
            which.len(),
            if which.len() == 1 { "" } else { "s" },
            rules.join(", ")
        )])
    }
}
