//! The config directory: the policy as TOML (the source of truth, which users may edit
//! by hand), its JSON cache, a pending copy while a change is being applied, backups,
//! and the lock.
//!
//! - `files`: modes, atomic writes, refusing a directory others can write to;
//! - `lock`: shared for readers, exclusive for writers, with a timeout;
//! - `cache`: the checked JSON cache, whose body hash is the policy's id;
//! - `layout`: the TOML text and splicing;
//! - `backup`: backups that never overwrite each other;
//! - `rollback`: the rollback point of a change made with `--confirm`.
//!
//! A change is written in two steps (see `apply`): the new policy goes to the pending
//! files first, and replaces the policy only once the kernel holds it.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::model::Policy;

mod backup;
mod cache;
mod files;
mod layout;
mod lock;
mod rollback;
mod tags;

pub use cache::Origin;
pub use layout::{toml_text, Serialized, Source};
pub use lock::{lock_timeout, LockMode, DEFAULT_LOCK_TIMEOUT, LOCK_TIMEOUT_ENV};
pub use rollback::{RollbackPoint, ROLLBACK_FILE};
pub use tags::CounterTags;

use cache::Cache;
use lock::Lock;

/// The policy file inside the config directory.
pub const POLICY_FILE: &str = "policy.toml";
/// The policy cache inside the config directory (see `cache`).
pub const CACHE_FILE: &str = ".policy.cache.json";
/// The policy a change is applying, until the kernel holds it (then it replaces
/// [`POLICY_FILE`]); its presence marks a change in progress.
pub const PENDING_FILE: &str = ".policy.toml.new";
/// The cache of the pending policy.
pub const PENDING_CACHE_FILE: &str = ".policy.cache.json.new";
/// The counter tags of the last plan `status verbose` compiled (see `tags`).
pub const COUNTER_TAGS_FILE: &str = ".counter-tags";
/// The lock file inside the config directory.
pub const LOCK_FILE: &str = ".lock";
/// Default config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rampart";

/// Store failures. Each names the file and says what to do.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot use config directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing {path}: {why}; make it root's and writable by root only (chown root: and chmod go-w)")]
    Insecure { path: PathBuf, why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} line {line}: {message}; fix the file (or restore a backup), nothing was changed"
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another rampart command has held {path} for {} s; try again when it has finished (see who holds it: fuser -v {path})", waited.as_secs_f64())]
    LockTimeout { path: PathBuf, waited: Duration },
}

/// A policy as loaded, with what the store needs to write an edit of it.
pub struct Loaded {
    /// The policy (validated).
    pub policy: Policy,
    /// Its id: the hash of its canonical JSON.
    pub id: String,
    /// The bytes it came from.
    pub source: Source,
    /// The canonical JSON (the cache's body) when no cache matched: for writing one.
    body: Option<String>,
    /// A cache of another policy (the TOML was edited since it was written): what the
    /// kernel may still hold.
    pub stale: Option<Stale>,
}

impl Loaded {
    /// The bytes to write this policy back as it was loaded (its TOML text as it was).
    pub fn serialized(&self) -> Serialized {
        let toml = String::from_utf8_lossy(&self.source.toml).into_owned();
        match (&self.source.cache, &self.body) {
            (Some((_, cache, _)), _) => Serialized {
                toml,
                cache: String::from_utf8_lossy(cache).into_owned(),
                id: self.id.clone(),
            },
            (None, Some(body)) => Serialized::with_body(toml, body, Origin::Read),
            (None, None) => Serialized::with_body(toml, &cache::body(&self.policy), Origin::Read),
        }
    }
}

/// A cache that no longer matches the TOML file, but is intact.
pub struct Stale(Cache);

impl Stale {
    /// The id of the policy it holds.
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The policy it holds, if it is valid.
    pub fn policy(&self) -> Option<Policy> {
        self.0.policy().filter(|p| p.validate().is_ok())
    }
}

impl Loaded {
    /// The default policy, for a directory without a policy file.
    fn default_policy() -> Loaded {
        let policy = Policy::default();
        let body = cache::body(&policy);
        Loaded {
            id: cache::hash_hex(body.as_bytes()),
            policy,
            source: Source::default(),
            body: Some(body),
            stale: None,
        }
    }
}

/// The id of a policy (the hash of its canonical JSON), as [`Loaded::id`] has it.
pub fn policy_id(policy: &Policy) -> String {
    cache::hash_hex(cache::body(policy).as_bytes())
}

/// An open config directory, locked (unless it does not exist and was opened to read).
pub struct Store {
    dir: PathBuf,
    lock: Option<Lock>,
}

