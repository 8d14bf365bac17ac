//! The config directory's lock: shared for commands that only read, exclusive for
//! commands that change something. A command that has to wait says so once and gives
//! up after [`lock_timeout`].
//!
//! The lock is inherited by the `nft` processes a command starts, so that if rampart is
//! killed while nft works, the next command waits until that nft has finished (and then
//! sees what it did) instead of racing it.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};

use super::files;
use super::StoreError;

/// How long a command waits for the lock unless `RAMPART_LOCK_TIMEOUT` (seconds) says
/// otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// Environment variable that sets the lock timeout in seconds.
pub const LOCK_TIMEOUT_ENV: &str = "RAMPART_LOCK_TIMEOUT";
/// How often a waiting command tries the lock again.
const RETRY: Duration = Duration::from_millis(20);

/// The lock timeout in force.
pub fn lock_timeout() -> Duration {
    std::env::var(LOCK_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_LOCK_TIMEOUT)
}

/// Shared (readers) or exclusive (writers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many readers at once, no writer.
    Shared,
    /// One writer, no reader.
    Exclusive,
}

/// A held lock; released on drop (and when the last `nft` child that inherited it ends).
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    mode: LockMode,
}

impl Lock {
    /// Take the lock file's lock in `mode`, waiting up to [`lock_timeout`]. A writer
    /// creates the file (mode 0600); a reader of a directory without one gets None.
    pub fn take(path: &Path, mode: LockMode) -> Result<Option<Lock>, StoreError> {
        let err = |source| StoreError::Lock {
            path: path.to_path_buf(),
            source,
        };
        if mode == LockMode::Exclusive {
            files::open_private(path, true).map_err(err)?;
        }
        // Locked through a read-only descriptor: flock does not need write access, and
        // no file stays open for writing while nft works.
        let file = match files::open_private(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == LockMode::Shared => {
                return Ok(None)
            }
            Err(e) => return Err(err(e)),
        };
        let try_once = |f: &File| match mode {
            LockMode::Shared => f.try_lock_shared(),
            LockMode::Exclusive => f.try_lock(),
        };
        let start = Instant::now();
        let timeout = lock_timeout();
        let mut said = false;
        loop {
            match try_once(&file) {
                Ok(()) => break,
                Err(TryLockError::Error(e)) => return Err(err(e)),
                Err(TryLockError::WouldBlock) => {}
            }
            if start.elapsed() >= timeout {
                return Err(StoreError::LockTimeout {
                    path: path.to_path_buf(),
                    waited: timeout,
                });
            }
            if !said {
                eprintln!(
                    "Waiting for another rampart command to finish (it holds {}; giving up after {} s)",
                    path.display(),
                    timeout.as_secs_f64()
                );
                said = true;
            }
            std::thread::sleep(RETRY);
        }
        // Inherited by child processes (nft): see the module doc.
        fcntl(&file, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| err(e.into()))?;
        Ok(Some(Lock {
            file,
            path: path.to_path_buf(),
            mode,
        }))
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Trade a shared lock for the exclusive one (to finish an interrupted change). The
    /// lock is let go in between, so what was read under it must be read again.
    pub fn upgrade(&mut self) -> Result<(), StoreError> {
        if self.mode == LockMode::Exclusive {
            return Ok(());
        }
        let _ = self.file.unlock();
        let path = self.path.clone();
        let lock = Lock::take(&path, LockMode::Exclusive)?.ok_or_else(|| StoreError::Lock {
            path: path.clone(),
            source: io::Error::from(io::ErrorKind::NotFound),
        })?;
        *self = lock;
        Ok(())
    }
}
