//! rampart's table read from the kernel over nfnetlink, without starting `nft` (which
//! builds its whole cache, every element of every set, before it lists anything: 0.4 s
//! at 10,000 rules). Each reading is one snapshot: the ruleset's generation is read
//! before and after its dumps (see [`snapshot`]).
//!
//! What is read:
//! - [`counters`] (`status verbose`): one dump of each user chain's rules and one of
//!   each map's elements, for their counters; keys are matched to the plan's elements
//!   by their bytes, as the kernel holds them (see [`key_bytes`]);
//! - [`names`]: the names of the table's chains, sets and maps (before a change, and to
//!   verify it after);
//! - [`set_elements`]: a set's keys and comments (the stamps, for every command).
//!
//! What is written: [`write_elements`], an element-only change of sets and maps as one
//! batch (one transaction), the elements nft would send for it. Everything else is
//! nft's.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{NfListObject, SetFlag, SetType, SetTypeValue};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

use crate::compile::{key_text, Plan};

use super::Counters;

/// nfnetlink subsystem of nf_tables, and its message types.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// Netlink header flags and message types.
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
/// A dump's parts were made across a change of what it lists.
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `inet` tables.
const NFPROTO_INET: u8 = 1;
/// Rule attributes.
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
/// Chain and set attributes.
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_MAP: u32 = 0x8;
/// Expression attributes.
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
/// Set element attributes.
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_EXPR: u16 = 7;
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_DATA_VALUE: u16 = 1;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;

fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// A request (a dump, when `dump`) of nf_tables message `msg` with these attributes.
fn request(msg: u16, seq: u32, dump: bool, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![NFPROTO_INET, 0, 0, 0];
    for (kind, payload) in attrs {
        attr(&mut body, *kind, payload);
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
    let flags = if dump {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&body);
    out
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_ne_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn be64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// The attributes of a netlink attribute stream: (type without flags, payload).
fn attrs(mut a: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while a.len() >= 4 {
        let len = u16_at(a, 0) as usize;
        if len < 4 || len > a.len() {
            break;
        }
        out.push((u16_at(a, 2) & 0x3fff, &a[4..len]));
        a = &a[len.next_multiple_of(4).min(a.len())..];
    }
    out
}

fn get<'a>(a: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    a.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One netlink message of a datagram.
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    body: &'a [u8],
    /// The buffer ended inside it: `body` is what was received of it.
    cut: bool,
}

/// The messages of a received datagram, in order; the last one may be cut.
fn messages(mut b: &[u8]) -> io::Result<Vec<Message<'_>>> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32_at(b, 0) as usize;
        if len < 16 {
            return Err(io::Error::other("a malformed netlink message"));
        }
        let cut = len > b.len();
        out.push(Message {
            kind: u16_at(b, 4),
            flags: u16_at(b, 6),
            seq: u32_at(b, 8),
            body: &b[16..len.min(b.len())],
            cut,
        });
        b = if cut {
            &[]
        } else {
            &b[len.next_multiple_of(4).min(b.len())..]
        };
    }
    Ok(out)
}

/// The code of an `NLMSG_ERROR` or `NLMSG_DONE` message (0, or a negative errno).
fn error_code(body: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(body.get(..4)?.try_into().ok()?))
}

/// A counter expression's packets and bytes, if `expr` (one expression's attributes)
/// is a counter.
fn counter(expr: &[u8]) -> Option<(u64, u64)> {
    let a = attrs(expr);
    if text(get(&a, NFTA_EXPR_NAME)?) != "counter" {
        return None;
    }
    let d = attrs(get(&a, NFTA_EXPR_DATA)?);
    Some((
        be64(get(&d, NFTA_COUNTER_PACKETS)?)?,
        be64(get(&d, NFTA_COUNTER_BYTES)?)?,
    ))
}

/// A socket for nf_tables dumps in this network namespace.
struct Dumper {
    fd: OwnedFd,
    seq: u32,
}

