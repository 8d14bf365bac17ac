//! UFW's rule language: the words after `allow|deny|reject|limit`, parsed into model rules.
//!
//! Grammar (see docs/GRAMMAR.md):
//! ```text
//! rule   := [in|out [on IFACE]] [log|log-all] (simple | full) [comment TEXT]
//! simple := PORTS[/PROTO] | SERVICE[/PROTO]
//! full   := clause+            (at least one of from / to)
//! clause := proto PROTO | from ADDR [port PORTS] | to ADDR [port PORTS]
//! PORTS  := PORT | PORT:PORT | PORTS,PORTS       (lists and ranges need tcp or udp)
//! ADDR   := any | IPV4[/LEN] | IPV6[/LEN]
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;
use thiserror::Error;

use crate::model::profiles::{Profiles, UFW_PROFILE_DIR};
use crate::model::{
    check_comment, Action, Direction, Endpoint, Family, Iface, Limit, LimitKey, Over, PortRange,
    Ports, Proto, Rate, Rule, RuleLog, Then, ValueError, MAX_CAPACITY, MAX_COMMENT_LEN, MAX_CONN,
    MAX_PORTS, MAX_RATE,
};

/// Where service names are looked up.
const SERVICES_FILE: &str = "/etc/services";

/// A rule the user typed, before it is split per IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRule {
    /// One rule per family it applies to (IPv4 first).
    pub rules: Vec<Rule>,
    /// Set when an address had host bits beyond its prefix and was truncated.
    pub normalized: bool,
}

/// Why a rule could not be parsed. The text is UFW's message where UFW has one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GrammarError {
    #[error("Wrong number of arguments")]
    WrongArgs,
    #[error("Invalid token '{0}'")]
    InvalidToken(String),
    #[error("Bad port '{0}'")]
    BadPortNamed(String),
    #[error("Port ranges must be numeric")]
    RangeNotNumeric,
    #[error("Must specify 'tcp' or 'udp' with multiple ports")]
    MultiNeedsProto,
    #[error("Too many ports specified: at most {MAX_PORTS} (a range counts as two)")]
    TooManyPorts,
    #[error("Bad source address")]
    BadSource,
    #[error("Bad destination address")]
    BadDestination,
    #[error("Mixed IP versions for 'from' and 'to'")]
    MixedVersions,
    #[error("Need 'to' or 'from' clause")]
    NeedToOrFrom,
    #[error("Protocol mismatch with specified protocol {0}")]
    ProtoMismatch(String),
    #[error("Unsupported protocol '{0}'")]
    UnsupportedProto(String),
    #[error("Invalid interface clause")]
    InvalidInterface,
    #[error("Bad interface name: can't use interface aliases")]
    InterfaceAlias,
    #[error("Bad interface name")]
    BadInterface,
    #[error("Bad interface name: interface name too long")]
    InterfaceTooLong,
    #[error("Bad interface name: nftables cannot match a name that starts with '@'")]
    InterfaceAt,
    #[error("Option '{0}' not allowed here")]
    OptionNotAllowed(String),
    #[error("Option 'comment' missing required argument")]
    CommentMissing,
    #[error("Comments may not contain a single quote (')")]
    CommentQuote,
    #[error("Comments may not contain control characters (newlines, tabs, escapes)")]
    CommentControl,
    #[error("Comments may be at most {MAX_COMMENT_LEN} bytes long")]
    CommentTooLong,
    #[error("Could not find a profile matching '{0}'")]
    NoProfile(String),
    #[error("Improper rule syntax")]
    Improper,
    #[error("Invalid port with protocol '{0}'")]
    PortWithProto(String),
    #[error("Invalid IPv6 address with protocol '{0}'")]
    V4OnlyProto(String),
    #[error("Duplicate '{0}' clause")]
    Duplicate(String),
    #[error("'{0}' is only for limit rules, e.g. 'limit 80/tcp {0} …'")]
    LimitOnly(String),
    #[error("Bad rate '{0}': use N/T with N from 1 to {MAX_RATE} and T a number of seconds, minutes or hours (e.g. 20/30s, 100/1m, 5/1h; at most 1 day)")]
    BadRate(String),
    #[error("Bad connection count '{0}': use a number from 1 to {MAX_CONN}")]
    BadConn(String),
    #[error("Bad capacity '{0}': use a number of sources from 1 to {MAX_CAPACITY}")]
    BadCapacity(String),
    #[error("Bad limit key '{0}': use 'per any', 'per source' or 'per /M' (IPv4 mask 1-32) or 'per /M,/N' (IPv4 mask, IPv6 mask 1-128)")]
    BadPer(String),
    #[error("Bad over action '{0}': use 'over reject' or 'over drop'")]
    BadOver(String),
    #[error("Bad then action '{0}': use 'then accept' or 'then continue'")]
    BadThen(String),
    #[error("'conn' needs a destination port and 'tcp' or 'udp', e.g. 'limit 3128/tcp conn 1'")]
    ConnNeedsPort,
    #[error("'except' needs destination ports to take the exceptions from, e.g. '1:65535/tcp except 30000:30005'")]
    ExceptNeedsPorts,
}

