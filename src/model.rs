//! The policy model: what the user asked for, free of any nftables detail.
//!
//! This is what is persisted (as TOML) and what `status` shows; the kernel ruleset is
//! always derived from it by `compile`.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole firewall policy kept in the config directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Whether the firewall is active (and is to be loaded at boot).
    #[serde(default)]
    pub enabled: bool,
    /// Default verdicts for traffic that matches no rule.
    #[serde(default)]
    pub defaults: Defaults,
    /// Logging level.
    #[serde(default)]
    pub logging: LogLevel,
    /// User rules in evaluation order (first match wins). IPv4 rules come before IPv6 ones,
    /// as in UFW, so that a rule's number is its 1-based index here.
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: false,
            defaults: Defaults::default(),
            logging: LogLevel::Low,
            rules: Vec::new(),
        }
    }
}

/// Default policies per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    /// Traffic to this host (default: deny).
    pub incoming: Verdict,
    /// Traffic from this host (default: allow).
    pub outgoing: Verdict,
    /// Forwarded traffic (default: deny, shown as "disabled" when forwarding is off).
    pub routed: Verdict,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            incoming: Verdict::Deny,
            outgoing: Verdict::Allow,
            routed: Verdict::Deny,
        }
    }
}

/// A terminal verdict: what a default policy or a plain rule does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Drop it silently.
    Deny,
    /// Refuse it: TCP reset, or ICMP port-unreachable for anything else.
    Reject,
}

impl Verdict {
    /// The lower-case word used on the command line and in `status verbose`.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Reject => "reject",
        }
    }
}

/// UFW's logging levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Nothing is logged.
    Off,
    /// Blocked packets that match no rule (rate-limited), and rules marked `log`.
    #[default]
    Low,
    /// Low, plus allowed packets that match no rule, invalid packets and new connections.
    Medium,
    /// Medium without the rate limit on new connections, plus all packets (rate-limited).
    High,
    /// Everything, nothing rate-limited.
    Full,
}

impl LogLevel {
    /// The word shown by `status verbose`.
    pub fn word(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Low => "low",
            LogLevel::Medium => "medium",
            LogLevel::High => "high",
            LogLevel::Full => "full",
        }
    }
}

/// What a rule does with the connections it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Accept.
    Allow,
    /// Drop silently.
    Deny,
    /// Refuse (TCP reset / ICMP port-unreachable).
    Reject,
    /// Rate- or connection-limited accept; see [`Limit`].
    Limit,
}

impl Action {
    /// Upper-case word as shown by `status`.
    pub fn upper(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Reject => "REJECT",
            Action::Limit => "LIMIT",
        }
    }

    /// Lower-case word as typed on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Reject => "reject",
            Action::Limit => "limit",
        }
    }
}

/// Which way the traffic a rule matches flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To this host.
    #[default]
    In,
    /// From this host.
    Out,
}

/// Per-rule logging (`log` / `log-all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleLog {
    /// No per-rule logging.
    #[default]
    None,
    /// Log new connections matching the rule.
    Log,
    /// Log every packet matching the rule.
    LogAll,
}

/// The IP family a rule applies to. A rule typed without addresses is stored twice,
/// once per family, exactly as UFW does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Transport or network protocol matched by a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Any protocol (with ports: TCP and UDP).
    #[default]
    Any,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// IPsec authentication header.
    Ah,
    /// IPsec encapsulating security payload.
    Esp,
    /// Generic routing encapsulation.
    Gre,
    /// IPv6 encapsulated in IPv4 (IPv4 only).
    Ipv6,
    /// IGMP (IPv4 only).
    Igmp,
    /// Virtual router redundancy protocol.
    Vrrp,
}