impl Dumper {
    fn new() -> io::Result<Dumper> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Dumper { fd, seq: 0 })
    }

    /// The payloads (after the 4-byte nfgenmsg) of every message of type `reply` a
    /// request answers with (a dump's, when `dump`). An error when the kernel reports
    /// one, when a dump was interrupted by a change (its parts would not agree), or
    /// when a message did not fit the buffer.
    fn ask(
        &mut self,
        msg: u16,
        reply: u16,
        dump: bool,
        attrs: &[(u16, Vec<u8>)],
    ) -> io::Result<Vec<Vec<u8>>> {
        self.seq += 1;
        send(
            self.fd.as_raw_fd(),
            &request(msg, self.seq, dump, attrs),
            MsgFlags::empty(),
        )?;
        let want = (NFNL_SUBSYS_NFTABLES << 8) | reply;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC)?;
            if n > buf.len() {
                return Err(io::Error::other("a netlink message did not fit the buffer"));
            }
            if n == 0 {
                return Err(io::Error::other("netlink closed before the answer ended"));
            }
            for m in messages(&buf[..n])? {
                if m.cut {
                    return Err(io::Error::other("a cut netlink message"));
                }
                if m.seq != self.seq {
                    continue;
                }
                if m.flags & NLM_F_DUMP_INTR != 0 {
                    return Err(io::Error::other("the table changed during the dump"));
                }
                match m.kind {
                    NLMSG_DONE => {
                        return match error_code(m.body) {
                            Some(c) if c < 0 => Err(io::Error::from_raw_os_error(-c)),
                            _ => Ok(out),
                        };
                    }
                    NLMSG_ERROR => {
                        return match error_code(m.body) {
                            Some(0) if !dump => Ok(out),
                            Some(c) if c < 0 => Err(io::Error::from_raw_os_error(-c)),
                            _ => Err(io::Error::from_raw_os_error(libc_eio())),
                        };
                    }
                    k if k == want => {
                        out.push(m.body.get(4..).unwrap_or(&[]).to_vec());
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn dump(&mut self, msg: u16, reply: u16, attrs: &[(u16, Vec<u8>)]) -> io::Result<Vec<Vec<u8>>> {
        self.ask(msg, reply, true, attrs)
    }

    /// A dump of one table's objects (`table_attr`: the attribute that names their
    /// table, in the request and in each answer; `more`: the request's other
    /// attributes): `f` is given each object's attributes, the table's only.
    fn table_dump(
        &mut self,
        (msg, reply): (u16, u16),
        (table_attr, table): (u16, &str),
        more: &[(u16, Vec<u8>)],
        mut f: impl FnMut(&[(u16, &[u8])]),
    ) -> io::Result<()> {
        let mut req = vec![(table_attr, cstr(table))];
        req.extend_from_slice(more);
        for msg in self.dump(msg, reply, &req)? {
            let a = attrs(&msg);
            if get(&a, table_attr).map(text).as_deref() == Some(table) {
                f(&a);
            }
        }
        Ok(())
    }

    /// The ruleset's generation: it changes with every committed transaction.
    fn generation(&mut self) -> io::Result<u32> {
        let msgs = self.ask(NFT_MSG_GETGEN, NFT_MSG_NEWGEN, false, &[])?;
        let a = attrs(
            msgs.first()
                .ok_or_else(|| io::Error::other("no generation"))?,
        );
        get(&a, NFTA_GEN_ID)
            .and_then(be32)
            .ok_or_else(|| io::Error::other("no generation"))
    }
}

fn libc_eio() -> i32 {
    nix::errno::Errno::EIO as i32
}

/// The bytes of one field of a key as the kernel holds it: addresses and ports in
/// network order, protocols as one byte, marks in the host's order (in network order
/// in an interval map, as nft writes range keys).
fn field_bytes(e: &Expression, t: &SetType, interval: bool) -> Option<Vec<u8>> {
    // The start of a prefix or a range.
    let start = match e {
        Expression::Named(NamedExpression::Prefix(p)) => p.addr.as_ref(),
        Expression::Range(r) => &r.range[0],
        other => other,
    };
    Some(match (t, start) {
        (SetType::Ipv4Addr | SetType::Ipv6Addr, Expression::String(s)) => {
            match s.parse::<IpAddr>().ok()? {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            }
        }
        (SetType::InetProto, Expression::String(s)) => vec![match s.as_ref() {
            "tcp" => 6,
            "udp" => 17,
            _ => return None,
        }],
        (SetType::InetProto, Expression::Number(n)) => vec![u8::try_from(*n).ok()?],
        (SetType::InetService, Expression::Number(n)) => {
            u16::try_from(*n).ok()?.to_be_bytes().to_vec()
        }
        (SetType::Mark, Expression::Number(n)) if interval => n.to_be_bytes().to_vec(),
        (SetType::Mark, Expression::Number(n)) => n.to_ne_bytes().to_vec(),
        _ => return None,
    })
}

/// A plan element's key as the bytes of the kernel's element that starts it: the start
/// of each field, each field of a concatenation padded to 4 bytes.
pub fn key_bytes(key: &Expression, types: &SetTypeValue, interval: bool) -> Option<Vec<u8>> {
    match (key, types) {
        (Expression::Named(NamedExpression::Concat(parts)), SetTypeValue::Concatenated(ts))
            if parts.len() == ts.len() =>
        {
            let mut out = Vec::new();
            for (p, t) in parts.iter().zip(ts.iter()) {
                let mut f = field_bytes(p, t, interval)?;
                f.resize(f.len().next_multiple_of(4), 0);
                out.extend(f);
            }
            Some(out)
        }
        (k, SetTypeValue::Single(t)) => field_bytes(k, t, interval),
        _ => None,
    }
}

/// One field's first and last value, as the kernel holds them (see [`field_bytes`]).
fn field_range(e: &Expression, t: &SetType, interval: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    match e {
        Expression::Named(NamedExpression::Prefix(p)) => {
            let Expression::String(addr) = p.addr.as_ref() else {
                return None;
            };
            let net: ipnet::IpNet = format!("{addr}/{}", p.len).parse().ok()?;
            let bytes = |a: IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            Some((bytes(net.network()), bytes(net.broadcast())))
        }
        Expression::Range(r) => Some((
            field_bytes(&r.range[0], t, interval)?,
            field_bytes(&r.range[1], t, interval)?,
        )),
        other => {
            let b = field_bytes(other, t, interval)?;
            Some((b.clone(), b))
        }
    }
}

/// A plan element's key as the first and the last key it covers, in the kernel's
/// bytes (each field of a concatenation padded to 4 bytes).
fn key_range_bytes(key: &Expression, types: &SetTypeValue) -> Option<(Vec<u8>, Vec<u8>)> {
    match (key, types) {
        (Expression::Named(NamedExpression::Concat(parts)), SetTypeValue::Concatenated(ts))
            if parts.len() == ts.len() =>
        {
            let (mut first, mut last) = (Vec::new(), Vec::new());
            for (p, t) in parts.iter().zip(ts.iter()) {
                let (mut a, mut b) = field_range(p, t, true)?;
                a.resize(a.len().next_multiple_of(4), 0);
                b.resize(b.len().next_multiple_of(4), 0);
                first.extend(a);
                last.extend(b);
            }
            Some((first, last))
        }
        (k, SetTypeValue::Single(t)) => field_range(k, t, true),
        _ => None,
    }
}

/// The key after `key` (big-endian), or None past the largest.
fn next_key(key: &[u8]) -> Option<Vec<u8>> {
    let mut out = key.to_vec();
    for byte in out.iter_mut().rev() {
        if *byte == u8::MAX {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(out);
        }
    }
    None
}

/// What `read` reads, in one snapshot: the ruleset's generation is the same before
/// and after it (tried again, then given up, if a transaction came between).
fn snapshot<T>(mut read: impl FnMut(&mut Dumper) -> io::Result<T>) -> io::Result<T> {
    let mut d = Dumper::new()?;
    for _ in 0..3 {
        let before = d.generation()?;
        let out = read(&mut d)?;
        if d.generation()? == before {
            return Ok(out);
        }
    }
    Err(io::Error::other(
        "the ruleset kept changing while it was read",
    ))
}

/// The counters of the plan's tagged rules and map elements, as the kernel holds them
/// now: rules by (chain, index in the chain), elements by (map, key text).
pub fn counters(table: &str, plan: &Plan) -> io::Result<Counters> {
    Ok(raw_counters(table)?.of_plan(plan, &element_index(plan)))
}

/// Every counter of the rules of the chains that may hold user rules (all but a
/// limit's own) and of every map's elements, read before the plan is known (`status
/// verbose` compiles meanwhile); [`RawCounters::of_plan`] says whose they are.
#[derive(Debug, Default)]
pub struct RawCounters {
    /// Chain → the counter of each of its rules, in order (None: a rule without one).
    rules: HashMap<String, Vec<Option<(u64, u64)>>>,
    /// Map → its elements' counters by key bytes.
    elements: HashMap<String, HashMap<Vec<u8>, (u64, u64)>>,
}

/// The key bytes and key text of each element of the plan's maps whose elements stand
/// for user rules, by map.
pub type ElementIndex = HashMap<String, Vec<(Vec<u8>, String)>>;

/// The [`ElementIndex`] of a plan.
pub fn element_index(plan: &Plan) -> ElementIndex {
    let tagged: std::collections::HashSet<&str> =
        plan.element_tags.keys().map(|(m, _)| m.as_str()).collect();
    let mut out = ElementIndex::new();
    for obj in &plan.objects {
        let NfListObject::Map(m) = obj else { continue };
        if !tagged.contains(m.name.as_ref()) {
            continue;
        }
        let interval = m
            .flags
            .as_ref()
            .is_some_and(|f| f.contains(&SetFlag::Interval));
        let keys = m
            .elem
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .filter_map(|e| match e {
                Expression::List(kv) => {
                    Some((key_bytes(&kv[0], &m.set_type, interval)?, key_text(&kv[0])))
                }
                _ => None,
            })
            .collect();
        out.insert(m.name.to_string(), keys);
    }
    out
}

/// Read [`RawCounters`], in one snapshot.
pub fn raw_counters(table: &str) -> io::Result<RawCounters> {
    snapshot(|d| read_raw(d, table))
}

fn read_raw(d: &mut Dumper, table: &str) -> io::Result<RawCounters> {
    let mut out = RawCounters::default();
    let chains = chain_names(d, table)?;
    let (_, maps) = set_names(d, table)?;
    // A limit's chains hold no user rule (the rule that jumps to one is in a user
    // chain), and there are hundreds of them.
    use crate::compile::{LIMIT_CHAIN_PREFIX, UNMARK_PREFIX};
    let holds_user_rules =
        |c: &&String| !c.starts_with(LIMIT_CHAIN_PREFIX) && !c.starts_with(UNMARK_PREFIX);
    for chain in chains.iter().filter(holds_user_rules) {
        let mut counts = Vec::new();
        d.table_dump(
            (NFT_MSG_GETRULE, NFT_MSG_NEWRULE),
            (NFTA_RULE_TABLE, table),
            &[(NFTA_RULE_CHAIN, cstr(chain))],
            |a| {
                if get(a, NFTA_RULE_CHAIN).map(text).as_deref() == Some(chain.as_str()) {
                    counts.push(
                        get(a, NFTA_RULE_EXPRESSIONS)
                            .map(attrs)
                            .unwrap_or_default()
                            .into_iter()
                            .find_map(|(_, e)| counter(e)),
                    );
                }
            },
        )?;
        out.rules.insert(chain.clone(), counts);
    }
    for map in maps {
        let mut counts = HashMap::new();
        each_element(d, table, &map, |key, e| {
            let c = get(e, NFTA_SET_ELEM_EXPR).and_then(counter).or_else(|| {
                get(e, NFTA_SET_ELEM_EXPRESSIONS)
                    .map(attrs)
                    .unwrap_or_default()
                    .into_iter()
                    .find_map(|(_, x)| counter(x))
            });
            if let Some(c) = c {
                counts.insert(key, c);
            }
        })?;
        out.elements.insert(map, counts);
    }
    Ok(out)
}

impl RawCounters {
    /// The counter of a chain's rule (by its index in the chain).
    pub fn rule(&self, chain: &str, n: usize) -> Option<(u64, u64)> {
        self.rules.get(chain)?.get(n).copied().flatten()
    }

    /// The counter of a map's element (by its key's bytes).
    pub fn element(&self, map: &str, key: &[u8]) -> Option<(u64, u64)> {
        self.elements.get(map)?.get(key).copied()
    }

    /// The counters of the plan's tagged rules and map elements (`index`: the plan's
    /// [`element_index`]).
    pub fn of_plan(&self, plan: &Plan, index: &ElementIndex) -> Counters {
        let mut out = Counters::default();
        for (chain, n) in plan.rule_tags.keys() {
            if let Some(c) = self.rule(chain, *n) {
                out.rules.insert((chain.clone(), *n), c);
            }
        }
        for (map, keys) in index {
            for (bytes, text) in keys {
                if let Some(c) = self.element(map, bytes) {
                    out.elements.insert((map.clone(), text.clone()), c);
                }
            }
        }
        out
    }
}

/// Each element of a set, in one dump: its key's bytes and its attributes (the end
/// elements of intervals left out).
fn each_element(
    d: &mut Dumper,
    table: &str,
    set: &str,
    mut f: impl FnMut(Vec<u8>, &[(u16, &[u8])]),
) -> io::Result<()> {
    let req = [
        (NFTA_SET_ELEM_LIST_TABLE, cstr(table)),
        (NFTA_SET_ELEM_LIST_SET, cstr(set)),
    ];
    for msg in d.dump(NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM, &req)? {
        let a = attrs(&msg);
        let Some(list) = get(&a, NFTA_SET_ELEM_LIST_ELEMENTS) else {
            continue;
        };
        for (_, el) in attrs(list) {
            let e = attrs(el);
            let end = get(&e, NFTA_SET_ELEM_FLAGS)
                .and_then(be32)
                .is_some_and(|f| f & NFT_SET_ELEM_INTERVAL_END != 0);
            let key = get(&e, NFTA_SET_ELEM_KEY)
                .map(attrs)
                .and_then(|k| get(&k, NFTA_DATA_VALUE).map(<[u8]>::to_vec));
            if let (false, Some(key)) = (end, key) {
                f(key, &e);
            }
        }
    }
    Ok(())
}

/// What `rampart limits` reads of the kernel: the elements of the limits' state sets
/// (key bytes, milliseconds until the element expires) and, per limit chain, the
/// packets counted by its rules that go to a refusing chain.
#[derive(Debug, Default)]
pub struct LimitReading {
    pub elems: HashMap<String, Vec<TimedElement>>,
    pub refused: HashMap<String, u64>,
}

/// A set element's key bytes and the milliseconds until it expires.
pub type TimedElement = (Vec<u8>, Option<u64>);

const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_IMMEDIATE_DATA: u16 = 2;

/// The state sets' elements and the chains' refused counts, in one snapshot: one dump
/// of the table's rules, one of each set's elements (a set that is not there has none).
pub fn limit_reading(table: &str, sets: &[String], chains: &[String]) -> io::Result<LimitReading> {
    snapshot(|d| {
        let mut out = LimitReading::default();
        let wanted: std::collections::HashSet<&str> = chains.iter().map(String::as_str).collect();
        let rules = (NFT_MSG_GETRULE, NFT_MSG_NEWRULE);
        d.table_dump(rules, (NFTA_RULE_TABLE, table), &[], |a| {
            let Some(chain) = get(a, NFTA_RULE_CHAIN).map(text) else {
                return;
            };
            if !wanted.contains(chain.as_str()) {
                return;
            }
            let exprs = get(a, NFTA_RULE_EXPRESSIONS).map(attrs).unwrap_or_default();
            if exprs.iter().any(|(_, e)| is_goto(e)) {
                let packets: u64 = exprs
                    .iter()
                    .filter_map(|(_, e)| counter(e))
                    .map(|(p, _)| p)
                    .sum();
                *out.refused.entry(chain).or_default() += packets;
            }
        })?;
        for set in sets {
            let mut elems = Vec::new();
            let read = each_element(d, table, set, |key, e| {
                elems.push((key, get(e, NFTA_SET_ELEM_EXPIRATION).and_then(be64)));
            });
            match read {
                Ok(()) => {
                    out.elems.insert(set.clone(), elems);
                }
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
}

/// Whether an expression is an `immediate` that sets a goto verdict.
fn is_goto(expr: &[u8]) -> bool {
    let a = attrs(expr);
    if get(&a, NFTA_EXPR_NAME).map(text).as_deref() != Some("immediate") {
        return false;
    }
    let code = get(&a, NFTA_EXPR_DATA)
        .map(attrs)
        .and_then(|d| get(&d, NFTA_IMMEDIATE_DATA).map(attrs))
        .and_then(|d| get(&d, NFTA_DATA_VERDICT).map(attrs))
        .and_then(|v| get(&v, NFTA_VERDICT_CODE).and_then(be32));
    code == Some(NFT_GOTO as u32)
}

/// The names of a table's chains, sets and maps, in one snapshot.
pub fn names(table: &str) -> io::Result<(Vec<String>, Vec<String>, Vec<String>)> {
    snapshot(|d| {
        let chains = chain_names(d, table)?;
        let (sets, maps) = set_names(d, table)?;
        Ok((chains, sets, maps))
    })
}

fn chain_names(d: &mut Dumper, table: &str) -> io::Result<Vec<String>> {
    let mut chains = Vec::new();
    let msgs = (NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN);
    d.table_dump(msgs, (NFTA_CHAIN_TABLE, table), &[], |a| {
        chains.extend(get(a, NFTA_CHAIN_NAME).map(text));
    })?;
    Ok(chains)
}

/// The names of a table's named sets and of its maps.
fn set_names(d: &mut Dumper, table: &str) -> io::Result<(Vec<String>, Vec<String>)> {
    let (mut sets, mut maps) = (Vec::new(), Vec::new());
    let msgs = (NFT_MSG_GETSET, NFT_MSG_NEWSET);
    d.table_dump(msgs, (NFTA_SET_TABLE, table), &[], |a| {
        let Some(name) = get(a, NFTA_SET_NAME).map(text) else {
            return;
        };
        let flags = get(a, NFTA_SET_FLAGS).and_then(be32).unwrap_or(0);
        // Anonymous sets (`{ 22, 80 }` in a rule) are the rules', not the table's.
        if flags & NFT_SET_ANONYMOUS != 0 {
            return;
        }
        if flags & NFT_SET_MAP != 0 {
            maps.push(name);
        } else {
            sets.push(name);
        }
    })?;
    Ok((sets, maps))
}

/// Batch messages and the element commands of a transaction.
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// The comment in an element's user data, as nft writes it (libnftnl's udata).
const UDATA_ELEM_COMMENT: u8 = 0;
/// The most bytes of elements one message carries (an attribute's length is 16 bits).
const LIST_BYTES: usize = 32 * 1024;
/// Verdict codes.
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_CONTINUE: i32 = -1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// What an element command does: `add` (an element already there with the same value
/// is no error), `create` (an element already there fails the transaction), `delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementOp {
    Add,
    Create,
    Delete,
}

/// What a map's elements map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementData {
    /// A set: keys only.
    None,
    /// A verdict map.
    Verdict,
    /// A map to marks (a mixed run's stages).
    Mark,
}

/// How a set holds its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    /// A hash: exact keys.
    Exact,
    /// Intervals of one field (the kernel's rbtree): an interval is an element at its
    /// first key and an end element just past its last (none past the largest key).
    Intervals,
    /// Intervals of a concatenation (the kernel's pipapo): one element with the first
    /// and the last key.
    Ranges,
}

/// One element command: these elements of one set or map (keys of type `key`).
pub struct ElementChange<'a> {
    pub op: ElementOp,
    pub set: &'a str,
    pub key: &'a SetTypeValue<'a>,
    pub layout: KeyLayout,
    pub data: ElementData,
    pub elems: &'a [Expression<'a>],
}

/// Why element changes were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Something the writer does not encode (nothing was sent).
    #[error("not written over netlink: {0}")]
    Unsupported(String),
    /// The kernel refused the transaction (nothing changed), or it could not be sent.
    #[error("netlink: {0}")]
    Kernel(io::Error),
}

