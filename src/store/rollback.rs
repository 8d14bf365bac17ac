//! The rollback point of a change made with `--confirm`: copies of the policy file and
//! its cache as they were before the change, and a small JSON file saying when the
//! change rolls back and which waiting process may do it. The JSON file is written
//! last and removed first: it marks a rollback point as complete.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{files, Loaded, Store, StoreError};

/// The rollback point's description (its presence marks a change waiting for `confirm`).
pub const ROLLBACK_FILE: &str = ".rollback.json";
/// The policy file as it was before the change.
pub const ROLLBACK_POLICY_FILE: &str = ".rollback.policy.toml";
/// Its cache.
pub const ROLLBACK_CACHE_FILE: &str = ".rollback.policy.cache.json";

/// When and why a change rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackPoint {
    /// Names the waiting process allowed to roll back (a later point has another).
    pub token: String,
    /// When the change rolls back unless confirmed (seconds since the Unix epoch).
    pub deadline: u64,
    /// The command that made the change (for messages).
    pub command: String,
    /// Whether there was a policy file before the change.
    pub had_file: bool,
}

impl Store {
    fn rollback_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The rollback point, if a change is waiting for `confirm`.
    pub fn rollback_point(&self) -> Result<Option<RollbackPoint>, StoreError> {
        let path = self.rollback_path(ROLLBACK_FILE);
        let bytes = files::read(&path).map_err(|source| StoreError::Read {
            path: path.clone(),
            source,
        })?;
        let Some(bytes) = bytes else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Read {
                path: path.clone(),
                source: std::io::Error::other(format!(
                    "{e}; 'rampart rollback' cannot use it: remove it to go on"
                )),
            })
    }

    /// Save the policy file as it is now as the rollback point `point`.
    pub fn save_rollback(&self, point: &RollbackPoint) -> Result<(), StoreError> {
        let write = |name: &str, bytes: &[u8]| {
            let path = self.rollback_path(name);
            files::write_atomic(&self.dir, &path, bytes, true)
                .map_err(|source| StoreError::Write { path, source })
        };
        let read =
            |path: PathBuf| files::read(&path).map_err(|source| StoreError::Read { path, source });
        if let Some(toml) = read(self.policy_path())? {
            write(ROLLBACK_POLICY_FILE, &toml)?;
            if let Some(cache) = read(self.cache_path())? {
                write(ROLLBACK_CACHE_FILE, &cache)?;
            }
        }
        let json = serde_json::to_vec(point).expect("a rollback point serializes");
        write(ROLLBACK_FILE, &json)
    }

    /// The policy the rollback point saved (None: there was no policy file).
    pub fn load_rollback(&self) -> Result<Option<Loaded>, StoreError> {
        self.load_from(
            &self.rollback_path(ROLLBACK_POLICY_FILE),
            &self.rollback_path(ROLLBACK_CACHE_FILE),
        )
    }

    /// Remove the rollback point (its description first).
    pub fn clear_rollback(&self) -> Result<(), StoreError> {
        for name in [ROLLBACK_FILE, ROLLBACK_POLICY_FILE, ROLLBACK_CACHE_FILE] {
            let path = self.rollback_path(name);
            files::remove(&self.dir, &path).map_err(|source| StoreError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}