impl Proto {
    /// The protocol's name as typed and shown.
    pub fn word(self) -> &'static str {
        match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Ah => "ah",
            Proto::Esp => "esp",
            Proto::Gre => "gre",
            Proto::Ipv6 => "ipv6",
            Proto::Igmp => "igmp",
            Proto::Vrrp => "vrrp",
        }
    }

    /// Parse a protocol name.
    pub fn from_word(word: &str) -> Option<Proto> {
        Some(match word {
            "any" => Proto::Any,
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "ah" => Proto::Ah,
            "esp" => Proto::Esp,
            "gre" => Proto::Gre,
            "ipv6" => Proto::Ipv6,
            "igmp" => Proto::Igmp,
            "vrrp" => Proto::Vrrp,
            _ => return None,
        })
    }

    /// Whether the protocol has ports.
    pub fn has_ports(self) -> bool {
        matches!(self, Proto::Any | Proto::Tcp | Proto::Udp)
    }

    /// IANA protocol number (for `Any`, none).
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Ah => Some(51),
            Proto::Esp => Some(50),
            Proto::Gre => Some(47),
            Proto::Ipv6 => Some(41),
            Proto::Igmp => Some(2),
            Proto::Vrrp => Some(112),
        }
    }
}

/// An inclusive port range; a single port has `first == last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port (1..=65535).
    pub first: u16,
    /// Last port (>= first).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A port match: one port, or a list of ports and ranges (as typed, in order).
/// Stored as typed: `"22"`, `"80,443"`, `"1000:2000"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Ports(pub Vec<PortRange>);

impl From<Ports> for String {
    fn from(p: Ports) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Ports {
    type Error = String;
    fn try_from(text: String) -> Result<Ports, String> {
        let bad = || format!("bad port list '{text}'");
        let port = |t: &str| t.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
        text.split(',')
            .map(|item| match item.split_once(':') {
                Some((a, b)) => Ok(PortRange {
                    first: port(a)?,
                    last: port(b)?,
                }),
                None => port(item).map(PortRange::single),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Ports)
    }
}

impl Ports {
    /// Whether `port` is matched.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|r| r.contains(port))
    }

    /// Whether this is a list or a range (which UFW requires a protocol for).
    pub fn is_multi(&self) -> bool {
        self.0.len() > 1 || self.0.iter().any(|r| r.first != r.last)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One end of a rule: an address (or anywhere), a port match, and the app profile or
/// service name the ports came from, kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address or network; `None` means anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpNet>,
    /// Ports; `None` means any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
}

/// One user rule, for one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// What to do with matching connections.
    pub action: Action,
    /// Incoming or outgoing.
    #[serde(default)]
    pub direction: Direction,
    /// Interface name (`in on eth0` / `out on eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// Per-rule logging.
    #[serde(default, skip_serializing_if = "is_default")]
    pub log: RuleLog,
    /// IP family.
    pub family: Family,
    /// Protocol.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proto: Proto,
    /// Source.
    #[serde(default, skip_serializing_if = "is_default")]
    pub from: Endpoint,
    /// Destination.
    #[serde(default, skip_serializing_if = "is_default")]
    pub to: Endpoint,
    /// Destination ports excluded from `to.ports` (`except 30000:30005`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except: Option<Ports>,
    /// Limit settings of a `limit` rule; `None` means UFW's plain limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
    /// Free-text comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A `limit` rule's settings (rampart's extension of UFW's fixed limit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// At most `count` new connections per key in any window of `seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// At most this many open connections per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<u32>,
    /// What the limits are counted per.
    #[serde(default)]
    pub per: LimitKey,
    /// What happens to connections over the limit.
    #[serde(default)]
    pub over: Over,
    /// What happens to connections under the limit.
    #[serde(default)]
    pub then: Then,
}

/// UFW's plain `limit`: 6 attempts in 30 s per source, so 5 connections are accepted
/// in any 30 s window and the 6th is refused (measured against ufw 0.36.2).
pub const UFW_LIMIT: Rate = Rate {
    count: 5,
    seconds: 30,
};

impl Limit {
    /// The settings a plain `limit` (no options) stands for.
    pub fn ufw_default() -> Limit {
        Limit {
            rate: Some(UFW_LIMIT),
            conn: None,
            per: LimitKey::default(),
            over: Over::Reject,
            then: Then::Accept,
        }
    }
}

/// N new connections per T seconds. Stored as typed: `"20/30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Rate {
    /// N.
    pub count: u32,
    /// T, in seconds.
    pub seconds: u32,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.seconds;
        if t.is_multiple_of(3600) {
            write!(f, "{}/{}h", self.count, t / 3600)
        } else if t.is_multiple_of(60) {
            write!(f, "{}/{}m", self.count, t / 60)
        } else {
            write!(f, "{}/{}s", self.count, t)
        }
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(text: String) -> Result<Rate, String> {
        let bad = || format!("bad rate '{text}'");
        let (n, t) = text.split_once('/').ok_or_else(bad)?;
        let unit = match t.chars().last() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            _ => return Err(bad()),
        };
        let t: u32 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        Ok(Rate {
            count: n.parse().map_err(|_| bad())?,
            seconds: t.checked_mul(unit).ok_or_else(bad)?,
        })
    }
}

