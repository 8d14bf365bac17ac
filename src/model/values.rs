//! The values a rule holds, each with one parser (`FromStr`) and one printer
//! (`Display`), used alike by the grammar, by serde (the policy file) and by import, so
//! a hand-edited file is held to the bounds of a typed command.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Most ports a list may hold; a range counts as two (UFW's limit, from iptables multiport).
pub const MAX_PORTS: usize = 15;
/// Largest N in `rate N/T`: each unit of N is one timed slot, and a new connection to a
/// limited port costs up to N set lookups.
pub const MAX_RATE: u32 = 256;
/// Largest T in `rate N/T`, in seconds (one day).
pub const MAX_RATE_SECONDS: u32 = 86_400;
/// Largest N in `conn N`.
pub const MAX_CONN: u32 = 65_535;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFACE_LEN: usize = 15;
/// Longest comment, in bytes.
pub const MAX_COMMENT_LEN: usize = 512;

/// Default IPv6 prefix a "source" is counted by: one host can hold a whole /64.
pub const DEFAULT_V6_SOURCE_PREFIX: u8 = 64;

/// Why a value does not parse. The grammar turns these into UFW's messages; a policy
/// file shows them as they are.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// A port or range that is out of bounds or empty (the offending item).
    #[error("bad port '{0}': ports are 1 to 65535, a range is LOW:HIGH with LOW < HIGH")]
    BadPort(String),
    /// A range or list item that is not made of numbers.
    #[error("port ranges and lists must be numeric")]
    NotNumeric,
    /// More than [`MAX_PORTS`] ports.
    #[error("too many ports: at most {MAX_PORTS} (a range counts as two)")]
    TooManyPorts,
    /// A rate out of bounds or not of the form `N/T`.
    #[error("bad rate '{0}': use N/T with N from 1 to {MAX_RATE} and T a number of seconds, minutes or hours (e.g. 20/30s, 100/1m, 5/1h; at most 1 day)")]
    BadRate(String),
    /// A limit key that is not `any`, `source`, `/M` or `/M,/N`.
    #[error("bad limit key '{0}': use 'any', 'source', '/M' (IPv4 mask 1-32) or '/M,/N' (IPv4 mask, IPv6 mask 1-128)")]
    BadPer(String),
    /// A comment with a single quote (UFW refuses them).
    #[error("comments may not contain a single quote (')")]
    CommentQuote,
    /// A comment with a control character (a newline would forge lines of `status`,
    /// ESC or BEL would reach the terminal).
    #[error("comments may not contain control characters (newlines, tabs, escapes)")]
    CommentControl,
    /// A comment longer than [`MAX_COMMENT_LEN`].
    #[error("comments may be at most {MAX_COMMENT_LEN} bytes long")]
    CommentTooLong,
    /// An interface alias such as `eth0:1`.
    #[error("bad interface name '{0}': can't use interface aliases")]
    IfaceAlias(String),
    /// An interface name longer than [`MAX_IFACE_LEN`].
    #[error(
        "bad interface name '{0}': interface name too long (at most {MAX_IFACE_LEN} characters)"
    )]
    IfaceTooLong(String),
    /// An interface name with other characters than UFW takes: letters, digits and
    /// `-_.+,=%@`.
    #[error("bad interface name '{0}': use letters, digits and - _ . + , = % @ only")]
    BadIface(String),
    /// An interface name starting with `@`, which nftables reads as a set's name.
    #[error("bad interface name '{0}': nftables cannot match a name that starts with '@'")]
    IfaceAt(String),
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

/// A port number 1..=65535 written in digits only.
fn numeric_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    match text.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Some(p as u16),
        _ => None,
    }
}

impl FromStr for Ports {
    type Err = ValueError;

    /// `PORT`, `LOW:HIGH`, or a comma-separated list of them (numbers only; service
    /// names are the grammar's business), at most [`MAX_PORTS`] ports.
    fn from_str(text: &str) -> Result<Ports, ValueError> {
        let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
        let mut ranges = Vec::new();
        let mut count = 0;
        for item in text.split(',') {
            if let Some((a, b)) = item.split_once(':') {
                let (Some(first), Some(last)) = (numeric_port(a), numeric_port(b)) else {
                    return Err(if digits(a) && digits(b) {
                        ValueError::BadPort(item.to_string())
                    } else {
                        ValueError::NotNumeric
                    });
                };
                if first >= last {
                    return Err(ValueError::BadPort(item.to_string()));
                }
                ranges.push(PortRange { first, last });
                count += 2;
            } else if !item.is_empty() && !digits(item) {
                return Err(ValueError::NotNumeric);
            } else {
                let p = numeric_port(item).ok_or_else(|| ValueError::BadPort(item.to_string()))?;
                ranges.push(PortRange::single(p));
                count += 1;
            }
        }
        if count > MAX_PORTS {
            return Err(ValueError::TooManyPorts);
        }
        Ok(Ports(ranges))
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

/// N new connections per T seconds. Stored as typed: `"20/30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Rate {
    /// N (1..=[`MAX_RATE`]).
    pub count: u32,
    /// T, in seconds (1..=[`MAX_RATE_SECONDS`]).
    pub seconds: u32,
}

impl FromStr for Rate {
    type Err = ValueError;

