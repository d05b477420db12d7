//! The chaos run's verdict, from what it recorded: which tasks the mesh
//! accepted and how it lists them at the end, the intervals in which
//! containers said they worked (the witness), the containers left and the
//! agents' logs. Pure, so every rule is unit-tested with made-up records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mesh_protocol::TaskState;
use mesh_protocol::cpuset::CpuSet;

/// One container's work on a task, as the witness saw it: from the
/// connection's `start` line to its close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub task: String,
    pub attempt: String,
    /// The container's hostname (its short id).
    pub host: String,
    /// The node whose agent started it (`MESH_NODE`).
    pub node: String,
    /// The cores it was given in that node's topology (`MESH_CPUS`).
    pub cpus: String,
    /// Milliseconds since the run began.
    pub opened_ms: u64,
    /// `None`: still open when the run looked.
    pub closed_ms: Option<u64>,
    /// The exit code the container announced in its `end` line.
    pub code: Option<u8>,
}

impl Interval {
    fn end(&self) -> u64 {
        self.closed_ms.unwrap_or(u64::MAX)
    }

    fn describe(&self) -> String {
        let closed = self
            .closed_ms
            .map_or_else(|| "still open".to_owned(), |c| format!("{c} ms"));
        format!(
            "attempt {} in container {} on {} (cpus {}) from {} ms to {closed}",
            self.attempt, self.host, self.node, self.cpus, self.opened_ms
        )
    }
}

/// A time in which a node was cut off or dead (from the fault's injection
/// to the end of its repair), in milliseconds since the run began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    pub node: String,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// How long before its node was cut off or killed a task may have ended and
/// still not been heard of by its keeper: the runner pushes within a gossip
/// round (500 ms), with room to spare.
pub const UNHEARD_GRACE_MS: u64 = 2_000;

/// Whether a run that ended at `end_ms` on `node` may have gone unheard:
/// its node was cut off or dead then, or was about to be.
fn unheard(node: &str, end_ms: u64, isolated: &[Isolation]) -> bool {
    isolated.iter().any(|w| {
        w.node == node && w.from_ms.saturating_sub(UNHEARD_GRACE_MS) <= end_ms && end_ms <= w.to_ms
    })
}

/// Something the mesh must never do, seen in the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// An accepted task is not in a final state at the end.
    NotFinal { task: String, state: String },
    /// An accepted task is listed by no agent at the end.
    Missing { task: String },
    /// Two containers worked on one task at the same time.
    Overlap {
        task: String,
        first: String,
        second: String,
    },
    /// More than one container finished a task's work successfully.
    /// `unheard`: every success but the last ended while its node was cut
    /// off or dead, so its keeper could not hear of it: the documented
    /// limit (docs/operations.md), reported but not a failure.
    SucceededTwice {
        task: String,
        runs: Vec<String>,
        unheard: bool,
    },
    /// Two containers on one node held a core at the same time.
    CoreTwice {
        node: String,
        first: String,
        second: String,
    },
    /// The mesh says a task succeeded but no container finished its work.
    SucceededUnseen { task: String },
    /// A container of the mesh that belongs to no task or service left.
    Orphan { container: String, what: String },
    /// An agent's log has a panic.
    Panic { node: String, line: String },
    /// An agent that does not take and run a task once every fault is
    /// repaired.
    Unserviceable { node: String, why: String },
    /// A service connection that neither completed nor was refused
    /// cleanly.
    Connection { what: String, outcome: &'static str },
    /// A well-formed submission refused with a 4xx (a chaos run whose load
    /// does not get in tests nothing).
    SubmitRefused {
        node: String,
        status: u16,
        why: String,
    },
}

impl Violation {
    /// Whether it is a limit the docs state rather than a failure.
    pub fn is_known_limit(&self) -> bool {
        matches!(self, Violation::SucceededTwice { unheard: true, .. })
    }

    /// The rule it breaks, for the summary table.
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::NotFinal { .. } | Violation::Missing { .. } => "task not final",
            Violation::Overlap { .. } => "work in two places at once",
            Violation::SucceededTwice { unheard: true, .. } => {
                "ran again after an end its keeper never heard (known limit)"
            }
            Violation::SucceededTwice { .. } => "succeeded twice",
            Violation::CoreTwice { .. } => "core held twice at once",
            Violation::SucceededUnseen { .. } => "success no container saw",
            Violation::Orphan { .. } => "orphan container",
            Violation::Panic { .. } => "agent panicked",
            Violation::Connection { .. } => "connection not clean",
            Violation::Unserviceable { .. } => "agent out of service after repair",
            Violation::SubmitRefused { .. } => "submission wrongly refused",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotFinal { task, state } => write!(f, "task {task} is still {state}"),
            Violation::Missing { task } => write!(f, "accepted task {task} is listed nowhere"),
            Violation::Overlap {
                task,
                first,
                second,
            } => write!(f, "task {task} ran twice at once: {first}, and {second}"),
            Violation::SucceededTwice {
                task,
                runs,
                unheard,
            } => {
                write!(
                    f,
                    "task {task} succeeded {} times: {}",
                    runs.len(),
                    runs.join("; ")
                )?;
                if *unheard {
                    write!(
                        f,
                        " (each earlier success ended while its node was cut off or dead)"
                    )?;
                }
                Ok(())
            }
            Violation::CoreTwice {
                node,
                first,
                second,
            } => write!(
                f,
                "{node} gave a core to two containers at once: {first}, and {second}"
            ),
            Violation::SucceededUnseen { task } => write!(
                f,
                "task {task} is listed succeeded but no container finished its work"
            ),
            Violation::Orphan { container, what } => {
                write!(f, "container {container} ({what}) belongs to nothing")
            }
            Violation::Panic { node, line } => write!(f, "{node} panicked: {line}"),
            Violation::Unserviceable { node, why } => {
                write!(
                    f,
                    "{node} does not run a task after every fault was repaired: {why}"
                )
            }
            Violation::Connection { what, outcome } => {
                write!(f, "connection {what}: {outcome}")
            }
            Violation::SubmitRefused { node, status, why } => {
                write!(
                    f,
                    "{node} refused a well-formed submission ({status}): {why}"
                )
            }
        }
    }
}