fn nest(buf: &mut Vec<u8>, kind: u16, inner: &[u8]) {
    attr(buf, kind | NLA_F_NESTED, inner);
}

fn data_value(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    attr(&mut v, NFTA_DATA_VALUE, bytes);
    v
}

fn verdict_data(v: &Expression) -> Result<Vec<u8>, String> {
    use nftables::expr::Verdict as V;
    let Expression::Verdict(v) = v else {
        return Err(format!("not a verdict: {v:?}"));
    };
    let (code, chain) = match v {
        V::Accept => (NF_ACCEPT, None),
        V::Drop => (NF_DROP, None),
        V::Continue => (NFT_CONTINUE, None),
        V::Return => (NFT_RETURN, None),
        V::Jump(t) => (NFT_JUMP, Some(&t.target)),
        V::Goto(t) => (NFT_GOTO, Some(&t.target)),
    };
    let mut verdict = Vec::new();
    attr(&mut verdict, NFTA_VERDICT_CODE, &code.to_be_bytes());
    if let Some(chain) = chain {
        attr(&mut verdict, NFTA_VERDICT_CHAIN, &cstr(chain));
    }
    let mut out = Vec::new();
    nest(&mut out, NFTA_DATA_VERDICT, &verdict);
    Ok(out)
}

/// One element's kernel elements: the attributes of each (inside its
/// `NFTA_LIST_ELEM`). Two for an interval of one field (its start and its end).
fn element_attrs(e: &Expression, c: &ElementChange) -> Result<Vec<Vec<u8>>, String> {
    let (key, value, comment) = match e {
        Expression::List(kv) if kv.len() == 2 => (&kv[0], Some(&kv[1]), None),
        Expression::Named(NamedExpression::Elem(el)) => {
            (el.val.as_ref(), None, el.comment.as_deref())
        }
        other => (other, None, None),
    };
    let cannot = || format!("a key it cannot encode: {key:?}");
    let (first, last) = match c.layout {
        KeyLayout::Exact => (key_bytes(key, c.key, false).ok_or_else(cannot)?, None),
        KeyLayout::Intervals | KeyLayout::Ranges => {
            let (a, b) = key_range_bytes(key, c.key).ok_or_else(cannot)?;
            (a, Some(b))
        }
    };
    let mut out = Vec::new();
    nest(&mut out, NFTA_SET_ELEM_KEY, &data_value(&first));
    if let (KeyLayout::Ranges, Some(last)) = (c.layout, &last) {
        nest(&mut out, NFTA_SET_ELEM_KEY_END, &data_value(last));
    }
    if c.op != ElementOp::Delete {
        match (c.data, value) {
            (ElementData::None, None) => {}
            (ElementData::Verdict, Some(v)) => {
                nest(&mut out, NFTA_SET_ELEM_DATA, &verdict_data(v)?)
            }
            (ElementData::Mark, Some(Expression::Number(n))) => {
                nest(&mut out, NFTA_SET_ELEM_DATA, &data_value(&n.to_ne_bytes()))
            }
            (_, v) => return Err(format!("a value it cannot encode: {v:?}")),
        }
        if let Some(text) = comment {
            let mut t = cstr(text);
            let len = u8::try_from(t.len()).map_err(|_| "a comment over 255 bytes".to_string())?;
            t.splice(0..0, [UDATA_ELEM_COMMENT, len]);
            attr(&mut out, NFTA_SET_ELEM_USERDATA, &t);
        }
    }
    let mut elements = vec![out];
    // The end of an interval of one field, unless it runs to the largest key.
    if let (KeyLayout::Intervals, Some(last)) = (c.layout, &last) {
        if let Some(end) = next_key(last) {
            let mut out = Vec::new();
            nest(&mut out, NFTA_SET_ELEM_KEY, &data_value(&end));
            attr(
                &mut out,
                NFTA_SET_ELEM_FLAGS,
                &NFT_SET_ELEM_INTERVAL_END.to_be_bytes(),
            );
            elements.push(out);
        }
    }
    Ok(elements)
}