/// Parse the rule words that follow `action`.
pub fn parse_rule(action: Action, words: &[String]) -> Result<ParsedRule, GrammarError> {
    Parser::new(words).rule(action)
}

/// Parse the words of a route rule (`route allow …`): forwarded traffic, with `in on
/// IF` and `out on IF` both allowed.
pub fn parse_route_rule(action: Action, words: &[String]) -> Result<ParsedRule, GrammarError> {
    Parser {
        route: true,
        ..Parser::new(words)
    }
    .rule(action)
}

struct Parser<'a> {
    words: &'a [String],
    pos: usize,
    /// A route rule.
    route: bool,
}

/// What one `from`/`to` clause said, before family expansion.
#[derive(Default, Clone)]
struct Side {
    given: bool,
    addr: Option<IpNet>,
    ports: Option<PortSpec>,
    /// An application profile's name (`app NAME`, or a profile as the simple form).
    app: Option<String>,
    /// The IPv6 address was typed in another form than its shortest.
    rewritten: bool,
}

/// Ports as typed, and the protocol they imply (a service name or `PORT/PROTO`).
#[derive(Clone)]
struct PortSpec {
    ports: Ports,
    proto: Option<Proto>,
}

impl<'a> Parser<'a> {
    fn new(words: &'a [String]) -> Self {
        Parser {
            words,
            pos: 0,
            route: false,
        }
    }

    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(String::as_str)
    }

    fn next(&mut self) -> Option<&'a str> {
        let w = self.peek();
        if w.is_some() {
            self.pos += 1;
        }
        w
    }

    fn rule(mut self, action: Action) -> Result<ParsedRule, GrammarError> {
        if self.words.is_empty() {
            return Err(GrammarError::WrongArgs);
        }
        // [in|out [on IFACE]]
        let mut direction = Direction::In;
        let mut iface = None;
        let mut out_iface = None;
        let mut has_dir = false;
        if self.route {
            // route [in on IF] [out on IF]
            direction = Direction::Forward;
            while let Some(way @ ("in" | "out")) = self.peek() {
                self.pos += 1;
                if self.next() != Some("on") {
                    return Err(GrammarError::InvalidInterface);
                }
                let name = self.next().ok_or(GrammarError::InvalidInterface)?;
                let slot = if way == "in" {
                    &mut iface
                } else {
                    &mut out_iface
                };
                if slot.is_some() {
                    return Err(GrammarError::InvalidInterface);
                }
                *slot = Some(parse_iface(name)?);
            }
        }
        match self.peek() {
            _ if self.route => {}
            Some("in") => {
                self.pos += 1;
                has_dir = true;
            }
            Some("out") => {
                self.pos += 1;
                direction = Direction::Out;
                has_dir = true;
            }
            _ => {}
        }
        if self.peek() == Some("on") {
            if !has_dir {
                return Err(GrammarError::WrongArgs);
            }
            self.pos += 1;
            let name = self.next().ok_or(GrammarError::InvalidInterface)?;
            iface = Some(parse_iface(name)?);
        }
        // [log|log-all]
        let mut log = RuleLog::None;
        match self.peek() {
            Some("log") => {
                self.pos += 1;
                log = RuleLog::Log;
            }
            Some("log-all") => {
                self.pos += 1;
                log = RuleLog::LogAll;
            }
            _ => {}
        }
        // [comment TEXT] at the end.
        let mut end = self.words.len();
        let mut comment = None;
        if end > self.pos && self.words[end - 1] == "comment" {
            return Err(GrammarError::CommentMissing);
        }
        if end >= self.pos + 2 && self.words[end - 2] == "comment" {
            let text = &self.words[end - 1];
            check_comment(text).map_err(|e| match e {
                ValueError::CommentTooLong => GrammarError::CommentTooLong,
                ValueError::CommentControl => GrammarError::CommentControl,
                _ => GrammarError::CommentQuote,
            })?;
            // An empty comment is no comment (UFW stores nothing for it).
            comment = (!text.is_empty()).then(|| text.clone());
            end -= 2;
        }
        let (body, opts) = limit_options(&self.words[self.pos..end])?;
        let body = body.as_slice();
        // Words that may only come before the rule body.
        for w in body {
            match w.as_str() {
                "in" | "out" | "on" => return Err(GrammarError::InvalidInterface),
                "log" | "log-all" => return Err(GrammarError::OptionNotAllowed(w.clone())),
                "comment" => return Err(GrammarError::WrongArgs),
                _ => {}
            }
        }
        // `route allow out on eth1` names an interface too.
        let on_iface = iface.is_some() || out_iface.is_some();
        let (proto, from, to) = match body {
            // `allow in on eth0`: everything on that interface.
            [] if on_iface => (Proto::Any, Side::default(), Side::default()),
            [] => return Err(GrammarError::WrongArgs),
            // The simple form is not allowed with an interface (as in UFW).
            [_] if on_iface => return Err(GrammarError::WrongArgs),
            [word] => match parse_port_spec(word, true) {
                Ok(spec) => {
                    let proto = spec.proto.unwrap_or(Proto::Any);
                    let to = Side {
                        ports: Some(spec),
                        ..Side::default()
                    };
                    (proto, Side::default(), to)
                }
                Err(GrammarError::NoProfile(_)) if profiles().get(word).is_some() => {
                    let to = Side {
                        app: Some(word.clone()),
                        ..Side::default()
                    };
                    (Proto::Any, Side::default(), to)
                }
                Err(e) => return Err(e),
            },
            _ => full_form(body, on_iface)?,
        };
        let names_app = from.app.is_some() || to.app.is_some();
        let built = Built {
            opts,
            action,
            direction,
            out_iface,
            iface,
            log,
            proto,
            from,
            to,
            comment,
        };
        if names_app {
            with_app(built)
        } else {
            build(built)
        }
    }
}