/// Default IPv6 prefix a "source" is counted by: one host can hold a whole /64.
pub const DEFAULT_V6_SOURCE_PREFIX: u8 = 64;

/// What a limit counts per. Stored as typed: `"any"`, `"source"`, `"/24,/64"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum LimitKey {
    /// Per source network: IPv4 addresses masked to `v4` bits, IPv6 to `v6` bits.
    Source {
        /// IPv4 prefix length (32 = per address).
        v4: u8,
        /// IPv6 prefix length (64 by default).
        v6: u8,
    },
    /// One count for everyone, IPv4 and IPv6 together.
    Any,
}

impl Default for LimitKey {
    fn default() -> Self {
        LimitKey::Source {
            v4: 32,
            v6: DEFAULT_V6_SOURCE_PREFIX,
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LimitKey::Any => f.write_str("any"),
            LimitKey::Source { v4: 32, v6 } if v6 == DEFAULT_V6_SOURCE_PREFIX => {
                f.write_str("source")
            }
            LimitKey::Source { v4, v6 } => write!(f, "/{v4},/{v6}"),
        }
    }
}

impl From<LimitKey> for String {
    fn from(k: LimitKey) -> String {
        k.to_string()
    }
}

impl TryFrom<String> for LimitKey {
    type Error = String;
    fn try_from(text: String) -> Result<LimitKey, String> {
        let bad = || format!("bad limit key '{text}'");
        match text.as_str() {
            "any" => Ok(LimitKey::Any),
            "source" => Ok(LimitKey::default()),
            _ => {
                let (a, b) = text.split_once(',').ok_or_else(bad)?;
                let m = |t: &str, max: u8| {
                    t.strip_prefix('/')
                        .and_then(|t| t.parse::<u8>().ok())
                        .filter(|m| (1..=max).contains(m))
                        .ok_or_else(bad)
                };
                Ok(LimitKey::Source {
                    v4: m(a, 32)?,
                    v6: m(b, 128)?,
                })
            }
        }
    }
}

/// What a limit does with a connection over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// TCP reset (ICMP port-unreachable for UDP): clients fail fast.
    #[default]
    Reject,
    /// Drop silently.
    Drop,
}

