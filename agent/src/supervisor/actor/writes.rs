//! The supervisor's writes to the store, and what a failed one does: the
//! record (or copy) stays in memory marked unsaved, the node accepts and
//! starts no task until a retry (every ping) writes them all, and its
//! health says why. A new record that cannot be written refuses its task.

use mesh_protocol::{TaskId, TaskRecord};
use tracing::{error, info};

use super::Supervisor;
use crate::runtime::ContainerRuntime;
use crate::store::StoreError;
use crate::supervisor::SupervisorError;

impl<R: ContainerRuntime> Supervisor<R> {
    /// Writes a record. When that fails, the record waits for the next
    /// retry (every ping) and the node stops taking and starting tasks
    /// until one succeeds (see [`Self::write_failed`]).
    pub(super) fn persist(&mut self, id: &TaskId) {
        self.tell(id);
        let Some(r) = self.records.get(id) else {
            return;
        };
        match self.store.put(r) {
            Ok(()) => {
                self.unsaved.remove(id);
            }
            Err(e) => {
                self.unsaved.insert(id.clone());
                self.write_failed(&e);
            }
        }
    }

    /// Writes a copy held as keeper; as [`Self::persist`].
    pub(super) fn persist_copy(&mut self, id: &TaskId) {
        let Some(c) = self.copies.get(id) else {
            return;
        };
        match self.store.put_copy(c) {
            Ok(()) => {
                self.unsaved_copies.remove(id);
            }
            Err(e) => {
                self.unsaved_copies.insert(id.clone());
                self.write_failed(&e);
            }
        }
    }

    /// A write to the store failed: until a retry succeeds, no task is
    /// accepted or started here, and the node's health says why.
    pub(super) fn write_failed(&mut self, e: &StoreError) {
        if self.store_error.is_none() {
            error!(error = %e, "cannot write the task store: no task is accepted or started here until it can; the writes are tried again every ping");
        }
        self.store_error = Some(e.to_string());
    }

    /// Tries the writes that failed again, in one transaction.
    pub(super) fn retry_writes(&mut self) {
        if self.store_error.is_none() {
            return;
        }
        let records: Vec<&TaskRecord> = self
            .unsaved
            .iter()
            .filter_map(|id| self.records.get(id))
            .collect();
        let copies: Vec<&TaskRecord> = self
            .unsaved_copies
            .iter()
            .filter_map(|id| self.copies.get(id))
            .collect();
        let written = (records.len(), copies.len());
        match self.store.put_both(records, copies) {
            Ok(()) => {
                info!(
                    records = written.0,
                    copies = written.1,
                    "the task store takes writes again"
                );
                self.unsaved.clear();
                self.unsaved_copies.clear();
                self.store_error = None;
            }
            Err(e) => self.store_error = Some(e.to_string()),
        }
    }

    /// Refuses what would be written while the store fails.
    pub(super) fn store_writable(&self) -> Result<(), SupervisorError> {
        match &self.store_error {
            None => Ok(()),
            Some(e) => Err(SupervisorError::Storage(format!(
                "node {} cannot write its task store: {e}",
                self.cfg.node
            ))),
        }
    }

    /// Writes a new record before it is taken; a failure refuses it.
    pub(super) fn store_new(&mut self, record: &TaskRecord) -> Result<(), SupervisorError> {
        self.store_writable()?;
        self.store.put(record).map_err(|e| {
            self.write_failed(&e);
            SupervisorError::Storage(format!("task not accepted: {e}"))
        })
    }
}