fn parse_iface(name: &str) -> Result<Iface, GrammarError> {
    name.parse().map_err(|e| match e {
        ValueError::IfaceAlias(_) => GrammarError::InterfaceAlias,
        ValueError::IfaceTooLong(_) => GrammarError::InterfaceTooLong,
        ValueError::IfaceAt(_) => GrammarError::InterfaceAt,
        _ => GrammarError::BadInterface,
    })
}

/// The limit options as typed (values still unparsed where they depend on the rule).
#[derive(Default, Clone)]
struct LimitOptions {
    rate: Option<String>,
    conn: Option<String>,
    per: Option<String>,
    over: Option<String>,
    then: Option<String>,
    capacity: Option<String>,
    except: Option<String>,
}

impl LimitOptions {
    fn any_limit_word(&self) -> Option<&'static str> {
        [
            ("rate", self.rate.is_some()),
            ("conn", self.conn.is_some()),
            ("per", self.per.is_some()),
            ("over", self.over.is_some()),
            ("then", self.then.is_some()),
            ("capacity", self.capacity.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set)
        .map(|(w, _)| w)
    }
}

/// Take `rate|conn|per|over|then|except VALUE` pairs out of the rule words.
fn limit_options(words: &[String]) -> Result<(Vec<String>, LimitOptions), GrammarError> {
    let mut rest = Vec::new();
    let mut opts = LimitOptions::default();
    let mut i = 0;
    while i < words.len() {
        let slot = match words[i].as_str() {
            "rate" => &mut opts.rate,
            "conn" => &mut opts.conn,
            "per" => &mut opts.per,
            "over" => &mut opts.over,
            "then" => &mut opts.then,
            "capacity" => &mut opts.capacity,
            "except" => &mut opts.except,
            _ => {
                rest.push(words[i].clone());
                i += 1;
                continue;
            }
        };
        let Some(value) = words.get(i + 1) else {
            return Err(GrammarError::WrongArgs);
        };
        if slot.is_some() {
            return Err(GrammarError::Duplicate(words[i].clone()));
        }
        *slot = Some(value.clone());
        i += 2;
    }
    Ok((rest, opts))
}

