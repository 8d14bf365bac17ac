//! The one path of every command that changes the firewall:
//!
//! lock → finish or undo an interrupted change → load (validated) → read the kernel's
//! stamp → edit → compile → write the new policy as *pending* → apply (one
//! transaction) → verify → make the pending policy the policy.
//!
//! The kernel table is stamped with the id of the policy it was compiled from, so:
//! - a diff (an element-only change) is applied only when the kernel holds the plan
//!   it was computed from; otherwise the whole table is replaced;
//! - after a crash at any moment, the pending file says a change was under way and
//!   the stamp says whether the kernel got it: the next command (even `status`)
//!   finishes the change (the kernel has it) or drops it (the kernel does not);
//! - if the kernel step fails, or the final rename does, the kernel is brought back
//!   to what it held, so kernel and disk agree, and the error says so.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::backend::{Backend, BackendError, KernelState, Timer};
use crate::compile::{compile_untagged, compile_with, Custom, Part, Plan};
use crate::model::Policy;
use crate::store::{Loaded, LockMode, RollbackPoint, Serialized, Store, StoreError};

/// How a change reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As little as needed: nothing if nothing changed, only map elements if that is
    /// all that changed (and the kernel holds the old policy), else the whole table.
    Auto,
    /// The whole table, even if nothing changed (`enable`, `reload`).
    Full,
}

/// Where things stand after a failed step.
#[derive(Debug)]
pub enum Aftermath {
    /// The kernel and the policy file are as they were.
    Unchanged,
    /// The kernel had changed; it was brought back, and the policy file is as it was.
    Restored,
    /// The kernel could not be brought back; the next command will finish or undo the
    /// change (the pending policy file says one was under way).
    Unresolved(BackendError),
}

impl fmt::Display for Aftermath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aftermath::Unchanged => f.write_str("nothing was changed"),
            Aftermath::Restored => f.write_str("the previous firewall was restored; nothing was changed"),
            Aftermath::Unresolved(e) => write!(
                f,
                "restoring the previous firewall failed too ({e}); the next rampart command will finish or undo the change"
            ),
        }
    }
}

/// Why a change did not happen.
#[derive(Debug, Error)]
pub enum ApplyError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Backend(#[from] BackendError),
    #[error("{source}; {then}")]
    Kernel {
        #[source]
        source: BackendError,
        then: Aftermath,
    },
    /// A custom-rules snippet (`before.nft`, `after.nft`) that nft or rampart refuses.
    #[error("{0}; fix the file, nothing was changed")]
    Custom(String),
    #[error("{source}; {then}")]
    Commit {
        #[source]
        source: StoreError,
        then: Aftermath,
    },
}

/// An opened firewall: the locked config directory, the policy loaded from it and what
/// the kernel holds.
pub struct Firewall<'b> {
    store: Store,
    backend: &'b dyn Backend,
    loaded: Loaded,
    kernel: KernelState,
    /// What recovery did, for the user (on stderr).
    pub recovered: Option<&'static str>,
    /// The config directory's custom rules, read when first needed.
    custom: std::sync::OnceLock<Result<Custom, String>>,
}

/// The number of the first line of an nft script with an `include` statement (from 1):
/// a statement, after a line's start or a `;` or `{`, outside comments and strings.
fn include_line(text: &str) -> Option<usize> {
    for (i, line) in text.lines().enumerate() {
        let (mut quoted, mut word_start) = (false, true);
        for (j, c) in line.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '#' if !quoted => break,
                ';' | '{' if !quoted => word_start = true,
                c if c.is_whitespace() => {}
                _ if word_start && !quoted => {
                    let after = line[j..].strip_prefix("include").map(|r| r.chars().next());
                    if after.is_some_and(|n| n.is_none_or(|n| n.is_whitespace() || n == '"')) {
                        return Some(i + 1);
                    }
                    word_start = false;
                }
                _ => {}
            }
        }
    }
    None
}

