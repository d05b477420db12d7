//! Warnings of a condition that recurs (a port that cannot be bound, a
//! keeper that does not answer, a task that finds no room) said once per
//! new reason rather than every round: a [`RepeatGate`] per condition
//! decides whether a failure is worth a log line, and counts the ones it
//! kept quiet, so the line that says the reason changed, or that the
//! condition cleared, says how often the last reason came back. Pure: the
//! caller logs what it is told to.

use std::collections::HashMap;
use std::hash::Hash;

/// One recurring condition: the reason last said, and how many failures
/// with that same reason followed without a line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepeatGate {
    said: Option<Said>,
}

/// A reason said, and how often it came back since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub reason: String,
    pub repeats: u64,
}

impl RepeatGate {
    /// A failure with `reason`. `Some` when it is to be logged (the first
    /// failure, or a reason other than the last one said), carrying what
    /// was said before it, if anything, with its repeat count; `None` when
    /// it repeats the last reason (counted).
    pub fn failed(&mut self, reason: &str) -> Option<Option<Said>> {
        match &mut self.said {
            Some(said) if said.reason == reason => {
                said.repeats = said.repeats.saturating_add(1);
                None
            }
            _ => Some(self.said.replace(Said {
                reason: reason.to_owned(),
                repeats: 0,
            })),
        }
    }

    /// The condition cleared (the port was bound, the call went through).
    /// `Some` with the last reason and its repeats when a failure had been
    /// said, so the recovery can be logged; `None` when all was well.
    pub fn cleared(&mut self) -> Option<Said> {
        self.said.take()
    }

    /// Whether a failure is outstanding.
    pub fn failing(&self) -> bool {
        self.said.is_some()
    }
}

/// A [`RepeatGate`] per subject (a task, a service, a peer), for
/// conditions that recur for each of many subjects. Subjects are dropped
/// when they clear, and by [`RepeatGates::retain`] when they are gone.
#[derive(Debug, Clone)]
pub struct RepeatGates<K> {
    gates: HashMap<K, RepeatGate>,
}

impl<K> Default for RepeatGates<K> {
    fn default() -> Self {
        Self {
            gates: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> RepeatGates<K> {
    /// As [`RepeatGate::failed`], for `key`.
    pub fn failed(&mut self, key: K, reason: &str) -> Option<Option<Said>> {
        self.gates.entry(key).or_default().failed(reason)
    }

    /// As [`RepeatGate::cleared`], for `key`; forgets it.
    pub fn cleared(&mut self, key: &K) -> Option<Said> {
        self.gates.remove(key).and_then(|mut g| g.cleared())
    }

    /// Keeps only the subjects `keep` says still exist.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.gates.retain(|k, _| keep(k));
    }

    /// How many subjects are failing.
    pub fn len(&self) -> usize {
        self.gates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(reason: &str, repeats: u64) -> Said {
        Said {
            reason: reason.into(),
            repeats,
        }
    }

    #[test]
    fn a_reason_is_said_once_and_its_repeats_counted() {
        let mut g = RepeatGate::default();
        assert!(!g.failing());
        assert_eq!(g.failed("port taken"), Some(None), "the first is said");
        for _ in 0..5 {
            assert_eq!(g.failed("port taken"), None, "repeats are not");
        }
        assert!(g.failing());
        assert_eq!(g.cleared(), Some(said("port taken", 5)));
        assert_eq!(g.cleared(), None, "cleared once");
        assert!(!g.failing());
    }

    #[test]
    fn a_new_reason_is_said_with_the_count_of_the_old_one() {
        let mut g = RepeatGate::default();
        g.failed("a");
        g.failed("a");
        g.failed("a");
        assert_eq!(g.failed("b"), Some(Some(said("a", 2))));
        assert_eq!(g.failed("b"), None);
        assert_eq!(
            g.failed("a"),
            Some(Some(said("b", 1))),
            "back to a: new again"
        );
        assert_eq!(g.cleared(), Some(said("a", 0)));
    }

    #[test]
    fn after_clearing_the_same_reason_is_said_again() {
        let mut g = RepeatGate::default();
        assert_eq!(g.cleared(), None);
        g.failed("a");
        g.cleared();
        assert_eq!(g.failed("a"), Some(None));
    }

    #[test]
    fn gates_per_subject_are_apart_and_forgotten() {
        let mut gates = RepeatGates::default();
        assert_eq!(gates.failed("t1", "no room"), Some(None));
        assert_eq!(gates.failed("t2", "no room"), Some(None), "another subject");
        assert_eq!(gates.failed("t1", "no room"), None);
        assert_eq!(gates.len(), 2);
        assert_eq!(gates.cleared(&"t1"), Some(said("no room", 1)));
        assert_eq!(gates.cleared(&"t1"), None);
        gates.retain(|k| *k != "t2");
        assert!(gates.is_empty());
        assert_eq!(gates.failed("t2", "no room"), Some(None), "said again");
    }
}
