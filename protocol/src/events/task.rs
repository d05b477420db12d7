//! Which change of a task's record is an event, and how it is told. The
//! node that holds the record compares what it last reported ([`Mark`])
//! with the record as it now is; the events of a task's coming and going
//! between nodes (accepted, placed, re-placed) are told where they are
//! decided instead.

use super::EventKind;
use crate::task::{TaskRecord, TaskState};

/// What was last reported of a task's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    state: TaskState,
    attempt: u32,
    pulling: bool,
    held: bool,
}

impl Mark {
    pub fn of(r: &TaskRecord) -> Self {
        Self {
            state: r.state,
            attempt: r.attempt,
            pulling: r.pull.is_some(),
            held: r.is_held(),
        }
    }
}

/// The event a change from `before` to `now` makes, if any, with its
/// reason.
pub fn change(before: &Mark, now: &TaskRecord) -> Option<(EventKind, String)> {
    let after = Mark::of(now);
    if &after == before {
        return None;
    }
    let message = || now.message.clone().unwrap_or_default();
    let attempt = now.attempt;
    match (before.state, now.state) {
        (_, TaskState::Running) if before.state != TaskState::Running => {
            let cores = now
                .allocation
                .as_ref()
                .map(|a| format!(" on cores {}", a.cpus))
                .unwrap_or_default();
            let container = now
                .container
                .as_deref()
                .map(|c| format!(", container {}", &c[..c.len().min(12)]))
                .unwrap_or_default();
            Some((
                EventKind::TaskStarted,
                format!("attempt {attempt} runs on {}{cores}{container}", now.node),
            ))
        }
        (_, TaskState::Starting) if after.pulling && !before.pulling => Some((
            EventKind::TaskPulling,
            format!("{} pulls image {}", now.node, now.spec.image),
        )),
        (from, to) if from != to && to.is_terminal() => {
            let kind = match to {
                TaskState::Killed => EventKind::TaskKilled,
                TaskState::Lost => EventKind::TaskLost,
                _ => EventKind::TaskExited,
            };
            let code = now.exit_code.map(|c| format!("exit code {c}"));
            let reason = match (code, now.message.as_deref()) {
                (Some(c), Some(m)) if !m.contains("code") => format!("{c}: {m}"),
                (Some(c), _) if to == TaskState::Succeeded => c,
                (_, Some(m)) => m.to_owned(),
                (Some(c), None) => c,
                (None, None) => to.as_str().to_owned(),
            };
            Some((kind, format!("{to}: {reason}")))
        }
        (TaskState::Starting | TaskState::Running, TaskState::Queued) => {
            if after.held {
                Some((EventKind::TaskFenced, message()))
            } else if now.not_before_ms > now.updated_ms {
                Some((EventKind::TaskRetried, message()))
            } else {
                // Stopped to move off a drained node, or its start found
                // Docker away: it waits to run again, without a failure.
                Some((
                    EventKind::TaskRetried,
                    format!("queued again: {}", message()),
                ))
            }
        }
        (TaskState::Queued, TaskState::Queued) if after.held && !before.held => {
            Some((EventKind::TaskFenced, message()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::CoreAllocator;
    use crate::ids::{NodeId, TaskId};
    use crate::resources::CoreCount;
    use crate::task::TaskSpec;
    use crate::topology::Topology;

    fn record(retries: u32) -> TaskRecord {
        let spec = TaskSpec::builder("busybox")
            .cores(1)
            .retries(retries)
            .build()
            .unwrap();
        TaskRecord::new(
            TaskId::new("t-1").unwrap(),
            spec,
            NodeId::new("n1").unwrap(),
            0,
            1_000,
        )
    }

    fn start(r: &mut TaskRecord) {
        let topo = Topology::uniform(1, 2, 1);
        let mut alloc = CoreAllocator::new(topo);
        let a = alloc.allocate(&r.id, CoreCount::new(1).unwrap()).unwrap();
        r.start(a, 2_000).unwrap();
    }

    /// Applies `step` and returns the event it makes.
    fn step(r: &mut TaskRecord, f: impl FnOnce(&mut TaskRecord)) -> Option<(EventKind, String)> {
        let before = Mark::of(r);
        f(r);
        change(&before, r)
    }

    #[test]
    fn a_life_from_start_to_exit() {
        let mut r = record(0);
        assert_eq!(step(&mut r, start), None, "starting is not told");
        let (kind, why) = step(&mut r, |r| {
            r.started("abcdef0123456789".into(), 3_000).unwrap()
        })
        .unwrap();
        assert_eq!(kind, EventKind::TaskStarted);
        assert!(why.contains("attempt 1 runs on n1 on cores"), "{why}");
        assert!(why.contains("container abcdef012345"), "{why}");
        let (kind, why) = step(&mut r, |r| r.exited(3, 4_000).unwrap()).unwrap();
        assert_eq!(kind, EventKind::TaskExited);
        assert_eq!(why, "failed: exited with code 3");
        assert_eq!(step(&mut r, |_| {}), None, "nothing changed");
    }

    #[test]
    fn a_failure_with_retries_left_is_a_retry_and_a_kill_is_a_kill() {
        let mut r = record(2);
        start(&mut r);
        r.started("c".into(), 3_000).unwrap();
        let (kind, why) = step(&mut r, |r| r.exited(1, 4_000).unwrap()).unwrap();
        assert_eq!(kind, EventKind::TaskRetried);
        assert!(why.contains("retry 1 of 2"), "{why}");
        start(&mut r);
        r.started("c2".into(), 6_000).unwrap();
        r.kill(6_500).unwrap();
        let (kind, why) = step(&mut r, |r| r.exited(137, 7_000).unwrap()).unwrap();
        assert_eq!(kind, EventKind::TaskKilled);
        assert!(why.starts_with("killed: exit code 137"), "{why}");
    }

    #[test]
    fn success_and_pulls() {
        let mut r = record(0);
        start(&mut r);
        let progress = crate::image::PullProgress::default();
        let (kind, why) = step(&mut r, |r| r.pulling(progress, 2_500).unwrap()).unwrap();
        assert_eq!(kind, EventKind::TaskPulling);
        assert_eq!(why, "n1 pulls image busybox");
        r.started("c".into(), 3_000).unwrap();
        let (kind, why) = step(&mut r, |r| r.exited(0, 4_000).unwrap()).unwrap();
        assert_eq!(
            (kind, why.as_str()),
            (EventKind::TaskExited, "succeeded: exit code 0")
        );
    }
}
