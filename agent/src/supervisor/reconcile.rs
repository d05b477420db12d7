//! After a restart (or a Docker outage), what to do with what Docker has and
//! what the store says: a pure function from the two views to actions.
//!
//! The rules, so that nothing accepted is lost and nothing runs twice:
//! - a container of the task's current attempt is watched to its end (if it
//!   still runs, it is adopted; if it exited meanwhile, its exit is recorded);
//! - a container that matches no current attempt (unknown task, finished
//!   task, older attempt, never started) is removed;
//! - a task that was starting but has no container goes back to the queue
//!   without losing an attempt (the container was never created);
//! - a task that was running but whose container is gone is lost (and retried
//!   if it has retries left).

use std::collections::{BTreeMap, BTreeSet};

use mesh_protocol::{TaskId, TaskRecord, TaskState, labels};

use crate::runtime::ContainerInfo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Watch this container to its end as the task's current attempt.
    Watch { task: TaskId, container: String },
    /// Remove a container that belongs to nothing current.
    Remove {
        container: String,
        why: &'static str,
    },
    /// Back to the queue: the attempt never got a container.
    Requeue { task: TaskId },
    /// The container of a running task is gone.
    Lost { task: TaskId },
    /// A container of a task whose record was set aside (it does not
    /// decode): neither watched nor removed.
    LeaveAlone { task: TaskId, container: String },
}

/// `watched` are tasks whose current attempt a live job already follows;
/// `unreadable` are stored tasks whose records could not be decoded, set
/// aside by the store (their containers are left alone rather than taken
/// for strays).
pub fn reconcile(
    records: &BTreeMap<TaskId, TaskRecord>,
    containers: &[ContainerInfo],
    watched: &BTreeSet<TaskId>,
    unreadable: &BTreeSet<TaskId>,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut seen: BTreeSet<TaskId> = BTreeSet::new();
    for c in containers {
        let task = c
            .labels
            .get(labels::TASK)
            .and_then(|t| TaskId::new(t.as_str()).ok());
        if let Some(t) = task.as_ref().filter(|t| unreadable.contains(*t)) {
            // Its record exists but cannot be read: leave the container be.
            actions.push(Action::LeaveAlone {
                task: t.clone(),
                container: c.id.clone(),
            });
            continue;
        }
        let start = c
            .labels
            .get(labels::START)
            .and_then(|a| a.parse::<u32>().ok());
        let current = task.as_ref().and_then(|t| records.get(t)).filter(|r| {
            !r.state.is_terminal() && r.state != TaskState::Queued && Some(r.starts) == start
        });
        match (current, task) {
            (Some(_), Some(task)) if !c.never_started => {
                seen.insert(task.clone());
                if !watched.contains(&task) {
                    actions.push(Action::Watch {
                        task,
                        container: c.id.clone(),
                    });
                }
            }
            (Some(_), Some(_)) => actions.push(Action::Remove {
                container: c.id.clone(),
                why: "created but never started",
            }),
            (None, Some(t)) if records.contains_key(&t) => actions.push(Action::Remove {
                container: c.id.clone(),
                why: "not the task's current attempt",
            }),
            _ => actions.push(Action::Remove {
                container: c.id.clone(),
                why: "belongs to no task this node knows",
            }),
        }
    }
    for (id, r) in records {
        if seen.contains(id) || watched.contains(id) {
            continue;
        }
        match r.state {
            TaskState::Starting => actions.push(Action::Requeue { task: id.clone() }),
            TaskState::Running => actions.push(Action::Lost { task: id.clone() }),
            _ => {}
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_protocol::{Allocation, CpuSet, NodeId, TaskSpec};

    /// A record at `attempt` in `state`, brought there by the transitions:
    /// the attempts before failed to start, the last one reached `state`.
    fn record(n: u32, state: TaskState, attempt: u32) -> TaskRecord {
        let spec = TaskSpec::builder("i").retries(attempt).build().unwrap();
        let mut r = TaskRecord::new(
            TaskId::new(format!("t{n}")).unwrap(),
            spec,
            NodeId::new("n").unwrap(),
            0,
            0,
        );
        let alloc = Allocation {
            cores: vec![n],
            cpus: CpuSet::from_iter([n]),
            mems: CpuSet::from_iter([0]),
        };
        for _ in 1..attempt {
            r.start(alloc.clone(), 0).unwrap();
            r.start_failed("bad image".into(), 0).unwrap();
        }
        r.start(alloc, 0).unwrap();
        match state {
            TaskState::Starting => {}
            TaskState::Running => r.started(format!("c{n}"), 0).unwrap(),
            TaskState::Succeeded => {
                r.started(format!("c{n}"), 0).unwrap();
                r.exited(0, 0).unwrap();
            }
            other => panic!("no fixture for a {other} record"),
        }
        assert_eq!((r.state, r.attempt, r.starts), (state, attempt, attempt));
        r
    }

    fn container(id: &str, task: &str, attempt: u32, running: bool) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            name: id.into(),
            labels: crate::runtime::memory::labels(&[
                ("mesh.task", task),
                ("mesh.start", &attempt.to_string()),
            ]),
            running,
            never_started: false,
            exit_code: if running { None } else { Some(0) },
            cpuset_cpus: None,
            cpuset_mems: None,
            address: None,
        }
    }

    fn tid(n: u32) -> TaskId {
        TaskId::new(format!("t{n}")).unwrap()
    }

    #[test]
    fn every_case() {
        let records: BTreeMap<TaskId, TaskRecord> = [
            record(1, TaskState::Running, 1),   // still running: adopt
            record(2, TaskState::Running, 2),   // exited while down: watch (records exit)
            record(3, TaskState::Starting, 1),  // never created: requeue
            record(4, TaskState::Running, 1),   // container gone: lost
            record(5, TaskState::Succeeded, 1), // finished: its container goes
            record(6, TaskState::Running, 3),   // watched already
        ]
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
        let mut never = container("c7", "t1", 1, false);
        never.never_started = true;
        let containers = vec![
            container("c1", "t1", 1, true),
            container("c2", "t2", 2, false),
            container("c2old", "t2", 1, false),
            container("c5", "t5", 1, false),
            container("c6", "t6", 3, true),
            container("cx", "t99", 1, true),
            container("cunread", "t42", 1, true),
            never,
        ];
        let watched = BTreeSet::from([tid(6)]);
        let unreadable = BTreeSet::from([tid(42)]);
        let actions = reconcile(&records, &containers, &watched, &unreadable);
        let expect = |a: Action| assert!(actions.contains(&a), "missing {a:?} in {actions:?}");
        expect(Action::Watch {
            task: tid(1),
            container: "c1".into(),
        });
        expect(Action::Watch {
            task: tid(2),
            container: "c2".into(),
        });
        expect(Action::Requeue { task: tid(3) });
        expect(Action::Lost { task: tid(4) });
        for c in ["c2old", "c5", "cx", "c7"] {
            assert!(
                actions
                    .iter()
                    .any(|a| matches!(a, Action::Remove { container, .. } if container == c)),
                "{c} not removed: {actions:?}"
            );
        }
        expect(Action::LeaveAlone {
            task: tid(42),
            container: "cunread".into(),
        });
        assert_eq!(actions.len(), 9, "{actions:?}");
    }
}
