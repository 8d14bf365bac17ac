//! The kernel side: the only code that changes the firewall. `NftBackend` applies plans
//! through nft's JSON API in one transaction and reads rampart's own table back; no
//! other table is ever touched. `MemoryBackend` stands in for it where a test must not
//! (or cannot) touch a kernel.
//!
//! Every table rampart loads is stamped with the id of the policy it was compiled from,
//! so a command can tell whether the kernel holds what the policy file says before it
//! changes anything. The stamp is an element of the set `stamp`: its key is an IPv6
//! address made of a sequence number (high 64 bits) and the id's first 64 bits, its
//! comment the whole stamp; the element with the highest sequence number is the
//! current one. A full apply makes the set anew with one element; a change of map
//! elements *creates* the next element in the same transaction, which fails if that
//! number is taken. (Listing one small set and creating an element cost the same at any
//! table size; deleting one makes nft fetch every set's elements first: ~10 ms at 10k
//! rules. Superseded stamps are pruned every [`STAMP_PRUNE_AT`] changes.)

use std::time::Instant;

use thiserror::Error;

use crate::compile::Plan;

mod diff;
mod json;
mod memory;
mod netlink;
mod nft;

pub use diff::{batch_of, element_diff, MapChange};
pub use json::{payload, payload_with};
pub use memory::{Fault, MemoryBackend};
pub use netlink::{element_index, ElementIndex, LimitReading, RawCounters, TimedElement};
pub use nft::{
    nft_timeout, transaction, KernelTable, NftBackend, DEFAULT_NFT_TIMEOUT, NFT_TIMEOUT_ENV,
};

/// The set whose elements are the stamps. Not a name `compile` uses.
pub const STAMP_SET: &str = "stamp";
/// Superseded stamps that an element-only change prunes (with a delete, which costs).
pub const STAMP_PRUNE_AT: usize = 16;

/// What a kernel table is stamped with: the id of the policy it was compiled from, the
/// version of rampart that compiled it (a plan is only diffed against a plan of the
/// same version) and a sequence number (each transaction's is one more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The policy's id (see `store::policy_id`).
    pub policy: String,
    /// The rampart version that compiled it.
    pub version: String,
    /// The sequence number.
    pub seq: u64,
}

impl Stamp {
    /// The stamp this program puts on the plan of a policy, numbered `seq`.
    pub fn new(policy_id: &str, seq: u64) -> Stamp {
        Stamp {
            policy: policy_id.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            seq,
        }
    }

    /// The stamp's text (its element's comment).
    pub fn text(&self) -> String {
        format!("rampart {} policy {}", self.version, self.policy)
    }

    /// The first 64 bits of the id.
    fn id_bits(id: &str) -> Option<u64> {
        u64::from_str_radix(id.get(..16)?, 16).ok()
    }

    /// The stamp element's key: the sequence number and the id's first 64 bits, as
    /// an IPv6 address.
    pub fn key(&self) -> String {
        let bits =
            (u128::from(self.seq) << 64) | u128::from(Stamp::id_bits(&self.policy).unwrap_or(0));
        std::net::Ipv6Addr::from(bits).to_string()
    }

    /// Read a stamp element: its key and comment.
    pub fn parse(key: &str, text: &str) -> Option<Stamp> {
        let rest = text.strip_prefix("rampart ")?;
        let (version, id) = rest.split_once(" policy ")?;
        let hex = id.len() >= 16 && id.chars().all(|c| c.is_ascii_hexdigit());
        let bits = u128::from(key.parse::<std::net::Ipv6Addr>().ok()?);
        let ok = hex && !version.is_empty() && Stamp::id_bits(id) == Some(bits as u64);
        ok.then(|| Stamp {
            policy: id.to_string(),
            version: version.to_string(),
            seq: (bits >> 64) as u64,
        })
    }

    /// Whether this program compiled it (so its plan can be rebuilt and diffed).
    pub fn is_ours(&self) -> bool {
        self.version == env!("CARGO_PKG_VERSION")
    }
}