    /// `N/T` with T as `30s`, `1m`, `1h` (also `s`, `min`, `hour`…; `/m` is `/1m`).
    fn from_str(text: &str) -> Result<Rate, ValueError> {
        let bad = || ValueError::BadRate(text.to_string());
        let (n, t) = text.split_once('/').ok_or_else(bad)?;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let count: u32 = n.parse().map_err(|_| bad())?;
        let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
            Some(0) => ("1", t),
            Some(i) => (&t[..i], &t[i..]),
            None => return Err(bad()),
        };
        let num: u32 = num.parse().map_err(|_| bad())?;
        let scale = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            _ => return Err(bad()),
        };
        let seconds = num.checked_mul(scale).ok_or_else(bad)?;
        let rate = Rate { count, seconds };
        rate.check().map_err(|_| bad())?;
        Ok(rate)
    }
}

impl Rate {
    /// Whether N and T are within bounds.
    pub fn check(self) -> Result<(), ValueError> {
        let ok =
            (1..=MAX_RATE).contains(&self.count) && (1..=MAX_RATE_SECONDS).contains(&self.seconds);
        if ok {
            Ok(())
        } else {
            Err(ValueError::BadRate(format!(
                "{}/{}s",
                self.count, self.seconds
            )))
        }
    }
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

impl LimitKey {
    /// Whether the masks are within bounds (IPv4 1-32, IPv6 1-128).
    pub fn check(self) -> Result<(), ValueError> {
        match self {
            LimitKey::Source { v4, v6 } if !(1..=32).contains(&v4) || !(1..=128).contains(&v6) => {
                Err(ValueError::BadPer(format!("/{v4},/{v6}")))
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for LimitKey {
    type Err = ValueError;

    /// `any`, `source` (or `src`), `/M` (IPv4 mask; IPv6 stays per /64) or `/M,/N`.
    fn from_str(text: &str) -> Result<LimitKey, ValueError> {
        let bad = || ValueError::BadPer(text.to_string());
        let mask = |t: &str, max: u8| {
            t.strip_prefix('/')
                .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
                .and_then(|m| m.parse::<u8>().ok())
                .filter(|m| (1..=max).contains(m))
                .ok_or_else(bad)
        };
        match text {
            "any" => Ok(LimitKey::Any),
            "source" | "src" => Ok(LimitKey::default()),
            _ => match text.split_once(',') {
                Some((a, b)) => Ok(LimitKey::Source {
                    v4: mask(a, 32)?,
                    v6: mask(b, 128)?,
                }),
                None => Ok(LimitKey::Source {
                    v4: mask(text, 32)?,
                    v6: DEFAULT_V6_SOURCE_PREFIX,
                }),
            },
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

/// A network interface name of the characters UFW takes (`eth0`, `br-lan`, `wg0`,
/// `v,=%@1`), or UFW's (iptables') wildcard: a trailing `+` matches every name that
/// starts with what comes before it (`eth+`); a `+` elsewhere is the character itself.
/// Not an alias (`eth0:1`), nor a name starting with `@` (a set's name to nftables).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Iface(String);

impl Iface {
    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// For a wildcard (`eth+`), what the names it matches start with.
    pub fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('+')
    }

    /// Whether an interface of this name matches.
    pub fn matches(&self, name: &str) -> bool {
        match self.prefix() {
            Some(p) => name.starts_with(p),
            None => self.0 == name,
        }
    }
}

impl FromStr for Iface {
    type Err = ValueError;

    fn from_str(name: &str) -> Result<Iface, ValueError> {
        if name.contains(':') {
            return Err(ValueError::IfaceAlias(name.to_string()));
        }
        if name.len() > MAX_IFACE_LEN {
            return Err(ValueError::IfaceTooLong(name.to_string()));
        }
        // UFW's characters; the wildcard `+` not alone.
        let stem = name.strip_suffix('+').unwrap_or(name);
        let ok = !stem.is_empty()
            && !matches!(stem, "." | "..")
            && stem.chars().all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '-' | '_' | '.' | '+' | ',' | '=' | '%' | '@')
            });
        if ok && name.starts_with('@') {
            Err(ValueError::IfaceAt(name.to_string()))
        } else if ok {
            Ok(Iface(name.to_string()))
        } else {
            Err(ValueError::BadIface(name.to_string()))
        }
    }
}

impl fmt::Display for Iface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Check a rule's comment: no single quote, no control character, at most
/// [`MAX_COMMENT_LEN`] bytes. (Shown by `status` and `show added` as typed, so it must
/// not be able to forge lines or talk to the terminal.)
pub fn check_comment(text: &str) -> Result<(), ValueError> {
    if text.len() > MAX_COMMENT_LEN {
        return Err(ValueError::CommentTooLong);
    }
    if text.contains('\'') {
        return Err(ValueError::CommentQuote);
    }
    if text.chars().any(is_hazard) {
        return Err(ValueError::CommentControl);
    }
    Ok(())
}

/// A character that must never reach a terminal raw: a control character (a newline
/// forges lines, ESC and BEL talk to the terminal, CR overwrites) or a bidirectional
/// override that reorders what is shown.
pub fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Append `bytes` in lowercase hex, two digits each, as `{:02x}` writes them (without
/// the formatting machinery: tags and keys are written by the ten thousand).
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// `text` with every [`is_hazard`] character written as an escape (`\n`, `\u{1b}`), for
/// messages that echo what was typed.
pub fn inert(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_hazard(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// serde's string forms of the values above: the same `FromStr` and `Display`.
macro_rules! via_string {
    ($($t:ty),*) => {$(
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }

        impl TryFrom<String> for $t {
            type Error = ValueError;
            fn try_from(text: String) -> Result<$t, ValueError> {
                text.parse()
            }
        }
    )*};
}

via_string!(Ports, Rate, LimitKey, Iface);

#[cfg(test)]
mod tests {
    use super::*;

    /// UFW's characters (`ufw allow in on v,=%@1` works, and iptables takes it); `+`
    /// is the wildcard only at the end.
    #[test]
    fn interface_names_take_ufws_characters() {
        for ok in ["eth0", "br-lan", "v,=%@1", "a+b", "eth+", "a_b.c"] {
            let i: Iface = ok.parse().unwrap();
            assert_eq!(i.as_str(), ok);
        }
        assert_eq!("a+b".parse::<Iface>().unwrap().prefix(), None);
        assert!("a+b".parse::<Iface>().unwrap().matches("a+b"));
        assert_eq!("eth+".parse::<Iface>().unwrap().prefix(), Some("eth"));
        assert!(matches!("@x".parse::<Iface>(), Err(ValueError::IfaceAt(_))));
        for bad in ["+", "e th", "e/x", "e$", "e*", ".", "..", "e\\x", "e\"x"] {
            assert!(
                matches!(bad.parse::<Iface>(), Err(ValueError::BadIface(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        let all: Vec<u8> = (0..=255).collect();
        let mut out = String::new();
        push_hex(&mut out, &all);
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn values_print_what_they_parse() {
        for text in ["22", "80,443", "1:65535", "1000:2000,22"] {
            assert_eq!(text.parse::<Ports>().unwrap().to_string(), text);
        }
        for text in ["20/30s", "100/1m", "5/1h", "256/24h"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        for text in ["any", "source", "/24,/64", "/32,/48"] {
            assert_eq!(text.parse::<LimitKey>().unwrap().to_string(), text);
        }
        assert_eq!("/24".parse::<LimitKey>().unwrap().to_string(), "/24,/64");
        assert_eq!("eth+".parse::<Iface>().unwrap().to_string(), "eth+");
    }

    #[test]
    fn values_refuse_out_of_bounds() {
        let bad_ports = [
            ("2000:1000", ValueError::BadPort("2000:1000".into())),
            ("22:22", ValueError::BadPort("22:22".into())),
            ("0", ValueError::BadPort("0".into())),
            ("65536", ValueError::BadPort("65536".into())),
            ("", ValueError::BadPort("".into())),
            ("22,", ValueError::BadPort("".into())),
            ("a:b", ValueError::NotNumeric),
            ("ssh,http", ValueError::NotNumeric),
            ("+22", ValueError::NotNumeric),
            (
                "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16",
                ValueError::TooManyPorts,
            ),
        ];
        for (text, want) in bad_ports {
            assert_eq!(text.parse::<Ports>().unwrap_err(), want, "{text}");
        }
        for text in [
            "0/30s", "257/30s", "300/30s", "5000/30s", "5/0s", "5/2d", "5/25h", "5/30", "/30s",
            "+5/30s", "5/x",
        ] {
            assert!(text.parse::<Rate>().is_err(), "{text}");
        }
        for text in ["/0", "/33", "/24,/129", "/24,", "all", "/+8"] {
            assert!(text.parse::<LimitKey>().is_err(), "{text}");
        }
        for text in [
            "eth0:1",
            "averyveryverylongname",
            "",
            "..",
            "eth 0",
            "eth0\n",
        ] {
            assert!(text.parse::<Iface>().is_err(), "{text:?}");
        }
    }
}
