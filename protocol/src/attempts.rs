//! Every attempt of a task that may still be running somewhere: what
//! `meshctl task` shows besides the current attempt. A node that was cut
//! off may still run an older attempt of a task that was re-placed; until
//! it hears it was superseded (or its lease fences it), both run. The view
//! is assembled from what each node says of its own records: a pure
//! function over those reports.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::task::{TaskRecord, TaskState};

/// An attempt other than the current one, reported running by the node
/// that runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherAttempt {
    pub node: NodeId,
    pub attempt: u32,
    pub state: TaskState,
}

/// A task as the API shows one: its current report, and the other attempts
/// still running somewhere (none, normally). The record's fields stay at
/// the top level, so a reader that knows only `TaskRecord` reads it too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub record: TaskRecord,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_running: Vec<OtherAttempt>,
}

/// Whether a container of this attempt may be running: it started, or is
/// starting, and has not ended.
fn may_run(state: TaskState) -> bool {
    matches!(state, TaskState::Starting | TaskState::Running)
}

/// The attempts other than `current` that `reports` (each node's answer
/// for the task, with the node that gave it) show running. Only a node's
/// report of its own attempt counts: a copy kept for another node says
/// nothing about what runs where. In (attempt, node) order, each once.
pub fn also_running<'a>(
    current: &TaskRecord,
    reports: impl IntoIterator<Item = (&'a NodeId, &'a TaskRecord)>,
) -> Vec<OtherAttempt> {
    let mut others: Vec<OtherAttempt> = reports
        .into_iter()
        .filter(|(from, r)| **from == r.node && r.id == current.id && may_run(r.state))
        .filter(|(_, r)| (&r.node, r.attempt) != (&current.node, current.attempt))
        .map(|(_, r)| OtherAttempt {
            node: r.node.clone(),
            attempt: r.attempt,
            state: r.state,
        })
        .collect();
    others.sort_by(|a, b| (a.attempt, &a.node).cmp(&(b.attempt, &b.node)));
    others.dedup_by(|a, b| (a.attempt, &a.node) == (b.attempt, &b.node));
    others
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskId, TaskSpec};

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn report(on: &str, attempt: u32, state: TaskState) -> TaskRecord {
        let mut r = TaskRecord::new(
            TaskId::new("t1").unwrap(),
            TaskSpec::builder("img").build().unwrap(),
            node(on),
            0,
            0,
        );
        r.attempt = attempt;
        r.state = state;
        r
    }

    #[test]
    fn a_stale_runner_still_running_an_older_attempt_is_listed() {
        let current = report("n2", 2, TaskState::Running);
        let stale = report("n3", 1, TaskState::Running);
        let (n2, n3) = (node("n2"), node("n3"));
        let got = also_running(&current, [(&n2, &current), (&n3, &stale)]);
        assert_eq!(
            got,
            vec![OtherAttempt {
                node: n3,
                attempt: 1,
                state: TaskState::Running
            }]
        );
    }

    #[test]
    fn ended_attempts_copies_and_the_current_attempt_are_not_listed() {
        let current = report("n2", 2, TaskState::Running);
        let ended = report("n3", 1, TaskState::Killed);
        let queued = report("n4", 1, TaskState::Queued);
        // n1 keeps a copy of n3's attempt: it runs nothing itself.
        let copy = report("n3", 1, TaskState::Running);
        let (n1, n2, n3, n4) = (node("n1"), node("n2"), node("n3"), node("n4"));
        let got = also_running(
            &current,
            [(&n2, &current), (&n3, &ended), (&n4, &queued), (&n1, &copy)],
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn the_same_attempt_number_on_another_node_is_another_attempt() {
        let current = report("n2", 2, TaskState::Running);
        let twin = report("n3", 2, TaskState::Starting);
        let n3 = node("n3");
        let got = also_running(&current, [(&n3, &twin), (&n3, &twin)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].state, TaskState::Starting);
    }

    #[test]
    fn a_view_reads_as_a_plain_record_and_back() {
        let current = report("n2", 2, TaskState::Running);
        let view = TaskView {
            record: current.clone(),
            also_running: vec![OtherAttempt {
                node: node("n3"),
                attempt: 1,
                state: TaskState::Running,
            }],
        };
        let json = serde_json::to_string(&view).unwrap();
        let plain: TaskRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(plain, current);
        let back: TaskView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, view);
        let bare = serde_json::to_string(&current).unwrap();
        let read: TaskView = serde_json::from_str(&bare).unwrap();
        assert!(read.also_running.is_empty());
    }
}