/// What the kernel holds of rampart's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelState {
    /// Not loaded.
    Absent,
    /// Loaded; `stamp` is None when the table carries no readable stamp (made by hand
    /// or changed outside rampart).
    Loaded {
        /// The current stamp, if any.
        stamp: Option<Stamp>,
        /// The keys of superseded stamp elements.
        superseded: Vec<String>,
    },
}

impl KernelState {
    /// Whether rampart's table is loaded.
    pub fn is_loaded(&self) -> bool {
        matches!(self, KernelState::Loaded { .. })
    }

    /// The id of the policy the kernel holds, if it is stamped.
    pub fn policy_id(&self) -> Option<&str> {
        match self {
            KernelState::Loaded {
                stamp: Some(stamp), ..
            } => Some(&stamp.policy),
            _ => None,
        }
    }

    /// Whether the kernel holds exactly the table this program compiles for `id`.
    pub fn holds(&self, id: &str) -> bool {
        matches!(self, KernelState::Loaded { stamp: Some(s), .. } if s.policy == id && s.is_ours())
    }
}

/// A reading of the kernel's state that has started; calling it finishes it.
pub type StateReading = Box<dyn FnOnce() -> Result<KernelState, BackendError> + Send>;

/// Backend failures.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("cannot run nft (is the nftables package installed?): {0}")]
    Exec(#[source] std::io::Error),
    #[error(
        "nft did not finish within {0} s and was stopped (RAMPART_NFT_TIMEOUT sets the limit)"
    )]
    Timeout(f64),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
    #[error("the kernel's table does not match the plan after applying it: {0}")]
    Verify(String),
    #[error("cannot read rampart's table from nft: {0}")]
    Read(String),
}

/// Packets and bytes counted by the kernel's rules and map elements: rules by (chain,
/// index among the chain's rules), elements by (map, the key as compact JSON), as
/// [`Plan::rule_tags`] and [`Plan::element_tags`] name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub rules: std::collections::HashMap<(String, usize), (u64, u64)>,
    pub elements: std::collections::HashMap<(String, String), (u64, u64)>,
}

impl Counters {
    /// The counters of an `nft -j list table` listing.
    pub fn from_listing(listing: &serde_json::Value) -> Counters {
        let mut out = Counters::default();
        let mut index: std::collections::HashMap<String, usize> = Default::default();
        let count = |c: &serde_json::Value| Some((c["packets"].as_u64()?, c["bytes"].as_u64()?));
        for item in listing["nftables"].as_array().into_iter().flatten() {
            if let (Some(chain), Some(expr)) = (
                item["rule"]["chain"].as_str(),
                item["rule"]["expr"].as_array(),
            ) {
                let n = index.entry(chain.to_string()).or_insert(0);
                let at = *n;
                *n += 1;
                if let Some(c) = expr.iter().find_map(|s| s.get("counter")).and_then(count) {
                    out.rules.insert((chain.to_string(), at), c);
                }
            }
            let map = item["map"]["name"].as_str().unwrap_or("");
            for el in item["map"]["elem"].as_array().into_iter().flatten() {
                let key = &el[0]["elem"];
                if let Some(c) = count(&key["counter"]) {
                    out.elements
                        .insert((map.to_string(), key["val"].to_string()), c);
                }
            }
        }
        out
    }
}

