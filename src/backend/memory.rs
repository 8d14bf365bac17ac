//! A backend that keeps "the kernel" in memory: for tests of command logic that must
//! run without root, and for injecting faults at chosen steps.

use std::sync::Mutex;

use crate::compile::Plan;
use crate::render::plan_text;

use super::{Backend, BackendError, KernelState, Stamp, StateReading};

/// A step at which [`MemoryBackend`] can be told to fail, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The transaction is refused; nothing changes.
    Refuse,
    /// The transaction is applied, but nft reports a failure (as a timeout would).
    FailAfterApplying,
    /// The transaction is applied, but the verification fails.
    Verify,
}

/// The table "the kernel" holds: a plan and its stamp.
#[derive(Debug, Clone)]
struct Held {
    plan: Plan,
    stamp: Stamp,
}

/// An in-memory stand-in for the kernel.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    held: Mutex<Option<Held>>,
    faults: Mutex<Vec<Fault>>,
    applies: Mutex<usize>,
}

impl MemoryBackend {
    /// An empty "kernel".
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// Fail at the next transaction as `fault` says (faults queue up, one per
    /// transaction).
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push(fault);
    }

    /// The plan and stamp held, if any.
    pub fn held(&self) -> Option<(Plan, Stamp)> {
        self.held
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| (h.plan.clone(), h.stamp.clone()))
    }

    /// How many transactions changed the table.
    pub fn transactions(&self) -> usize {
        *self.applies.lock().unwrap()
    }

    /// The sequence number the next stamp gets.
    fn next_seq(&self) -> u64 {
        self.held
            .lock()
            .unwrap()
            .as_ref()
            .map_or(1, |h| h.stamp.seq + 1)
    }

    /// Replace the table with a plan and a stamp, as a transaction would (subject to
    /// the next fault).
    fn transact(&self, new: Option<(Plan, Stamp)>) -> Result<(), BackendError> {
        let fault = {
            let mut f = self.faults.lock().unwrap();
            (!f.is_empty()).then(|| f.remove(0))
        };
        if fault == Some(Fault::Refuse) {
            return Err(BackendError::Refused("injected refusal".into()));
        }
        *self.applies.lock().unwrap() += 1;
        *self.held.lock().unwrap() = new.map(|(plan, stamp)| Held { plan, stamp });
        match fault {
            Some(Fault::FailAfterApplying) => Err(BackendError::Timeout(0.0)),
            Some(Fault::Verify) => Err(BackendError::Verify("injected".into())),
            _ => Ok(()),
        }
    }
}

impl Backend for MemoryBackend {
    fn start_state(&self) -> StateReading {
        let state = Ok(match &*self.held.lock().unwrap() {
            None => KernelState::Absent,
            Some(h) => KernelState::Loaded {
                stamp: Some(h.stamp.clone()),
                superseded: Vec::new(),
            },
        });
        Box::new(move || state)
    }

    fn apply(&self, _: &KernelState, plan: &Plan, policy: &str) -> Result<(), BackendError> {
        let stamp = Stamp::new(policy, self.next_seq());
        self.transact(Some((plan.clone(), stamp)))
    }

    fn update(
        &self,
        current: &KernelState,
        previous: &Plan,
        plan: &Plan,
        policy: &str,
    ) -> Result<(), BackendError> {
        // As the kernel would: the diff applies only to the table it was computed for.
        let same = match (&*self.held.lock().unwrap(), current) {
            (Some(h), KernelState::Loaded { stamp, .. }) => {
                stamp.as_ref() == Some(&h.stamp) && h.plan == *previous
            }
            _ => false,
        };
        assert!(
            same || !previous.same_skeleton(plan),
            "a diff was computed against a plan the kernel does not hold"
        );
        let stamp = Stamp::new(policy, self.next_seq());
        self.transact(Some((plan.clone(), stamp)))
    }

    fn remove(&self) -> Result<(), BackendError> {
        if self.held.lock().unwrap().is_none() {
            return Ok(());
        }
        self.transact(None)
    }

    fn others_forwarding(&self) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }

    fn list_text(&self) -> Result<String, BackendError> {
        Ok(self
            .held
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| plan_text(&h.plan))
            .unwrap_or_default())
    }
}
