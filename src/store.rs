//! The config directory: the policy as TOML, written atomically under an exclusive lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::model::Policy;

/// The policy file inside the config directory.
pub const POLICY_FILE: &str = "policy.toml";
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

    /// Load the policy; a missing file is the default policy.
    pub fn load(&self) -> Result<Policy, StoreError> {
        load_policy(&self.policy_path())
    }

    /// Write the policy atomically: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, policy: &Policy) -> Result<(), StoreError> {
        let path = self.policy_path();
        let text = toml::to_string(policy).expect("policy serializes to TOML");
        let tmp = self.dir.join(format!(".{POLICY_FILE}.tmp"));
        let werr = |source| StoreError::Write {
            path: path.clone(),
            source,
        };
        {
            let mut f = File::create(&tmp).map_err(werr)?;
            f.write_all(HEADER.as_bytes()).map_err(werr)?;
            f.write_all(text.as_bytes()).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        fs::rename(&tmp, &path).map_err(werr)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        Ok(())
    }
}

const HEADER: &str =
    "# rampart policy. Edit with the rampart command; hand edits are read on the next command.\n";

/// Read a policy file; missing means the default policy.
pub fn load_policy(path: &Path) -> Result<Policy, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|source| StoreError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Policy::default()),
        Err(source) => Err(StoreError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
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
}