fn parse_rate(text: &str) -> Result<Rate, GrammarError> {
    text.parse()
        .map_err(|_| GrammarError::BadRate(text.to_string()))
}

fn parse_per(text: &str, families: &[Family]) -> Result<LimitKey, GrammarError> {
    let bad = || GrammarError::BadPer(text.to_string());
    // A single mask is the IPv6 one for an IPv6-only rule, else the IPv4 one.
    let single = text.starts_with('/') && !text.contains(',');
    let key = if single && families == [Family::V6] {
        match format!("/32,{text}").parse() {
            Ok(key) => key,
            Err(_) => return Err(bad()),
        }
    } else {
        text.parse().map_err(|_| bad())?
    };
    Ok(key)
}

/// The keyword clauses of the full form.
fn full_form(body: &[String], has_iface: bool) -> Result<(Proto, Side, Side), GrammarError> {
    let mut proto: Option<Proto> = None;
    let mut from = Side::default();
    let mut to = Side::default();
    // Which side a following `port` belongs to.
    let mut last: Option<bool> = None; // Some(true) = from, Some(false) = to
    let mut i = 0;
    while i < body.len() {
        let key = body[i].as_str();
        let Some(value) = body.get(i + 1) else {
            return Err(match key {
                "proto" | "from" | "to" | "port" | "app" => GrammarError::WrongArgs,
                _ => GrammarError::InvalidToken(key.to_string()),
            });
        };
        match key {
            "proto" => {
                if proto.is_some() {
                    return Err(GrammarError::Duplicate("proto".into()));
                }
                proto = Some(
                    Proto::from_word(value)
                        .ok_or_else(|| GrammarError::UnsupportedProto(value.clone()))?,
                );
            }
            "from" | "to" => {
                let is_from = key == "from";
                let side = if is_from { &mut from } else { &mut to };
                if side.given {
                    return Err(GrammarError::Duplicate(key.into()));
                }
                side.given = true;
                side.rewritten = ipv6_rewritten(value);
                side.addr = parse_addr(value).map_err(|()| {
                    if is_from {
                        GrammarError::BadSource
                    } else {
                        GrammarError::BadDestination
                    }
                })?;
                last = Some(is_from);
            }
            "port" => {
                let side = match last {
                    Some(true) => &mut from,
                    Some(false) => &mut to,
                    None => return Err(GrammarError::Improper),
                };
                if side.ports.is_some() {
                    return Err(GrammarError::Duplicate("port".into()));
                }
                side.ports = Some(parse_port_spec(value, false)?);
            }
            "app" => {
                let side = match last {
                    Some(true) => &mut from,
                    Some(false) => &mut to,
                    None => return Err(GrammarError::Improper),
                };
                if side.app.is_some() {
                    return Err(GrammarError::Duplicate("app".into()));
                }
                if profiles().get(value).is_none() {
                    return Err(GrammarError::NoProfile(value.clone()));
                }
                side.app = Some(value.clone());
            }
            other => return Err(GrammarError::InvalidToken(other.to_string())),
        }
        i += 2;
    }
    // As UFW: `allow in on eth0 proto udp` needs no from or to; without an
    // interface one is needed.
    if !(from.given || to.given || (has_iface && proto.is_some())) {
        return Err(GrammarError::NeedToOrFrom);
    }
    // A service name on either side may imply the protocol.
    let implied = [&from, &to]
        .iter()
        .filter_map(|s| s.ports.as_ref().and_then(|p| p.proto))
        .collect::<Vec<_>>();
    let proto = match (proto, implied.as_slice()) {
        // As UFW: a service of one protocol cannot be used with the other.
        (Some(p), implied) if implied.iter().any(|q| *q != p) => {
            return Err(GrammarError::ProtoMismatch(p.word().to_string()))
        }
        (Some(p), _) => p,
        (None, [p]) => *p,
        (None, [a, b]) if a == b => *a,
        (None, _) => Proto::Any,
    };
    Ok((proto, from, to))
}

