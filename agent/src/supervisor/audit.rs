//! The core allocation audit log (`--audit-log`): after each turn of the
//! supervisor's loop, what changed in the allocator's holdings is appended
//! as JSON lines (`mesh_protocol::audit`). Every allocation and release,
//! whichever path made it (tasks, services' reservations, a reload from
//! the store), goes through the one allocator, so one hook sees them all.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use mesh_protocol::audit::{AuditRecord, HolderKind, changes};
use mesh_protocol::{Allocation, CoreAllocator, TaskId};
use tracing::warn;

#[derive(Debug)]
pub(crate) struct AuditLog {
    file: File,
    seq: u64,
    last: BTreeMap<TaskId, Allocation>,
}

impl AuditLog {
    /// Opens `path` for appending (created if missing).
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            file,
            seq: 0,
            last: BTreeMap::new(),
        })
    }

    /// Appends what changed since the last call; `is_task` tells a task's
    /// holding from a service container's.
    pub(crate) fn record(
        &mut self,
        alloc: &CoreAllocator,
        is_task: impl Fn(&TaskId) -> bool,
        now_ms: u64,
    ) {
        let now = alloc.holdings();
        if *now == self.last {
            return;
        }
        let mut lines = String::new();
        for (event, holder, a) in changes(&self.last, now) {
            let record = AuditRecord {
                seq: self.seq,
                time_ms: now_ms,
                event,
                kind: if is_task(&holder) {
                    HolderKind::Task
                } else {
                    HolderKind::Service
                },
                holder: holder.to_string(),
                cores: a.cores.clone(),
                numa: a.mems.iter().collect(),
            };
            self.seq += 1;
            match serde_json::to_string(&record) {
                Ok(l) => {
                    lines.push_str(&l);
                    lines.push('\n');
                }
                Err(e) => warn!(error = %e, "could not encode an audit record"),
            }
        }
        self.last = now.clone();
        // A failed write leaves a gap in `seq`, which the checker sees.
        if let Err(e) = self.file.write_all(lines.as_bytes()) {
            warn!(error = %e, "could not write the core audit log");
        }
    }
}