/// Read the custom rules of the config directory: each snippet that exists, through
/// nft in a throwaway network namespace. `Err`: the file, the line when nft names one,
/// and what is wrong.
pub fn read_custom(store: &Store, backend: &dyn Backend) -> Result<Custom, String> {
    let mut custom = Custom::default();
    for part in Part::ALL {
        let path = store.dir().join(part.file_name());
        if !path.exists() {
            continue;
        }
        store.check_safe(&path).map_err(|e| e.to_string())?;
        let path = path
            .canonicalize()
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let shown = path.display().to_string();
        if shown.contains(['"', '\n']) {
            return Err(format!(
                "{shown}: nft cannot include a path with a double quote or a newline in it; use a config directory without them"
            ));
        }
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        if let Some(line) = include_line(&String::from_utf8_lossy(&text)) {
            return Err(format!(
                "{shown} line {line}: 'include' is not taken in custom rules (the files it names are not checked as the config directory's are); put their rules in {} itself",
                part.file_name()
            ));
        }
        let listing = backend.read_snippet(&path).map_err(|e| match e {
            // "PATH:LINE:COL: Error: WHAT" -> "PATH line LINE: WHAT"
            BackendError::Refused(text) => {
                let rest = text.strip_prefix(&format!("{shown}:"));
                let parsed = rest.and_then(|r| {
                    let (line, r) = r.split_once(':')?;
                    let (_, what) = r.split_once("Error: ")?;
                    line.parse::<usize>().ok().map(|l| (l, what))
                });
                match parsed {
                    Some((line, what)) => format!("{shown} line {line}: {what}"),
                    None => format!("{shown}: {text}"),
                }
            }
            other => format!("{shown}: {other}"),
        })?;
        custom
            .add(part, &listing)
            .map_err(|what| format!("{shown}: {what}"))?;
    }
    Ok(custom)
}

/// Whether the kernel is as `policy` (with id `id`) wants it.
fn agrees(kernel: &KernelState, policy: &Policy, id: &str) -> bool {
    if policy.enabled {
        kernel.holds(id)
    } else {
        !kernel.is_loaded()
    }
}

/// Load the policy while the kernel's state is read (nft runs in its own process).
fn load_and_read(
    store: &Store,
    backend: &dyn Backend,
) -> Result<(Loaded, KernelState), ApplyError> {
    let reading = backend.start_state();
    let loaded = store.load();
    let kernel = reading();
    Ok((loaded?, kernel?))
}

impl<'b> Firewall<'b> {
    /// Open for reading (shared lock). An interrupted change is finished or undone
    /// first (that takes the exclusive lock for a moment).
    pub fn open_read(dir: &Path, backend: &'b dyn Backend) -> Result<Self, ApplyError> {
        Firewall::open(dir, backend, LockMode::Shared, true)
    }

    /// Open to look only (a dry run): shared lock, nothing written, not even the
    /// finishing of an interrupted change.
    pub fn open_peek(dir: &Path, backend: &'b dyn Backend) -> Result<Self, ApplyError> {
        Firewall::open(dir, backend, LockMode::Shared, false)
    }

    /// Open for a change (exclusive lock, held until dropped).
    pub fn open_write(dir: &Path, backend: &'b dyn Backend) -> Result<Self, ApplyError> {
        Firewall::open(dir, backend, LockMode::Exclusive, true)
    }

    fn open(
        dir: &Path,
        backend: &'b dyn Backend,
        lock: LockMode,
        settle: bool,
    ) -> Result<Self, ApplyError> {
        let mut store = Store::open(dir, lock)?;
        let mut recovered = None;
        if settle && store.has_pending() {
            store.upgrade()?;
            recovered = recover(&store, backend)?;
        }
        let (loaded, kernel) = load_and_read(&store, backend)?;
        Ok(Firewall {
            store,
            backend,
            loaded,
            kernel,
            recovered,
            custom: std::sync::OnceLock::new(),
        })
    }

    /// The config directory's custom rules (read once).
    pub fn custom(&self) -> Result<&Custom, ApplyError> {
        self.custom
            .get_or_init(|| read_custom(&self.store, self.backend))
            .as_ref()
            .map_err(|m| ApplyError::Custom(m.clone()))
    }