/// What a limit does with a connection under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Then {
    /// Accept it (UFW's meaning).
    #[default]
    Accept,
    /// Let the following rules and the default policy decide.
    Continue,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Rule {
    /// Whether this rule ends the evaluation of every connection it matches.
    pub fn is_terminal(&self) -> bool {
        match self.action {
            Action::Allow | Action::Deny | Action::Reject => true,
            Action::Limit => self.limit.as_ref().is_none_or(|l| l.then == Then::Accept),
        }
    }

    /// Whether this rule is terminal and matches everything `other` matches.
    pub fn covers(&self, other: &Rule) -> bool {
        let protos = |r: &Rule| -> Vec<Proto> {
            match r.proto {
                Proto::Any if r.from.ports.is_some() || r.to.ports.is_some() => {
                    vec![Proto::Tcp, Proto::Udp]
                }
                Proto::Any => vec![Proto::Any],
                p => vec![p],
            }
        };
        let mine = protos(self);
        let proto_ok = mine == [Proto::Any] || protos(other).iter().all(|p| mine.contains(p));
        let addr_ok = |a: &Option<IpNet>, b: &Option<IpNet>| match (a, b) {
            (None, _) => true,
            (Some(a), Some(b)) => a.contains(b),
            (Some(_), None) => false,
        };
        let ports_ok = |a: &Option<Ports>, ex: Option<&Ports>, b: &Option<Ports>| match (a, b) {
            (None, _) if ex.is_none() => true,
            (_, None) => false,
            (a, Some(b)) => b.0.iter().all(|r| {
                let inside = a
                    .as_ref()
                    .is_none_or(|a| a.0.iter().any(|x| x.first <= r.first && r.last <= x.last));
                let hole =
                    ex.is_some_and(|e| e.0.iter().any(|x| x.first <= r.last && r.first <= x.last));
                inside && !hole
            }),
        };
        self.is_terminal()
            && self.direction == other.direction
            && self.family == other.family
            && (self.iface.is_none() || self.iface == other.iface)
            && proto_ok
            && addr_ok(&self.from.addr, &other.from.addr)
            && addr_ok(&self.to.addr, &other.to.addr)
            && ports_ok(&self.from.ports, None, &other.from.ports)
            && ports_ok(&self.to.ports, self.except.as_ref(), &other.to.ports)
    }

    /// Whether two rules match the same traffic (action, log and comment aside).
    /// This is UFW's notion of "existing rule".
    pub fn same_match(&self, other: &Rule) -> bool {
        let strip = |r: &Rule| Rule {
            action: Action::Allow,
            log: RuleLog::None,
            limit: None,
            comment: None,
            ..r.clone()
        };
        strip(self) == strip(other)
    }
}

/// Where a new rule goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// After the rules of its family.
    Append,
    /// At this 1-based rule number.
    Insert(usize),
    /// First among the rules of its family.
    Prepend,
}

/// A rule number that names no rule, or a rule of the other IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPosition(pub usize);

/// What adding one rule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// A new rule was added.
    Added,
    /// A new rule was inserted at a position.
    Inserted,
    /// An existing rule with the same match got a new action, log or comment.
    Updated,
    /// An identical rule exists.
    Skipped,
}

impl Policy {
    /// Number of rules of one family.
    pub fn count(&self, family: Family) -> usize {
        self.rules.iter().filter(|r| r.family == family).count()
    }

    /// Add the rules of one command (one per family) at a position, as UFW does: an
    /// identical rule is skipped, a rule with the same match but another action, log or
    /// comment replaces it in place.
    ///
    /// `Insert(n)` puts each rule before rule `n` when that rule is of the same family,
    /// else before rule `n`'s counterpart of the other family (the same rule typed
    /// without an address), else at the end of its family's block. It is an error for
    /// `n` to name no rule, or for a single-family rule to name a rule of the other family.
    pub fn add_all(
        &mut self,
        rules: Vec<Rule>,
        position: Position,
    ) -> Result<Vec<AddOutcome>, InvalidPosition> {
        let anchor = match position {
            Position::Insert(n) => {
                let Some(anchor) = n.checked_sub(1).and_then(|i| self.rules.get(i)) else {
                    return Err(InvalidPosition(n));
                };
                if rules.len() == 1 && rules[0].family != anchor.family {
                    return Err(InvalidPosition(n));
                }
                Some(anchor.clone())
            }
            _ => None,
        };
        Ok(rules
            .into_iter()
            .map(|rule| self.add(rule, position, anchor.as_ref()))
            .collect())
    }

