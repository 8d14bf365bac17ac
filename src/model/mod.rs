//! The policy model: what the user asked for, free of any nftables detail.
//!
//! This is what is persisted (as TOML) and what `status` shows; the kernel ruleset is
//! always derived from it by `compile`.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub mod check;
mod eval;
mod logging;
pub mod profiles;
mod validate;
mod values;

pub use eval::{Decision, Packet};
pub use logging::{LogLevel, RuleLog};
pub use validate::ValidationError;
pub use values::{
    check_comment, inert, is_hazard, push_hex, Iface, LimitKey, PortRange, Ports, Rate, ValueError,
    DEFAULT_V6_SOURCE_PREFIX, MAX_COMMENT_LEN, MAX_CONN, MAX_IFACE_LEN, MAX_PORTS, MAX_RATE,
    MAX_RATE_SECONDS,
};

/// The whole firewall policy kept in the config directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    /// The nflog group log records go to (`logging to nflog N`); none: the kernel log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<u16>,
    /// What `app update --add-new NAME` adds for a profile no rule names yet.
    #[serde(default, skip_serializing_if = "NewProfiles::is_skip")]
    pub new_profiles: NewProfiles,
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
            log_group: None,
            new_profiles: NewProfiles::Skip,
            rules: Vec::new(),
        }
    }
}

/// UFW's policy for new application profiles (`app default`): a rule of this action
/// for the profile, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewProfiles {
    /// Add no rule.
    #[default]
    Skip,
    Allow,
    Deny,
    Reject,
}

impl NewProfiles {
    fn is_skip(&self) -> bool {
        *self == NewProfiles::Skip
    }

    /// The word `app default` takes and `status verbose` shows.
    pub fn word(self) -> &'static str {
        match self {
            NewProfiles::Skip => "skip",
            NewProfiles::Allow => "allow",
            NewProfiles::Deny => "deny",
            NewProfiles::Reject => "reject",
        }
    }

    /// The rule action it stands for (None for skip).
    pub fn action(self) -> Option<Action> {
        match self {
            NewProfiles::Skip => None,
            NewProfiles::Allow => Some(Action::Allow),
            NewProfiles::Deny => Some(Action::Deny),
            NewProfiles::Reject => Some(Action::Reject),
        }
    }
}

/// Default policies per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Traffic to this host (default: deny).
    pub incoming: Verdict,
    /// Traffic from this host (default: allow).
    pub outgoing: Verdict,
    /// Forwarded traffic (default: disabled, rampart filters none of it).
    #[serde(default)]
    pub routed: Routed,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            incoming: Verdict::Deny,
            outgoing: Verdict::Allow,
            routed: Routed::Disabled,
        }
    }
}

/// The default for forwarded traffic. `Disabled` (the default) means rampart does not
/// look at forwarded traffic at all, so the tables of Docker, Podman or libvirt that
/// route for containers and VMs decide alone; the others filter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routed {
    /// rampart filters no forwarded traffic.
    #[default]
    Disabled,
    /// Filtered, and what no rule decides is accepted.
    Allow,
    /// Filtered, and what no rule decides is dropped.
    Deny,
    /// Filtered, and what no rule decides is refused.
    Reject,
}

impl Routed {
    /// The verdict for what no rule decides, when rampart filters forwarded traffic.
    pub fn verdict(self) -> Option<Verdict> {
        match self {
            Routed::Disabled => None,
            Routed::Allow => Some(Verdict::Allow),
            Routed::Deny => Some(Verdict::Deny),
            Routed::Reject => Some(Verdict::Reject),
        }
    }

    /// The word shown by `status verbose`.
    pub fn word(self) -> &'static str {
        match self.verdict() {
            None => "disabled",
            Some(v) => v.word(),
        }
    }
}

impl From<Verdict> for Routed {
    fn from(v: Verdict) -> Routed {
        match v {
            Verdict::Allow => Routed::Allow,
            Verdict::Deny => Routed::Deny,
            Verdict::Reject => Routed::Reject,
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
    /// Through this host (a route rule).
    Forward,
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

/// One end of a rule: an address (or anywhere), a port match, and the app profile or
/// service name the ports came from, kept for display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Address or network; `None` means anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpNet>,
    /// Ports; `None` means any port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    /// The application profile the ports come from (`allow OpenSSH`): `app update`
    /// takes the ports from the profile again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// One user rule, for one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What to do with matching connections.
    pub action: Action,
    /// Incoming or outgoing.
    #[serde(default)]
    pub direction: Direction,
    /// Interface name (`in on eth0` / `out on eth0`; for a route rule, the interface
    /// the packet comes in on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<Iface>,
    /// A route rule's interface the packet goes out on (`route … out on eth1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_iface: Option<Iface>,
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
#[serde(deny_unknown_fields)]
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
    /// How many keys (sources, subnets) the limit tracks at once, per family; sources
    /// beyond it share one overflow budget. None: [`DEFAULT_CAPACITY`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<u32>,
}

/// Keys a limit tracks at once, per family, unless its `capacity` says otherwise.
pub const DEFAULT_CAPACITY: u32 = 16_384;
/// The largest `capacity` a limit takes.
pub const MAX_CAPACITY: u32 = 1_048_576;

/// UFW's plain `limit`: 6 attempts in 30 s per source, so 5 connections are accepted
/// in any 30 s window and the 6th is refused (measured against ufw 0.36.2).
pub const UFW_LIMIT: Rate = Rate {
    count: 5,
    seconds: 30,
};

impl Limit {
    /// Keys tracked at once, per family.
    pub fn capacity(&self) -> u32 {
        self.capacity.unwrap_or(DEFAULT_CAPACITY)
    }

    /// The settings a plain `limit` (no options) stands for.
    pub fn ufw_default() -> Limit {
        Limit {
            rate: Some(UFW_LIMIT),
            conn: None,
            per: LimitKey::default(),
            over: Over::Reject,
            then: Then::Accept,
            capacity: None,
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

    /// Whether the rule's ports come from the application profile `name`.
    pub fn names_app(&self, name: &str) -> bool {
        [&self.from, &self.to]
            .iter()
            .any(|e| e.app.as_deref() == Some(name))
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
            // As UFW: an insert never replaces a rule that matches the same traffic.
            if self.rules[i] == rule || position != Position::Append {
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
        // As UFW: an insert that lands after the last rule of its family is an add.
        match position {
            Position::Append => AddOutcome::Added,
            _ if at == end => AddOutcome::Added,
            _ => AddOutcome::Inserted,
        }
    }

    /// Remove rule number `n` (1-based).
    pub fn remove_number(&mut self, n: usize) -> Option<Rule> {
        (n >= 1 && n <= self.rules.len()).then(|| self.rules.remove(n - 1))
    }

    /// Remove the rule matching `rule` (same match and action, and the same comment
    /// when `rule` has one, as UFW). Returns whether found.
    pub fn remove_matching(&mut self, rule: &Rule) -> bool {
        match self.rules.iter().position(|r| {
            r.same_match(rule)
                && r.action == rule.action
                && (rule.comment.is_none() || r.comment == rule.comment)
        }) {
            Some(i) => {
                self.rules.remove(i);
                true
            }
            None => false,
        }
    }
}
