//! What a chaos run did and found, and its summary table.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::time::Duration;

use mesh_protocol::TaskState;

use crate::chaos::check::{Interval, Violation};
use crate::chaos::schedule::FaultKind;
use crate::chaos::services::{Connection, Outcome};

/// How the load's submissions were answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Submissions {
    pub accepted: u32,
    /// Answered with an error status.
    pub refused: u32,
    /// No answer in time (the task may or may not have been accepted: the
    /// run counts any it finds listed).
    pub unanswered: u32,
}

/// A chaos run's counts and violations.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub duration: Duration,
    pub agents: usize,
    /// Faults injected plus repairs.
    pub operations: u32,
    /// Fault operations an agent refused (a drain that never answered).
    pub failed_operations: u32,
    pub faults: BTreeMap<FaultKind, u32>,
    pub submissions: Submissions,
    /// The run's tasks, by their final (or last listed) state.
    pub tasks: BTreeMap<&'static str, u32>,
    /// Containers that told the witness they started work, and those that
    /// said they finished it successfully.
    pub runs: u32,
    pub successful_runs: u32,
    /// Service connections by how they ended.
    pub connections: BTreeMap<Outcome, u32>,
    /// Lines of the agents' core audit logs replayed, and the places
    /// where lines were lost (the replay started over there).
    pub audit_records: usize,
    pub audit_gaps: usize,
    pub violations: Vec<Violation>,
    /// Where the agents' logs were kept, for a run with violations.
    pub logs: Option<std::path::PathBuf>,
}

impl Report {
    pub fn new(seed: u64, duration: Duration, agents: usize) -> Self {
        Self {
            seed,
            duration,
            agents,
            operations: 0,
            failed_operations: 0,
            faults: BTreeMap::new(),
            submissions: Submissions::default(),
            tasks: BTreeMap::new(),
            runs: 0,
            successful_runs: 0,
            connections: BTreeMap::new(),
            audit_records: 0,
            audit_gaps: 0,
            violations: Vec::new(),
            logs: None,
        }
    }

    /// Counts the accepted tasks by state (`missing` for one listed nowhere).
    pub fn count_tasks(&mut self, listed: &BTreeMap<String, TaskState>, ids: &BTreeSet<String>) {
        for id in ids {
            let state = listed.get(id).map_or("missing", |s| s.as_str());
            *self.tasks.entry(state).or_default() += 1;
        }
    }

    pub fn count_work(&mut self, intervals: &[Interval]) {
        self.runs = u32::try_from(intervals.len()).unwrap_or(u32::MAX);
        self.successful_runs =
            u32::try_from(intervals.iter().filter(|i| i.code == Some(0)).count())
                .unwrap_or(u32::MAX);
    }

    pub fn count_connections(&mut self, conns: &[Connection]) {
        for c in conns {
            *self.connections.entry(c.outcome).or_default() += 1;
        }
    }

    /// Whether the run found no violation (known limits aside).
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The violations that are not a documented limit.
    pub fn failures(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| !v.is_known_limit())
    }

    /// The summary as a markdown table, then one line per violation.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("seed".into(), self.seed.to_string()),
            ("agents".into(), self.agents.to_string()),
            (
                "duration of faults and load".into(),
                format!("{} s", self.duration.as_secs()),
            ),
            (
                "operations (faults and repairs)".into(),
                format!("{} ({} refused)", self.operations, self.failed_operations),
            ),
        ];
        for kind in FaultKind::ALL {
            rows.push((
                format!("faults: {}", kind.as_str()),
                self.faults.get(&kind).copied().unwrap_or(0).to_string(),
            ));
        }
        let s = &self.submissions;
        rows.push((
            "submissions: accepted / refused / unanswered".into(),
            format!("{} / {} / {}", s.accepted, s.refused, s.unanswered),
        ));
        let total: u32 = self.tasks.values().sum();
        let states: Vec<String> = self.tasks.iter().map(|(k, v)| format!("{k} {v}")).collect();
        rows.push((
            "tasks (array members counted)".into(),
            format!("{total}: {}", states.join(", ")),
        ));
        rows.push((
            "containers that worked / finished successfully".into(),
            format!("{} / {}", self.runs, self.successful_runs),
        ));
        rows.push((
            "core audit records (gaps)".into(),
            format!("{} ({})", self.audit_records, self.audit_gaps),
        ));
        let total: u32 = self.connections.values().sum();
        let outcomes: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o.as_str(),
                    self.connections.get(o).copied().unwrap_or(0)
                )
            })
            .collect();
        rows.push((
            "service connections (both modes)".into(),
            format!("{total}: {}", outcomes.join(", ")),
        ));
        let known: Vec<&Violation> = self
            .violations
            .iter()
            .filter(|v| v.is_known_limit())
            .collect();
        rows.push((
            "known limit: ran again after an end its keeper never heard".into(),
            known.len().to_string(),
        ));
        rows.push(("violations".into(), by_rule(self.failures())));
        let mut out = String::from("| what | count |\n|---|---|\n");
        for (what, count) in rows {
            let _ = writeln!(out, "| {what} | {count} |");
        }
        if let Some(dir) = &self.logs {
            let _ = writeln!(out, "\nThe agents' logs are in {}", dir.display());
        }
        for v in &self.violations {
            let kind = if v.is_known_limit() {
                "KNOWN LIMIT"
            } else {
                "VIOLATION"
            };
            let _ = writeln!(out, "\n{kind}: {v}");
        }
        out
    }
}

/// `0`, or the count and how many break each rule.
fn by_rule<'a>(violations: impl Iterator<Item = &'a Violation>) -> String {
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for v in violations {
        *by_rule.entry(v.rule()).or_default() += 1;
    }
    if by_rule.is_empty() {
        return "0".into();
    }
    let total: usize = by_rule.values().sum();
    let rules: Vec<String> = by_rule.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{total}: {}", rules.join(", "))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_faults_tasks_and_violations() {
        let mut r = Report::new(42, Duration::from_secs(120), 5);
        r.operations = 6;
        r.faults.insert(FaultKind::Kill, 2);
        r.faults.insert(FaultKind::Drain, 1);
        r.submissions.accepted = 3;
        let listed = BTreeMap::from([
            ("a".to_owned(), TaskState::Succeeded),
            ("b".to_owned(), TaskState::Failed),
        ]);
        let ids = ["a", "b", "c"].map(String::from).into();
        r.count_tasks(&listed, &ids);
        r.violations.push(Violation::Missing { task: "c".into() });
        r.violations.push(Violation::SucceededTwice {
            task: "a".into(),
            runs: vec!["x".into(), "y".into()],
            unheard: true,
        });
        let table = r.table();
        for row in [
            "| seed | 42 |",
            "| faults: kill/restart | 2 |",
            "| faults: split 2|3/heal | 0 |",
            "| submissions: accepted / refused / unanswered | 3 / 0 / 0 |",
            "| tasks (array members counted) | 3: failed 1, missing 1, succeeded 1 |",
            "| violations | 1: task not final 1 |",
            "VIOLATION: accepted task c is listed nowhere",
            "| known limit: ran again after an end its keeper never heard | 1 |",
            "KNOWN LIMIT: task a succeeded 2 times",
        ] {
            assert!(table.contains(row), "{row} not in\n{table}");
        }
        assert!(!r.passed());
        r.violations.remove(0);
        assert!(r.passed(), "a known limit alone passes");
    }
}