/// Whether `text` is an IPv6 address (or network) not written in its shortest form.
fn ipv6_rewritten(text: &str) -> bool {
    let addr = text.split('/').next().unwrap_or(text);
    addr.parse::<std::net::Ipv6Addr>()
        .is_ok_and(|a| a.to_string() != addr)
}

/// Parse `any`, an address, or a network. `Ok(None)` means anywhere.
fn parse_addr(text: &str) -> Result<Option<IpNet>, ()> {
    if text == "any" {
        return Ok(None);
    }
    if let Some((addr, len)) = text.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        // UFW also accepts a dotted netmask for IPv4.
        let len: u8 = match len.parse::<u8>() {
            Ok(l) if l <= max && !len.starts_with('+') => l,
            _ => match (addr, len.parse::<std::net::Ipv4Addr>()) {
                (IpAddr::V4(_), Ok(mask)) => {
                    let bits = u32::from(mask);
                    if bits.leading_ones() + bits.trailing_zeros() != 32 {
                        return Err(());
                    }
                    bits.leading_ones() as u8
                }
                _ => return Err(()),
            },
        };
        return IpNet::new(addr, len).map(Some).map_err(|_| ());
    }
    let addr: IpAddr = text.parse().map_err(|_| ())?;
    Ok(Some(IpNet::from(addr)))
}

/// Parse `PORTS[/PROTO]`. In the simple form a `/PROTO` suffix is allowed and the whole
/// may be a service name; in `port P` only ports or a service name are allowed.
fn parse_port_spec(text: &str, allow_proto: bool) -> Result<PortSpec, GrammarError> {
    let (ports_text, proto) = match text.split_once('/') {
        Some((p, proto)) if allow_proto => {
            let proto = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return Err(GrammarError::BadPortNamed(text.to_string())),
            };
            (p, Some(proto))
        }
        Some(_) => return Err(GrammarError::BadPortNamed(text.to_string())),
        None => (text, None),
    };
    if ports_text.is_empty() {
        return Err(GrammarError::BadPortNamed(text.to_string()));
    }
    let first = ports_text.chars().next().unwrap_or(' ');
    if first == '-' {
        return Err(GrammarError::BadPortNamed(text.to_string()));
    }
    if !first.is_ascii_digit() && !ports_text.contains(',') && !ports_text.contains(':') {
        // A service name.
        let (port, service_proto) = lookup_service(ports_text, proto).ok_or_else(|| {
            if allow_proto && proto.is_none() {
                GrammarError::NoProfile(text.to_string())
            } else {
                GrammarError::BadPortNamed(text.to_string())
            }
        })?;
        return Ok(PortSpec {
            ports: Ports(vec![PortRange::single(port)]),
            proto: proto.or(service_proto),
        });
    }
    let ports: Ports = ports_text.parse().map_err(|e| match e {
        ValueError::NotNumeric => GrammarError::RangeNotNumeric,
        ValueError::TooManyPorts => GrammarError::TooManyPorts,
        _ => GrammarError::BadPortNamed(match e {
            ValueError::BadPort(item) => item,
            _ => text.to_string(),
        }),
    })?;
    if ports.is_multi() && proto.is_none() && allow_proto {
        return Err(GrammarError::MultiNeedsProto);
    }
    Ok(PortSpec { ports, proto })
}

/// Services from /etc/services: name or alias → (port, protocols).
fn services() -> &'static HashMap<String, (u16, Vec<Proto>)> {
    static SERVICES: OnceLock<HashMap<String, (u16, Vec<Proto>)>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let text = std::fs::read_to_string(SERVICES_FILE).unwrap_or_default();
        parse_services(&text)
    })
}

/// Parse the text of an /etc/services file.
pub fn parse_services(text: &str) -> HashMap<String, (u16, Vec<Proto>)> {
    let mut map: HashMap<String, (u16, Vec<Proto>)> = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, proto)) = port_proto.split_once('/') else {
            continue;
        };
        let (Ok(port), Some(proto @ (Proto::Tcp | Proto::Udp))) =
            (port.parse::<u16>(), Proto::from_word(proto))
        else {
            continue;
        };
        for n in std::iter::once(name).chain(fields) {
            let entry = map.entry(n.to_string()).or_insert((port, Vec::new()));
            if entry.0 == port && !entry.1.contains(&proto) {
                entry.1.push(proto);
            }
        }
    }
    map
}

