//! Wall-clock time and randomness, passed in rather than read where they
//! are used, so that tests can control both: a clock that moves with
//! tokio's (paused in a test, it stands still) and a seeded generator.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_protocol::TaskId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Milliseconds since the Unix epoch, for records, ids and generations.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The host's clock.
    #[default]
    System,
    /// The host's clock when made, then moving with tokio's clock: a test
    /// on a paused tokio clock sees time stand still and jump as it
    /// advances it.
    Tokio {
        wall_ms: u64,
        start: tokio::time::Instant,
    },
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// A clock that follows tokio's; see [`Clock::Tokio`].
    pub fn tokio() -> Self {
        Clock::Tokio {
            wall_ms: system_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_ms(),
            Clock::Tokio { wall_ms, start } => {
                wall_ms.saturating_add(start.elapsed().as_millis() as u64)
            }
        }
    }
}

/// `now + wait` on tokio's clock; for a wait too long to represent (one
/// that came from input), a day from now rather than a panic.
pub fn deadline_after(wait: std::time::Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// Makes task ids: time-ordered, with random low bits from a generator
/// that tests seed.
#[derive(Clone)]
pub struct Ids {
    clock: Clock,
    // Held only for the draw of one number.
    rng: Arc<Mutex<StdRng>>,
}

impl std::fmt::Debug for Ids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ids")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Ids {
    /// With `seed`, the same seed gives the same ids at the same times.
    pub fn new(clock: Clock, seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self {
            clock,
            rng: Arc::new(Mutex::new(rng)),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn task_id(&self) -> TaskId {
        let low = self.rng.lock().unwrap_or_else(|p| p.into_inner()).random();
        TaskId::generate(self.clock.now_ms(), low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_only_with_tokio() {
        let clock = Clock::tokio();
        let before = clock.now_ms();
        assert_eq!(clock.now_ms(), before);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        assert_eq!(clock.now_ms(), before + 3000);
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_ids_repeat_and_differ() {
        let clock = Clock::tokio();
        let a = Ids::new(clock.clone(), Some(7));
        let b = Ids::new(clock, Some(7));
        let (a1, a2) = (a.task_id(), a.task_id());
        assert_eq!(a1, b.task_id());
        assert_ne!(a1, a2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_from_input_never_overflows() {
        use std::time::Duration;
        let now = tokio::time::Instant::now();
        assert_eq!(
            deadline_after(Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        // u64::MAX ms (a peer's ready timeout) panicked as `now + wait`.
        let far = deadline_after(Duration::from_millis(u64::MAX));
        assert!(far > now + Duration::from_secs(3600));
        assert!(deadline_after(Duration::MAX) > now);
    }
}
