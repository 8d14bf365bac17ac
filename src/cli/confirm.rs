//! Commit-confirmed: `--confirm SECONDS COMMAND` saves a rollback point, makes the
//! change, and leaves a detached process that rolls it back at the deadline unless
//! `confirm` runs first; `rollback` rolls back at once.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::apply::Firewall;
use crate::model::inert;
use crate::store::{LockMode, RollbackPoint, Store};

use super::{usage, CliError, Ctx, Out};

/// The longest `--confirm` wait.
pub const MAX_CONFIRM_SECONDS: u32 = 86_400;

/// Where the waiting process writes what it did.
pub const ROLLBACK_LOG: &str = "rollback.log";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS UTC` of a Unix time.
fn clock(t: u64) -> String {
    let s = t % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// How a waiting rollback is described: `'rampart …' rolls back at HH:MM:SS UTC (in N s)`.
pub fn describe(p: &RollbackPoint) -> String {
    let left = p.deadline.saturating_sub(now());
    format!(
        "'rampart {}' rolls back at {} (in {left} s) unless 'rampart confirm' runs",
        inert(&p.command),
        clock(p.deadline)
    )
}

fn token() -> String {
    let mut bytes = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if read.is_err() {
        // Unique enough for telling one waiting process from the next.
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()) as u64
            ^ u64::from(std::process::id());
        bytes = n.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Ctx<'_> {
    /// Before a change made with `--confirm SECONDS`: save the rollback point (refused
    /// while another change waits).
    pub(super) fn save_rollback(
        &self,
        seconds: u32,
        command: &str,
    ) -> Result<RollbackPoint, CliError> {
        let fw = self.open_write()?;
        if let Some(p) = fw.rollback_point()? {
            return Err(usage(format!(
                "a change is already waiting for confirmation: {}; run 'rampart confirm' or 'rampart rollback' first",
                describe(&p)
            )));
        }
        let point = RollbackPoint {
            token: token(),
            deadline: now() + u64::from(seconds),
            command: command.to_string(),
            had_file: fw.policy_path().exists(),
        };
        fw.save_rollback(&point)?;
        Ok(point)
    }

    /// After a `--confirm` change failed or was declined: nothing to roll back.
    pub(super) fn drop_rollback(&self) {
        if let Err(e) = self.open_write().and_then(|fw| Ok(fw.clear_rollback()?)) {
            eprintln!("WARN: could not remove the rollback point: {e}");
        }
    }

    /// After a `--confirm` change: start the process that rolls it back at the
    /// deadline, and say so.
    pub(super) fn start_waiter(&self, point: &RollbackPoint) -> Result<Out, CliError> {
        let exe = std::env::current_exe().map_err(|e| {
            usage(format!(
                "cannot find rampart's own binary to wait for the rollback: {e}"
            ))
        })?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join(ROLLBACK_LOG));
        let stderr = log.map_or_else(|_| Stdio::null(), Stdio::from);
        let spawned = Process::new(exe)
            .arg("--config-dir")
            .arg(&self.dir)
            .arg("rollback-wait")
            .arg(&point.token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn();
        if let Err(e) = spawned {
            // No waiter: roll back now rather than leave a change nobody will undo.
            let _ = self
                .open_write()
                .and_then(|fw| Ok(fw.roll_back(Some(&point.token))?));
            return Err(usage(format!(
                "could not start the process that waits for confirmation ({e}); the change was rolled back"
            )));
        }
        Ok(vec![
            format!(
                "Confirm within {} s: {}",
                point.deadline.saturating_sub(now()),
                describe(point)
            ),
            "('rampart rollback' rolls back now)".into(),
        ])
    }

    /// `confirm`: keep the change that waits; the waiting process ends by itself.
    pub(super) fn confirm_change(&self) -> Result<Out, CliError> {
        let fw = self.open_write()?;
        let Some(p) = fw.rollback_point()? else {
            return Err(usage(
                "nothing to confirm: no change is waiting for confirmation",
            ));
        };
        fw.clear_rollback()?;
        Ok(vec![format!(
            "Change confirmed: 'rampart {}' stays",
            inert(&p.command)
        )])
    }

    /// `rollback`: restore the policy from before the change that waits, now.
    pub(super) fn rollback(&self) -> Result<Out, CliError> {
        match self.open_write()?.roll_back(None)? {
            Some(p) => Ok(vec![format!(
                "Rolled back: the policy from before 'rampart {}' is in place again",
                inert(&p.command)
            )]),
            None => Err(usage(
                "nothing to roll back: no change is waiting for confirmation",
            )),
        }
    }

    /// `rollback-wait TOKEN` (started by `--confirm`): leave the terminal's session,
    /// wait for the deadline, and roll back unless the point was confirmed or replaced.
    pub(super) fn rollback_wait(&self, token: &str) -> Result<Out, CliError> {
        // A session of its own: the terminal closing, or the SSH session ending, sends
        // it no hangup.
        let _ = nix::unistd::setsid();
        let mut failures = 0;
        loop {
            let point = Store::open(&self.dir, LockMode::Shared)
                .and_then(|s| s.rollback_point())
                .map_err(|e| usage(e.to_string()));
            let point = match point {
                Ok(Some(p)) if p.token == token => p,
                // Confirmed, rolled back, or replaced by a later change: nothing to do.
                Ok(_) => return Ok(Vec::new()),
                Err(e) => {
                    failures += 1;
                    if failures > 10 {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            let left = point.deadline.saturating_sub(now());
            if left > 0 {
                std::thread::sleep(Duration::from_secs(left.min(1)));
                continue;
            }
            let done = Firewall::open_write(&self.dir, self.backend)
                .and_then(|fw| fw.roll_back(Some(token)));
            match done {
                Ok(Some(p)) => {
                    eprintln!(
                        "rampart: {}: not confirmed in time; rolled back to the policy from before 'rampart {}'",
                        clock(now()),
                        inert(&p.command)
                    );
                    return Ok(Vec::new());
                }
                Ok(None) => return Ok(Vec::new()),
                Err(e) => {
                    eprintln!(
                        "rampart: {}: rolling back failed: {e}; trying again",
                        clock(now())
                    );
                    failures += 1;
                    if failures > 10 {
                        return Err(e.into());
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        }
    }
}
