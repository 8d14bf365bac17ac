//! The config directory: the policy as TOML, written atomically under an exclusive lock.
//!
//! Beside it, a cache of the same policy as JSON, stamped with a hash of the TOML text
//! it was made from: parsing TOML costs ~0.1 s at 10,000 rules, JSON a twentieth of
//! that. The TOML file stays the only source of truth: the cache is used only when the
//! stamp matches the file's current bytes, so a hand edit is always read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::Policy;

/// The policy file inside the config directory.
pub const POLICY_FILE: &str = "policy.toml";
/// The policy cache inside the config directory (see the module doc).
pub const CACHE_FILE: &str = ".policy.cache.json";
/// The lock file inside the config directory; held for the whole of a command.
pub const LOCK_FILE: &str = ".lock";
/// Default config directory.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/rampart";

/// Store failures.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot use config directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a valid policy: {source}; fix or remove it")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
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
}

/// An open, locked config directory. The lock is released on drop.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Open (creating if needed) and lock the config directory. `create` is false for
    /// commands that must not write anything (dry runs): then a missing directory is
    /// treated as an empty default policy and no lock file is made.
    pub fn open(dir: &Path, create: bool) -> Result<Option<Store>, StoreError> {
        if !dir.exists() {
            if !create {
                return Ok(None);
            }
            fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = if create {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
        } else {
            File::open(&lock_path).or_else(|_| File::open(dir))
        }
        .map_err(|source| StoreError::Lock {
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| StoreError::Lock {
            path: lock_path,
            source,
        })?;
        Ok(Some(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        }))
    }

    /// Path of the policy file.
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join(POLICY_FILE)
    }

    /// Path of the policy cache.
    pub fn cache_path(&self) -> PathBuf {
        self.dir.join(CACHE_FILE)
    }

    /// Load the policy; a missing file is the default policy.
    pub fn load(&self) -> Result<Policy, StoreError> {
        Ok(load_with_cache(&self.policy_path(), &self.cache_path())?.0)
    }

    /// Load the policy, and write the cache if it did not match the file (after a hand
    /// edit). For commands that may write to the config directory.
    pub fn load_and_cache(&self) -> Result<Policy, StoreError> {
        let (policy, hit) = load_with_cache(&self.policy_path(), &self.cache_path())?;
        if !hit {
            if let Ok(text) = fs::read(self.policy_path()) {
                self.write_cache(&cache_text(&text, &policy));
            }
        }
        Ok(policy)
    }

    /// Write the policy atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, policy: &Policy) -> Result<(), StoreError> {
        self.write(&Serialized::of(policy))
    }

    /// Write an already serialized policy (see [`Serialized`]) atomically.
    pub fn write(&self, policy: &Serialized) -> Result<(), StoreError> {
        let path = self.policy_path();
        let tmp = self.dir.join(format!(".{POLICY_FILE}.tmp"));
        let werr = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        {
            let mut f = File::create(&tmp).map_err(werr)?;
            f.write_all(policy.toml.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        fs::rename(&tmp, &path).map_err(werr)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        self.write_cache(&policy.cache);
        Ok(())
    }

    /// Write the cache: best effort and not synced, as a missing or torn cache fails
    /// its stamp and only costs time.
    fn write_cache(&self, cache: &str) {
        let tmp = self.dir.join(format!("{CACHE_FILE}.tmp"));
        if fs::write(&tmp, cache).is_ok() {
            let _ = fs::rename(&tmp, self.cache_path());
        }
    }
}

/// A policy turned into the bytes the store writes (the TOML file and its cache), so
/// that the work can be done beside other work before the write.
pub struct Serialized {
    toml: String,
    cache: String,
}

impl Serialized {
    /// Serialize a policy.
    pub fn of(policy: &Policy) -> Serialized {
        let toml = format!(
            "{HEADER}{}",
            toml::to_string(policy).expect("policy serializes to TOML")
        );
        let cache = cache_text(toml.as_bytes(), policy);
        Serialized { toml, cache }
    }
}

/// The cache file's text for a policy read from (or written as) this TOML text.
fn cache_text(toml_text: &[u8], policy: &Policy) -> String {
    let json = serde_json::to_string(policy).expect("policy serializes to JSON");
    format!("{}\n{json}", stamp(toml_text))
}

const HEADER: &str =
    "# rampart policy. Edit with the rampart command; hand edits are read on the next command.\n";

/// The first line of a cache made from this TOML text: the program's version (the
/// JSON is its model) and a hash of the text.
fn stamp(toml_text: &[u8]) -> String {
    use std::hash::Hasher;
    // Fixed keys: the same for the same bytes within one build, which is all the
    // stamp needs (the version is part of it).
    let mut h = std::hash::DefaultHasher::new();
    h.write(toml_text);
    format!(
        "rampart {} policy cache {:016x} {}",
        env!("CARGO_PKG_VERSION"),
        h.finish(),
        toml_text.len()
    )
}

/// Read a policy file, through the cache when its stamp matches; missing means the
/// default policy. Also says whether the cache was used.
fn load_with_cache(path: &Path, cache: &Path) -> Result<(Policy, bool), StoreError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Policy::default(), true)),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if let Ok(cached) = fs::read(cache) {
        let stamp = stamp(&text);
        if let Some(json) = cached
            .strip_prefix(stamp.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"\n"))
        {
            if let Ok(policy) = serde_json::from_slice(json) {
                return Ok((policy, true));
            }
        }
    }
    let parse_err = |source| StoreError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let text = std::str::from_utf8(&text).map_err(|e| StoreError::Read {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })?;
    let policy = toml::from_str(text).map_err(parse_err)?;
    Ok((policy, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::parse_rule;
    use crate::model::Action;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("rampart-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true).unwrap().unwrap();
        let mut p = store.load().unwrap();
        assert_eq!(p, Policy::default());
        let words: Vec<String> = "in on eth0 log proto tcp from 198.18.0.0/24 port 1000:2000 to any port 22,80 comment hi"
            .split_whitespace()
            .map(String::from)
            .collect();
        p.rules = parse_rule(Action::Deny, &words).unwrap().rules;
        p.enabled = true;
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), p);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_follows_hand_edits() {
        let dir = std::env::temp_dir().join(format!("rampart-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::open(&dir, true).unwrap().unwrap();
        let p = Policy {
            rules: parse_rule(Action::Allow, &["22/tcp".to_string()])
                .unwrap()
                .rules,
            ..Policy::default()
        };
        store.save(&p).unwrap();
        let cache = fs::read_to_string(store.cache_path()).unwrap();
        assert!(cache.starts_with(&stamp(&fs::read(store.policy_path()).unwrap())));
        assert_eq!(store.load().unwrap(), p);

        // A hand edit: the stale cache is ignored, then refreshed by load_and_cache.
        let text = fs::read_to_string(store.policy_path()).unwrap();
        fs::write(store.policy_path(), text.replace("\"22\"", "\"2222\"")).unwrap();
        let edited = store.load().unwrap();
        assert_ne!(edited, p);
        assert_eq!(
            edited.rules[0].to.ports.as_ref().unwrap().to_string(),
            "2222"
        );
        assert_eq!(store.load_and_cache().unwrap(), edited);
        let cache = fs::read_to_string(store.cache_path()).unwrap();
        assert!(cache.starts_with(&stamp(&fs::read(store.policy_path()).unwrap())));
        assert_eq!(store.load().unwrap(), edited);
        drop(store);
        fs::remove_dir_all(&dir).unwrap();
    }
}