/// Look up a service; returns its port and the protocol it implies (None = tcp and udp).
fn lookup_service(name: &str, want: Option<Proto>) -> Option<(u16, Option<Proto>)> {
    let (port, protos) = services().get(name)?;
    match want {
        Some(p) if protos.contains(&p) => Some((*port, Some(p))),
        Some(_) => None,
        None if protos.len() == 1 => Some((*port, Some(protos[0]))),
        None => Some((*port, None)),
    }
}

struct Built {
    opts: LimitOptions,
    action: Action,
    direction: Direction,
    iface: Option<Iface>,
    out_iface: Option<Iface>,
    log: RuleLog,
    proto: Proto,
    from: Side,
    to: Side,
    comment: Option<String>,
}

/// A rule naming an application profile: one rule per group of the profile's ports
/// (and per family), each carrying the profile's name.
fn with_app(b: Built) -> Result<ParsedRule, GrammarError> {
    if (b.from.app.is_some() && b.to.app.is_some())
        || b.proto != Proto::Any
        || [&b.from, &b.to]
            .iter()
            .any(|s| s.app.is_some() && s.ports.is_some())
    {
        // As UFW: an app is one side's ports and protocol.
        return Err(GrammarError::Improper);
    }
    let on_from = b.from.app.is_some();
    let name = b.from.app.clone().or(b.to.app.clone()).unwrap_or_default();
    let profile = profiles()
        .get(&name)
        .ok_or_else(|| GrammarError::NoProfile(name.clone()))?;
    let mut out = ParsedRule {
        rules: Vec::new(),
        normalized: false,
    };
    for (proto, ports) in &profile.groups {
        let spec = PortSpec {
            ports: ports.clone(),
            proto: Some(*proto),
        };
        let mut one = Built {
            opts: b.opts.clone(),
            proto: *proto,
            from: b.from.clone(),
            to: b.to.clone(),
            iface: b.iface.clone(),
            out_iface: b.out_iface.clone(),
            comment: b.comment.clone(),
            ..b
        };
        if on_from {
            one.from.ports = Some(spec);
        } else {
            one.to.ports = Some(spec);
        }
        let parsed = build(one)?;
        out.normalized |= parsed.normalized;
        out.rules.extend(parsed.rules);
    }
    // IPv4 rules first, as for every rule.
    out.rules.sort_by_key(|r| r.family);
    Ok(out)
}

/// Where application profiles are read from: set once, before the first rule is
/// parsed (the command line sets the config directory's own first).
static PROFILE_DIRS: OnceLock<Vec<std::path::PathBuf>> = OnceLock::new();

/// Read profiles from `dirs` (earlier first) instead of UFW's directory alone.
pub fn use_profile_dirs(dirs: Vec<std::path::PathBuf>) {
    let _ = PROFILE_DIRS.set(dirs);
}

/// The application profiles (read once per process).
pub fn profiles() -> &'static Profiles {
    static PROFILES: OnceLock<Profiles> = OnceLock::new();
    PROFILES.get_or_init(|| {
        let dirs = PROFILE_DIRS
            .get_or_init(|| vec![std::path::PathBuf::from(UFW_PROFILE_DIR)])
            .clone();
        Profiles::load(&dirs)
    })
}

