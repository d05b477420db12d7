//! How long a node keeps finished tasks (`--retain-finished`,
//! `--retain-finished-records`): a pure decision over records (this node's,
//! or the copies it keeps for others) and `now`. Unfinished tasks are never
//! forgotten. A task that finished less than `grace_ms` ago is kept even
//! beyond the count, so its last change reaches its keeper and its
//! submitter can read the outcome.

use crate::ids::TaskId;
use crate::task::TaskRecord;

pub const DEFAULT_MAX_AGE_MS: u64 = 24 * 3_600_000;
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
pub const DEFAULT_GRACE_MS: u64 = 60_000;

/// What to keep of finished tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished longer ago than this: forgotten.
    pub max_age_ms: u64,
    /// Beyond this many finished ones, the oldest are forgotten.
    pub max_records: usize,
    /// Never forgotten sooner than this after finishing.
    pub grace_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            max_age_ms: DEFAULT_MAX_AGE_MS,
            max_records: DEFAULT_MAX_RECORDS,
            grace_ms: DEFAULT_GRACE_MS,
        }
    }
}

/// When a finished record finished (its last change, if it does not say).
fn finished_at(r: &TaskRecord) -> u64 {
    r.finished_ms.unwrap_or(r.updated_ms)
}

/// The finished tasks among `records` to forget at `now`: those finished
/// more than `max_age_ms` ago, and the oldest beyond the newest
/// `max_records` finished ones, none of them within `grace_ms` of finishing.
pub fn expired<'a>(
    records: impl IntoIterator<Item = &'a TaskRecord>,
    now: u64,
    policy: &Retention,
) -> Vec<TaskId> {
    let mut finished: Vec<(u64, &TaskId)> = records
        .into_iter()
        .filter(|r| r.state.is_terminal())
        .map(|r| (finished_at(r), &r.id))
        .collect();
    // Newest first; ties by id so every run decides alike.
    finished.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    finished
        .into_iter()
        .enumerate()
        .filter(|&(rank, (at, _))| {
            let age = now.saturating_sub(at);
            age > policy.grace_ms && (age > policy.max_age_ms || rank >= policy.max_records)
        })
        .map(|(_, (_, id))| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{NodeId, TaskSpec, TaskState};

    fn record(n: u32, state: TaskState, finished: u64) -> TaskRecord {
        let mut r = TaskRecord::new(
            TaskId::new(format!("t{n:03}")).unwrap(),
            TaskSpec::builder("img").build().unwrap(),
            NodeId::new("n1").unwrap(),
            0,
            0,
        );
        r.state = state;
        r.updated_ms = finished;
        r.finished_ms = state.is_terminal().then_some(finished);
        r
    }

    const HOUR: u64 = 3_600_000;

    #[test]
    fn old_finished_tasks_go_and_the_newest_are_kept_up_to_the_count() {
        let policy = Retention {
            max_age_ms: 24 * HOUR,
            max_records: 2,
            grace_ms: 60_000,
        };
        let now = 100 * HOUR;
        let records = [
            record(1, TaskState::Succeeded, now - 25 * HOUR),
            record(2, TaskState::Failed, now - 3 * HOUR),
            record(3, TaskState::Killed, now - 2 * HOUR),
            record(4, TaskState::Lost, now - HOUR),
            // Within the grace: kept beyond the count.
            record(5, TaskState::Succeeded, now - 1_000),
            // Unfinished, however old: kept.
            record(6, TaskState::Queued, now - 50 * HOUR),
            record(7, TaskState::Running, now - 50 * HOUR),
        ];
        let gone = expired(&records, now, &policy);
        let names: Vec<&str> = gone.iter().map(TaskId::as_str).collect();
        assert_eq!(names, ["t003", "t002", "t001"]);
    }

    proptest! {
        #[test]
        fn never_an_unfinished_task_and_never_more_than_the_count_kept_past_the_grace(
            states in prop::collection::vec((0u8..7, 0u64..100 * HOUR), 0..60),
            max_records in 0usize..20,
            max_age in 0u64..50 * HOUR,
        ) {
            let all = [
                TaskState::Queued, TaskState::Starting, TaskState::Running,
                TaskState::Succeeded, TaskState::Failed, TaskState::Killed, TaskState::Lost,
            ];
            let now = 100 * HOUR;
            let records: Vec<_> = states
                .iter()
                .enumerate()
                .map(|(i, (s, at))| record(i as u32, all[*s as usize], *at))
                .collect();
            let policy = Retention { max_age_ms: max_age, max_records, grace_ms: 60_000 };
            let gone = expired(&records, now, &policy);
            let kept_finished_old = records
                .iter()
                .filter(|r| r.state.is_terminal() && !gone.contains(&r.id))
                .filter(|r| now - finished_at(r) > policy.grace_ms)
                .count();
            prop_assert!(kept_finished_old <= max_records);
            for r in &records {
                let is_gone = gone.contains(&r.id);
                prop_assert!(!is_gone || r.state.is_terminal());
                prop_assert!(!is_gone || now - finished_at(r) > policy.grace_ms);
                if r.state.is_terminal() && now - finished_at(r) > max_age.max(policy.grace_ms) {
                    prop_assert!(is_gone);
                }
            }
        }
    }
}