    /// Leave the custom rules out (`boot`, when they do not load).
    fn without_custom(self) -> Self {
        let _ = self.custom.set(Ok(Custom::default()));
        self
    }

    /// The plan of `policy` with the config directory's custom rules.
    pub fn plan(&self, policy: &Policy) -> Result<Plan, ApplyError> {
        Ok(compile_with(policy, self.custom()?))
    }

    /// The plan of `policy`, with the custom rules if they load (to restore what the
    /// kernel held, at any cost).
    fn plan_anyway(&self, policy: &Policy) -> Plan {
        match self.custom() {
            Ok(c) => compile_untagged(policy, c),
            Err(_) => compile_untagged(policy, &Custom::default()),
        }
    }

    /// The policy in the config directory.
    pub fn policy(&self) -> &Policy {
        &self.loaded.policy
    }

    /// What the kernel holds of rampart's table.
    pub fn kernel(&self) -> &KernelState {
        &self.kernel
    }

    /// Whether the kernel is as the policy file wants it.
    pub fn in_sync(&self) -> bool {
        agrees(&self.kernel, &self.loaded.policy, &self.loaded.id)
    }

    /// The policy the kernel holds when it is not the file's (the file was edited by
    /// hand since): the one the cache still describes, if its stamp says so.
    pub fn enforced_other(&self) -> Option<Policy> {
        let stale = self.loaded.stale.as_ref()?;
        self.kernel
            .holds(stale.id())
            .then(|| stale.policy())
            .flatten()
    }