/// Check the combination and split it into one rule per IP family.
fn build(b: Built) -> Result<ParsedRule, GrammarError> {
    let sports = b.from.ports.map(|s| s.ports);
    let dports = b.to.ports.map(|s| s.ports);
    let has_ports = sports.is_some() || dports.is_some();
    if has_ports && !b.proto.has_ports() {
        return Err(GrammarError::PortWithProto(b.proto.word().to_string()));
    }
    let multi = sports.iter().chain(dports.iter()).any(Ports::is_multi);
    if multi && !matches!(b.proto, Proto::Tcp | Proto::Udp) {
        return Err(GrammarError::MultiNeedsProto);
    }
    // As UFW: an IPv4 network with host bits is truncated (with a warning); an IPv6
    // one is kept as typed, and an IPv6 address typed in another form than its
    // shortest is rewritten (with a warning).
    let mut normalized = b.from.rewritten || b.to.rewritten;
    let mut norm = |n: Option<IpNet>| {
        n.map(|n| match n {
            IpNet::V4(_) => {
                let t = n.trunc();
                normalized |= t != n;
                t
            }
            IpNet::V6(_) => n,
        })
    };
    let src = norm(b.from.addr);
    let dst = norm(b.to.addr);
    let fam_of = |n: &IpNet| match n {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    };
    let families = match (src.as_ref().map(fam_of), dst.as_ref().map(fam_of)) {
        (Some(a), Some(b)) if a != b => return Err(GrammarError::MixedVersions),
        (Some(f), _) | (None, Some(f)) => vec![f],
        (None, None) if matches!(b.proto, Proto::Ipv6 | Proto::Igmp) => vec![Family::V4],
        (None, None) => vec![Family::V4, Family::V6],
    };
    if matches!(b.proto, Proto::Ipv6 | Proto::Igmp) && families == [Family::V6] {
        return Err(GrammarError::V4OnlyProto(b.proto.word().to_string()));
    }
    // `0.0.0.0/0` and `::/0` are "anywhere" of one family, as in UFW: the same rule as
    // one typed without an address (so `deny from 0.0.0.0/0 to any port 22` updates
    // the IPv4 copy of `allow 22`).
    let anywhere = |n: Option<IpNet>| n.filter(|n| n.prefix_len() > 0);
    let (src, dst) = (anywhere(src), anywhere(dst));
    let o = &b.opts;
    if b.action != Action::Limit {
        if let Some(word) = o.any_limit_word() {
            return Err(GrammarError::LimitOnly(word.to_string()));
        }
    }
    let except = match &o.except {
        None => None,
        Some(_) if dports.is_none() => return Err(GrammarError::ExceptNeedsPorts),
        Some(text) => Some(parse_port_spec(text, false)?.ports),
    };
    let limit = if o.any_limit_word().is_some() {
        let rate = o.rate.as_deref().map(parse_rate).transpose()?;
        let conn = match &o.conn {
            None => None,
            Some(t) => match t.parse::<u32>() {
                Ok(n) if (1..=MAX_CONN).contains(&n) => Some(n),
                _ => return Err(GrammarError::BadConn(t.clone())),
            },
        };
        if conn.is_some() && (dports.is_none() || !matches!(b.proto, Proto::Tcp | Proto::Udp)) {
            return Err(GrammarError::ConnNeedsPort);
        }
        let over = match o.over.as_deref() {
            None | Some("reject") => Over::Reject,
            Some("drop") | Some("deny") => Over::Drop,
            Some(other) => return Err(GrammarError::BadOver(other.to_string())),
        };
        let then = match o.then.as_deref() {
            None | Some("accept") | Some("allow") => Then::Accept,
            Some("continue") => Then::Continue,
            Some(other) => return Err(GrammarError::BadThen(other.to_string())),
        };
        let per = match &o.per {
            None => LimitKey::default(),
            Some(t) => parse_per(t, &families)?,
        };
        let capacity = match &o.capacity {
            None => None,
            Some(t) => match t.parse::<u32>() {
                Ok(n) if (1..=MAX_CAPACITY).contains(&n) => Some(n),
                _ => return Err(GrammarError::BadCapacity(t.clone())),
            },
        };
        // Only `per`, `over`, `then` or `capacity` given: the rate is UFW's.
        let rate = if rate.is_none() && conn.is_none() {
            Some(crate::model::UFW_LIMIT)
        } else {
            rate
        };
        Some(Limit {
            rate,
            conn,
            per,
            over,
            then,
            capacity,
        })
    } else {
        None
    };
    let rules = families
        .into_iter()
        .map(|family| Rule {
            action: b.action,
            direction: b.direction,
            iface: b.iface.clone(),
            out_iface: b.out_iface.clone(),
            log: b.log,
            family,
            proto: b.proto,
            from: Endpoint {
                addr: src,
                ports: sports.clone(),
                app: b.from.app.clone(),
            },
            to: Endpoint {
                addr: dst,
                ports: dports.clone(),
                app: b.to.app.clone(),
            },
            except: except.clone(),
            limit: limit.clone(),
            comment: b.comment.clone(),
        })
        .collect();
    Ok(ParsedRule { rules, normalized })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ParsedRule, GrammarError> {
        let words: Vec<String> = text.split_whitespace().map(String::from).collect();
        parse_rule(Action::Allow, &words)
    }

    #[test]
    fn simple_forms() {
        let r = parse("22/tcp").unwrap();
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.rules[0].proto, Proto::Tcp);
        assert_eq!(r.rules[0].family, Family::V4);
        assert_eq!(r.rules[1].family, Family::V6);
        let r = parse("80,443/tcp").unwrap();
        assert_eq!(r.rules[0].to.ports.as_ref().unwrap().to_string(), "80,443");
        let r = parse("60000:61000/udp").unwrap();
        assert_eq!(r.rules[0].proto, Proto::Udp);
        assert_eq!(
            r.rules[0].to.ports.as_ref().unwrap().to_string(),
            "60000:61000"
        );
        assert_eq!(parse("22").unwrap().rules[0].proto, Proto::Any);
    }

    #[test]
    fn full_forms() {
        let r = parse("proto udp from 198.18.0.5 to any port 5353").unwrap();
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.rules[0].family, Family::V4);
        assert_eq!(r.rules[0].from.addr.unwrap().to_string(), "198.18.0.5/32");
        let r = parse("from 2001:db8::5 to any port 53 proto udp").unwrap();
        assert_eq!(r.rules[0].family, Family::V6);
        let r = parse("in on eth0 log to any port 80 proto tcp comment web").unwrap();
        assert_eq!(r.rules[0].iface.as_ref().map(Iface::as_str), Some("eth0"));
        assert_eq!(r.rules[0].log, RuleLog::Log);
        assert_eq!(r.rules[0].comment.as_deref(), Some("web"));
        let r = parse("from 198.18.0.77/24").unwrap();
        assert!(r.normalized);
        assert_eq!(r.rules[0].from.addr.unwrap().to_string(), "198.18.0.0/24");
    }

    #[test]
    fn bad_forms() {
        let cases = [
            ("99999", GrammarError::BadPortNamed("99999".into())),
            ("0", GrammarError::BadPortNamed("0".into())),
            ("-1", GrammarError::BadPortNamed("-1".into())),
            ("22/TCP", GrammarError::BadPortNamed("22/TCP".into())),
            (
                "to any port 38/tcp",
                GrammarError::BadPortNamed("38/tcp".into()),
            ),
            (
                "to any port ssh,http proto tcp",
                GrammarError::RangeNotNumeric,
            ),
            ("in on eth0 22", GrammarError::WrongArgs),
            (
                "log log-all 22",
                GrammarError::OptionNotAllowed("log-all".into()),
            ),
            ("39/tcp log", GrammarError::OptionNotAllowed("log".into())),
            ("in out 22", GrammarError::InvalidInterface),
            ("22/tcp comment", GrammarError::CommentMissing),
            ("bogus", GrammarError::NoProfile("bogus".into())),
            (
                "proto ipv6 from 2001:db8::1",
                GrammarError::V4OnlyProto("ipv6".into()),
            ),
            ("80:70/tcp", GrammarError::BadPortNamed("80:70".into())),
            ("80:90", GrammarError::MultiNeedsProto),
            ("22,23", GrammarError::MultiNeedsProto),
            ("a:b/tcp", GrammarError::RangeNotNumeric),
            ("22/sctp", GrammarError::BadPortNamed("22/sctp".into())),
            ("from 198.18.0.300", GrammarError::BadSource),
            ("from 198.18.0.0/33", GrammarError::BadSource),
            ("to 2001:db8::/129", GrammarError::BadDestination),
            (
                "from 198.18.0.1 to 2001:db8::1",
                GrammarError::MixedVersions,
            ),
            ("proto tcp", GrammarError::NeedToOrFrom),
            ("in on eth0:1 to any", GrammarError::InterfaceAlias),
            ("in on @x to any", GrammarError::InterfaceAt),
            ("in on eth$0 to any", GrammarError::BadInterface),
            ("in on + to any", GrammarError::BadInterface),
            (
                "proto ah to any port 80",
                GrammarError::PortWithProto("ah".into()),
            ),
            ("from any port 80,443", GrammarError::MultiNeedsProto),
            ("port 22 from any", GrammarError::Improper),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn services_file_parsing() {
        let m = parse_services("ssh 22/tcp # SSH\nfoo 99/udp bar\nfoo 99/tcp\n");
        assert_eq!(m["ssh"], (22, vec![Proto::Tcp]));
        assert_eq!(m["bar"], (99, vec![Proto::Udp]));
        assert_eq!(m["foo"].1.len(), 2);
    }
}