impl Store {
    /// Open the config directory. `LockMode::Exclusive` creates it (mode 0700) and the
    /// lock file; `Shared` creates nothing (a missing directory is the default policy).
    /// A directory, or policy file, that another user owns or others may write to is
    /// refused.
    pub fn open(dir: &Path, mode: LockMode) -> Result<Store, StoreError> {
        let exists = dir.exists();
        if !exists && mode == LockMode::Exclusive {
            files::create_dir(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let store = Store {
            dir: dir.to_path_buf(),
            lock: None,
        };
        if !exists && mode == LockMode::Shared {
            return Ok(store);
        }
        store.check_safe(dir)?;
        let lock = Lock::take(&dir.join(LOCK_FILE), mode)?;
        Ok(Store { lock, ..store })
    }

    /// Refuse a file of the config directory that another user owns or others may
    /// write to.
    pub fn check_safe(&self, path: &Path) -> Result<(), StoreError> {
        match files::unsafe_owner_or_mode(path) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(StoreError::Insecure {
                path: path.to_path_buf(),
                why,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The config directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join(POLICY_FILE)
    }

    /// Path of the policy cache.
    pub fn cache_path(&self) -> PathBuf {
        self.dir.join(CACHE_FILE)
    }

    /// The counter tags of the plan of the policy `policy_id`, if they were kept.
    pub fn counter_tags(&self, policy_id: &str) -> Option<CounterTags> {
        let bytes = files::read(&self.dir.join(COUNTER_TAGS_FILE)).ok()??;
        tags::parse(&bytes, &tags::key(policy_id)?)
    }

    /// Keep the counter tags of the plan of the policy `policy_id`, for the next
    /// `status verbose`. Best effort: missing tags only cost a compile.
    pub fn keep_counter_tags(&self, policy_id: &str, counter_tags: &CounterTags) {
        let text = tags::key(policy_id).and_then(|k| tags::file_text(&k, counter_tags));
        if let Some(text) = text {
            let path = self.dir.join(COUNTER_TAGS_FILE);
            let _ = files::write_atomic(&self.dir, &path, text.as_bytes(), false);
        }
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join(PENDING_FILE)
    }

    fn pending_cache_path(&self) -> PathBuf {
        self.dir.join(PENDING_CACHE_FILE)
    }

    /// The lock held: None only for a directory that did not exist when opened to read.
    pub fn lock_mode(&self) -> Option<LockMode> {
        self.lock.as_ref().map(Lock::mode)
    }

    /// Trade a shared lock for the exclusive one (see [`Lock::upgrade`]).
    pub fn upgrade(&mut self) -> Result<(), StoreError> {
        match &mut self.lock {
            Some(lock) => lock.upgrade(),
            None => Ok(()),
        }
    }

    /// Load the policy; a missing file is the default policy.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        Ok(self
            .load_from(&self.policy_path(), &self.cache_path())?
            .unwrap_or_else(Loaded::default_policy))
    }

    /// The last policy rampart wrote (and, when enabled, applied): the one its cache
    /// holds, if the cache is intact and valid, whatever the TOML file says now. What
    /// `rampart boot` loads when the policy file does not load.
    pub fn load_last_good(&self) -> Option<Policy> {
        let bytes = files::read(&self.cache_path()).ok()??;
        Cache::check(bytes)?
            .policy()
            .filter(|p| p.validate().is_ok())
    }

    /// Whether a change was interrupted (its pending policy is still there).
    pub fn has_pending(&self) -> bool {
        self.pending_path().exists()
    }

    /// Load the pending policy of an interrupted change (None if there is none).
    pub fn load_pending(&self) -> Result<Option<Loaded>, StoreError> {
        self.load_from(&self.pending_path(), &self.pending_cache_path())
    }

    fn load_from(&self, path: &Path, cache_path: &Path) -> Result<Option<Loaded>, StoreError> {
        let read_err = |source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        };
        let Some(toml) = files::read(path).map_err(read_err)? else {
            return Ok(None);
        };
        self.check_safe(path)?;
        let toml_hash = cache::hash_hex(&toml);
        let cache = files::read(cache_path)
            .ok()
            .flatten()
            .and_then(Cache::check);
        if let Some(cache) = cache.as_ref().filter(|c| c.made_from(&toml, &toml_hash)) {
            if let Some(policy) = cache.policy().filter(|p| p.validate().is_ok()) {
                let cache = cache_parts(cache);
                return Ok(Some(Loaded {
                    policy,
                    id: cache.1,
                    source: Source {
                        toml,
                        cache: Some(cache.0),
                    },
                    body: None,
                    stale: None,
                }));
            }
        }
        let policy = parse_toml(path, &toml)?;
        let body = cache::body(&policy);
        Ok(Some(Loaded {
            id: cache::hash_hex(body.as_bytes()),
            policy,
            source: Source { toml, cache: None },
            body: Some(body),
            stale: cache.map(Stale),
        }))
    }

    /// Write the policy's cache if none matched its file (after a hand edit), so the
    /// next command reads it fast. Best effort: a missing cache only costs time.
    pub fn refresh_cache(&self, loaded: &Loaded) {
        let Some(body) = &loaded.body else { return };
        if loaded.source.toml.is_empty() {
            return;
        }
        // A hand edit may leave the text as rampart lays it out; then later changes
        // can be spliced into it.
        let origin = if layout::toml_text(&loaded.policy).as_bytes() == loaded.source.toml {
            Origin::Written
        } else {
            Origin::Read
        };
        let text = cache::file_text(&loaded.source.toml, body, &loaded.id, origin);
        let _ = files::write_atomic(&self.dir, &self.cache_path(), text.as_bytes(), false);
    }

    /// First step of a change: write the new policy (and its cache) as pending. Not
    /// yet durable: a killed process loses nothing; [`Store::sync_pending`] makes the
    /// data durable (while nft works), [`Store::commit_pending`] the rename.
    pub fn write_pending(&self, policy: &Serialized) -> Result<(), StoreError> {
        let write = |path: PathBuf, bytes: &[u8]| {
            files::write_atomic(&self.dir, &path, bytes, false)
                .map_err(|source| StoreError::Write { path, source })
        };
        // The cache first: the pending TOML is the mark of a change in progress.
        write(self.pending_cache_path(), policy.cache.as_bytes())?;
        write(self.pending_path(), policy.toml.as_bytes())
    }

    /// fsync the pending policy's data, so the policy file is never torn by a power
    /// cut. (The cache needs none: it is checked against hashes when read.)
    pub fn sync_pending(&self) -> Result<(), StoreError> {
        let path = self.pending_path();
        files::sync_file(&path).map_err(|source| StoreError::Write { path, source })
    }

    /// Last step of a change: the pending policy becomes the policy (durably).
    pub fn commit_pending(&self) -> Result<(), StoreError> {
        let path = self.policy_path();
        let err = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        files::rename(&self.pending_path(), &path).map_err(err)?;
        files::sync_dir(&self.dir).map_err(err)?;
        // The cache moves after the sync: ext4 writes out a file renamed over another
        // with the next journal commit, which the sync would wait for (1.3 MB at 10k
        // rules). A cache that fails to move is only a slower next command.
        let _ = files::rename(&self.pending_cache_path(), &self.cache_path());
        Ok(())
    }

    /// Drop the pending policy (the change did not happen).
    pub fn discard_pending(&self) -> Result<(), StoreError> {
        for path in [self.pending_path(), self.pending_cache_path()] {
            files::remove(&self.dir, &path).map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Back the policy file up under a new name (None if there is no policy file).
    pub fn backup(&self) -> Result<Option<PathBuf>, StoreError> {
        let path = self.policy_path();
        let read_err = |source| StoreError::Read {
            path: path.clone(),
            source,
        };
        let Some(bytes) = files::read(&path).map_err(read_err)? else {
            return Ok(None);
        };
        backup::write(&self.dir, &path, &bytes)
            .map(Some)
            .map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })
    }

    /// Write a policy directly (for tests and tools that set up a directory).
    pub fn save(&self, policy: &Policy) -> Result<(), StoreError> {
        let s = Serialized::of(policy);
        self.write_pending(&s)?;
        self.sync_pending()?;
        self.commit_pending()
    }
}

fn cache_parts(cache: &Cache) -> ((Origin, Vec<u8>, usize), String) {
    (
        (cache.origin, cache.bytes.clone(), cache.body_start),
        cache.id.clone(),
    )
}

/// Parse and validate a policy file's TOML; errors name the line.
/// Read a policy file's bytes as `rampart` reads `policy.toml` (for the fuzzer and
/// tools): the same checks, the same one-line errors.
pub fn parse_policy(toml: &[u8]) -> Result<Policy, StoreError> {
    parse_toml(Path::new(POLICY_FILE), toml)
}

/// Parse and validate a policy in TOML read from `path` (errors name it and the line).
pub fn parse_policy_at(path: &Path, toml: &[u8]) -> Result<Policy, StoreError> {
    parse_toml(path, toml)
}

fn parse_toml(path: &Path, toml: &[u8]) -> Result<Policy, StoreError> {
    let invalid = |line: usize, message: String| StoreError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::str::from_utf8(toml).map_err(|e| {
        let line = toml[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        invalid(line, "the file is not UTF-8 text".into())
    })?;
    let policy: Policy = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        invalid(line, e.message().trim().replace('\n', " "))
    })?;
    policy.validate().map_err(|e| match e.rule {
        Some(i) => invalid(rule_line(text, i), format!("rule {}: {}", i + 1, e.problem)),
        None => invalid(1, e.problem),
    })?;
    Ok(policy)
}

/// The line of the `i`th (0-based) `[[rule]]` header.
fn rule_line(text: &str, i: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[rule]]")
        .nth(i)
        .map(|(n, _)| n + 1)
        .unwrap_or(1)
}