/// A netlink message: header, nfgenmsg (`family`, `res_id`) and attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + attrs.len());
    out.extend_from_slice(&((20 + attrs.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0]);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    out
}

/// Write element commands as one nf_tables transaction (one netlink batch): all of
/// them are applied or none is. Elements are written as nft writes them (see
/// [`KeyLayout`]), except that an interval map never gets nft's "first segment" (an
/// end element at key 0, which nft adds to an empty interval set and which matches
/// nothing).
pub fn write_elements(table: &str, changes: &[ElementChange]) -> Result<(), WriteError> {
    let mut body = Vec::new();
    let mut seq = 1u32;
    let mut last = 0;
    let mut msgs = Vec::new();
    for c in changes.iter().filter(|c| !c.elems.is_empty()) {
        let (kind, flags) = match c.op {
            ElementOp::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
            ElementOp::Create => (NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL),
            ElementOp::Delete => (NFT_MSG_DELSETELEM, 0),
        };
        // An attribute's length is 16 bits: the elements go in messages of at most
        // LIST_BYTES each (an interval's start and end in the same one).
        let mut lists = vec![Vec::new()];
        for e in c.elems {
            let mut one = Vec::new();
            for el in element_attrs(e, c).map_err(WriteError::Unsupported)? {
                nest(&mut one, NFTA_LIST_ELEM, &el);
            }
            let list = lists.last_mut().expect("one list at least");
            if !list.is_empty() && list.len() + one.len() > LIST_BYTES {
                lists.push(one);
            } else {
                list.extend(one);
            }
        }
        for list in lists {
            let mut a = Vec::new();
            attr(&mut a, NFTA_SET_ELEM_LIST_TABLE, &cstr(table));
            attr(&mut a, NFTA_SET_ELEM_LIST_SET, &cstr(c.set));
            nest(&mut a, NFTA_SET_ELEM_LIST_ELEMENTS, &list);
            seq += 1;
            last = seq;
            msgs.push((kind, flags, seq, a));
        }
    }
    if msgs.is_empty() {
        return Ok(());
    }
    body.extend(message(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    for (kind, flags, seq, a) in &msgs {
        // Only the last command asks for an acknowledgement: an error is always
        // reported, and the transaction stands or falls as one.
        let ack = if *seq == last { NLM_F_ACK } else { 0 };
        body.extend(message(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            NLM_F_REQUEST | flags | ack,
            *seq,
            NFPROTO_INET,
            0,
            a,
        ));
    }
    body.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        last + 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    transact(&body, last).map_err(WriteError::Kernel)
}

/// Send a batch and wait for the acknowledgement of its message `last` (or the first
/// error the kernel reports).
fn transact(batch: &[u8], last: u32) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let d = Dumper::new()?;
    let fd = d.fd.as_raw_fd();
    let fd_ref = &d.fd;
    let _ = setsockopt(fd_ref, sockopt::SndBufForce, &(batch.len() + 4096));
    setsockopt(
        fd_ref,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    let sent = send(fd, batch, MsgFlags::empty())?;
    if sent != batch.len() {
        return Err(io::Error::other("the batch was not sent whole"));
    }
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(fd, &mut buf, MsgFlags::MSG_TRUNC)?;
        if n == 0 {
            return Err(io::Error::other("netlink closed before the answer"));
        }
        for m in messages(&buf[..n.min(buf.len())])? {
            // An error echoes the message it answers, which may not fit the buffer:
            // its code comes first.
            if m.cut && m.kind != NLMSG_ERROR {
                return Err(io::Error::other("a cut netlink message"));
            }
            if m.kind != NLMSG_ERROR {
                continue;
            }
            match error_code(m.body) {
                Some(c) if c < 0 => return Err(io::Error::from_raw_os_error(-c)),
                Some(_) if m.seq == last => return Ok(()),
                _ => {}
            }
        }
    }
}

/// A set element as the kernel holds it: its key's bytes and its comment.
pub type RawElement = (Vec<u8>, Option<String>);

/// The elements of a set. None when the set (or its table) is not there.
pub fn set_elements(table: &str, set: &str) -> io::Result<Option<Vec<RawElement>>> {
    let mut out = Vec::new();
    let read = each_element(&mut Dumper::new()?, table, set, |key, e| {
        out.push((key, get(e, NFTA_SET_ELEM_USERDATA).and_then(comment)));
    });
    match read {
        Ok(()) => Ok(Some(out)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a dump failed because the set (or its table) is not there.
fn is_absent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENOENT as i32)
}

/// The comment in an element's user data (type-length-value records).
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (kind, len) = (udata[0], usize::from(udata[1]));
        let value = udata.get(2..2 + len)?;
        if kind == UDATA_ELEM_COMMENT {
            return Some(text(value));
        }
        udata = &udata[2 + len..];
    }
    None
}