/// What a backend must do.
pub trait Backend: Sync {
    /// What the kernel holds of rampart's table.
    fn state(&self) -> Result<KernelState, BackendError> {
        self.start_state()()
    }
    /// Start reading [`Backend::state`] and return what finishes it, so other work can
    /// run meanwhile. (The nft backend starts its nft now: a process started from a
    /// thread while another allocates heavily took ~15 ms to start.)
    fn start_state(&self) -> StateReading;
    /// Replace rampart's table (`current`: what was last read of it) by the plan,
    /// stamped with the policy's id, in one transaction, keeping the state sets (and
    /// their elements) the plan declares again; then verify that the kernel holds the
    /// plan's chains, sets and maps.
    fn apply(&self, current: &KernelState, plan: &Plan, policy: &str) -> Result<(), BackendError>;
    /// Bring the kernel from `previous`, which it holds as `current` says, to `plan`:
    /// when only map elements differ, one small transaction that also stamps it (and
    /// fails if another stamp was made since `current` was read, so a diff is never
    /// applied to something else); otherwise, or if that fails, [`apply`].
    ///
    /// [`apply`]: Backend::apply
    fn update(
        &self,
        current: &KernelState,
        previous: &Plan,
        plan: &Plan,
        policy: &str,
    ) -> Result<(), BackendError>;
    /// Remove rampart's table, if present.
    fn remove(&self) -> Result<(), BackendError>;
    /// The other tables (`family name`) with a chain on the forward hook: Docker's,
    /// libvirt's… A drop in any base chain is final, so rampart's filtering of
    /// forwarded traffic overrides what they accept.
    fn others_forwarding(&self) -> Result<Vec<String>, BackendError>;
    /// rampart's table as nft text (empty if not loaded).
    fn list_text(&self) -> Result<String, BackendError>;
    /// rampart's table as nft lists it in JSON (`Null` when it is not loaded): the
    /// counters and the elements of the state sets (`rampart limits`).
    fn list_json(&self) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Read(
            "this backend cannot list the table".into(),
        ))
    }
    /// The counters of the plan's tagged rules and map elements (`status verbose`):
    /// read from [`Backend::list_json`] unless the backend has a faster way.
    fn counters(&self, plan: &Plan) -> Result<Counters, BackendError> {
        let _ = plan;
        Ok(Counters::from_listing(&self.list_json()?))
    }
    /// Every counter of the table, read before the plan is known (`status verbose`
    /// compiles meanwhile), when this backend can; None otherwise (then
    /// [`Backend::counters`] serves).
    fn raw_counters(&self) -> Option<RawCounters> {
        None
    }
    /// The elements of the limits' state sets `sets` and the refused counts of the
    /// limit chains `chains` (`rampart limits`), when this backend reads them faster
    /// than [`Backend::list_json`] lists the whole table; None otherwise.
    fn limit_reading(&self, sets: &[String], chains: &[String]) -> Option<LimitReading> {
        let _ = (sets, chains);
        None
    }
    /// Delete elements (set name, the element as nft JSON) of rampart's sets, in one
    /// transaction (`rampart limits --reset`).
    fn delete_elements(&self, elems: &[(String, serde_json::Value)]) -> Result<(), BackendError> {
        let _ = elems;
        Err(BackendError::Read(
            "this backend cannot delete elements".into(),
        ))
    }
    /// Have nft read a custom-rules snippet (`before.nft`, `after.nft`) inside a
    /// table of its own, in a network namespace made for it and gone after, and return
    /// the table nft lists back (JSON). Never touches the kernel's own ruleset. `Err`
    /// with nft's first complaint, which names the file and line.
    fn read_snippet(&self, path: &std::path::Path) -> Result<serde_json::Value, BackendError> {
        Err(BackendError::Read(format!(
            "this backend cannot read {}",
            path.display()
        )))
    }
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
            let since = PROCESS_START.get().map(|s| s.elapsed().as_secs_f64() * 1e3);
            eprintln!(
                "timing: {what}: {:.1} ms ({:.1} ms since the process started)",
                t.elapsed().as_secs_f64() * 1e3,
                since.unwrap_or(0.0)
            );
        }
    }
}

static PROCESS_START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// Mark the start of the process, for [`Timer::lap`]'s second figure (call first thing).
pub fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back() {
        let id = format!("00000000000000ff{}", "0".repeat(48));
        let s = Stamp::new(&id, 3);
        assert_eq!(s.key(), "::3:0:0:0:ff");
        assert_eq!(Stamp::parse(&s.key(), &s.text()), Some(s.clone()));
        assert!(s.is_ours());
        // A key that does not carry the id's bits is not this stamp.
        assert_eq!(Stamp::parse("::3:0:0:0:fe", &s.text()), None);
        assert_eq!(Stamp::parse(&s.key(), "rampart 0.1.0 policy 00ff"), None);
        assert_eq!(Stamp::parse(&s.key(), "something else"), None);
        let state = KernelState::Loaded {
            stamp: Some(s),
            superseded: vec![],
        };
        assert!(state.holds(&id));
        assert!(!state.holds(&"0".repeat(64)));
        assert!(!KernelState::Absent.holds(&id));
    }
}