    /// Edit the policy with `f` (given a copy, and whether the firewall is enabled) and
    /// apply the result. While `f` runs, the loaded policy's plan compiles (when a
    /// diff may be applied); the new policy serializes while it compiles.
    pub fn edit<T, E>(
        self,
        mode: Mode,
        f: impl FnOnce(&mut Policy, bool) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<ApplyError>,
    {
        let t = Timer::start();
        let old = &self.loaded.policy;
        let diff = mode == Mode::Auto && old.enabled && self.in_sync();
        // A snippet that does not load leaves no plan to diff from (a change that
        // disables the firewall needs none).
        let custom = diff.then(|| self.custom().ok()).flatten();
        std::thread::scope(|s| {
            let before = custom.map(|c| s.spawn(move || compile_untagged(old, c)));
            let mut new = old.clone();
            let out = f(&mut new, old.enabled)?;
            t.lap("edit");
            // Joined only once the new policy has compiled: the two compile side by side.
            let before = || before.map(|h| h.join().expect("compile does not panic"));
            self.commit(new, mode, before, None).map_err(E::from)?;
            Ok(out)
        })
    }

    /// Apply `new` as `mode` says (`before` gives the loaded policy's plan, when the
    /// kernel holds it and a diff may be applied).
    fn commit(
        &self,
        new: Policy,
        mode: Mode,
        before: impl FnOnce() -> Option<Plan>,
        given: Option<Serialized>,
    ) -> Result<(), ApplyError> {
        let t = Timer::start();
        let old = &self.loaded;
        let same = given.is_none() && new == old.policy;
        if same && mode == Mode::Auto && self.in_sync() {
            return Ok(());
        }
        let custom = if new.enabled {
            Some(self.custom()?)
        } else {
            None
        };
        let (serialized, after) = std::thread::scope(|s| {
            let serialized = (!same && given.is_none())
                .then(|| s.spawn(|| Serialized::edit(&old.source, &old.policy, &new)));
            let after = custom.map(|c| compile_untagged(&new, c));
            let serialized = serialized
                .map(|h| h.join().expect("serializing does not panic"))
                .or(given);
            (serialized, after)
        });
        let before = before();
        t.lap("compile and serialize");
        let id = serialized
            .as_ref()
            .map_or(old.id.as_str(), |s| s.id.as_str());
        // The new policy is on disk, as pending, before the kernel changes.
        if let Some(s) = &serialized {
            self.store.write_pending(s)?;
            t.lap("pending written");
        }
        // The pending file's data is made durable while nft works.
        let (applied, synced) = std::thread::scope(|s| {
            let synced = serialized
                .is_some()
                .then(|| s.spawn(|| self.store.sync_pending()));
            let applied = match (&after, &before) {
                (Some(plan), Some(prev)) => self.backend.update(&self.kernel, prev, plan, id),
                (Some(plan), None) => self.backend.apply(&self.kernel, plan, id),
                (None, _) if self.kernel.is_loaded() => self.backend.remove(),
                (None, _) => Ok(()),
            };
            let synced = synced.map_or(Ok(()), |h| h.join().expect("fsync does not panic"));
            (applied, synced)
        });
        t.lap("applied");
        if let Err(source) = applied {
            let then = self.after_failure(serialized.is_some());
            return Err(ApplyError::Kernel { source, then });
        }
        if serialized.is_none() {
            // Nothing to write but a fresh cache (after a hand edit).
            self.store.refresh_cache(old);
            return Ok(());
        }
        if let Err(source) = synced.and_then(|()| self.store.commit_pending()) {
            let then = self.after_failure(true);
            return Err(ApplyError::Commit { source, then });
        }
        t.lap("committed");
        // Freeing tens of thousands of expressions costs milliseconds; the process
        // ends soon after and the system takes the memory back at once.
        std::mem::forget((before, after));
        Ok(())
    }

    /// After a failed step: bring the kernel back to what it held (if it changed) and
    /// drop the pending policy, or leave it for the next command if that fails.
    fn after_failure(&self, pending: bool) -> Aftermath {
        let unchanged = self.backend.state().is_ok_and(|now| now == self.kernel);
        let outcome = if unchanged {
            Ok(Aftermath::Unchanged)
        } else {
            self.restore().map(|()| Aftermath::Restored)
        };
        match outcome {
            Ok(done) => {
                if pending {
                    if let Err(e) = self.store.discard_pending() {
                        // The kernel agrees with the policy file; recovery will see
                        // that and drop the pending file.
                        eprintln!("WARN: {e}");
                    }
                }
                done
            }
            Err(e) => Aftermath::Unresolved(e),
        }
    }

    /// Load what the kernel held when the command began: the file's policy, the one a
    /// stale cache describes, or nothing.
    fn restore(&self) -> Result<(), BackendError> {
        let held = if self.kernel.holds(&self.loaded.id) {
            Some((self.loaded.policy.clone(), self.loaded.id.clone()))
        } else {
            match (self.enforced_other(), &self.loaded.stale) {
                (Some(p), Some(stale)) => Some((p, stale.id().to_string())),
                _ if !self.kernel.is_loaded() => None,
                // Unknown content: the policy file is the best there is.
                _ => Some((self.loaded.policy.clone(), self.loaded.id.clone())),
            }
        };
        match held {
            Some((policy, id)) if policy.enabled => {
                let now = self.backend.state()?;
                self.backend.apply(&now, &self.plan_anyway(&policy), &id)
            }
            _ => self.backend.remove(),
        }
    }

    /// The rollback point of a change waiting for `confirm`, if there is one.
    pub fn rollback_point(&self) -> Result<Option<RollbackPoint>, ApplyError> {
        Ok(self.store.rollback_point()?)
    }

    /// Save the policy file as it is now as the rollback point `point` (before a
    /// change made with `--confirm`).
    pub fn save_rollback(&self, point: &RollbackPoint) -> Result<(), ApplyError> {
        Ok(self.store.save_rollback(point)?)
    }

    /// Remove the rollback point (`confirm`, or a `--confirm` change that failed).
    pub fn clear_rollback(&self) -> Result<(), ApplyError> {
        Ok(self.store.clear_rollback()?)
    }

    /// Roll back to the rollback point, if there is one (and, given `token`, only if
    /// it is that point's): the policy file as it was, byte for byte (the defaults if
    /// there was none), applied in full. Returns the point rolled back.
    pub fn roll_back(self, token: Option<&str>) -> Result<Option<RollbackPoint>, ApplyError> {
        let Some(point) = self.store.rollback_point()? else {
            return Ok(None);
        };
        if token.is_some_and(|t| t != point.token) {
            return Ok(None);
        }
        let (policy, file) = match self.store.load_rollback()? {
            Some(saved) if point.had_file => (saved.policy.clone(), saved.serialized()),
            _ => {
                let policy = Policy::default();
                let file = Serialized::of(&policy);
                (policy, file)
            }
        };
        self.commit(policy, Mode::Full, || None, Some(file))?;
        self.store.clear_rollback()?;
        Ok(Some(point))
    }

    /// The config directory's policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.store.policy_path()
    }