    fn add(&mut self, rule: Rule, position: Position, anchor: Option<&Rule>) -> AddOutcome {
        if let Some(i) = self.rules.iter().position(|r| r.same_match(&rule)) {
            if self.rules[i] == rule {
                return AddOutcome::Skipped;
            }
            self.rules[i] = rule;
            return AddOutcome::Updated;
        }
        let v4 = self.count(Family::V4);
        let (start, end) = match rule.family {
            Family::V4 => (0, v4),
            Family::V6 => (v4, self.rules.len()),
        };
        let at = match (position, anchor) {
            (Position::Insert(_), Some(anchor)) => {
                let counterpart = |r: &Rule| {
                    r.family == rule.family
                        && (r == anchor
                            || (r.from.addr.is_none()
                                && r.to.addr.is_none()
                                && Rule {
                                    family: anchor.family,
                                    ..r.clone()
                                } == *anchor))
                };
                self.rules.iter().position(counterpart).unwrap_or(end)
            }
            (Position::Prepend, _) => start,
            _ => end,
        };
        self.rules.insert(at, rule);
        match position {
            Position::Append => AddOutcome::Added,
            _ => AddOutcome::Inserted,
        }
    }

    /// The number of the first earlier rule that decides every connection rule `n`
    /// (1-based) could match, so that rule `n` can never match.
    pub fn shadowed_by(&self, n: usize) -> Option<usize> {
        let rule = self.rules.get(n.checked_sub(1)?)?;
        self.rules[..n - 1]
            .iter()
            .position(|e| e.covers(rule))
            .map(|i| i + 1)
    }

    /// Remove rule number `n` (1-based).
    pub fn remove_number(&mut self, n: usize) -> Option<Rule> {
        (n >= 1 && n <= self.rules.len()).then(|| self.rules.remove(n - 1))
    }

    /// Remove the rule matching `rule` (same match and action). Returns whether found.
    pub fn remove_matching(&mut self, rule: &Rule) -> bool {
        match self
            .rules
            .iter()
            .position(|r| r.same_match(rule) && r.action == rule.action)
        {
            Some(i) => {
                self.rules.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The first packet of a new connection, as the user rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// IP family.
    pub family: Family,
    /// To this host (`In`) or from it (`Out`).
    pub direction: Direction,
    /// Input interface (for `In`) or output interface (for `Out`).
    pub iface: String,
    /// Protocol (never `Any`).
    pub proto: Proto,
    /// Source address.
    pub src: std::net::IpAddr,
    /// Destination address.
    pub dst: std::net::IpAddr,
    /// Source port (TCP/UDP).
    pub sport: u16,
    /// Destination port (TCP/UDP).
    pub dport: u16,
}

/// What the user rules decide for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Accepted.
    Accept,
    /// Dropped.
    Drop,
    /// Refused.
    Reject,
    /// No rule decided: the default policy will.
    NoMatch,
}

impl Rule {
    /// Whether the rule matches the packet (the reference reading of a rule).
    pub fn matches(&self, p: &Packet) -> bool {
        let has_ports = self.from.ports.is_some() || self.to.ports.is_some();
        let proto_ok = match self.proto {
            Proto::Any if has_ports => matches!(p.proto, Proto::Tcp | Proto::Udp),
            Proto::Any => true,
            other => other == p.proto,
        };
        let net_ok = |n: &Option<IpNet>, a: &std::net::IpAddr| n.is_none_or(|n| n.contains(a));
        let ports_ok =
            |ports: &Option<Ports>, port: u16| ports.as_ref().is_none_or(|x| x.contains(port));
        self.direction == p.direction
            && self.family == p.family
            && self.iface.as_ref().is_none_or(|i| *i == p.iface)
            && proto_ok
            && net_ok(&self.from.addr, &p.src)
            && net_ok(&self.to.addr, &p.dst)
            && ports_ok(&self.from.ports, p.sport)
            && ports_ok(&self.to.ports, p.dport)
            && !self.except.as_ref().is_some_and(|e| e.contains(p.dport))
    }
}

impl Policy {
    /// The reference first-match evaluation of the user rules. A `limit` rule is read
    /// as if its limit were not reached (accept, or go on with `then continue`).
    pub fn decide(&self, p: &Packet) -> Decision {
        for rule in self.rules.iter().filter(|r| r.matches(p)) {
            return match rule.action {
                Action::Allow => Decision::Accept,
                Action::Deny => Decision::Drop,
                Action::Reject => Decision::Reject,
                Action::Limit if rule.is_terminal() => Decision::Accept,
                Action::Limit => continue,
            };
        }
        Decision::NoMatch
    }
}
