//! The task list in pages, so that no answer outgrows a frame: records in
//! task-id order after a cursor (`after`), at most `limit`, and for a peer's
//! answer at most `PAGE_BYTES` encoded. `fit` cuts one node's page; `merge`
//! combines the pages of every node into one page of the mesh-wide list.
//! The next page starts after the last id of this one; `more` says whether
//! there may be one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::task::TaskRecord;
use crate::wire;

/// Records per page when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 1_000;
/// Most records one page may ask for.
pub const MAX_LIMIT: u32 = 10_000;
/// Encoded bytes of records one answer may carry: a frame, less room for
/// the rest of the answer.
pub const PAGE_BYTES: usize = wire::MAX_MESSAGE - 64 * 1024;

/// One page of tasks, in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub records: Vec<TaskRecord>,
    /// Records may follow the last one here.
    pub more: bool,
}

/// Which of two reports of one task is current: the higher attempt, then
/// the fresher report of it.
pub fn newer(a: &TaskRecord, b: &TaskRecord) -> bool {
    (a.attempt, a.updated_ms) > (b.attempt, b.updated_ms)
}

/// What `fit` left out: records too large for any page (none, while specs
/// keep their bounds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsendable(pub Vec<TaskId>);

/// Keeps the first of `records` (in id order) whose encodings fit in
/// `budget` bytes; `more` if some were cut or `more` was already set.
pub fn fit(records: Vec<TaskRecord>, more: bool, budget: usize) -> (Page, Unsendable) {
    let mut used = 0usize;
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut cut = false;
    for r in records {
        let size = match wire::encode(&r) {
            Ok(bytes) if bytes.len() <= budget => bytes.len(),
            _ => {
                skipped.push(r.id);
                continue;
            }
        };
        if used + size > budget {
            cut = true;
            break;
        }
        used += size;
        kept.push(r);
    }
    let page = Page {
        records: kept,
        more: more || cut,
    };
    (page, Unsendable(skipped))
}

/// One page of the mesh-wide list from each node's page for the same
/// cursor and `limit`: one record per task (the current report), in id
/// order, at most `limit`. A node with more than it sent may hold ids
/// beyond its last one that sort before other nodes' later ids, so the
/// page stops at the smallest such last id; the next page goes on from
/// there.
pub fn merge(pages: Vec<Page>, limit: usize) -> Page {
    let bound: Option<TaskId> = pages
        .iter()
        .filter(|p| p.more)
        .filter_map(|p| p.records.last().map(|r| r.id.clone()))
        .min();
    let mut more = pages.iter().any(|p| p.more);
    let mut by_id: BTreeMap<TaskId, TaskRecord> = BTreeMap::new();
    for r in pages.into_iter().flat_map(|p| p.records) {
        if bound.as_ref().is_some_and(|b| r.id > *b) {
            continue;
        }
        match by_id.get(&r.id) {
            Some(seen) if !newer(&r, seen) => {}
            _ => {
                by_id.insert(r.id.clone(), r);
            }
        }
    }
    if by_id.len() > limit {
        more = true;
    }
    let records: Vec<TaskRecord> = by_id.into_values().take(limit).collect();
    // A page that says more must move the cursor on.
    let more = more && !records.is_empty();
    Page { records, more }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeId, TaskSpec};

    fn record(id: &str, attempt: u32, env_bytes: usize) -> TaskRecord {
        let spec = TaskSpec::builder("img")
            .env(format!("PAD={}", "x".repeat(env_bytes)))
            .build()
            .unwrap();
        let mut r = TaskRecord::new(
            TaskId::new(id).unwrap(),
            spec,
            NodeId::new("n1").unwrap(),
            0,
            0,
        );
        r.attempt = attempt;
        r
    }

    fn ids(p: &Page) -> Vec<&str> {
        p.records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn a_page_never_outgrows_its_budget_and_says_when_it_was_cut() {
        let records: Vec<_> = (0..40)
            .map(|i| record(&format!("t{i:02}"), 1, 60_000))
            .collect();
        let (page, skipped) = fit(records.clone(), false, PAGE_BYTES);
        assert!(skipped.0.is_empty());
        assert!(page.more && !page.records.is_empty() && page.records.len() < 40);
        let answer = crate::rpc::Response::Page(page.clone());
        let framed = crate::rpc::frame(&answer).unwrap();
        assert!(framed.len() <= crate::rpc::MAX_FRAME);
        let (all, _) = fit(records[..3].to_vec(), false, PAGE_BYTES);
        assert_eq!((all.records.len(), all.more), (3, false));
    }

    #[test]
    fn merged_pages_keep_the_current_report_and_stop_at_a_cut_nodes_last_id() {
        let a = Page {
            records: vec![record("t1", 1, 0), record("t3", 2, 0), record("t5", 1, 0)],
            more: false,
        };
        // b was cut after t2: it may hold t4, so the page stops at t2.
        let b = Page {
            records: vec![record("t2", 1, 0), record("t3", 1, 0)][..1].to_vec(),
            more: true,
        };
        let m = merge(vec![a.clone(), b], 10);
        assert_eq!(ids(&m), ["t1", "t2"]);
        assert!(m.more);
        // Without the cut: everything, the higher attempt of t3, no more.
        let c = Page {
            records: vec![record("t2", 1, 0), record("t3", 1, 0)],
            more: false,
        };
        let m = merge(vec![a.clone(), c.clone()], 10);
        assert_eq!(ids(&m), ["t1", "t2", "t3", "t5"]);
        assert_eq!(m.records[2].attempt, 2);
        assert!(!m.more);
        // The limit cuts too.
        let m = merge(vec![a, c], 2);
        assert_eq!((ids(&m), m.more), (vec!["t1", "t2"], true));
        assert!(
            !merge(
                vec![Page {
                    records: vec![],
                    more: true
                }],
                5
            )
            .more
        );
    }
}