/// The tasks' rules: every accepted task is listed and final; no two
/// containers worked on one task at once; at most one finished it
/// successfully (unless the earlier success went unheard, see
/// [`Violation::SucceededTwice`]); a task listed succeeded was finished by a
/// container.
pub fn check_tasks(
    accepted: &BTreeSet<String>,
    listed: &BTreeMap<String, TaskState>,
    intervals: &[Interval],
    isolated: &[Isolation],
) -> Vec<Violation> {
    let mut found = Vec::new();
    for task in accepted {
        match listed.get(task) {
            None => found.push(Violation::Missing { task: task.clone() }),
            Some(state) if !state.is_terminal() => found.push(Violation::NotFinal {
                task: task.clone(),
                state: state.as_str().to_owned(),
            }),
            Some(_) => {}
        }
    }
    let mut by_task: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    for interval in intervals {
        by_task.entry(&interval.task).or_default().push(interval);
    }
    for (task, mut runs) in by_task {
        runs.sort_by_key(|r| (r.opened_ms, r.end()));
        for (i, first) in runs.iter().enumerate() {
            if let Some(second) = runs[i + 1..].iter().find(|r| r.opened_ms < first.end()) {
                found.push(Violation::Overlap {
                    task: task.to_owned(),
                    first: first.describe(),
                    second: second.describe(),
                });
            }
        }
        let succeeded: Vec<&Interval> =
            runs.iter().copied().filter(|r| r.code == Some(0)).collect();
        if let [earlier @ .., _] = &succeeded[..]
            && !earlier.is_empty()
        {
            found.push(Violation::SucceededTwice {
                task: task.to_owned(),
                runs: succeeded.iter().map(|r| r.describe()).collect(),
                unheard: earlier.iter().all(|r| unheard(&r.node, r.end(), isolated)),
            });
        }
    }
    for (task, state) in listed {
        let seen = intervals
            .iter()
            .any(|r| r.task == *task && r.code == Some(0));
        if *state == TaskState::Succeeded && !seen {
            found.push(Violation::SucceededUnseen { task: task.clone() });
        }
    }
    found
}

/// No core held by two containers of one node at once: any two intervals
/// on a node that overlap in time have disjoint cpus. (A container holds
/// its cores for longer than it works, so this sees fewer than all double
/// allocations, but every one it sees is real.)
pub fn check_cores(intervals: &[Interval]) -> Vec<Violation> {
    let mut by_node: BTreeMap<&str, Vec<(&Interval, CpuSet)>> = BTreeMap::new();
    for interval in intervals {
        if let Ok(cpus) = interval.cpus.parse::<CpuSet>() {
            by_node
                .entry(&interval.node)
                .or_default()
                .push((interval, cpus));
        }
    }
    let mut found = Vec::new();
    for (node, mut runs) in by_node {
        runs.sort_by_key(|(r, _)| (r.opened_ms, r.end()));
        for (i, (first, cpus)) in runs.iter().enumerate() {
            let clash = runs[i + 1..].iter().find(|(r, other)| {
                r.opened_ms < first.end() && other.iter().any(|c| cpus.contains(c))
            });
            if let Some((second, _)) = clash {
                found.push(Violation::CoreTwice {
                    node: node.to_owned(),
                    first: format!("task {} {}", first.task, first.describe()),
                    second: format!("task {} {}", second.task, second.describe()),
                });
            }
        }
    }
    found
}

/// What an agent's core audit log (`--audit-log`), replayed, shows: every
/// core its allocator gave to a holder while another held it.
pub fn audit(node: &str, report: &mesh_protocol::audit::AuditReport) -> Vec<Violation> {
    report
        .held_twice
        .iter()
        .map(|h| Violation::CoreTwice {
            node: node.to_owned(),
            first: format!("{} (audit log)", h.first),
            second: format!(
                "{} (audit log, core {}, seq {}, at {} ms)",
                h.second, h.core, h.seq, h.time_ms
            ),
        })
        .collect()
}

/// The lines of an agent's log that say it panicked.
pub fn panics(node: &str, log: &str) -> Vec<Violation> {
    log.lines()
        .filter(|l| l.contains("panicked"))
        .map(|l| Violation::Panic {
            node: node.to_owned(),
            line: l.trim().to_owned(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
