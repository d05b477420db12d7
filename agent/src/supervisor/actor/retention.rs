//! Forgetting finished tasks (`--retain-finished`,
//! `--retain-finished-records`): this node's records, the copies it keeps
//! for others, and the kept output of the forgotten ones. The decision is
//! `mesh_protocol::retention`'s; the store is written before memory
//! changes, and files go last (a crash in between leaves files that the
//! next sweep removes).

use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::Duration;

use mesh_protocol::TaskId;
use mesh_protocol::listing::Page;
use mesh_protocol::retention::expired;
use tracing::{error, info};

use super::{Supervisor, jobs};
use crate::runtime::ContainerRuntime;

impl<R: ContainerRuntime> Supervisor<R> {
    /// Records whose ids sort after `after`, at most `limit`, in id order.
    pub(super) fn page(&self, after: Option<&TaskId>, limit: usize) -> Page {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut rest = self
            .records
            .range::<TaskId, _>((from, Bound::Unbounded))
            .map(|(_, r)| r);
        let records: Vec<_> = rest.by_ref().take(limit).cloned().collect();
        Page {
            records,
            more: rest.next().is_some(),
        }
    }

    /// Forgets the finished tasks and copies past retention, and removes
    /// old output files of no task.
    pub(super) fn prune(&mut self) {
        self.forget_marks();
        let now = self.now_ms();
        let policy = self.cfg.retention;
        // A task whose cores are still held has a container being removed.
        let mut tasks = expired(self.records.values(), now, &policy);
        tasks.retain(|id| self.alloc.allocation(id).is_none());
        let copies = expired(self.copies.values(), now, &policy);
        if !tasks.is_empty() || !copies.is_empty() {
            if let Err(e) = self.store.forget(&tasks, &copies) {
                error!(error = %e, "could not forget finished tasks; trying again later");
                self.write_failed(&e);
                return;
            }
            let mut files = Vec::new();
            for id in &tasks {
                if let Some(r) = self.records.remove(id) {
                    files.extend((1..=r.attempt).map(|a| self.logs.path(id, a)));
                }
            }
            for id in &copies {
                self.copies.remove(id);
            }
            info!(
                tasks = tasks.len(),
                copies = copies.len(),
                "forgot finished tasks past --retain-finished"
            );
            self.spawn(jobs::remove_files(files));
        }
        let known: BTreeSet<TaskId> = self
            .records
            .keys()
            .chain(self.unreadable.iter())
            .cloned()
            .collect();
        self.spawn(jobs::sweep_logs(
            self.logs.dir().to_owned(),
            known,
            Duration::from_millis(policy.max_age_ms.max(policy.grace_ms)),
        ));
    }
}