    /// The kept counter tags of the plan of the policy `policy_id` (see
    /// [`Store::counter_tags`]).
    pub fn counter_tags(&self, policy_id: &str) -> Option<crate::store::CounterTags> {
        self.store.counter_tags(policy_id)
    }

    /// Keep the counter tags of the plan of the policy `policy_id`, best effort.
    pub fn keep_counter_tags(&self, policy_id: &str, tags: &crate::store::CounterTags) {
        self.store.keep_counter_tags(policy_id, tags)
    }
}

/// What `rampart boot` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Boot {
    /// The policy is enabled and was loaded.
    Loaded,
    /// The policy is disabled: nothing loaded.
    Disabled,
}

/// `rampart boot`: load the policy if it is enabled (whole), nothing otherwise. If the
/// policy file does not load, the last policy rampart wrote (its cache) is loaded
/// instead, if it is enabled, and the error is returned all the same: the host is not
/// left open, and the failure is said.
pub fn boot(dir: &Path, backend: &dyn Backend) -> Result<Boot, BootError> {
    let opened = Firewall::open_write(dir, backend);
    match opened {
        Ok(fw) => {
            let enabled = fw.policy().enabled;
            let has_custom = fw.custom().is_ok_and(|c| !c.is_empty());
            // A snippet that does not load, or that the kernel refuses, must not leave
            // the host open: the policy is loaded without the custom rules, and the
            // error said.
            let why = match fw.edit(Mode::Full, |_, _| Ok::<_, ApplyError>(())) {
                Err(ApplyError::Custom(what)) => what,
                Err(e @ ApplyError::Kernel { .. }) if enabled && has_custom => {
                    format!("the kernel refused the policy with the custom rules ({e})")
                }
                other => {
                    other?;
                    return Ok(if enabled {
                        Boot::Loaded
                    } else {
                        Boot::Disabled
                    });
                }
            };
            let fw = Firewall::open_write(dir, backend)?.without_custom();
            fw.edit(Mode::Full, |_, _| Ok::<_, ApplyError>(()))?;
            Err(BootError::BadCustom(why))
        }
        Err(ApplyError::Store(e)) => {
            let store = Store::open(dir, LockMode::Exclusive)?;
            let fallback = store.load_last_good().filter(|p| p.enabled);
            let loaded = match &fallback {
                Some(policy) => {
                    let kernel = backend.state()?;
                    let plan = match read_custom(&store, backend) {
                        Ok(c) => compile_untagged(policy, &c),
                        Err(_) => compile_untagged(policy, &Custom::default()),
                    };
                    backend.apply(&kernel, &plan, &crate::store::policy_id(policy))?;
                    true
                }
                None => false,
            };
            Err(BootError::BadPolicy { source: e, loaded })
        }
        Err(e) => Err(e.into()),
    }
}

