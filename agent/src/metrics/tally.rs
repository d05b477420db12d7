//! The few counters /metrics has that no state holds already: how many
//! times the supervisor took each decision since meshd started. The
//! supervisor owns a [`Tally`] (no atomics, no sharing: one task bumps it)
//! and hands out a copy with its task counts at each scrape.

/// Decisions counted since start; each field only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts started here: a task placed on this node, first run or retry.
    pub attempts_started: u64,
    /// Attempts that ended and were queued here again to retry.
    pub retries: u64,
    /// Tasks a peer offered (placement or a move) that this node took.
    pub offers_taken: u64,
    /// Offers this node refused (busy, draining, Docker away, …).
    pub offers_refused: u64,
    /// Tasks of a dead node this node re-placed, as their keeper.
    pub replacements: u64,
}

impl Tally {
    /// Counts an offer's answer.
    pub fn offer<T, E>(&mut self, answer: &Result<T, E>) {
        match answer {
            Ok(_) => self.offers_taken += 1,
            Err(_) => self.offers_refused += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_count_by_answer() {
        let mut t = Tally::default();
        t.offer::<(), ()>(&Ok(()));
        t.offer::<(), ()>(&Err(()));
        t.offer::<(), ()>(&Err(()));
        assert_eq!((t.offers_taken, t.offers_refused), (1, 2));
    }
}
