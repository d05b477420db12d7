//! Disclaimers: tasks a node said it does not hold, and so will not take.
//!
//! When an offer's answer is lost, the offering node asks the node offered
//! to whether it holds the task, and offers it elsewhere only when it does
//! not. But the offer may still be on its way, on a connection that broke
//! while a new one carried the question (seen in chaos seed 1: the
//! question overtook the offer by 2 ms, and the task ran on two nodes at
//! once). So a node that answers "not here" disclaims the task: it records
//! the id and refuses the offer should it still arrive. Asking and
//! taking are handled one at a time by the node's supervisor, so one of
//! them comes first.
//!
//! A disclaimer lasts [`DISCLAIM_MS`]: a late offer can only arrive while
//! it travels, and it cannot travel long. The offering node asks 5 s after
//! sending; a QUIC connection that carries nothing closes after 10 s idle,
//! dropping what it had not delivered; a call must be read whole within
//! 10 s of its stream's first byte. Kept longer, a disclaimer would refuse
//! the task's later, legitimate offers to this node (a mover offers its
//! queue head to the best-ranked node again the next round). At most
//! [`MAX_DISCLAIMED`] are kept (the oldest go first). (Not to be confused
//! with a lease's fencing, `crate::lease`.)

use std::collections::{HashMap, VecDeque};

use crate::ids::TaskId;

/// How long a disclaimer holds: three times the longest a late offer can
/// take to arrive.
pub const DISCLAIM_MS: u64 = 60 * 1000;

/// Disclaimers kept at most.
pub const MAX_DISCLAIMED: usize = 4096;

#[derive(Debug, Default)]
pub struct Disclaimed {
    /// When each task was last disclaimed.
    at: HashMap<TaskId, u64>,
    /// In the order they were made (a task disclaimed again appears again;
    /// its older entry no longer counts).
    order: VecDeque<(TaskId, u64)>,
}

impl Disclaimed {
    /// Promises not to take `id` for [`DISCLAIM_MS`] from now (again, if it
    /// was disclaimed before).
    pub fn disclaim(&mut self, id: TaskId, now_ms: u64) {
        self.expire(now_ms);
        while self.order.len() >= MAX_DISCLAIMED {
            self.pop();
        }
        self.at.insert(id.clone(), now_ms);
        self.order.push_back((id, now_ms));
    }

    /// Whether `id` was disclaimed (and may not be taken).
    pub fn holds(&mut self, id: &TaskId, now_ms: u64) -> bool {
        self.expire(now_ms);
        self.at.contains_key(id)
    }

    fn expire(&mut self, now_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now_ms.saturating_sub(*at) > DISCLAIM_MS)
        {
            self.pop();
        }
    }

    /// Drops the oldest entry, and its task unless disclaimed again since.
    fn pop(&mut self) {
        if let Some((id, at)) = self.order.pop_front()
            && self.at.get(&id) == Some(&at)
        {
            self.at.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: usize) -> TaskId {
        TaskId::generate(1_000 + i as u64, i as u64)
    }

    #[test]
    fn a_disclaimer_holds_for_its_time_and_only_for_its_task() {
        let mut f = Disclaimed::default();
        f.disclaim(id(1), 1_000);
        assert!(f.holds(&id(1), 1_000));
        assert!(!f.holds(&id(2), 1_000));
        assert!(f.holds(&id(1), 1_000 + DISCLAIM_MS));
        assert!(!f.holds(&id(1), 1_001 + DISCLAIM_MS));
        // Disclaimed again, it holds again.
        f.disclaim(id(1), 2_000 + DISCLAIM_MS);
        assert!(f.holds(&id(1), 2_000 + DISCLAIM_MS));
    }

    /// Review: a task disclaimed again before its first disclaimer ran out
    /// is held from the second one on, not from the first.
    #[test]
    fn disclaiming_again_restarts_the_time() {
        let mut f = Disclaimed::default();
        f.disclaim(id(1), 0);
        f.disclaim(id(1), DISCLAIM_MS - 1);
        assert!(
            f.holds(&id(1), DISCLAIM_MS + 1),
            "the first one ran out, the second holds"
        );
        assert!(f.holds(&id(1), 2 * DISCLAIM_MS - 1));
        assert!(!f.holds(&id(1), 2 * DISCLAIM_MS));
    }

    #[test]
    fn at_most_max_disclaimed_are_kept_the_oldest_going_first() {
        let mut f = Disclaimed::default();
        for i in 0..MAX_DISCLAIMED + 10 {
            f.disclaim(id(i), 5);
        }
        assert_eq!(f.order.len(), MAX_DISCLAIMED);
        assert_eq!(f.at.len(), MAX_DISCLAIMED);
        assert!(!f.holds(&id(9), 5));
        assert!(f.holds(&id(10), 5));
        assert!(f.holds(&id(MAX_DISCLAIMED + 9), 5));
    }
}