/// Why `rampart boot` failed.
#[derive(Debug, Error)]
pub enum BootError {
    #[error("{0}")]
    Apply(#[from] ApplyError),
    #[error("{0}; the policy was loaded without the custom rules")]
    BadCustom(String),
    #[error("{source}; {}", if *loaded { "loaded the last policy rampart applied instead (its cache)" } else { "no earlier policy to load instead: nothing was loaded" })]
    BadPolicy {
        #[source]
        source: StoreError,
        /// Whether the last good policy was loaded instead.
        loaded: bool,
    },
}

impl From<StoreError> for BootError {
    fn from(e: StoreError) -> BootError {
        BootError::Apply(e.into())
    }
}

impl From<BackendError> for BootError {
    fn from(e: BackendError) -> BootError {
        BootError::Apply(e.into())
    }
}

/// `rampart unload`: remove rampart's table, leaving the policy as it is (the boot
/// unit's stop).
pub fn unload(dir: &Path, backend: &dyn Backend) -> Result<(), ApplyError> {
    let _store = Store::open(dir, LockMode::Exclusive)?;
    Ok(backend.remove()?)
}

/// `reset`: back up the policy file, whatever it holds (also one that does not load:
/// reset is the way out of a broken hand edit), replace it with the defaults and
/// unload the firewall. Returns the policy file and its backup.
pub fn reset(dir: &Path, backend: &dyn Backend) -> Result<(PathBuf, Option<PathBuf>), ApplyError> {
    let store = Store::open(dir, LockMode::Exclusive)?;
    if store.has_pending() && recover(&store, backend).is_err() {
        // The policy file does not load: the reset replaces it anyway.
        store.discard_pending()?;
    }
    let backup = store.backup()?;
    let defaults = Serialized::of(&Policy::default());
    store.write_pending(&defaults)?;
    if let Err(source) = backend.remove() {
        // Unless the table went all the same, nothing changed.
        if !backend.state().is_ok_and(|k| !k.is_loaded()) {
            store.discard_pending()?;
            let then = Aftermath::Unchanged;
            return Err(ApplyError::Kernel { source, then });
        }
    }
    // If this fails, the pending defaults agree with the unloaded kernel: the next
    // command completes the reset.
    store.sync_pending()?;
    store.commit_pending()?;
    Ok((store.policy_path(), backup))
}

/// Finish or undo an interrupted change (the store is locked exclusively).
fn recover(store: &Store, backend: &dyn Backend) -> Result<Option<&'static str>, ApplyError> {
    let kernel = backend.state()?;
    // A pending file rampart cannot read is not one a change wrote: it is dropped.
    let pending = store.load_pending().unwrap_or_default();
    if let Some(p) = &pending {
        if agrees(&kernel, &p.policy, &p.id) {
            store.sync_pending()?;
            store.commit_pending()?;
            return Ok(Some(
                "an interrupted change was found applied in the kernel: its policy file is now in place",
            ));
        }
    }
    store.discard_pending()?;
    let file = store.load()?;
    if agrees(&kernel, &file.policy, &file.id) {
        return Ok(Some(
            "an interrupted change was not in the kernel: it was dropped",
        ));
    }
    // Neither: the kernel was changed outside rampart meanwhile. Load the file's policy.
    if file.policy.enabled {
        let custom = read_custom(store, backend).unwrap_or_default();
        backend.apply(&kernel, &compile_untagged(&file.policy, &custom), &file.id)?;
    } else {
        backend.remove()?;
    }
    Ok(Some(
        "an interrupted change was dropped, and the policy file was loaded into the kernel again",
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn include_statements_are_found_where_nft_takes_them() {
        assert_eq!(super::include_line("include \"/tmp/x.nft\"\n"), Some(1));
        assert_eq!(
            super::include_line("chain input {\n  tcp dport 1 accept; include \"x\"\n}\n"),
            Some(2)
        );
        assert_eq!(
            super::include_line("chain input { include \"x\" }"),
            Some(1)
        );
        assert_eq!(super::include_line("  include\t\"x\""), Some(1));
        for fine in [
            "# include \"x\"\n",
            "chain input {\n  tcp dport 1 accept comment \"include x\"\n}\n",
            "chain input {\n  meta nftrace set 1 # include \"x\"\n}\n",
            "chain includes {\n}\n",
            "chain input {\n  ip saddr @included accept\n}\n",
            "chain input {\n  tcp dport 1 accept comment \"éé\"; ééééééé\n}\n",
        ] {
            assert_eq!(super::include_line(fine), None, "{fine}");
        }
    }
}
