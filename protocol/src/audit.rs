//! The core allocation audit log (`meshd --audit-log`): one JSON line per
//! allocation or release of a host's cores, and a pure checker that replays
//! a log and reports every core held by two holders at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::alloc::Allocation;
use crate::ids::TaskId;

/// What happened to the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditEvent {
    Allocate,
    Release,
}

/// Who holds the cores: a task, or a service container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HolderKind {
    Task,
    Service,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Host-local, increasing within one run of the agent (starts at 0).
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub event: AuditEvent,
    pub holder: String,
    pub kind: HolderKind,
    /// Logical core ids.
    pub cores: Vec<u32>,
    /// OS indices of the NUMA nodes of those cores.
    pub numa: Vec<u32>,
}

/// What changed between two views of a host's holdings: releases first
/// (a holder whose cores changed is released, then allocated again), so a
/// core passed from one holder to another in between is never logged as
/// held twice.
pub fn changes(
    before: &BTreeMap<TaskId, Allocation>,
    after: &BTreeMap<TaskId, Allocation>,
) -> Vec<(AuditEvent, TaskId, Allocation)> {
    let released = before
        .iter()
        .filter(|(id, a)| after.get(*id) != Some(*a))
        .map(|(id, a)| (AuditEvent::Release, id.clone(), a.clone()));
    let allocated = after
        .iter()
        .filter(|(id, a)| before.get(*id) != Some(*a))
        .map(|(id, a)| (AuditEvent::Allocate, id.clone(), a.clone()));
    released.chain(allocated).collect()
}

/// A core given to `second` while `first` still held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldTwice {
    pub core: u32,
    pub first: String,
    pub second: String,
    /// The `seq` and time of the allocation that overlapped.
    pub seq: u64,
    pub time_ms: u64,
}

impl std::fmt::Display for HeldTwice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "core {} given to {} (seq {}, at {} ms) while {} held it",
            self.core, self.second, self.seq, self.time_ms, self.first
        )
    }
}

/// What replaying a log found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub records: usize,
    pub held_twice: Vec<HeldTwice>,
    /// Lines that are not audit records (line number, 1-based, and why).
    pub unreadable: Vec<(usize, String)>,
    /// Places where records are missing (a `seq` skipped, as when a write
    /// failed on a full disk): the replay starts over from nothing held
    /// there, since a lost release would otherwise look like a core held
    /// twice.
    pub gaps: usize,
}

/// Replays a log's text. A line with a `seq` not above the one before
/// starts a new run of the agent: a restarted agent reloads its holdings
/// from its store and logs them as allocations again, so a restart begins
/// from nothing held. A skipped `seq` (lost lines) starts over the same way
/// and is counted in `gaps`.
pub fn check(log: &str) -> AuditReport {
    let mut report = AuditReport::default();
    let mut held: BTreeMap<u32, String> = BTreeMap::new();
    let mut last_seq: Option<u64> = None;
    for (i, line) in log.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: AuditRecord = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                report.unreadable.push((i + 1, e.to_string()));
                continue;
            }
        };
        report.records += 1;
        match last_seq {
            Some(s) if r.seq <= s => held.clear(),
            Some(s) if r.seq > s.saturating_add(1) => {
                report.gaps += 1;
                held.clear();
            }
            _ => {}
        }
        last_seq = Some(r.seq);
        match r.event {
            AuditEvent::Allocate => {
                for core in &r.cores {
                    if let Some(first) = held.insert(*core, r.holder.clone()) {
                        report.held_twice.push(HeldTwice {
                            core: *core,
                            first,
                            second: r.holder.clone(),
                            seq: r.seq,
                            time_ms: r.time_ms,
                        });
                    }
                }
            }
            AuditEvent::Release => held.retain(|_, h| h != &r.holder),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, event: AuditEvent, holder: &str, cores: &[u32]) -> String {
        serde_json::to_string(&AuditRecord {
            seq,
            time_ms: 1000 + seq,
            event,
            holder: holder.into(),
            kind: HolderKind::Task,
            cores: cores.to_vec(),
            numa: vec![0],
        })
        .unwrap()
    }

    #[test]
    fn a_core_given_again_after_its_release_is_fine() {
        let log = [
            line(0, AuditEvent::Allocate, "a", &[0, 1]),
            line(1, AuditEvent::Release, "a", &[0, 1]),
            line(2, AuditEvent::Allocate, "b", &[1]),
        ]
        .join("\n");
        let r = check(&log);
        assert_eq!((r.records, r.held_twice.len()), (3, 0));
    }

    #[test]
    fn a_core_given_while_held_is_reported() {
        let log = [
            line(0, AuditEvent::Allocate, "a", &[0, 1]),
            line(1, AuditEvent::Allocate, "b", &[1, 2]),
            "not json".to_string(),
        ]
        .join("\n");
        let r = check(&log);
        assert_eq!(
            r.held_twice,
            vec![HeldTwice {
                core: 1,
                first: "a".into(),
                second: "b".into(),
                seq: 1,
                time_ms: 1001
            }]
        );
        assert_eq!(r.unreadable.len(), 1);
        assert_eq!(r.unreadable[0].0, 3);
    }

    #[test]
    fn changes_release_before_they_allocate() {
        let a = |cores: &[u32]| Allocation {
            cores: cores.to_vec(),
            cpus: cores.iter().copied().collect(),
            mems: [0].into_iter().collect(),
        };
        let t = |n: &str| TaskId::new(n).unwrap();
        let before = BTreeMap::from([(t("a"), a(&[0])), (t("b"), a(&[1]))]);
        let after = BTreeMap::from([(t("b"), a(&[1])), (t("c"), a(&[0]))]);
        assert_eq!(
            changes(&before, &after),
            vec![
                (AuditEvent::Release, t("a"), a(&[0])),
                (AuditEvent::Allocate, t("c"), a(&[0])),
            ]
        );
    }

    #[test]
    fn lost_lines_start_the_replay_over() {
        let log = [
            line(0, AuditEvent::Allocate, "a", &[0]),
            // seq 1, the release of a, was lost.
            line(2, AuditEvent::Allocate, "b", &[0]),
        ]
        .join("\n");
        let r = check(&log);
        assert_eq!((r.held_twice.len(), r.gaps), (0, 1));
    }

    #[test]
    fn a_restart_starts_from_nothing_held() {
        let log = [
            line(0, AuditEvent::Allocate, "a", &[0]),
            line(1, AuditEvent::Allocate, "b", &[1]),
            // The agent restarted and reloaded a's holding.
            line(0, AuditEvent::Allocate, "a", &[0]),
        ]
        .join("\n");
        assert!(check(&log).held_twice.is_empty());
    }
}
